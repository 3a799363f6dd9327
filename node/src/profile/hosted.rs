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

use openmls::prelude::{GroupId, KeyPackage, MlsGroup};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use mlschat_wire::token::{client_id, token_hash};
use mlschat_wire::{ClientId, EntryKind, PostId, Token, TokenHash};

use super::{
    GroupSummary, Profile, ProfileError, Received, SenderState, SettingsChange, append_history,
    append_text, mark_processed, merge_own_commit, resolve_member,
};
use crate::engine::{self, EngineError, Incoming, MemberInfo, Parsed, display_member};
use crate::identity::Fingerprint;
use crate::sealed_tree::{SealError, TreeSecret};
use crate::store::{StoreError, unix_now};
use mlschat_wire::content::{Content, ContentKind, Continuation};
use mlschat_wire::packet::Packet;
use mlschat_wire::settings::GroupSettings;

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

/// A Welcome from our mailbox that we could not join (yet).
#[derive(Debug, Clone, Serialize)]
pub struct Invitation {
    pub mailbox_id: u64,
    pub group: String,
    #[serde(skip)]
    pub group_id: Vec<u8>,
    pub epoch: u64,
    #[serde(skip)]
    pub welcome: Vec<u8>,
    pub failure: String,
    pub attempts: u32,
    /// Who added us (`user/device`) and their key's fingerprint, once the Welcome was opened.
    pub inviter: Option<String>,
    pub inviter_fingerprint: Option<String>,
    /// What our contacts say of the inviter now: `impostor` for a contact's name with another
    /// key, `unknown` for a stranger.
    pub inviter_state: Option<SenderState>,
    /// `waiting` for our user's decision (the inviter is not a contact), `accepted`, or none.
    pub request: Option<String>,
    /// The secret of its sealed tree, if it could be opened.
    #[serde(skip)]
    pub tree_secret: Option<TreeSecret>,
}

