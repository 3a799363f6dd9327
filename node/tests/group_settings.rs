//! Group settings shared through MLS (issue 11, finding 6): a group's name, topic and admins
//! live in its group context, so joiners see them; and since a delivery node cannot read them,
//! every member's client enforces them: a commit by a member who is not an admin that adds,
//! removes someone else or changes the settings is rejected. The hostile member here bypasses
//! its own client's check by calling OpenMLS directly, as a modified client would.

use mlschat_node::engine::{self, Engine, EngineError, Incoming, Parsed};
use mlschat_node::identity::{DeviceName, Identity};
use mlschat_wire::settings::GroupSettings;
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

struct Member {
    engine: Engine,
    provider: OpenMlsRustCrypto,
    group: Option<MlsGroup>,
}

impl Member {
    fn new(user: &str) -> Self {
        let identity = Identity::generate(DeviceName::new(user, "dev").unwrap());
        Self {
            engine: Engine::new(identity),
            provider: OpenMlsRustCrypto::default(),
            group: None,
        }
    }

    fn key_package(&self) -> KeyPackage {
        let made = self.engine.new_key_package(&self.provider, false).unwrap();
        engine::validate_key_package(self.provider.crypto(), &made.message).unwrap()
    }

    fn fingerprint(&self) -> [u8; 32] {
        self.engine.identity().fingerprint().0
    }

    fn g(&mut self) -> &mut MlsGroup {
        self.group.as_mut().unwrap()
    }

    fn settings(&self) -> GroupSettings {
        engine::group_settings(self.group.as_ref().unwrap())
            .unwrap()
            .expect("the group has settings")
    }

    fn epoch(&self) -> u64 {
        self.group.as_ref().unwrap().epoch().as_u64()
    }

    fn leaf_of(&self, other: &Member) -> LeafNodeIndex {
        let fingerprint = other.engine.identity().fingerprint();
        let members = engine::members(self.group.as_ref().unwrap());
        let m = members.iter().find(|m| m.fingerprint == fingerprint);
        LeafNodeIndex::new(m.expect("a member").leaf_index)
    }

    /// Processes a handshake message; the error of a rejected one.
    fn receive(&mut self, message: &[u8]) -> Result<Incoming, EngineError> {
        let Parsed::Protocol(message) = engine::parse_message(message).unwrap() else {
            panic!("not a protocol message");
        };
        let (engine, provider) = (&self.engine, &self.provider);
        engine.process(provider, self.group.as_mut().unwrap(), message)
    }

    /// Joins from the Welcome of `out`.
    fn join(&mut self, out: &engine::CommitOut) {
        let welcome = out.welcome.as_ref().expect("a Welcome");
        let Parsed::Welcome(w) = engine::parse_message(&welcome.welcome).unwrap() else {
            panic!("not a Welcome");
        };
        let (group, _inviter) = self
            .engine
            .join(&self.provider, w, &welcome.ratchet_tree)
            .unwrap();
        self.group = Some(group);
    }

    /// Our commit, merged (as after the node's "ok").
    fn commit(
        &mut self,
        make: impl FnOnce(
            &Engine,
            &OpenMlsRustCrypto,
            &mut MlsGroup,
        ) -> Result<engine::CommitOut, EngineError>,
    ) -> Result<engine::CommitOut, EngineError> {
        let group = self.group.as_mut().unwrap();
        let out = make(&self.engine, &self.provider, group)?;
        self.engine
            .merge_pending_commit(&self.provider, group)
            .unwrap();
        Ok(out)
    }

    /// What a modified client could send: OpenMLS called directly, no admin check. The commit
    /// is left pending (a member who is refused never merges it).
    fn hostile(
        &mut self,
        make: impl FnOnce(&OpenMlsRustCrypto, &SignatureKeyPair, &mut MlsGroup) -> MlsMessageOut,
    ) -> Vec<u8> {
        let signer = &self.engine.identity().signer;
        let group = self.group.as_mut().unwrap();
        let message = make(&self.provider, signer, group);
        group.clear_pending_commit(self.provider.storage()).unwrap();
        message.tls_serialize_detached().unwrap()
    }
}

fn not_allowed(result: Result<Incoming, EngineError>) -> String {
    match result {
        Err(EngineError::NotAllowed(why)) => why,
        other => panic!("expected the commit to be rejected as not allowed, got {other:?}"),
    }
}

/// Alice creates "team" and adds Bob; returns the three (Carol not in the group yet).
fn team() -> (Member, Member, Member) {
    let (mut alice, mut bob, carol) = (
        Member::new("alice"),
        Member::new("bob"),
        Member::new("carol"),
    );
    let id = GroupId::from_slice(b"team-group-id-16");
    let settings = alice.engine.new_settings("team");
    let group = alice.engine.create_group(&alice.provider, id, &settings);
    alice.group = Some(group.unwrap());
    let bob_kp = bob.key_package();
    let add = alice
        .commit(|e, p, g| e.add_members(p, g, &[bob_kp]))
        .unwrap();
    bob.join(&add);
    (alice, bob, carol)
}

#[test]
fn a_joiner_sees_the_name_and_the_creator_is_the_only_admin() {
    let (alice, bob, _carol) = team();
    let settings = bob.settings();
    assert_eq!(settings.name, "team");
    assert_eq!(settings.admins, vec![alice.fingerprint()]);
    assert_eq!(settings, alice.settings());
}

