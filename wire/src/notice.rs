//! A notice an admin leaves in a group's log for members it cannot reach by MLS: that the
//! group's history after an epoch is a fork its admins abandoned (PROTOCOL.md §8).
//!
//! When a commit breaks a group for an admin (every honest member rejects it: a non-admin's add,
//! say), whoever accepted that commit (its joiners, its committer) goes on in an epoch the
//! others will never read, and MLS gives them no way to tell. The admin cannot post at that
//! epoch, but any holder of a token of the group may append a notice to its log (a
//! [`crate::Request::PostNotice`]); a member past the epoch a valid notice names learns that its
//! group was abandoned. The notice is signed with the admin's MLS signature key, so the node,
//! which cannot read settings or trees, carries it without being trusted.

use ed25519_dalek::{Signature, VerifyingKey};
use tls_codec::{
    DeserializeBytes as _, Serialize as _, TlsDeserializeBytes, TlsSerialize, TlsSize, VLBytes,
};

/// What is signed: this label, then the encoded [`Abandoned`].
const LABEL: &[u8] = b"mlschat notice abandoned";

/// The largest notice a node takes.
pub const MAX_NOTICE: usize = 4096;

/// The signer (an admin of `group_id`) rejected the commit that ended `epoch`, whose log
/// entry's SHA-256 is `rejected_commit`: every epoch after `epoch` is a fork it left.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
pub struct Abandoned {
    pub group_id: VLBytes,
    pub epoch: u64,
    pub rejected_commit: [u8; 32],
}

/// An [`Abandoned`] with its signer's Ed25519 signature key and signature.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
pub struct Notice {
    pub abandoned: Abandoned,
    pub signature_key: VLBytes,
    pub signature: VLBytes,
}

/// Why a notice is not one to act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    #[error("a malformed notice")]
    Malformed,
    #[error("a notice whose signature does not verify")]
    BadSignature,
}

impl Abandoned {
    /// The bytes its signer signs.
    pub fn to_be_signed(&self) -> Vec<u8> {
        let mut bytes = LABEL.to_vec();
        bytes.extend(
            self.tls_serialize_detached()
                .expect("a notice in memory encodes"),
        );
        bytes
    }
}

impl Notice {
    pub fn encode(&self) -> Vec<u8> {
        self.tls_serialize_detached()
            .expect("a notice in memory encodes")
    }

    /// Decodes a notice and checks its signature (not who signed it: that is the reader's).
    pub fn verified(bytes: &[u8]) -> Result<Self, NoticeError> {
        let notice = match Self::tls_deserialize_bytes(bytes) {
            Ok((notice, [])) => notice,
            _ => return Err(NoticeError::Malformed),
        };
        let key: [u8; 32] = notice
            .signature_key
            .as_slice()
            .try_into()
            .map_err(|_| NoticeError::Malformed)?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| NoticeError::Malformed)?;
        let signature = Signature::from_slice(notice.signature.as_slice())
            .map_err(|_| NoticeError::Malformed)?;
        key.verify_strict(&notice.abandoned.to_be_signed(), &signature)
            .map_err(|_| NoticeError::BadSignature)?;
        Ok(notice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn a_signed_notice_verifies_and_any_change_breaks_it() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let abandoned = Abandoned {
            group_id: b"group".to_vec().into(),
            epoch: 7,
            rejected_commit: [9; 32],
        };
        let notice = Notice {
            signature: key
                .sign(&abandoned.to_be_signed())
                .to_bytes()
                .to_vec()
                .into(),
            signature_key: key.verifying_key().to_bytes().to_vec().into(),
            abandoned,
        };
        let bytes = notice.encode();
        assert_eq!(Notice::verified(&bytes).unwrap(), notice);
        let mut forged = notice.clone();
        forged.abandoned.epoch = 6;
        assert_eq!(
            Notice::verified(&forged.encode()),
            Err(NoticeError::BadSignature)
        );
        assert_eq!(
            Notice::verified(&bytes[..bytes.len() - 1]),
            Err(NoticeError::Malformed)
        );
    }
}
