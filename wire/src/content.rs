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
    /// The group it is sent in continues a group the sender could not go on in; the body is
    /// that group's id. Receivers who were in it move to the new group.
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
            ContentKind::Continuation => {
                format!("[this group continues group {}]", hex::encode(&self.body))
            }
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
}
