//! Drives the real `mlschat` binary: several profiles chatting by exchanging files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// A scratch directory holding every profile of one test, and the files they exchange.
struct World {
    dir: tempfile::TempDir,
}

/// One person (profile) in a [`World`].
struct Peer<'w> {
    world: &'w World,
    name: String,
}

impl World {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn peer(&self, name: &str) -> Peer<'_> {
        let peer = Peer {
            world: self,
            name: name.into(),
        };
        peer.ok(&["init", "--user", name, "--device", "dev"]);
        peer
    }
}

impl Peer<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlschat"));
        cmd.arg("--data-dir")
            .arg(self.world.path("profiles"))
            .arg("--profile")
            .arg(&self.name)
            .args(args)
            .current_dir(self.world.dir.path())
            .env_remove("MLSCHAT_PASSPHRASE");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {:?} failed: {}",
            self.name,
            args,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects exit code `code`; returns stderr.
    fn fails(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{} {:?}: expected exit {code}; stdout {} stderr {stderr}",
            self.name,
            args,
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            stderr.starts_with("mlschat: error: ") && stderr.lines().count() == 1,
            "not one clear line: {stderr}"
        );
        stderr
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    /// Writes a fresh KeyPackage and returns its file name.
    fn key_package(&self) -> String {
        let file = format!("{}-{}.kp", self.name, rand_suffix());
        self.ok(&["keypackage", "--out", &file]);
        file
    }

    /// The only group this peer is in.
    fn group(&self) -> Value {
        let groups = self.json(&["group", "list"]);
        let groups = groups.as_array().unwrap();
        assert_eq!(groups.len(), 1, "{groups:?}");
        groups[0].clone()
    }

    fn group_id(&self) -> String {
        self.group()["id"].as_str().unwrap().to_owned()
    }

    /// Everything this peer can tell about its group's state: epoch, authenticator, history.
    fn state(&self) -> (Value, Value) {
        let id = self.group_id();
        (self.group(), self.json(&["history", &id]))
    }

    /// The texts of the group's history, in order.
    fn texts(&self) -> Vec<String> {
        let id = self.group_id();
        self.json(&["history", &id, "--limit", "100000"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "text")
            .map(|e| {
                format!(
                    "{}: {}",
                    e["sender"].as_str().unwrap(),
                    e["body"].as_str().unwrap()
                )
            })
            .collect()
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// Alice creates `team` and adds everyone in `others`, one commit each; everyone already in
/// processes each commit.
fn group_of<'w>(world: &'w World, alice: &Peer<'w>, others: &[&Peer<'w>]) {
    alice.ok(&["group", "create", "team"]);
    let mut members: Vec<&Peer> = Vec::new();
    for (i, peer) in others.iter().enumerate() {
        let kp = peer.key_package();
        let (commit, welcome) = (format!("add{i}.commit"), format!("add{i}.welcome"));
        alice.ok(&[
            "group",
            "add",
            "team",
            &kp,
            "--out",
            &commit,
            "--welcome-out",
            &welcome,
        ]);
        for m in &members {
            m.ok(&["receive", &commit]);
        }
        peer.ok(&["receive", &welcome]);
        members.push(peer);
    }
    let _ = world;
}

/// Both hold the same group state: their MLS epoch authenticators are equal.
fn assert_in_sync(a: &Peer, b: &Peer) {
    assert_eq!(
        a.group()["epoch_authenticator"],
        b.group()["epoch_authenticator"],
        "{} and {} disagree on the group state",
        a.name,
        b.name
    );
}

fn flip_byte(world: &World, from: &str, to: &str, index_from_end: usize) {
    let mut bytes = std::fs::read(world.path(from)).unwrap();
    let n = bytes.len();
    bytes[n - index_from_end] ^= 0x01;
    std::fs::write(world.path(to), bytes).unwrap();
}

