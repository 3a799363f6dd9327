//! One connection's authentication state, as the serving side keeps it (a delivery node now, a
//! peer serving a group's log later), without I/O: the caller supplies randomness, the TLS
//! exporter value and the stored key lookups' results.

use crate::auth::{Purpose, Transcript};
use crate::token::client_id;
use crate::{ClientId, ErrorCode};
use ed25519_dalek::{Signature, VerifyingKey};

/// Where a connection stands.
#[derive(Debug, Default)]
pub struct Session {
    /// The nonce handed out by the last `Challenge`, usable once.
    nonce: Option<[u8; 32]>,
    client: Option<Authenticated>,
}

/// The client a connection speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub id: ClientId,
    pub signature_key: Vec<u8>,
}

impl Session {
    /// Remembers a fresh nonce (replacing any unused one) and returns it.
    pub fn challenge(&mut self, nonce: [u8; 32]) -> [u8; 32] {
        self.nonce = Some(nonce);
        nonce
    }

    /// Checks a `Register` or `Authenticate` signature against the transcript this connection
    /// defines. The nonce is consumed whatever the outcome, so a signature is tried once.
    pub fn prove(
        &mut self,
        purpose: Purpose,
        tls_exporter: &[u8],
        signature_key: &[u8],
        invite: &[u8],
        signature: &[u8],
    ) -> Result<Authenticated, ErrorCode> {
        let nonce = self.nonce.take().ok_or(ErrorCode::AuthFailed)?;
        let key: [u8; 32] = signature_key
            .try_into()
            .map_err(|_| ErrorCode::AuthFailed)?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| ErrorCode::AuthFailed)?;
        let signature = Signature::from_slice(signature).map_err(|_| ErrorCode::AuthFailed)?;
        let transcript =
            Transcript::new(purpose, tls_exporter, &nonce, signature_key, invite).to_bytes();
        key.verify_strict(&transcript, &signature)
            .map_err(|_| ErrorCode::AuthFailed)?;
        Ok(Authenticated {
            id: client_id(signature_key),
            signature_key: signature_key.to_vec(),
        })
    }

    /// Marks the connection as speaking for `client`, once its registration is stored.
    pub fn authenticated(&mut self, client: Authenticated) {
        self.client = Some(client);
    }

    pub fn client(&self) -> Result<&Authenticated, ErrorCode> {
        self.client.as_ref().ok_or(ErrorCode::Unauthenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn signed(key: &SigningKey, purpose: Purpose, exporter: &[u8], nonce: &[u8; 32]) -> Vec<u8> {
        let public = key.verifying_key().to_bytes();
        let transcript = Transcript::new(purpose, exporter, nonce, &public, b"");
        key.sign(&transcript.to_bytes()).to_bytes().to_vec()
    }

    #[test]
    fn a_signature_proves_once_and_only_for_its_session() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = key.verifying_key().to_bytes();
        let mut session = Session::default();
        assert_eq!(session.client(), Err(ErrorCode::Unauthenticated));
        let nonce = session.challenge([1; 32]);
        let sig = signed(&key, Purpose::Authenticate, b"exporter-A", &nonce);
        // Another connection's exporter: refused, and the nonce is spent.
        assert_eq!(
            session.prove(Purpose::Authenticate, b"exporter-B", &public, b"", &sig),
            Err(ErrorCode::AuthFailed)
        );
        assert_eq!(
            session.prove(Purpose::Authenticate, b"exporter-A", &public, b"", &sig),
            Err(ErrorCode::AuthFailed),
            "a nonce must not be usable twice"
        );
        let nonce = session.challenge([2; 32]);
        let sig = signed(&key, Purpose::Authenticate, b"exporter-A", &nonce);
        // Signed for authenticate, presented as register: refused.
        assert!(
            session
                .prove(Purpose::Register, b"exporter-A", &public, b"", &sig)
                .is_err()
        );
        let nonce = session.challenge([3; 32]);
        let sig = signed(&key, Purpose::Authenticate, b"exporter-A", &nonce);
        let who = session
            .prove(Purpose::Authenticate, b"exporter-A", &public, b"", &sig)
            .unwrap();
        assert_eq!(who.id, client_id(&public));
    }
}
