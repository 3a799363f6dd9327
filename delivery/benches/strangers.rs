//! The node against a flood of strangers (issue 18): what honest members' adds, posts and
//! catch-ups cost while hostile accounts from many addresses try to drain a victim's
//! KeyPackages, fill her mailbox and register more accounts, against the same run without them.
//! The `mlschat-delivery` binary runs as its own process on Postgres with its default limits.
//! Run through `scripts/bench-hostile.sh`, which starts a throwaway Postgres when none is given.
//!
//! ```text
//! cargo bench -p mlschat-delivery --bench strangers -- [--strangers 100] [--members 8]
//!     [--seconds 15]
//! ```
//!
//! Each stranger is a registered client (from 50 loopback addresses) that, until the end, claims
//! 100 of the victim's KeyPackages in one request, sends her a junk Welcome and a real Welcome
//! for each package it got (each in a commit of a group of its own), and tries to register
//! another account. Each honest member adds someone to its group (a claim, then a commit with
//! a real Welcome), posts 10 texts, and the added member reads its mailbox (acknowledging it)
//! and the group's log from the commit; then again, with the next person of a pool. Both halves report each
//! honest operation's latency percentiles and every refusal, and what the victim kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mlschat_wire::token::token_hash;
use mlschat_wire::*;

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Client, NodeProcess};

struct Options {
    strangers: usize,
    members: usize,
    seconds: u64,
}

fn options() -> Options {
    let mut o = Options {
        strangers: 100,
        members: 8,
        seconds: 15,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        let value = || pair[1].parse().expect("a number");
        match pair[0].as_str() {
            "--strangers" => o.strangers = value(),
            "--members" => o.members = value(),
            "--seconds" => o.seconds = value() as u64,
            _ => {}
        }
    }
    o
}

/// What the strangers got.
#[derive(Default)]
struct Flood {
    claims: AtomicU64,
    key_packages: AtomicU64,
    welcomes_sent: AtomicU64,
    welcomes_taken: AtomicU64,
    refused: AtomicU64,
    registered: AtomicU64,
}