#[test]
fn group_chat_with_batch_add_and_removal() {
    let world = World::new();
    let (alice, bob, carol, dave) = (
        world.peer("alice"),
        world.peer("bob"),
        world.peer("carol"),
        world.peer("dave"),
    );

    alice.ok(&["group", "create", "team"]);
    let bob_kp = bob.key_package();
    alice.ok(&[
        "group",
        "add",
        "team",
        &bob_kp,
        "--out",
        "c1",
        "--welcome-out",
        "w1",
    ]);
    assert!(
        bob.ok(&["receive", "w1"])
            .contains("joined, added by alice/dev")
    );

    // Carol and Dave in one batch: one commit, one Welcome for both.
    let (carol_kp, dave_kp) = (carol.key_package(), dave.key_package());
    alice.ok(&[
        "group",
        "add",
        "team",
        &carol_kp,
        &dave_kp,
        "--out",
        "c2",
        "--welcome-out",
        "w2",
    ]);
    assert!(
        bob.ok(&["receive", "c2"])
            .contains("alice/dev added carol/dev, dave/dev (epoch 2)")
    );
    carol.ok(&["receive", "w2"]);
    dave.ok(&["receive", "w2"]);
    assert_eq!(alice.group()["members"], 4);
    let id = alice.group_id();
    for p in [&bob, &carol, &dave] {
        assert_eq!(p.group_id(), id);
    }

    // Alice to all, then Bob to all: Bob's first send refreshes his keys first.
    alice.ok(&["send", "team", "hello all", "--out", "m1"]);
    for p in [&bob, &carol, &dave] {
        assert!(p.ok(&["receive", "m1"]).contains("alice/dev: hello all"));
    }
    bob.ok(&["group", "rename", &id[..8], "our-team"]);
    assert_eq!(bob.group()["name"], "our-team");
    bob.ok(&["send", "our-team", "hi from bob", "--out", "m2"]);
    for p in [&alice, &carol, &dave] {
        let out = p.ok(&["receive", "m2"]);
        assert!(out.contains("bob/dev updated their keys"), "{out}");
        assert!(out.contains("bob/dev: hi from bob"), "{out}");
    }

    // Carol is removed; she learns it, and reads nothing after.
    alice.ok(&["group", "remove", "team", "carol", "--out", "c3"]);
    for p in [&bob, &dave] {
        assert!(p.ok(&["receive", "c3"]).contains("removed carol/dev"));
    }
    assert!(
        carol
            .ok(&["receive", "c3"])
            .contains("you were removed by alice/dev")
    );
    assert_eq!(carol.group()["state"], "removed");
    alice.ok(&["send", "team", "after carol", "--out", "m3"]);
    let err = carol.fails(7, &["receive", "m3"]);
    assert!(err.contains("no longer a member"), "{err}");
    assert!(!carol.texts().iter().any(|t| t.contains("after carol")));
    for p in [&bob, &dave] {
        assert!(p.ok(&["receive", "m3"]).contains("alice/dev: after carol"));
    }

    // Everyone still in agrees on the group state.
    for p in [&bob, &dave] {
        assert_in_sync(p, &alice);
    }
    assert_eq!(
        dave.texts(),
        [
            "alice/dev: hello all",
            "bob/dev: hi from bob",
            "alice/dev: after carol"
        ]
    );
}

#[test]
fn member_leaves_by_proposal_and_the_next_commit_removes_her() {
    let world = World::new();
    let (alice, bob, carol) = (world.peer("alice"), world.peer("bob"), world.peer("carol"));
    group_of(&world, &alice, &[&bob, &carol]);
    let id = carol.group_id();
    carol.ok(&["group", "leave", &id, "--out", "leave"]);
    for p in [&alice, &bob] {
        assert!(
            p.ok(&["receive", "leave"])
                .contains("carol/dev proposed: remove carol/dev")
        );
    }
    // Alice's next commit carries the queued proposal.
    alice.ok(&["group", "update", "team", "--out", "commit"]);
    assert!(bob.ok(&["receive", "commit"]).contains("removed carol/dev"));
    assert!(
        carol
            .ok(&["receive", "commit"])
            .contains("you were removed by alice/dev")
    );
    assert_eq!(alice.group()["members"], 2);
    assert_in_sync(&bob, &alice);
}

