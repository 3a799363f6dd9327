//! The profile's side of working through a delivery node, without I/O: our home node, contacts
//! and invite codes, the per-group cursor into the node's log, and our commits while they wait
//! for the node to order them.
//!
//! A commit is made and stored as pending (durably) before it is posted. If the node accepts it,
//! [`Profile::confirm_commit`] merges it; if another member's commit took the epoch,
//! [`Profile::abandon_commit`] drops it and hands back the intent to make again at the new epoch.
//! A crash in between is resolved by the log itself: [`Profile::receive_log`] meets the commit
//! that took our epoch and either recognises it as ours or abandons ours.

use openmls::prelude::{GroupId, KeyPackage, MlsGroup};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use mlschat_wire::token::{client_id, token_hash};
use mlschat_wire::{ClientId, EntryKind, Token, TokenHash};

use super::{
    GroupSummary, Outgoing, Profile, ProfileError, Received, merge_own_commit, resolve_member,
};
use crate::engine::{self, Incoming, MemberInfo};
use crate::identity::{DeviceName, Fingerprint};
use crate::packet::Packet;
use crate::store::{StoreError, unix_now};

/// Our delivery node: where our groups' logs and our mailbox are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// `host:port` of its QUIC endpoint.
    pub address: String,
    /// SHA-256 of its certificate, pinned.
    pub fingerprint: [u8; 32],
    /// The operator's invite token; empty where registration is open.
    pub invite: Vec<u8>,
}

/// Everything someone needs to add us: who we are and how to reach our delivery node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteCode {
    pub name: DeviceName,
    pub signature_key: Vec<u8>,
    pub home: Home,
}

const INVITE_PREFIX: &str = "mlschat:invite?";

impl std::fmt::Display for InviteCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{INVITE_PREFIX}name={}&key={}&node={}&pin={}",
            self.name,
            hex::encode(&self.signature_key),
            self.home.address,
            hex::encode(self.home.fingerprint)
        )
    }
}

impl std::str::FromStr for InviteCode {
    type Err = ProfileError;

    fn from_str(code: &str) -> Result<Self, ProfileError> {
        let bad = |why: &str| ProfileError::WrongKind(format!("not a valid invite code: {why}"));
        let fields = code
            .trim()
            .strip_prefix(INVITE_PREFIX)
            .ok_or_else(|| bad("it must start with mlschat:invite?"))?;
        let (mut name, mut key, mut node, mut pin) = (None, None, None, None);
        for field in fields.split('&') {
            let (k, v) = field.split_once('=').ok_or_else(|| bad(field))?;
            let slot = match k {
                "name" => &mut name,
                "key" => &mut key,
                "node" => &mut node,
                "pin" => &mut pin,
                _ => continue, // newer versions may add fields
            };
            *slot = Some(v.to_owned());
        }
        let name = name.ok_or_else(|| bad("no name"))?;
        let (user, device) = name
            .rsplit_once('/')
            .ok_or_else(|| bad("name is not user/device"))?;
        let name = DeviceName::new(user, device).map_err(|e| bad(&e.to_string()))?;
        let signature_key = hex::decode(key.ok_or_else(|| bad("no key"))?)
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| bad("key is not 32 bytes of hex"))?;
        let fingerprint = hex::decode(pin.ok_or_else(|| bad("no pin"))?)
            .ok()
            .and_then(|p| <[u8; 32]>::try_from(p).ok())
            .ok_or_else(|| bad("pin is not 32 bytes of hex"))?;
        let address = node.ok_or_else(|| bad("no node"))?;
        Ok(Self {
            name,
            signature_key,
            home: Home {
                address,
                fingerprint,
                invite: Vec::new(),
            },
        })
    }
}

/// Someone we can add by name.
#[derive(Debug, Clone, Serialize)]
pub struct Contact {
    /// `user/device`.
    pub name: String,
    pub fingerprint: String,
    pub node: String,
    /// Why this contact must be checked before it is used again, if it must.
    pub flagged: Option<String>,
    #[serde(skip)]
    pub signature_key: Vec<u8>,
}

