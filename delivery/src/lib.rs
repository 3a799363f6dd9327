//! The mlschat delivery node: what an organisation runs for its members who are offline.
//!
//! It keeps only opaque bytes (KeyPackages, Welcomes, MLS ciphertext), gives each group one
//! order of commits, and never sees plaintext, keys or member lists (`wire/PROTOCOL.md` §9).
//!
//! # Layout
//! - [`storage`]: Postgres, or SQLite as the embedded default; schema migrations at start-up;
//!   the KeyPackage directory's store.
//!
//! Being built (issue 3): the QUIC server, group logs, mailboxes, federation, admin HTTP.

pub mod storage;
