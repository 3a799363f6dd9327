//! One device's durable state, and every operation on it.
//!
//! Each operation runs the [`Engine`] inside one database transaction together with our own rows
//! (history, processed-message hashes, outbox, KeyPackage pool): a decrypted message and its
//! stored plaintext commit together, because MLS deletes the message key after one use. A batch
//! of incoming packets shares one transaction (one fsync), with a savepoint per packet so that
//! each still succeeds or fails alone. When an operation fails, its writes roll back and the
//! cached group is dropped, so the next operation reloads it from storage as it was.

use std::collections::HashMap;
use std::path::Path;

use openmls::prelude::{GroupId, KeyPackage, MlsGroup, OpenMlsProvider};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::random::OpenMlsRand;
use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::engine::{
    self, CommitOut, Engine, EngineError, Incoming, MemberInfo, Parsed, display_member,
};
use crate::identity::{DeviceName, Identity, SIGNATURE_SCHEME};
use crate::store::{MlsStorage, Store, StoreError};
use mlschat_wire::PostId;
use mlschat_wire::content::Content;
use mlschat_wire::packet::Packet;
use mlschat_wire::settings::GroupSettings;

mod alerts;
mod contacts;
mod errors;
mod files;
mod groups;
mod history;
mod hosted;
mod key_packages;
mod notices;
pub use alerts::Alert;
pub use contacts::{Admission, Contact, Home, InviteCode, SafetyNumber, SenderState, SenderStates};
pub use errors::{
    AddError, ContactError, GroupNameError, LogError, PlaceError, ProfileError, ReceiveError,
    SettingsChangeError, TextError,
};
pub use history::describe_commit;
use history::{
    append_history, append_text, mark_processed, note_invitees, record_incoming, remember_commit,
};
pub use hosted::{
    Announcement, Event, Intent, Invitation, Joiners, LogEntry, LogRead, PendingCommit, Prepared,
    QueuedText, RequestState, TextsMark, Waiting,
};
pub use key_packages::Claim;

/// A group as listed to the user.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupSummary {
    #[schemars(with = "crate::schema::GroupIdHex")]
    pub id: String,
    /// The local name, if we gave one (else refer to the group by its id or a prefix).
    pub name: Option<String>,
    pub epoch: u64,
    pub members: u64,
    /// Members added who have not joined yet (counted in `members`): they join when they
    /// accept.
    pub invited: u64,
    pub state: GroupState,
    /// Hex of the MLS epoch authenticator: equal for all members exactly when they agree on
    /// the group's state (RFC 9420 §8.7).
    #[schemars(pattern("^[0-9a-f]+$"))]
    pub epoch_authenticator: String,
    /// The name every member sees (the group's settings); null for a group made without
    /// settings.
    pub shared_name: Option<String>,
    /// The topic every member sees; null as above.
    pub topic: Option<String>,
    /// Whether we may add members, remove others and change the settings: we are an admin, or
    /// the group has no settings (then everyone may).
    pub admin: bool,
}

/// Where we stand in a group.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum GroupState {
    /// We are a member and go on.
    Active,
    /// A commit we could not process stopped the group for us (an admin starts it again).
    Broken,
    /// It broke and goes on in the group that announced it continues it.
    Continued,
    /// An admin's notice said the group, from where we are, is a fork its admins left.
    Abandoned,
    /// We are no longer a member.
    Removed,
}

impl GroupState {
    /// The state as the profile's `groups` table names it.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "active" => GroupState::Active,
            "broken" => GroupState::Broken,
            "continued" => GroupState::Continued,
            "abandoned" => GroupState::Abandoned,
            "removed" => GroupState::Removed,
            _ => return None,
        })
    }
}

