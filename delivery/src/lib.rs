//! The mlschat delivery node: what an organisation runs for its members who are offline.
//!
//! It keeps only opaque bytes (KeyPackages, Welcomes, MLS ciphertext), gives each group one
//! order of commits, and never sees plaintext, keys or member lists (`wire/PROTOCOL.md` §9).
//!
//! # Layout
//! - [`storage`]: Postgres, or SQLite as the embedded default; schema migrations at start-up;
//!   the KeyPackage store, group logs (one commit per epoch), mailboxes, clients.
//! - [`server`]: the QUIC server: reads requests, answers each by its family (auth, groups by
//!   the group log's own rules in `mlschat_grouplog::host`, KeyPackages).
//! - [`appender`]: group commit: concurrent posts share one transaction.
//! - [`fanout`]: which connections hear of a new log entry or Welcome; pushes encoded once.
//! - [`announce`]: pushes across node processes on one Postgres (LISTEN/NOTIFY).
//! - [`guard`]: connection limits, per-client and per-address rates and quotas, refusals.
//! - [`certificate`]: the node's certificate, self-signed on first start.
//! - [`config`]: defaults, TOML file, `MLSCHAT__SECTION__KEY` environment.
//! - [`admin`]: the admin HTTP port, closed to web pages, changes behind the admin token.
//! - [`run`]: start (database, certificate, QUIC, admin HTTP) and drain on shutdown.
//!
//! Not built yet: federation.

pub mod admin;
pub mod announce;
pub mod appender;
pub mod certificate;
pub mod config;
pub mod fanout;
pub mod guard;
pub mod run;
pub mod server;
pub mod storage;

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Seconds since the Unix epoch: the node's one clock for what it stores (retention, claims).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
