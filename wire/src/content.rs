//! The plaintext of an application message: what a member encrypts with MLS, never seen by a
//! delivery node.
//!
//! It is versioned and typed so that replies, reactions, edits and attachments can come later
//! without old clients showing garbage: a client shows an unknown `kind` as such. Its `id` is the
//! [`PostId`] the sender posted it under; receivers drop a second copy from the same sender by
//! that id, which catches a text the node took twice under different ciphertexts (encrypted
//! again at a later epoch after its first answer was lost).

use tls_codec::{
    DeserializeBytes as _, Serialize as _, TlsDeserializeBytes, TlsSerialize, TlsSize, VLBytes,
};

use crate::PostId;

/// The only version of this format so far.
pub const CONTENT_VERSION: u8 = 1;

/// What a content's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentKind {
    /// UTF-8 text.
    Text,
    /// The group it is sent in continues a group the sender could not go on in; the body is a
    /// [`Continuation`]. Receivers for whom that group broke at the same point move to the new
    /// group, if its sender was an admin there and the new group keeps its settings and members.
    Continuation,
    /// A kind this client does not know (sent by a newer one).
    Unknown(u16),
}

impl ContentKind {
    fn code(self) -> u16 {
        match self {
            ContentKind::Text => 1,
            ContentKind::Continuation => 2,
            ContentKind::Unknown(code) => code,
        }
    }

    fn of(code: u16) -> Self {
        match code {
            1 => ContentKind::Text,
            2 => ContentKind::Continuation,
            other => ContentKind::Unknown(other),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
struct Encoded {
    version: u8,
    id: PostId,
    kind: u16,
    body: VLBytes,
}

/// The body of a [`ContentKind::Continuation`]: which group the new one continues, and where
/// that group broke for its sender (the last epoch it could process, and that epoch's
/// authenticator, RFC 9420 §8.7). A receiver follows only if the group broke for it at the
/// same epoch with the same authenticator: nobody can continue a group that is healthy, or a
/// state of it the receiver never shared.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
pub struct Continuation {
    pub old_group: VLBytes,
    pub epoch: u64,
    pub epoch_authenticator: VLBytes,
}

impl Continuation {
    pub fn encode(&self) -> Vec<u8> {
        self.tls_serialize_detached()
            .expect("a continuation in memory encodes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, ContentError> {
        match Self::tls_deserialize_bytes(bytes) {
            Ok((continuation, [])) => Ok(continuation),
            _ => Err(ContentError::Malformed),
        }
    }
}

/// One application message's plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub id: PostId,
    pub kind: ContentKind,
    pub body: Vec<u8>,
}

/// Plaintext that is not a [`Content`] of a version we read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("message content of version {0}, newer than this client reads")]
    Version(u8),
    #[error("malformed message content")]
    Malformed,
}

impl Content {
    pub fn text(id: PostId, text: &str) -> Self {
        Self {
            id,
            kind: ContentKind::Text,
            body: text.as_bytes().to_vec(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        Encoded {
            version: CONTENT_VERSION,
            id: self.id,
            kind: self.kind.code(),
            body: self.body.clone().into(),
        }
        .tls_serialize_detached()
        .expect("a content in memory encodes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, ContentError> {
        match bytes.first() {
            Some(&CONTENT_VERSION) => {}
            Some(&other) => return Err(ContentError::Version(other)),
            None => return Err(ContentError::Malformed),
        }
        let (encoded, rest) =
            Encoded::tls_deserialize_bytes(bytes).map_err(|_| ContentError::Malformed)?;
        if !rest.is_empty() {
            return Err(ContentError::Malformed);
        }
        Ok(Self {
            id: encoded.id,
            kind: ContentKind::of(encoded.kind),
            body: encoded.body.into(),
        })
    }

    /// What a person is shown for a plaintext: its text, or a note of what it is not.
    pub fn show(plaintext: &[u8]) -> String {
        match Self::decode(plaintext) {
            Ok(content) => content.display(),
            Err(e) => format!("[a message this client cannot read: {e}]"),
        }
    }

    /// What a person is shown: the text, or a note that the kind is not understood.
    pub fn display(&self) -> String {
        match self.kind {
            ContentKind::Text => String::from_utf8_lossy(&self.body).into_owned(),
            ContentKind::Continuation => match Continuation::decode(&self.body) {
                Ok(c) => format!(
                    "[this group continues group {} (broken after epoch {})]",
                    hex::encode(c.old_group.as_slice()),
                    c.epoch
                ),
                Err(_) => "[a malformed continuation]".to_owned(),
            },
            ContentKind::Unknown(code) => {
                format!("[content of kind {code}, which this version of mlschat cannot show]")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_unknown_kinds_are_named() {
        let text = Content::text([1; 16], "hé");
        assert_eq!(Content::decode(&text.encode()).unwrap(), text);
        let mut future = text.encode();
        future[18] = 9; // kind 9
        let decoded = Content::decode(&future).unwrap();
        assert_eq!(decoded.kind, ContentKind::Unknown(9));
        assert!(decoded.display().contains("kind 9"));
        future[0] = 2;
        assert_eq!(Content::decode(&future), Err(ContentError::Version(2)));
        assert_eq!(Content::decode(b""), Err(ContentError::Malformed));
        assert_eq!(
            Content::decode(&text.encode()[..10]),
            Err(ContentError::Malformed)
        );
    }

    #[test]
    fn a_continuation_round_trips_and_nothing_may_follow_it() {
        let c = Continuation {
            old_group: b"old".to_vec().into(),
            epoch: 7,
            epoch_authenticator: vec![9; 32].into(),
        };
        assert_eq!(Continuation::decode(&c.encode()).unwrap(), c);
        let mut longer = c.encode();
        longer.push(0);
        assert_eq!(Continuation::decode(&longer), Err(ContentError::Malformed));
        assert_eq!(Continuation::decode(b"old"), Err(ContentError::Malformed));
    }
}
