//! The cost of group operations on the durable path (a `Profile`: engine + SQLite in one
//! transaction per operation) next to raw OpenMLS with its in-memory store, measured in the same
//! run on the same group shapes.
//!
//! ```text
//! cargo bench -p mlschat-node --bench engine -- [--sizes 1000,10000] [--reps 5] [--json FILE]
//! ```
//!
//! (`--json` is relative to `node/`, where cargo runs benchmarks.) `--profile-durable` runs only
//! the durable path, for a profiler.
//!
//! ```text
//! ```
//!
//! For each size N, on each side (durable, raw), Alice creates a group of N members by batch adds
//! (N-2 members exist only as KeyPackages), Bob joins it, and then, `reps` times: Alice adds one
//! member and Bob processes the commit; Alice removes that member and Bob processes it; Alice
//! sends a message and Bob decrypts it; Alice sends 64 and Bob decrypts them as one batch. The
//! two sides alternate repetition by repetition, so noise falls on both. Each figure is the
//! median over the repetitions.

use std::time::{Duration, Instant};

use mlschat_node::identity::{DeviceName, Fingerprint};
use mlschat_node::profile::{Outgoing, Profile};
use mlschat_wire::packet::Packet;
use openmls::prelude::*;

/// The operations timed, in report order.
const OPS: [&str; 9] = [
    "add 1 (commit+merge)",
    "process add",
    "remove 1 (commit+merge)",
    "process remove",
    "send message",
    "decrypt message",
    "decrypt, batches of 64",
    "join (Welcome + tree)",
    "floor: empty SQLite commit",
];

/// Messages per batch in "decrypt, batches of 64": what `mlschat receive` puts in one
/// transaction. Message figures are the mean per message over this many.
const BATCH_OF_MESSAGES: usize = 64;

use mlschat_testkit::raw::{BATCH, Raw, Side, Timings, key_package, kp_bytes};

/// One repetition of the measured operations.
fn measure<S: Side>(side: &mut S, t: &mut Timings, i: usize) {
    let x = key_package(&format!("x{i}"));
    let x = std::slice::from_ref(&x);
    let commit = t.time("add 1 (commit+merge)", || side.add(x));
    t.time("process add", || side.process(&commit));
    let commit = t.time("remove 1 (commit+merge)", || side.remove(x));
    t.time("process remove", || side.process(&commit));
    let msg = t.time("send message", || side.send());
    t.time("decrypt message", || side.process(&msg));
    let msgs: Vec<S::Msg> = (0..BATCH_OF_MESSAGES).flat_map(|_| side.send()).collect();
    t.time_per("decrypt, batches of 64", msgs.len(), || {
        side.process_batch(&msgs)
    });
}

/// Our durable path: two `Profile`s on SQLite files, one transaction per operation.
struct Durable {
    alice: Profile,
    bob: Profile,
    group: GroupId,
    /// A plain SQLite file beside the profiles, same settings, for the commit floor.
    floor: rusqlite::Connection,
    _dirs: tempfile::TempDir,
}

impl Durable {
    fn new(n: usize, members: &[KeyPackage], t: &mut Timings) -> Self {
        let dirs = tempfile::tempdir().unwrap();
        let mut alice = Profile::create(
            &dirs.path().join("alice"),
            DeviceName::new("alice", "dev").unwrap(),
            None,
        )
        .unwrap();
        let mut bob = Profile::create(
            &dirs.path().join("bob"),
            DeviceName::new("bob", "dev").unwrap(),
            None,
        )
        .unwrap();
        let created = alice.create_group("bench").unwrap();
        let group = alice.find_group(&created.id).unwrap();
        let mut others: Vec<Vec<u8>> = members[..n - 2].iter().map(kp_bytes).collect();
        others.push(bob.new_key_package(false).unwrap());
        let mut join = None;
        for batch in others.chunks(BATCH) {
            let out = alice.add_members(&group, batch).unwrap();
            alice.mark_sent(&out.outbox).unwrap();
            join = out.to_joiners;
        }
        t.time("join (Welcome + tree)", || {
            bob.receive(&join.unwrap()).unwrap()
        });
        let floor = rusqlite::Connection::open(dirs.path().join("floor.db")).unwrap();
        floor
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; CREATE TABLE t (x BLOB);",
            )
            .unwrap();
        Self {
            alice,
            bob,
            group,
            floor,
            _dirs: dirs,
        }
    }

    fn delivered(&mut self, out: Outgoing) -> Vec<Packet> {
        self.alice.mark_sent(&out.outbox).unwrap();
        out.to_group
    }
}

impl Side for Durable {
    type Msg = Packet;

    fn add(&mut self, kps: &[KeyPackage]) -> Vec<Packet> {
        let kps: Vec<Vec<u8>> = kps.iter().map(kp_bytes).collect();
        let out = self.alice.add_members(&self.group, &kps).unwrap();
        self.delivered(out)
    }

