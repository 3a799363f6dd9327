//! The node's certificate: self-signed on first start unless the operator gives one. The TLS
//! configurations themselves are the protocol's (`mlschat_wire::quic::tls`).

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate and its private key.
#[derive(Debug)]
pub struct NodeCertificate {
    pub cert: CertificateDer<'static>,
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl NodeCertificate {
    /// A fresh self-signed certificate for `name`.
    pub fn self_signed(name: &str) -> Result<Self, rcgen::Error> {
        let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()])?;
        Ok(Self {
            cert: certified.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
        })
    }

    /// SHA-256 of the certificate's DER encoding: what clients pin.
    pub fn fingerprint(&self) -> [u8; 32] {
        mlschat_wire::quic::tls::fingerprint(&self.cert)
    }

    /// The QUIC server configuration presenting this certificate.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, mlschat_wire::quic::tls::TlsError> {
        mlschat_wire::quic::tls::server_config(
            self.cert.clone(),
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
        )
    }
}
