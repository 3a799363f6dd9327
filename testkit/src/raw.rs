//! Raw OpenMLS with its in-memory store, the baseline every benchmark of ours is measured
//! against in the same run, and the shape both sides share: Alice commits and sends, Bob
//! processes.

use std::time::{Duration, Instant};

use mlschat_node::engine::{CIPHERSUITE, Engine};
use mlschat_node::identity::SIGNATURE_SCHEME;
use openmls::prelude::{tls_codec::Deserialize as _, tls_codec::Serialize as _, *};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

/// Members added per commit while a group is built.
pub const BATCH: usize = 1000;

#[derive(Default)]
pub struct Timings(pub std::collections::BTreeMap<&'static str, Vec<Duration>>);

impl Timings {
    pub fn time<R>(&mut self, op: &'static str, f: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let r = f();
        self.0.entry(op).or_default().push(start.elapsed());
        r
    }

    /// Times `f`, which does `n` operations, and records the time per operation.
    pub fn time_per<R>(&mut self, op: &'static str, n: usize, f: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let r = f();
        self.0
            .entry(op)
            .or_default()
            .push(start.elapsed() / n as u32);
        r
    }

    pub fn median(&self, op: &str) -> Option<Duration> {
        let mut v = self.0.get(op)?.clone();
        v.sort();
        Some(v[v.len() / 2])
    }
}

/// A throwaway KeyPackage: its owner only ever exists as this package.
pub fn key_package(name: &str) -> KeyPackage {
    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(SIGNATURE_SCHEME).unwrap();
    let credential = CredentialWithKey {
        credential: BasicCredential::new(format!("{name}/dev").into_bytes()).into(),
        signature_key: signer.public().into(),
    };
    // What our leaves support (the group settings among them), as a peer's KeyPackage says:
    // a group with settings takes no member without it.
    let capabilities = Capabilities::builder()
        .extensions(vec![
            ExtensionType::LastResort,
            ExtensionType::Unknown(mlschat_wire::settings::EXTENSION_TYPE),
        ])
        .build();
    KeyPackage::builder()
        .leaf_node_capabilities(capabilities)
        .build(CIPHERSUITE, &provider, &signer, credential)
        .unwrap()
        .key_package()
        .clone()
}

pub fn kp_bytes(kp: &KeyPackage) -> Vec<u8> {
    MlsMessageOut::from(kp.clone())
        .tls_serialize_detached()
        .unwrap()
}

pub fn bytes(m: MlsMessageOut) -> Vec<u8> {
    m.tls_serialize_detached().unwrap()
}

pub fn protocol(b: &[u8]) -> ProtocolMessage {
    MlsMessageIn::tls_deserialize_exact(b)
        .unwrap()
        .try_into_protocol_message()
        .unwrap()
}

/// One side of the comparison: Alice, who commits and sends, and Bob, who processes, in a
/// group of N members. Both sides run the same sequence of operations.
pub trait Side {
    type Msg;
    /// Alice adds the members of these KeyPackages in one commit (merged, tree for the joiners).
    fn add(&mut self, kps: &[KeyPackage]) -> Vec<Self::Msg>;
    /// Alice removes the members of these KeyPackages in one commit.
    fn remove(&mut self, kps: &[KeyPackage]) -> Vec<Self::Msg>;
    fn send(&mut self) -> Vec<Self::Msg>;
    /// Bob processes messages: one transaction each on the durable side.
    fn process(&mut self, msgs: &[Self::Msg]);
    /// Bob processes messages as one batch: one transaction on the durable side.
    fn process_batch(&mut self, msgs: &[Self::Msg]);
    fn epoch_authenticators(&mut self) -> (Vec<u8>, Vec<u8>);
}

/// Raw OpenMLS with its in-memory store: the baseline.
pub struct Raw {
    alice: (OpenMlsRustCrypto, SignatureKeyPair),
    bob: OpenMlsRustCrypto,
    a: MlsGroup,
    b: MlsGroup,
}

pub fn new_signer(name: &str) -> (SignatureKeyPair, CredentialWithKey) {
    let signer = SignatureKeyPair::new(SIGNATURE_SCHEME).unwrap();
    let credential = CredentialWithKey {
        credential: BasicCredential::new(format!("{name}/dev").into_bytes()).into(),
        signature_key: signer.public().into(),
    };
    (signer, credential)
}

impl Raw {
    pub fn new(n: usize, members: &[KeyPackage], t: &mut Timings) -> Self {
        let alice = OpenMlsRustCrypto::default();
        let (alice_signer, alice_credential) = new_signer("alice");
        let bob = OpenMlsRustCrypto::default();
        let (bob_signer, bob_credential) = new_signer("bob");
        let bob_kp = KeyPackage::builder()
            .build(CIPHERSUITE, &bob, &bob_signer, bob_credential)
            .unwrap()
            .key_package()
            .clone();
        // The same group policy as the durable path, so only storage differs.
        let config = Engine::create_config();
        let mut a = MlsGroup::new(&alice, &alice_signer, &config, alice_credential).unwrap();
        let mut others: Vec<KeyPackage> = members[..n - 2].to_vec();
        others.push(bob_kp);
        let mut welcome = None;
        for batch in others.chunks(BATCH) {
            let (_, w, _) = a
                .add_members_without_update(&alice, &alice_signer, batch)
                .unwrap();
            a.merge_pending_commit(&alice).unwrap();
            welcome = Some(bytes(w));
        }
        let tree = a.export_ratchet_tree().tls_serialize_detached().unwrap();
        let b = t.time("join (Welcome + tree)", || {
            let MlsMessageBodyIn::Welcome(w) =
                MlsMessageIn::tls_deserialize_exact(welcome.unwrap())
                    .unwrap()
                    .extract()
            else {
                unreachable!()
            };
            let tree = RatchetTreeIn::tls_deserialize_exact(&tree).unwrap();
            StagedWelcome::new_from_welcome(&bob, config.join_config(), w, Some(tree))
                .unwrap()
                .into_group(&bob)
                .unwrap()
        });
        assert_eq!(b.members().count(), n);
        Self {
            alice: (alice, alice_signer),
            bob,
            a,
            b,
        }
    }
}

impl Side for Raw {
    type Msg = Vec<u8>;

    fn add(&mut self, kps: &[KeyPackage]) -> Vec<Vec<u8>> {
        let (provider, signer) = &self.alice;
        let (c, _w, _) = self
            .a
            .add_members_without_update(provider, signer, kps)
            .unwrap();
        self.a.merge_pending_commit(provider).unwrap();
        // The joiner needs the tree; export it as the durable path does.
        let _tree = self
            .a
            .export_ratchet_tree()
            .tls_serialize_detached()
            .unwrap();
        vec![bytes(c)]
    }

    fn remove(&mut self, kps: &[KeyPackage]) -> Vec<Vec<u8>> {
        let (provider, signer) = &self.alice;
        let leaves: Vec<LeafNodeIndex> = kps
            .iter()
            .map(|kp| {
                let key = kp.leaf_node().signature_key().as_slice();
                let member = self.a.members().find(|m| m.signature_key == key);
                member.unwrap().index
            })
            .collect();
        let (c, _, _) = self.a.remove_members(provider, signer, &leaves).unwrap();
        self.a.merge_pending_commit(provider).unwrap();
        vec![bytes(c)]
    }

    fn send(&mut self) -> Vec<Vec<u8>> {
        let (provider, signer) = &self.alice;
        vec![bytes(
            self.a.create_message(provider, signer, b"hello").unwrap(),
        )]
    }

    fn process(&mut self, msgs: &[Vec<u8>]) {
        for msg in msgs {
            match self
                .b
                .process_message(&self.bob, protocol(msg))
                .unwrap()
                .into_content()
            {
                ProcessedMessageContent::StagedCommitMessage(s) => {
                    self.b.merge_staged_commit(&self.bob, *s).unwrap()
                }
                ProcessedMessageContent::ApplicationMessage(m) => {
                    assert!(!m.into_bytes().is_empty())
                }
                _ => unreachable!(),
            }
        }
    }

    fn process_batch(&mut self, msgs: &[Vec<u8>]) {
        self.process(msgs)
    }

    fn epoch_authenticators(&mut self) -> (Vec<u8>, Vec<u8>) {
        (
            self.a.epoch_authenticator().as_slice().to_vec(),
            self.b.epoch_authenticator().as_slice().to_vec(),
        )
    }
}