impl Contact {
    pub fn client_id(&self) -> ClientId {
        client_id(&self.signature_key)
    }
}

/// What one of our commits was meant to do, kept to make it again at a newer epoch if another
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
}

/// Our commit, made and stored, waiting for the node to order it.
#[derive(Debug, Clone)]
pub struct PendingCommit {
    pub group_id: Vec<u8>,
    /// The epoch it is for.
    pub epoch: u64,
    /// The token of `epoch`, which lets us post it.
    pub token: Token,
    pub next_token_hash: TokenHash,
    pub message: Vec<u8>,
    pub welcome: Option<Vec<u8>>,
    pub ratchet_tree: Option<Vec<u8>>,
    /// Client ids of the members it adds, who get the Welcome.
    pub recipients: Vec<ClientId>,
}

/// One entry of a group's log on the node.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub seq: u64,
    pub epoch: u64,
    pub kind: EntryKind,
    pub message: Vec<u8>,
}

/// What one log entry did.
#[derive(Debug)]
pub enum LogOutcome {
    Received(Received),
    /// The entry is our pending commit: it is merged now.
    Confirmed,
    /// Another commit took the epoch of our pending one, which is dropped: make this again.
    Lost(Intent),
    /// Ours, from before we joined, or a duplicate: nothing to do.
    Skipped,
    /// The entry could not be processed; the cursor moves past it all the same.
    Failed(ProfileError),
}

impl Profile {
    /// Sets (or replaces) our delivery node.
    pub fn set_home(&mut self, home: &Home) -> Result<(), ProfileError> {
        self.store.transaction(|| {
            self.store.conn().execute(
                "INSERT INTO home (id, address, fingerprint, invite) VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET address = ?1, fingerprint = ?2, invite = ?3",
                params![home.address, home.fingerprint, home.invite],
            )?;
            Ok::<_, ProfileError>(())
        })
    }

    pub fn home(&self) -> Result<Option<Home>, ProfileError> {
        let row = self
            .store
            .conn()
            .query_row(
                "SELECT address, fingerprint, invite FROM home WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get::<_, Vec<u8>>(1)?, r.get(2)?)),
            )
            .optional()?;
        row.map(|(address, fingerprint, invite)| {
            Ok(Home {
                address,
                fingerprint: fingerprint
                    .try_into()
                    .map_err(|_| ProfileError::Corrupt("home fingerprint".into()))?,
                invite,
            })
        })
        .transpose()
    }

    /// Our invite code, for others to add us as a contact.
    pub fn invite_code(&self) -> Result<InviteCode, ProfileError> {
        let identity = self.identity();
        Ok(InviteCode {
            name: identity.name.clone(),
            signature_key: identity.signer.public().to_vec(),
            home: self.home()?.ok_or(ProfileError::NoHome)?,
        })
    }

