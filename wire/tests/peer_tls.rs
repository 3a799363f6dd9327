//! Peers know each other by their identity keys over TLS (PROTOCOL.md §11): a dialer reaches
//! only the peer it pinned, a listener learns who dialed, and a peer without an identity
//! certificate gets no connection.

use std::net::SocketAddr;

use mlschat_wire::quic::peer::{
    PeerCertificate, peer_client_config, peer_fingerprint, peer_server_config,
};
use sha2::{Digest, Sha256};

fn identity(byte: u8) -> ([u8; 32], PeerCertificate) {
    let seed = [byte; 32];
    (seed, PeerCertificate::of_identity(&seed).unwrap())
}

fn listener(ours: &PeerCertificate) -> quinn::Endpoint {
    let config = peer_server_config(ours).unwrap();
    quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap()
}

async fn dial(
    config: quinn::ClientConfig,
    to: SocketAddr,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    endpoint.connect(to, "peer").unwrap().await
}

#[test]
fn the_fingerprint_is_that_of_the_mls_signature_key() {
    let (seed, cert) = identity(7);
    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    let expected: [u8; 32] = Sha256::digest(public.as_bytes()).into();
    assert_eq!(cert.fingerprint(), expected);
}

#[tokio::test]
async fn both_sides_know_whom_they_talk_to() {
    let (_, alice) = identity(1);
    let (_, bob) = identity(2);
    let bob_listens = listener(&bob);
    let at = bob_listens.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let incoming = bob_listens.accept().await.unwrap();
        let connection = incoming.await.unwrap();
        peer_fingerprint(&connection)
    });
    let config = peer_client_config(&alice, bob.fingerprint()).unwrap();
    let connection = dial(config, at).await.unwrap();
    assert_eq!(peer_fingerprint(&connection), Some(bob.fingerprint()));
    assert_eq!(accept.await.unwrap(), Some(alice.fingerprint()));
}

#[tokio::test]
async fn a_dialer_reaches_only_the_peer_it_pinned() {
    let (_, alice) = identity(1);
    let (_, bob) = identity(2);
    let (_, mallory) = identity(3);
    // Mallory listens where Alice expects Bob.
    let mallory_listens = listener(&mallory);
    let at = mallory_listens.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = mallory_listens.accept().await {
            let _ = incoming.await;
        }
    });
    let config = peer_client_config(&alice, bob.fingerprint()).unwrap();
    let refused = dial(config, at).await.unwrap_err();
    assert!(
        refused.to_string().contains("certificate"),
        "unexpected error: {refused}"
    );
}

#[tokio::test]
async fn a_dialer_without_an_identity_certificate_is_refused() {
    let (_, bob) = identity(2);
    let bob_listens = listener(&bob);
    let at = bob_listens.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let incoming = bob_listens.accept().await.unwrap();
        incoming.await.map(|_| ())
    });
    let dialed = dial(anonymous_client(), at).await;
    assert!(
        accept.await.unwrap().is_err(),
        "the listener accepted a dialer without a certificate"
    );
    // The dialer may see its handshake finish before the listener refuses; it gets nothing.
    if let Ok(connection) = dialed {
        assert!(connection.accept_uni().await.is_err());
    }
}

/// A client that speaks the peers' ALPN and trusts any server, but has no certificate.
fn anonymous_client() -> quinn::ClientConfig {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, Error, SignatureScheme};

    #[derive(Debug)]
    struct TrustAnyone;
    impl ServerCertVerifier for TrustAnyone {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(TrustAnyone))
        .with_no_client_auth();
    tls.alpn_protocols = vec![mlschat_wire::quic::peer::PEER_ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    quinn::ClientConfig::new(std::sync::Arc::new(quic))
}
