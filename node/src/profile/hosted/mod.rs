//! The profile's durable side of a group whose log lives on a delivery node (or, later, on a
//! peer acting as one): the cursor into the log, our changes waiting to be committed, our commit
//! waiting for the log to order it, texts waiting to be posted, and invitations we could not
//! join. Every method is one transaction; none does I/O beyond the profile's database. The
//! [`crate::sync`] core decides when each is called.
//!
//! - **Intents** (add, remove, update) wait in order. The first is made into a commit and stored
//!   as pending (durably) before it is posted. If the log orders it, [`Profile::receive_log`]
//!   (or [`Profile::confirm_commit`]) merges it; if another commit took the epoch, ours is
//!   dropped and its intent goes back to the head of the queue, to be made again.
//! - **Texts** wait in order with their content and post id, and are encrypted when their turn
//!   to be posted comes, so the ratchet generations of our texts follow the log's order (a
//!   receiver tolerates only a few out of order). One whose epoch ended before the node took it
//!   is encrypted again in place: it keeps its place and its post id, so the node answers a
//!   repeat with the first position.
//! - **The log's order is the group's order**: history rows carry their log position.
//!
//! This file holds the types and the group's durable basics (is it ours, hosted, broken, its
//! cursor and token); each concept has a file of its own, named as in [`crate::sync`]:
//! `commits.rs`, `outbox.rs`, `log.rs`, `joins.rs`, `leave.rs`, `continuation.rs`, `events.rs`.

use openmls::prelude::{GroupId, KeyPackage, MlsGroup, Sender};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use mlschat_wire::token::{client_id, token_hash};
use mlschat_wire::{ClientId, EntryKind, PostId, Token, TokenHash};

use super::{
    GroupSummary, HistoryKind, LogError, PlaceError, Profile, ProfileError, Received, SenderState,
    SettingsChange, TextError, append_history, append_text, mark_processed, merge_own_commit,
    resolve_member,
};
use crate::engine::{self, EngineError, Incoming, MemberInfo, Parsed, display_member};
use crate::identity::Fingerprint;
use crate::sealed_tree::{SealError, TreeSecret};
use crate::store::StoreError;
use mlschat_wire::content::{Content, ContentKind, Continuation};
use mlschat_wire::packet::Packet;
use mlschat_wire::settings::GroupSettings;

mod commits;
mod continuation;
mod events;
mod joins;
mod leave;
mod log;
mod outbox;

use outbox::queue_text;

/// What one of our commits is meant to do, kept to make it again at a newer epoch if another
/// member's commit wins ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// Add the owners of these KeyPackages (already claimed).
    Add { key_packages: Vec<Vec<u8>> },
    /// Remove these members, by fingerprint.
    Remove { fingerprints: Vec<String> },
    /// Refresh our own keys.
    Update,
    /// Change the group's shared settings.
    Settings(SettingsChange),
}

/// Our commit, made and stored, waiting for the log to order it.
#[derive(Debug, Clone)]
pub struct PendingCommit {
    pub group_id: Vec<u8>,
    /// The epoch it is for.
    pub epoch: u64,
    /// The token of `epoch`, which lets us post it.
    pub token: Token,
    pub next_token_hash: TokenHash,
    pub message: Vec<u8>,
    /// What it releases to the members it adds, if any.
    pub joiners: Option<Joiners>,
    /// The intent it carries out.
    pub intent: i64,
}

/// What a commit that adds members releases to them: one Welcome, and the new epoch's tree
/// sealed so that only they can fetch and read it ([`crate::sealed_tree`]).
#[derive(Debug, Clone)]
pub struct Joiners {
    pub welcome: Vec<u8>,
    pub sealed_tree: Vec<u8>,
    pub tree_access_hash: TokenHash,
    /// Each joiner's client id and the tree secret sealed to its KeyPackage.
    pub recipients: Vec<(ClientId, Vec<u8>)>,
}

/// The recipients' tree keys as stored: a TLS vector of opaque values, in recipient order.
fn encode_tree_keys(recipients: &[(ClientId, Vec<u8>)]) -> Vec<u8> {
    use tls_codec::Serialize as _;
    let keys: Vec<tls_codec::VLBytes> = recipients.iter().map(|(_, k)| k.clone().into()).collect();
    keys.tls_serialize_detached()
        .expect("serialising to memory")
}

fn decode_tree_keys(bytes: Option<Vec<u8>>) -> Result<Vec<Vec<u8>>, ProfileError> {
    use tls_codec::DeserializeBytes as _;
    let Some(bytes) = bytes else {
        return Ok(Vec::new());
    };
    let keys = Vec::<tls_codec::VLBytes>::tls_deserialize_exact_bytes(&bytes)
        .map_err(|_| ProfileError::Corrupt("pending commit tree keys".into()))?;
    Ok(keys.into_iter().map(Vec::from).collect())
}