#[test]
fn a_member_who_is_not_an_admin_is_refused_by_his_own_client_and_by_everyone_elses() {
    let (mut alice, mut bob, carol) = team();
    let epoch = alice.epoch();
    // His own client refuses at once.
    let carol_kp = carol.key_package();
    let refused = bob.commit(|e, p, g| e.add_members(p, g, std::slice::from_ref(&carol_kp)));
    assert!(
        matches!(refused, Err(EngineError::NotAllowed(_))),
        "{refused:?}"
    );
    let alice_leaf = bob.leaf_of(&alice);
    let refused = bob.commit(|e, p, g| e.remove_members(p, g, &[alice_leaf.u32()]));
    assert!(
        matches!(refused, Err(EngineError::NotAllowed(_))),
        "{refused:?}"
    );

    // A modified client's commits reach Alice anyway (the node cannot judge): she rejects each.
    let add = bob.hostile(|p, s, g| {
        g.add_members_without_update(p, s, std::slice::from_ref(&carol_kp))
            .unwrap()
            .0
    });
    let why = not_allowed(alice.receive(&add));
    assert!(
        why.contains("bob/dev") && why.contains("add members"),
        "{why}"
    );
    let remove = bob.hostile(|p, s, g| g.remove_members(p, s, &[alice_leaf]).unwrap().0);
    assert!(not_allowed(alice.receive(&remove)).contains("remove members"));
    let coup = GroupSettings {
        admins: vec![bob.fingerprint()],
        ..bob.settings()
    };
    let extensions = settings_extensions(&coup).unwrap();
    let coup = bob.hostile(|p, s, g| {
        g.update_group_context_extensions(p, extensions, s)
            .unwrap()
            .0
    });
    assert!(not_allowed(alice.receive(&coup)).contains("change the group's settings"));
    // None of it changed Alice's group.
    assert_eq!(alice.epoch(), epoch);
    assert_eq!(alice.settings().admins, vec![alice.fingerprint()]);

    // An update of his own keys is anyone's right.
    let update = bob.commit(|e, p, g| e.self_update(p, g)).unwrap();
    assert!(matches!(
        alice.receive(&update.commit),
        Ok(Incoming::Commit { .. })
    ));
}

#[test]
fn an_admin_shares_the_settings_and_makes_others_admins() {
    let (mut alice, mut bob, mut carol) = team();
    let new = GroupSettings {
        name: "launch".into(),
        topic: "ship it friday".into(),
        admins: vec![alice.fingerprint(), bob.fingerprint()],
    };
    let change = alice
        .commit(|e, p, g| e.change_settings(p, g, &new))
        .unwrap();
    assert!(matches!(
        bob.receive(&change.commit),
        Ok(Incoming::Commit { .. })
    ));
    assert_eq!(bob.settings(), new);
    // Now Bob may add, and Alice accepts it; Carol joins seeing the same settings.
    let carol_kp = carol.key_package();
    let add = bob
        .commit(|e, p, g| e.add_members(p, g, &[carol_kp]))
        .unwrap();
    assert!(matches!(
        alice.receive(&add.commit),
        Ok(Incoming::Commit { .. })
    ));
    carol.join(&add);
    assert_eq!(carol.settings(), new);
    // The last admin cannot be dropped, even by a modified client: members reject settings
    // that are not valid (no admin).
    let extensions = settings_extensions(&GroupSettings {
        admins: vec![],
        ..new.clone()
    });
    assert!(
        extensions.is_none(),
        "settings without an admin do not even encode"
    );
}

#[test]
fn a_member_may_always_leave() {
    let (mut alice, mut bob, _carol) = team();
    let proposal = {
        let (e, p) = (&bob.engine, &bob.provider);
        e.leave(p, bob.group.as_mut().unwrap()).unwrap()
    };
    assert!(matches!(
        alice.receive(&proposal),
        Ok(Incoming::Proposal { .. })
    ));
    let commit = alice.commit(|e, p, g| e.self_update(p, g)).unwrap();
    match bob.receive(&commit.commit) {
        Ok(Incoming::Commit { removed_us, .. }) => assert!(removed_us),
        other => panic!("{other:?}"),
    }
    assert_eq!(alice.g().members().count(), 1);
}

/// The extensions an admin's client would send for `settings`, built here by hand as a
/// modified client would; `None` when the settings do not encode.
fn settings_extensions(settings: &GroupSettings) -> Option<Extensions<GroupContext>> {
    let bytes = settings.encode().ok()?;
    let kind = mlschat_wire::settings::EXTENSION_TYPE;
    Some(
        Extensions::from_vec(vec![
            Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
                &[ExtensionType::Unknown(kind)],
                &[],
                &[],
            )),
            Extension::Unknown(kind, UnknownExtension(bytes)),
        ])
        .unwrap(),
    )
}

/// A forbidden proposal sent on its own is refused when it arrives: were it kept, an admin's
/// next commit would carry it and every other member would reject that commit.
#[test]
fn a_forbidden_proposal_never_rides_in_an_admins_commit() {
    let (mut alice, mut bob, carol) = team();
    let carol_kp = carol.key_package();
    let proposal = bob.hostile(|p, s, g| g.propose_add_member(p, s, &carol_kp).unwrap().0);
    assert!(not_allowed(alice.receive(&proposal)).contains("add members"));
    // Alice's next commit holds no add, and Bob (who kept his own proposal) accepts it.
    let update = alice.commit(|e, p, g| e.self_update(p, g)).unwrap();
    match bob.receive(&update.commit) {
        Ok(Incoming::Commit { added, .. }) => assert!(added.is_empty()),
        other => panic!("{other:?}"),
    }
    assert_eq!(alice.g().members().count(), 2);
}
