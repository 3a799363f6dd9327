//! Working through our delivery node: log in, keep KeyPackages stocked, create groups there, add
//! contacts (claiming their KeyPackages), post commits with their Welcomes and tree, send texts,
//! and catch up from the stored cursors: mailbox first (new groups), then each group's log.
//!
//! Every state change is the profile's and durable before anything is posted; the node's answer
//! (or, after a crash, the log itself) decides what happens to a pending commit. When our commit
//! loses its epoch to another member's, the winner is processed and our intent made again at the
//! new epoch, so the user never sees the race.

use std::collections::VecDeque;
use std::net::SocketAddr;

use openmls::prelude::GroupId;
use openmls_traits::signatures::Signer as _;

use mlschat_wire::quic::{Connection, QuicError};
use mlschat_wire::{
    CreateGroup, ErrorCode, FetchGroup, FetchTree, PostCommit, PostMessage, PublishKeyPackages,
    Push, Request, Response, WelcomeFor,
};

use crate::engine::{self, Parsed};
use crate::profile::{
    GroupSummary, Intent, LogEntry, LogOutcome, PendingCommit, Profile, ProfileError, Received,
};

/// What can go wrong online.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Delivery(#[from] QuicError),
    #[error("cannot resolve the delivery node's address {0:?}")]
    Address(String),
    #[error("our commit lost its epoch {0} times in a row; try again")]
    TooManyRaces(usize),
}

impl OnlineError {
    /// Whether the connection is gone (reconnect), rather than the request refused.
    pub fn is_disconnect(&self) -> bool {
        matches!(
            self,
            OnlineError::Delivery(QuicError::Lost(_) | QuicError::Connect { .. })
                | OnlineError::Address(_)
        )
    }
}

/// Keep at least this many one-time KeyPackages on the node; top up to [`KEY_PACKAGE_STOCK`].
const KEY_PACKAGE_LOW: u32 = 10;
const KEY_PACKAGE_STOCK: u32 = 30;
/// Entries asked for per fetch.
const FETCH_LIMIT: u32 = 500;
/// A commit that keeps losing races gives up after this many attempts (each loss means the
/// group moved on, so this is progress, not a livelock).
const MAX_RACES: usize = 20;

/// A profile connected to its delivery node.
#[derive(Debug)]
pub struct Online {
    profile: Profile,
    connection: Connection,
}

impl Online {
    /// Connects to our home node and logs in (registering on first use). On failure the
    /// profile is handed back, to try again later.
    pub async fn connect(profile: Profile) -> Result<Self, (Profile, OnlineError)> {
        match Self::log_in(&profile).await {
            Ok(connection) => Ok(Self {
                profile,
                connection,
            }),
            Err(e) => Err((profile, e)),
        }
    }

    async fn log_in(profile: &Profile) -> Result<Connection, OnlineError> {
        let home = profile.home()?.ok_or(ProfileError::NoHome)?;
        let addr = resolve(&home.address).await?;
        let connection = Connection::connect(addr, home.fingerprint).await?;
        let identity = profile.identity();
        let key = identity.signer.public().to_vec();
        let sign = |bytes: &[u8]| identity.signer.sign(bytes).unwrap_or_default();
        connection.log_in(&key, &home.invite, sign).await?;
        Ok(connection)
    }

    pub fn profile(&mut self) -> &mut Profile {
        &mut self.profile
    }

    pub fn into_profile(self) -> Profile {
        self.connection.close();
        self.profile
    }

    /// The connection, to read pushes from.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Everything after connecting: KeyPackages, subscriptions, and catching up.
    pub async fn start(&mut self) -> Result<(), OnlineError> {
        self.top_up_key_packages().await?;
        for (id, _) in self.profile.hosted_groups()? {
            let subscribed = self.subscribe(&id).await;
            per_group(&id, subscribed)?;
        }
        self.catch_up().await
    }

    /// Publishes fresh KeyPackages when the node's stock of ours runs low, and a last-resort one
    /// if it has none.
    pub async fn top_up_key_packages(&mut self) -> Result<(), OnlineError> {
        let Response::KeyPackageStock {
            one_time,
            last_resort,
        } = self.connection.request(&Request::KeyPackageStock).await?
        else {
            return Err(QuicError::Unexpected("no stock".into()).into());
        };
        let missing_last_resort = !bool::from(last_resort);
        if one_time >= KEY_PACKAGE_LOW && !missing_last_resort {
            return Ok(());
        }
        let fresh = (one_time < KEY_PACKAGE_LOW).then_some(KEY_PACKAGE_STOCK - one_time);
        let mut one_time = Vec::new();
        for _ in 0..fresh.unwrap_or(0) {
            one_time.push(self.profile.new_key_package(false)?.into());
        }
        let last_resort = if missing_last_resort {
            self.profile.new_key_package(true)?
        } else {
            Vec::new()
        };
        let publish = Request::PublishKeyPackages(PublishKeyPackages {
            one_time,
            last_resort: last_resort.into(),
        });
        self.connection.request(&publish).await?;
        Ok(())
    }

