//! Every corruption of a valid packet is refused, and none changes the receiver's state: after
//! hundreds of corrupted copies, the original still decrypts, once.

use mlschat_node::identity::DeviceName;
use mlschat_node::profile::{HistoryKind, Profile, Received};
use mlschat_testkit::Rng;
use mlschat_wire::packet::Packet;

fn profile(dir: &tempfile::TempDir, name: &str) -> Profile {
    Profile::create(
        &dir.path().join(name),
        DeviceName::new(name, "dev").unwrap(),
        None,
    )
    .unwrap()
}

/// Alice and Bob in a group Alice calls `team`.
fn pair(dir: &tempfile::TempDir) -> (Profile, Profile) {
    let (mut alice, mut bob) = (profile(dir, "alice"), profile(dir, "bob"));
    let team = alice.create_group("team").unwrap();
    let team = alice.find_group(&team.id).unwrap();
    let kp = bob.new_key_package(false).unwrap();
    let out = alice.add_members(&team, &[kp]).unwrap();
    assert!(matches!(
        bob.receive(&out.to_joiners.unwrap()).unwrap(),
        Received::Joined { .. }
    ));
    (alice, bob)
}

fn corrupt(rng: &mut Rng, original: &[u8]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    match rng.below(3) {
        0 => {
            let i = rng.below(bytes.len());
            bytes[i] ^= 1 << rng.below(8);
        }
        1 => bytes.truncate(rng.below(bytes.len())),
        _ => {
            let i = rng.below(bytes.len());
            bytes.insert(i, rng.next_u64() as u8);
        }
    }
    bytes
}

#[test]
fn corrupted_messages_and_commits_are_refused_without_side_effects() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob) = pair(&dir);
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let before = bob.groups().unwrap()[0].epoch_authenticator.clone();

    let team = alice.find_group("team").unwrap();
    let commit = alice.self_update(&team).unwrap().to_group.remove(0);
    let message = alice
        .send(&team, "the real one")
        .unwrap()
        .to_group
        .remove(0);
    for original in [&commit, &message] {
        let bytes = original.encode().unwrap();
        for _ in 0..300 {
            let mutated = corrupt(&mut rng, &bytes);
            let mut input = mutated.as_slice();
            // A corrupted stream either fails to frame, or frames a packet that is refused.
            if let Ok(Some(packet)) = Packet::read_from(&mut input) {
                if packet == *original {
                    // An insertion of the last byte's twin just before it leaves the packet
                    // whole, with one stray byte after it (which `receive` reports).
                    assert_eq!(input.len(), 1, "an intact packet from a changed stream");
                    continue;
                }
                let result = bob.receive(&packet);
                assert!(
                    result.is_err(),
                    "a corrupted packet was accepted: {result:?}"
                );
            }
            assert_eq!(bob.groups().unwrap()[0].epoch_authenticator, before);
        }
    }

    // The untouched commit and message still work, exactly once.
    bob.receive(&commit).unwrap();
    match bob.receive(&message).unwrap() {
        Received::Message { .. } => {}
        other => panic!("expected the message, got {other:?}"),
    }
    assert!(bob.receive(&message).is_err(), "a replay was accepted");
    let first = bob.groups().unwrap()[0].id.clone();
    let id = bob.find_group(&first).unwrap();
    let history = bob.history(&id, 100).unwrap();
    let texts: Vec<&str> = history
        .iter()
        .filter(|e| e.kind == HistoryKind::Text)
        .map(|e| e.body.as_str())
        .collect();
    assert_eq!(texts, ["the real one"]);
    assert_eq!(
        bob.groups().unwrap()[0].epoch_authenticator,
        alice.groups().unwrap()[0].epoch_authenticator
    );
}
