//! The profile database: one SQLite file holding OpenMLS's state and ours, in WAL mode,
//! optionally encrypted as a whole with SQLCipher.
//!
//! Encryption covers the whole file because OpenMLS writes private keys into plain columns of its
//! own tables. The SQLCipher key is derived from the passphrase with Argon2id; the salt and cost
//! parameters sit beside the database in `kdf.json` (they are not secret).

use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use openmls_sqlite_storage::{Codec, SqliteStorageProvider};
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// OpenMLS's state is serialised as MessagePack. OpenMLS rewrites whole blobs on every operation
/// (the tree on every merge, the message secrets on every message), and JSON spells each key
/// byte as a decimal number: MessagePack is several times smaller and faster to write. It is
/// self-describing, which OpenMLS's untagged enums and tls_codec's serde visitors need.
#[derive(Debug, Default)]
pub struct MsgPackCodec;

impl Codec for MsgPackCodec {
    type Error = CodecError;

    fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, Self::Error> {
        rmp_serde::to_vec(value).map_err(CodecError::Encode)
    }

    fn from_slice<T: serde::de::DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        rmp_serde::from_slice(slice).map_err(CodecError::Decode)
    }
}

/// A stored OpenMLS value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encoding OpenMLS state: {0}")]
    Encode(rmp_serde::encode::Error),
    #[error("decoding OpenMLS state: {0}")]
    Decode(rmp_serde::decode::Error),
}

/// The OpenMLS storage provider over a profile's connection.
pub type MlsStorage<'c> = SqliteStorageProvider<MsgPackCodec, &'c Connection>;

const DB_FILE: &str = "mlschat.db";
const KDF_FILE: &str = "kdf.json";
/// Held (an OS lock) by the one process that writes the profile; it names that process.
const LOCK_FILE: &str = "profile.lock";

/// Our schema version, kept in SQLite's `user_version`: the number of [`MIGRATIONS`] applied.
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Each step brings the schema from version `i` to `i + 1`, in one transaction.
const MIGRATIONS: [&str; 11] = [
    SCHEMA,
    ONLINE,
    SYNC,
    SEALED_TREES,
    TRUST,
    LEAVING,
    ORDER_ASKED,
    INSIDERS,
    ACKNOWLEDGED,
    crate::replica::SCHEMA,
    DISCOVERY,
];

