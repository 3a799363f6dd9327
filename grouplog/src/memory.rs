//! A [`GroupLog`] in memory: the simulator's node, and a log for tests and for whoever keeps
//! nothing across restarts.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use mlschat_keypackages::{
    ClaimRecord, Claimed, KeyPackage, MemoryStore, Stock, Store, StoreError,
};

use crate::escrow::{self, OpenClaim, Recipient};
use crate::{
    ClientId, Committed, Cuts, Entry, EntryKind, GroupLog, Judged, NewCommit, NewMessage, Page,
    PostKey, Posted, Purged, Refused, TokenHash, UnixTime, Welcome,
};

/// A failed memory log: only a thread that panicked holding its lock makes one.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("the memory log's lock is poisoned")]
    Poisoned,
    #[error(transparent)]
    KeyPackages(#[from] StoreError),
}

#[derive(Debug)]
struct Logged {
    epoch: u64,
    kind: EntryKind,
    message: Vec<u8>,
    at: UnixTime,
    post_key: Option<PostKey>,
}

#[derive(Debug)]
struct Tree {
    sealed: Vec<u8>,
    access_hash: [u8; 32],
    at: UnixTime,
}

#[derive(Debug, Default)]
struct Group {
    epoch: u64,
    /// The number the next post takes (not reused after a purge).
    next_seq: u64,
    tokens: BTreeMap<u64, TokenHash>,
    log: BTreeMap<u64, Logged>,
    /// Where each keyed post was stored.
    posts: HashMap<PostKey, u64>,
    /// Sealed trees by the epoch their commit led into.
    trees: BTreeMap<u64, Tree>,
}

impl Group {
    fn holds_token(&self, token_hash: &TokenHash) -> bool {
        self.tokens.values().any(|t| t == token_hash)
    }

    /// The compare-and-set every post goes through: the group is at `epoch` and the token is
    /// that of `epoch`. The token is judged before the epoch, so that only a member learns
    /// where the group is.
    fn may_post(&self, epoch: u64, token_hash: &TokenHash) -> Result<(), Refused> {
        if self.tokens.get(&epoch) != Some(token_hash) {
            Err(Refused::BadToken)
        } else if epoch != self.epoch {
            Err(Refused::StaleEpoch {
                current: self.epoch,
            })
        } else {
            Ok(())
        }
    }

    fn append(&mut self, logged: Logged) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(key) = logged.post_key {
            self.posts.insert(key, seq);
        }
        self.log.insert(seq, logged);
        seq
    }

    /// Where the post with this key was stored, if it still is.
    fn repeat(&self, key: &PostKey) -> Option<Posted> {
        let seq = *self.posts.get(key)?;
        let first = self.log.get(&seq)?;
        Some(Posted {
            seq,
            epoch: first.epoch,
            repeat: true,
        })
    }
}

#[derive(Debug)]
struct Mail {
    owner: ClientId,
    welcome: Welcome,
    at: UnixTime,
    /// The poster, when the Welcome came from a claim of a last-resort KeyPackage.
    last_resort_from: Option<ClientId>,
}

#[derive(Debug, Default)]
struct State {
    groups: HashMap<Vec<u8>, Group>,
    /// Mailbox entries by id (ids increase across all mailboxes).
    mailbox: BTreeMap<u64, Mail>,
    last_mail: u64,
}

/// One lock for the logs and mailboxes, taken for the whole of each operation: every operation
/// is atomic, which is what the trait asks. The KeyPackages live beside them.
#[derive(Debug, Default)]
pub struct MemoryLog {
    key_packages: MemoryStore,
    state: Mutex<State>,
}

impl MemoryLog {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, MemoryError> {
        self.state.lock().map_err(|_| MemoryError::Poisoned)
    }

    /// The group's current epoch, if it has a log here (for a test to see where it is).
    pub fn epoch(&self, group_id: &[u8]) -> Result<Option<u64>, MemoryError> {
        Ok(self.state()?.groups.get(group_id).map(|g| g.epoch))
    }

    /// Puts an entry in `owner`'s mailbox that no commit released: what a node that took any
    /// Welcome would hold, for a client's defences against junk to be tested.
    pub fn deliver_unchecked(
        &self,
        owner: &ClientId,
        group_id: &[u8],
        epoch: u64,
        welcome: Vec<u8>,
        tree_key: Vec<u8>,
        now: UnixTime,
    ) -> Result<Welcome, MemoryError> {
        let mut state = self.state()?;
        state.last_mail += 1;
        let welcome = Welcome {
            id: state.last_mail,
            group_id: group_id.to_vec(),
            epoch,
            welcome,
            tree_key,
        };
        let mail = Mail {
            owner: *owner,
            welcome: welcome.clone(),
            at: now,
            last_resort_from: None,
        };
        state.mailbox.insert(welcome.id, mail);
        Ok(welcome)
    }
}

