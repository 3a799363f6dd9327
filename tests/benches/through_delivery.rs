//! A large group through a delivery node, end to end: latencies as a member sees them, next to
//! raw OpenMLS (in memory, no network, no disk) measured in the same run.
//!
//! ```text
//! cargo bench -p mlschat-tests --bench through_delivery -- [--members 1000] [--reps 20]
//! cargo bench -p mlschat-tests --bench through_delivery -- --message-sizes 2,1000,10000
//! ```
//!
//! A real `mlschat-delivery` process (Postgres at `DATABASE_URL` if set, else SQLite) serves
//! three full peers (Alice, Bob, Carol: profiles on disk, each a `Driver` on its own thread and
//! runtime, each driving its sync core; Bob and Carol applying pushes as they come) and `members - 3` members who only hold
//! a KeyPackage on the node. Alice builds the group by adding the KeyPackage holders 100 per
//! commit; then, `reps` times: she adds one more member, removes them, and sends a message. Each
//! latency runs from Alice's call until Bob (and, for messages, Carol) has processed the result:
//! claim, commit, post, the node's transaction, the push, Bob's processing and his transaction.

use mlschat_testkit::percentile;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlschat_loadtest::crowd::key_package_member;
use mlschat_loadtest::target::{Node, Target};
use mlschat_node::driver::Driver;
use mlschat_node::identity::DeviceName;
use mlschat_node::profile::{HistoryKind, Home, InviteCode, Profile};
use mlschat_testkit::raw::{Raw, Side, Timings, key_package};
use mlschat_tests::cluster::DeliveryProcess;
use openmls::prelude::KeyPackage;
use tokio::sync::watch;

/// Members added per commit while the group is built.
const BUILD_BATCH: usize = 100;

/// What a listening peer has processed so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Seen {
    epoch: u64,
    texts: usize,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The release binaries' directory, with `mlschat-delivery` built.
fn bin_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "mlschat-delivery"])
        .status()
        .unwrap();
    assert!(status.success());
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

fn new_profile(dir: &Path, name: &str, node: &DeliveryProcess) -> Profile {
    let mut profile = Profile::create(
        &dir.join(name),
        DeviceName::new(name, "laptop").unwrap(),
        None,
    )
    .unwrap();
    profile
        .set_home(&Home {
            address: node.address.clone(),
            fingerprint: hex::decode(&node.fingerprint).unwrap().try_into().unwrap(),
            invite: Vec::new(),
        })
        .unwrap();
    profile
}

/// A member who exists only as one KeyPackage on the node: registers, publishes, leaves.
async fn key_package_holder(node: (std::net::SocketAddr, [u8; 32]), name: String) -> InviteCode {
    let target = Target {
        nodes: vec![Node {
            quic: node.0,
            pin: node.1,
            admin: None,
        }],
        invite: Vec::new(),
    };
    key_package_member(&target, 0, &name, 1).await.unwrap()
}

/// Alice adds these contacts in one commit and waits until the node has ordered it.
async fn add(alice: &mut Driver, who: Vec<String>) {
    let big = alice.profile().find_group("big").unwrap();
    let ticket = alice.core().add(&big, &who).unwrap();
    alice.wait(ticket).await.unwrap();
}

/// Runs a peer on its own thread: connects, then applies pushes and reports what it has seen.
fn listener(profile: Profile, group: Arc<std::sync::OnceLock<String>>) -> watch::Receiver<Seen> {
    let (report, seen) = watch::channel(Seen::default());
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let mut driver = Driver::new(profile);
            driver.connect().await.unwrap();
            loop {
                driver.step().await;
                let Some(id) = group.get() else { continue };
                let profile = driver.profile();
                let Ok(gid) = profile.find_group(id) else {
                    continue;
                };
                let (epoch, _) = profile.group_token(&gid).unwrap();
                let texts = profile
                    .history(&gid, u32::MAX)
                    .unwrap()
                    .iter()
                    .filter(|e| e.kind == HistoryKind::Text)
                    .count();
                report.send_replace(Seen { epoch, texts });
            }
        })
    });
    seen
}