const SCHEMA: &str = r#"
CREATE TABLE profile (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    user TEXT NOT NULL,
    device TEXT NOT NULL,
    signature_public BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE groups (
    group_id BLOB PRIMARY KEY,
    name TEXT UNIQUE,
    -- 'active', or why we are no longer in it: 'removed'
    state TEXT NOT NULL DEFAULT 'active',
    -- a joiner refreshes its leaf before its first message (see engine docs)
    needs_self_update INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
-- What people see: decrypted messages and membership events, in the order we processed them.
-- seq is the rowid: rows are never deleted, so it only grows (AUTOINCREMENT would cost a
-- write to sqlite_sequence on every message).
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY,
    group_id BLOB NOT NULL REFERENCES groups(group_id),
    epoch INTEGER NOT NULL,
    sender TEXT NOT NULL,
    sender_fingerprint BLOB NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('text', 'event')),
    body BLOB NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX messages_by_group ON messages(group_id, seq);
-- Hashes of every MLS message we processed or sent, so a duplicate is dropped before MLS sees it.
CREATE TABLE processed (
    message_hash BLOB PRIMARY KEY,
    at INTEGER NOT NULL
) WITHOUT ROWID;
-- Packets we made, kept until they are written out, so a crash between our commit and its
-- delivery loses nothing: `mlschat outbox` writes what is left. Rows go once written out.
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY,
    group_id BLOB NOT NULL REFERENCES groups(group_id),
    -- 'group' (current members) or 'joiners' (members being added)
    audience TEXT NOT NULL CHECK (audience IN ('group', 'joiners')),
    packet BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
-- The KeyPackages we handed out; OpenMLS holds their private keys.
CREATE TABLE key_packages (
    key_package_ref BLOB PRIMARY KEY,
    last_resort INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    consumed_at INTEGER
);
"#;

/// Version 2: working through a delivery node (`profile::online`).
const ONLINE: &str = r#"
-- Our delivery node, where our groups' logs and our mailbox live. At most one.
CREATE TABLE home (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    address TEXT NOT NULL,
    -- SHA-256 of its certificate, pinned
    fingerprint BLOB NOT NULL,
    -- the operator's invite token, if registration needs one
    invite BLOB NOT NULL,
    -- the last mailbox entry we processed
    mailbox_seq INTEGER NOT NULL DEFAULT 0
);
-- People we can add by name, from their invite codes.
CREATE TABLE contacts (
    name TEXT PRIMARY KEY,
    signature_key BLOB NOT NULL,
    address TEXT NOT NULL,
    node_fingerprint BLOB NOT NULL,
    -- why this contact needs checking (their credential changed), or NULL
    flagged TEXT,
    added_at INTEGER NOT NULL
);
-- Groups whose log is on our delivery node, with the last log entry we processed.
ALTER TABLE groups ADD COLUMN hosted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE groups ADD COLUMN log_seq INTEGER NOT NULL DEFAULT 0;
-- Our commit, made but not yet ordered by the node: kept until it is accepted (then merged) or
-- loses the epoch to another (then dropped and the intent made again at the new epoch).
CREATE TABLE pending_commits (
    group_id BLOB PRIMARY KEY REFERENCES groups(group_id),
    epoch INTEGER NOT NULL,
    message BLOB NOT NULL,
    welcome BLOB,
    ratchet_tree BLOB,
    -- client ids (32 bytes each) of the members it adds
    recipients BLOB NOT NULL,
    next_token_hash BLOB NOT NULL,
    -- what we meant, as JSON, to make again if another commit wins the epoch
    intent TEXT NOT NULL
);
-- An outbox row for a text keeps the text, to encrypt again if its epoch ends before the node
-- orders it, and its history row, which takes the node's order once the node takes it.
ALTER TABLE outbox ADD COLUMN text BLOB;
ALTER TABLE outbox ADD COLUMN history_seq INTEGER;
-- For groups on a delivery node: the log position a history row came from (0 for our own
-- create or join, NULL while our own text waits for the node), so that every member shows the
-- group in the node's one order.
ALTER TABLE messages ADD COLUMN log_seq INTEGER;
"#;

/// Version 3: the sync core (`sync`): post ids, durable intents, broken groups, invitations.
const SYNC: &str = r#"
-- A text carries the id its sender posted it under (wire `content`); a second copy from the
-- same sender is dropped by it, even when it was encrypted again.
ALTER TABLE messages ADD COLUMN post_id BLOB;
CREATE UNIQUE INDEX messages_by_post ON messages (group_id, sender_fingerprint, post_id)
    WHERE post_id IS NOT NULL;
-- Outbox numbers are never reused (AUTOINCREMENT): the sync core keys what waits on a queued
-- text by its number, and an answer may come after the row is gone.
CREATE TABLE outbox_numbered (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id BLOB NOT NULL REFERENCES groups(group_id),
    audience TEXT NOT NULL CHECK (audience IN ('group', 'joiners')),
    packet BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    text BLOB,
    history_seq INTEGER,
    post_id BLOB
);
INSERT INTO outbox_numbered (seq, group_id, audience, packet, created_at, text, history_seq)
    SELECT seq, group_id, audience, packet, created_at, text, history_seq FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_numbered RENAME TO outbox;
-- Changes we asked of a group (add, remove, update) and not yet carried out, in order. The one
-- being committed moves to pending_commits (with its seq) and comes back if it loses its epoch.
-- AUTOINCREMENT: a number is never reused, since an intent that lost its epoch comes back
-- under its own number (at the head of the queue).
CREATE TABLE intents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id BLOB NOT NULL REFERENCES groups(group_id),
    intent TEXT NOT NULL
);
ALTER TABLE pending_commits ADD COLUMN intent_seq INTEGER;
-- Why we cannot go on in a group (a commit we could not process, or it continues in another
-- group), or NULL.
ALTER TABLE groups ADD COLUMN broken TEXT;
-- A broken group is started again as a new group with the same members: the old one names
-- the new (replaced_by), the new one the old (continues) until it has announced it.
ALTER TABLE groups ADD COLUMN replaced_by BLOB;
ALTER TABLE groups ADD COLUMN continues BLOB;
-- Announcements that a group continues one we are not in yet (its Welcome still waits): applied
-- when we join it, if the announcer was a member there.
CREATE TABLE announcements (
    old BLOB NOT NULL,
    new BLOB NOT NULL,
    sender BLOB NOT NULL,
    PRIMARY KEY (old, new)
);
-- Welcomes from our mailbox that we could not join: kept, retried and reported, never dropped.
CREATE TABLE invitations (
    mailbox_id INTEGER PRIMARY KEY,
    group_id BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    welcome BLOB NOT NULL,
    failure TEXT NOT NULL,
    attempts INTEGER NOT NULL
);
"#;