/// One stranger, until `stop`.
async fn stranger(
    client: Client,
    from: String,
    node: (std::net::SocketAddr, [u8; 32]),
    victim: ClientId,
    flood: Arc<Flood>,
    stop: Arc<AtomicBool>,
) {
    let mut round = 0u32;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        flood.claims.fetch_add(100, Ordering::Relaxed);
        let claim = Request::ClaimKeyPackages {
            owners: vec![victim; MAX_CLAIMS],
        };
        let packages: Vec<Vec<u8>> = match client.request(&claim).await {
            Response::KeyPackages { claims } => claims
                .into_iter()
                .filter_map(|c| match c {
                    ClaimAnswer::KeyPackage(kp) => Some(kp.as_slice().to_vec()),
                    ClaimAnswer::Refused(_) => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        flood
            .key_packages
            .fetch_add(packages.len() as u64, Ordering::Relaxed);
        // A junk Welcome, then a real one for each package it got, each in a group of its own.
        let mut welcomes = vec![b"junk welcome".to_vec()];
        welcomes.extend(
            packages
                .iter()
                .map(|kp| client.welcome_for(kp).as_slice().to_vec()),
        );
        for welcome in welcomes {
            let group: tls_codec::VLBytes = common::post_id().to_vec().into();
            let token = [round as u8; 32];
            let create = Request::CreateGroup(CreateGroup {
                group_id: group.clone(),
                token_hash: token_hash(&token),
            });
            if client.request(&create).await != Response::Ok {
                flood.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            flood.welcomes_sent.fetch_add(1, Ordering::Relaxed);
            let commit = Request::PostCommit(PostCommit {
                group_id: group,
                epoch: 0,
                token,
                next_token_hash: token_hash(&[0xee; 32]),
                commit: b"a commit".to_vec().into(),
                welcomes: vec![WelcomeFor {
                    recipient: victim,
                    welcome: welcome.into(),
                    tree_key: vec![1; 48].into(),
                }],
                sealed_tree: vec![2; 64].into(),
                tree_access_hash: [3; 32],
            });
            match client.request(&commit).await {
                Response::Committed { undelivered, .. } if undelivered.is_empty() => {
                    flood.welcomes_taken.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    flood.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // Another account from the same address.
        let more = Client::connect_from(&from, node.0, node.1).await;
        let register = more.register_request().await;
        match more.request(&register).await {
            Response::Authenticated { .. } => {
                flood.registered.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                flood.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Latencies of one honest operation, and its refusals.
#[derive(Default)]
struct Timed {
    latencies: Vec<Duration>,
    refused: usize,
}

impl Timed {
    fn record(&mut self, started: Instant, ok: bool) {
        if ok {
            self.latencies.push(started.elapsed());
        } else {
            self.refused += 1;
        }
    }

    fn report(&mut self, what: &str) -> String {
        self.latencies.sort();
        let p = |q: f64| {
            if self.latencies.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
            self.latencies[i].as_secs_f64() * 1000.0
        };
        format!(
            "{what} {} (p50 {:.2} ms, p99 {:.2} ms, {} refused)",
            self.latencies.len(),
            p(0.5),
            p(0.99),
            self.refused
        )
    }
}

/// The token of `epoch` in an honest member's group.
fn token(epoch: u64) -> [u8; 32] {
    let mut token = [0x5a; 32];
    token[..8].copy_from_slice(&epoch.to_be_bytes());
    token
}

/// One honest member: adds the next person of `pool` to its group, posts 10 texts, and the
/// added one catches up (its mailbox, then the group's log from the commit); until `stop`.
async fn member(
    alice: Client,
    pool: Arc<Vec<Client>>,
    first: usize,
    stop: Arc<AtomicBool>,
) -> [Timed; 3] {
    let (mut add, mut post, mut catch_up) = (Timed::default(), Timed::default(), Timed::default());
    let group: tls_codec::VLBytes = common::post_id().to_vec().into();
    let create = Request::CreateGroup(CreateGroup {
        group_id: group.clone(),
        token_hash: token_hash(&token(0)),
    });
    assert_eq!(alice.request(&create).await, Response::Ok);
    let (mut epoch, mut round) = (0u64, 0);
    while !stop.load(Ordering::Relaxed) {
        let bob = &pool[(first + round) % pool.len()];
        round += 1;
        let started = Instant::now();
        let claim = Request::ClaimKeyPackage { owner: bob.id() };
        let Response::KeyPackage { key_package } = alice.request(&claim).await else {
            // A person told "try later" waits.
            add.record(started, false);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let welcome = alice.welcome_for(key_package.as_slice());
        let commit = Request::PostCommit(PostCommit {
            group_id: group.clone(),
            epoch,
            token: token(epoch),
            next_token_hash: token_hash(&token(epoch + 1)),
            commit: b"adds bob".to_vec().into(),
            welcomes: vec![WelcomeFor {
                recipient: bob.id(),
                welcome,
                tree_key: vec![1; 48].into(),
            }],
            sealed_tree: vec![2; 64].into(),
            tree_access_hash: [3; 32],
        });
        let Response::Committed {
            seq, undelivered, ..
        } = alice.request(&commit).await
        else {
            add.record(started, false);
            continue;
        };
        epoch += 1;
        add.record(started, undelivered.is_empty());
        for _ in 0..10 {
            let started = Instant::now();
            let text = Request::PostMessage(PostMessage {
                group_id: group.clone(),
                epoch,
                token: token(epoch),
                post_id: common::post_id(),
                message: vec![0x42; 256].into(),
            });
            let ok = matches!(alice.request(&text).await, Response::Accepted { .. });
            post.record(started, ok);
        }
        let started = Instant::now();
        let mailbox = Request::FetchMailbox {
            after: 0,
            limit: 1000,
        };
        let Response::Mailbox { entries } = bob.request(&mailbox).await else {
            catch_up.record(started, false);
            continue;
        };
        let found = entries
            .iter()
            .any(|e| e.group_id == group && e.epoch == epoch);
        if let Some(last) = entries.last() {
            let ack = Request::AckMailbox { up_to: last.id };
            assert_eq!(bob.request(&ack).await, Response::Ok);
        }
        let fetch = Request::FetchGroup(FetchGroup {
            group_id: group.clone(),
            token: token(epoch),
            after_seq: seq - 1,
            limit: 100,
        });
        let read = matches!(
            bob.request(&fetch).await,
            Response::GroupEntries { entries } if entries.len() == 11
        );
        catch_up.record(started, found && read);
    }
    [add, post, catch_up]
}

/// A registered client that published `one_time` KeyPackages and a last-resort one.
async fn with_key_packages(from: &str, node: &NodeProcess, one_time: usize) -> Client {
    let client = Client::connect_from(from, node.quic, node.fingerprint).await;
    client.register().await;
    let publish = Request::PublishKeyPackages(PublishKeyPackages {
        one_time: (0..one_time)
            .map(|_| client.key_package(&client.signer, false))
            .collect(),
        last_resort: client.key_package(&client.signer, true),
    });
    assert_eq!(client.request(&publish).await, Response::Ok);
    client
}

async fn run(url: &str, o: &Options, strangers: usize) {
    let data = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(data.path(), url, &[]);
    let victim = with_key_packages("127.0.4.1", &node, 30).await;
    // The people honest members add (enough that nobody adds the same person more often than
    // a person would, so the claim limits never refuse them), each with KeyPackages.
    let mut pool = Vec::new();
    for i in 0..o.members * 40 {
        pool.push(with_key_packages(&format!("127.0.5.{}", 1 + i % 50), &node, 10).await);
    }
    let pool = Arc::new(pool);
    let mut alices = Vec::new();
    for _ in 0..o.members {
        let alice = Client::connect_from("127.0.6.1", node.quic, node.fingerprint).await;
        alice.register().await;
        alices.push(alice);
    }
    // Everyone honest is registered before the flood (which exhausts the node's registrations).
    let stop = Arc::new(AtomicBool::new(false));
    let flood = Arc::new(Flood::default());
    // Registered before any starts (each then registers more from its address).
    let mut registered = Vec::new();
    for i in 0..strangers {
        let from = format!("127.0.3.{}", 1 + i % 50);
        let client = Client::connect_from(&from, node.quic, node.fingerprint).await;
        client.register().await;
        registered.push((client, from));
    }
    let mut hostile = Vec::new();
    for (client, from) in registered {
        hostile.push(tokio::spawn(stranger(
            client,
            from,
            (node.quic, node.fingerprint),
            victim.id(),
            flood.clone(),
            stop.clone(),
        )));
    }
    let mut members = Vec::new();
    for (i, alice) in alices.into_iter().enumerate() {
        members.push(tokio::spawn(member(
            alice,
            pool.clone(),
            i * 40,
            stop.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(o.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut totals = [Timed::default(), Timed::default(), Timed::default()];
    for m in members {
        for (total, part) in totals.iter_mut().zip(m.await.unwrap()) {
            total.latencies.extend(part.latencies);
            total.refused += part.refused;
        }
    }
    for h in hostile {
        let _ = h.await;
    }
    let Response::KeyPackageStock { one_time, .. } =
        victim.request(&Request::KeyPackageStock).await
    else {
        panic!("no stock")
    };
    let mailbox = Request::FetchMailbox {
        after: 0,
        limit: 1000,
    };
    let Response::Mailbox { entries } = victim.request(&mailbox).await else {
        panic!("no mailbox")
    };
    let [add, post, catch_up] = &mut totals;
    println!(
        "strangers {strangers:>4} | honest: {}; {}; {} | strangers: {} claims got {} KeyPackages, \
         {} Welcomes sent, {} taken, {} refused, {} more accounts | victim: {one_time} of 30 \
         one-time KeyPackages left, {} Welcomes in her mailbox",
        add.report("adds"),
        post.report("posts"),
        catch_up.report("catch-ups"),
        flood.claims.load(Ordering::Relaxed),
        flood.key_packages.load(Ordering::Relaxed),
        flood.welcomes_sent.load(Ordering::Relaxed),
        flood.welcomes_taken.load(Ordering::Relaxed),
        flood.refused.load(Ordering::Relaxed),
        flood.registered.load(Ordering::Relaxed),
        entries.len(),
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let o = options();
    let url = common::fresh_postgres_url().await;
    run(&url, &o, 0).await;
    let url = common::fresh_postgres_url().await;
    run(&url, &o, o.strangers).await;
}