impl GroupSummary {
    /// The name if there is one, else the id: what to type to refer to this group.
    pub fn handle(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// A change to a group's shared settings, applied to the settings as they are when the commit
/// is made (again, after a lost race), so that two admins' changes both hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SettingsChange {
    pub name: Option<String>,
    pub topic: Option<String>,
    /// Fingerprints (hex) of members to make admins, and of admins to make members again.
    #[serde(default)]
    pub promote: Vec<String>,
    #[serde(default)]
    pub demote: Vec<String>,
}

impl SettingsChange {
    /// The settings after this change.
    pub fn apply(&self, current: &GroupSettings) -> Result<GroupSettings, ProfileError> {
        let mut new = current.clone();
        if let Some(name) = &self.name {
            new.name = name.clone();
        }
        if let Some(topic) = &self.topic {
            new.topic = topic.clone();
        }
        let key = |hex: &String| -> Result<[u8; 32], ProfileError> {
            hex::decode(hex)
                .ok()
                .and_then(|k| k.try_into().ok())
                .ok_or_else(|| ProfileError::Corrupt(format!("admin key {hex}")))
        };
        for admin in &self.promote {
            let admin = key(admin)?;
            if !new.admins.contains(&admin) {
                new.admins.push(admin);
            }
        }
        for admin in &self.demote {
            let admin = key(admin)?;
            new.admins.retain(|a| *a != admin);
        }
        if new.admins.is_empty() {
            return Err(SettingsChangeError::LastAdmin.into());
        }
        new.validate().map_err(SettingsChangeError::Invalid)?;
        Ok(new)
    }
}

/// One row of a group's history, oldest first.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    pub seq: i64,
    pub epoch: u64,
    /// `user/device` of the sender.
    pub sender: String,
    #[schemars(with = "crate::schema::FingerprintHex")]
    pub sender_fingerprint: String,
    pub sender_state: SenderState,
    pub kind: HistoryKind,
    pub body: String,
    /// Unix time, seconds.
    pub at: i64,
}

/// What a history row is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum HistoryKind {
    /// Something a member said.
    Text,
    /// A join, an add, a removal, a change of the group.
    Event,
}

impl rusqlite::types::FromSql for HistoryKind {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        match value.as_str()? {
            "text" => Ok(HistoryKind::Text),
            "event" => Ok(HistoryKind::Event),
            other => Err(rusqlite::types::FromSqlError::Other(
                format!("history kind {other:?}").into(),
            )),
        }
    }
}

/// What receiving one packet did.
#[derive(Debug)]
pub enum Received {
    /// We joined a group from a Welcome.
    Joined {
        group: GroupSummary,
        inviter: MemberInfo,
    },
    /// A message for a group we are in.
    Message { group: GroupRef, incoming: Incoming },
}

/// Packets produced by an operation, in the order they must be sent. They are also in the
/// outbox until [`Profile::mark_sent`] is called with `outbox`.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// For the group's current members.
    pub to_group: Vec<Packet>,
    /// For members being added.
    pub to_joiners: Option<Packet>,
    /// Outbox rows holding these packets.
    pub outbox: Vec<i64>,
}

impl Outgoing {
    fn append(&mut self, other: Outgoing) {
        self.to_group.extend(other.to_group);
        self.to_joiners = other.to_joiners.or(self.to_joiners.take());
        self.outbox.extend(other.outbox);
    }
}

/// A packet in the outbox not yet marked as sent.
#[derive(Debug)]
pub struct Unsent {
    pub seq: i64,
    pub group: String,
    /// `group` or `joiners`.
    pub audience: String,
    pub packet: Packet,
}

/// The OpenMLS provider for one operation: our crypto and the profile's storage.
struct Provider<'a> {
    crypto: &'a RustCrypto,
    storage: MlsStorage<'a>,
}

impl<'a> OpenMlsProvider for Provider<'a> {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MlsStorage<'a>;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        self.crypto
    }
}

/// A group named in a packet's report: enough to name it, cheap to build.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRef {
    #[schemars(with = "crate::schema::GroupIdHex")]
    pub id: String,
    /// Its local name, if any.
    pub name: Option<String>,
}

impl GroupRef {
    pub fn handle(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// One device's profile: identity, groups and history, all in one database.
pub struct Profile {
    store: Store,
    crypto: RustCrypto,
    engine: Engine,
    /// Groups loaded from storage. An entry is dropped when an operation on it fails, since
    /// OpenMLS may have changed it in memory before the transaction rolled back.
    groups: HashMap<GroupId, MlsGroup>,
    /// What every row is stamped with and every expiry judged by.
    clock: Clock,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("dir", &self.store.dir())
            .field("identity", &self.engine.identity().name)
            .finish_non_exhaustive()
    }
}

impl Profile {
    /// Creates a profile with a fresh signature key in `dir`.
    pub fn create(
        dir: &Path,
        name: DeviceName,
        passphrase: Option<&str>,
    ) -> Result<Self, ProfileError> {
        let store = Store::create(dir, passphrase)?;
        let identity = Identity::generate(name);
        store.transaction(|| {
            identity
                .signer
                .store(&store.mls_storage())
                .map_err(StoreError::from)?;
            store.conn().execute(
                "INSERT INTO profile (id, user, device, signature_public, created_at, discovery_key)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5)",
                params![
                    identity.name.user,
                    identity.name.device,
                    identity.signer.public(),
                    Clock::System.unix() as i64,
                    crate::discovery::DiscoveryKey::generate().to_bytes()
                ],
            )?;
            Ok::<_, ProfileError>(())
        })?;
        Ok(Self::with(store, identity))
    }

