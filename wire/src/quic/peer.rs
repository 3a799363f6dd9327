//! TLS between two peers (ALPN `mlschat-peer/1`, PROTOCOL.md §11): each side presents a
//! self-signed certificate of its Ed25519 identity key (the key of its MLS credential), proves
//! it holds that key in the handshake, and is known by the key's fingerprint. The dialer pins
//! the fingerprint of the peer it means to reach; the listener learns who dialed and decides
//! itself whom it serves (its contacts, its groups' members), after the handshake.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

use super::tls::TlsError;

/// The ALPN of connections between peers; a delivery node speaks [`crate::ALPN`].
pub const PEER_ALPN: &[u8] = b"mlschat-peer/1";

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32-byte key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER prefix of an Ed25519 private key in PKCS #8 v1 (RFC 8410): the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Our side of a peer connection: the certificate of our identity key, and that key.
#[derive(Debug)]
pub struct PeerCertificate {
    cert: CertificateDer<'static>,
    seed: [u8; 32],
}

impl PeerCertificate {
    /// A self-signed certificate of the Ed25519 key with this 32-byte seed (the private half
    /// of an MLS signature key). Only its key counts: names and validity are not read.
    pub fn of_identity(seed: &[u8; 32]) -> Result<Self, TlsError> {
        let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8(seed));
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        let cert = rcgen::CertificateParams::new(vec!["mlschat-peer".to_owned()])
            .and_then(|params| params.self_signed(&key))
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        Ok(Self {
            cert: cert.der().clone(),
            seed: *seed,
        })
    }

    /// The fingerprint others know us by: SHA-256 of our Ed25519 public key.
    pub fn fingerprint(&self) -> [u8; 32] {
        identity_key(&self.cert)
            .map(|key| Sha256::digest(key).into())
            .expect("our own certificate carries an Ed25519 key")
    }

    fn chain(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8(&self.seed)));
        (vec![self.cert.clone()], key)
    }
}

fn pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    [&ED25519_PKCS8_PREFIX[..], seed].concat()
}

/// The Ed25519 public key a certificate carries, if it carries one.
pub fn identity_key(cert: &CertificateDer<'_>) -> Option<[u8; 32]> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let spki = parsed.subject_public_key_info();
    let key = spki.as_ref().strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    key.try_into().ok()
}

/// The fingerprint of the peer at the other end of an established connection: SHA-256 of the
/// Ed25519 key it proved it holds in the handshake.
pub fn peer_fingerprint(connection: &quinn::Connection) -> Option<[u8; 32]> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast_ref::<Vec<CertificateDer<'static>>>()?;
    let key = identity_key(chain.first()?)?;
    Some(Sha256::digest(key).into())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a listening peer accepts: any peer that proves it holds an Ed25519 identity key.
/// Whom it then serves is the listener's decision, by [`peer_fingerprint`].
pub fn peer_server_config(ours: &PeerCertificate) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(IdentityKey {
        pinned: None,
        algorithms: provider.signature_verification_algorithms,
    });
    let (chain, key) = ours.chain();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![PEER_ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let quic = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
}

/// What a dialing peer accepts: only the peer whose identity key has this fingerprint.
pub fn peer_client_config(
    ours: &PeerCertificate,
    peer: [u8; 32],
) -> Result<quinn::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(IdentityKey {
        pinned: Some(peer),
        algorithms: provider.signature_verification_algorithms,
    });
    let (chain, key) = ours.chain();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![PEER_ALPN.to_vec()];
    tls.enable_early_data = false;
    let quic = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// Checks a peer's certificate by its Ed25519 key alone (pinned, when dialing), and that the
/// peer signs the handshake with that key.
#[derive(Debug)]
struct IdentityKey {
    pinned: Option<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl IdentityKey {
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let refused = rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        );
        let key = identity_key(cert).ok_or(refused.clone())?;
        match self.pinned {
            Some(pinned) if <[u8; 32]>::from(Sha256::digest(key)) != pinned => Err(refused),
            _ => Ok(()),
        }
    }

    fn verify_tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

fn no_tls12() -> rustls::Error {
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered)
}

impl ServerCertVerifier for IdentityKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for IdentityKey {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}
