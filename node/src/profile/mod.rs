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

use crate::engine::{
    self, CommitOut, Engine, EngineError, Incoming, MemberInfo, Parsed, display_member,
};
use crate::identity::{DeviceName, Identity, SIGNATURE_SCHEME};
use crate::store::{MlsStorage, Store, StoreError, unix_now};
use mlschat_wire::PostId;
use mlschat_wire::content::{Content, ContentKind};
use mlschat_wire::packet::Packet;
use mlschat_wire::settings::GroupSettings;

mod alerts;
mod contacts;
mod hosted;
mod key_packages;
mod notices;
pub use alerts::Alert;
pub use contacts::{Admission, Contact, Home, InviteCode, SafetyNumber, SenderState, SenderStates};
pub use hosted::{
    Announcement, Event, Intent, Invitation, Joiners, LogEntry, LogRead, PendingCommit, Prepared,
    QueuedText, TextsMark, Waiting,
};
pub use key_packages::Claim;

/// What can go wrong in a profile operation.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This exact message was processed (or sent by us) before; it was ignored.
    #[error("duplicate: this message was already processed")]
    Duplicate,
    /// No group matches the name or id given.
    #[error("no group named or with id {0:?}")]
    UnknownGroup(String),
    /// We were removed from the group (or left it).
    #[error("you are no longer a member of group {0}")]
    NotMember(String),
    /// An MLS message for a group this profile is not in.
    #[error("message is for a group we are not in ({0})")]
    NotOurGroup(String),
    /// More than one group or member matches.
    #[error("{0:?} is ambiguous: it matches more than one {1}")]
    Ambiguous(String, &'static str),
    /// No member of the group matches.
    #[error("no member {0:?} in this group")]
    UnknownMember(String),
    /// The input is a valid MLS message but not one this operation takes.
    #[error("{0}")]
    WrongKind(String),
    /// A packet could not be made (it would be over the size limit).
    #[error(transparent)]
    Packet(#[from] mlschat_wire::packet::PacketError),
    /// No contact has this name.
    #[error("no contact named {0:?} (add one with `mlschat contact add CODE`)")]
    UnknownContact(String),
    /// A contact's key is not the one we were given: never accepted silently.
    #[error("contact {0:?} is flagged: {1}")]
    ContactFlagged(String, String),
    /// We cannot go on in this group: a commit we could not process.
    #[error("group {0:?} is broken: {1}")]
    Broken(String, String),
    /// The operation needs a delivery node and none is set.
    #[error("no delivery node is set (run `mlschat home set ADDRESS FINGERPRINT`)")]
    NoHome,
    /// The profile's files do not hold a complete identity.
    #[error("profile is incomplete: {0}")]
    Corrupt(String),
    /// A Welcome from someone who is not a contact: it waits for our user to accept or decline.
    #[error(
        "{} (key {fingerprint}): their invitation waits for you (`mlschat request list`, then \
         `mlschat request accept GROUP` or `mlschat request decline GROUP`)",
        state.describe(inviter)
    )]
    Request {
        inviter: String,
        fingerprint: crate::identity::Fingerprint,
        state: SenderState,
    },
    /// A tree for joiners could not be sealed, or opened.
    #[error("tree for joiners: {0}")]
    Sealed(#[from] crate::sealed_tree::SealError),
}

impl From<rusqlite::Error> for ProfileError {
    fn from(e: rusqlite::Error) -> Self {
        ProfileError::Store(StoreError::Sqlite(e))
    }
}

/// A group as listed to the user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupSummary {
    /// Hex of the MLS group id.
    pub id: String,
    /// The local name, if we gave one.
    pub name: Option<String>,
    pub epoch: u64,
    pub members: usize,
    /// Members added who have not joined yet (counted in `members`).
    pub invited: usize,
    /// `active`, or `removed` once we are no longer a member.
    pub state: String,
    /// Hex of the MLS epoch authenticator: equal for all members exactly when they agree on
    /// the group's state (RFC 9420 §8.7).
    pub epoch_authenticator: String,
    /// The name and topic every member sees (the group's settings), if it has them.
    pub shared_name: Option<String>,
    pub topic: Option<String>,
    /// Whether we may add, remove others and change the settings: we are an admin, or the
    /// group has no settings (then everyone may).
    pub admin: bool,
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
            return Err(ProfileError::WrongKind(
                "a group needs at least one admin: make someone else an admin first".into(),
            ));
        }
        new.validate()
            .map_err(|e| ProfileError::WrongKind(e.to_string()))?;
        Ok(new)
    }
}

