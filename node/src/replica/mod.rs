//! A member's replica of a node-less group's log (issue 21; ARCHITECTURE.md, "Without a
//! node"): the group-log contract (`mlschat_grouplog::GroupLog`) on the profile's own SQLite
//! database, so that a peer keeps and serves its node-less groups by the same rules as a
//! delivery node, and in the same transactions as its group state.
//!
//! The rows and their rules are functions of a [`Connection`] the caller holds a transaction
//! on (`log.rs`: groups, log, trees, mailboxes; `key_packages.rs`: the KeyPackages a member
//! serves and the claims its Welcomes use). [`SqliteLog`] wraps a database of its own in the
//! contract's traits, one transaction per call: what the conformance suite runs on
//! (`node/tests/replica.rs`).

mod key_packages;
mod log;

pub use key_packages::*;
pub use log::*;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use mlschat_grouplog::keypackages::{self, ClaimRecord, Claimed, KeyPackage, Stock, StoreError};
use mlschat_grouplog::{
    ClientId, Committed, Cuts, Entry, GroupLog, Judged, NewCommit, NewMessage, Page, Posted,
    Purged, TokenHash, UnixTime, Welcome,
};
use rusqlite::Connection;

use crate::store::Store;

/// The replica's tables, one migration of the profile's database.
pub(crate) const SCHEMA: &str = r#"
-- A node-less group's log as this member keeps it (replica/log.rs): what a delivery node keeps.
CREATE TABLE replica_groups (
    group_id BLOB PRIMARY KEY,
    epoch INTEGER NOT NULL,
    -- the sequence number the next entry takes (not reused after a purge)
    next_seq INTEGER NOT NULL
);
CREATE TABLE replica_tokens (
    group_id BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    token_hash BLOB NOT NULL,
    PRIMARY KEY (group_id, epoch)
);
CREATE TABLE replica_log (
    group_id BLOB NOT NULL,
    seq INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    message BLOB NOT NULL,
    at INTEGER NOT NULL,
    post_key BLOB,
    PRIMARY KEY (group_id, seq)
);
CREATE UNIQUE INDEX replica_log_by_post_key ON replica_log (group_id, post_key)
    WHERE post_key IS NOT NULL;
CREATE INDEX replica_log_by_time ON replica_log (at);
CREATE TABLE replica_trees (
    group_id BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    access_hash BLOB NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (group_id, epoch)
);
CREATE TABLE replica_mailbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner BLOB NOT NULL,
    group_id BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    welcome BLOB NOT NULL,
    tree_key BLOB NOT NULL,
    at INTEGER NOT NULL,
    -- the poster, when the Welcome came from a claim of a last-resort KeyPackage
    last_resort_from BLOB
);
CREATE INDEX replica_mailbox_by_owner ON replica_mailbox (owner, id);
-- KeyPackages served to peers, and those claimed from them (replica/key_packages.rs).
CREATE TABLE replica_key_packages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner BLOB NOT NULL,
    reference BLOB NOT NULL,
    message BLOB NOT NULL,
    not_after INTEGER NOT NULL
);
CREATE INDEX replica_key_packages_by_owner ON replica_key_packages (owner, id);
-- Every reference ever published, so that a package published again is not claimable twice.
CREATE TABLE replica_key_package_refs (
    owner BLOB NOT NULL,
    reference BLOB NOT NULL,
    PRIMARY KEY (owner, reference)
);
CREATE TABLE replica_last_resort (
    owner BLOB PRIMARY KEY,
    reference BLOB NOT NULL,
    message BLOB NOT NULL,
    not_after INTEGER NOT NULL
);
CREATE TABLE replica_claims (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    owner BLOB NOT NULL,
    claimer BLOB NOT NULL,
    at INTEGER NOT NULL,
    last_resort INTEGER NOT NULL,
    reference BLOB NOT NULL,
    -- a Welcome used this claim
    welcomed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX replica_claims_by_owner ON replica_claims (owner, seq);
"#;

/// A failed replica (not a refusal): its database.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("replica: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("replica: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the replica's lock is poisoned")]
    Poisoned,
}

impl From<ReplicaError> for StoreError {
    fn from(e: ReplicaError) -> Self {
        StoreError(e.to_string())
    }
}

/// A replica on a database of its own, one transaction per call: the contract's traits over
/// the functions the profile calls inside its own transactions.
#[derive(Debug)]
pub struct SqliteLog {
    store: Mutex<Store>,
}

