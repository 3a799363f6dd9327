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
//! For each size N, Alice creates a group of N members by batch adds (N-2 members exist only as
//! KeyPackages), Bob joins it, and then, `reps` times: Alice adds one member and Bob processes
//! the commit; Alice removes that member and Bob processes it; Alice sends a message and Bob
//! decrypts it. Each figure is the median over the repetitions.

use std::time::{Duration, Instant};

use mlschat_node::engine::{CIPHERSUITE, Engine};
use mlschat_node::identity::{DeviceName, Identity, SIGNATURE_SCHEME};
use mlschat_node::packet::Packet;
use mlschat_node::profile::Profile;
use openmls::prelude::{tls_codec::Deserialize as _, tls_codec::Serialize as _, *};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

const BATCH: usize = 1000;

/// The operations timed, in report order.
const OPS: [&str; 8] = [
    "add 1 (commit+merge)",
    "process add",
    "remove 1 (commit+merge)",
    "process remove",
    "send message",
    "decrypt message",
    "decrypt, batches of 64",
    "join (Welcome + tree)",
];

/// Messages per batch in "decrypt, batches of 64": what `mlschat receive` puts in one
/// transaction. The figure is per message.
const BATCH_OF_MESSAGES: usize = 64;

#[derive(Default)]
struct Timings(std::collections::BTreeMap<&'static str, Vec<Duration>>);

impl Timings {
    fn time<R>(&mut self, op: &'static str, f: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let r = f();
        self.0.entry(op).or_default().push(start.elapsed());
        r
    }

    /// Times `f`, which does `n` operations, and records the time per operation.
    fn time_per<R>(&mut self, op: &'static str, n: usize, f: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let r = f();
        self.0
            .entry(op)
            .or_default()
            .push(start.elapsed() / n as u32);
        r
    }

    fn median(&self, op: &str) -> Option<Duration> {
        let mut v = self.0.get(op)?.clone();
        v.sort();
        Some(v[v.len() / 2])
    }
}

/// A throwaway KeyPackage: its owner only ever exists as this package.
fn key_package(name: &str) -> KeyPackage {
    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(SIGNATURE_SCHEME).unwrap();
    let credential = CredentialWithKey {
        credential: BasicCredential::new(format!("{name}/dev").into_bytes()).into(),
        signature_key: signer.public().into(),
    };
    KeyPackage::builder()
        .build(CIPHERSUITE, &provider, &signer, credential)
        .unwrap()
        .key_package()
        .clone()
}

fn kp_bytes(kp: &KeyPackage) -> Vec<u8> {
    MlsMessageOut::from(kp.clone())
        .tls_serialize_detached()
        .unwrap()
}

fn bytes(m: MlsMessageOut) -> Vec<u8> {
    m.tls_serialize_detached().unwrap()
}

fn protocol(b: &[u8]) -> ProtocolMessage {
    MlsMessageIn::tls_deserialize_exact(b)
        .unwrap()
        .try_into_protocol_message()
        .unwrap()
}

/// Raw OpenMLS, in-memory store: the baseline.
struct RawPeer {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
}

impl RawPeer {
    fn new(name: &str) -> Self {
        let signer = SignatureKeyPair::new(SIGNATURE_SCHEME).unwrap();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(format!("{name}/dev").into_bytes()).into(),
            signature_key: signer.public().into(),
        };
        Self {
            provider: OpenMlsRustCrypto::default(),
            signer,
            credential,
        }
    }
}

fn raw_run(n: usize, reps: usize, members: &[KeyPackage]) -> Timings {
    let mut t = Timings::default();
    let alice = RawPeer::new("alice");
    let bob = RawPeer::new("bob");
    let bob_kp = KeyPackage::builder()
        .build(
            CIPHERSUITE,
            &bob.provider,
            &bob.signer,
            bob.credential.clone(),
        )
        .unwrap()
        .key_package()
        .clone();
    // The same group policy as the durable path, so only storage differs.
    let config = Engine::create_config();
    let mut a = MlsGroup::new(
        &alice.provider,
        &alice.signer,
        &config,
        alice.credential.clone(),
    )
    .unwrap();
    let mut others: Vec<KeyPackage> = members[..n - 2].to_vec();
    others.push(bob_kp);
    let mut welcome = None;
    for batch in others.chunks(BATCH) {
        let (_, w, _) = a
            .add_members_without_update(&alice.provider, &alice.signer, batch)
            .unwrap();
        a.merge_pending_commit(&alice.provider).unwrap();
        welcome = Some(bytes(w));
    }
    let tree = a.export_ratchet_tree().tls_serialize_detached().unwrap();
    let mut b = t.time("join (Welcome + tree)", || {
        let w = match MlsMessageIn::tls_deserialize_exact(&welcome.unwrap())
            .unwrap()
            .extract()
        {
            MlsMessageBodyIn::Welcome(w) => w,
            _ => unreachable!(),
        };
        let tree = RatchetTreeIn::tls_deserialize_exact(&tree).unwrap();
        StagedWelcome::new_from_welcome(&bob.provider, config.join_config(), w, Some(tree))
            .unwrap()
            .into_group(&bob.provider)
            .unwrap()
    });
    assert_eq!(b.members().count(), n);

    let process = |b: &mut MlsGroup, msg: &[u8]| match b
        .process_message(&bob.provider, protocol(msg))
        .unwrap()
        .into_content()
    {
        ProcessedMessageContent::StagedCommitMessage(s) => {
            b.merge_staged_commit(&bob.provider, *s).unwrap()
        }
        ProcessedMessageContent::ApplicationMessage(m) => {
            assert!(!m.into_bytes().is_empty())
        }
        _ => unreachable!(),
    };
    for i in 0..reps {
        let x = key_package(&format!("x{i}"));
        let x_key = x.leaf_node().signature_key().clone();
        let commit = t.time("add 1 (commit+merge)", || {
            let (c, _w, _) = a
                .add_members_without_update(&alice.provider, &alice.signer, &[x])
                .unwrap();
            a.merge_pending_commit(&alice.provider).unwrap();
            // The joiner needs the tree; export it as the durable path does.
            let _tree = a.export_ratchet_tree().tls_serialize_detached().unwrap();
            bytes(c)
        });
        t.time("process add", || process(&mut b, &commit));
        let leaf = a
            .members()
            .find(|m| m.signature_key == x_key.as_slice())
            .unwrap()
            .index;
        let commit = t.time("remove 1 (commit+merge)", || {
            let (c, _, _) = a
                .remove_members(&alice.provider, &alice.signer, &[leaf])
                .unwrap();
            a.merge_pending_commit(&alice.provider).unwrap();
            bytes(c)
        });
        t.time("process remove", || process(&mut b, &commit));
        let msg = t.time("send message", || {
            bytes(
                a.create_message(&alice.provider, &alice.signer, b"hello")
                    .unwrap(),
            )
        });
        t.time("decrypt message", || process(&mut b, &msg));
        let msgs: Vec<Vec<u8>> = (0..BATCH_OF_MESSAGES)
            .map(|_| {
                bytes(
                    a.create_message(&alice.provider, &alice.signer, b"hello")
                        .unwrap(),
                )
            })
            .collect();
        t.time_per("decrypt, batches of 64", msgs.len(), || {
            for m in &msgs {
                process(&mut b, m)
            }
        });
    }
    assert_eq!(
        a.epoch_authenticator().as_slice(),
        b.epoch_authenticator().as_slice()
    );
    t
}