/// Version 4: trees for joiners sealed from the delivery node (`sealed_tree`); the claim log
/// read (`profile::key_packages`).
const SEALED_TREES: &str = r#"
-- A pending commit that adds members keeps its tree sealed (ratchet_tree), the tree secret
-- sealed to each recipient (TLS vector of opaque, in recipient order) and the access hash.
-- One made before this version has none: its joiners cannot open its tree, and keep the
-- invitation (listed by `status`) until they are added again.
ALTER TABLE pending_commits ADD COLUMN tree_keys BLOB;
ALTER TABLE pending_commits ADD COLUMN tree_access_hash BLOB;
-- The tree secret of an invitation, opened from its mailbox entry before a join is tried
-- (joining deletes the KeyPackage it was sealed to).
ALTER TABLE invitations ADD COLUMN tree_secret BLOB;
-- Who claimed our KeyPackages, from the node's claim log (read up to claim_log_seq): to tell
-- our user of an abnormal drain, and to delete the private keys no Welcome used.
ALTER TABLE home ADD COLUMN claim_log_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE key_packages ADD COLUMN claimed_at INTEGER;
ALTER TABLE key_packages ADD COLUMN forgotten_at INTEGER;
CREATE TABLE claims (
    seq INTEGER PRIMARY KEY,
    claimer BLOB NOT NULL,
    at INTEGER NOT NULL,
    last_resort INTEGER NOT NULL
);
-- What our user should know about our account, newest last.
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    -- 'drain' or 'claimer': one of each kind an hour
    kind TEXT NOT NULL,
    text TEXT NOT NULL
);
"#;

/// Version 5: trust (`profile::contacts`): invitations from strangers wait as requests, contacts
/// can be verified, a changed key can be reviewed.
const TRUST: &str = r#"
-- Who sent the Welcome (the member who added us), once it could be opened.
ALTER TABLE invitations ADD COLUMN inviter TEXT;
ALTER TABLE invitations ADD COLUMN inviter_fingerprint BLOB;
-- 'waiting': from someone who is not a contact, for our user to accept or decline;
-- 'accepted': our user said yes (joined as soon as it can be); NULL: no decision needed.
ALTER TABLE invitations ADD COLUMN request TEXT;
-- When our user compared safety numbers with this contact, or NULL.
ALTER TABLE contacts ADD COLUMN verified_at INTEGER;
-- A key offered for a flagged contact (a new invite code), to accept on review.
ALTER TABLE contacts ADD COLUMN offered_key BLOB;
"#;

/// Version 6: leaving a group on a delivery node (`profile::hosted`).
const LEAVING: &str = r#"
-- 1 once our user asked to leave: our leave proposal is made again at each new epoch until a
-- member's commit removes us.
ALTER TABLE groups ADD COLUMN leaving INTEGER NOT NULL DEFAULT 0;
"#;

