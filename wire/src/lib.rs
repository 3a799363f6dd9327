//! The mlschat protocol: the frames peers and delivery nodes exchange over QUIC.
//!
//! The core is codec and constants only: it knows nothing of sockets, async runtimes, databases
//! or MLS state. `PROTOCOL.md` beside it is the specification, byte for byte. The `quic` feature
//! adds the transport every party shares: TLS configurations and a client connection.
//!
//! # Layout
//! - [`frame`]: version, length prefix and size limit of every frame.
//! - [`messages`]: requests, responses, pushes and error codes.
//! - [`content`]: the plaintext of an application message (versioned, typed, with its post id).
//! - [`settings`]: a group's shared name, topic and admins (a group-context extension).
//! - [`notice`]: an admin's signed word, left in a group's log, that its history after an epoch
//!   is a fork the admins abandoned.
//! - [`auth`]: the transcript a client signs to authenticate, bound to the TLS session.
//! - [`token`]: per-epoch group tokens, which let the node check posting rights blind.
//! - [`session`]: a connection's authentication state on the serving side, without I/O.
//! - [`packet`]: how MLS messages travel through files and pipes, when no connection does.
//! - `quic` (feature): TLS 1.3 configurations, certificate pinning, the client connection.

pub mod auth;
pub mod content;
pub mod frame;
pub mod messages;
pub mod notice;
pub mod packet;
pub mod session;
pub mod settings;
pub mod token;

#[cfg(feature = "quic")]
pub mod quic;

pub use frame::{FrameError, MAX_FRAME, VERSION};
pub use messages::*;

/// The QUIC ALPN protocol id (TLS 1.3 only, 0-RTT off).
pub const ALPN: &[u8] = b"mlschat/1";
