//! What a client signs to prove it holds its signature key, bound to one TLS session.
//!
//! The client asks for a nonce ([`Request::Challenge`](crate::Request::Challenge)), then signs
//! the TLS encoding of a [`Transcript`] with its Ed25519 key. The transcript carries a TLS
//! exporter value of the connection, so a signature is worth nothing on another connection,
//! and the nonce, which the node accepts once.

use tls_codec::{Serialize, TlsSerialize, TlsSize, VLBytes};

/// The TLS exporter label (RFC 8446 §7.5); the context is empty and the length 32.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-mlschat-auth";
pub const EXPORTER_LEN: usize = 32;

/// What is being proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Register,
    Authenticate,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Register => b"mlschat/1 register",
            Purpose::Authenticate => b"mlschat/1 authenticate",
        }
    }
}

/// The signed content.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsSize)]
pub struct Transcript {
    pub label: VLBytes,
    pub tls_exporter: VLBytes,
    pub nonce: VLBytes,
    pub signature_key: VLBytes,
    /// The invite token for `register`; empty for `authenticate`.
    pub invite: VLBytes,
}

impl Transcript {
    pub fn new(
        purpose: Purpose,
        tls_exporter: &[u8],
        nonce: &[u8; 32],
        signature_key: &[u8],
        invite: &[u8],
    ) -> Self {
        Self {
            label: purpose.label().into(),
            tls_exporter: tls_exporter.into(),
            nonce: nonce.as_slice().into(),
            signature_key: signature_key.into(),
            invite: invite.into(),
        }
    }

    /// The bytes to sign and verify.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.tls_serialize_detached()
            .expect("serialising byte vectors into a Vec does not fail")
    }
}