impl MemoryLog {
    /// What the store knows of each recipient of `commit`'s Welcomes ([`escrow::releases`]).
    fn recipients(
        &self,
        state: &State,
        commit: &NewCommit,
    ) -> Result<BTreeMap<ClientId, Recipient>, MemoryError> {
        let mut recipients = BTreeMap::new();
        for welcome in &commit.welcomes {
            let owner = welcome.recipient;
            if recipients.contains_key(&owner) {
                continue;
            }
            let open_claims = self
                .key_packages
                .open_claims(&owner, &commit.poster)?
                .into_iter()
                .map(|c: ClaimRecord| OpenClaim {
                    seq: c.seq,
                    reference: c.reference,
                    last_resort: c.last_resort,
                })
                .collect();
            let mine = state.mailbox.values().filter(|m| m.owner == owner);
            let known = Recipient {
                open_claims,
                held: mine.clone().count() as u64,
                last_resort_waiting: mine
                    .clone()
                    .any(|m| m.last_resort_from == Some(commit.poster)),
            };
            recipients.insert(owner, known);
        }
        Ok(recipients)
    }
}

impl GroupLog for MemoryLog {
    type Error = MemoryError;

    async fn create_group(
        &self,
        group_id: &[u8],
        token_hash: &TokenHash,
        _now: UnixTime,
    ) -> Judged<(), MemoryError> {
        let mut state = self.state()?;
        if state.groups.contains_key(group_id) {
            return Ok(Err(Refused::GroupExists));
        }
        let mut group = Group {
            next_seq: 1,
            ..Group::default()
        };
        group.tokens.insert(0, *token_hash);
        state.groups.insert(group_id.to_vec(), group);
        Ok(Ok(()))
    }

    async fn post_commit(
        &self,
        commit: &NewCommit,
        mailbox_quota: u64,
        now: UnixTime,
    ) -> Judged<Committed, MemoryError> {
        let mut state = self.state()?;
        let Some(group) = state.groups.get(commit.group_id.as_slice()) else {
            return Ok(Err(Refused::UnknownGroup));
        };
        if let Err(refused) = group.may_post(commit.epoch, &commit.token_hash) {
            return Ok(Err(refused));
        }
        let recipients = self.recipients(&state, commit)?;
        let releases = match escrow::releases(commit, mailbox_quota, &recipients) {
            Ok(releases) => releases,
            Err(refused) => return Ok(Err(refused)),
        };
        // Decided: from here on everything is written.
        let next = commit.epoch + 1;
        let group = state
            .groups
            .get_mut(commit.group_id.as_slice())
            .expect("looked up above");
        let seq = group.append(Logged {
            epoch: commit.epoch,
            kind: EntryKind::Commit,
            message: commit.commit.clone(),
            at: now,
            post_key: None,
        });
        group.epoch = next;
        group.tokens.insert(next, commit.next_token_hash);
        if !commit.sealed_tree.is_empty() {
            let tree = Tree {
                sealed: commit.sealed_tree.clone(),
                access_hash: commit.tree_access_hash,
                at: now,
            };
            group.trees.insert(next, tree);
        }
        let mut welcomes = Vec::with_capacity(releases.len());
        for (welcome, release) in commit.welcomes.iter().zip(releases) {
            let Some(claim) = release.claim else {
                welcomes.push(None);
                continue;
            };
            self.key_packages.use_claim(&welcome.recipient, claim)?;
            state.last_mail += 1;
            let id = state.last_mail;
            let mail = Mail {
                owner: welcome.recipient,
                welcome: Welcome {
                    id,
                    group_id: commit.group_id.clone(),
                    epoch: next,
                    welcome: welcome.welcome.clone(),
                    tree_key: welcome.tree_key.clone(),
                },
                at: now,
                last_resort_from: release.last_resort.then_some(commit.poster),
            };
            state.mailbox.insert(id, mail);
            welcomes.push(Some(id));
        }
        Ok(Ok(Committed {
            seq,
            epoch: next,
            welcomes,
        }))
    }

    async fn post_messages(
        &self,
        posts: &[NewMessage],
        now: UnixTime,
    ) -> Result<Vec<Result<Posted, Refused>>, MemoryError> {
        let mut state = self.state()?;
        let mut results = Vec::with_capacity(posts.len());
        for post in posts {
            let Some(group) = state.groups.get_mut(post.group_id.as_slice()) else {
                results.push(Err(Refused::UnknownGroup));
                continue;
            };
            if let Some(first) = post.post_key.and_then(|key| group.repeat(&key)) {
                results.push(Ok(first));
                continue;
            }
            results.push(group.may_post(post.epoch, &post.token_hash).map(|()| {
                let seq = group.append(Logged {
                    epoch: post.epoch,
                    kind: EntryKind::Message,
                    message: post.message.clone(),
                    at: now,
                    post_key: post.post_key,
                });
                Posted {
                    seq,
                    epoch: post.epoch,
                    repeat: false,
                }
            }));
        }
        Ok(results)
    }