async fn wait_for(seen: &mut watch::Receiver<Seen>, done: impl Fn(&Seen) -> bool) {
    tokio::time::timeout(Duration::from_secs(120), seen.wait_for(|s| done(s)))
        .await
        .expect("a listener fell behind for two minutes")
        .expect("a listener died");
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let mut members = 1000;
    let mut reps = 20;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--members" => members = args.next().unwrap().parse().unwrap(),
            "--reps" => reps = args.next().unwrap().parse().unwrap(),
            "--message-sizes" => {
                let sizes = args.next().unwrap();
                return message_sizes(sizes.split(',').map(|n| n.parse().unwrap()));
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let database = std::env::var("DATABASE_URL").ok();
    let node = DeliveryProcess::start(
        &bin_dir(),
        &dir.path().join("node"),
        database.as_deref(),
        &[
            ("MLSCHAT__LIMITS__CLAIM_BURST", "1000000"),
            ("MLSCHAT__LIMITS__OWNER_CLAIM_BURST", "1000000"),
            ("MLSCHAT__LIMITS__CLIENT_REQUESTS_BURST", "1000000"),
            ("MLSCHAT__LIMITS__CLIENT_REQUESTS_PER_SECOND", "1e9"),
            ("MLSCHAT__LIMITS__ADDRESS_REGISTRATIONS_BURST", "1000000"),
            // A thousand members register from this one address, each before authenticating.
            ("MLSCHAT__LIMITS__ADDRESS_REQUESTS_BURST", "1000000"),
            ("MLSCHAT__LIMITS__ADDRESS_REQUESTS_PER_SECOND", "1e9"),
            ("MLSCHAT__LIMITS__NODE_REGISTRATIONS_BURST", "1000000"),
            ("MLSCHAT__LIMITS__PAIR_CLAIM_BURST", "1000000"),
        ],
    )
    .unwrap();
    let backend = if database.is_some() {
        "Postgres"
    } else {
        "SQLite"
    };
    eprintln!("delivery node on {} ({backend})", node.address);
    let rt = runtime();
    let addr: std::net::SocketAddr = node.address.parse().unwrap();
    let pin: [u8; 32] = hex::decode(&node.fingerprint).unwrap().try_into().unwrap();

    // KeyPackage holders: the group's members beyond the three peers, and one per repetition.
    let started = Instant::now();
    let holders: Vec<InviteCode> = rt.block_on(async {
        let mut codes = Vec::new();
        let names: Vec<String> = (0..members - 3 + reps).map(|i| format!("m{i}")).collect();
        for chunk in names.chunks(32) {
            let mut tasks = tokio::task::JoinSet::new();
            for name in chunk {
                tasks.spawn(key_package_holder((addr, pin), name.clone()));
            }
            codes.extend(tasks.join_all().await);
        }
        codes
    });
    eprintln!(
        "{} KeyPackage holders registered in {:?}",
        holders.len(),
        started.elapsed()
    );

    let group = Arc::new(std::sync::OnceLock::new());
    let bob = new_profile(dir.path(), "bob", &node);
    let carol = new_profile(dir.path(), "carol", &node);
    let (mut bob, mut carol) = (bob, carol);
    let (bob_code, carol_code) = (bob.invite_code().unwrap(), carol.invite_code().unwrap());
    let mut alice = new_profile(dir.path(), "alice", &node);
    // Bob and Carol know Alice: her Welcome is joined, not kept as a request.
    bob.add_contact(&alice.invite_code().unwrap()).unwrap();
    carol.add_contact(&alice.invite_code().unwrap()).unwrap();
    let mut bob_seen = listener(bob, group.clone());
    let mut carol_seen = listener(carol, group.clone());
    for code in holders.iter().chain([&bob_code, &carol_code]) {
        let mut code = code.clone();
        code.home = alice.home().unwrap().unwrap();
        alice.add_contact(&code).unwrap();
    }

    let mut t = Timings::default();
    let mut build = Vec::new();
    rt.block_on(async {
        // Let the listeners publish their KeyPackages first.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut alice = Driver::new(alice);
        alice.connect().await.unwrap();
        alice.sync().await.unwrap();
        alice.core().create_group("big").unwrap();
        let names = |codes: &[InviteCode]| -> Vec<String> {
            codes.iter().map(|c| c.name.to_string()).collect()
        };
        add(&mut alice, names(&[bob_code.clone(), carol_code.clone()])).await;
        let id = alice.profile().groups().unwrap()[0].id.clone();
        group.set(id).unwrap();
        let epoch = |a: &mut Driver| {
            let gid = a.profile().find_group("big").unwrap();
            a.profile().group_token(&gid).unwrap().0
        };
        let target = epoch(&mut alice);
        wait_for(&mut bob_seen, |s| s.epoch >= target).await;
        wait_for(&mut carol_seen, |s| s.epoch >= target).await;

        for batch in holders[..members - 3].chunks(BUILD_BATCH) {
            let start = Instant::now();
            add(&mut alice, names(batch)).await;
            let target = epoch(&mut alice);
            wait_for(&mut bob_seen, |s| s.epoch >= target).await;
            build.push(start.elapsed());
        }
        let big = alice.profile().find_group("big").unwrap();
        let size = alice.profile().members(&big).unwrap().len();
        assert_eq!(size, members);
        eprintln!("group of {size} built in {} commits", build.len());

        for (i, extra) in holders[members - 3..].iter().enumerate() {
            let name = extra.name.to_string();
            let start = Instant::now();
            add(&mut alice, vec![name.clone()]).await;
            let target = epoch(&mut alice);
            wait_for(&mut bob_seen, |s| s.epoch >= target).await;
            t.0.entry("add 1").or_default().push(start.elapsed());

            let start = Instant::now();
            let ticket = alice.core().remove(&big, &[name]).unwrap();
            alice.wait(ticket).await.unwrap();
            let target = epoch(&mut alice);
            wait_for(&mut bob_seen, |s| s.epoch >= target).await;
            t.0.entry("remove 1").or_default().push(start.elapsed());

            let start = Instant::now();
            let ticket = alice.core().send(&big, &format!("message {i}")).unwrap();
            alice.wait(ticket).await.unwrap();
            wait_for(&mut bob_seen, |s| s.texts > i).await;
            t.0.entry("message (Bob)")
                .or_default()
                .push(start.elapsed());
            wait_for(&mut carol_seen, |s| s.texts > i).await;
            t.0.entry("message (Bob and Carol)")
                .or_default()
                .push(start.elapsed());
        }
    });

    // Raw OpenMLS, same run, same group size: Alice's operation plus Bob's processing.
    let kps: Vec<KeyPackage> = (0..members)
        .map(|i| key_package(&format!("r{i}")))
        .collect();
    let mut raw_t = Timings::default();
    let mut raw_side = Raw::new(members, &kps, &mut raw_t);
    for i in 0..reps {
        let x = [key_package(&format!("x{i}"))];
        raw_t.time("add 1", || {
            let c = raw_side.add(&x);
            raw_side.process(&c)
        });
        raw_t.time("remove 1", || {
            let c = raw_side.remove(&x);
            raw_side.process(&c)
        });
        raw_t.time("message (Bob)", || {
            let m = raw_side.send();
            raw_side.process(&m)
        });
    }

    build.sort();
    println!(
        "\n{members} members through a delivery node ({backend}), {reps} repetitions; \
         latency from Alice's call until Bob has processed it"
    );
    println!(
        "{:<26} {:>10} {:>10} {:>10}   {:>14}",
        "operation", "p50", "p99", "max", "raw OpenMLS p50"
    );
    println!(
        "{:<26} {:>10} {:>10} {:>10}   {:>14}",
        format!("add {BUILD_BATCH} (building)"),
        ms(percentile(&build, 0.5)),
        ms(percentile(&build, 0.99)),
        ms(*build.last().unwrap()),
        "-"
    );
    for op in [
        "add 1",
        "remove 1",
        "message (Bob)",
        "message (Bob and Carol)",
    ] {
        let mut v = t.0[op].clone();
        v.sort();
        let raw = raw_t.median(op).map_or("-".into(), ms);
        println!(
            "{op:<26} {:>10} {:>10} {:>10}   {raw:>14}",
            ms(percentile(&v, 0.5)),
            ms(percentile(&v, 0.99)),
            ms(*v.last().unwrap())
        );
    }
    drop(node);
}

/// What the node stores for one message, by group size: the post is one row holding the
/// MLSMessage as sent, so its length is the storage. Measured on raw OpenMLS groups with the
/// same policy (padding included), for the same 5-byte text.
fn message_sizes(sizes: impl Iterator<Item = usize>) {
    for n in sizes {
        let kps: Vec<KeyPackage> = (0..n).map(|i| key_package(&format!("s{i}"))).collect();
        let mut group = Raw::new(n, &kps, &mut Timings::default());
        let stored: Vec<usize> = (0..5).map(|_| group.send()[0].len()).collect();
        println!("{n:>6} members: a message is stored as {stored:?} bytes");
    }
}
