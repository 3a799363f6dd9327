//! The KeyPackage directory of a delivery node.
//!
//! Clients publish a batch of one-time KeyPackages and one last-resort KeyPackage; others claim
//! them to add the owner to a group. The rules, whichever store holds the packages:
//! - a claim returns exactly one package, and never the same one-time package twice, also under
//!   many concurrent claimers;
//! - the last-resort package is handed out only when no unexpired one-time package is left;
//! - expired packages are never handed out;
//! - the owner sees its stock and a log of who claimed what;
//! - claims are rate-limited per claimer, per owner (one-time packages) and per pair of
//!   claimer and owner ([`ClaimLimits`]).
//!
//! The packages are opaque here: the caller validates them (signature, owner, lifetime) and
//! passes what it learned. No I/O of its own: time is a parameter, storage a trait.
//!
//! # Layout
//! - [`Store`]: what a storage backend must do atomically; [`MemoryStore`] implements it.
//! - [`Directory`]: the rules above on top of any store, with the per-claimer [`RateLimiter`].
//! - `conformance` (feature `conformance`): the one test suite every store must pass.

mod directory;
mod memory;
mod rate_limit;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use directory::{ClaimError, ClaimLimits, Directory};
pub use memory::MemoryStore;
pub use rate_limit::{RateLimit, RateLimiter};

use std::future::Future;

pub use mlschat_wire::ClientId;

/// Seconds since the Unix epoch.
pub type UnixTime = u64;

/// A validated KeyPackage, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPackage {
    /// Its KeyPackageRef (RFC 9420 §5.2): unique, used to ignore re-publication.
    pub reference: Vec<u8>,
    /// The `MLSMessage` bytes handed to claimers.
    pub message: Vec<u8>,
    /// The end of its lifetime; it is not handed out after this.
    pub not_after: UnixTime,
}

/// What a claim hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub key_package: KeyPackage,
    pub last_resort: bool,
}

/// An owner's unclaimed, unexpired packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stock {
    pub one_time: u32,
    pub last_resort: bool,
}

/// One claim, as the owner sees it in its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRecord {
    /// Increasing: later claims have larger numbers (not necessarily consecutive).
    pub seq: u64,
    pub claimer: ClientId,
    pub at: UnixTime,
    pub last_resort: bool,
    /// The claimed package's reference: its owner can tell which private key went out.
    pub reference: Vec<u8>,
}

/// A claim record as its owner reads it on the wire.
impl From<ClaimRecord> for mlschat_wire::ClaimLogEntry {
    fn from(r: ClaimRecord) -> Self {
        mlschat_wire::ClaimLogEntry {
            seq: r.seq,
            claimer: r.claimer,
            at: r.at,
            last_resort: mlschat_wire::Flag::from(r.last_resort),
            reference: r.reference.into(),
        }
    }
}

/// A storage backend failed.
#[derive(Debug, thiserror::Error)]
#[error("KeyPackage store: {0}")]
pub struct StoreError(pub String);

/// Storage for the directory. Each method is one atomic step: in particular `claim` must hand
/// out a one-time package to at most one caller, however many call at once.
pub trait Store: Send + Sync {
    /// Adds one-time packages (ignoring references already stored) and, if given, replaces the
    /// owner's last-resort package.
    fn publish(
        &self,
        owner: &ClientId,
        one_time: Vec<KeyPackage>,
        last_resort: Option<KeyPackage>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes one of the owner's one-time packages unexpired at `now` (oldest first) if
    /// `one_time` allows, or else returns its last-resort package if unexpired, and logs the
    /// claim; `None` if neither.
    fn claim(
        &self,
        owner: &ClientId,
        claimer: &ClientId,
        now: UnixTime,
        one_time: bool,
    ) -> impl Future<Output = Result<Option<Claimed>, StoreError>> + Send;

    fn stock(
        &self,
        owner: &ClientId,
        now: UnixTime,
    ) -> impl Future<Output = Result<Stock, StoreError>> + Send;

    /// Claim records with `seq > after`, oldest first, at most `limit`.
    fn claim_log(
        &self,
        owner: &ClientId,
        after: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ClaimRecord>, StoreError>> + Send;

    /// Deletes packages expired at `now`; returns how many.
    fn purge_expired(&self, now: UnixTime) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