/// Version 7: a group's texts and changes go out in the order asked (`profile::TextsMark`).
const ORDER_ASKED: &str = r#"
-- The outbox rows queued before the change was asked (those up to this number) go before it.
-- 0: before every text, as every change went until this version.
ALTER TABLE intents ADD COLUMN texts_before INTEGER NOT NULL DEFAULT 0;
"#;

/// Version 8: rules against a member with a modified client. An announced continuation is
/// followed only for a group broken for us at the point it names, from one of its admins,
/// keeping its settings and members (`profile::hosted::judge_continuation`): until then it waits
/// here, and one refused says why. An admin whose group breaks leaves a notice in its log for
/// whoever went on past that point (`profile::notices`).
const INSIDERS: &str = r#"
-- Announcements of older versions named no point of the old group: they cannot be checked.
DELETE FROM announcements;
ALTER TABLE announcements ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE announcements ADD COLUMN authenticator BLOB NOT NULL DEFAULT X'';
-- The new group's members when the announcement was made (their fingerprints, 32 bytes each):
-- it must keep every member of the broken group, whoever leaves it later.
ALTER TABLE announcements ADD COLUMN members BLOB NOT NULL DEFAULT X'';
-- Its settings then (encoded; empty for none): they must be the broken group's.
ALTER TABLE announcements ADD COLUMN settings BLOB NOT NULL DEFAULT X'';
-- Why it was not followed; NULL while it waits for the old group to break.
ALTER TABLE announcements ADD COLUMN refused TEXT;
-- Our signed notice that the group is a fork after the commit that broke it, still to post.
ALTER TABLE groups ADD COLUMN notice BLOB;
-- 1: an admin's notice said that our group is a fork they left; never started again by us.
ALTER TABLE groups ADD COLUMN abandoned INTEGER NOT NULL DEFAULT 0;
"#;

const ACKNOWLEDGED: &str = r#"
-- 1: our user has seen the alert (`mlschat status --ack`); it is no longer listed.
ALTER TABLE alerts ADD COLUMN acknowledged INTEGER NOT NULL DEFAULT 0;
-- 1: our user declined the invitation; we joined only to leave, and the group is not shown.
ALTER TABLE groups ADD COLUMN declined INTEGER NOT NULL DEFAULT 0;
-- When we saw each member added (fingerprint): one who has not joined after the invitation
-- expiry is removed by the group's first admin.
CREATE TABLE invitees (
    group_id BLOB NOT NULL REFERENCES groups(group_id),
    fingerprint BLOB NOT NULL,
    since INTEGER NOT NULL,
    PRIMARY KEY (group_id, fingerprint)
);
-- The commit (SHA-256 of its message) that ended each epoch of a group kept in files, as we
-- applied it: when another commit for that epoch arrives, the lower hash wins on every side.
CREATE TABLE applied_commits (
    group_id BLOB NOT NULL REFERENCES groups(group_id),
    epoch INTEGER NOT NULL,
    commit_hash BLOB NOT NULL,
    PRIMARY KEY (group_id, epoch)
);
"#;

const DISCOVERY: &str = r#"
-- Our X25519 discovery secret (discovery.rs), made when first needed; and each contact's
-- public discovery key, from their invite code (NULL: their code had none).
ALTER TABLE profile ADD COLUMN discovery_key BLOB;
ALTER TABLE contacts ADD COLUMN discovery_key BLOB;
"#;

/// What can go wrong opening or writing the profile database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// There is no profile at this path yet.
    #[error("no profile at {0} (run `mlschat init`)")]
    NotFound(PathBuf),
    /// A profile already exists where one was to be created.
    #[error("a profile already exists at {0}")]
    AlreadyExists(PathBuf),
    /// The profile is encrypted and no passphrase was given.
    #[error(
        "this profile is encrypted: give its passphrase (MLSCHAT_PASSPHRASE or --passphrase-file)"
    )]
    PassphraseRequired,
    /// The passphrase does not open the database.
    #[error("wrong passphrase, or the database is corrupt")]
    WrongPassphrase,
    /// The file was written by a newer mlschat.
    #[error("profile schema version {0} is newer than this mlschat understands")]
    NewerSchema(i64),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("profile files: {0}")]
    Io(#[from] std::io::Error),
    #[error("key derivation: {0}")]
    Kdf(String),
    #[error("OpenMLS storage migration: {0}")]
    Migration(String),
    /// Another process writes this profile (a daemon, or another verb).
    #[error("{}", in_use_message(*.0))]
    InUse(Option<u32>),
}

