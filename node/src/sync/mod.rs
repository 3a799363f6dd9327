//! The sync core: every rule that decides what happens to our groups when a log orders them, with
//! no I/O of its own (sans-IO, as quinn-proto is). Inputs are the node's answers, its pushes,
//! the time and the user's requests; outputs are requests to send ([`Core::poll_request`]) and
//! notices for the user ([`Core::poll_notice`]). The profile underneath is the durable state:
//! every decision is taken from it and written to it before anything is sent.
//!
//! Drivers carry the requests: the QUIC client of a delivery node ([`crate::driver`]), and the
//! deterministic simulator (`node/tests/simulation.rs`), which delays, drops, duplicates and
//! reorders them, loses answers and crashes members. Direct peer-to-peer transport will be a
//! third driver: a peer serving a group's log speaks the same requests.
//!
//! # Lanes
//! Requests travel in lanes: one per group, one for the mailbox, one for the account
//! (KeyPackages, claims). A lane has at most one request in flight, so a group's posts reach the
//! log in the order we made them; different lanes go in parallel. In a group's lane, in order:
//! create the group on the node if it never got there; subscribe; read the log while it may
//! hold entries past our cursor; post our pending commit; then the group's changes (each made
//! into a commit when its turn comes) and texts (encrypted when their turn comes, and again if
//! their epoch ended first) in the order our user asked for them: a text sent after an add
//! reaches the new member, one sent before it does not.
//!
//! # A group we cannot go on in
//! A commit we cannot process marks the group broken (the profile stops reading it there).
//! Its members then start it again in turn ([`RECOVERY_STAGGER`] apart, by leaf order): a new
//! group on our node with everyone we knew, which announces, once they are added, that it
//! continues the old one. A member who was in the old group follows the announcement: the new
//! group takes the old one's name and its queued texts.
//!
//! # Files
//! This file holds the core, its inputs, the user's requests and its outputs; each lane's
//! decisions are in a file of its own: `group.rs` (a group's log), `mailbox.rs` (Welcomes and
//! joins), `account.rs` (KeyPackages and claims), `recovery.rs` (broken groups started
//! again); `order.rs` is the one rule of what a group's lane sends next, a change or a text;
//! `race.rs` the rule that picks one of two commits for an epoch of a node-less group;
//! `error.rs` says why a request failed.
//!
//! # Rules that keep acknowledged texts
//! - When the log orders our commit at `seq` and entries lie between our cursor and `seq`, they
//!   are read first (OpenMLS keeps the current epoch until our commit is merged), so texts sent
//!   just before our commit are not skipped.
//! - A text keeps its post id when encrypted again; the log answers a repeat with the first
//!   position, which is where the sender shows it too.
//! - Losing a race for an epoch puts our change back at the head of its queue (durably).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use openmls::prelude::GroupId;

use mlschat_wire::{
    ClaimAnswer, CreateGroup, ErrorCode, ErrorResponse, FetchGroup, FetchTree, MAX_CLAIMS,
    PostCommit, PostId, PostMessage, PublishKeyPackages, Request, Response, WelcomeFor,
};

use crate::engine::MemberInfo;
use crate::identity::Fingerprint;
use crate::profile::{
    AddError, Alert, Announcement, Claim, GroupSummary, Intent, LogEntry, LogRead, PendingCommit,
    Prepared, Profile, ProfileError, TextsMark,
};
use crate::sealed_tree::TreeSecret;

mod account;
mod error;
mod group;
mod mailbox;
mod order;
pub mod race;
mod recovery;

pub use error::SyncError;
use error::passes;
use group::log_entry;

/// Keep at least this many one-time KeyPackages on the node; top up to [`KEY_PACKAGE_STOCK`].
const KEY_PACKAGE_LOW: u32 = 10;
const KEY_PACKAGE_STOCK: u32 = 30;
/// Entries asked for per read of a log or mailbox.
pub const FETCH_LIMIT: u32 = 500;
/// How often (ms) our logs, the mailbox and our KeyPackage stock are read without a push.
pub const POLL_INTERVAL: u64 = 30_000;
/// How long (ms) a lane waits after a refusal that may pass (the node failed or is busy).
pub const RETRY_AFTER: u64 = 1_000;
/// The longest a lane waits before it tries again after refusals in a row (ms).
pub const MAX_RETRY_WAIT: u64 = 60_000;
/// A broken group is started again by its members in turn (by leaf order), this long (ms)
/// apart: long beside a poll, so that the others have followed the first one's announcement
/// before their turn comes unless it is offline that long.
pub const RECOVERY_STAGGER: u64 = 600_000;