#[test]
fn a_last_resort_key_package_adds_its_owner_to_several_groups() {
    let world = World::new();
    let (alice, carol, bob) = (world.peer("alice"), world.peer("carol"), world.peer("bob"));
    bob.ok(&["keypackage", "--last-resort", "--out", "bob-lr.kp"]);
    assert_eq!(bob.json(&["whoami"])["keypackages"]["last_resort"], true);
    for (owner, group) in [(&alice, "first"), (&carol, "second")] {
        owner.ok(&["group", "create", group]);
        let welcome = format!("{group}.welcome");
        owner.ok(&[
            "group",
            "add",
            group,
            "bob-lr.kp",
            "--out",
            "c",
            "--welcome-out",
            &welcome,
        ]);
        assert!(bob.ok(&["receive", &welcome]).contains("joined"));
    }
    assert_eq!(bob.json(&["group", "list"]).as_array().unwrap().len(), 2);
}

#[test]
fn removed_member_who_missed_the_removal_cannot_read_either() {
    let world = World::new();
    let (alice, bob, carol) = (world.peer("alice"), world.peer("bob"), world.peer("carol"));
    group_of(&world, &alice, &[&bob, &carol]);
    alice.ok(&["group", "remove", "team", "carol/dev", "--out", "rm"]);
    alice.ok(&["send", "team", "carol must not see this", "--out", "m"]);
    // Carol never processed the removal: the message is for an epoch she has no keys for.
    carol.fails(6, &["receive", "m"]);
    assert!(carol.texts().is_empty());
}