    async fn post_notice(
        &self,
        group_id: &[u8],
        token_hash: &TokenHash,
        notice: &[u8],
        now: UnixTime,
    ) -> Judged<Posted, MemoryError> {
        let mut state = self.state()?;
        let Some(group) = state.groups.get_mut(group_id) else {
            return Ok(Err(Refused::UnknownGroup));
        };
        if !group.holds_token(token_hash) {
            return Ok(Err(Refused::BadToken));
        }
        let epoch = group.epoch;
        let seq = group.append(Logged {
            epoch,
            kind: EntryKind::Notice,
            message: notice.to_vec(),
            at: now,
            post_key: None,
        });
        Ok(Ok(Posted {
            seq,
            epoch,
            repeat: false,
        }))
    }

    async fn fetch_group(
        &self,
        group_id: &[u8],
        token_hash: &TokenHash,
        after_seq: u64,
        page: Page,
    ) -> Judged<Vec<Entry>, MemoryError> {
        let state = self.state()?;
        let Some(group) = state.groups.get(group_id) else {
            return Ok(Err(Refused::UnknownGroup));
        };
        if !group.holds_token(token_hash) {
            return Ok(Err(Refused::BadToken));
        }
        let after = group.log.range(after_seq.saturating_add(1)..);
        let fit = page.fit(after.clone().map(|(_, l)| l.message.len() as u64));
        Ok(Ok(after
            .take(fit)
            .map(|(&seq, l)| Entry {
                seq,
                epoch: l.epoch,
                kind: l.kind,
                group_id: group_id.to_vec(),
                message: l.message.clone(),
            })
            .collect()))
    }

    async fn fetch_tree(
        &self,
        group_id: &[u8],
        epoch: u64,
        access_hash: &[u8; 32],
    ) -> Result<Option<Vec<u8>>, MemoryError> {
        let state = self.state()?;
        Ok(state
            .groups
            .get(group_id)
            .and_then(|g| g.trees.get(&epoch))
            .filter(|t| t.access_hash == *access_hash)
            .map(|t| t.sealed.clone()))
    }

    async fn fetch_mailbox(
        &self,
        owner: &ClientId,
        after: u64,
        page: Page,
    ) -> Result<Vec<Welcome>, MemoryError> {
        let state = self.state()?;
        let mine = state
            .mailbox
            .range(after.saturating_add(1)..)
            .map(|(_, m)| m)
            .filter(|m| m.owner == *owner);
        let fit = page.fit(
            mine.clone()
                .map(|m| (m.welcome.welcome.len() + m.welcome.tree_key.len()) as u64),
        );
        Ok(mine.take(fit).map(|m| m.welcome.clone()).collect())
    }

    async fn ack_mailbox(&self, owner: &ClientId, up_to: u64) -> Result<u64, MemoryError> {
        let mut state = self.state()?;
        let before = state.mailbox.len();
        state
            .mailbox
            .retain(|&id, m| !(m.owner == *owner && id <= up_to));
        Ok((before - state.mailbox.len()) as u64)
    }

    async fn purge(&self, cuts: Cuts) -> Result<Purged, MemoryError> {
        let mut state = self.state()?;
        let mut purged = Purged {
            claims: self.key_packages.purge_claims(cuts.log_before)?,
            ..Purged::default()
        };
        let mailbox = state.mailbox.len();
        state.mailbox.retain(|_, m| m.at >= cuts.mailbox_before);
        purged.mailbox_entries = (mailbox - state.mailbox.len()) as u64;
        let State {
            groups, mailbox, ..
        } = &mut *state;
        for (id, group) in groups.iter_mut() {
            let log = group.log.len();
            group.log.retain(|_, l| l.at >= cuts.log_before);
            purged.log_entries += (log - group.log.len()) as u64;
            let kept = &group.log;
            group.posts.retain(|_, seq| kept.contains_key(seq));
            let trees = group.trees.len();
            group.trees.retain(|&epoch, t| {
                t.at >= cuts.tree_grace
                    || mailbox
                        .values()
                        .any(|m| m.welcome.group_id == *id && m.welcome.epoch == epoch)
            });
            purged.trees += (trees - group.trees.len()) as u64;
        }
        Ok(purged)
    }
}

/// The KeyPackages beside the logs.
impl Store for MemoryLog {
    async fn publish(
        &self,
        owner: &ClientId,
        one_time: Vec<KeyPackage>,
        last_resort: Option<KeyPackage>,
    ) -> Result<(), StoreError> {
        self.key_packages
            .publish(owner, one_time, last_resort)
            .await
    }

    async fn claim(
        &self,
        owner: &ClientId,
        claimer: &ClientId,
        now: UnixTime,
        one_time: bool,
    ) -> Result<Option<Claimed>, StoreError> {
        self.key_packages.claim(owner, claimer, now, one_time).await
    }

    async fn stock(&self, owner: &ClientId, now: UnixTime) -> Result<Stock, StoreError> {
        self.key_packages.stock(owner, now).await
    }

    async fn claim_log(
        &self,
        owner: &ClientId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<ClaimRecord>, StoreError> {
        self.key_packages.claim_log(owner, after, limit).await
    }

    async fn purge_expired(&self, now: UnixTime) -> Result<u64, StoreError> {
        self.key_packages.purge_expired(now).await
    }
}