fn in_use_message(pid: Option<u32>) -> String {
    let who = match pid {
        Some(pid) => format!("process {pid}"),
        None => "another process".to_owned(),
    };
    format!("this profile is in use by {who} (a daemon, or another mlschat command)")
}

/// The OS lock that makes a process the profile's one writer, for as long as it is held: two
/// writers would each keep a group's state in memory and overwrite the other's. The kernel
/// drops it when the process dies, so a crash never leaves the profile locked.
#[derive(Debug)]
struct WriterLock {
    _file: std::fs::File,
}

impl WriterLock {
    fn take(dir: &Path) -> Result<Self, StoreError> {
        use std::io::{Read, Seek, Write};
        let path = dir.join(LOCK_FILE);
        let mut file = private_file(&path)?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)?;
                file.rewind()?;
                write!(file, "{}", std::process::id())?;
                Ok(Self { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                Err(StoreError::InUse(holder.trim().parse().ok()))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
        }
    }
}

/// Opens (creating it if need be) a file only its owner may read.
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Argon2id parameters and salt for a profile's key, stored in clear beside the database.
#[derive(Debug, Serialize, Deserialize)]
struct KdfParams {
    algorithm: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
}

impl KdfParams {
    /// OWASP's first recommended Argon2id setting (19 MiB, 2 passes): ~50 ms here, so every CLI
    /// call pays little, while each guess costs an attacker the same.
    fn fresh() -> Self {
        let mut salt = [0u8; 16];
        getrandom(&mut salt);
        Self {
            algorithm: "argon2id".into(),
            m_cost_kib: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
            salt: hex::encode(salt),
        }
    }

    fn derive_key(&self, passphrase: &str) -> Result<[u8; 32], StoreError> {
        if self.algorithm != "argon2id" {
            return Err(StoreError::Kdf(format!(
                "unknown algorithm {}",
                self.algorithm
            )));
        }
        let salt = hex::decode(&self.salt).map_err(|e| StoreError::Kdf(e.to_string()))?;
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| StoreError::Kdf(e.to_string()))?;
        let mut key = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase.as_bytes(), &salt, &mut key)
            .map_err(|e| StoreError::Kdf(e.to_string()))?;
        Ok(key)
    }
}

pub(crate) fn getrandom(buf: &mut [u8]) {
    use openmls_traits::random::OpenMlsRand;
    let bytes = openmls_rust_crypto::RustCrypto::default()
        .random_vec(buf.len())
        .expect("the OS random source is available");
    buf.copy_from_slice(&bytes);
}

/// An open profile database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    dir: PathBuf,
    _writer: WriterLock,
}

impl Store {
    /// Creates a new profile database in `dir`, encrypted when a passphrase is given.
    pub fn create(dir: &Path, passphrase: Option<&str>) -> Result<Self, StoreError> {
        if dir.join(DB_FILE).exists() {
            return Err(StoreError::AlreadyExists(dir.to_owned()));
        }
        std::fs::create_dir_all(dir)?;
        restrict_permissions(dir)?;
        let key = match passphrase {
            Some(passphrase) => {
                let params = KdfParams::fresh();
                let key = params.derive_key(passphrase)?;
                std::fs::write(
                    dir.join(KDF_FILE),
                    serde_json::to_vec_pretty(&params).expect("plain struct"),
                )?;
                Some(key)
            }
            None => None,
        };
        Self::open_with_key(dir, key)
    }

