//! Framing: how one message sits on a QUIC stream.
//!
//! ```text
//! frame = version u16 (big-endian) | length u32 (big-endian) | body (length bytes)
//! ```
//!
//! The body is one TLS-encoded [`Request`](crate::Request), [`Response`](crate::Response) or
//! [`Push`](crate::Push), by the stream's role. The length is checked against the reader's limit
//! before a byte of the body is read or allocated.

use tls_codec::{DeserializeBytes, Serialize};

/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;

/// Bytes before the body.
pub const HEADER_LEN: usize = 6;

/// The largest frame body either side accepts by default: a commit with its Welcomes and the
/// ratchet tree of a group of ~300,000 members.
pub const MAX_FRAME: u32 = 64 << 20;

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is of a protocol version this side does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// The declared body length is over the limit; nothing was read past the header.
    #[error("frame of {length} bytes is over the {limit}-byte limit")]
    TooLarge { length: u32, limit: u32 },
    /// The input ended before the header or the body did.
    #[error("truncated frame")]
    Truncated,
    /// The body is not a valid message of the expected kind.
    #[error("malformed frame body: {0}")]
    Malformed(String),
}

/// A frame header, read and checked before the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub length: u32,
}

impl Header {
    /// Checks a header against the version we speak and the reader's size limit.
    pub fn parse(bytes: &[u8; HEADER_LEN], limit: u32) -> Result<Header, FrameError> {
        let version = u16::from_be_bytes([bytes[0], bytes[1]]);
        let length = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        if length > limit {
            return Err(FrameError::TooLarge { length, limit });
        }
        Ok(Header { version, length })
    }
}

/// Encodes a message as one frame. Fails if the body would be over [`MAX_FRAME`].
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let body = message
        .tls_serialize_detached()
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let length = u32::try_from(body.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or(FrameError::TooLarge {
            length: u32::MAX,
            limit: MAX_FRAME,
        })?;
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(&VERSION.to_be_bytes());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Decodes a frame body; every byte must belong to the message.
pub fn decode_body<T: DeserializeBytes>(body: &[u8]) -> Result<T, FrameError> {
    let (message, rest) =
        T::tls_deserialize_bytes(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(message)
}

/// Decodes one whole frame from a buffer holding exactly that frame.
pub fn decode<T: DeserializeBytes>(frame: &[u8], limit: u32) -> Result<T, FrameError> {
    let header: &[u8; HEADER_LEN] = frame
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(FrameError::Truncated)?;
    let header = Header::parse(header, limit)?;
    let body = &frame[HEADER_LEN..];
    match body.len().cmp(&(header.length as usize)) {
        std::cmp::Ordering::Less => Err(FrameError::Truncated),
        std::cmp::Ordering::Greater => Err(FrameError::Malformed("bytes after the frame".into())),
        std::cmp::Ordering::Equal => decode_body(body),
    }
}
