//! Contacts (issue 11, finding 3): a contact flagged for another key could never be resolved.
//! Now the other key is reviewed by the safety number its owner reads out, and only that number
//! makes it the contact's.

use mlschat_node::identity::DeviceName;
use mlschat_node::profile::{Home, Profile, ProfileError, SenderState};

const HOME: Home = Home {
    address: String::new(),
    fingerprint: [7; 32],
    invite: Vec::new(),
};

fn profile(dir: &tempfile::TempDir, user: &str) -> Profile {
    let name = DeviceName::new(user, "dev").unwrap();
    let mut profile = Profile::create(dir.path(), name, None).unwrap();
    profile.set_home(&HOME).unwrap();
    profile
}

#[test]
fn a_changed_key_becomes_the_contacts_only_by_its_own_safety_number() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut alice = profile(&dirs[0], "alice");
    let bob = profile(&dirs[1], "bob");
    // Bob again on a new device with the same name: another key.
    let new_bob = profile(&dirs[2], "bob");
    alice.add_contact(&bob.invite_code().unwrap()).unwrap();
    let before = alice.safety_number("bob").unwrap();
    assert!(!before.changed_key && !before.verified);
    assert_eq!(
        before.safety_number,
        bob.identity()
            .fingerprint()
            .safety_number(&alice.identity().fingerprint())
    );

    let flagged = alice
        .add_contact(&new_bob.invite_code().unwrap())
        .unwrap_err();
    assert!(
        matches!(flagged, ProfileError::ContactFlagged(..)),
        "{flagged}"
    );
    let review = alice.safety_number("bob").unwrap();
    assert!(review.changed_key);
    assert_eq!(
        review.fingerprint,
        new_bob.identity().fingerprint().to_hex()
    );
    assert_ne!(review.safety_number, before.safety_number);

    // The old key's number does not accept the new key, nor does a made-up one.
    for wrong in [before.safety_number.as_str(), "12345"] {
        assert!(alice.verify_contact("bob", wrong).is_err());
        assert!(alice.contact("bob").unwrap().flagged.is_some());
    }
    // The number new Bob reads out from his side does (spaces do not matter).
    let read_out = new_bob
        .identity()
        .fingerprint()
        .safety_number(&alice.identity().fingerprint());
    let contact = alice
        .verify_contact("bob", &read_out.replace(' ', ""))
        .unwrap();
    assert!(contact.verified && contact.flagged.is_none());
    assert_eq!(
        contact.fingerprint,
        new_bob.identity().fingerprint().to_hex()
    );
    let states = alice.sender_states().unwrap();
    let new_key = new_bob.identity().fingerprint();
    let old_key = bob.identity().fingerprint();
    assert_eq!(states.of("bob/dev", &new_key.0), SenderState::Verified);
    assert_eq!(states.of("bob/dev", &old_key.0), SenderState::Impostor);

    alice.remove_contact("bob").unwrap();
    assert!(alice.contacts().unwrap().is_empty());
}

/// Issue 21, LAN discovery: two people who exchanged invite codes compute the same tag for
/// each other from what the codes carried, and it survives reopening the profile; someone
/// who has both codes but is neither computes another.
#[test]
fn contacts_compute_the_same_discovery_tag_from_their_codes() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut alice = profile(&dirs[0], "alice");
    let mut bob = profile(&dirs[1], "bob");
    let mut mallory = profile(&dirs[2], "mallory");
    let (alice_code, bob_code) = (alice.invite_code().unwrap(), bob.invite_code().unwrap());
    alice.add_contact(&bob_code).unwrap();
    bob.add_contact(&alice_code).unwrap();
    mallory.add_contact(&alice_code).unwrap();
    mallory.add_contact(&bob_code).unwrap();
    let announcer = alice.identity().fingerprint();
    let now = 1_800_000_000;
    let seen_by = |profile: &Profile, other: &str| {
        let theirs = profile.contact(other).unwrap().discovery.unwrap();
        profile
            .discovery_key()
            .unwrap()
            .tag(&theirs, &announcer, now)
    };
    let announced = seen_by(&alice, "bob");
    assert_eq!(seen_by(&bob, "alice"), announced);
    assert_ne!(seen_by(&mallory, "alice"), announced);
    assert_ne!(seen_by(&mallory, "bob"), announced);
    drop(alice);
    let alice = Profile::open(dirs[0].path(), None).unwrap();
    assert_eq!(seen_by(&alice, "bob"), announced);
}