    /// Fails with [`StoreError::NotFound`] unless a profile exists in `dir`.
    pub fn exists(dir: &Path) -> Result<(), StoreError> {
        match dir.join(DB_FILE).exists() {
            true => Ok(()),
            false => Err(StoreError::NotFound(dir.to_owned())),
        }
    }

    /// Whether a process holds the profile in `dir` as its writer now.
    pub fn in_use(dir: &Path) -> bool {
        matches!(WriterLock::take(dir), Err(StoreError::InUse(_)))
    }

    /// Whether the profile in `dir` is encrypted (it then needs its passphrase to open).
    pub fn is_encrypted(dir: &Path) -> bool {
        dir.join(KDF_FILE).exists()
    }

    /// Opens an existing profile database.
    pub fn open(dir: &Path, passphrase: Option<&str>) -> Result<Self, StoreError> {
        Self::exists(dir)?;
        let key = match std::fs::read(dir.join(KDF_FILE)) {
            Ok(text) => {
                let params: KdfParams = serde_json::from_slice(&text)
                    .map_err(|e| StoreError::Kdf(format!("{KDF_FILE}: {e}")))?;
                let passphrase = passphrase.ok_or(StoreError::PassphraseRequired)?;
                Some(params.derive_key(passphrase)?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        Self::open_with_key(dir, key)
    }

    fn open_with_key(dir: &Path, key: Option<[u8; 32]>) -> Result<Self, StoreError> {
        let writer = WriterLock::take(dir)?;
        keep_private(dir)?;
        let conn = Connection::open(dir.join(DB_FILE))?;
        if let Some(key) = key {
            // A raw key (x'..') skips SQLCipher's own PBKDF2: Argon2id already did that work.
            conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", hex::encode(key)))?;
            // A wrong passphrase is reported by our error, not by SQLCipher writing to stderr.
            conn.execute_batch("PRAGMA cipher_log_level = NONE;")?;
        }
        // The first read is where a wrong key shows.
        if let Err(e) = conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())) {
            return Err(match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::NotADatabase) => StoreError::WrongPassphrase,
                _ => e.into(),
            });
        }
        // OpenMLS replaces blobs of up to several MB (a big group's tree) on every merge;
        // freeing the old blob's overflow pages reads them, so keep them cached (64 MiB at most,
        // allocated as used). Measured: commits at 10,000 members ~1.4x faster than at 2 MiB.
        conn.pragma_update(None, "cache_size", -65536)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Self {
            conn,
            dir: dir.to_owned(),
            _writer: writer,
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        SqliteStorageProvider::<MsgPackCodec, &mut Connection>::new(&mut self.conn)
            .run_migrations()
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema(version));
        }
        for (step, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", step as i64 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The OpenMLS storage provider on this database.
    pub fn mls_storage(&self) -> MlsStorage<'_> {
        SqliteStorageProvider::new(&self.conn)
    }

    /// Runs `f` in one write transaction: everything it writes, OpenMLS's state included, is
    /// committed together, or nothing is.
    pub fn transaction<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce() -> Result<R, E>,
    ) -> Result<R, E> {
        self.begin()?;
        match f() {
            Ok(result) => {
                self.commit()?;
                Ok(result)
            }
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    /// Like [`Self::transaction`], but the commit does not wait for the disk: for writes whose
    /// loss in a power cut is harmless (a later durable commit, or a crash, keeps WAL order, so
    /// nothing after them survives without them). Used to drop delivered outbox rows: if that is
    /// lost, the packet is sent again and the receiver drops the duplicate.
    pub fn transaction_without_sync<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce() -> Result<R, E>,
    ) -> Result<R, E> {
        self.run("PRAGMA synchronous = NORMAL")?;
        let result = self.transaction(f);
        self.run("PRAGMA synchronous = FULL")?;
        result
    }

    /// Starts a write transaction. IMMEDIATE takes the write lock now, so a second process on
    /// the same profile waits (busy timeout) instead of failing halfway.
    pub fn begin(&self) -> Result<(), StoreError> {
        self.run("BEGIN IMMEDIATE")
    }

    /// Commits the transaction started by [`Self::begin`]; one fsync of the WAL.
    pub fn commit(&self) -> Result<(), StoreError> {
        self.run("COMMIT").inspect_err(|_| self.rollback())
    }

    /// Abandons the current transaction, if any.
    pub fn rollback(&self) {
        // Fails only when no transaction is open, which is then the state we want.
        let _ = self.run("ROLLBACK");
    }

    /// Runs `f` inside a savepoint of the current transaction (or as a transaction of its own
    /// outside one): on error, everything `f` wrote is undone and the rest of the transaction
    /// stands. This lets one transaction carry a batch of operations of which some may fail.
    pub fn savepoint<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce() -> Result<R, E>,
    ) -> Result<R, E> {
        self.run("SAVEPOINT op")?;
        match f() {
            Ok(result) => {
                self.run("RELEASE op")?;
                Ok(result)
            }
            Err(e) => {
                self.run("ROLLBACK TO op")?;
                self.run("RELEASE op")?;
                Err(e)
            }
        }
    }

    fn run(&self, sql: &str) -> Result<(), StoreError> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// Test hook: abort the process, as a crash would, at the `n`-th row written from now on.
    /// Crash-safety tests use it to stop a real process between any two writes.
    pub fn crash_after_writes(&self, n: u64) {
        let mut written = 0u64;
        self.conn.update_hook(Some(move |_, _: &str, _: &str, _| {
            written += 1;
            if written >= n {
                std::process::abort();
            }
        }));
    }

    /// Reads one optional value.
    pub fn query_opt<T: rusqlite::types::FromSql>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Option<T>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row(params, |r| r.get(0))
            .optional()?)
    }
}