/// One numbered, durable event: a message or a membership change in one of our groups.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: i64,
    pub group: String,
    pub epoch: u64,
    pub sender: String,
    /// The sender's key fingerprint (hex) and what our contacts say of it.
    pub sender_fingerprint: String,
    pub sender_state: SenderState,
    /// `text` or `event`.
    pub kind: String,
    pub body: String,
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

    /// A group on our delivery node, by name or id prefix, that we can still act in.
    pub fn hosted_group(&self, group: &str) -> Result<GroupId, ProfileError> {
        let id = self.find_group(group)?;
        if !self.is_hosted(&id)? {
            return Err(ProfileError::WrongKind(format!(
                "group {group:?} is kept in files, not on the delivery node: use the file verbs \
                 (with --out) while no daemon runs"
            )));
        }
        if let Some(why) = self.broken(&id)? {
            return Err(ProfileError::Broken(group.into(), why));
        }
        if !self.is_member(&id)? {
            return Err(ProfileError::NotMember(group.into()));
        }
        if let Some(next) = self.replaced_by(&id)? {
            let why = format!("it continues in group {}", hex::encode(next.as_slice()));
            return Err(ProfileError::Broken(group.into(), why));
        }
        Ok(id)
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

    /// Where a change asked now stands: after every text queued so far.
    pub fn texts_mark(&self) -> Result<TextsMark, ProfileError> {
        let seq = self
            .store
            .conn()
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM outbox")?
            .query_row([], |r| r.get(0))?;
        Ok(TextsMark(seq))
    }

    /// Where the group's next change stands among its texts, if a change waits.
    pub fn next_change_mark(&self, id: &GroupId) -> Result<Option<TextsMark>, ProfileError> {
        let mark: Option<i64> = self
            .store
            .conn()
            .prepare_cached("SELECT MIN(texts_before) FROM intents WHERE group_id = ?1")?
            .query_row([id.as_slice()], |r| r.get(0))?;
        Ok(mark.map(TextsMark))
    }

    /// Queues a change of the group, asked at `mark`; returns its number.
    pub fn queue_intent(
        &mut self,
        group: &str,
        intent: &Intent,
        mark: TextsMark,
    ) -> Result<i64, ProfileError> {
        let id = self.hosted_group(group)?;
        let json = serde_json::to_string(intent).expect("an intent serialises");
        self.store.transaction(|| {
            self.store.conn().execute(
                "INSERT INTO intents (group_id, intent, texts_before) VALUES (?1, ?2, ?3)",
                params![id.as_slice(), json, mark.0],
            )?;
            Ok(self.store.conn().last_insert_rowid())
        })
    }

    /// The node took our commit but did not deliver the Welcomes of `clients` (their mailboxes
    /// are full): they are in the group's tree and can never join, so our next commit removes
    /// them again, before anything else, and the history says why.
    pub fn welcomes_undelivered(
        &mut self,
        id: &GroupId,
        clients: &[ClientId],
    ) -> Result<(), ProfileError> {
        if clients.is_empty() {
            return Ok(());
        }
        let fingerprints: Vec<String> = clients.iter().map(hex::encode).collect();
        let intent = Intent::Remove {
            fingerprints: fingerprints.clone(),
        };
        let json = serde_json::to_string(&intent).expect("an intent serialises");
        let (epoch, _) = self.group_token(id)?;
        let me = self.me();
        self.store.transaction(|| {
            let conn = self.store.conn();
            conn.execute(
                "INSERT INTO intents (group_id, intent, texts_before) VALUES (?1, ?2, ?3)",
                params![id.as_slice(), json, TextsMark::FIRST.0],
            )?;
            for fingerprint in &fingerprints {
                let body = format!(
                    "the delivery node could not deliver the invitation of the member with key \
                     {} (their mailbox is full): they are removed again",
                    &fingerprint[..16]
                );
                append_history(conn, id, epoch, &me, "event", &body)?;
            }
            Ok(())
        })
    }

    /// Makes the group's first waiting intent (in the order asked) into our pending commit, in
    /// one transaction, once the texts asked before it have gone.
    pub fn prepare_next_commit(&mut self, id: &GroupId) -> Result<Prepared, ProfileError> {
        let pending: Option<i64> = self.store.query_opt(
            "SELECT 1 FROM pending_commits WHERE group_id = ?1",
            [id.as_slice()],
        )?;
        if pending.is_some() {
            return Err(ProfileError::WrongKind(
                "a commit of ours is still waiting for the log".into(),
            ));
        }
        // An add whose KeyPackages were claimed late was asked before changes queued earlier.
        let next: Option<(i64, String, bool)> = self
            .store
            .conn()
            .query_row(
                "SELECT seq, intent, EXISTS (SELECT 1 FROM outbox o WHERE o.group_id = i.group_id
                    AND o.audience = 'group' AND o.seq <= i.texts_before)
                 FROM intents i WHERE group_id = ?1 ORDER BY texts_before, seq LIMIT 1",
                [id.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((seq, json, texts_first)) = next else {
            return Ok(Prepared::Nothing);
        };
        // Proposals we hold (a member asked to leave) forbid any message before a commit: then
        // the next change goes first and takes them with it.
        if texts_first && !self.holds_proposals(id)? {
            return Ok(Prepared::Nothing);
        }
        let intent: Intent = serde_json::from_str(&json)
            .map_err(|e| ProfileError::Corrupt(format!("intent {seq}: {e}")))?;
        self.in_transaction(|p| {
            p.store
                .conn()
                .execute("DELETE FROM intents WHERE seq = ?1", [seq])?;
            match p.make_commit(id, seq, &intent, &json) {
                Ok(Some(pending)) => Ok(Prepared::Commit(pending)),
                Ok(None) => Ok(Prepared::Done { intent: seq }),
                Err(e @ ProfileError::Store(_)) => Err(e),
                Err(error) => Ok(Prepared::Failed { intent: seq, error }),
            }
        })
    }

    /// Makes and stores our commit for `intent`; `None` when there is nothing left to do.
    fn make_commit(
        &mut self,
        id: &GroupId,
        intent_seq: i64,
        intent: &Intent,
        intent_json: &str,
    ) -> Result<Option<PendingCommit>, ProfileError> {
        let key_packages = match intent {
            Intent::Add { key_packages } => key_packages
                .iter()
                .map(|kp| engine::validate_key_package(&self.crypto, kp))
                .collect::<Result<Vec<KeyPackage>, _>>()?,
            _ => Vec::new(),
        };
        let leaves: Vec<u32> = match intent {
            Intent::Remove { fingerprints } => {
                let members = self.members_of(id)?;
                fingerprints
                    .iter()
                    .filter_map(|f| resolve_member(&members, f).ok())
                    .map(|m| m.leaf_index)
                    .collect()
            }
            _ => Vec::new(),
        };
        if matches!(intent, Intent::Remove { .. }) && leaves.is_empty() {
            return Ok(None);
        }
        let settings = match intent {
            Intent::Settings(change) => {
                let new = self.settings_after(id, change)?;
                if Some(&new) == engine::group_settings(&self.groups[id])?.as_ref() {
                    return Ok(None); // already so (another admin's commit did it)
                }
                Some(new)
            }
            _ => None,
        };
        let recipients: Vec<ClientId> = key_packages
            .iter()
            .map(|kp| client_id(kp.leaf_node().signature_key().as_slice()))
            .collect();
        self.with_group(id, |engine, provider, group, conn| {
            let token = engine::epoch_token(provider.crypto, group)?;
            let out = match intent {
                Intent::Add { .. } => engine.add_members(provider, group, &key_packages)?,
                Intent::Remove { .. } => engine.remove_members(provider, group, &leaves)?,
                Intent::Update => engine.self_update(provider, group)?,
                Intent::Settings(_) => {
                    let new = settings.as_ref().expect("made above");
                    engine.change_settings(provider, group, new)?
                }
            };
            let next_token = engine::pending_epoch_token(provider.crypto, group)?;
            let epoch = group.epoch().as_u64();
            let joiners = match out.welcome {
                None => None,
                Some(welcome) => {
                    let secret = TreeSecret::random(provider.crypto)?;
                    let (group_id, next) = (id.as_slice(), epoch + 1);
                    let sealed_tree =
                        secret.seal_tree(provider.crypto, group_id, next, &welcome.ratchet_tree)?;
                    let keys = key_packages
                        .iter()
                        .map(|kp| secret.seal_to(provider.crypto, kp, group_id, next))
                        .collect::<Result<Vec<_>, _>>()?;
                    Some(Joiners {
                        welcome: welcome.welcome,
                        sealed_tree,
                        tree_access_hash: token_hash(&secret.access()),
                        recipients: recipients.into_iter().zip(keys).collect(),
                    })
                }
            };
            let pending = PendingCommit {
                group_id: id.as_slice().to_vec(),
                epoch,
                token,
                next_token_hash: token_hash(&next_token),
                message: out.commit,
                joiners,
                intent: intent_seq,
            };
            let joiners = pending.joiners.as_ref();
            conn.execute(
                "INSERT INTO pending_commits (group_id, epoch, message, welcome, ratchet_tree,
                     recipients, next_token_hash, intent, intent_seq, tree_keys, tree_access_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    pending.group_id,
                    pending.epoch as i64,
                    pending.message,
                    joiners.map(|j| &j.welcome),
                    joiners.map(|j| &j.sealed_tree),
                    joiners.map_or(Vec::new(), |j| j
                        .recipients
                        .iter()
                        .flat_map(|(r, _)| r.to_vec())
                        .collect()),
                    pending.next_token_hash,
                    intent_json,
                    intent_seq,
                    joiners.map(|j| encode_tree_keys(&j.recipients)),
                    joiners.map(|j| j.tree_access_hash.to_vec()),
                ],
            )?;
            Ok(Some(pending))
        })
    }

    /// Our commit waiting for the log in this group, if any.
    pub fn pending_commit(&mut self, id: &GroupId) -> Result<Option<PendingCommit>, ProfileError> {
        type Row = (
            u64,
            Vec<u8>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Vec<u8>,
            Vec<u8>,
            Option<i64>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
        );
        let row: Option<Row> = self
            .store
            .conn()
            .query_row(
                "SELECT epoch, message, welcome, ratchet_tree, recipients, next_token_hash,
                        intent_seq, tree_keys, tree_access_hash
                 FROM pending_commits WHERE group_id = ?1",
                [id.as_slice()],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                    ))
                },
            )
            .optional()?;
        let Some((epoch, message, welcome, sealed_tree, recipients, next, intent, keys, access)) =
            row
        else {
            return Ok(None);
        };
        let corrupt = |what: &str| ProfileError::Corrupt(format!("pending commit {what}"));
        let joiners = match welcome {
            None => None,
            Some(welcome) => {
                let mut keys = decode_tree_keys(keys)?.into_iter();
                Some(Joiners {
                    welcome,
                    sealed_tree: sealed_tree.unwrap_or_default(),
                    tree_access_hash: access
                        .unwrap_or(vec![0; 32])
                        .try_into()
                        .map_err(|_| corrupt("access hash"))?,
                    recipients: recipients
                        .chunks_exact(32)
                        .map(|c| {
                            let id: ClientId = c.try_into().expect("32-byte chunks");
                            (id, keys.next().unwrap_or_default())
                        })
                        .collect(),
                })
            }
        };
        let (_, token) = self.group_token(id)?;
        Ok(Some(PendingCommit {
            group_id: id.as_slice().to_vec(),
            epoch,
            token,
            next_token_hash: next.try_into().map_err(|_| corrupt("token hash"))?,
            message,
            joiners,
            intent: intent.unwrap_or(0),
        }))
    }

    /// The log ordered our pending commit at `seq`, right after our cursor: merge it. Returns
    /// its intent. (When entries lie between, read them with [`Self::receive_log`] instead:
    /// it merges ours when it meets it.)
    pub fn confirm_commit(&mut self, id: &GroupId, seq: u64) -> Result<i64, ProfileError> {
        let cursor = self.log_seq(id)?;
        if seq != cursor + 1 {
            return Err(ProfileError::WrongKind(format!(
                "our commit is at log position {seq}, but we have read only up to {cursor}"
            )));
        }
        self.in_transaction(|p| {
            let before = p.last_history_seq()?;
            let intent = p.confirm_in_transaction(id)?;
            p.stamp_history(id, before, seq)?;
            p.set_log_seq(id, seq)?;
            Ok(intent)
        })
    }

    fn confirm_in_transaction(&mut self, id: &GroupId) -> Result<i64, ProfileError> {
        let me = self.me();
        let (message, adds, intent): (Vec<u8>, bool, Option<i64>) = self.store.conn().query_row(
            "SELECT message, welcome IS NOT NULL, intent_seq FROM pending_commits
             WHERE group_id = ?1",
            [id.as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        self.with_group(id, |engine, provider, group, conn| {
            merge_own_commit(engine, provider, group, conn, &me, &message, adds)?;
            conn.execute(
                "DELETE FROM pending_commits WHERE group_id = ?1",
                [id.as_slice()],
            )?;
            Ok(())
        })?;
        Ok(intent.unwrap_or(0))
    }

    /// Another commit took our pending commit's epoch: drop ours and put its intent back at the
    /// head of the queue (same number), to be made again at the new epoch.
    fn abandon_in_transaction(&mut self, id: &GroupId) -> Result<(), ProfileError> {
        let (intent, seq): (String, Option<i64>) = self.store.conn().query_row(
            "SELECT intent, intent_seq FROM pending_commits WHERE group_id = ?1",
            [id.as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        self.with_group(id, |_, provider, group, conn| {
            group
                .clear_pending_commit(&provider.storage)
                .map_err(StoreError::from)?;
            conn.execute(
                "DELETE FROM pending_commits WHERE group_id = ?1",
                [id.as_slice()],
            )?;
            conn.execute(
                "INSERT INTO intents (seq, group_id, intent) VALUES (?1, ?2, ?3)",
                params![seq, id.as_slice(), intent],
            )?;
            Ok(())
        })
    }

    /// The node will never take our pending commit (it refused it for good): drop it, and its
    /// intent with it. Returns the intent.
    pub fn fail_commit(&mut self, id: &GroupId) -> Result<i64, ProfileError> {
        self.in_transaction(|p| {
            let intent: Option<i64> = p.store.query_opt(
                "SELECT intent_seq FROM pending_commits WHERE group_id = ?1",
                [id.as_slice()],
            )?;
            p.abandon_in_transaction(id)?;
            p.store
                .conn()
                .execute("DELETE FROM intents WHERE seq = ?1", [intent.unwrap_or(0)])?;
            Ok(intent.unwrap_or(0))
        })
    }

    /// The node will never take a queued text (it refused it for good): it leaves the outbox,
    /// and its history says so.
    pub fn fail_text(&mut self, outbox_seq: i64, why: &str) -> Result<(), ProfileError> {
        self.in_transaction(|p| {
            let (group_id, history_seq): (Vec<u8>, Option<i64>) = p.store.conn().query_row(
                "SELECT group_id, history_seq FROM outbox WHERE seq = ?1",
                [outbox_seq],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let id = GroupId::from_slice(&group_id);
            p.store
                .conn()
                .execute("DELETE FROM outbox WHERE seq = ?1", [outbox_seq])?;
            let (epoch, _) = p.group_token(&id)?;
            let body = format!(
                "the text above (#{}) was not delivered: {why}",
                history_seq.unwrap_or(0)
            );
            append_history(p.store.conn(), &id, epoch, &p.me(), "event", &body)?;
            Ok(())
        })
    }

    /// Outbox rows and intents waiting in a group.
    pub fn waiting_in(&mut self, id: &GroupId) -> Result<Waiting, ProfileError> {
        let list = |sql: &str| -> Result<Vec<i64>, ProfileError> {
            let mut stmt = self.store.conn().prepare(sql)?;
            let rows = stmt.query_map([id.as_slice()], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        };
        Ok(Waiting {
            texts: list("SELECT seq FROM outbox WHERE group_id = ?1")?,
            intents: list(
                "SELECT seq FROM intents WHERE group_id = ?1
                 UNION ALL SELECT intent_seq FROM pending_commits WHERE group_id = ?1",
            )?,
        })
    }

    /// The newest history row.
    fn last_history_seq(&self) -> Result<i64, ProfileError> {
        Ok(self
            .store
            .query_opt::<i64>("SELECT coalesce(max(seq), 0) FROM messages", [])?
            .unwrap_or(0))
    }

    /// Gives the group's history rows written after `after` the log position `log_seq`.
    fn stamp_history(&self, id: &GroupId, after: i64, log_seq: u64) -> Result<(), ProfileError> {
        self.store
            .conn()
            .prepare_cached("UPDATE messages SET log_seq = ?3 WHERE group_id = ?1 AND seq > ?2")?
            .execute(params![id.as_slice(), after, log_seq as i64])?;
        Ok(())
    }

    fn set_log_seq(&self, id: &GroupId, seq: u64) -> Result<(), ProfileError> {
        self.store.conn().execute(
            "UPDATE groups SET log_seq = max(log_seq, ?2) WHERE group_id = ?1",
            params![id.as_slice(), seq as i64],
        )?;
        Ok(())
    }

    /// Processes entries of a group's log in order, in one transaction, moving the group's
    /// cursor past each. Entries at or before the cursor are skipped (delivered twice); a
    /// jump past the cursor is recorded as missing messages; an entry we cannot read is
    /// reported in history and passed. A commit we cannot process stops the group: the cursor
    /// stays before it and the group is marked broken, since every later entry depends on it.
    pub fn receive_log(
        &mut self,
        id: &GroupId,
        entries: &[LogEntry],
    ) -> Result<LogRead, ProfileError> {
        self.in_transaction(|p| {
            let mut read = LogRead::default();
            let mut cursor = p.log_seq(id)?;
            for entry in entries {
                if entry.seq <= cursor {
                    continue; // delivered twice
                }
                if p.broken(id)?.is_some() || !p.is_active(id)? {
                    break;
                }
                let before = p.last_history_seq()?;
                if entry.seq > cursor + 1 {
                    let missing = entry.seq - cursor - 1;
                    let (epoch, _) = p.group_token(id)?;
                    let body = format!(
                        "{missing} entries of the log (positions {} to {}) are gone from the \
                         delivery node; messages among them are lost to us",
                        cursor + 1,
                        entry.seq - 1
                    );
                    append_history(p.store.conn(), id, epoch, &p.me(), "event", &body)?;
                }
                match p.receive_entry(id, entry)? {
                    Outcome::Read => {}
                    Outcome::Ours(outbox) => read.posted.push(outbox),
                    Outcome::Confirmed(intent) => read.committed.push(intent),
                    Outcome::Lost => read.lost = true,
                    Outcome::Unreadable(e) => {
                        read.failed += 1;
                        let body = format!(
                            "the message at log position {} could not be read: {e}",
                            entry.seq
                        );
                        tracing::warn!(group = %hex::encode(id.as_slice()), seq = entry.seq, error = %e, "unreadable log entry");
                        append_history(p.store.conn(), id, entry.epoch, &p.me(), "event", &body)?;
                    }
                    Outcome::Abandoned(why) => {
                        p.mark_abandoned(id, entry.epoch, &why)?;
                        p.stamp_history(id, before, entry.seq)?;
                        p.set_log_seq(id, entry.seq)?;
                        read.broken = Some(why);
                        break;
                    }
                    Outcome::Broken(e) => {
                        let why = format!(
                            "the commit at log position {} (epoch {}) could not be processed: {e}",
                            entry.seq, entry.epoch
                        );
                        tracing::error!(group = %hex::encode(id.as_slice()), %why, "group broken");
                        p.store.conn().execute(
                            "UPDATE groups SET broken = ?2 WHERE group_id = ?1",
                            params![id.as_slice(), why],
                        )?;
                        let body = format!("cannot go on in this group: {why}");
                        append_history(p.store.conn(), id, entry.epoch, &p.me(), "event", &body)?;
                        p.stamp_history(id, before, cursor)?;
                        let kind = format!("broken:{}", hex::encode(id.as_slice()));
                        let text = format!("group {} is broken for you: {why}", hex::encode(id.as_slice()));
                        super::alerts::raise_alert(p.store.conn(), &kind, &text, unix_now() as u64)?;
                        // Whoever accepted that commit went on without us: an admin tells them.
                        p.leave_notice(id, entry.epoch, &entry.message)?;
                        // An admin may have announced already where it goes on.
                        p.follow_announcements(id)?;
                        read.broken = Some(why);
                        break;
                    }
                }
                p.stamp_history(id, before, entry.seq)?;
                p.set_log_seq(id, entry.seq)?;
                cursor = entry.seq;
            }
            read.removed = !p.is_active(id)?;
            Ok(read)
        })
    }

    fn is_active(&mut self, id: &GroupId) -> Result<bool, ProfileError> {
        self.load(id)?;
        Ok(self.groups[id].is_active())
    }

    fn receive_entry(&mut self, id: &GroupId, entry: &LogEntry) -> Result<Outcome, ProfileError> {
        if entry.kind == EntryKind::Notice {
            // Not MLS: a signed word, judged on its own whatever its epoch.
            return Ok(match self.abandoned_by(id, &entry.message)? {
                Some(why) => Outcome::Abandoned(why),
                None => Outcome::Read,
            });
        }
        self.load(id)?;
        let epoch = self.groups[id].epoch().as_u64();
        if entry.epoch < epoch {
            // From before we joined, or of an epoch we left by our own commit: not for us.
            return Ok(Outcome::Read);
        }
        let mut lost = false;
        if entry.kind == EntryKind::Commit {
            let ours: Option<Vec<u8>> = self
                .store
                .conn()
                .query_row(
                    "SELECT message FROM pending_commits WHERE group_id = ?1 AND epoch = ?2",
                    params![id.as_slice(), entry.epoch as i64],
                    |r| r.get(0),
                )
                .optional()?;
            match ours {
                Some(ours) if ours == entry.message => {
                    return Ok(Outcome::Confirmed(self.confirm_in_transaction(id)?));
                }
                Some(_) => {
                    self.abandon_in_transaction(id)?;
                    lost = true;
                }
                None => {}
            }
        }
        match self.receive_one(&Packet::Mls(entry.message.clone())) {
            Ok(received) => {
                match &received {
                    Received::Message {
                        incoming: Incoming::Commit { added, .. },
                        ..
                    } => {
                        self.check_members_against_contacts(added)?;
                        self.leave_again(id)?;
                    }
                    Received::Message {
                        incoming: Incoming::Proposal { sender, .. },
                        ..
                    } if self.commits_proposals_of(id, sender)? => self.commit_proposals(id)?,
                    Received::Message {
                        incoming: Incoming::Application { sender, plaintext },
                        ..
                    } => {
                        if let Ok(content) = Content::decode(plaintext)
                            && content.kind == ContentKind::Continuation
                            && let Ok(continuation) = Continuation::decode(&content.body)
                        {
                            self.announced_continuation(id, sender, &continuation)?;
                        }
                    }
                    _ => {}
                }
                Ok(if lost { Outcome::Lost } else { Outcome::Read })
            }
            Err(ProfileError::Duplicate) => self.meet_own_text(id, entry),
            Err(e @ ProfileError::Store(_)) => Err(e),
            Err(e) if entry.kind == EntryKind::Commit => Ok(Outcome::Broken(e)),
            Err(e) => Ok(Outcome::Unreadable(e)),
        }
    }

    /// A message we sent, met in the log: if it is still queued (the node's answer was lost),
    /// the log's position is its position, and it leaves the queue.
    fn meet_own_text(&mut self, id: &GroupId, entry: &LogEntry) -> Result<Outcome, ProfileError> {
        let packet = Packet::Mls(entry.message.clone()).encode()?;
        let queued: Option<i64> = self
            .store
            .conn()
            .query_row(
                "SELECT seq FROM outbox WHERE group_id = ?1 AND packet = ?2",
                params![id.as_slice(), packet],
                |r| r.get(0),
            )
            .optional()?;
        let Some(outbox) = queued else {
            return Ok(Outcome::Read);
        };
        self.store.conn().execute(
            "UPDATE messages SET log_seq = ?2
             WHERE seq = (SELECT history_seq FROM outbox WHERE seq = ?1)",
            params![outbox, entry.seq as i64],
        )?;
        self.store
            .conn()
            .execute("DELETE FROM outbox WHERE seq = ?1", [outbox])?;
        Ok(Outcome::Ours(outbox))
    }

    /// Joins a group from a Welcome in our node's mailbox (entry `mailbox_id`), with the tree the
    /// node keeps; the group is then read from its log. A Welcome we cannot join is kept as an
    /// [`Invitation`], to be tried again and listed, and never acknowledged unseen.
    /// `sealed_tree` is the tree as the node keeps it, opened here with the tree `secret`, or
    /// why there is none.
    pub fn join_hosted(
        &mut self,
        mailbox_id: u64,
        group_id: &[u8],
        epoch: u64,
        welcome: &[u8],
        secret: Option<&TreeSecret>,
        sealed_tree: Result<Vec<u8>, ProfileError>,
    ) -> Result<Result<GroupSummary, String>, ProfileError> {
        let tree = sealed_tree.and_then(|sealed| {
            let secret = secret.ok_or(SealError::DoesNotOpen)?;
            Ok(secret.open_tree(&self.crypto, group_id, epoch, &sealed)?)
        });
        let id = GroupId::from_slice(group_id);
        let request: Option<Option<String>> = self.store.query_opt(
            "SELECT request FROM invitations WHERE mailbox_id = ?1",
            [mailbox_id as i64],
        )?;
        let request = request.flatten();
        let declined = request.as_deref() == Some("declined");
        let admission = match request.as_deref() {
            Some("accepted" | "declined") => None,
            Some(_) => return Ok(Err("it waits for your decision".to_owned())),
            None => Some(self.admission()?),
        };
        self.in_transaction(|p| {
            // Added back after a removal: the old MLS state is useless (a new leaf, new keys)
            // and in the way; the history stays.
            p.forget_if_removed(&id)?;
            let member: Option<String> = p.store.query_opt(
                "SELECT state FROM groups WHERE group_id = ?1",
                [id.as_slice()],
            )?;
            if member.as_deref() == Some("active") {
                // In it already (an invitation tried again, or delivered twice): joining again
                // would throw away the state we have.
                p.store.conn().execute(
                    "DELETE FROM invitations WHERE mailbox_id = ?1",
                    [mailbox_id as i64],
                )?;
                p.store.conn().execute(
                    "UPDATE home SET mailbox_seq = max(mailbox_seq, ?1) WHERE id = 1",
                    [mailbox_id as i64],
                )?;
                return Ok(Err("joined already".to_owned()));
            }
            let joined = match tree.and_then(|tree| p.join(welcome, &tree, admission.as_ref())) {
                Ok(Received::Joined { group, .. }) => {
                    let joined = GroupId::from_slice(&hex::decode(&group.id).expect("our hex"));
                    p.store.conn().execute(
                        "UPDATE groups SET hosted = 1, broken = NULL WHERE group_id = ?1",
                        [joined.as_slice()],
                    )?;
                    // The join sits where we are in the log: at its start when we first join,
                    // after what we had read when we are added back.
                    let join_row = p.last_history_seq()?;
                    let cursor = p.log_seq(&joined)?;
                    p.stamp_history(&joined, join_row - 1, cursor)?;
                    if declined {
                        // In only to leave: our proposal goes out first, and the group is not
                        // shown to our user.
                        p.store.conn().execute(
                            "UPDATE groups SET leaving = 1, declined = 1 WHERE group_id = ?1",
                            [joined.as_slice()],
                        )?;
                        p.queue_leave(&joined)?;
                    } else {
                        // Our leaf came from a KeyPackage: refresh it before we send.
                        p.store.conn().execute(
                            "INSERT INTO intents (group_id, intent) VALUES (?1, ?2)",
                            params![
                                joined.as_slice(),
                                serde_json::to_string(&Intent::Update).expect("serialises")
                            ],
                        )?;
                    }
                    p.store.conn().execute(
                        "DELETE FROM invitations WHERE mailbox_id = ?1",
                        [mailbox_id as i64],
                    )?;
                    p.follow_announcements(&joined)?;
                    Ok(group)
                }
                Ok(Received::Message { .. }) => Err("not a Welcome".to_owned()),
                // Joined already (the mailbox entry was delivered twice).
                Err(ProfileError::Duplicate) => {
                    p.store.conn().execute(
                        "DELETE FROM invitations WHERE mailbox_id = ?1",
                        [mailbox_id as i64],
                    )?;
                    Err("joined already".to_owned())
                }
                Err(e @ ProfileError::Store(_)) => return Err(e),
                Err(ProfileError::Request {
                    inviter,
                    fingerprint,
                    state,
                }) => {
                    let why = ProfileError::Request {
                        inviter: inviter.clone(),
                        fingerprint,
                        state,
                    }
                    .to_string();
                    p.store.conn().execute(
                        "INSERT INTO invitations (mailbox_id, group_id, epoch, welcome, failure,
                             attempts, tree_secret, inviter, inviter_fingerprint, request)
                         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8, 'waiting')
                         ON CONFLICT (mailbox_id) DO UPDATE
                         SET request = 'waiting', failure = ?5, inviter = ?7,
                             inviter_fingerprint = ?8",
                        params![
                            mailbox_id as i64,
                            group_id,
                            epoch as i64,
                            welcome,
                            why,
                            secret.map(|s| s.as_bytes().to_vec()),
                            inviter,
                            fingerprint.0.to_vec()
                        ],
                    )?;
                    let kind = format!("request:{mailbox_id}");
                    let text = format!(
                        "{inviter} ({}, key {fingerprint}) invites you to group {}: \
                         `mlschat request accept {}` to join, `mlschat request decline {}` not to",
                        match state {
                            SenderState::Impostor => "NOT your contact of that name",
                            _ => "not a contact",
                        },
                        hex::encode(group_id),
                        hex::encode(group_id),
                        hex::encode(group_id),
                    );
                    super::alerts::raise_alert(p.store.conn(), &kind, &text, unix_now() as u64)?;
                    Err(why)
                }
                Err(ProfileError::Engine(EngineError::NotAllowed(why))) => {
                    // Final: no retry makes a non-admin's add acceptable to the group's members.
                    tracing::warn!(mailbox_id, %why, "refused to join a fork");
                    let kind = format!("fork:{}", hex::encode(group_id));
                    let text = format!("not joined group {}: {why}", hex::encode(group_id));
                    super::alerts::raise_alert(p.store.conn(), &kind, &text, unix_now() as u64)?;
                    p.store.conn().execute(
                        "DELETE FROM invitations WHERE mailbox_id = ?1",
                        [mailbox_id as i64],
                    )?;
                    Err(why)
                }
                Err(e) => {
                    tracing::warn!(mailbox_id, error = %e, "could not join from a Welcome");
                    p.store.conn().execute(
                        "INSERT INTO invitations (mailbox_id, group_id, epoch, welcome, failure,
                             attempts, tree_secret)
                         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)
                         ON CONFLICT (mailbox_id) DO UPDATE
                         SET failure = ?5, attempts = attempts + 1",
                        params![
                            mailbox_id as i64,
                            group_id,
                            epoch as i64,
                            welcome,
                            e.to_string(),
                            secret.map(|s| s.as_bytes().to_vec())
                        ],
                    )?;
                    Err(e.to_string())
                }
            };
            p.store.conn().execute(
                "UPDATE home SET mailbox_seq = max(mailbox_seq, ?1) WHERE id = 1",
                [mailbox_id as i64],
            )?;
            Ok(joined)
        })
    }

    /// Whether a Welcome from our mailbox is for one of our KeyPackages that can still be
    /// joined with: anything else (junk, a Welcome for someone else, or for a package whose
    /// keys are gone) can never be joined, and is passed at once rather than kept and retried.
    pub fn welcome_is_for_us(&self, welcome: &[u8]) -> Result<bool, ProfileError> {
        let Ok(Parsed::Welcome(welcome)) = engine::parse_message(welcome) else {
            return Ok(false);
        };
        let mut stmt = self.store.conn().prepare_cached(
            "SELECT 1 FROM key_packages WHERE key_package_ref = ?1
                 AND forgotten_at IS NULL AND (last_resort = 1 OR consumed_at IS NULL)",
        )?;
        for secret in welcome.secrets() {
            if stmt.exists([secret.new_member().as_slice()])? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Our mailbox entry `mailbox_id` holds nothing we can join: we pass it (the cursor moves
    /// past it, so it is acknowledged with the entries after it).
    pub fn pass_mailbox_entry(&mut self, mailbox_id: u64) -> Result<(), ProfileError> {
        self.store.conn().execute(
            "UPDATE home SET mailbox_seq = max(mailbox_seq, ?1) WHERE id = 1",
            [mailbox_id as i64],
        )?;
        Ok(())
    }

    /// Welcomes we did not join yet: those we could not, and requests (from people who are not
    /// contacts) waiting for our user.
    pub fn invitations(&self) -> Result<Vec<Invitation>, ProfileError> {
        let states = self.sender_states()?;
        let mut stmt = self.store.conn().prepare(
            "SELECT mailbox_id, group_id, epoch, welcome, failure, attempts, tree_secret,
                 inviter, inviter_fingerprint, request
             FROM invitations ORDER BY mailbox_id",
        )?;
        let rows = stmt.query_map([], |r| {
            let group_id: Vec<u8> = r.get(1)?;
            let secret: Option<Vec<u8>> = r.get(6)?;
            let inviter: Option<String> = r.get(7)?;
            let fingerprint: Option<Vec<u8>> = r.get(8)?;
            let inviter_state = inviter
                .as_deref()
                .zip(fingerprint.as_deref())
                .map(|(name, fingerprint)| states.of(name, fingerprint));
            Ok(Invitation {
                mailbox_id: r.get::<_, i64>(0)? as u64,
                group: hex::encode(&group_id),
                group_id,
                epoch: r.get::<_, i64>(2)? as u64,
                welcome: r.get(3)?,
                failure: r.get(4)?,
                attempts: r.get(5)?,
                inviter,
                inviter_fingerprint: fingerprint.map(hex::encode),
                inviter_state,
                request: r.get(9)?,
                tree_secret: secret.as_deref().and_then(TreeSecret::from_bytes),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The invitations to try (again) now, each with its tree fetched again, at every poll and
    /// reconnection: the node's tree may come back, and the cost is one fetch. A request waits
    /// for our user, unless its inviter has become someone we admit meanwhile (a contact, or a
    /// member of a group of ours that broke and that they start again).
    pub fn invitations_to_try(&mut self, every: bool) -> Result<Vec<Invitation>, ProfileError> {
        // After `JOIN_ATTEMPTS` failed tries one stays listed (by `status`), tried again only
        // when our user asks (`every`).
        let all: Vec<Invitation> = self
            .invitations()?
            .into_iter()
            .filter(|i| every || i.request.is_some() || i.attempts < JOIN_ATTEMPTS)
            .collect();
        if all.iter().all(|i| i.request.as_deref() != Some("waiting")) {
            return Ok(all);
        }
        let admission = self.admission()?;
        let admitted = |i: &Invitation| -> bool {
            let fingerprint = i
                .inviter_fingerprint
                .as_deref()
                .and_then(|f| hex::decode(f).ok());
            let Some(fingerprint) = fingerprint.and_then(|f| <[u8; 32]>::try_from(f).ok()) else {
                return false;
            };
            let name = i.inviter.as_deref().unwrap_or_default();
            admission.refuses(name, &Fingerprint(fingerprint)).is_none()
        };
        let mut to_try = Vec::new();
        for invitation in all {
            if invitation.request.as_deref() == Some("waiting") {
                if !admitted(&invitation) {
                    continue;
                }
                // Judged again when it is tried.
                self.store.conn().execute(
                    "UPDATE invitations SET request = NULL WHERE mailbox_id = ?1",
                    [invitation.mailbox_id as i64],
                )?;
            }
            to_try.push(invitation);
        }
        Ok(to_try)
    }

    /// Our user's answer to a request (an invitation from someone who is not a contact), found
    /// by its group id or a unique prefix of it: accepted, it is joined as soon as it can be;
    /// declined, it is forgotten.
    pub fn answer_request(
        &mut self,
        group: &str,
        accept: bool,
    ) -> Result<Invitation, ProfileError> {
        let group = group.to_ascii_lowercase();
        let matching: Vec<Invitation> = self
            .invitations()?
            .into_iter()
            .filter(|i| i.request.as_deref() == Some("waiting") && i.group.starts_with(&group))
            .collect();
        let request = match <[Invitation; 1]>::try_from(matching) {
            Ok([one]) => one,
            Err(v) if v.is_empty() => {
                return Err(ProfileError::WrongKind(format!(
                    "no request for a group {group}…: `mlschat request list` shows them"
                )));
            }
            Err(_) => return Err(ProfileError::Ambiguous(group, "request")),
        };
        let mailbox_id = request.mailbox_id as i64;
        let conn = self.store.conn();
        if accept {
            conn.execute(
                "UPDATE invitations SET request = 'accepted' WHERE mailbox_id = ?1",
                [mailbox_id],
            )?;
        } else {
            // Its inviter must learn that we will not join, or we stay a member who never
            // reads: we join only to ask to leave (see `join_hosted`).
            conn.execute(
                "UPDATE invitations SET request = 'declined' WHERE mailbox_id = ?1",
                [mailbox_id],
            )?;
        }
        Ok(request)
    }

    /// Drops the MLS state of a group we were removed from, keeping its row and history.
    fn forget_if_removed(&mut self, id: &GroupId) -> Result<(), ProfileError> {
        let state: Option<String> = self.store.query_opt(
            "SELECT state FROM groups WHERE group_id = ?1",
            [id.as_slice()],
        )?;
        if state.as_deref() != Some("removed") {
            return Ok(());
        }
        let storage = self.store.mls_storage();
        if let Some(mut old) = MlsGroup::load(&storage, id).map_err(StoreError::from)? {
            old.delete(&storage).map_err(StoreError::from)?;
        }
        self.groups.remove(id);
        Ok(())
    }

    /// The last mailbox entry we processed.
    pub fn mailbox_seq(&self) -> Result<u64, ProfileError> {
        Ok(self
            .store
            .query_opt::<i64>("SELECT mailbox_seq FROM home WHERE id = 1", [])?
            .unwrap_or(0) as u64)
    }

    /// Asks to leave a hosted group: our proposal to remove us is queued like a text (returns
    /// its outbox row), and made again at each new epoch until a member's commit removes us
    /// ([`Self::encrypt_queued`], [`Self::receive_log`]).
    pub fn leave_hosted(&mut self, group: &str) -> Result<i64, ProfileError> {
        let id = self.hosted_group(group)?;
        let me = self.me();
        self.in_transaction(|p| {
            let (epoch, _) = p.group_token(&id)?;
            p.store.conn().execute(
                "UPDATE groups SET leaving = 1 WHERE group_id = ?1",
                [id.as_slice()],
            )?;
            append_history(p.store.conn(), &id, epoch, &me, "event", "asked to leave")?;
            p.queue_leave(&id)
        })
    }

    /// Queues our proposal to remove us. It is made when its turn comes ([`Self::encrypt_queued`]),
    /// at the epoch of that moment: a proposal cannot be made while a commit of ours waits.
    fn queue_leave(&mut self, id: &GroupId) -> Result<i64, ProfileError> {
        let conn = self.store.conn();
        conn.prepare_cached(
            "INSERT INTO outbox (group_id, audience, packet, created_at) VALUES (?1, 'group', X'', ?2)",
        )?
        .execute(params![id.as_slice(), unix_now()])?;
        Ok(conn.last_insert_rowid())
    }

    /// Whether we are still in the group (not removed from it).
    fn is_member(&self, id: &GroupId) -> Result<bool, ProfileError> {
        let active: Option<bool> = self.store.query_opt(
            "SELECT state = 'active' FROM groups WHERE group_id = ?1",
            [id.as_slice()],
        )?;
        Ok(active == Some(true))
    }

    /// Whether our user asked to leave the group.
    fn is_leaving(&self, id: &GroupId) -> Result<bool, ProfileError> {
        let leaving: Option<bool> = self.store.query_opt(
            "SELECT leaving = 1 FROM groups WHERE group_id = ?1",
            [id.as_slice()],
        )?;
        Ok(leaving == Some(true))
    }

    /// After a commit that left us in a group we asked to leave: propose it again, since a
    /// proposal lives one epoch (unless one of ours is still queued, to be made again).
    fn leave_again(&mut self, id: &GroupId) -> Result<(), ProfileError> {
        let again: bool = self.store.conn().query_row(
            "SELECT leaving = 1 AND state = 'active' AND NOT EXISTS (
                 SELECT 1 FROM outbox o WHERE o.group_id = ?1 AND o.text IS NULL
                 AND o.audience = 'group')
             FROM groups WHERE group_id = ?1",
            [id.as_slice()],
            |r| r.get(0),
        )?;
        if again && self.is_active(id)? {
            self.queue_leave(id)?;
        }
        Ok(())
    }

    /// Members of our groups on the node who were added `expiry` seconds ago or more and have
    /// not joined (a declined invitation that never reached us, a lost device), by group: in
    /// each group the first admin removes them, so that texts stop being encrypted to them.
    pub fn overdue_invitees(
        &mut self,
        expiry: u64,
    ) -> Result<Vec<(GroupId, Vec<String>)>, ProfileError> {
        let now = unix_now();
        let mut overdue = Vec::new();
        for id in self.hosted_groups()? {
            if self.broken(&id)?.is_some() || !self.is_member(&id)? {
                continue;
            }
            self.load(&id)?;
            let me = self.identity().fingerprint();
            let group = &self.groups[&id];
            let settings = engine::group_settings(group)?;
            let first_admin = engine::members(group)
                .into_iter()
                .find(|m| engine::may_manage(settings.as_ref(), &m.fingerprint));
            if first_admin.is_none_or(|m| m.fingerprint != me) {
                continue;
            }
            let mut due = Vec::new();
            for fingerprint in engine::invited(group) {
                let since: Option<i64> = self.store.query_opt(
                    "SELECT since FROM invitees WHERE group_id = ?1 AND fingerprint = ?2",
                    params![id.as_slice(), fingerprint.0],
                )?;
                match since {
                    Some(since) if since.saturating_add(expiry as i64) <= now => {
                        due.push(fingerprint.to_hex())
                    }
                    Some(_) => {}
                    // Added before we noted adds (or in a commit we never read): from now on.
                    None => {
                        self.store.conn().execute(
                            "INSERT INTO invitees (group_id, fingerprint, since) VALUES (?1, ?2, ?3)",
                            params![id.as_slice(), fingerprint.0, now],
                        )?;
                    }
                }
            }
            if !due.is_empty() {
                overdue.push((id, due));
            }
        }
        Ok(overdue)
    }

    /// Whether we are the member who commits a proposal from `proposer`: the first admin by
    /// leaf order other than the proposer (the first member, when no admin is left or the
    /// group has no settings). One member commits, so that members do not race to.
    fn commits_proposals_of(
        &mut self,
        id: &GroupId,
        proposer: &MemberInfo,
    ) -> Result<bool, ProfileError> {
        self.load(id)?;
        let settings = engine::group_settings(&self.groups[id])?;
        let others: Vec<MemberInfo> = self
            .members_of(id)?
            .into_iter()
            .filter(|m| m.fingerprint != proposer.fingerprint)
            .collect();
        let admin = |m: &&MemberInfo| engine::may_manage(settings.as_ref(), &m.fingerprint);
        let committer = others.iter().find(admin).or(others.first());
        Ok(committer.is_some_and(|m| m.fingerprint == self.identity().fingerprint()))
    }

    /// Queues a commit of the proposals we hold (a key refresh takes them with it), unless a
    /// change of ours is queued already, which will.
    fn commit_proposals(&mut self, id: &GroupId) -> Result<(), ProfileError> {
        let queued: bool = self.store.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM intents WHERE group_id = ?1)",
            [id.as_slice()],
            |r| r.get(0),
        )?;
        if !queued {
            let json = serde_json::to_string(&Intent::Update).expect("an intent serialises");
            self.store.conn().execute(
                "INSERT INTO intents (group_id, intent) VALUES (?1, ?2)",
                params![id.as_slice(), json],
            )?;
        }
        Ok(())
    }

    /// Queues a text for a hosted group and records it in history; returns its outbox row. It
    /// is encrypted only when its turn to be posted comes ([`Self::encrypt_queued`]), so that
    /// our texts' ratchet generations follow the order in which the log takes them.
    /// Whether the group holds proposals (a member asked to leave): no message can be made
    /// before a commit takes them.
    fn holds_proposals(&mut self, id: &GroupId) -> Result<bool, ProfileError> {
        self.load(id)?;
        Ok(self.groups[id].pending_proposals().next().is_some())
    }

    pub fn send_hosted(&mut self, group: &str, text: &str) -> Result<i64, ProfileError> {
        super::check_text(text)?;
        let id = self.hosted_group(group)?;
        // Queued behind our leave proposal, it could never go out once we are removed.
        if self.is_leaving(&id)? {
            return Err(ProfileError::WrongKind(
                "you asked to leave this group: nothing more can be sent to it".into(),
            ));
        }
        let content = Content::text(self.new_post_id()?, text);
        let (epoch, _) = self.group_token(&id)?;
        let me = self.me();
        let may_encrypt = !self.holds_proposals(&id)?;
        self.in_transaction(|p| {
            // Alone in line (nothing queued or being committed before it), it is its turn now:
            // encrypted in this same transaction, it costs one write to disk, not two.
            let alone: bool = may_encrypt
                && p.store
                    .conn()
                    .prepare_cached(
                        "SELECT NOT EXISTS (SELECT 1 FROM outbox WHERE group_id = ?1)
                    AND NOT EXISTS (SELECT 1 FROM intents WHERE group_id = ?1)
                    AND NOT EXISTS (SELECT 1 FROM pending_commits WHERE group_id = ?1)
                    AND (SELECT continues IS NULL FROM groups WHERE group_id = ?1)",
                    )?
                    .query_row([id.as_slice()], |r| r.get(0))?;
            let conn = p.store.conn();
            append_text(conn, &id, epoch, &me, &content)?;
            let history_seq = conn.last_insert_rowid();
            let outbox = queue_text(conn, &id, &content.encode(), &content.id, Some(history_seq))?;
            if alone {
                p.encrypt_in_place(&id, outbox, &content.encode(), Some(history_seq))?;
            }
            Ok(outbox)
        })
    }

    /// Encrypts a queued text's content at the group's current epoch into its outbox row.
    fn encrypt_in_place(
        &mut self,
        id: &GroupId,
        outbox_seq: i64,
        content: &[u8],
        history_seq: Option<i64>,
    ) -> Result<(), ProfileError> {
        self.with_group(id, |engine, provider, group, conn| {
            let message = engine.send(provider, group, content)?;
            mark_processed(conn, &message)?;
            conn.prepare_cached("UPDATE outbox SET packet = ?2 WHERE seq = ?1")?
                .execute(params![outbox_seq, Packet::Mls(message).encode()?])?;
            conn.prepare_cached("UPDATE messages SET epoch = ?2 WHERE seq = ?1")?
                .execute(params![history_seq, group.epoch().as_u64() as i64])?;
            Ok(())
        })
    }

    /// The oldest message queued for a hosted group: a text, or a proposal (leaving).
    pub fn next_text(&self, id: &GroupId) -> Result<Option<QueuedText>, ProfileError> {
        let row: Option<(i64, Vec<u8>, Option<Vec<u8>>)> = self
            .store
            .conn()
            .prepare_cached(
                "SELECT seq, packet, post_id FROM outbox
                 WHERE group_id = ?1 AND audience = 'group' ORDER BY seq LIMIT 1",
            )?
            .query_row([id.as_slice()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((seq, packet, post_id)) = row else {
            return Ok(None);
        };
        let unreadable = || ProfileError::Corrupt(format!("outbox row {seq} is unreadable"));
        let encrypted = if packet.is_empty() {
            None
        } else {
            let Ok(Some(Packet::Mls(message))) = Packet::read_from(&mut packet.as_slice()) else {
                return Err(unreadable());
            };
            let Ok(Parsed::Protocol(parsed)) = engine::parse_message(&message) else {
                return Err(unreadable());
            };
            Some((parsed.epoch().as_u64(), message))
        };
        // A message queued without an id (a proposal) is named by its hash: it is never
        // encrypted again, so its bytes are its identity.
        let post_id = match (post_id, &encrypted) {
            (Some(id), _) => id.try_into().map_err(|_| unreadable())?,
            (None, Some((_, message))) => {
                Sha256::digest(message)[..16].try_into().expect("16 bytes")
            }
            // Our leave proposal, not made yet: it is, before it is posted.
            (None, None) => [0; 16],
        };
        Ok(Some(QueuedText {
            seq,
            encrypted,
            post_id,
        }))
    }

    /// Encrypts a queued text at the group's current epoch (its turn has come, or the epoch it
    /// was encrypted for ended before the node took it). It keeps its place in the queue and
    /// its post id. A queued proposal cannot be made again: it is dropped, and false returned.
    pub fn encrypt_queued(&mut self, outbox_seq: i64) -> Result<bool, ProfileError> {
        let (group_id, content, history_seq): (Vec<u8>, Option<Vec<u8>>, Option<i64>) =
            self.store.conn().query_row(
                "SELECT group_id, text, history_seq FROM outbox WHERE seq = ?1",
                [outbox_seq],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
        let id = GroupId::from_slice(&group_id);
        self.in_transaction(|p| {
            let Some(content) = content else {
                // A proposal: ours to leave is made (again) at this epoch, in its place.
                if p.is_leaving(&id)? && p.is_active(&id)? {
                    p.with_group(&id, |engine, provider, group, conn| {
                        let proposal = engine.leave(provider, group)?;
                        mark_processed(conn, &proposal)?;
                        conn.prepare_cached("UPDATE outbox SET packet = ?2 WHERE seq = ?1")?
                            .execute(params![outbox_seq, Packet::Mls(proposal).encode()?])?;
                        Ok(())
                    })?;
                    return Ok(true);
                }
                p.store
                    .conn()
                    .execute("DELETE FROM outbox WHERE seq = ?1", [outbox_seq])?;
                return Ok(false);
            };
            p.encrypt_in_place(&id, outbox_seq, &content, history_seq)?;
            Ok(true)
        })
    }

    /// The node took a queued text (`post_id`) at log position `log_seq`: its history row takes
    /// that place in the group's order, and the outbox row goes. False if the row had gone
    /// already (the log showed it to us first). Not waited for on disk: if lost, the text is
    /// posted again and the node answers with the same position.
    pub fn mark_posted(
        &self,
        outbox_seq: i64,
        post_id: &PostId,
        log_seq: u64,
    ) -> Result<bool, ProfileError> {
        self.store.transaction_without_sync(|| {
            let conn = self.store.conn();
            conn.execute(
                "UPDATE messages SET log_seq = ?3
                 WHERE seq = (SELECT history_seq FROM outbox WHERE seq = ?1 AND post_id = ?2)",
                params![outbox_seq, post_id.as_slice(), log_seq as i64],
            )?;
            let gone = conn.execute(
                "DELETE FROM outbox WHERE seq = ?1 AND post_id = ?2",
                params![outbox_seq, post_id.as_slice()],
            )?;
            Ok(gone == 1)
        })
    }

    /// Groups we cannot go on in and that no group continues yet, each with the members who may
    /// start it again (its admins; everyone in a group without settings), in leaf order, and
    /// our place among them (`None`: we may not, and follow whoever does). Were anyone to start
    /// it, a member who broke it by a commit the settings forbid would become its admin.
    #[allow(clippy::type_complexity)]
    pub fn broken_groups(
        &mut self,
    ) -> Result<Vec<(GroupId, Vec<MemberInfo>, Option<usize>)>, ProfileError> {
        let ids: Vec<Vec<u8>> = {
            let mut stmt = self.store.conn().prepare(
                "SELECT group_id FROM groups WHERE hosted = 1 AND broken IS NOT NULL
                 AND replaced_by IS NULL AND state = 'active' AND abandoned = 0
                 ORDER BY group_id",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let me = self.identity().fingerprint();
        let mut broken = Vec::new();
        for id in ids {
            let id = GroupId::from_slice(&id);
            let settings = {
                self.load(&id)?;
                engine::group_settings(&self.groups[&id])?
            };
            let starters: Vec<MemberInfo> = self
                .members_of(&id)?
                .into_iter()
                .filter(|m| engine::may_manage(settings.as_ref(), &m.fingerprint))
                .collect();
            let rank = starters.iter().position(|m| m.fingerprint == me);
            broken.push((id, starters, rank));
        }
        Ok(broken)
    }

    /// Starts a broken group again as a new group on our node, in one transaction: the new
    /// group takes the old one's name and our texts still queued there, and announces, once its
    /// members are added, that it continues the old one. Returns the new group and the members
    /// to add (everyone we knew in the old group but us).
    pub fn start_continuation(
        &mut self,
        old: &GroupId,
    ) -> Result<(GroupSummary, Vec<MemberInfo>), ProfileError> {
        let me = self.identity().fingerprint();
        let members: Vec<MemberInfo> = self
            .members_of(old)?
            .into_iter()
            .filter(|m| m.fingerprint != me)
            .collect();
        let name: Option<String> = self
            .store
            .query_opt(
                "SELECT name FROM groups WHERE group_id = ?1",
                [old.as_slice()],
            )?
            .flatten();
        let placeholder = format!("continues {}", hex::encode(old.as_slice()));
        // The old group's settings, admins included, hold in the new one.
        let settings = {
            self.load(old)?;
            engine::group_settings(&self.groups[old])?
        };
        let settings = match settings {
            Some(s) => s,
            None => self
                .engine
                .new_settings(name.as_deref().unwrap_or(&placeholder)),
        };
        self.in_transaction(|p| {
            let conn = p.store.conn();
            conn.execute(
                "UPDATE groups SET name = NULL WHERE group_id = ?1",
                [old.as_slice()],
            )?;
            let local_name = name.as_deref().unwrap_or(&placeholder);
            let summary = p.create_group_with(local_name, true, &settings)?;
            let new = GroupId::from_slice(&hex::decode(&summary.id).expect("our own hex"));
            p.store.conn().execute(
                "UPDATE groups SET continues = ?2 WHERE group_id = ?1",
                params![new.as_slice(), old.as_slice()],
            )?;
            p.replace_group(old, &new)?;
            Ok((summary, members))
        })
    }

    /// Groups we started again whose members are not added yet (the claims were lost with our
    /// memory): each with the members to add (everyone we knew in the old group but us).
    pub fn unfinished_continuations(
        &mut self,
    ) -> Result<Vec<(GroupId, Vec<MemberInfo>)>, ProfileError> {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = {
            let mut stmt = self.store.conn().prepare(
                // No add of ours queued or pending there (other changes our user asked for in
                // the meantime wait behind the add: they do not stand for it).
                "SELECT g.group_id, g.continues FROM groups g
                 WHERE g.continues IS NOT NULL AND g.state = 'active' AND g.broken IS NULL
                   AND NOT EXISTS (SELECT 1 FROM intents i
                       WHERE i.group_id = g.group_id AND json_type(i.intent, '$.add') IS NOT NULL)
                   AND NOT EXISTS (SELECT 1 FROM pending_commits p
                       WHERE p.group_id = g.group_id AND json_type(p.intent, '$.add') IS NOT NULL)",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let me = self.identity().fingerprint();
        let mut unfinished = Vec::new();
        for (new, old) in rows {
            let (new, old) = (GroupId::from_slice(&new), GroupId::from_slice(&old));
            // Those of the old group not in yet (a crash may come between two adds).
            let added = self.members_of(&new)?;
            let members: Vec<MemberInfo> = self
                .members_of(&old)?
                .into_iter()
                .filter(|m| m.fingerprint != me)
                .filter(|m| added.iter().all(|a| a.fingerprint != m.fingerprint))
                .collect();
            if !members.is_empty() {
                unfinished.push((new, members));
            }
        }
        Ok(unfinished)
    }

    /// The announcement that `id` continues a group, while it is still to be made: encrypted
    /// now once the members are added. Its post id is derived from the two groups, so that
    /// posting it again is a repeat.
    pub fn announcement(&mut self, id: &GroupId) -> Result<Option<Announcement>, ProfileError> {
        let old: Option<Option<Vec<u8>>> = self.store.query_opt(
            "SELECT continues FROM groups WHERE group_id = ?1",
            [id.as_slice()],
        )?;
        let Some(old) = old.flatten() else {
            return Ok(None);
        };
        if self.members_of(id)?.len() <= 1 {
            return Ok(Some(Announcement::Waiting));
        }
        let post_id: PostId = Sha256::new()
            .chain_update(b"mlschat continuation")
            .chain_update(&old)
            .chain_update(id.as_slice())
            .finalize()[..16]
            .try_into()
            .expect("16 bytes");
        // Where the old group broke for us: followers check that it broke there for them too.
        let old = GroupId::from_slice(&old);
        self.load(&old)?;
        let body = Continuation {
            old_group: old.as_slice().to_vec().into(),
            epoch: self.groups[&old].epoch().as_u64(),
            epoch_authenticator: self.groups[&old]
                .epoch_authenticator()
                .as_slice()
                .to_vec()
                .into(),
        };
        let content = Content {
            id: post_id,
            kind: ContentKind::Continuation,
            body: body.encode(),
        };
        let (epoch, message) = self.in_transaction(|p| {
            p.with_group(id, |engine, provider, group, conn| {
                let message = engine.send(provider, group, &content.encode())?;
                mark_processed(conn, &message)?;
                Ok((group.epoch().as_u64(), message))
            })
        })?;
        Ok(Some(Announcement::Ready {
            epoch,
            message,
            post_id,
        }))
    }

    /// The announcement that `id` continues a group is in its log.
    pub fn announced(&mut self, id: &GroupId) -> Result<(), ProfileError> {
        self.store.conn().execute(
            "UPDATE groups SET continues = NULL WHERE group_id = ?1",
            [id.as_slice()],
        )?;
        Ok(())
    }

    /// `sender` announced in `new` that it continues a group: the word is kept, and followed
    /// as soon as the rules allow ([`Self::follow_announcements`]).
    fn announced_continuation(
        &mut self,
        new: &GroupId,
        sender: &MemberInfo,
        continuation: &Continuation,
    ) -> Result<(), ProfileError> {
        let old = GroupId::from_slice(continuation.old_group.as_slice());
        // The new group as it is now, when it is announced: later changes are its own affair.
        let members: Vec<u8> = self
            .members_of(new)?
            .iter()
            .flat_map(|m| m.fingerprint.0)
            .collect();
        let settings = match engine::group_settings(&self.groups[new])? {
            Some(settings) => settings
                .encode()
                .map_err(|e| ProfileError::Corrupt(e.to_string()))?,
            None => Vec::new(),
        };
        self.store.conn().execute(
            "INSERT OR IGNORE INTO announcements
                 (old, new, sender, epoch, authenticator, members, settings)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                old.as_slice(),
                new.as_slice(),
                sender.fingerprint.0,
                continuation.epoch as i64,
                continuation.epoch_authenticator.as_slice(),
                members,
                settings
            ],
        )?;
        self.follow_announcements(&old)?;
        let waiting: Option<i64> = self.store.query_opt(
            "SELECT 1 FROM announcements WHERE old = ?1 AND new = ?2 AND refused IS NULL",
            params![old.as_slice(), new.as_slice()],
        )?;
        if waiting.is_some() {
            let (epoch, _) = self.group_token(new)?;
            let body = format!(
                "{} says this group continues group {}, which is not broken for you: it is \
                 followed only if that group breaks where it says",
                display_member(sender),
                hex::encode(old.as_slice())
            );
            append_history(self.store.conn(), new, epoch, &self.me(), "event", &body)?;
        }
        Ok(())
    }

    /// Applies what was announced about `old` that can be judged now: when it was announced,
    /// when we join `old`, and when `old` breaks for us. The first continuation the rules
    /// allow is followed; one they refuse is shown, with why, and never followed.
    fn follow_announcements(&mut self, old: &GroupId) -> Result<(), ProfileError> {
        let announced: Vec<Announced> = {
            let mut stmt = self.store.conn().prepare(
                "SELECT new, sender, epoch, authenticator, members, settings FROM announcements
                 WHERE old = ?1 AND refused IS NULL ORDER BY rowid",
            )?;
            let rows = stmt.query_map([old.as_slice()], |r| {
                let fingerprints = |bytes: Vec<u8>| -> Vec<Fingerprint> {
                    bytes
                        .chunks_exact(32)
                        .map(|c| Fingerprint(c.try_into().expect("32 bytes")))
                        .collect()
                };
                Ok(Announced {
                    new: GroupId::from_slice(&r.get::<_, Vec<u8>>(0)?),
                    sender: fingerprints(r.get(1)?).pop(),
                    claim: Continuation {
                        old_group: old.as_slice().to_vec().into(),
                        epoch: r.get::<_, i64>(2)? as u64,
                        epoch_authenticator: r.get::<_, Vec<u8>>(3)?.into(),
                    },
                    members: fingerprints(r.get(4)?),
                    // Unreadable settings are no settings: they then differ from the old ones.
                    settings: GroupSettings::decode(&r.get::<_, Vec<u8>>(5)?).ok(),
                })
            })?;
            rows.collect::<Result<_, _>>()?
        };
        for announced in announced {
            let (new, Some(sender)) = (&announced.new, announced.sender) else {
                continue;
            };
            match self.judge_continuation(old, &announced)? {
                Verdict::Wait => {}
                verdict @ (Verdict::Follow | Verdict::Moot) => {
                    self.store.conn().execute(
                        "DELETE FROM announcements WHERE old = ?1 AND new = ?2",
                        params![old.as_slice(), new.as_slice()],
                    )?;
                    if verdict == Verdict::Follow {
                        self.follow_continuation(old, new)?;
                    }
                }
                Verdict::Refuse(why) => self.refuse_continuation(old, new, &sender, &why)?,
            }
        }
        Ok(())
    }

    /// Whether `sender`'s word that `new` continues `old` (broken at `claim`) may be followed:
    /// only for a group broken for us at that very point, from one of its admins there, and
    /// only when the new group keeps its settings (admins, name, topic) and every member we
    /// had in it. Anything else could be a member taking the group over.
    fn judge_continuation(
        &mut self,
        old: &GroupId,
        announced: &Announced,
    ) -> Result<Verdict, ProfileError> {
        let (new, claim) = (&announced.new, &announced.claim);
        let Some(sender) = &announced.sender else {
            return Ok(Verdict::Refuse("it names no announcer".into()));
        };
        let ours: Option<(bool, Option<Vec<u8>>, Option<String>)> = self
            .store
            .conn()
            .query_row(
                "SELECT hosted, replaced_by, broken FROM groups WHERE group_id = ?1",
                [old.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let broken = match ours {
            // We may be about to join it (its Welcome waits): judged then.
            None => return Ok(Verdict::Wait),
            Some((true, None, broken)) => broken,
            // We went on elsewhere already: the first continuation followed is the one.
            Some((true, Some(_), _)) => return Ok(Verdict::Moot),
            Some((false, ..)) => {
                return Ok(Verdict::Refuse(
                    "that group is not on a delivery node: nothing continues it".into(),
                ));
            }
        };
        if old == new {
            return Ok(Verdict::Refuse("a group cannot continue itself".into()));
        }
        if broken.is_none() {
            // Not broken for us (yet): followed if it breaks at the point named.
            return Ok(Verdict::Wait);
        }
        self.load(old)?;
        let group = &self.groups[old];
        let (epoch, authenticator) = (group.epoch().as_u64(), group.epoch_authenticator());
        if claim.epoch != epoch || claim.epoch_authenticator.as_slice() != authenticator.as_slice()
        {
            return Ok(Verdict::Refuse(format!(
                "it continues the group as it was at epoch {}, but it broke for you after \
                 epoch {epoch}, in another state",
                claim.epoch
            )));
        }
        let settings = engine::group_settings(group)?;
        if !engine::may_manage(settings.as_ref(), sender) {
            return Ok(Verdict::Refuse(
                "its announcer was not an admin of the broken group".into(),
            ));
        }
        let members = self.members_of(old)?;
        if settings.is_some() && announced.settings != settings {
            return Ok(Verdict::Refuse(
                "it does not keep the broken group's name, topic and admins".into(),
            ));
        }
        // As the new group was when it was announced: who leaves it later is its own affair.
        let missing: Vec<String> = members
            .iter()
            .filter(|m| !announced.members.contains(&m.fingerprint))
            .map(display_member)
            .collect();
        if !missing.is_empty() {
            return Ok(Verdict::Refuse(format!(
                "it leaves out members of the broken group: {}",
                missing.join(", ")
            )));
        }
        Ok(Verdict::Follow)
    }

    /// A continuation the rules refuse: kept with why, told in both groups' history and as an
    /// alert; we stay where we are.
    fn refuse_continuation(
        &mut self,
        old: &GroupId,
        new: &GroupId,
        sender: &Fingerprint,
        why: &str,
    ) -> Result<(), ProfileError> {
        let conn = self.store.conn();
        conn.execute(
            "UPDATE announcements SET refused = ?3 WHERE old = ?1 AND new = ?2",
            params![old.as_slice(), new.as_slice(), why],
        )?;
        let text = format!(
            "the member with key {} announced that group {} continues group {}, but {why}: \
             not followed",
            &sender.to_hex()[..16],
            hex::encode(new.as_slice()),
            hex::encode(old.as_slice()),
        );
        tracing::warn!(%text, "continuation refused");
        let me = self.me();
        for group in [old, new] {
            if let Ok((epoch, _)) = self.group_token(group) {
                append_history(self.store.conn(), group, epoch, &me, "event", &text)?;
            }
        }
        let kind = format!("continuation:{}", hex::encode(new.as_slice()));
        super::alerts::raise_alert(self.store.conn(), &kind, &text, unix_now() as u64)?;
        Ok(())
    }

    /// `old` is replaced by `new`, which a legitimate announcement says continues it: the
    /// name and our queued texts move there.
    fn follow_continuation(&mut self, old: &GroupId, new: &GroupId) -> Result<(), ProfileError> {
        let name: Option<String> = self
            .store
            .query_opt(
                "SELECT name FROM groups WHERE group_id = ?1",
                [old.as_slice()],
            )?
            .flatten();
        let conn = self.store.conn();
        conn.execute(
            "UPDATE groups SET name = NULL WHERE group_id = ?1",
            [old.as_slice()],
        )?;
        conn.execute(
            "UPDATE groups SET name = coalesce(name, ?2) WHERE group_id = ?1",
            params![new.as_slice(), name],
        )?;
        self.replace_group(old, new)
    }

    /// `old` goes on as `new`: it is closed (with a history event), and our texts still queued
    /// in it move to `new`'s queue, in order, keeping their post ids.
    fn replace_group(&mut self, old: &GroupId, new: &GroupId) -> Result<(), ProfileError> {
        let conn = self.store.conn();
        // Still read up to where it breaks (if it does): what was said there before stands.
        conn.execute(
            "UPDATE groups SET replaced_by = ?2 WHERE group_id = ?1",
            params![old.as_slice(), new.as_slice()],
        )?;
        let moved: Vec<(Vec<u8>, i64, Vec<u8>)> = {
            let mut stmt = conn.prepare(
                "SELECT text, history_seq, post_id FROM outbox
                 WHERE group_id = ?1 AND text IS NOT NULL ORDER BY seq",
            )?;
            let rows =
                stmt.query_map([old.as_slice()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        conn.execute("DELETE FROM outbox WHERE group_id = ?1", [old.as_slice()])?;
        conn.execute("DELETE FROM intents WHERE group_id = ?1", [old.as_slice()])?;
        for (content, history_seq, post_id) in moved {
            queue_text(conn, new, &content, &post_id, Some(history_seq))?;
            conn.execute(
                "UPDATE messages SET group_id = ?2, log_seq = NULL WHERE seq = ?1",
                params![history_seq, new.as_slice()],
            )?;
        }
        // A wish to leave holds in the new group: our proposal follows the moved texts.
        if self.is_leaving(old)? {
            self.store.conn().execute(
                "UPDATE groups SET leaving = 1 WHERE group_id = ?1",
                [new.as_slice()],
            )?;
            self.queue_leave(new)?;
        }
        let (epoch, _) = self.group_token(old)?;
        let me = self.me();
        let body = format!(
            "this group continues in group {}",
            hex::encode(new.as_slice())
        );
        append_history(self.store.conn(), old, epoch, &me, "event", &body)?;
        let body = format!("this group continues group {}", hex::encode(old.as_slice()));
        append_history(self.store.conn(), new, 0, &me, "event", &body)?;
        Ok(())
    }

    /// The newest event's id (0 when there is none).
    pub fn latest_event(&self) -> Result<i64, ProfileError> {
        self.last_history_seq()
    }

    /// How many events each group got after `after`, in the order they came.
    pub fn new_by_group(&self, after: i64) -> Result<Vec<(String, u64)>, ProfileError> {
        let mut stmt = self.store.conn().prepare(
            "SELECT coalesce(g.name, lower(hex(g.group_id))), count(*)
             FROM messages m JOIN groups g USING (group_id)
             WHERE m.seq > ?1 GROUP BY g.group_id ORDER BY min(m.seq)",
        )?;
        let rows = stmt.query_map([after], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Events (history rows of every group) after `after`, oldest first: what front ends
    /// resume from.
    pub fn events_after(&self, after: i64, limit: u32) -> Result<Vec<Event>, ProfileError> {
        let mut stmt = self.store.conn().prepare_cached(
            "SELECT m.seq, coalesce(g.name, lower(hex(g.group_id))), m.epoch, m.sender, m.kind,
                    m.body, m.at, m.sender_fingerprint
             FROM messages m JOIN groups g USING (group_id)
             WHERE m.seq > ?1 AND g.declined = 0 ORDER BY m.seq LIMIT ?2",
        )?;
        let states = self.sender_states()?;
        let rows = stmt.query_map(params![after, limit], |r| {
            let sender: String = r.get(3)?;
            let fingerprint: Vec<u8> = r.get(7)?;
            Ok(Event {
                id: r.get(0)?,
                group: r.get(1)?,
                epoch: r.get::<_, i64>(2)? as u64,
                sender_state: states.of(&sender, &fingerprint),
                sender_fingerprint: hex::encode(&fingerprint),
                sender,
                kind: r.get(4)?,
                body: String::from_utf8_lossy(&r.get::<_, Vec<u8>>(5)?).into_owned(),
                at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Queues a text for a hosted group, not yet encrypted: its encoded content and post id, and
/// its history row. Returns its outbox row.
fn queue_text(
    conn: &rusqlite::Connection,
    id: &GroupId,
    content: &[u8],
    post_id: &[u8],
    history: Option<i64>,
) -> Result<i64, ProfileError> {
    conn.prepare_cached(
        "INSERT INTO outbox (group_id, audience, packet, created_at, text, history_seq, post_id)
         VALUES (?1, 'group', X'', ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        id.as_slice(),
        unix_now(),
        content,
        history,
        post_id
    ])?;
    Ok(conn.last_insert_rowid())
}

/// What one log entry did.
enum Outcome {
    Read,
    /// A text of ours still queued: the log took it (its answer was lost).
    Ours(i64),
    /// It is our pending commit, merged now; the intent it carried out.
    Confirmed(i64),
    /// Another commit took our pending commit's epoch: ours is dropped, its intent queued again.
    Lost,
    /// A message we cannot read; we go on past it.
    Unreadable(ProfileError),
    /// A commit we cannot process; we cannot go on.
    Broken(ProfileError),
    /// A valid notice that our group is a fork its admins left: we stop, past it.
    Abandoned(String),
}