    fn remove(&mut self, kps: &[KeyPackage]) -> Vec<Packet> {
        let fingerprints: Vec<String> = kps
            .iter()
            .map(|kp| {
                let key = kp.leaf_node().signature_key().as_slice();
                hex::encode(&Fingerprint::of_signature_key(key).0[..8])
            })
            .collect();
        let out = self
            .alice
            .remove_members(&self.group, &fingerprints)
            .unwrap();
        self.delivered(out)
    }

    fn send(&mut self) -> Vec<Packet> {
        let out = self.alice.send(&self.group, "hello").unwrap();
        self.delivered(out)
    }

    fn process(&mut self, msgs: &[Packet]) {
        for p in msgs {
            self.bob.receive(p).unwrap();
        }
    }

    fn process_batch(&mut self, msgs: &[Packet]) {
        for r in self.bob.receive_batch(msgs).unwrap() {
            r.unwrap();
        }
    }

    fn epoch_authenticators(&mut self) -> (Vec<u8>, Vec<u8>) {
        let auth =
            |p: &mut Profile| hex::decode(&p.groups().unwrap()[0].epoch_authenticator).unwrap();
        (auth(&mut self.alice), auth(&mut self.bob))
    }
}

fn main() {
    let mut sizes = vec![1000, 10_000];
    let mut reps = 5;
    let mut json_out = None;
    let mut durable_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--sizes" => {
                sizes = args
                    .next()
                    .expect("--sizes N,M")
                    .split(',')
                    .map(|s| s.parse().expect("a number"))
                    .collect()
            }
            "--reps" => reps = args.next().expect("--reps N").parse().expect("a number"),
            "--json" => json_out = Some(args.next().expect("--json FILE")),
            "--profile-durable" => durable_only = true,
            "--bench" => {} // passed by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }

    let mut report = Vec::new();
    for &n in &sizes {
        let start = Instant::now();
        let members: Vec<KeyPackage> = (0..n - 2).map(|i| key_package(&format!("m{i}"))).collect();
        eprintln!(
            "n={n}: {} KeyPackages in {:?}",
            members.len(),
            start.elapsed()
        );
        let (mut raw_t, mut durable_t) = (Timings::default(), Timings::default());
        let start = Instant::now();
        let mut durable = Durable::new(n, &members, &mut durable_t);
        eprintln!("n={n}: durable group ready in {:?}", start.elapsed());
        let mut raw = (!durable_only).then(|| {
            let start = Instant::now();
            let raw = Raw::new(n, &members, &mut raw_t);
            eprintln!("n={n}: raw group ready in {:?}", start.elapsed());
            raw
        });
        // Interleaved, so that the machine's noise falls on both sides alike.
        for i in 0..reps {
            if let Some(raw) = raw.as_mut() {
                measure(raw, &mut raw_t, i);
            }
            measure(&mut durable, &mut durable_t, i);
            // What the disk alone costs per transaction, right now: the floor under every
            // single-message figure on the durable side.
            durable_t.time_per("floor: empty SQLite commit", BATCH_OF_MESSAGES, || {
                for _ in 0..BATCH_OF_MESSAGES {
                    durable
                        .floor
                        .execute("INSERT INTO t VALUES (zeroblob(100))", [])
                        .unwrap();
                }
            });
            raw_t
                .0
                .entry("floor: empty SQLite commit")
                .or_default()
                .push(Duration::from_nanos(1));
        }
        let (a, b) = durable.epoch_authenticators();
        assert_eq!(a, b, "durable: Alice and Bob disagree");
        let Some(mut raw) = raw else { continue };
        let (a, b) = raw.epoch_authenticators();
        assert_eq!(a, b, "raw: Alice and Bob disagree");
        let (raw, durable) = (raw_t, durable_t);
        println!("\nmembers: {n}   (median of {reps}; join: 1 sample)");
        println!(
            "{:<26} {:>12} {:>12} {:>7}",
            "operation", "raw mem", "durable", "ratio"
        );
        for op in OPS {
            let (Some(r), Some(d)) = (raw.median(op), durable.median(op)) else {
                continue;
            };
            if op.starts_with("floor") {
                println!("{op:<26} {:>12} {:>12.3?}", "-", d);
                report.push(serde_json::json!({
                    "members": n, "operation": op, "durable_ms": d.as_secs_f64() * 1e3,
                }));
                continue;
            }
            let ratio = d.as_secs_f64() / r.as_secs_f64();
            println!("{op:<26} {:>12.3?} {:>12.3?} {ratio:>6.2}x", r, d);
            report.push(serde_json::json!({
                "members": n, "operation": op,
                "raw_in_memory_ms": r.as_secs_f64() * 1e3,
                "durable_ms": d.as_secs_f64() * 1e3,
                "ratio": ratio,
            }));
        }
    }
    if let Some(path) = json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    }
}