    /// Creates a group on our node.
    pub async fn create_group(&mut self, name: &str) -> Result<GroupSummary, OnlineError> {
        let (summary, group_id) = self.profile.create_hosted_group(name)?;
        let id = GroupId::from_slice(&group_id);
        self.register_group(&id).await?;
        self.subscribe(&id).await?;
        Ok(summary)
    }

    /// Creates the log of our new group (still at epoch 0) on the node.
    async fn register_group(&mut self, id: &GroupId) -> Result<(), OnlineError> {
        let (epoch, token) = self.profile.group_token(id)?;
        if epoch != 0 {
            return Err(ProfileError::Corrupt(format!(
                "group {} is at epoch {epoch} but unknown to the delivery node",
                hex::encode(id.as_slice())
            ))
            .into());
        }
        let create = Request::CreateGroup(CreateGroup {
            group_id: id.as_slice().into(),
            token_hash: mlschat_wire::token::token_hash(&token),
        });
        match self.connection.request(&create).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(ErrorCode::GroupExists) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds contacts (by name) in one commit, claiming one KeyPackage of each.
    pub async fn add(&mut self, group: &str, contacts: &[String]) -> Result<(), OnlineError> {
        let mut key_packages = Vec::new();
        for name in contacts {
            let contact = self.profile.contact(name)?;
            let claim = Request::ClaimKeyPackage {
                owner: contact.client_id(),
            };
            let Response::KeyPackage { key_package } = self.connection.request(&claim).await?
            else {
                return Err(QuicError::Unexpected("no KeyPackage".into()).into());
            };
            self.profile
                .check_claimed(&contact, key_package.as_slice())?;
            key_packages.push(key_package.as_slice().to_vec());
        }
        self.commit(group, Intent::Add { key_packages }).await
    }

    /// Removes members (user/device, user, fingerprint prefix or #leaf) in one commit.
    pub async fn remove(&mut self, group: &str, who: &[String]) -> Result<(), OnlineError> {
        // By fingerprint: the commit is made (and, after a lost race, made again) against the
        // group as it is then, after `commit` has caught up.
        let fingerprints = self
            .profile
            .resolve_members(group, who)?
            .iter()
            .map(|m| m.fingerprint.to_hex())
            .collect();
        self.commit(group, Intent::Remove { fingerprints }).await
    }

    /// Refreshes our keys in the group.
    pub async fn update(&mut self, group: &str) -> Result<(), OnlineError> {
        self.commit(group, Intent::Update).await
    }

    /// Sends a text; true once the node has it. A member who joined and has not refreshed its
    /// keys does so first. If the connection drops after the text is queued, it stays queued
    /// (durably) for the next connection, and this returns false.
    pub async fn send(&mut self, group: &str, text: &str) -> Result<bool, OnlineError> {
        if self.profile.needs_refresh(group)? {
            self.commit(group, Intent::Update).await?;
        }
        self.profile.send_hosted(group, text)?;
        match self.post_outbox().await {
            Ok(()) => Ok(true),
            Err(e) if e.is_disconnect() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Makes our commit for `intent` and gets it ordered; when another commit takes the epoch,
    /// processes it and makes the intent again at the new epoch.
    async fn commit(&mut self, group: &str, intent: Intent) -> Result<(), OnlineError> {
        let id = self.profile.find_group(group)?;
        let mut todo = VecDeque::from([intent]);
        let mut races = 0;
        while let Some(intent) = todo.pop_front() {
            todo.extend(self.sync_group(&id).await?);
            let Some(pending) = self.profile.prepare_commit(group, &intent)? else {
                continue;
            };
            match self.post_commit(&pending).await {
                Ok(seq) => self.profile.confirm_commit(&id, seq)?,
                Err(e) if e.code() == Some(ErrorCode::StaleEpoch) => {
                    races += 1;
                    if races > MAX_RACES {
                        return Err(OnlineError::TooManyRaces(races));
                    }
                    tracing::info!(group, "our commit lost its epoch; making it again");
                    let intent = self.profile.abandon_commit(&id)?;
                    todo.push_front(intent);
                }
                // The pending commit stays: the next catch-up finds out from the log.
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn post_commit(&self, pending: &PendingCommit) -> Result<u64, QuicError> {
        let welcomes = match &pending.welcome {
            Some(welcome) => pending
                .recipients
                .iter()
                .map(|recipient| WelcomeFor {
                    recipient: *recipient,
                    welcome: welcome.clone().into(),
                })
                .collect(),
            None => Vec::new(),
        };
        let post = Request::PostCommit(PostCommit {
            group_id: pending.group_id.clone().into(),
            epoch: pending.epoch,
            token: pending.token,
            next_token_hash: pending.next_token_hash,
            commit: pending.message.clone().into(),
            welcomes,
            ratchet_tree: pending.ratchet_tree.clone().unwrap_or_default().into(),
        });
        match self.connection.request(&post).await? {
            Response::Accepted { seq, .. } => Ok(seq),
            other => Err(QuicError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Posts queued texts in order. A text whose epoch ended before the node took it is
    /// encrypted again at the current epoch (after catching up).
    pub async fn post_outbox(&mut self) -> Result<(), OnlineError> {
        for _ in 0..MAX_RACES {
            let Some(unsent) = self.profile.next_hosted_unsent()? else {
                return Ok(());
            };
            let (epoch, token) = self.profile.group_token(&unsent.group)?;
            let Ok(Parsed::Protocol(message)) = engine::parse_message(&unsent.message) else {
                return Err(ProfileError::Corrupt("an outbox row is not a message".into()).into());
            };
            if message.epoch().as_u64() != epoch {
                self.profile.encrypt_again(unsent.seq)?;
                continue;
            }
            let post = Request::PostMessage(PostMessage {
                group_id: unsent.group.as_slice().into(),
                epoch,
                token,
                message: unsent.message.into(),
            });
            match self.connection.request(&post).await {
                Ok(Response::Accepted { seq, .. }) => self.profile.mark_posted(unsent.seq, seq)?,
                Ok(other) => return Err(QuicError::Unexpected(format!("{other:?}")).into()),
                Err(e) if e.code() == Some(ErrorCode::StaleEpoch) => {
                    self.sync_group(&unsent.group).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(OnlineError::TooManyRaces(MAX_RACES))
    }

    async fn subscribe(&mut self, id: &GroupId) -> Result<(), OnlineError> {
        let (_, token) = self.profile.group_token(id)?;
        let subscribe = Request::Subscribe(FetchGroup {
            group_id: id.as_slice().into(),
            token,
            after_seq: 0,
            limit: 0,
        });
        self.connection.request(&subscribe).await?;
        Ok(())
    }

    /// Catches up: new groups from the mailbox, every group's log from its cursor, any commit
    /// of ours still pending, and texts not yet posted.
    pub async fn catch_up(&mut self) -> Result<(), OnlineError> {
        self.read_mailbox().await?;
        let mut todo = Vec::new();
        for (id, _) in self.profile.hosted_groups()? {
            let synced = self.sync_group(&id).await;
            for intent in per_group(&id, synced)?.unwrap_or_default() {
                todo.push((id.clone(), intent));
            }
        }
        for (id, intent) in todo {
            let handle = hex::encode(id.as_slice());
            let committed = self.commit(&handle, intent).await;
            per_group(&id, committed)?;
        }
        self.post_outbox().await
    }

    /// Joins the groups whose Welcomes wait in our mailbox, then acknowledges them.
    pub async fn read_mailbox(&mut self) -> Result<Vec<GroupSummary>, OnlineError> {
        let mut joined = Vec::new();
        loop {
            let after = self.profile.mailbox_seq()?;
            let fetch = Request::FetchMailbox {
                after,
                limit: FETCH_LIMIT,
            };
            let Response::Mailbox { entries } = self.connection.request(&fetch).await? else {
                return Err(QuicError::Unexpected("no mailbox".into()).into());
            };
            let Some(last) = entries.last().map(|e| e.id) else {
                break;
            };
            for entry in entries {
                let tree = Request::FetchTree(FetchTree {
                    group_id: entry.group_id.clone(),
                    epoch: entry.epoch,
                });
                let ratchet_tree = match self.connection.request(&tree).await {
                    Ok(Response::Tree { ratchet_tree }) => ratchet_tree.as_slice().to_vec(),
                    Ok(_) | Err(_) => Vec::new(), // joining then fails, and says why
                };
                let joined_one = self.profile.join_hosted(
                    entry.id,
                    entry.group_id.as_slice(),
                    entry.welcome.as_slice(),
                    &ratchet_tree,
                )?;
                match joined_one {
                    Ok(Received::Joined { group, .. }) => {
                        let id = GroupId::from_slice(&hex::decode(&group.id).unwrap_or_default());
                        self.subscribe(&id).await?;
                        joined.push(group);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "a Welcome in our mailbox was not joined"),
                }
            }
            let ack = Request::AckMailbox { up_to: last };
            self.connection.request(&ack).await?;
        }
        if !joined.is_empty() {
            // Each join used one of our KeyPackages.
            self.top_up_key_packages().await?;
        }
        Ok(joined)
    }

    /// Reads a group's log from our cursor to its end and processes it. Returns the intents of
    /// our commits that lost their epoch, to be made again. A commit of ours still pending at
    /// the end (the node never got it) is posted again.
    pub async fn sync_group(&mut self, id: &GroupId) -> Result<Vec<Intent>, OnlineError> {
        let mut lost = Vec::new();
        loop {
            let cursor = self.profile.log_seq(id)?;
            let (_, token) = self.profile.group_token(id)?;
            let fetch = Request::FetchGroup(FetchGroup {
                group_id: id.as_slice().into(),
                token,
                after_seq: cursor,
                limit: FETCH_LIMIT,
            });
            let entries = match self.connection.request(&fetch).await {
                Ok(Response::GroupEntries { entries }) => entries,
                Ok(other) => return Err(QuicError::Unexpected(format!("{other:?}")).into()),
                // Our group's creation never reached the node (we were cut off after making
                // it): create it there now.
                Err(e) if e.code() == Some(ErrorCode::UnknownGroup) && cursor == 0 => {
                    self.register_group(id).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if entries.is_empty() {
                break;
            }
            let entries: Vec<LogEntry> = entries
                .into_iter()
                .map(|e| LogEntry {
                    seq: e.seq,
                    epoch: e.epoch,
                    kind: e.kind,
                    message: e.message.into(),
                })
                .collect();
            lost.extend(self.receive(id, &entries)?);
        }
        if let Some(pending) = self.profile.pending_commit(id)? {
            match self.post_commit(&pending).await {
                Ok(seq) => self.profile.confirm_commit(id, seq)?,
                Err(e) if e.code() == Some(ErrorCode::StaleEpoch) => {
                    lost.push(self.profile.abandon_commit(id)?);
                    // The winner is in the log now; read it before the intent is made again.
                    return Ok([lost, Box::pin(self.sync_group(id)).await?].concat());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(lost)
    }

    fn receive(&mut self, id: &GroupId, entries: &[LogEntry]) -> Result<Vec<Intent>, OnlineError> {
        let mut lost = Vec::new();
        for outcome in self.profile.receive_log(id, entries)? {
            match outcome {
                LogOutcome::Lost(intent) => lost.push(intent),
                LogOutcome::Failed(e) => {
                    tracing::warn!(error = %e, "a log entry was not processed")
                }
                LogOutcome::Received(_) | LogOutcome::Confirmed | LogOutcome::Skipped => {}
            }
        }
        Ok(lost)
    }

    /// Handles one push from the node: the next entry of a group's log is processed at once; a
    /// gap (a push dropped or reordered) is filled by reading the log.
    pub async fn handle_push(&mut self, push: Push) -> Result<(), OnlineError> {
        match push {
            Push::Group { group_id, entry } => {
                let id = GroupId::from_slice(group_id.as_slice());
                if !self.profile.is_hosted(&id)? {
                    return Ok(());
                }
                let lost = if entry.seq == self.profile.log_seq(&id)? + 1 {
                    let entry = LogEntry {
                        seq: entry.seq,
                        epoch: entry.epoch,
                        kind: entry.kind,
                        message: entry.message.into(),
                    };
                    self.receive(&id, &[entry])?
                } else {
                    self.sync_group(&id).await?
                };
                for intent in lost {
                    self.commit(&hex::encode(id.as_slice()), intent).await?;
                }
                Ok(())
            }
            Push::Mailbox(_) => self.read_mailbox().await.map(|_| ()),
        }
    }
}

/// One group's trouble must not stop the others: a refusal is logged and skipped, a lost
/// connection stops everything (it is retried on reconnection).
fn per_group<T>(id: &GroupId, result: Result<T, OnlineError>) -> Result<Option<T>, OnlineError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_disconnect() => Err(e),
        Err(e) => {
            let group = hex::encode(id.as_slice());
            tracing::warn!(%group, error = %e, "group skipped while catching up");
            Ok(None)
        }
    }
}

async fn resolve(address: &str) -> Result<SocketAddr, OnlineError> {
    tokio::net::lookup_host(address)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| OnlineError::Address(address.into()))
}