/// One row of a group's history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryEntry {
    pub seq: i64,
    pub epoch: u64,
    pub sender: String,
    /// The sender's key fingerprint (hex) and what our contacts say of it.
    pub sender_fingerprint: String,
    pub sender_state: SenderState,
    pub kind: String,
    pub body: String,
    pub at: i64,
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

/// A group handle as reported with an event: enough to name it, cheap to build.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupRef {
    pub id: String,
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
                "INSERT INTO profile (id, user, device, signature_public, created_at)
                 VALUES (1, ?1, ?2, ?3, ?4)",
                params![
                    identity.name.user,
                    identity.name.device,
                    identity.signer.public(),
                    unix_now()
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
        }
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
                params![kp.reference, last_resort, unix_now()],
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

    /// Creates a group with us as its only member.
    pub fn create_group(&mut self, name: &str) -> Result<GroupSummary, ProfileError> {
        self.create_group_as(name, false)
    }

    /// Creates a group, kept in files or (`hosted`) on our delivery node, in one transaction,
    /// named `name` for every member and with us as its admin.
    fn create_group_as(&mut self, name: &str, hosted: bool) -> Result<GroupSummary, ProfileError> {
        let settings = self.engine.new_settings(name);
        self.create_group_with(name, hosted, &settings)
    }

    /// Creates a group as above, with `settings` (a continuation keeps the old group's).
    pub(super) fn create_group_with(
        &mut self,
        name: &str,
        hosted: bool,
        settings: &GroupSettings,
    ) -> Result<GroupSummary, ProfileError> {
        validate_group_name(name)?;
        if self.find_group(name).is_ok() {
            return Err(ProfileError::WrongKind(format!(
                "a group named {name:?} already exists"
            )));
        }
        let id = GroupId::from_slice(
            &self
                .crypto
                .random_vec(16)
                .map_err(|e| EngineError::Invalid(e.to_string()))?,
        );
        let provider = self.provider();
        let me = self.me();
        // A savepoint: a transaction of its own, or part of the caller's (a continuation).
        let group = self.store.savepoint(|| {
            let group = self.engine.create_group(&provider, id.clone(), settings)?;
            let conn = self.store.conn();
            insert_group(conn, &id, Some(name), false)?;
            append_history(conn, &id, 0, &me, "event", "created the group")?;
            if hosted {
                // The first row of the node's log comes after this one.
                conn.execute(
                    "UPDATE groups SET hosted = 1 WHERE group_id = ?1",
                    [id.as_slice()],
                )?;
                conn.execute(
                    "UPDATE messages SET log_seq = 0 WHERE group_id = ?1",
                    [id.as_slice()],
                )?;
            }
            Ok::<_, ProfileError>(group)
        })?;
        self.groups.insert(id.clone(), group);
        self.summary(&id)
    }

    /// Adds members from their KeyPackages (`MLSMessage` bytes) in one commit.
    pub fn add_members(
        &mut self,
        group: &str,
        key_packages: &[Vec<u8>],
    ) -> Result<Outgoing, ProfileError> {
        let key_packages = key_packages
            .iter()
            .map(|bytes| engine::validate_key_package(&self.crypto, bytes))
            .collect::<Result<Vec<KeyPackage>, _>>()?;
        let id = self.find_group(group)?;
        self.in_transaction(|p| {
            p.own_commit(&id, |engine, p, g| engine.add_members(p, g, &key_packages))
        })
    }

    /// Removes members, named as `user/device`, `user`, a fingerprint prefix or `#leaf`, in one
    /// commit.
    pub fn remove_members(
        &mut self,
        group: &str,
        who: &[String],
    ) -> Result<Outgoing, ProfileError> {
        let id = self.find_group(group)?;
        let members = self.members_of(&id)?;
        let targets = who
            .iter()
            .map(|w| resolve_member(&members, w))
            .collect::<Result<Vec<&MemberInfo>, _>>()?;
        let leaves: Vec<u32> = targets.iter().map(|m| m.leaf_index).collect();
        self.in_transaction(|p| p.own_commit(&id, |e, p, g| e.remove_members(p, g, &leaves)))
    }

    /// Refreshes our keys in the group, committing any queued proposals with it.
    pub fn self_update(&mut self, group: &str) -> Result<Outgoing, ProfileError> {
        let id = self.find_group(group)?;
        self.in_transaction(|p| p.own_commit(&id, |e, p, g| e.self_update(p, g)))
    }

    /// Commits a change of the group's shared settings (name, topic, admins).
    pub fn change_settings(
        &mut self,
        group: &str,
        change: &SettingsChange,
    ) -> Result<Outgoing, ProfileError> {
        let id = self.find_group(group)?;
        let new = self.settings_after(&id, change)?;
        self.in_transaction(|p| p.own_commit(&id, |e, p, g| e.change_settings(p, g, &new)))
    }

    /// What `group set` asks for, resolved against the group as it is now: the members named
    /// by `admin` and `not_admin` become fingerprints, and the change is checked (we are an
    /// admin, the group has settings, one admin is left) before anything is queued.
    pub fn settings_change(
        &mut self,
        group: &str,
        name: Option<String>,
        topic: Option<String>,
        admin: &[String],
        not_admin: &[String],
    ) -> Result<SettingsChange, ProfileError> {
        let id = self.find_group(group)?;
        self.ensure_admin(group, "change the group's settings")?;
        if let Some(name) = &name {
            validate_group_name(name)?;
        }
        let fingerprints = |p: &mut Self, who: &[String]| -> Result<Vec<String>, ProfileError> {
            Ok(p.resolve_members(group, who)?
                .iter()
                .map(|m| m.fingerprint.to_hex())
                .collect())
        };
        let change = SettingsChange {
            name,
            topic,
            promote: fingerprints(self, admin)?,
            demote: fingerprints(self, not_admin)?,
        };
        if change == SettingsChange::default() {
            return Err(ProfileError::WrongKind(
                "nothing to change: give --name, --topic, --admin or --not-admin".into(),
            ));
        }
        self.settings_after(&id, &change)?;
        Ok(change)
    }

    /// The group's shared settings, if it has them.
    pub fn settings(&mut self, group: &str) -> Result<Option<GroupSettings>, ProfileError> {
        let id = self.find_group(group)?;
        self.load(&id)?;
        Ok(engine::group_settings(&self.groups[&id])?)
    }

    /// Refuses, before anything is claimed or queued, what only the group's admins may do.
    pub fn ensure_admin(&mut self, group: &str, what: &str) -> Result<(), ProfileError> {
        let me = self.identity().fingerprint();
        if engine::may_manage(self.settings(group)?.as_ref(), &me) {
            return Ok(());
        }
        Err(EngineError::NotAllowed(format!(
            "only the group's admins may {what}; ask one of them (`mlschat group members {group}` \
             shows who they are)"
        ))
        .into())
    }

    /// The group's settings after `change`; an error for a group that has none.
    pub(super) fn settings_after(
        &mut self,
        id: &GroupId,
        change: &SettingsChange,
    ) -> Result<GroupSettings, ProfileError> {
        self.load(id)?;
        let current = engine::group_settings(&self.groups[id])?.ok_or_else(|| {
            ProfileError::WrongKind(
                "this group was made without shared settings (by another client, or an older \
                 mlschat): it has no name, topic or admins to change"
                    .into(),
            )
        })?;
        change.apply(&current)
    }

    /// Proposes our own removal; another member's next commit carries it out.
    pub fn leave(&mut self, group: &str) -> Result<Outgoing, ProfileError> {
        let id = self.find_group(group)?;
        if self.is_hosted(&id)? {
            return Err(ProfileError::WrongKind(
                "this group is on a delivery node: leave it through the node (`mlschat group \
                 leave` does)"
                    .into(),
            ));
        }
        let me = self.me();
        self.in_transaction(|p| {
            p.with_group(&id, |engine, provider, group, conn| {
                let proposal = engine.leave(provider, group)?;
                mark_processed(conn, &proposal)?;
                let epoch = group.epoch().as_u64();
                append_history(conn, &id, epoch, &me, "event", "asked to leave")?;
                let mut out = Outgoing::default();
                out.queue(conn, &id, Packet::Mls(proposal))?;
                Ok(out)
            })
        })
    }

    /// Encrypts a text message for the group. A member who joined and has not refreshed its
    /// keys yet does so first, in the same transaction, and the commit goes out before the text.
    pub fn send(&mut self, group: &str, text: &str) -> Result<Outgoing, ProfileError> {
        check_text(text)?;
        let id = self.find_group(group)?;
        if let Some(why) = self.broken(&id)? {
            return Err(ProfileError::Broken(group.into(), why));
        }
        self.in_transaction(|p| {
            let mut out = Outgoing::default();
            if p.needs_self_update(&id)? {
                out = p.own_commit(&id, |e, p, g| e.self_update(p, g))?;
            }
            out.append(p.queue_text(&id, text)?);
            Ok(out)
        })
    }

    /// Encrypts `text` at the group's current epoch as a new [`Content`], records it in history
    /// and queues the packet in the outbox (groups kept in files).
    fn queue_text(&mut self, id: &GroupId, text: &str) -> Result<Outgoing, ProfileError> {
        let me = self.me();
        let content = Content::text(self.new_post_id()?, text);
        self.with_group(id, |engine, provider, group, conn| {
            let message = engine.send(provider, group, &content.encode())?;
            mark_processed(conn, &message)?;
            append_text(conn, id, group.epoch().as_u64(), &me, &content)?;
            let mut out = Outgoing::default();
            out.queue(conn, id, Packet::Mls(message))?;
            Ok(out)
        })
    }

    fn new_post_id(&self) -> Result<PostId, ProfileError> {
        let bytes = self
            .crypto
            .random_vec(16)
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        Ok(bytes.try_into().expect("16 bytes asked for"))
    }

    /// Processes one incoming packet: joins from a Welcome, or processes a group message.
    pub fn receive(&mut self, packet: &Packet) -> Result<Received, ProfileError> {
        self.in_transaction(|p| p.receive_one(packet))
    }

    /// Processes several packets in one transaction, so that they share one fsync; each packet
    /// still succeeds or fails on its own (a savepoint each). Nothing is durable, and nothing
    /// should be shown, before this returns `Ok`.
    pub fn receive_batch(
        &mut self,
        packets: &[Packet],
    ) -> Result<Vec<Result<Received, ProfileError>>, ProfileError> {
        self.in_transaction(|p| Ok(packets.iter().map(|packet| p.receive_one(packet)).collect()))
    }

    fn receive_one(&mut self, packet: &Packet) -> Result<Received, ProfileError> {
        match packet {
            Packet::Join {
                welcome,
                ratchet_tree,
                // Read from a file or pipe our user chose to read.
            } => self.join(welcome, ratchet_tree, None),
            Packet::Mls(bytes) => match engine::parse_message(bytes)? {
                Parsed::Protocol(message) => {
                    let id = message.group_id().clone();
                    let group = self
                        .group_ref(&id)?
                        .ok_or_else(|| ProfileError::NotOurGroup(hex::encode(id.as_slice())))?;
                    let incoming = self.with_group(&id, |engine, provider, group, conn| {
                        if !mark_processed(conn, bytes)? {
                            return Err(ProfileError::Duplicate);
                        }
                        let shared_before = shared_name(group)?;
                        let incoming = engine.process(provider, group, message)?;
                        if let Incoming::Commit {
                            settings: Some(new),
                            ..
                        } = &incoming
                        {
                            follow_shared_name(conn, &id, shared_before.as_deref(), &new.name)?;
                        }
                        let epoch = group.epoch().as_u64();
                        if let Incoming::Commit { .. } = &incoming {
                            remember_commit(conn, &id, epoch - 1, bytes)?;
                        }
                        record_incoming(conn, &id, epoch, &incoming)?;
                        Ok(incoming)
                    });
                    if let Err(ProfileError::Engine(EngineError::Fork { epoch })) = &incoming {
                        self.judge_fork(&id, *epoch, bytes)?;
                    }
                    let incoming = incoming?;
                    Ok(Received::Message { group, incoming })
                }
                Parsed::Welcome(_) => Err(ProfileError::WrongKind(
                    "a bare Welcome cannot be joined without its ratchet tree; \
                     use the join packet written by `group add`"
                        .into(),
                )),
                Parsed::KeyPackage(_) => Err(ProfileError::WrongKind(
                    "this is a KeyPackage: pass it to `group add`".into(),
                )),
            },
        }
    }

    /// Opens the tree secret sealed to us beside a Welcome from our node's mailbox; done before
    /// joining, which deletes the KeyPackage private key it was sealed to.
    pub fn open_tree_secret(
        &self,
        welcome: &[u8],
        tree_key: &[u8],
        group_id: &[u8],
        epoch: u64,
    ) -> Result<crate::sealed_tree::TreeSecret, ProfileError> {
        let provider = self.provider();
        Ok(crate::sealed_tree::TreeSecret::open_for(
            &provider, welcome, tree_key, group_id, epoch,
        )?)
    }

    /// Joins from a Welcome. With `admission`, only an inviter it admits is followed; anyone
    /// else's Welcome is refused as a [`ProfileError::Request`] and nothing is kept (the
    /// KeyPackage it was sealed to stays, for our user to accept it later).
    fn join(
        &mut self,
        welcome: &[u8],
        ratchet_tree: &[u8],
        admission: Option<&Admission>,
    ) -> Result<Received, ProfileError> {
        let Parsed::Welcome(parsed) = engine::parse_message(welcome)? else {
            return Err(ProfileError::WrongKind(
                "join packet without a Welcome".into(),
            ));
        };
        let references: Vec<Vec<u8>> = parsed
            .secrets()
            .iter()
            .map(|s| s.new_member().as_slice().to_vec())
            .collect();
        let provider = self.provider();
        let (group, inviter) = self.store.savepoint(|| {
            let conn = self.store.conn();
            if !mark_processed(conn, welcome)? {
                return Err(ProfileError::Duplicate);
            }
            let (group, inviter) = self.engine.join(&provider, parsed, ratchet_tree)?;
            let shown_as = display_member(&inviter);
            if let Some(state) = admission.and_then(|a| a.refuses(&shown_as, &inviter.fingerprint))
            {
                return Err(ProfileError::Request {
                    inviter: shown_as,
                    fingerprint: inviter.fingerprint,
                    state,
                });
            }
            // The group's shared name becomes ours unless one of our groups already has it.
            let shared = engine::group_settings(&group)?.map(|s| s.name);
            let name = match shared.filter(|n| validate_group_name(n).is_ok()) {
                Some(n) if !name_taken(conn, &n)? => Some(n),
                _ => None,
            };
            insert_group(conn, group.group_id(), name.as_deref(), true)?;
            for reference in &references {
                conn.execute(
                    "UPDATE key_packages SET consumed_at = ?2
                     WHERE key_package_ref = ?1 AND last_resort = 0",
                    params![reference, unix_now()],
                )?;
            }
            let epoch = group.epoch().as_u64();
            let text = "joined the group";
            append_history(conn, group.group_id(), epoch, &self.me(), "event", text)?;
            Ok((group, inviter))
        })?;
        let id = group.group_id().clone();
        self.groups.insert(id.clone(), group);
        Ok(Received::Joined {
            group: self.summary(&id)?,
            inviter,
        })
    }

    /// Gives a group a local name (only we see it), e.g. after joining one.
    pub fn rename_group(&mut self, group: &str, name: &str) -> Result<(), ProfileError> {
        validate_group_name(name)?;
        let id = self.find_group(group)?;
        if self.find_group(name).is_ok_and(|other| other != id) {
            return Err(ProfileError::WrongKind(format!(
                "a group named {name:?} already exists"
            )));
        }
        self.store.conn().execute(
            "UPDATE groups SET name = ?2 WHERE group_id = ?1",
            params![id.as_slice(), name],
        )?;
        Ok(())
    }

    /// Every group we are or were in.
    pub fn groups(&mut self) -> Result<Vec<GroupSummary>, ProfileError> {
        let ids: Vec<Vec<u8>> = {
            let mut stmt = self.store.conn().prepare(
                "SELECT group_id FROM groups WHERE declined = 0 ORDER BY created_at, name",
            )?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        ids.iter()
            .map(|id| self.summary(&GroupId::from_slice(id)))
            .collect()
    }

    /// The members of a group, in leaf order.
    pub fn members(&mut self, group: &str) -> Result<Vec<MemberInfo>, ProfileError> {
        let id = self.find_group(group)?;
        self.members_of(&id)
    }

    /// The members of `group` added who have not joined yet ([`engine::invited`]).
    pub fn invited(
        &mut self,
        group: &str,
    ) -> Result<Vec<crate::identity::Fingerprint>, ProfileError> {
        let id = self.find_group(group)?;
        self.load(&id)?;
        let me = self.identity().fingerprint();
        let mut invited = engine::invited(&self.groups[&id]);
        invited.retain(|f| *f != me);
        Ok(invited)
    }

    /// Finds members by `user/device`, `user`, `#leaf` or a fingerprint prefix.
    pub fn resolve_members(
        &mut self,
        group: &str,
        who: &[String],
    ) -> Result<Vec<MemberInfo>, ProfileError> {
        let members = self.members(group)?;
        who.iter()
            .map(|w| resolve_member(&members, w).cloned())
            .collect()
    }

    /// The last `limit` history entries of a group, oldest first: in the delivery node's order
    /// for a group on one (our texts it has not taken yet last), else in the order we saw them.
    pub fn history(&self, group: &str, limit: u32) -> Result<Vec<HistoryEntry>, ProfileError> {
        let id = self.find_group(group)?;
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

    /// Runs one of our own commits: create it, merge it at once (with no delivery node there is
    /// nobody to refuse it), and record it, all in one savepoint.
    fn own_commit(
        &mut self,
        id: &GroupId,
        make: impl FnOnce(&Engine, &Provider<'_>, &mut MlsGroup) -> Result<CommitOut, EngineError>,
    ) -> Result<Outgoing, ProfileError> {
        let me = self.me();
        self.with_group(id, |engine, provider, group, conn| {
            let out = make(engine, provider, group)?;
            merge_own_commit(
                engine,
                provider,
                group,
                conn,
                &me,
                &out.commit,
                out.welcome.is_some(),
            )?;
            remember_commit(conn, id, group.epoch().as_u64() - 1, &out.commit)?;
            let mut outgoing = Outgoing::default();
            outgoing.queue(conn, id, Packet::Mls(out.commit))?;
            if let Some(w) = out.welcome {
                let join = Packet::Join {
                    welcome: w.welcome,
                    ratchet_tree: w.ratchet_tree,
                };
                outgoing.queue(conn, id, join)?;
            }
            Ok(outgoing)
        })
    }

    /// Drops outbox rows once their packets are delivered (written to their file or pipe).
    /// This does not wait for the disk: losing it only means sending a packet twice.
    pub fn mark_sent(&self, outbox: &[i64]) -> Result<(), ProfileError> {
        self.store.transaction_without_sync(|| {
            let mut stmt = self
                .store
                .conn()
                .prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
            for seq in outbox {
                stmt.execute([seq])?;
            }
            Ok(())
        })
    }

    /// Packets made but never marked as sent, oldest first.
    pub fn unsent(&self) -> Result<Vec<Unsent>, ProfileError> {
        let mut stmt = self.store.conn().prepare(
            "SELECT o.seq, coalesce(g.name, lower(hex(g.group_id))), o.audience, o.packet
             FROM outbox o JOIN groups g USING (group_id)
             ORDER BY o.seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, Vec<u8>>(3)?))
        })?;
        let mut unsent = Vec::new();
        for row in rows {
            let (seq, group, audience, bytes) = row?;
            let packet = Packet::read_from(&mut bytes.as_slice())
                .ok()
                .flatten()
                .ok_or_else(|| ProfileError::Corrupt(format!("outbox row {seq} is unreadable")))?;
            unsent.push(Unsent {
                seq,
                group,
                audience,
                packet,
            });
        }
        Ok(unsent)
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

    /// Two commits ended one epoch of a group kept in files: with no log to order them, each
    /// side merged one. The commit with the lower hash wins, on every side alike: a member who
    /// applied the other is in a fork and can say nothing more there (its group shows broken,
    /// with what to do); one who applied the winner goes on, and is told the other's committer
    /// must be added again.
    fn judge_fork(&mut self, id: &GroupId, epoch: u64, theirs: &[u8]) -> Result<(), ProfileError> {
        let ours: Option<Vec<u8>> = self.store.query_opt(
            "SELECT commit_hash FROM applied_commits WHERE group_id = ?1 AND epoch = ?2",
            params![id.as_slice(), epoch as i64],
        )?;
        let theirs: [u8; 32] = Sha256::digest(theirs).into();
        let Some(ours) = ours else {
            return Ok(()); // not ours to judge: we joined after that epoch
        };
        if ours.as_slice() <= theirs.as_slice() {
            return Ok(());
        }
        let why = format!(
            "it forked at epoch {epoch}: another member's commit for that epoch wins over the one \
             we applied (the lower hash wins, on every side), so texts here reach nobody on the \
             other side; ask one of them to add you again (`group add` with a new KeyPackage of \
             yours)"
        );
        tracing::info!(group = %hex::encode(id.as_slice()), epoch, "a group kept in files forked, and ours lost");
        self.store.conn().execute(
            "UPDATE groups SET broken = ?2 WHERE group_id = ?1 AND broken IS NULL",
            params![id.as_slice(), why],
        )?;
        Ok(())
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

    fn members_of(&mut self, id: &GroupId) -> Result<Vec<MemberInfo>, ProfileError> {
        self.load(id)?;
        Ok(engine::members(&self.groups[id]))
    }

    fn summary(&mut self, id: &GroupId) -> Result<GroupSummary, ProfileError> {
        // A group we cannot go on in is shown so everywhere, until it continues elsewhere.
        let (name, state): (Option<String>, String) = self.store.conn().query_row(
            "SELECT name, CASE WHEN state != 'active' OR broken IS NULL THEN state
                 WHEN abandoned = 1 THEN 'abandoned'
                 WHEN replaced_by IS NOT NULL THEN 'continued' ELSE 'broken' END
             FROM groups WHERE group_id = ?1",
            [id.as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        self.load(id)?;
        let group = &self.groups[id];
        let settings = engine::group_settings(group)?;
        let me = self.engine.identity().fingerprint();
        Ok(GroupSummary {
            id: hex::encode(id.as_slice()),
            name,
            epoch: group.epoch().as_u64(),
            members: group.members().count(),
            invited: engine::invited(group).iter().filter(|f| **f != me).count(),
            state,
            epoch_authenticator: hex::encode(group.epoch_authenticator().as_slice()),
            admin: engine::may_manage(settings.as_ref(), &me),
            shared_name: settings.as_ref().map(|s| s.name.clone()),
            topic: settings.map(|s| s.topic),
        })
    }

    fn group_ref(&self, id: &GroupId) -> Result<Option<GroupRef>, ProfileError> {
        let name: Option<Option<String>> = self
            .store
            .conn()
            .prepare_cached("SELECT name FROM groups WHERE group_id = ?1")?
            .query_row([id.as_slice()], |r| r.get(0))
            .optional()?;
        Ok(name.map(|name| GroupRef {
            id: hex::encode(id.as_slice()),
            name,
        }))
    }

    fn needs_self_update(&self, id: &GroupId) -> Result<bool, ProfileError> {
        Ok(self
            .store
            .query_opt(
                "SELECT needs_self_update FROM groups WHERE group_id = ?1",
                [id.as_slice()],
            )?
            .unwrap_or(false))
    }

    /// Finds a group by its name or a prefix (4+ hex digits) of its id.
    pub fn find_group(&self, handle: &str) -> Result<GroupId, ProfileError> {
        let conn = self.store.conn();
        let by_name: Option<Vec<u8>> = conn
            .prepare_cached("SELECT group_id FROM groups WHERE name = ?1")?
            .query_row([handle], |r| r.get(0))
            .optional()?;
        if let Some(id) = by_name {
            return Ok(GroupId::from_slice(&id));
        }
        let prefix = handle.to_ascii_lowercase();
        if prefix.len() >= 4 && prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            let mut stmt = conn.prepare(
                "SELECT group_id FROM groups WHERE substr(lower(hex(group_id)), 1, length(?1)) = ?1",
            )?;
            let ids: Vec<Vec<u8>> = stmt
                .query_map([&prefix], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            match ids.as_slice() {
                [one] => return Ok(GroupId::from_slice(one)),
                [] => {}
                _ => return Err(ProfileError::Ambiguous(handle.into(), "group")),
            }
        }
        Err(ProfileError::UnknownGroup(handle.into()))
    }

    fn me(&self) -> MemberInfo {
        let identity = self.identity();
        MemberInfo {
            leaf_index: 0,
            name: Some(identity.name.clone()),
            fingerprint: identity.fingerprint(),
        }
    }
}

impl Outgoing {
    /// Adds a packet, and its outbox row in the current transaction.
    fn queue(
        &mut self,
        conn: &rusqlite::Connection,
        id: &GroupId,
        packet: Packet,
    ) -> Result<(), ProfileError> {
        let audience = match packet {
            Packet::Mls(_) => "group",
            Packet::Join { .. } => "joiners",
        };
        conn.prepare_cached(
            "INSERT INTO outbox (group_id, audience, packet, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            id.as_slice(),
            audience,
            packet.encode()?,
            unix_now()
        ])?;
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
    me: &MemberInfo,
    commit: &[u8],
    adds_members: bool,
) -> Result<engine::Changes, ProfileError> {
    let id = group.group_id().clone();
    let shared_before = shared_name(group)?;
    let changes = engine.merge_pending_commit(provider, group)?;
    if let Some(new) = &changes.settings {
        follow_shared_name(conn, &id, shared_before.as_deref(), &new.name)?;
    }
    mark_processed(conn, commit)?;
    note_invitees(conn, &id, &changes.added)?;
    let epoch = group.epoch().as_u64();
    let event = describe_commit(&changes.added, &changes.removed, changes.settings.as_ref());
    append_history(conn, &id, epoch, me, "event", &event)?;
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
        return Err(ProfileError::WrongKind(format!(
            "invalid group name {name:?}"
        )));
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
        return Err(ProfileError::WrongKind("an empty text is not sent".into()));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(ProfileError::WrongKind(format!(
            "a text may hold at most {} KiB; this one has {} KiB",
            MAX_TEXT_BYTES / 1024,
            text.len().div_ceil(1024)
        )));
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
) -> Result<(), ProfileError> {
    conn.execute(
        "INSERT INTO groups (group_id, name, needs_self_update, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (group_id) DO UPDATE SET state = 'active', needs_self_update = ?3,
             leaving = 0, abandoned = 0, notice = NULL, broken = NULL",
        params![id.as_slice(), name, needs_self_update, unix_now()],
    )?;
    Ok(())
}

fn append_history(
    conn: &rusqlite::Connection,
    id: &GroupId,
    epoch: u64,
    sender: &MemberInfo,
    kind: &str,
    body: &str,
) -> Result<(), ProfileError> {
    contacts::notice_impostor(conn, id, sender)?;
    conn.prepare_cached(
        "INSERT INTO messages (group_id, epoch, sender, sender_fingerprint, kind, body, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        id.as_slice(),
        epoch as i64,
        display_member(sender),
        sender.fingerprint.0,
        kind,
        body.as_bytes(),
        unix_now()
    ])?;
    Ok(())
}

/// Appends a text to history; false (and nothing written) when the sender's post id is there
/// already.
fn append_text(
    conn: &rusqlite::Connection,
    id: &GroupId,
    epoch: u64,
    sender: &MemberInfo,
    content: &Content,
) -> Result<bool, ProfileError> {
    contacts::notice_impostor(conn, id, sender)?;
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO messages
                 (group_id, epoch, sender, sender_fingerprint, kind, body, at, post_id)
             VALUES (?1, ?2, ?3, ?4, 'text', ?5, ?6, ?7)",
        )?
        .execute(params![
            id.as_slice(),
            epoch as i64,
            display_member(sender),
            sender.fingerprint.0,
            content.display().as_bytes(),
            unix_now(),
            content.id.as_slice()
        ])?;
    Ok(inserted == 1)
}

/// Records that `message` was seen; false if it had been already.
/// Remembers when members were added, for removing those who never join.
fn note_invitees(
    conn: &rusqlite::Connection,
    id: &GroupId,
    added: &[MemberInfo],
) -> Result<(), ProfileError> {
    let mut insert = conn.prepare_cached(
        "INSERT OR REPLACE INTO invitees (group_id, fingerprint, since) VALUES (?1, ?2, ?3)",
    )?;
    for member in added {
        insert.execute(params![id.as_slice(), member.fingerprint.0, unix_now()])?;
    }
    Ok(())
}

/// Remembers which commit ended `epoch` of a group, for judging a fork later.
fn remember_commit(
    conn: &rusqlite::Connection,
    id: &GroupId,
    epoch: u64,
    commit: &[u8],
) -> Result<(), ProfileError> {
    let hash: [u8; 32] = Sha256::digest(commit).into();
    conn.prepare_cached(
        "INSERT OR IGNORE INTO applied_commits (group_id, epoch, commit_hash) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![id.as_slice(), epoch as i64, hash])?;
    Ok(())
}

fn mark_processed(conn: &rusqlite::Connection, message: &[u8]) -> Result<bool, ProfileError> {
    let hash: [u8; 32] = Sha256::digest(message).into();
    let inserted = conn
        .prepare_cached("INSERT OR IGNORE INTO processed (message_hash, at) VALUES (?1, ?2)")?
        .execute(params![hash, unix_now()])?;
    Ok(inserted == 1)
}

fn record_incoming(
    conn: &rusqlite::Connection,
    id: &GroupId,
    epoch: u64,
    incoming: &Incoming,
) -> Result<(), ProfileError> {
    match incoming {
        Incoming::Application { sender, plaintext } => match Content::decode(plaintext) {
            // An announcement is an event of the group, not something someone said.
            Ok(content) if content.kind == ContentKind::Continuation => {
                append_history(conn, id, epoch, sender, "event", &content.display())
            }
            // A second copy from the same sender (encrypted again) is dropped by its id.
            Ok(content) => append_text(conn, id, epoch, sender, &content).map(|_| ()),
            Err(e) => {
                let body = format!("sent a message this client cannot read ({e})");
                append_history(conn, id, epoch, sender, "event", &body)
            }
        },
        Incoming::Proposal { sender, summary } => append_history(
            conn,
            id,
            epoch,
            sender,
            "event",
            &format!("proposed: {summary}"),
        ),
        Incoming::Commit {
            sender,
            added,
            removed,
            settings,
            removed_us,
            ..
        } => {
            append_history(
                conn,
                id,
                epoch,
                sender,
                "event",
                &describe_commit(added, removed, settings.as_ref()),
            )?;
            note_invitees(conn, id, added)?;
            if *removed_us {
                conn.execute(
                    "UPDATE groups SET state = 'removed' WHERE group_id = ?1",
                    [id.as_slice()],
                )?;
            }
            Ok(())
        }
    }
}

/// "added bob/phone; removed carol/tablet", or "updated their keys".
pub fn describe_commit(
    added: &[MemberInfo],
    removed: &[MemberInfo],
    settings: Option<&GroupSettings>,
) -> String {
    let list = |ms: &[MemberInfo]| ms.iter().map(display_member).collect::<Vec<_>>().join(", ");
    let mut parts = Vec::new();
    if let Some(s) = settings {
        let topic = match s.topic.as_str() {
            "" => "no topic".to_owned(),
            topic => format!("topic “{topic}”"),
        };
        let admins = match s.admins.len() {
            1 => "1 admin".to_owned(),
            n => format!("{n} admins"),
        };
        parts.push(format!(
            "set the group's name “{}”, {topic}, {admins}",
            s.name
        ));
    }
    if !added.is_empty() {
        parts.push(format!("added {}", list(added)));
    }
    if !removed.is_empty() {
        parts.push(format!("removed {}", list(removed)));
    }
    if parts.is_empty() {
        "updated their keys".into()
    } else {
        parts.join("; ")
    }
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
