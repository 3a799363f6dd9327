//! How MLS messages travel through files and pipes: a stream of self-delimiting packets, so
//! several can be concatenated into one file (`cat a b | mlschat receive`).
//!
//! ```text
//! packet = magic "MLSC" | version u8 (=1) | kind u8 | length u32 (big-endian) | body
//! kind 1: body is one MLSMessage (KeyPackage, commit, proposal or application message)
//! kind 2: body is a join: opaque<V> Welcome MLSMessage, opaque<V> ratchet tree (RFC 9420 §4)
//! ```
//!
//! The length is checked against [`MAX_BODY`] before anything is allocated.

use std::io::{self, Read};

use tls_codec::{Deserialize as _, Serialize as _, VLBytes};

const MAGIC: &[u8; 4] = b"MLSC";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 10;

/// The largest packet body accepted: room for the ratchet tree of a group of ~300,000 members.
pub const MAX_BODY: usize = 64 << 20;

const KIND_MLS: u8 = 1;
const KIND_JOIN: u8 = 2;

/// One unit in a file or pipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// One MLSMessage.
    Mls(Vec<u8>),
    /// A Welcome and the ratchet tree the joiner needs with it.
    Join {
        welcome: Vec<u8>,
        ratchet_tree: Vec<u8>,
    },
}

/// Why a stream of packets could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// The stream does not start with an mlschat packet header.
    #[error("not an mlschat packet (bad magic bytes)")]
    BadMagic,
    /// The packet was written by a newer version of mlschat.
    #[error("unsupported packet version {0}")]
    UnsupportedVersion(u8),
    /// The packet kind is unknown.
    #[error("unknown packet kind {0}")]
    UnknownKind(u8),
    /// The declared length is above [`MAX_BODY`].
    #[error("packet of {0} bytes is over the {MAX_BODY}-byte limit")]
    TooLarge(u64),
    /// The stream ended inside a packet.
    #[error("truncated packet")]
    Truncated,
    /// The body does not decode as its kind says.
    #[error("malformed packet body: {0}")]
    Malformed(String),
    #[error(transparent)]
    Io(io::Error),
}

impl Packet {
    /// The packet's bytes; a body over [`MAX_BODY`] is refused, as a reader would refuse it.
    pub fn encode(&self) -> Result<Vec<u8>, PacketError> {
        let (kind, body) = match self {
            Packet::Mls(bytes) => (KIND_MLS, bytes.clone()),
            Packet::Join {
                welcome,
                ratchet_tree,
            } => {
                let mut body = Vec::with_capacity(welcome.len() + ratchet_tree.len() + 8);
                for part in [welcome, ratchet_tree] {
                    VLBytes::from(part.clone())
                        .tls_serialize(&mut body)
                        .expect("writing to a Vec does not fail");
                }
                (KIND_JOIN, body)
            }
        };
        if body.len() > MAX_BODY {
            return Err(PacketError::TooLarge(body.len() as u64));
        }
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(kind);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Reads the next packet, or `None` at a clean end of stream.
    pub fn read_from(input: &mut impl Read) -> Result<Option<Packet>, PacketError> {
        let mut header = [0u8; HEADER_LEN];
        match read_full(input, &mut header)? {
            0 => return Ok(None),
            n if n < HEADER_LEN => return Err(PacketError::Truncated),
            _ => {}
        }
        if &header[..4] != MAGIC {
            return Err(PacketError::BadMagic);
        }
        if header[4] != VERSION {
            return Err(PacketError::UnsupportedVersion(header[4]));
        }
        let kind = header[5];
        if kind != KIND_MLS && kind != KIND_JOIN {
            return Err(PacketError::UnknownKind(kind));
        }
        let len = u32::from_be_bytes(header[6..10].try_into().expect("4 bytes")) as usize;
        if len > MAX_BODY {
            return Err(PacketError::TooLarge(len as u64));
        }
        let mut body = vec![0u8; len];
        if read_full(input, &mut body)? < len {
            return Err(PacketError::Truncated);
        }
        Self::decode_body(kind, body).map(Some)
    }

    fn decode_body(kind: u8, body: Vec<u8>) -> Result<Packet, PacketError> {
        if kind == KIND_MLS {
            return Ok(Packet::Mls(body));
        }
        let mut rest = body.as_slice();
        let welcome = VLBytes::tls_deserialize(&mut rest)
            .map_err(|e| PacketError::Malformed(format!("welcome: {e}")))?;
        let ratchet_tree = VLBytes::tls_deserialize(&mut rest)
            .map_err(|e| PacketError::Malformed(format!("ratchet tree: {e}")))?;
        if !rest.is_empty() {
            return Err(PacketError::Malformed("trailing bytes".into()));
        }
        Ok(Packet::Join {
            welcome: welcome.into(),
            ratchet_tree: ratchet_tree.into(),
        })
    }
}

/// Reads until `buf` is full or the stream ends; returns how much was read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, PacketError> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PacketError::Io(e)),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> Result<Vec<Packet>, PacketError> {
        let mut input = bytes;
        let mut out = Vec::new();
        while let Some(p) = Packet::read_from(&mut input)? {
            out.push(p);
        }
        Ok(out)
    }

    #[test]
    fn concatenated_packets_read_back_in_order() {
        let a = Packet::Mls(vec![1, 2, 3]);
        let b = Packet::Join {
            welcome: vec![9; 300],
            ratchet_tree: vec![7; 70_000],
        };
        let mut stream = a.encode().unwrap();
        stream.extend(b.encode().unwrap());
        assert_eq!(read_all(&stream).unwrap(), vec![a, b]);
    }

    #[test]
    fn encoding_is_pinned() {
        assert_eq!(
            hex::encode(Packet::Mls(vec![0xab]).encode().unwrap()),
            "4d4c5343010100000001ab"
        );
    }

    #[test]
    fn truncated_packet_is_an_error_not_an_end() {
        let bytes = Packet::Mls(vec![5; 100]).encode().unwrap();
        for cut in [3, HEADER_LEN, 50] {
            assert!(matches!(
                read_all(&bytes[..cut]),
                Err(PacketError::Truncated)
            ));
        }
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut bytes = Packet::Mls(vec![]).encode().unwrap();
        bytes[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(read_all(&bytes), Err(PacketError::TooLarge(_))));
    }

    #[test]
    fn oversized_body_is_refused_when_writing_too() {
        assert!(matches!(
            Packet::Mls(vec![0; MAX_BODY + 1]).encode(),
            Err(PacketError::TooLarge(_))
        ));
    }

    #[test]
    fn random_bytes_are_refused() {
        assert!(matches!(
            read_all(b"hello world, not a packet"),
            Err(PacketError::BadMagic)
        ));
        let mut bytes = Packet::Mls(vec![1]).encode().unwrap();
        bytes[5] = 9;
        assert!(matches!(read_all(&bytes), Err(PacketError::UnknownKind(9))));
    }
}