#[test]
fn one_to_one_chat_is_a_two_member_group() {
    let world = World::new();
    let (alice, bob) = (world.peer("alice"), world.peer("bob"));
    group_of(&world, &alice, &[&bob]);
    assert_eq!(alice.group()["members"], 2);
    alice.ok(&["send", "team", "hi bob", "--out", "a1"]);
    assert!(bob.ok(&["receive", "a1"]).contains("alice/dev: hi bob"));
    let id = bob.group_id();
    bob.ok(&["send", &id, "hi alice", "--out", "b1"]);
    assert!(alice.ok(&["receive", "b1"]).contains("bob/dev: hi alice"));
    // Messages can also flow through a pipe.
    let out = bob
        .command(&["send", &id, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = out;
    std::io::Write::write_all(out.stdin.as_mut().unwrap(), b"via a pipe\n").unwrap();
    let packet = out.wait_with_output().unwrap();
    assert!(packet.status.success());
    let mut recv = alice
        .command(&["receive"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(recv.stdin.as_mut().unwrap(), &packet.stdout).unwrap();
    let shown = recv.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&shown.stdout).contains("bob/dev: via a pipe"));
    assert_eq!(alice.texts(), bob.texts());
    assert_in_sync(&alice, &bob);
}

#[test]
fn truncated_or_random_bytes_are_rejected_without_state_change() {
    let world = World::new();
    let (alice, bob) = (world.peer("alice"), world.peer("bob"));
    group_of(&world, &alice, &[&bob]);
    alice.ok(&["send", "team", "intact", "--out", "m"]);
    let bytes = std::fs::read(world.path("m")).unwrap();
    std::fs::write(world.path("truncated"), &bytes[..bytes.len() - 7]).unwrap();
    std::fs::write(
        world.path("random"),
        b"\x8a\x13 definitely not mls \x00\xff",
    )
    .unwrap();
    // A well-framed packet whose body is garbage.
    let mut garbage = bytes[..10].to_vec();
    garbage[6..10].copy_from_slice(&5u32.to_be_bytes());
    garbage.extend_from_slice(&[0, 1, 0xde, 0xad, 0xbe]);
    std::fs::write(world.path("garbage"), garbage).unwrap();
    // A header that claims 4 GiB.
    let mut huge = bytes[..10].to_vec();
    huge[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
    std::fs::write(world.path("huge"), huge).unwrap();

    let before = bob.state();
    assert!(
        bob.fails(3, &["receive", "truncated"])
            .contains("truncated")
    );
    assert!(
        bob.fails(3, &["receive", "random"])
            .contains("not an mlschat packet")
    );
    assert!(
        bob.fails(3, &["receive", "garbage"])
            .contains("not an MLS message")
    );
    assert!(bob.fails(3, &["receive", "huge"]).contains("over the"));
    assert_eq!(bob.state(), before);
    assert!(bob.ok(&["receive", "m"]).contains("alice/dev: intact"));
}

#[test]
fn replayed_application_message_is_rejected_without_state_change() {
    let world = World::new();
    let (alice, bob) = (world.peer("alice"), world.peer("bob"));
    group_of(&world, &alice, &[&bob]);
    alice.ok(&["send", "team", "only once", "--out", "m"]);
    bob.ok(&["receive", "m"]);
    let before = bob.state();
    assert!(
        bob.fails(5, &["receive", "m"])
            .contains("already processed")
    );
    assert_eq!(bob.state(), before);
    assert_eq!(bob.texts(), ["alice/dev: only once"]);
    // Our own message coming back is a duplicate too, not an error of MLS.
    alice.fails(5, &["receive", "m"]);
}

#[test]
fn tampered_ciphertext_is_rejected_without_state_change() {
    let world = World::new();
    let (alice, bob) = (world.peer("alice"), world.peer("bob"));
    group_of(&world, &alice, &[&bob]);
    alice.ok(&["send", "team", "do not touch", "--out", "m"]);
    // The last bytes of a PrivateMessage are AEAD ciphertext and tag.
    flip_byte(&world, "m", "tampered", 3);
    let before = bob.state();
    let err = bob.fails(3, &["receive", "tampered"]);
    assert!(err.contains("cannot decrypt"), "{err}");
    assert_eq!(bob.state(), before);
    // The failed attempt did not burn the message key: the real message still decrypts.
    assert!(
        bob.ok(&["receive", "m"])
            .contains("alice/dev: do not touch")
    );
}

#[test]
fn commit_for_a_stale_epoch_is_rejected_without_state_change() {
    let world = World::new();
    let (alice, bob, carol) = (world.peer("alice"), world.peer("bob"), world.peer("carol"));
    group_of(&world, &alice, &[&bob, &carol]);
    // Alice and Carol both commit at epoch 2; Bob takes Alice's first.
    alice.ok(&["group", "update", "team", "--out", "from-alice"]);
    let id = carol.group_id();
    carol.ok(&["group", "update", &id, "--out", "from-carol"]);
    bob.ok(&["receive", "from-alice"]);
    let (epoch, history) = (bob.group()["epoch"].clone(), bob.state().1);
    let err = bob.fails(6, &["receive", "from-carol"]);
    // Issue 11, finding 8: two commits for one epoch forked the group silently.
    assert!(
        err.contains("the group has forked: this commit is for epoch 2"),
        "{err}"
    );
    assert_eq!(
        (bob.group()["epoch"].clone(), bob.state().1),
        (epoch, history)
    );
    assert_in_sync(&bob, &alice);
    // Carol, who applied her own, is told the same of Alice's.
    let err = carol.fails(6, &["receive", "from-alice"]);
    assert!(err.contains("the group has forked"), "{err}");
    // Issue 19, finding 5: and then each side knows which fork it is in, alike.
    alice.fails(6, &["receive", "from-carol"]);
    let alice_lost = lost_a_fork(&alice);
    assert_eq!(lost_a_fork(&bob), alice_lost);
    assert_eq!(lost_a_fork(&carol), !alice_lost, "one side wins");
}

/// A forgery of the commit packet `packet` (the last bytes of its MLS message changed) whose
/// hash is lower than the commit's if `wins`, higher if not: the fork rule compares them.
fn forgery(packet: &[u8], wins: bool) -> Vec<u8> {
    use mlschat_wire::packet::Packet;
    use sha2::{Digest, Sha256};
    let Ok(Some(Packet::Mls(message))) = Packet::read_from(&mut &packet[..]) else {
        panic!("not a commit packet");
    };
    let target = Sha256::digest(&message);
    let last = message.len() - 2;
    (1..=u16::MAX)
        .map(|change| {
            let mut forged = message.clone();
            let tail = u16::from_be_bytes([forged[last], forged[last + 1]]).wrapping_add(change);
            forged[last..].copy_from_slice(&tail.to_be_bytes());
            forged
        })
        .find(|forged| (Sha256::digest(forged) < target) == wins)
        .map(|forged| Packet::Mls(forged).encode().unwrap())
        .expect("a forgery on either side of the commit's hash")
}

/// Whether this peer was told that a commit of the other side won a fork of its group.
fn lost_a_fork(peer: &Peer) -> bool {
    peer.json(&["status"])["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| {
            a["text"]
                .as_str()
                .unwrap()
                .contains("wins by the rule every side applies")
        })
}

/// Issue 19, finding 5: after two concurrent `group update`s both sides stayed `active` at
/// epoch 2 with different authenticators, the next text failed with an AEAD error, and nobody
/// was told which side they were on. Now the commit with the lower hash wins on both sides, and
/// the other side is told (an alert) what to do. Told, never acted on: a commit of an epoch we
/// left cannot be authenticated, so a forged one (anyone who knows the group's id can make
/// one) must not take the group from anyone.
#[test]
fn a_fork_in_files_is_told_to_the_side_that_lost_it_and_a_forged_one_blocks_nothing() {
    let world = World::new();
    let (alice, bob) = (world.peer("alice"), world.peer("bob"));
    group_of(&world, &alice, &[&bob]);
    alice.ok(&["group", "update", "team", "--out", "from-alice"]);
    let id = bob.group_id();
    bob.ok(&["group", "update", &id, "--out", "from-bob"]);
    alice.fails(6, &["receive", "from-bob"]);
    bob.fails(6, &["receive", "from-alice"]);
    let (winner, loser, winning) = match (lost_a_fork(&alice), lost_a_fork(&bob)) {
        (false, true) => (&alice, &bob, "from-alice"),
        (true, false) => (&bob, &alice, "from-bob"),
        both => panic!("exactly one side must lose the fork: {both:?}"),
    };
    let told = loser.json(&["status"]).to_string();
    assert!(
        told.contains("forked") && told.contains("add you again"),
        "{told}"
    );
    // Nobody is stopped: both groups stay as they are (their sides simply no longer meet).
    for peer in [winner, loser] {
        assert_eq!(peer.group()["state"], "active");
        let id = peer.group_id();
        peer.ok(&["send", &id, "still here", "--out", "sent"]);
    }
    // Forgeries of the winner's commit (its last bytes changed), one with a higher hash than
    // the commit the winner applied and one with a lower: each is refused and changes nothing,
    // and the one that "wins" is told as what it claims to be. They are found here, by hashing,
    // so that the test does not depend on luck (trying 64 forgeries through the CLI left one
    // run in about 33 without a winner).
    let commit = std::fs::read(world.path(winning)).unwrap();
    let before = winner.group();
    for (name, wins) in [("forged-loses", false), ("forged-wins", true)] {
        std::fs::write(world.path(name), forgery(&commit, wins)).unwrap();
        winner.fails(6, &["receive", name]);
        assert_eq!(winner.group(), before, "a forgery changes nothing");
        assert_eq!(lost_a_fork(winner), wins, "{name}");
    }
    let id = winner.group_id();
    winner.ok(&["send", &id, "not stopped", "--out", "sent"]);
}

/// Issue 11, finding 8: a text from an epoch the receiver already left was reported as a
/// replay (exit 5); it is a stale epoch (exit 6), said so.
#[test]
fn a_text_from_an_epoch_already_left_is_reported_as_stale_not_replayed() {
    let world = World::new();
    let (alice, bob) = (world.peer("alice"), world.peer("bob"));
    group_of(&world, &alice, &[&bob]);
    alice.ok(&["send", "team", "too late", "--out", "old"]);
    alice.ok(&["group", "update", "team", "--out", "update"]);
    bob.ok(&["receive", "update"]);
    let before = bob.state();
    let err = bob.fails(6, &["receive", "old"]);
    assert!(
        err.contains("sent before a change you have already applied"),
        "{err}"
    );
    assert_eq!(bob.state(), before);
}

#[test]
fn welcome_for_someone_else_is_rejected_without_state_change() {
    let world = World::new();
    let (alice, bob, carol) = (world.peer("alice"), world.peer("bob"), world.peer("carol"));
    alice.ok(&["group", "create", "team"]);
    carol.key_package();
    let kp = bob.key_package();
    alice.ok(&[
        "group",
        "add",
        "team",
        &kp,
        "--out",
        "c",
        "--welcome-out",
        "w",
    ]);
    let err = carol.fails(7, &["receive", "w"]);
    assert!(err.contains("Welcome is for someone else"), "{err}");
    assert!(
        carol
            .json(&["group", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Carol's own KeyPackage is still unused and Bob can still join.
    assert_eq!(carol.json(&["whoami"])["keypackages"]["one_time"], 1);
    bob.ok(&["receive", "w"]);
}

#[test]
fn key_package_with_a_bad_signature_is_rejected_without_state_change() {
    let world = World::new();
    let (alice, bob) = (world.peer("alice"), world.peer("bob"));
    alice.ok(&["group", "create", "team"]);
    let kp = bob.key_package();
    // The KeyPackage ends with its signature.
    flip_byte(&world, &kp, "forged.kp", 2);
    let before = alice.state();
    let err = alice.fails(
        3,
        &[
            "group",
            "add",
            "team",
            "forged.kp",
            "--welcome-out",
            "w",
            "--out",
            "c",
        ],
    );
    assert!(err.contains("KeyPackage rejected"), "{err}");
    assert_eq!(alice.state(), before);
    assert!(!world.path("c").exists() && !world.path("w").exists());
}

#[test]
fn encrypted_profile_needs_its_passphrase() {
    let world = World::new();
    let alice = Peer {
        world: &world,
        name: "alice".into(),
    };
    std::fs::write(world.path("pass"), "hunter2 correct horse\n").unwrap();
    alice.ok(&[
        "--passphrase-file",
        "pass",
        "init",
        "--user",
        "alice",
        "--encrypt",
    ]);
    let err = alice.fails(8, &["whoami"]);
    assert!(err.contains("encrypted"), "{err}");
    std::fs::write(world.path("wrong"), "nope").unwrap();
    alice.fails(8, &["--passphrase-file", "wrong", "whoami"]);
    assert!(
        alice
            .ok(&["--passphrase-file", "pass", "whoami"])
            .contains("alice/default")
    );
    let mut cmd = alice.command(&["group", "create", "secret-team-name"]);
    assert!(
        cmd.env("MLSCHAT_PASSPHRASE", "hunter2 correct horse")
            .status()
            .unwrap()
            .success()
    );
    for entry in std::fs::read_dir(world.path("profiles/alice")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("secret-team-name"));
    }
}

/// Kills Bob's `receive` at every database write it makes while processing a stream of commits
/// and messages (and once more while it recovers), restarts it, and checks that the result is
/// what an uninterrupted run gives: every message shown once, in order, stored once, and the same
/// group state as Alice.
#[test]
fn killed_receiver_resumes_without_loss_or_duplicates() {
    let world = World::new();
    let (alice, bob, carol) = (world.peer("alice"), world.peer("bob"), world.peer("carol"));
    group_of(&world, &alice, &[&bob]);

    // One stream: messages, a self-update, an add, a removal, more messages.
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    let mut step = |args: &[&str], text: Option<&str>| {
        let mut args = args.to_vec();
        args.extend(["--out", "step"]);
        alice.ok(&args);
        stream.extend(std::fs::read(world.path("step")).unwrap());
        if let Some(t) = text {
            expected.push(format!("alice/dev: {t}"));
        }
    };
    for i in 0..2 {
        let t = format!("before update {i}");
        step(&["send", "team", &t], Some(&t));
    }
    step(&["group", "update", "team"], None);
    let kp = carol.key_package();
    step(&["group", "add", "team", &kp, "--welcome-out", "w"], None);
    step(&["send", "team", "with carol"], Some("with carol"));
    step(&["group", "remove", "team", "carol"], None);
    step(&["send", "team", "after removal"], Some("after removal"));
    std::fs::write(world.path("stream"), &stream).unwrap();
    let alice_auth = alice.group()["epoch_authenticator"].clone();

    let bob_dir = world.path("profiles/bob");
    let snapshot = world.path("bob-snapshot");
    copy_dir(&bob_dir, &snapshot);
    // Runs Bob's receive over the whole stream, crashing at the `crash_at`-th write;
    // returns whether it crashed, and the messages it showed.
    let receive = |crash_at: Option<u64>| {
        let mut cmd = bob.command(&["receive", "stream"]);
        if let Some(k) = crash_at {
            cmd.env("MLSCHAT_CRASH_AFTER_WRITES", k.to_string());
        }
        let out = cmd.output().unwrap();
        let shown = messages_from_alice(&out.stdout);
        match out.status.code() {
            // Ran to the end; what was processed before is reported as a duplicate (5).
            Some(0) | Some(5) => (false, shown),
            Some(code) => panic!("exit {code}: {}", String::from_utf8_lossy(&out.stderr)),
            None => (true, shown),
        }
    };

    let mut crash_points = 0;
    for k in 1.. {
        std::fs::remove_dir_all(&bob_dir).unwrap();
        copy_dir(&snapshot, &bob_dir);
        let (crashed, mut shown) = receive(Some(k));
        if !crashed {
            break; // k is past the last write of the stream
        }
        crash_points += 1;
        // Crash once more during recovery, then recover for good.
        let (_, again) = receive(Some(k));
        shown.extend(again);
        let (crashed, rest) = receive(None);
        assert!(!crashed);
        shown.extend(rest);
        assert_eq!(
            shown, expected,
            "crash at write {k}: each message shown exactly once"
        );
        assert_eq!(
            bob.texts(),
            expected,
            "crash at write {k}: history holds each message once"
        );
        assert_eq!(
            bob.group()["epoch_authenticator"],
            alice_auth,
            "crash at write {k}"
        );
    }
    eprintln!("crashed and recovered at {crash_points} write positions");
    assert!(
        crash_points >= 30,
        "only {crash_points} crash points: is the failpoint working?"
    );
    // And the group goes on.
    let id = bob.group_id();
    bob.ok(&["send", &id, "still here", "--out", "b"]);
    assert!(alice.ok(&["receive", "b"]).contains("bob/dev: still here"));
}

/// The same promise under real `SIGKILL`s at arbitrary moments: Bob's `receive` of a long
/// stream is killed after a growing delay, again and again, until a run gets to the end. A kill
/// can land after a batch is stored but before it is printed, so here "shown" is only promised
/// at most once and in order; the history must hold everything exactly once.
#[test]
fn receiver_killed_with_sigkill_loses_and_repeats_nothing() {
    let world = World::new();
    let (alice, bob) = (world.peer("alice"), world.peer("bob"));
    group_of(&world, &alice, &[&bob]);
    let id = bob.group_id();
    bob.ok(&["send", &id, "bob joins in", "--out", "b"]);
    alice.ok(&["receive", "b"]);

    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for i in 0..150 {
        let text = format!("message {i}");
        alice.ok(&["send", "team", &text, "--out", "m"]);
        stream.extend(std::fs::read(world.path("m")).unwrap());
        expected.push(format!("alice/dev: {text}"));
    }
    std::fs::write(world.path("stream"), &stream).unwrap();

    let mut shown = Vec::new();
    let mut kills = 0;
    for attempt in 1..=300u64 {
        let mut child = bob
            .command(&["receive", "stream"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2 * attempt));
        let killed = child.kill().is_ok(); // SIGKILL; fails only if it had already exited
        let out = child.wait_with_output().unwrap();
        shown.extend(messages_from_alice(&out.stdout));
        if killed && out.status.code().is_none() {
            kills += 1;
        } else {
            break;
        }
    }
    assert!(
        kills >= 2,
        "the receiver was never killed mid-stream ({kills} kills)"
    );
    let mut rest = expected.iter();
    for line in &shown {
        assert!(
            rest.any(|e| e == line),
            "{line:?} shown twice or out of order: {shown:?}"
        );
    }
    assert_eq!(
        bob.texts()[1..],
        expected[..],
        "history holds each message once"
    );
    assert_in_sync(&bob, &alice);
}

/// The messages from Alice that `receive` printed, as `alice/dev: text`.
fn messages_from_alice(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest.to_owned()))
        .filter(|l| l.starts_with("alice/dev: "))
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn a_contact_whose_key_changes_is_flagged_never_replaced() {
    let world = World::new();
    let node = "127.0.0.1:4433";
    let pin = "ab".repeat(32);
    let alice = world.peer("alice");
    alice.ok(&["home", "set", node, &pin]);
    // Two profiles that both call themselves bob/dev: the real one and an impostor.
    let profile = |name: &str| {
        let peer = Peer {
            world: &world,
            name: name.into(),
        };
        peer.ok(&["init", "--user", "bob", "--device", "dev"]);
        peer.ok(&["home", "set", node, &pin]);
        peer
    };
    let (bob, impostor) = (profile("bob"), profile("impostor"));
    let code = |peer: &Peer| peer.ok(&["invite"]).lines().next().unwrap().to_owned();
    alice.ok(&["contact", "add", &code(&bob)]);
    alice.ok(&["contact", "add", &code(&bob)]); // the same code again is fine
    let stderr = alice.fails(10, &["contact", "add", &code(&impostor)]);
    assert!(stderr.contains("flagged"), "{stderr}");
    let contacts: Value =
        serde_json::from_str(&alice.ok(&["-o", "json", "contact", "list"])).unwrap();
    let bob_row = &contacts.as_array().unwrap()[0];
    assert_eq!(bob_row["name"], "bob/dev");
    assert!(bob_row["flagged"].as_str().unwrap().contains("another key"));
    // The key we trusted is kept, and a flagged contact is not used until checked.
    let fingerprint = bob.ok(&["-o", "json", "whoami"]);
    let fingerprint: Value = serde_json::from_str(&fingerprint).unwrap();
    assert_eq!(bob_row["fingerprint"], fingerprint["fingerprint"]);
    // A malformed code is refused with a clear error.
    let stderr = alice.fails(3, &["contact", "add", "mlschat:invite?name=x"]);
    assert!(stderr.contains("not a valid invite code"), "{stderr}");
}

/// Issue 19, finding 1: a profile had two writers. The README started `mlschat daemon &` and ran
/// `mlschat sync` at once; the CLI, finding no socket yet, carried the sync out itself while the
/// daemon opened the same profile, and each kept a group's state in memory that the other
/// overwrote. Now one process holds the profile (an OS lock): a verb with an API form waits
/// for a starting daemon and goes through it, one without says a daemon holds the profile, and a
/// second daemon refuses to start (before it announces an API it will not serve).
#[test]
fn a_profile_has_one_writer_and_verbs_go_through_its_daemon() {
    let world = World::new();
    let alice = world.peer("alice");
    let socket = world.path("profiles").join("alice").join("daemon.sock");
    for round in 0..3 {
        // The race of the README: a verb right after the daemon was started.
        let mut daemon = alice.command(&["daemon"]).spawn().unwrap();
        let name = format!("group-{round}");
        let created = alice.ok(&["-o", "json", "group", "create", &name]);
        assert!(created.contains(&name), "{created}");
        for _ in 0..200 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        // Verbs with an API form answer through the daemon; whoami and a rename too.
        assert!(alice.ok(&["whoami"]).contains("alice/dev"));
        alice.ok(&["group", "rename", &name, &format!("renamed-{round}")]);
        assert!(
            alice
                .ok(&["group", "list"])
                .contains(&format!("renamed-{round}"))
        );
        // A verb with no API form does not write beside the daemon.
        let pid = daemon.id().to_string();
        let refused = alice.fails(12, &["keypackage", "--out", "kp"]);
        assert!(
            refused.contains("holds this profile") && refused.contains(&pid),
            "{refused}"
        );
        assert!(!world.path("kp").exists());
        // Nor does a second daemon, and it says so before announcing an API.
        let second = alice.run(&["daemon"]);
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert_eq!(second.status.code(), Some(12), "{stderr}");
        assert!(
            stderr.contains("already runs") && !stderr.contains("API on"),
            "{stderr}"
        );
        Command::new("kill").arg(&pid).status().unwrap();
        daemon.wait().unwrap();
        // Without a daemon the verb runs here.
        alice.ok(&["keypackage", "--out", "kp"]);
        std::fs::remove_file(world.path("kp")).unwrap();
    }
}

/// Issue 19, finding 9: the profile's files were readable by every user of the machine.
#[test]
fn profile_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::new();
    let alice = world.peer("alice");
    alice.ok(&["group", "create", "g"]);
    let dir = world.path("profiles").join("alice");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{:?} is {mode:o}", entry.file_name());
    }
    // A profile made by an older version is made private when opened.
    let db = dir.join("mlschat.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    alice.ok(&["group", "list"]);
    let mode = std::fs::metadata(&db).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}