    /// Adds a contact from their invite code. The same code again is a no-op; a code with the
    /// same name but another key flags the contact rather than replacing the key.
    pub fn add_contact(&mut self, code: &InviteCode) -> Result<Contact, ProfileError> {
        let name = code.name.to_string();
        if let Ok(known) = self.contact(&name) {
            if known.signature_key != code.signature_key {
                let why = format!(
                    "an invite code for {name} carries another key ({}) than the one we have ({})",
                    Fingerprint::of_signature_key(&code.signature_key).to_hex(),
                    known.fingerprint
                );
                self.flag_contact(&name, &why)?;
                return Err(ProfileError::ContactFlagged(name, why));
            }
            return Ok(known);
        }
        let home = self.home()?.ok_or(ProfileError::NoHome)?;
        if code.home.fingerprint != home.fingerprint {
            return Err(ProfileError::WrongKind(format!(
                "{name} uses another delivery node ({}); federation between nodes is not built \
                 yet, so contacts must share ours ({})",
                code.home.address, home.address
            )));
        }
        self.store.conn().execute(
            "INSERT INTO contacts (name, signature_key, address, node_fingerprint, added_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                name,
                code.signature_key,
                code.home.address,
                code.home.fingerprint,
                unix_now()
            ],
        )?;
        self.contact(&name)
    }

    pub fn contacts(&self) -> Result<Vec<Contact>, ProfileError> {
        let mut stmt = self
            .store
            .conn()
            .prepare("SELECT name, signature_key, address, flagged FROM contacts ORDER BY name")?;
        let rows = stmt.query_map([], contact_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A contact by `user/device`, or by `user` when that is unambiguous.
    pub fn contact(&self, name: &str) -> Result<Contact, ProfileError> {
        let mut stmt = self.store.conn().prepare(
            "SELECT name, signature_key, address, flagged FROM contacts
             WHERE name = ?1 OR substr(name, 1, length(?1) + 1) = ?1 || '/'",
        )?;
        let found: Vec<Contact> = stmt
            .query_map([name], contact_row)?
            .collect::<Result<_, _>>()?;
        match <[Contact; 1]>::try_from(found) {
            Ok([one]) => Ok(one),
            Err(v) if v.is_empty() => Err(ProfileError::UnknownContact(name.into())),
            Err(v) => match v.into_iter().find(|c| c.name == name) {
                Some(exact) => Ok(exact),
                None => Err(ProfileError::Ambiguous(name.into(), "contact")),
            },
        }
    }

    fn flag_contact(&self, name: &str, why: &str) -> Result<(), ProfileError> {
        self.store.conn().execute(
            "UPDATE contacts SET flagged = ?2 WHERE name = ?1",
            params![name, why],
        )?;
        Ok(())
    }

    /// Checks a KeyPackage claimed for `contact`: it must be valid and carry the contact's key
    /// and name. Anything else flags the contact.
    pub fn check_claimed(
        &self,
        contact: &Contact,
        key_package: &[u8],
    ) -> Result<KeyPackage, ProfileError> {
        if let Some(why) = &contact.flagged {
            return Err(ProfileError::ContactFlagged(
                contact.name.clone(),
                why.clone(),
            ));
        }
        let package = engine::validate_key_package(&self.crypto, key_package)?;
        let leaf = package.leaf_node();
        let name = DeviceName::from_credential(leaf.credential()).map(|n| n.to_string());
        if leaf.signature_key().as_slice() != contact.signature_key.as_slice()
            || name.as_deref().ok() != Some(contact.name.as_str())
        {
            let why = format!(
                "the node handed out a KeyPackage for {} with another key or name ({})",
                contact.name,
                Fingerprint::of_signature_key(leaf.signature_key().as_slice()).to_hex()
            );
            self.flag_contact(&contact.name, &why)?;
            return Err(ProfileError::ContactFlagged(contact.name.clone(), why));
        }
        Ok(package)
    }

    /// Creates a group whose log will live on our delivery node. Returns it and its id.
    pub fn create_hosted_group(
        &mut self,
        name: &str,
    ) -> Result<(GroupSummary, Vec<u8>), ProfileError> {
        let summary = self.create_group_as(name, true)?;
        let id = hex::decode(&summary.id).expect("our own hex");
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

    /// A group on our delivery node, by name or id prefix; a group kept in files is refused.
    fn hosted_group(&self, group: &str) -> Result<GroupId, ProfileError> {
        let id = self.find_group(group)?;
        if !self.is_hosted(&id)? {
            return Err(ProfileError::WrongKind(format!(
                "group {group:?} is kept in files, not on the delivery node: use the file verbs \
                 (with --out) while no daemon runs"
            )));
        }
        Ok(id)
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

    /// The oldest text queued for a hosted group, not yet taken by the node.
    pub fn next_hosted_unsent(&self) -> Result<Option<HostedUnsent>, ProfileError> {
        Ok(self
            .store
            .conn()
            .query_row(
                "SELECT o.seq, o.group_id, o.packet FROM outbox o JOIN groups g USING (group_id)
                 WHERE g.hosted = 1 AND g.state = 'active' AND o.audience = 'group'
                 ORDER BY o.seq LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, Vec<u8>>(2)?)),
            )
            .optional()?
            .map(|(seq, group, packet)| {
                let message = match Packet::read_from(&mut packet.as_slice()) {
                    Ok(Some(Packet::Mls(message))) => message,
                    _ => Vec::new(),
                };
                HostedUnsent {
                    seq,
                    group: GroupId::from_slice(&group),
                    message,
                }
            }))
    }

    /// Groups on our delivery node that we are still in, with the last log entry we processed.
    pub fn hosted_groups(&self) -> Result<Vec<(GroupId, u64)>, ProfileError> {
        let mut stmt = self.store.conn().prepare(
            "SELECT group_id, log_seq FROM groups WHERE hosted = 1 AND state = 'active'",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                GroupId::from_slice(&r.get::<_, Vec<u8>>(0)?),
                r.get::<_, i64>(1)? as u64,
            ))
        })?;
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

    /// Whether the group waits for our first refresh (we joined and have not committed yet).
    pub fn needs_refresh(&self, group: &str) -> Result<bool, ProfileError> {
        self.needs_self_update(&self.find_group(group)?)
    }

    /// Makes our commit for `intent` and keeps it as pending, in one transaction. `None` when
    /// there is nothing left to do (e.g. everyone to remove is gone already).
    pub fn prepare_commit(
        &mut self,
        group: &str,
        intent: &Intent,
    ) -> Result<Option<PendingCommit>, ProfileError> {
        let id = self.hosted_group(group)?;
        if let Some(pending) = self.pending_commit(&id)? {
            return Err(ProfileError::WrongKind(format!(
                "a commit of ours for epoch {} is still waiting for the node",
                pending.epoch
            )));
        }
        let key_packages = match intent {
            Intent::Add { key_packages } => key_packages
                .iter()
                .map(|kp| engine::validate_key_package(&self.crypto, kp))
                .collect::<Result<Vec<KeyPackage>, _>>()?,
            _ => Vec::new(),
        };
        let leaves: Vec<u32> = match intent {
            Intent::Remove { fingerprints } => {
                let members = self.members_of(&id)?;
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
        let recipients: Vec<ClientId> = key_packages
            .iter()
            .map(|kp| client_id(kp.leaf_node().signature_key().as_slice()))
            .collect();
        let intent_json = serde_json::to_string(intent).expect("an intent serialises");
        self.in_transaction(|p| {
            let pending = p.with_group(&id, |engine, provider, group, conn| {
                let token = engine::epoch_token(provider.crypto, group)?;
                let out = match intent {
                    Intent::Add { .. } => engine.add_members(provider, group, &key_packages)?,
                    Intent::Remove { .. } => engine.remove_members(provider, group, &leaves)?,
                    Intent::Update => engine.self_update(provider, group)?,
                };
                let next_token = engine::pending_epoch_token(provider.crypto, group)?;
                let pending = PendingCommit {
                    group_id: id.as_slice().to_vec(),
                    epoch: group.epoch().as_u64(),
                    token,
                    next_token_hash: token_hash(&next_token),
                    message: out.commit,
                    welcome: out.welcome.as_ref().map(|w| w.welcome.clone()),
                    ratchet_tree: out.welcome.map(|w| w.ratchet_tree),
                    recipients,
                };
                conn.execute(
                    "INSERT INTO pending_commits (group_id, epoch, message, welcome, ratchet_tree,
                         recipients, next_token_hash, intent)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        pending.group_id,
                        pending.epoch as i64,
                        pending.message,
                        pending.welcome,
                        pending.ratchet_tree,
                        pending.recipients.concat(),
                        pending.next_token_hash,
                        intent_json
                    ],
                )?;
                Ok(pending)
            })?;
            Ok(Some(pending))
        })
    }

    /// Our commit waiting for the node in this group, if any.
    pub fn pending_commit(&mut self, id: &GroupId) -> Result<Option<PendingCommit>, ProfileError> {
        let row = self
            .store
            .conn()
            .query_row(
                "SELECT epoch, message, welcome, ratchet_tree, recipients, next_token_hash
                 FROM pending_commits WHERE group_id = ?1",
                [id.as_slice()],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                        r.get::<_, Vec<u8>>(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((epoch, message, welcome, ratchet_tree, recipients, next)) = row else {
            return Ok(None);
        };
        let (_, token) = self.group_token(id)?;
        Ok(Some(PendingCommit {
            group_id: id.as_slice().to_vec(),
            epoch,
            token,
            next_token_hash: next
                .try_into()
                .map_err(|_| ProfileError::Corrupt("pending commit token hash".into()))?,
            message,
            welcome,
            ratchet_tree,
            recipients: recipients
                .chunks_exact(32)
                .map(|c| c.try_into().expect("32-byte chunks"))
                .collect(),
        }))
    }

    /// The node accepted our pending commit at log position `seq`: merge it.
    pub fn confirm_commit(&mut self, id: &GroupId, seq: u64) -> Result<(), ProfileError> {
        self.in_transaction(|p| {
            let before = p.last_history_seq()?;
            p.confirm_in_transaction(id)?;
            p.stamp_history(id, before, seq)?;
            p.set_log_seq(id, seq)
        })
    }

    fn confirm_in_transaction(&mut self, id: &GroupId) -> Result<(), ProfileError> {
        let me = self.me();
        let (message, adds): (Vec<u8>, bool) = self.store.conn().query_row(
            "SELECT message, welcome IS NOT NULL FROM pending_commits WHERE group_id = ?1",
            [id.as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        self.with_group(id, |engine, provider, group, conn| {
            merge_own_commit(engine, provider, group, conn, &me, &message, adds)?;
            conn.execute(
                "DELETE FROM pending_commits WHERE group_id = ?1",
                [id.as_slice()],
            )?;
            Ok(())
        })
    }

    /// Another commit took our pending commit's epoch: drop ours and return what it meant.
    pub fn abandon_commit(&mut self, id: &GroupId) -> Result<Intent, ProfileError> {
        self.in_transaction(|p| p.abandon_in_transaction(id))
    }

    fn abandon_in_transaction(&mut self, id: &GroupId) -> Result<Intent, ProfileError> {
        let intent: String = self.store.conn().query_row(
            "SELECT intent FROM pending_commits WHERE group_id = ?1",
            [id.as_slice()],
            |r| r.get(0),
        )?;
        self.with_group(id, |_, provider, group, conn| {
            group
                .clear_pending_commit(&provider.storage)
                .map_err(crate::store::StoreError::from)?;
            conn.execute(
                "DELETE FROM pending_commits WHERE group_id = ?1",
                [id.as_slice()],
            )?;
            Ok(())
        })?;
        serde_json::from_str(&intent)
            .map_err(|e| ProfileError::Corrupt(format!("pending commit intent: {e}")))
    }

    /// The newest history row.
    fn last_history_seq(&self) -> Result<i64, ProfileError> {
        Ok(self
            .store
            .query_opt::<i64>("SELECT max(seq) FROM messages", [])?
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

    /// Processes entries of a group's log in order, in one transaction, and moves the group's
    /// cursor past them. Each entry succeeds or fails alone.
    pub fn receive_log(
        &mut self,
        id: &GroupId,
        entries: &[LogEntry],
    ) -> Result<Vec<LogOutcome>, ProfileError> {
        self.in_transaction(|p| {
            let mut outcomes = Vec::with_capacity(entries.len());
            for entry in entries {
                let before = p.last_history_seq()?;
                outcomes.push(p.receive_entry(id, entry)?);
                p.stamp_history(id, before, entry.seq)?;
                p.set_log_seq(id, entry.seq)?;
            }
            Ok(outcomes)
        })
    }

    fn receive_entry(
        &mut self,
        id: &GroupId,
        entry: &LogEntry,
    ) -> Result<LogOutcome, ProfileError> {
        self.load(id)?;
        let group = &self.groups[id];
        if !group.is_active() || entry.epoch < group.epoch().as_u64() {
            return Ok(LogOutcome::Skipped);
        }
        let pending = self.store.conn().query_row(
            "SELECT message FROM pending_commits WHERE group_id = ?1 AND epoch = ?2",
            params![id.as_slice(), entry.epoch as i64],
            |r| r.get::<_, Vec<u8>>(0),
        );
        let mut lost = None;
        if entry.kind == EntryKind::Commit {
            match pending.optional()? {
                Some(ours) if ours == entry.message => {
                    self.confirm_in_transaction(id)?;
                    return Ok(LogOutcome::Confirmed);
                }
                Some(_) => lost = Some(self.abandon_in_transaction(id)?),
                None => {}
            }
        }
        let outcome = match self.receive_one(&Packet::Mls(entry.message.clone())) {
            Ok(received) => {
                if let Received::Message {
                    incoming: Incoming::Commit { added, .. },
                    ..
                } = &received
                {
                    self.check_members_against_contacts(added)?;
                }
                LogOutcome::Received(received)
            }
            Err(ProfileError::Duplicate) => LogOutcome::Skipped,
            Err(e) => LogOutcome::Failed(e),
        };
        Ok(match lost {
            Some(intent) => {
                // The winner is processed; what ours meant is for the caller to make again.
                if let LogOutcome::Failed(e) = outcome {
                    return Ok(LogOutcome::Failed(e));
                }
                LogOutcome::Lost(intent)
            }
            None => outcome,
        })
    }

    /// Someone added under a contact's name but with another key: flag the contact.
    fn check_members_against_contacts(&self, added: &[MemberInfo]) -> Result<(), ProfileError> {
        for member in added {
            let Some(name) = &member.name else { continue };
            let Ok(contact) = self.contact(&name.to_string()) else {
                continue;
            };
            let fingerprint = member.fingerprint.to_hex();
            if contact.fingerprint != fingerprint && contact.flagged.is_none() {
                let why = format!(
                    "{name} was added to a group with another key ({fingerprint}) than ours"
                );
                self.flag_contact(&contact.name, &why)?;
            }
        }
        Ok(())
    }

    /// Joins a group from a Welcome in our node's mailbox (entry `mailbox_id`), with the tree the
    /// node keeps; the group is then read from its log on the node.
    pub fn join_hosted(
        &mut self,
        mailbox_id: u64,
        group_id: &[u8],
        welcome: &[u8],
        ratchet_tree: &[u8],
    ) -> Result<Result<Received, ProfileError>, ProfileError> {
        let id = GroupId::from_slice(group_id);
        self.in_transaction(|p| {
            // Added back after a removal: the old MLS state is useless (a new leaf, new keys)
            // and in the way; the history stays.
            p.forget_if_removed(&id)?;
            let joined = p.join(welcome, ratchet_tree);
            if let Ok(Received::Joined { group, .. }) = &joined {
                let id = GroupId::from_slice(&hex::decode(&group.id).expect("our own hex"));
                p.store.conn().execute(
                    "UPDATE groups SET hosted = 1 WHERE group_id = ?1",
                    [id.as_slice()],
                )?;
                // The join sits where we are in the log: at its start when we first join, after
                // what we had read when we are added back.
                let join_row = p.last_history_seq()?;
                let cursor = p.log_seq(&id)?;
                p.stamp_history(&id, join_row - 1, cursor)?;
            }
            p.store.conn().execute(
                "UPDATE home SET mailbox_seq = max(mailbox_seq, ?1) WHERE id = 1",
                [mailbox_id as i64],
            )?;
            Ok(joined)
        })
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

    /// Encrypts a text for a hosted group and queues it (with the text, to encrypt again if its
    /// epoch ends before the node takes it).
    pub fn send_hosted(&mut self, group: &str, text: &str) -> Result<Outgoing, ProfileError> {
        let id = self.hosted_group(group)?;
        self.in_transaction(|p| p.queue_text(&id, text, None))
    }

    /// A queued text's epoch ended before the node took it: encrypt it again at the current
    /// epoch, replacing its outbox row.
    pub fn encrypt_again(&mut self, outbox_seq: i64) -> Result<Outgoing, ProfileError> {
        let (group_id, text, history_seq): (Vec<u8>, Option<Vec<u8>>, Option<i64>) =
            self.store.conn().query_row(
                "SELECT group_id, text, history_seq FROM outbox WHERE seq = ?1",
                [outbox_seq],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
        let (Some(text), Some(history_seq)) = (text, history_seq) else {
            return Err(ProfileError::WrongKind(
                "this outbox entry keeps no text to encrypt again".into(),
            ));
        };
        let text = String::from_utf8_lossy(&text).into_owned();
        let id = GroupId::from_slice(&group_id);
        self.in_transaction(|p| {
            p.store
                .conn()
                .execute("DELETE FROM outbox WHERE seq = ?1", [outbox_seq])?;
            p.queue_text(&id, &text, Some(history_seq))
        })
    }

    /// The node took a queued text at log position `log_seq`: its history row takes that place
    /// in the group's order, and the outbox row goes. Not waited for on disk: if lost, the text
    /// is posted again and dropped by the others as a duplicate.
    pub fn mark_posted(&self, outbox_seq: i64, log_seq: u64) -> Result<(), ProfileError> {
        self.store.transaction_without_sync(|| {
            let conn = self.store.conn();
            conn.execute(
                "UPDATE messages SET log_seq = ?2
                 WHERE seq = (SELECT history_seq FROM outbox WHERE seq = ?1)",
                params![outbox_seq, log_seq as i64],
            )?;
            conn.execute("DELETE FROM outbox WHERE seq = ?1", [outbox_seq])?;
            Ok(())
        })
    }

    /// Events (history rows of every group) after `after`, oldest first: what front ends
    /// resume from.
    pub fn events_after(&self, after: i64, limit: u32) -> Result<Vec<Event>, ProfileError> {
        let mut stmt = self.store.conn().prepare_cached(
            "SELECT m.seq, coalesce(g.name, lower(hex(g.group_id))), m.epoch, m.sender, m.kind,
                    m.body, m.at
             FROM messages m JOIN groups g USING (group_id)
             WHERE m.seq > ?1 ORDER BY m.seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit], |r| {
            Ok(Event {
                id: r.get(0)?,
                group: r.get(1)?,
                epoch: r.get::<_, i64>(2)? as u64,
                sender: r.get(3)?,
                kind: r.get(4)?,
                body: String::from_utf8_lossy(&r.get::<_, Vec<u8>>(5)?).into_owned(),
                at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// A text in the outbox of a hosted group.
#[derive(Debug)]
pub struct HostedUnsent {
    pub seq: i64,
    pub group: GroupId,
    pub message: Vec<u8>,
}

/// One numbered, durable event: a message or a membership change in one of our groups.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: i64,
    pub group: String,
    pub epoch: u64,
    pub sender: String,
    /// `text` or `event`.
    pub kind: String,
    pub body: String,
    pub at: i64,
}

fn contact_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Contact> {
    let signature_key: Vec<u8> = r.get(1)?;
    Ok(Contact {
        name: r.get(0)?,
        fingerprint: Fingerprint::of_signature_key(&signature_key).to_hex(),
        node: r.get(2)?,
        flagged: r.get(3)?,
        signature_key,
    })
}