/// Where a request travels: requests of one lane go one at a time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// KeyPackages and claims.
    Account,
    /// Welcomes.
    Mailbox,
    /// One group's log.
    Group(Vec<u8>),
}

impl std::fmt::Display for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lane::Account => write!(f, "our KeyPackages"),
            Lane::Mailbox => write!(f, "our mailbox"),
            Lane::Group(id) => write!(f, "group {}", hex::encode(id)),
        }
    }
}

/// A request to send, and the lane its answer belongs to.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub lane: Lane,
    pub request: Request,
}

/// The node's answer: a response, or a refusal.
pub type Answer = Result<Response, ErrorResponse>;

/// Names a user request whose outcome comes later as a [`Notice`].
pub type Ticket = u64;

/// What the user hears.
#[derive(Debug)]
pub enum Notice {
    /// A request is done: the text is on the node, the change committed, the sync finished.
    Done {
        ticket: Ticket,
        result: Result<(), SyncError>,
    },
    /// We joined a group from a Welcome.
    Joined(GroupSummary),
    /// Something our user should know about the account (e.g. KeyPackages drained).
    Alert(Alert),
}

/// What a lane's request in flight is.
#[derive(Debug)]
enum Waiting {
    Subscribe,
    Fetch,
    Create,
    Commit,
    Text {
        outbox: i64,
        post_id: PostId,
    },
    /// That this group continues a broken one.
    Announcement,
    /// Our notice that the group is a fork past where it broke.
    Notice,
    Stock,
    Publish,
    /// KeyPackages of the first this many claimees of the first add.
    Claims(usize),
    ClaimLog,
    Mailbox,
    Tree,
    Ack,
}

#[derive(Debug, Default)]
struct LaneState {
    waiting: Option<Waiting>,
    /// The log (or mailbox) may hold entries past our cursor; for the account lane, the stock
    /// is to be checked.
    behind: bool,
    subscribed: bool,
    /// The group is unknown to the node (its creation never reached it): create it.
    create: bool,
    /// After a refusal that may pass: nothing is sent before this time (ms).
    parked_until: u64,
    /// Our posts refused as stale in a row while our log cursor stayed here: (cursor, count).
    /// The log had nothing for us, so what we hold in memory is not what is stored (or the
    /// node is wrong): the group is reloaded and the lane backs off instead of posting again.
    fruitless: Option<(u64, u32)>,
    /// Refusals that may pass, in a row: each waits twice as long as the one before.
    retries: u32,
}

/// A lane whose posts keep being refused as stale while the log brings nothing: it backs off,
/// and `status` lists it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StuckLane {
    #[schemars(with = "crate::schema::GroupIdHex")]
    pub group: String,
    /// Posts refused as stale in a row with nothing new to read.
    pub refusals: u32,
}

/// Refusals as stale in a row, with nothing new read, after which a lane is stuck.
const STUCK_AFTER: u32 = 3;

/// An `add` waiting for KeyPackages to be claimed.
#[derive(Debug)]
struct Claims {
    ticket: Ticket,
    group: GroupId,
    /// Where the add stands among the group's texts (it was asked before they were claimed).
    asked: TextsMark,
    remaining: VecDeque<Claimee>,
    key_packages: Vec<Vec<u8>>,
}

/// Whose KeyPackage to claim.
#[derive(Debug)]
enum Claimee {
    /// A contact, by name: the package must carry the contact's key and name.
    Contact(String),
    /// A member of a group we start again: the package must carry the key we knew. One that
    /// cannot be claimed is left out rather than stopping the others.
    Member(Fingerprint),
}

impl Claimee {
    /// Who it is, for people.
    fn describe(&self) -> String {
        match self {
            Claimee::Contact(name) => name.clone(),
            Claimee::Member(fingerprint) => format!("member {}", fingerprint.to_hex()),
        }
    }
}