#[cfg(unix)]
fn restrict_permissions(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn restrict_permissions(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// The profile's files are readable by their owner only (SQLite gives its WAL and shared-memory
/// files the database's mode); a directory others may enter is warned about, not changed.
#[cfg(unix)]
fn keep_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let db = dir.join(DB_FILE);
    drop(private_file(&db)?);
    for file in [db, dir.join(KDF_FILE)] {
        match std::fs::metadata(&file) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?
            }
            _ => {}
        }
    }
    if std::fs::metadata(dir)?.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            "the profile directory is open to other users: `chmod 700` it"
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn keep_private(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_profile_needs_its_passphrase_and_hides_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::create(dir.path(), Some("correct horse")).unwrap();
            store
                .conn()
                .execute(
                    "INSERT INTO profile (id, user, device, signature_public, created_at)
                     VALUES (1, 'secret-user-name', 'd', x'00', 0)",
                    [],
                )
                .unwrap();
        }
        assert!(matches!(
            Store::open(dir.path(), None),
            Err(StoreError::PassphraseRequired)
        ));
        assert!(matches!(
            Store::open(dir.path(), Some("wrong")),
            Err(StoreError::WrongPassphrase)
        ));
        let store = Store::open(dir.path(), Some("correct horse")).unwrap();
        let user: Option<String> = store.query_opt("SELECT user FROM profile", []).unwrap();
        assert_eq!(user.as_deref(), Some("secret-user-name"));
        drop(store);
        // Nothing readable on disk: not the names, not SQLite's own header.
        for file in ["mlschat.db", "mlschat.db-wal"] {
            if let Ok(bytes) = std::fs::read(dir.path().join(file)) {
                let text = String::from_utf8_lossy(&bytes);
                assert!(!text.contains("secret-user-name"), "{file} leaks plaintext");
                assert!(!text.contains("SQLite format 3"), "{file} is not encrypted");
            }
        }
    }

    #[test]
    fn failed_transaction_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), None).unwrap();
        let result: Result<(), StoreError> = store.transaction(|| {
            store
                .conn()
                .execute("INSERT INTO processed VALUES (x'01', 0)", [])?;
            Err(StoreError::Kdf("boom".into()))
        });
        assert!(result.is_err());
        let n: Option<i64> = store
            .query_opt("SELECT count(*) FROM processed", [])
            .unwrap();
        assert_eq!(n, Some(0));
    }
}
