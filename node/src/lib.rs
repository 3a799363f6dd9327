//! The mlschat peer node.
//!
//! A peer holds one device's identity and the MLS state of every group it is in, durably, in one
//! SQLite file per profile (optionally encrypted at rest). It turns commands ("add Bob", "send
//! hi") and incoming MLS messages into outgoing MLS messages and a stored history.
//!
//! # Layout
//! - [`identity`]: user/device names, signature keys, fingerprints and safety numbers.
//! - [`engine`]: the MLS group engine over OpenMLS; no I/O, storage chosen by the caller.
//! - [`kind`]: the one [`kind::ErrorKind`] of every error (exit codes and API kinds follow it).
//! - [`store`]: the profile's SQLite database: encryption, schema, transactions.
//! - [`profile`]: one device's state; every operation runs the engine inside one transaction.
//! - [`sync`]: the sync core, without I/O: every rule for working through a log that orders
//!   our groups (commits, catch-up, re-encryption, the outbox, joins), as requests and answers.
//! - [`driver`]: the sync core driven over QUIC to our delivery node.
//! - [`daemon`]: the long-running node: keeps the connection, applies pushes, serves the local
//!   JSON-RPC API (Unix socket and stdio) with numbered, resumable events.

pub mod clock;
pub mod daemon;
pub mod direct;
pub mod discovery;
pub mod driver;
pub mod engine;
pub mod identity;
pub mod kind;
pub mod profile;
pub mod replica;
pub mod schema;
pub mod sealed_tree;
pub mod store;
pub mod sync;
