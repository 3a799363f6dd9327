//! Crash and race test of the whole system: a delivery node (on Postgres, then on SQLite) and
//! four `mlschat daemon` processes that all send while one commits now and then, and a chaos
//! loop that SIGKILLs and restarts the node and the members over and over. At the end it prints
//! what was sent, acknowledged, lost, duplicated, reordered and divergent; all but the first two
//! must be zero.
//!
//! `MLSCHAT_CRASH_CYCLES` sets the number of kill/restart cycles per backend (default 100).

use mlschat_testkit::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mlschat_tests::cluster::{Caller, DeliveryProcess, PeerProcess, converged, eventually};
use mlschat_tests::{bin_dir, fresh_database};
use serde_json::json;

const NAMES: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// What one sender saw of its own texts.
#[derive(Default)]
struct Sent {
    /// Every text whose `send` was answered (posted, or queued while offline), in order.
    answered: Vec<String>,
    /// Those the node had taken when the answer came (`"posted": true`).
    acknowledged: Vec<String>,
}

/// Sends numbered texts until told to stop; a daemon that is down is waited for.
fn sender(caller: Caller, name: &'static str, id: String, stop: Arc<AtomicBool>) -> Sent {
    let mut sent = Sent::default();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let text = format!("{name}-{n}");
        match caller.try_call("send", json!({"group": id, "text": text})) {
            Ok(answer) => {
                if answer["posted"] == true {
                    sent.acknowledged.push(text.clone());
                }
                sent.answered.push(text);
                n += 1;
            }
            // The daemon is down, or was killed while it answered: that text may or may not
            // have been queued, so the next one gets a new number.
            Err(_) => {
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    sent
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    sent: usize,
    acknowledged: usize,
    lost: usize,
    duplicated: usize,
    reordered: usize,
    divergent: usize,
}

fn run(database: Option<String>, backend: &str) -> Tally {
    let cycles: usize = std::env::var("MLSCHAT_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let mut node = DeliveryProcess::start(
        bin_dir(),
        &dir.path().join("node"),
        database.as_deref(),
        &[],
    )
    .unwrap();
    let mut peers: Vec<PeerProcess> = NAMES
        .iter()
        .map(|n| PeerProcess::new(bin_dir(), &dir.path().join("peers"), n, &node).unwrap())
        .collect();
    for peer in &mut peers {
        peer.start().unwrap();
    }
    for other in &peers[1..] {
        peers[0].meet(other).unwrap();
    }
    let group = peers[0]
        .call("group.create", json!({"name": "team"}))
        .unwrap();
    let id = group["id"].as_str().unwrap().to_owned();
    let others: Vec<&str> = NAMES[1..].to_vec();
    peers[0]
        .call("group.add", json!({"group": id, "who": others}))
        .unwrap();
    converged(&peers.iter().collect::<Vec<_>>(), &id).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = NAMES
        .iter()
        .zip(&peers)
        .map(|(name, peer)| {
            let (caller, id, stop) = (peer.caller(), id.clone(), stop.clone());
            std::thread::spawn(move || sender(caller, name, id, stop))
        })
        .collect();
    // Bob refreshes his keys now and then: his commits race the texts.
    let committer = {
        let (caller, id, stop) = (peers[1].caller(), id.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut commits = 0;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(300));
                if caller
                    .try_call("group.update", json!({"group": id}))
                    .is_ok()
                {
                    commits += 1;
                }
            }
            commits
        })
    };

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut kills = BTreeMap::<&str, usize>::new();
    for _ in 0..cycles {
        std::thread::sleep(Duration::from_millis(100 + rng.below(200) as u64));
        let victim = rng.below(NAMES.len() + 1);
        if victim == NAMES.len() {
            node.restart().unwrap();
            *kills.entry("node").or_default() += 1;
        } else {
            peers[victim].kill();
            std::thread::sleep(Duration::from_millis(rng.below(100) as u64));
            peers[victim].start().unwrap();
            *kills.entry(NAMES[victim]).or_default() += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent: Vec<Sent> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    let commits = committer.join().unwrap();

    // Everything answered arrives: what was queued goes out, the members catch up.
    let all: Vec<&PeerProcess> = peers.iter().collect();
    let answered: BTreeSet<String> = sent.iter().flat_map(|s| s.answered.clone()).collect();
    let texts = |peer: &PeerProcess| -> Vec<String> {
        peer.texts(&id)
            .unwrap()
            .into_iter()
            .map(|t| {
                t.split_once(": ")
                    .map(|(_, body)| body.to_owned())
                    .unwrap_or(t)
            })
            .collect()
    };
    let settled = eventually("every answered text reaches every member", || {
        all.iter().all(|p| {
            let shown: BTreeSet<String> = texts(p).into_iter().collect();
            answered.is_subset(&shown)
        })
    });
    let converged = converged(&all, &id);

    let mut tally = Tally {
        sent: answered.len(),
        acknowledged: sent.iter().map(|s| s.acknowledged.len()).sum(),
        ..Tally::default()
    };
    let reference = texts(&peers[0]);
    for peer in &peers {
        let shown = texts(peer);
        let unique: BTreeSet<&String> = shown.iter().collect();
        tally.duplicated += shown.len() - unique.len();
        for s in &sent {
            let lost: Vec<&String> = s
                .acknowledged
                .iter()
                .filter(|t| !unique.contains(t))
                .collect();
            if !lost.is_empty() {
                println!("{backend}: {} lost {lost:?}", peer.name);
            }
            tally.lost += lost.len();
        }
        // Each sender's texts in the order it sent them.
        let mut last = BTreeMap::<&str, u64>::new();
        for text in &shown {
            let (who, n) = text.rsplit_once('-').unwrap();
            let n: u64 = n.parse().unwrap();
            if last.get(who).is_some_and(|&before| n <= before) {
                tally.reordered += 1;
            }
            last.insert(who, n);
        }
        if shown != reference {
            println!(
                "{backend}: {} shows {} texts, {} {}",
                peer.name,
                shown.len(),
                peers[0].name,
                reference.len()
            );
            tally.divergent += 1;
        }
    }
    println!(
        "{backend}: {cycles} kill/restart cycles {kills:?}, {commits} commits; {tally:?}; \
         settled: {}, converged: {}",
        settled.is_ok(),
        converged.is_ok()
    );
    if settled.is_err() || converged.is_err() {
        let kept = dir.keep();
        println!("{backend}: files kept in {}", kept.display());
    }
    settled.unwrap();
    converged.unwrap();
    tally
}

fn assert_clean(tally: Tally) {
    assert!(
        tally.acknowledged > 0,
        "nothing was acknowledged: {tally:?}"
    );
    assert_eq!(
        (
            tally.lost,
            tally.duplicated,
            tally.reordered,
            tally.divergent
        ),
        (0, 0, 0, 0),
        "{tally:?}"
    );
}

#[test]
fn nothing_acknowledged_is_lost_duplicated_or_reordered_through_kills_on_postgres() {
    assert_clean(run(Some(fresh_database()), "Postgres"));
}

#[test]
fn nothing_acknowledged_is_lost_duplicated_or_reordered_through_kills_on_sqlite() {
    assert_clean(run(None, "SQLite"));
}