fn durable_run(n: usize, reps: usize, members: &[KeyPackage]) -> Timings {
    let mut t = Timings::default();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = Profile::create(
        &dirs.0.path().join("alice"),
        DeviceName::new("alice", "dev").unwrap(),
        None,
    )
    .unwrap();
    let mut bob = Profile::create(
        &dirs.1.path().join("bob"),
        DeviceName::new("bob", "dev").unwrap(),
        None,
    )
    .unwrap();
    let group = alice.create_group("bench").unwrap().id;
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

    let mut deliver = |bob: &mut Profile, op: &'static str, packets: &[Packet]| {
        for p in packets {
            t.time(op, || bob.receive(p).unwrap());
        }
    };
    let mut own = Timings::default();
    for i in 0..reps {
        let x = kp_bytes(&key_package(&format!("x{i}")));
        let out = own.time("add 1 (commit+merge)", || {
            alice.add_members(&group, &[x]).unwrap()
        });
        alice.mark_sent(&out.outbox).unwrap();
        deliver(&mut bob, "process add", &out.to_group);
        let leaf = alice
            .members(&group)
            .unwrap()
            .into_iter()
            .find(|m| m.name.as_ref().is_some_and(|n| n.user == format!("x{i}")))
            .unwrap()
            .leaf_index;
        let who = [format!("#{leaf}")];
        let out = own.time("remove 1 (commit+merge)", || {
            alice.remove_members(&group, &who).unwrap()
        });
        alice.mark_sent(&out.outbox).unwrap();
        deliver(&mut bob, "process remove", &out.to_group);
        let out = own.time("send message", || alice.send(&group, "hello").unwrap());
        alice.mark_sent(&out.outbox).unwrap();
        deliver(&mut bob, "decrypt message", &out.to_group);
        let mut msgs = Vec::new();
        for _ in 0..BATCH_OF_MESSAGES {
            let out = alice.send(&group, "hello").unwrap();
            alice.mark_sent(&out.outbox).unwrap();
            msgs.extend(out.to_group);
        }
        own.time_per("decrypt, batches of 64", msgs.len(), || {
            for r in bob.receive_batch(&msgs).unwrap() {
                r.unwrap();
            }
        });
    }
    t.0.extend(own.0);
    let auth = |p: &mut Profile| p.groups().unwrap()[0].epoch_authenticator.clone();
    assert_eq!(auth(&mut alice), auth(&mut bob));
    t
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
    // The engine itself is what the durable path runs; make sure it is linked as benchmarked.
    let _ = Engine::new(Identity::generate(DeviceName::new("x", "y").unwrap()));

    let mut report = Vec::new();
    for &n in &sizes {
        let start = Instant::now();
        let members: Vec<KeyPackage> = (0..n - 2).map(|i| key_package(&format!("m{i}"))).collect();
        eprintln!(
            "n={n}: {} KeyPackages in {:?}",
            members.len(),
            start.elapsed()
        );
        let start = Instant::now();
        if durable_only {
            durable_run(n, reps, &members);
            eprintln!("n={n}: durable run in {:?}", start.elapsed());
            continue;
        }
        let raw = raw_run(n, reps, &members);
        eprintln!("n={n}: raw run in {:?}", start.elapsed());
        let start = Instant::now();
        let durable = durable_run(n, reps, &members);
        eprintln!("n={n}: durable run in {:?}", start.elapsed());
        println!("\nmembers: {n}   (median of {reps}; join: 1 sample)");
        println!(
            "{:<26} {:>12} {:>12} {:>7}",
            "operation", "raw mem", "durable", "ratio"
        );
        for op in OPS {
            let (Some(r), Some(d)) = (raw.median(op), durable.median(op)) else {
                continue;
            };
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