/// Where a change stands among the texts of its group: after the texts queued before it was
/// asked (outbox rows up to this number), before those queued after. Outbox rows are numbered
/// by AUTOINCREMENT, so every text queued later has a greater number. A group's texts and
/// changes go out in the order our user asked for them: a text sent after an add reaches the
/// new member, one sent before it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TextsMark(pub i64);

impl TextsMark {
    /// Before every queued text: changes the group needs before anything is said in it (a
    /// joiner's key refresh, adding the members of a group started again, committing proposals).
    pub const FIRST: TextsMark = TextsMark(0);

    /// Whether the outbox row `seq` was queued after the change was asked.
    pub fn is_before(self, seq: i64) -> bool {
        self.0 < seq
    }
}

/// An announced continuation, as kept until it is judged.
#[derive(Debug)]
struct Announced {
    new: GroupId,
    sender: Option<Fingerprint>,
    /// Where it says the old group broke.
    claim: Continuation,
    /// The new group's members and settings when it was announced.
    members: Vec<Fingerprint>,
    settings: Option<GroupSettings>,
}

/// What may be done with an announced continuation.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Follow,
    /// Not yet judgeable: the old group is not ours yet, or not broken for us (yet).
    Wait,
    /// We follow another continuation of it already.
    Moot,
    /// Never followed, for this reason.
    Refuse(String),
}

/// How often a Welcome we could not join is tried (with its tree fetched again) before it is
/// left for our user to see in `status`; the sync core spaces the tries out.
pub const JOIN_ATTEMPTS: u32 = 8;

/// What making the next commit of a group came to.
#[derive(Debug)]
pub enum Prepared {
    /// No intent waits, or the next one waits for texts asked before it.
    Nothing,
    /// A commit is pending now; post it.
    Commit(PendingCommit),
    /// The intent needed no commit any more (everyone to remove is gone): it is done.
    Done { intent: i64 },
    /// The intent cannot be carried out; it is dropped.
    Failed { intent: i64, error: ProfileError },
}

/// One entry of a group's log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub seq: u64,
    pub epoch: u64,
    pub kind: EntryKind,
    pub message: Vec<u8>,
}

/// What reading a stretch of a group's log did.
#[derive(Debug, Default)]
pub struct LogRead {
    /// Intents of ours that are done: their commit is merged.
    pub committed: Vec<i64>,
    /// Our pending commit lost its epoch: its intent is queued again.
    pub lost: bool,
    /// Entries we could not read (reported in history too).
    pub failed: usize,
    /// We can no longer go on in this group (a commit we could not process).
    pub broken: Option<String>,
    /// We are no longer a member.
    pub removed: bool,
    /// Queued texts of ours met in the log (their answer was lost): taken, by outbox row.
    pub posted: Vec<i64>,
}

/// A text queued for a hosted group, not yet taken by the node.
#[derive(Debug)]
pub struct QueuedText {
    /// Its outbox row.
    pub seq: i64,
    /// The epoch it is encrypted for and the MLS message, once it is encrypted.
    pub encrypted: Option<(u64, Vec<u8>)>,
    pub post_id: PostId,
}

/// A group started again announces that it continues the old one before anything else.
#[derive(Debug)]
pub enum Announcement {
    /// Its members are still being added: nothing is posted before the announcement.
    Waiting,
    /// Encrypted at `epoch`, to post.
    Ready {
        epoch: u64,
        message: Vec<u8>,
        post_id: PostId,
    },
}

/// What waits in a group: outbox rows and intents.
#[derive(Debug, Default)]
pub struct Waiting {
    pub texts: Vec<i64>,
    pub intents: Vec<i64>,
}

/// A Welcome from our mailbox that we did not join (yet).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Invitation {
    pub mailbox_id: u64,
    #[schemars(with = "crate::schema::GroupIdHex")]
    pub group: String,
    #[serde(skip)]
    pub group_id: Vec<u8>,
    pub epoch: u64,
    #[serde(skip)]
    pub welcome: Vec<u8>,
    /// Why it was not joined, empty if nothing failed.
    pub failure: String,
    pub attempts: u32,
    /// Who added us (`user/device`) and their key's fingerprint, once the Welcome was opened.
    pub inviter: Option<String>,
    #[schemars(with = "Option<crate::schema::FingerprintHex>")]
    pub inviter_fingerprint: Option<String>,
    /// What our contacts say of the inviter now: `impostor` for a contact's name with another
    /// key, `unknown` for a stranger.
    pub inviter_state: Option<SenderState>,
    /// Our user's answer, when the inviter is not a contact; none otherwise.
    pub request: Option<RequestState>,
    /// The secret of its sealed tree, if it could be opened.
    #[serde(skip)]
    pub tree_secret: Option<TreeSecret>,
}

/// Where an invitation from a stranger stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for our user's answer.
    Waiting,
    Accepted,
    /// We join only to ask to leave, so that the inviter learns it.
    Declined,
}