    /// Opens the profile in `dir`.
    pub fn open(dir: &Path, passphrase: Option<&str>) -> Result<Self, ProfileError> {
        let store = Store::open(dir, passphrase)?;
        let (user, device, public): (String, String, Vec<u8>) = store
            .conn()
            .query_row(
                "SELECT user, device, signature_public FROM profile WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
            .ok_or_else(|| ProfileError::Corrupt("no identity row".into()))?;
        let name =
            DeviceName::new(&user, &device).map_err(|e| ProfileError::Corrupt(e.to_string()))?;
        let signer = SignatureKeyPair::read(&store.mls_storage(), &public, SIGNATURE_SCHEME)
            .ok_or_else(|| ProfileError::Corrupt("signature key missing".into()))?;
        Ok(Self::with(store, Identity { name, signer }))
    }

    fn with(store: Store, identity: Identity) -> Self {
        Self {
            store,
            crypto: RustCrypto::default(),
            engine: Engine::new(identity),
            groups: HashMap::new(),
            clock: Clock::System,
        }
    }

    /// Reads the time from `clock` from now on (the simulator's, in a simulated run).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// Seconds since the Unix epoch, on this profile's clock.
    pub fn now(&self) -> i64 {
        i64::try_from(self.clock.unix()).unwrap_or(i64::MAX)
    }

    pub fn identity(&self) -> &Identity {
        self.engine.identity()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Unused one-time KeyPackages, and whether a last-resort one exists.
    pub fn key_package_stock(&self) -> Result<(u64, bool), ProfileError> {
        let one_time: Option<i64> = self.store.query_opt(
            "SELECT count(*) FROM key_packages WHERE last_resort = 0 AND consumed_at IS NULL",
            [],
        )?;
        let last_resort: Option<i64> = self.store.query_opt(
            "SELECT count(*) FROM key_packages WHERE last_resort = 1",
            [],
        )?;
        Ok((one_time.unwrap_or(0) as u64, last_resort.unwrap_or(0) > 0))
    }

    /// Makes a KeyPackage to hand out; returns its `MLSMessage` bytes.
    pub fn new_key_package(&mut self, last_resort: bool) -> Result<Vec<u8>, ProfileError> {
        let provider = self.provider();
        self.store.transaction(|| {
            let kp = self.engine.new_key_package(&provider, last_resort)?;
            self.store.conn().execute(
                "INSERT INTO key_packages (key_package_ref, last_resort, created_at)
                 VALUES (?1, ?2, ?3)",
                params![kp.reference, last_resort, self.now()],
            )?;
            Ok(kp.message)
        })
    }

    fn provider(&self) -> Provider<'_> {
        Provider {
            crypto: &self.crypto,
            storage: self.store.mls_storage(),
        }
    }

    /// The last `limit` history entries of a group, oldest first: in the delivery node's order
    /// for a group on one (our texts it has not taken yet last), else in the order we saw them.
    pub fn history(&self, id: &GroupId, limit: u32) -> Result<Vec<HistoryEntry>, ProfileError> {
        let mut stmt = self.store.conn().prepare(
            "SELECT seq, epoch, sender, kind, body, at, sender_fingerprint FROM (
                 SELECT * FROM messages WHERE group_id = ?1 ORDER BY seq DESC LIMIT ?2
             ) ORDER BY coalesce(log_seq, 9223372036854775807), seq",
        )?;
        let states = self.sender_states()?;
        let rows = stmt.query_map(params![id.as_slice(), limit], |r| {
            let body: Vec<u8> = r.get(4)?;
            let sender: String = r.get(2)?;
            let fingerprint: Vec<u8> = r.get(6)?;
            Ok(HistoryEntry {
                seq: r.get(0)?,
                epoch: r.get::<_, i64>(1)? as u64,
                sender_state: states.of(&sender, &fingerprint),
                sender_fingerprint: hex::encode(&fingerprint),
                sender,
                kind: r.get(3)?,
                body: String::from_utf8_lossy(&body).into_owned(),
                at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Runs `op` as one write transaction. If it fails, or the commit does, the cached groups
    /// may hold changes that were never stored: they are dropped, to be reloaded as stored.
    fn in_transaction<R>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<R, ProfileError>,
    ) -> Result<R, ProfileError> {
        self.store.begin()?;
        let result = op(self).and_then(|r| Ok(self.store.commit().map(|()| r)?));
        if result.is_err() {
            self.store.rollback();
            self.groups.clear();
        }
        result
    }

    /// Drops what we hold of a group in memory: the next operation reads it from storage.
    pub fn reload_group(&mut self, id: &GroupId) {
        self.groups.remove(id);
    }

    /// Runs `op` on a loaded group inside a savepoint; on failure its writes are undone and the
    /// group is dropped from the cache so that it is reloaded as stored.
    fn with_group<R>(
        &mut self,
        id: &GroupId,
        op: impl FnOnce(
            &Engine,
            &Provider<'_>,
            &mut MlsGroup,
            &rusqlite::Connection,
        ) -> Result<R, ProfileError>,
    ) -> Result<R, ProfileError> {
        self.load(id)?;
        let Self {
            store,
            crypto,
            engine,
            groups,
            clock: _,
        } = self;
        let group = groups.get_mut(id).expect("loaded above");
        let provider = Provider {
            crypto,
            storage: store.mls_storage(),
        };
        let result = store.savepoint(|| op(engine, &provider, group, store.conn()));
        if result.is_err() {
            groups.remove(id);
        }
        result
    }

    fn load(&mut self, id: &GroupId) -> Result<(), ProfileError> {
        if !self.groups.contains_key(id) {
            let group = MlsGroup::load(&self.store.mls_storage(), id)
                .map_err(StoreError::from)?
                .ok_or_else(|| {
                    ProfileError::Corrupt(format!(
                        "MLS state of group {} is missing",
                        hex::encode(id.as_slice())
                    ))
                })?;
            self.groups.insert(id.clone(), group);
        }
        Ok(())
    }

    fn me(&self) -> MemberInfo {
        member_of(self.identity())
    }
}

/// Ourselves, as history names a member.
fn member_of(identity: &Identity) -> MemberInfo {
    MemberInfo {
        leaf_index: 0,
        name: Some(identity.name.clone()),
        fingerprint: identity.fingerprint(),
    }
}

impl Outgoing {
    /// Adds a packet, and its outbox row in the current transaction.
    fn queue(
        &mut self,
        conn: &rusqlite::Connection,
        id: &GroupId,
        packet: Packet,
        at: i64,
    ) -> Result<(), ProfileError> {
        let audience = match packet {
            Packet::Mls(_) => "group",
            Packet::Join { .. } => "joiners",
        };
        conn.prepare_cached(
            "INSERT INTO outbox (group_id, audience, packet, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![id.as_slice(), audience, packet.encode()?, at])?;
        self.outbox.push(conn.last_insert_rowid());
        match packet {
            Packet::Mls(_) => self.to_group.push(packet),
            Packet::Join { .. } => self.to_joiners = Some(packet),
        }
        Ok(())
    }
}

/// Merges our pending commit and records it: in history, as processed (its echo is dropped),
/// and, unless it only added members, as the refresh of our leaf.
fn merge_own_commit(
    engine: &Engine,
    provider: &Provider<'_>,
    group: &mut MlsGroup,
    conn: &rusqlite::Connection,
    commit: &[u8],
    adds_members: bool,
    at: i64,
) -> Result<engine::Changes, ProfileError> {
    let me = &member_of(engine.identity());
    let id = group.group_id().clone();
    let shared_before = shared_name(group)?;
    let changes = engine.merge_pending_commit(provider, group)?;
    if let Some(new) = &changes.settings {
        follow_shared_name(conn, &id, shared_before.as_deref(), &new.name)?;
    }
    mark_processed(conn, commit, at)?;
    note_invitees(conn, &id, &changes.added, at)?;
    let epoch = group.epoch().as_u64();
    let event = describe_commit(&changes.added, &changes.removed, changes.settings.as_ref());
    append_history(conn, &id, epoch, me, &event, at)?;
    // Every commit of ours but an add carries an UpdatePath, which refreshes our leaf.
    if !adds_members {
        conn.execute(
            "UPDATE groups SET needs_self_update = 0 WHERE group_id = ?1",
            [id.as_slice()],
        )?;
    }
    Ok(changes)
}

fn validate_group_name(name: &str) -> Result<(), ProfileError> {
    if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
        return Err(GroupNameError::Invalid(name.to_owned()).into());
    }
    Ok(())
}

fn shared_name(group: &MlsGroup) -> Result<Option<String>, ProfileError> {
    Ok(engine::group_settings(group)?.map(|s| s.name))
}

/// A group's local name follows a change of its shared name, unless our user gave it another
/// one (or another of our groups has the new name).
fn follow_shared_name(
    conn: &rusqlite::Connection,
    id: &GroupId,
    before: Option<&str>,
    new: &str,
) -> Result<(), ProfileError> {
    if before == Some(new) || validate_group_name(new).is_err() || name_taken(conn, new)? {
        return Ok(());
    }
    conn.execute(
        "UPDATE groups SET name = ?3 WHERE group_id = ?1 AND name IS ?2",
        params![id.as_slice(), before, new],
    )?;
    Ok(())
}

fn name_taken(conn: &rusqlite::Connection, name: &str) -> Result<bool, ProfileError> {
    let taken: Option<i64> = conn
        .query_row("SELECT 1 FROM groups WHERE name = ?1", [name], |r| r.get(0))
        .optional()?;
    Ok(taken.is_some())
}

/// The most a text may hold (UTF-8 bytes): its message, padded and encrypted, stays well under
/// what a delivery node takes (1 MiB by default).
pub const MAX_TEXT_BYTES: usize = 512 * 1024;

/// A text worth sending: not empty, and not larger than [`MAX_TEXT_BYTES`].
fn check_text(text: &str) -> Result<(), ProfileError> {
    if text.trim().is_empty() {
        return Err(TextError::Empty.into());
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(TextError::TooLong {
            max_kib: MAX_TEXT_BYTES / 1024,
            kib: text.len().div_ceil(1024),
        }
        .into());
    }
    Ok(())
}

/// A group we are in from now on. A group we were in before (left, removed, broken) is ours
/// afresh: nothing of our last membership (a leave asked for, a fork noticed) carries over.
fn insert_group(
    conn: &rusqlite::Connection,
    id: &GroupId,
    name: Option<&str>,
    needs_self_update: bool,
    at: i64,
) -> Result<(), ProfileError> {
    conn.execute(
        "INSERT INTO groups (group_id, name, needs_self_update, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (group_id) DO UPDATE SET state = 'active', needs_self_update = ?3,
             leaving = 0, abandoned = 0, notice = NULL, broken = NULL",
        params![id.as_slice(), name, needs_self_update, at],
    )?;
    Ok(())
}

/// Finds one member by `user/device`, `user`, `#leaf` or a fingerprint prefix of 8+ hex digits.
fn resolve_member<'m>(
    members: &'m [MemberInfo],
    who: &str,
) -> Result<&'m MemberInfo, ProfileError> {
    let matches: Vec<&MemberInfo> = if let Some(leaf) = who.strip_prefix('#') {
        let leaf: u32 = leaf
            .parse()
            .map_err(|_| ProfileError::UnknownMember(who.into()))?;
        members.iter().filter(|m| m.leaf_index == leaf).collect()
    } else {
        let by_name: Vec<&MemberInfo> = members
            .iter()
            .filter(|m| {
                m.name
                    .as_ref()
                    .is_some_and(|n| n.to_string() == who || n.user == who)
            })
            .collect();
        if !by_name.is_empty() || who.len() < 8 {
            by_name
        } else {
            let prefix = who.to_ascii_lowercase();
            members
                .iter()
                .filter(|m| m.fingerprint.to_hex().starts_with(&prefix))
                .collect()
        }
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(ProfileError::UnknownMember(who.into())),
        _ => Err(ProfileError::Ambiguous(who.into(), "member")),
    }
}