/// A Welcome to join: fetch its tree, then join.
#[derive(Debug)]
struct Join {
    mailbox_id: u64,
    group_id: Vec<u8>,
    epoch: u64,
    welcome: Vec<u8>,
    /// The secret that fetches and opens the sealed tree, or why it could not be opened.
    tree_secret: Result<TreeSecret, String>,
    /// Whether the Welcome is for one of our KeyPackages: one that is not is passed, in its
    /// turn, without a fetch or a retry (a stranger's junk must cost us nothing).
    for_us: bool,
}

/// Which invitations to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Those whose wait is over, up to `JOIN_ATTEMPTS` tries.
    WhenDue,
    /// Every one: our user asked.
    All,
}

/// How long (ms) to wait before trying a Welcome again after `failed` tries: a poll interval,
/// doubling, at most six hours. A Welcome that cannot be joined must not cost a fetch at every
/// poll for ever.
fn join_backoff(failed: u32) -> u64 {
    (POLL_INTERVAL << failed.saturating_sub(1).min(12)).min(6 * 3_600_000)
}

/// The sync core of one profile.
#[derive(Debug)]
pub struct Core {
    profile: Profile,
    connected: bool,
    now: u64,
    lanes: BTreeMap<Lane, LaneState>,
    /// Lanes that may have something to send.
    dirty: BTreeSet<Lane>,
    notices: VecDeque<Notice>,
    next_ticket: Ticket,
    /// Who waits for which outbox row, intent, or for the core to go idle.
    texts: BTreeMap<i64, Ticket>,
    intents: BTreeMap<i64, Ticket>,
    syncs: Vec<Ticket>,
    claims: VecDeque<Claims>,
    joins: VecDeque<Join>,
    /// Welcomes we failed to join, by mailbox entry: how often, and when to try again.
    join_retries: BTreeMap<u64, (u32, u64)>,
    /// The last mailbox entry fetched that is still to be acknowledged.
    ack: Option<u64>,
    /// Fresh KeyPackages to publish.
    publish: Option<PublishKeyPackages>,
    /// The claim log of our KeyPackages is to be read (after each stock check).
    claim_log_due: bool,
    /// Broken groups we start again at these times (ms), unless a member did first.
    recoveries: BTreeMap<Vec<u8>, u64>,
    next_poll: u64,
    /// How long (s) a member added may take to join ([`INVITE_EXPIRY`] unless set).
    invite_expiry: u64,
    /// Members who never joined whose removal we queued: (group, fingerprint hex).
    expiring: BTreeSet<(Vec<u8>, String)>,
}

/// How long (s) a member added may take to join before the group's first admin removes it.
pub const INVITE_EXPIRY: u64 = 7 * 24 * 3600;

impl Core {
    pub fn new(profile: Profile) -> Self {
        Self {
            profile,
            connected: false,
            now: 0,
            lanes: BTreeMap::new(),
            dirty: BTreeSet::new(),
            notices: VecDeque::new(),
            next_ticket: 1,
            texts: BTreeMap::new(),
            intents: BTreeMap::new(),
            syncs: Vec::new(),
            claims: VecDeque::new(),
            joins: VecDeque::new(),
            join_retries: BTreeMap::new(),
            ack: None,
            publish: None,
            claim_log_due: false,
            recoveries: BTreeMap::new(),
            invite_expiry: INVITE_EXPIRY,
            expiring: BTreeSet::new(),
            next_poll: 0,
        }
    }

    pub fn profile(&mut self) -> &mut Profile {
        &mut self.profile
    }

