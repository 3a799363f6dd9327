//! Our KeyPackages after they leave us (issue 10, finding 6): one client took a user's 30
//! one-time packages in under 100 ms, and her client refilled silently, never told her, and
//! kept the drained private keys.

use mlschat_node::clock::Clock;
use mlschat_node::identity::DeviceName;
use mlschat_node::profile::{Claim, Intent, Prepared, Profile, ProfileError, TextsMark};

fn profile(name: &str) -> (tempfile::TempDir, Profile) {
    let dir = tempfile::tempdir().unwrap();
    let device = DeviceName::new(name, "dev").unwrap();
    let profile = Profile::create(dir.path(), device, None).unwrap();
    (dir, profile)
}

fn reference(key_package: &[u8]) -> Vec<u8> {
    let crypto = openmls_rust_crypto::RustCrypto::default();
    let kp = mlschat_node::engine::validate_key_package(&crypto, key_package).unwrap();
    kp.hash_ref(&crypto).unwrap().as_slice().to_vec()
}

fn claim(seq: u64, claimer: u8, at: u64, reference: Vec<u8>) -> Claim {
    Claim {
        seq,
        claimer: [claimer; 32],
        at,
        last_resort: false,
        reference,
    }
}

#[test]
fn a_drain_of_our_key_packages_raises_one_alert_an_hour() {
    let (_dir, mut alice) = profile("alice");
    let now = Clock::System.unix();
    // Five people adding us: nothing to say.
    let few: Vec<Claim> = (1..=5).map(|i| claim(i, i as u8, now, vec![])).collect();
    assert!(alice.record_claims(&few).unwrap().is_empty());
    // One client taking thirty within the hour: a drain, said once.
    let drain: Vec<Claim> = (6..=35).map(|i| claim(i, 0xee, now, vec![])).collect();
    let alerts = alice.record_claims(&drain).unwrap();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert!(alerts[0].text.contains("35 of your one-time KeyPackages"));
    assert!(alerts[1].text.contains("one client claimed 30"));
    let more: Vec<Claim> = (36..=40).map(|i| claim(i, 0xee, now, vec![])).collect();
    assert!(alice.record_claims(&more).unwrap().is_empty());
    // Read once: entries delivered again are not counted again.
    assert!(alice.record_claims(&drain).unwrap().is_empty());
    assert_eq!(
        alice.claim_log_seq().unwrap(),
        0,
        "no node is set: nothing to remember"
    );
    assert_eq!(alice.alerts().unwrap(), alerts);
}

#[test]
fn a_claimed_package_no_welcome_used_in_time_loses_its_private_key() {
    let (_dir, mut bob) = profile("bob");
    let (_dir_a, mut alice) = profile("alice");
    let now = Clock::System.unix();
    let used = bob.new_key_package(false).unwrap();
    let drained = bob.new_key_package(false).unwrap();
    let fresh = bob.new_key_package(false).unwrap();
    let month = 31 * 86_400;
    let claims = [
        claim(1, 1, now - month, reference(&drained)),
        claim(2, 2, now, reference(&fresh)),
    ];
    bob.record_claims(&claims).unwrap();
    assert_eq!(bob.forget_unusable_key_packages(now).unwrap(), 1);
    assert_eq!(
        bob.forget_unusable_key_packages(now).unwrap(),
        0,
        "forgotten once"
    );
    // A Welcome for the drained package cannot be opened any more; one for a package still
    // waiting for its Welcome can.
    let (_, id) = alice.create_hosted_group("g").unwrap();
    let group_id = id.as_slice().to_vec();
    for (key_package, usable) in [(drained, false), (fresh, true), (used, true)] {
        alice
            .queue_intent(
                &id,
                &Intent::Add {
                    key_packages: vec![key_package],
                },
                TextsMark::FIRST,
            )
            .unwrap();
        let Prepared::Commit(pending) = alice.prepare_next_commit(&id).unwrap() else {
            panic!("no commit")
        };
        let joiners = pending.joiners.as_ref().unwrap();
        let opened = bob.open_tree_secret(
            &joiners.welcome,
            &joiners.recipients[0].1,
            &group_id,
            pending.epoch + 1,
        );
        match (usable, opened) {
            (true, Ok(_)) => {}
            (false, Err(ProfileError::Sealed(_))) => {}
            (usable, other) => panic!("usable {usable}: {other:?}"),
        }
        alice.fail_commit(&id).unwrap();
    }
}