impl SqliteLog {
    /// A fresh replica database in `dir`.
    pub fn create(dir: &Path) -> Result<Self, ReplicaError> {
        Ok(Self {
            store: Mutex::new(Store::create(dir, None)?),
        })
    }

    fn store(&self) -> Result<MutexGuard<'_, Store>, ReplicaError> {
        self.store.lock().map_err(|_| ReplicaError::Poisoned)
    }

    /// Runs `f` in one write transaction of the replica's database.
    fn write<R>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, ReplicaError>,
    ) -> Result<R, ReplicaError> {
        let store = self.store()?;
        store.transaction(|| f(store.conn()))
    }
}

impl GroupLog for SqliteLog {
    type Error = ReplicaError;

    async fn create_group(
        &self,
        group_id: &[u8],
        token_hash: &TokenHash,
        _now: UnixTime,
    ) -> Judged<(), ReplicaError> {
        self.write(|conn| Ok(create_group(conn, group_id, token_hash)?))
    }

    async fn post_commit(
        &self,
        commit: &NewCommit,
        mailbox_quota: u64,
        now: UnixTime,
    ) -> Judged<Committed, ReplicaError> {
        self.write(|conn| Ok(post_commit(conn, commit, mailbox_quota, now)?))
    }

    async fn post_messages(
        &self,
        posts: &[NewMessage],
        now: UnixTime,
    ) -> Result<Vec<Result<Posted, mlschat_grouplog::Refused>>, ReplicaError> {
        self.write(|conn| Ok(post_messages(conn, posts, now)?))
    }

    async fn post_notice(
        &self,
        group_id: &[u8],
        token_hash: &TokenHash,
        notice: &[u8],
        now: UnixTime,
    ) -> Judged<Posted, ReplicaError> {
        self.write(|conn| Ok(post_notice(conn, group_id, token_hash, notice, now)?))
    }

    async fn fetch_group(
        &self,
        group_id: &[u8],
        token_hash: &TokenHash,
        after_seq: u64,
        page: Page,
    ) -> Judged<Vec<Entry>, ReplicaError> {
        let store = self.store()?;
        Ok(fetch_group(
            store.conn(),
            group_id,
            token_hash,
            after_seq,
            page,
        )?)
    }

    async fn fetch_tree(
        &self,
        group_id: &[u8],
        epoch: u64,
        access_hash: &[u8; 32],
    ) -> Result<Option<Vec<u8>>, ReplicaError> {
        let store = self.store()?;
        Ok(fetch_tree(store.conn(), group_id, epoch, access_hash)?)
    }

    async fn fetch_mailbox(
        &self,
        owner: &ClientId,
        after: u64,
        page: Page,
    ) -> Result<Vec<Welcome>, ReplicaError> {
        let store = self.store()?;
        Ok(fetch_mailbox(store.conn(), owner, after, page)?)
    }

    async fn ack_mailbox(&self, owner: &ClientId, up_to: u64) -> Result<u64, ReplicaError> {
        self.write(|conn| Ok(ack_mailbox(conn, owner, up_to)?))
    }

    async fn purge(&self, cuts: Cuts) -> Result<Purged, ReplicaError> {
        self.write(|conn| Ok(purge(conn, cuts)?))
    }
}

impl keypackages::Store for SqliteLog {
    async fn publish(
        &self,
        owner: &ClientId,
        one_time: Vec<KeyPackage>,
        last_resort: Option<KeyPackage>,
    ) -> Result<(), StoreError> {
        Ok(self.write(|conn| Ok(publish(conn, owner, &one_time, last_resort.as_ref())?))?)
    }

    async fn claim(
        &self,
        owner: &ClientId,
        claimer: &ClientId,
        now: UnixTime,
        one_time: bool,
    ) -> Result<Option<Claimed>, StoreError> {
        Ok(self.write(|conn| Ok(claim(conn, owner, claimer, now, one_time)?))?)
    }

    async fn stock(&self, owner: &ClientId, now: UnixTime) -> Result<Stock, StoreError> {
        let store = self.store()?;
        Ok(stock(store.conn(), owner, now).map_err(ReplicaError::from)?)
    }

    async fn claim_log(
        &self,
        owner: &ClientId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<ClaimRecord>, StoreError> {
        let store = self.store()?;
        Ok(claim_log(store.conn(), owner, after, limit).map_err(ReplicaError::from)?)
    }

    async fn purge_expired(&self, now: UnixTime) -> Result<u64, StoreError> {
        Ok(self.write(|conn| Ok(purge_expired(conn, now)?))?)
    }
}