    pub fn into_profile(self) -> Profile {
        self.profile
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    // ----- inputs -----

    /// A connection is up (logged in): everything is read again from our cursors.
    pub fn handle_connected(&mut self, now: u64) -> Result<(), ProfileError> {
        self.connected = true;
        self.now = now;
        self.lanes.clear();
        self.joins.clear();
        self.ack = None;
        for id in self.profile.hosted_groups()? {
            self.touch_group(id.as_slice(), true);
        }
        for id in self.profile.groups_with_notices()? {
            self.touch_group(id.as_slice(), false);
        }
        self.touch(Lane::Mailbox, true);
        self.touch(Lane::Account, true);
        self.queue_invitations(Retry::WhenDue)?;
        self.schedule_recoveries()?;
        // A group we started again whose members were never added (we crashed meanwhile).
        for (new, members) in self.profile.unfinished_continuations()? {
            if !self.claims.iter().any(|c| c.group == new) {
                self.claim_members(new, members);
            }
        }
        self.next_poll = now + POLL_INTERVAL;
        Ok(())
    }

    /// The connection is gone: answers in flight are lost. Everything durable stays queued; the
    /// requests waiting on it are told.
    pub fn handle_disconnected(&mut self, now: u64) {
        self.now = now;
        self.connected = false;
        self.lanes.clear();
        self.dirty.clear();
        self.joins.clear();
        self.ack = None;
        // An add still claiming KeyPackages goes on after reconnecting, as queued changes do:
        // its asker is told it is queued, not refused.
        let waiting = std::mem::take(&mut self.texts)
            .into_values()
            .chain(std::mem::take(&mut self.intents).into_values())
            .chain(std::mem::take(&mut self.syncs))
            .chain(self.claims.iter().map(|c| c.ticket))
            .collect::<Vec<_>>();
        for ticket in waiting {
            self.done(ticket, Err(SyncError::Disconnected));
        }
    }

    /// Time passes: periodic checks, and lanes parked after a refusal go again.
    pub fn handle_timeout(&mut self, now: u64) {
        self.now = now;
        if !self.connected {
            return;
        }
        if now >= self.next_poll {
            self.next_poll = now + POLL_INTERVAL;
            // Pushes may be lost (the node drops them for a slow connection): a lost push of a
            // log's last entry leaves no gap to notice, so every log is read again now and then.
            match self.profile.hosted_groups() {
                Ok(groups) => {
                    for id in groups {
                        self.touch_group(id.as_slice(), true);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not list groups to poll"),
            }
            self.touch(Lane::Mailbox, true);
            self.touch(Lane::Account, true);
            if let Err(e) = self.queue_invitations(Retry::WhenDue) {
                tracing::warn!(error = %e, "could not list invitations to retry");
            }
            if let Err(e) = self.remove_overdue_invitees() {
                tracing::warn!(error = %e, "could not remove members who never joined");
            }
        }
        let recover: Vec<Vec<u8>> = self
            .recoveries
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let still_broken: Vec<Vec<u8>> = match self.profile.broken_groups() {
            Ok(broken) => broken
                .into_iter()
                .map(|(id, ..)| id.as_slice().to_vec())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not list broken groups");
                Vec::new()
            }
        };
        for id in recover {
            self.recoveries.remove(&id);
            if !still_broken.contains(&id) {
                continue; // another member started it again, and we followed
            }
            if let Err(e) = self.recover(&GroupId::from_slice(&id)) {
                tracing::warn!(group = %hex::encode(&id), error = %e, "could not start a broken group again");
            }
        }
        let due: Vec<Lane> = self
            .lanes
            .iter()
            .filter(|(_, s)| s.parked_until != 0 && s.parked_until <= now)
            .map(|(lane, _)| lane.clone())
            .collect();
        for lane in due {
            self.lanes.get_mut(&lane).expect("listed").parked_until = 0;
            self.dirty.insert(lane);
        }
    }

    /// When [`Self::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<u64> {
        if !self.connected {
            return None;
        }
        let parked = self
            .lanes
            .values()
            .map(|s| s.parked_until)
            .filter(|&t| t != 0);
        parked.chain([self.next_poll]).min()
    }

    /// A push from the node.
    pub fn handle_push(&mut self, push: mlschat_wire::Push, now: u64) -> Result<(), ProfileError> {
        self.now = now;
        match push {
            mlschat_wire::Push::Group { group_id, entry } => {
                let id = GroupId::from_slice(group_id.as_slice());
                if !self.profile.is_read(&id)? {
                    return Ok(());
                }
                let cursor = self.profile.log_seq(&id)?;
                if entry.seq == cursor + 1 {
                    let entry = log_entry(entry);
                    let read = self.profile.receive_log(&id, &[entry])?;
                    self.after_read(&id, read);
                } else if entry.seq > cursor {
                    self.touch_group(id.as_slice(), true);
                }
            }
            mlschat_wire::Push::Mailbox(_) => self.touch(Lane::Mailbox, true),
        }
        Ok(())
    }

    /// The answer to the request in flight on `lane`.
    pub fn handle_answer(&mut self, lane: Lane, answer: Answer, now: u64) {
        self.now = now;
        let Some(state) = self.lanes.get_mut(&lane) else {
            return; // a lane of an older connection
        };
        let Some(waiting) = state.waiting.take() else {
            return;
        };
        self.dirty.insert(lane.clone());
        if let Ok(response) = &answer {
            state.retries = 0;
            if matches!(
                response,
                Response::Accepted { .. } | Response::Committed { .. }
            ) {
                state.fruitless = None;
            }
        }
        let result = match &lane {
            Lane::Group(id) => self.group_answer(&GroupId::from_slice(id), waiting, answer),
            Lane::Mailbox => self.mailbox_answer(waiting, answer),
            Lane::Account => self.account_answer(waiting, answer),
        };
        if let Err(e) = result {
            tracing::warn!(?lane, error = %e, "an answer could not be applied; retrying");
            self.park(&lane);
        }
    }

    // ----- user requests -----

    /// Queues a text for a hosted group; done once the node has it.
    pub fn send(&mut self, id: &GroupId, text: &str) -> Result<Ticket, ProfileError> {
        let outbox = self.profile.send_hosted(id, text)?;
        let ticket = self.ticket();
        self.texts.insert(outbox, ticket);
        self.touch_group(id.as_slice(), false);
        Ok(ticket)
    }

    /// Asks to leave a hosted group: done once the node has our proposal; the member whose turn
    /// it is commits it (see `Profile::leave_hosted`).
    pub fn leave(&mut self, id: &GroupId) -> Result<Ticket, ProfileError> {
        let outbox = self.profile.leave_hosted(id)?;
        let ticket = self.ticket();
        self.texts.insert(outbox, ticket);
        self.touch_group(id.as_slice(), false);
        Ok(ticket)
    }

    /// Queues a change of a hosted group; done once it is committed.
    pub fn change(&mut self, id: &GroupId, intent: Intent) -> Result<Ticket, ProfileError> {
        let asked = self.profile.texts_mark()?;
        let seq = self.profile.queue_intent(id, &intent, asked)?;
        let ticket = self.ticket();
        self.intents.insert(seq, ticket);
        self.touch_group(id.as_slice(), false);
        Ok(ticket)
    }

    /// Adds contacts (by name) in one commit: their KeyPackages are claimed first.
    pub fn add(&mut self, id: &GroupId, contacts: &[String]) -> Result<Ticket, ProfileError> {
        self.profile.ensure_hosted(id)?;
        self.profile.ensure_admin(id, "add members")?;
        let members = self.profile.members(id)?;
        for name in contacts {
            let contact = match self.profile.contact(name) {
                Err(ProfileError::UnknownContact(_)) if name.ends_with(".kp") => {
                    return Err(AddError::KeyPackageFile(name.clone()).into());
                }
                found => found?,
            };
            if let Some(why) = contact.flagged {
                return Err(ProfileError::ContactFlagged(contact.name, why));
            }
            let fingerprint = Fingerprint::of_signature_key(&contact.signature_key);
            if members.iter().any(|m| m.fingerprint == fingerprint) {
                return Err(AddError::AlreadyMember(contact.name).into());
            }
        }
        let ticket = self.ticket();
        self.claims.push_back(Claims {
            ticket,
            group: id.clone(),
            asked: self.profile.texts_mark()?,
            remaining: contacts.iter().cloned().map(Claimee::Contact).collect(),
            key_packages: Vec::new(),
        });
        self.touch(Lane::Account, false);
        Ok(ticket)
    }

    /// Removes members (user/device, user, fingerprint prefix or #leaf) in one commit.
    pub fn remove(&mut self, id: &GroupId, who: &[String]) -> Result<Ticket, ProfileError> {
        self.profile.ensure_admin(id, "remove members")?;
        // By fingerprint: made (and made again after a lost race) against the group as it is.
        let fingerprints = self
            .profile
            .resolve_members(id, who)?
            .iter()
            .map(|m| m.fingerprint.to_hex())
            .collect();
        self.change(id, Intent::Remove { fingerprints })
    }

    /// Creates a group whose log lives on our node; the lane creates it there.
    pub fn create_group(&mut self, name: &str) -> Result<GroupSummary, ProfileError> {
        let (summary, id) = self.profile.create_hosted_group(name)?;
        self.touch_group(id.as_slice(), true);
        Ok(summary)
    }

    /// Reads everything again; done when nothing is left to send or read.
    pub fn sync(&mut self) -> Result<Ticket, ProfileError> {
        for id in self.profile.hosted_groups()? {
            self.touch_group(id.as_slice(), true);
        }
        self.touch(Lane::Mailbox, true);
        self.touch(Lane::Account, true);
        let ticket = self.ticket();
        if self.connected {
            // An invitation our user just accepted, or one whose tree may be back: our user
            // asked, so every one is tried now.
            self.queue_invitations(Retry::All)?;
            self.syncs.push(ticket);
        } else {
            self.done(ticket, Err(SyncError::Disconnected));
        }
        Ok(ticket)
    }

    // ----- outputs -----

    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    /// The next request to send, if any lane has one.
    pub fn poll_request(&mut self) -> Option<Outbound> {
        if !self.connected {
            return None;
        }
        while let Some(lane) = self.dirty.pop_first() {
            let state = self.lanes.entry(lane.clone()).or_default();
            if state.waiting.is_some() || state.parked_until > self.now {
                continue;
            }
            let next = match &lane {
                Lane::Group(id) => self.next_for_group(&GroupId::from_slice(id)),
                Lane::Mailbox => self.next_for_mailbox(),
                Lane::Account => self.next_for_account(),
            };
            match next {
                Ok(Some((waiting, request))) => {
                    self.lanes.get_mut(&lane).expect("made above").waiting = Some(waiting);
                    return Some(Outbound { lane, request });
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(?lane, error = %e, "could not prepare a request; retrying");
                    self.park(&lane);
                }
            }
        }
        if self.is_idle() {
            for ticket in std::mem::take(&mut self.syncs) {
                self.done(ticket, Ok(()));
            }
        }
        None
    }

    /// Nothing in flight, nothing to send.
    pub fn is_idle(&self) -> bool {
        self.dirty.is_empty()
            && self
                .lanes
                .values()
                .all(|s| s.waiting.is_none() && s.parked_until == 0)
            && self.claims.is_empty()
            && self.joins.is_empty()
    }

    /// Idle, and no broken group waits for its turn to be started again.
    pub fn is_settled(&self) -> bool {
        self.is_idle() && self.recoveries.is_empty()
    }

    // ----- helpers -----

    fn ticket(&mut self) -> Ticket {
        self.next_ticket += 1;
        self.next_ticket
    }

    fn done(&mut self, ticket: Ticket, result: Result<(), SyncError>) {
        self.notices.push_back(Notice::Done { ticket, result });
    }

    fn text_done(&mut self, outbox: i64, result: Result<(), SyncError>) {
        if let Some(ticket) = self.texts.remove(&outbox) {
            self.done(ticket, result);
        }
    }

    fn intent_done(&mut self, intent: i64, result: Result<(), SyncError>) {
        if let Some(ticket) = self.intents.remove(&intent) {
            self.done(ticket, result);
        }
    }

    fn state(&mut self, lane: &Lane) -> &mut LaneState {
        self.lanes.entry(lane.clone()).or_default()
    }

    /// Marks a lane as having work (and, with `behind`, entries to read).
    fn touch(&mut self, lane: Lane, behind: bool) {
        if !self.connected {
            return;
        }
        let state = self.state(&lane);
        state.behind |= behind;
        self.dirty.insert(lane);
    }

    fn touch_group(&mut self, id: &[u8], behind: bool) {
        self.touch(Lane::Group(id.to_vec()), behind);
    }

    /// A lane failed: it waits [`RETRY_AFTER`] before it tries again. A sync under way is told
    /// it did not finish, rather than that everything is read.
    fn park(&mut self, lane: &Lane) {
        let state = self.state(lane);
        let wait = (RETRY_AFTER << state.retries.min(6)).min(MAX_RETRY_WAIT);
        state.retries += 1;
        self.park_for(lane, wait);
    }

    fn park_for(&mut self, lane: &Lane, wait: u64) {
        let until = self.now + wait;
        self.state(lane).parked_until = until;
        self.dirty.remove(lane);
        for ticket in std::mem::take(&mut self.syncs) {
            self.done(ticket, Err(SyncError::Incomplete(lane.clone())));
        }
    }
}