impl RequestState {
    /// Its name in the profile's `invitations` table.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RequestState::Waiting => "waiting",
            RequestState::Accepted => "accepted",
            RequestState::Declined => "declined",
        }
    }
}

impl rusqlite::types::FromSql for RequestState {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        [
            RequestState::Waiting,
            RequestState::Accepted,
            RequestState::Declined,
        ]
        .into_iter()
        .find(|r| value.as_str() == Ok(r.as_str()))
        .ok_or_else(|| rusqlite::types::FromSqlError::Other("unknown request state".into()))
    }
}

/// One numbered, durable event of any group: a message or a membership change. Ids only grow.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub id: i64,
    /// The group's name, or its id if it has none.
    pub group: String,
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

impl Profile {
    /// Creates a group whose log will live on our delivery node. Returns it and its id.
    pub fn create_hosted_group(
        &mut self,
        name: &str,
    ) -> Result<(GroupSummary, GroupId), ProfileError> {
        let summary = self.create_group_as(name, true)?;
        let id = GroupId::from_slice(&hex::decode(&summary.id).expect("our own hex"));
        Ok((summary, id))
    }

    pub fn is_hosted(&self, id: &GroupId) -> Result<bool, ProfileError> {
        Ok(self
            .store
            .query_opt(
                "SELECT hosted FROM groups WHERE group_id = ?1",
                [id.as_slice()],
            )?
            .unwrap_or(false))
    }

    /// Refuses a group that is not on our delivery node, or that we can no longer act in.
    pub fn ensure_hosted(&self, id: &GroupId) -> Result<(), ProfileError> {
        let group = self.handle(id)?;
        if !self.is_hosted(id)? {
            return Err(PlaceError::KeptInFiles(group).into());
        }
        if let Some(why) = self.broken(id)? {
            return Err(ProfileError::Broken(group.clone(), why));
        }
        if !self.is_member(id)? {
            return Err(ProfileError::NotMember(group.clone()));
        }
        if let Some(next) = self.replaced_by(id)? {
            let why = format!("it continues in group {}", hex::encode(next.as_slice()));
            return Err(ProfileError::Broken(group.clone(), why));
        }
        Ok(())
    }

    /// Why we cannot go on in the group, if we cannot.
    pub fn broken(&self, id: &GroupId) -> Result<Option<String>, ProfileError> {
        Ok(self
            .store
            .query_opt::<Option<String>>(
                "SELECT broken FROM groups WHERE group_id = ?1",
                [id.as_slice()],
            )?
            .flatten())
    }

    /// The group that continues this one, if one does.
    pub fn replaced_by(&self, id: &GroupId) -> Result<Option<GroupId>, ProfileError> {
        let next: Option<Option<Vec<u8>>> = self.store.query_opt(
            "SELECT replaced_by FROM groups WHERE group_id = ?1",
            [id.as_slice()],
        )?;
        Ok(next.flatten().map(|id| GroupId::from_slice(&id)))
    }

    /// The last log entry of the group we processed.
    pub fn log_seq(&self, id: &GroupId) -> Result<u64, ProfileError> {
        Ok(self
            .store
            .query_opt::<i64>(
                "SELECT log_seq FROM groups WHERE group_id = ?1",
                [id.as_slice()],
            )?
            .unwrap_or(0) as u64)
    }

    /// Whether we read this group's log: on our node, still in it, not broken.
    pub fn is_read(&self, id: &GroupId) -> Result<bool, ProfileError> {
        Ok(self
            .store
            .query_opt::<bool>(
                "SELECT hosted = 1 AND state = 'active' AND broken IS NULL FROM groups
                 WHERE group_id = ?1",
                [id.as_slice()],
            )?
            .unwrap_or(false))
    }

    /// Groups on our delivery node that we are still in and can go on in.
    pub fn hosted_groups(&self) -> Result<Vec<GroupId>, ProfileError> {
        let mut stmt = self.store.conn().prepare(
            "SELECT group_id FROM groups
             WHERE hosted = 1 AND state = 'active' AND broken IS NULL ORDER BY group_id",
        )?;
        let rows = stmt.query_map([], |r| Ok(GroupId::from_slice(&r.get::<_, Vec<u8>>(0)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The group's current epoch and its delivery token.
    pub fn group_token(&mut self, id: &GroupId) -> Result<(u64, Token), ProfileError> {
        self.load(id)?;
        let group = &self.groups[id];
        Ok((
            group.epoch().as_u64(),
            engine::epoch_token(&self.crypto, group)?,
        ))
    }

    /// Whether we are still in the group (not removed from it).
    fn is_member(&self, id: &GroupId) -> Result<bool, ProfileError> {
        let active: Option<bool> = self.store.query_opt(
            "SELECT state = 'active' FROM groups WHERE group_id = ?1",
            [id.as_slice()],
        )?;
        Ok(active == Some(true))
    }
}
