//! Peers directly over QUIC on loopback (`mlschat_node::direct`): a listener serves the peers
//! it admits from its replica and its own KeyPackages, as a node would; a stranger's
//! connection is closed; a dialer reaches only the peer it meant.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use mlschat_grouplog::GroupLog as _;
use mlschat_grouplog::keypackages::{KeyPackage, Store as _};
use mlschat_node::clock::Clock;
use mlschat_node::direct::{self, Admission, PeerServer};
use mlschat_node::identity::{DeviceName, Fingerprint, Identity};
use mlschat_node::replica::SqliteLog;
use mlschat_wire::quic::{Connection, QuicError};
use mlschat_wire::token::token_hash;
use mlschat_wire::{ClaimAnswer, ErrorCode, FetchGroup, PostMessage, Request, Response};

struct Contacts(HashSet<Fingerprint>);

impl Admission for Contacts {
    fn admits(&self, peer: &Fingerprint) -> bool {
        self.0.contains(peer)
    }
}

fn identity(name: &str) -> Identity {
    Identity::generate(DeviceName::new(name, "laptop").unwrap())
}

const GROUP: &[u8] = b"trip";
const TOKEN: [u8; 32] = [7; 32];

/// Bob listens on loopback, admitting Alice only; his replica holds a group and two of his
/// KeyPackages.
async fn bob_listens(bob: &Identity, alice: &Identity, dir: &std::path::Path) -> SocketAddr {
    let replica = Arc::new(SqliteLog::create(dir).unwrap());
    let now = Clock::System.unix();
    replica
        .create_group(GROUP, &token_hash(&TOKEN), now)
        .await
        .unwrap()
        .unwrap();
    let package = |n: u8| KeyPackage {
        reference: vec![n; 4],
        message: vec![n; 40],
        not_after: now + 3600,
    };
    let us = bob.fingerprint().0;
    replica
        .publish(&us, vec![package(1)], Some(package(2)))
        .await
        .unwrap();
    let ours = direct::certificate(bob).unwrap();
    let endpoint = direct::listen(&ours, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let server = PeerServer {
        us,
        replica,
        admission: Contacts(HashSet::from([alice.fingerprint()])),
        clock: Clock::System,
    };
    tokio::spawn(direct::serve(endpoint, Arc::new(server)));
    addr
}

async fn dial(
    from: &Identity,
    to: SocketAddr,
    expecting: &Identity,
) -> Result<Connection, QuicError> {
    let ours = direct::certificate(from).unwrap();
    Connection::connect_peer(to, &ours, expecting.fingerprint().0).await
}

#[tokio::test]
async fn a_contact_posts_and_reads_the_log_and_claims_a_key_package() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (identity("alice"), identity("bob"));
    let at = bob_listens(&bob, &alice, dir.path()).await;
    let to_bob = dial(&alice, at, &bob).await.unwrap();

    let post = PostMessage {
        group_id: GROUP.to_vec().into(),
        epoch: 0,
        token: TOKEN,
        post_id: [1; 16],
        message: b"hello".to_vec().into(),
    };
    let answer = to_bob.request(&Request::PostMessage(post)).await.unwrap();
    assert_eq!(answer, Response::Accepted { seq: 1, epoch: 0 });
    let fetch = FetchGroup {
        group_id: GROUP.to_vec().into(),
        token: TOKEN,
        after_seq: 0,
        limit: 10,
    };
    let Response::GroupEntries { entries } =
        to_bob.request(&Request::FetchGroup(fetch)).await.unwrap()
    else {
        panic!("no entries");
    };
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].message.as_slice(), b"hello");

    // Bob's KeyPackages, one-time first; nobody else's.
    let stranger = identity("carol").fingerprint().0;
    let claim = Request::ClaimKeyPackages {
        owners: vec![bob.fingerprint().0, stranger],
    };
    let Response::KeyPackages { claims } = to_bob.request(&claim).await.unwrap() else {
        panic!("no claims");
    };
    assert_eq!(claims[0], ClaimAnswer::KeyPackage(vec![1; 40].into()));
    assert!(matches!(&claims[1], ClaimAnswer::Refused(e) if e.code == ErrorCode::UnknownClient));

    // A wrong token learns nothing, as from a node.
    let bad = PostMessage {
        group_id: GROUP.to_vec().into(),
        epoch: 0,
        token: [8; 32],
        post_id: [2; 16],
        message: b"forged".to_vec().into(),
    };
    let refused = to_bob.request(&Request::PostMessage(bad)).await;
    assert!(matches!(refused, Err(e) if e.code() == Some(ErrorCode::BadToken)));
}

#[tokio::test]
async fn a_strangers_connection_is_closed_and_served_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, mallory) = (identity("alice"), identity("bob"), identity("mallory"));
    let at = bob_listens(&bob, &alice, dir.path()).await;
    // Mallory reaches Bob (he is who she expects) but Bob does not know her.
    let served = match dial(&mallory, at, &bob).await {
        Ok(to_bob) => to_bob
            .request(&Request::ClaimKeyPackages {
                owners: vec![bob.fingerprint().0],
            })
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    let refused = served.expect_err("a stranger was served");
    assert!(refused.to_string().contains("stranger"), "{refused}");
}

#[tokio::test]
async fn a_dialer_reaches_only_the_peer_it_meant() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, mallory) = (identity("alice"), identity("bob"), identity("mallory"));
    let at = bob_listens(&bob, &alice, dir.path()).await;
    // Alice expects Mallory at Bob's address: Bob is not Mallory.
    let wrong = dial(&alice, at, &mallory).await.unwrap_err();
    assert!(matches!(wrong, QuicError::WrongPeer { .. }), "{wrong}");
}
