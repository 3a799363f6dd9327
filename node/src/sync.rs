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
    Alert, Announcement, Claim, GroupSummary, Intent, LogEntry, LogRead, PendingCommit, Prepared,
    Profile, ProfileError, TextsMark,
};
use crate::sealed_tree::TreeSecret;

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

/// Why a request did not go through.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The node refused, for a reason that will not pass by retrying.
    #[error("the delivery node refused: {detail} ({code:?})")]
    Refused { code: ErrorCode, detail: String },
    /// The connection went before the request was done. Texts stay queued and changes too:
    /// they go on after reconnecting.
    #[error("the connection to the delivery node was lost; the request goes on once it is back")]
    Disconnected,
    /// We are no longer a member of the group.
    #[error("we are no longer a member of this group")]
    Removed,
    /// A sync stopped before everything was read or sent: this lane failed (the log says why)
    /// and is tried again.
    #[error("not up to date: reading or sending for {0} failed and is tried again (see the log)")]
    Incomplete(Lane),
    /// The request was dropped, for the reason given.
    #[error("dropped: {0}")]
    Dropped(&'static str),
    /// The node answered with something that does not answer the request.
    #[error("the delivery node answered out of protocol: {0}")]
    Unexpected(String),
}

impl SyncError {
    fn refused(e: &ErrorResponse) -> Self {
        let mut detail = String::from_utf8_lossy(e.detail.as_slice()).into_owned();
        if e.code == ErrorCode::InviteRequired {
            detail.push_str(
                "; give the invite token its operator gave you: `mlschat home set ADDRESS \
                 FINGERPRINT --invite TOKEN`",
            );
        }
        SyncError::Refused {
            code: e.code,
            detail,
        }
    }
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
#[derive(Debug, Clone, serde::Serialize)]
pub struct StuckLane {
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
    pub fn handle_disconnected(&mut self) {
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
    pub fn handle_push(&mut self, push: mlschat_wire::Push) -> Result<(), ProfileError> {
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
    pub fn handle_answer(&mut self, lane: Lane, answer: Answer) {
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
    pub fn send(&mut self, group: &str, text: &str) -> Result<Ticket, ProfileError> {
        let id = self.profile.hosted_group(group)?;
        let outbox = self.profile.send_hosted(group, text)?;
        let ticket = self.ticket();
        self.texts.insert(outbox, ticket);
        self.touch_group(id.as_slice(), false);
        Ok(ticket)
    }

    /// Asks to leave a hosted group: done once the node has our proposal; the member whose turn
    /// it is commits it (see `Profile::leave_hosted`).
    pub fn leave(&mut self, group: &str) -> Result<Ticket, ProfileError> {
        let id = self.profile.hosted_group(group)?;
        let outbox = self.profile.leave_hosted(group)?;
        let ticket = self.ticket();
        self.texts.insert(outbox, ticket);
        self.touch_group(id.as_slice(), false);
        Ok(ticket)
    }

    /// Queues a change of a hosted group; done once it is committed.
    pub fn change(&mut self, group: &str, intent: Intent) -> Result<Ticket, ProfileError> {
        let id = self.profile.hosted_group(group)?;
        let asked = self.profile.texts_mark()?;
        let seq = self.profile.queue_intent(group, &intent, asked)?;
        let ticket = self.ticket();
        self.intents.insert(seq, ticket);
        self.touch_group(id.as_slice(), false);
        Ok(ticket)
    }

    /// Adds contacts (by name) in one commit: their KeyPackages are claimed first.
    pub fn add(&mut self, group: &str, contacts: &[String]) -> Result<Ticket, ProfileError> {
        let id = self.profile.hosted_group(group)?;
        self.profile.ensure_admin(group, "add members")?;
        let members = self.profile.members(group)?;
        for name in contacts {
            let contact = match self.profile.contact(name) {
                Err(ProfileError::UnknownContact(_)) if name.ends_with(".kp") => {
                    return Err(ProfileError::WrongKind(format!(
                        "{name:?} looks like a KeyPackage file, but this group is on the \
                         delivery node: add members by contact name (`mlschat contact list`)"
                    )));
                }
                found => found?,
            };
            if let Some(why) = contact.flagged {
                return Err(ProfileError::ContactFlagged(contact.name, why));
            }
            let fingerprint = Fingerprint::of_signature_key(&contact.signature_key);
            if members.iter().any(|m| m.fingerprint == fingerprint) {
                return Err(ProfileError::WrongKind(format!(
                    "{} is already in this group",
                    contact.name
                )));
            }
        }
        let ticket = self.ticket();
        self.claims.push_back(Claims {
            ticket,
            group: id,
            asked: self.profile.texts_mark()?,
            remaining: contacts.iter().cloned().map(Claimee::Contact).collect(),
            key_packages: Vec::new(),
        });
        self.touch(Lane::Account, false);
        Ok(ticket)
    }

    /// Removes members (user/device, user, fingerprint prefix or #leaf) in one commit.
    pub fn remove(&mut self, group: &str, who: &[String]) -> Result<Ticket, ProfileError> {
        self.profile.ensure_admin(group, "remove members")?;
        // By fingerprint: made (and made again after a lost race) against the group as it is.
        let fingerprints = self
            .profile
            .resolve_members(group, who)?
            .iter()
            .map(|m| m.fingerprint.to_hex())
            .collect();
        self.change(group, Intent::Remove { fingerprints })
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

    /// Starts a broken group again now: a new group on our node with everyone we knew there,
    /// which announces that it continues the old one. Done once they are added.
    pub fn recover(&mut self, old: &GroupId) -> Result<Ticket, ProfileError> {
        let (summary, members) = self.profile.start_continuation(old)?;
        tracing::info!(old = %hex::encode(old.as_slice()), new = %summary.id, "starting a broken group again");
        let id = GroupId::from_slice(&hex::decode(&summary.id).expect("our own hex"));
        self.touch_group(id.as_slice(), true);
        Ok(self.claim_members(id, members))
    }

    /// Claims KeyPackages of the members of a group we start again, to add them.
    fn claim_members(&mut self, group: GroupId, members: Vec<MemberInfo>) -> Ticket {
        let ticket = self.ticket();
        self.claims.push_back(Claims {
            ticket,
            group,
            // Its members are added before anything is said in it (its texts were moved in).
            asked: TextsMark::FIRST,
            remaining: members
                .into_iter()
                .map(|m| Claimee::Member(m.fingerprint))
                .collect(),
            key_packages: Vec::new(),
        });
        self.touch(Lane::Account, false);
        ticket
    }

    /// Each broken group is started again by its members in leaf order, [`RECOVERY_STAGGER`]
    /// apart: the first who is able does it, and the others follow its announcement.
    fn schedule_recoveries(&mut self) -> Result<(), ProfileError> {
        for (id, _, rank) in self.profile.broken_groups()? {
            let Some(rank) = rank else {
                continue; // not an admin: we follow whoever starts it again
            };
            let at = self.now + rank as u64 * RECOVERY_STAGGER;
            self.recoveries.entry(id.as_slice().to_vec()).or_insert(at);
        }
        Ok(())
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

    // ----- groups -----

    fn next_for_group(&mut self, id: &GroupId) -> Result<Option<(Waiting, Request)>, SyncError> {
        // A group broken for us may still have a word for those who went on past it.
        if let Some(notice) = self.profile.notice_to_post(id)? {
            return Ok(Some((Waiting::Notice, Request::PostNotice(notice))));
        }
        if !self.profile.is_read(id)? {
            return Ok(None);
        }
        let (epoch, token) = self.profile.group_token(id)?;
        let state = &self.lanes[&Lane::Group(id.as_slice().to_vec())];
        let (subscribed, behind) = (state.subscribed, state.behind);
        let read = |limit| FetchGroup {
            group_id: id.as_slice().into(),
            token,
            after_seq: 0,
            limit,
        };
        if state.create {
            let create = CreateGroup {
                group_id: id.as_slice().into(),
                token_hash: mlschat_wire::token::token_hash(&token),
            };
            return Ok(Some((Waiting::Create, Request::CreateGroup(create))));
        }
        if !subscribed {
            return Ok(Some((Waiting::Subscribe, Request::Subscribe(read(0)))));
        }
        if behind {
            let fetch = FetchGroup {
                after_seq: self.profile.log_seq(id)?,
                ..read(FETCH_LIMIT)
            };
            return Ok(Some((Waiting::Fetch, Request::FetchGroup(fetch))));
        }
        if let Some(pending) = self.profile.pending_commit(id)? {
            return Ok(Some((Waiting::Commit, post_commit(&pending))));
        }
        // Changes and texts go in the order asked (`TextsMark`); a joiner's key refresh and the
        // members of a group started again come before anything is said. An add still claiming
        // KeyPackages goes before the changes asked after it.
        let claiming = self
            .claims
            .iter()
            .filter(|c| c.group == *id)
            .map(|c| c.asked)
            .min();
        loop {
            let next = self.profile.next_change_mark(id)?;
            if next.is_some_and(|next| claiming.is_some_and(|claiming| claiming < next)) {
                break;
            }
            match self.profile.prepare_next_commit(id)? {
                Prepared::Nothing => break,
                Prepared::Commit(pending) => {
                    return Ok(Some((Waiting::Commit, post_commit(&pending))));
                }
                Prepared::Done { intent } => self.intent_done(intent, Ok(())),
                Prepared::Failed { intent, error } => {
                    tracing::warn!(intent, %error, "a change could not be made");
                    self.intent_done(intent, Err(error.into()));
                }
            }
        }
        // A group started again says so before anything else, once its members are in: all of
        // them (its followers check), so not while some are still being claimed.
        match self.profile.announcement(id)? {
            None => {}
            Some(Announcement::Waiting) => return Ok(None),
            Some(Announcement::Ready { .. }) if claiming.is_some() => return Ok(None),
            Some(Announcement::Ready {
                epoch,
                message,
                post_id,
            }) => {
                let post = PostMessage {
                    group_id: id.as_slice().into(),
                    epoch,
                    token,
                    post_id,
                    message: message.into(),
                };
                return Ok(Some((Waiting::Announcement, Request::PostMessage(post))));
            }
        }
        let waiting_change = claiming
            .into_iter()
            .chain(self.profile.next_change_mark(id)?)
            .min();
        while let Some(text) = self.profile.next_text(id)? {
            if waiting_change.is_some_and(|change| change.is_before(text.seq)) {
                return Ok(None); // asked after a change that waits
            }
            let Some((at, message)) = text.encrypted.filter(|(at, _)| *at == epoch) else {
                // Its turn has come, or its epoch ended before the node took it.
                if !self.profile.encrypt_queued(text.seq)? {
                    let dropped = "a queued proposal's epoch ended before the node took it";
                    self.text_done(text.seq, Err(SyncError::Dropped(dropped)));
                }
                continue;
            };
            let post = PostMessage {
                group_id: id.as_slice().into(),
                epoch: at,
                token,
                post_id: text.post_id,
                message: message.into(),
            };
            let waiting = Waiting::Text {
                outbox: text.seq,
                post_id: text.post_id,
            };
            return Ok(Some((waiting, Request::PostMessage(post))));
        }
        Ok(None)
    }

    fn group_answer(
        &mut self,
        id: &GroupId,
        waiting: Waiting,
        answer: Answer,
    ) -> Result<(), SyncError> {
        let lane = Lane::Group(id.as_slice().to_vec());
        match (waiting, answer) {
            (Waiting::Subscribe, Ok(_)) => self.state(&lane).subscribed = true,
            (Waiting::Fetch, Ok(Response::GroupEntries { entries })) => {
                self.state(&lane).behind = !entries.is_empty();
                let entries: Vec<LogEntry> = entries.into_iter().map(log_entry).collect();
                let read = self.profile.receive_log(id, &entries)?;
                self.after_read(id, read);
            }
            (Waiting::Subscribe | Waiting::Fetch, Err(e)) if e.code == ErrorCode::UnknownGroup => {
                // Our group's creation never reached the node: create it now.
                if self.profile.group_token(id)?.0 != 0 || self.profile.log_seq(id)? != 0 {
                    return Err(SyncError::refused(&e));
                }
                self.state(&lane).create = true;
            }
            (Waiting::Create, Ok(_)) => self.state(&lane).create = false,
            (Waiting::Create, Err(e)) if e.code == ErrorCode::GroupExists => {
                self.state(&lane).create = false;
            }
            (
                Waiting::Commit,
                Ok(Response::Committed {
                    seq, undelivered, ..
                }),
            ) => {
                self.profile.welcomes_undelivered(id, &undelivered)?;
                if self.profile.pending_commit(id)?.is_some() {
                    if seq == self.profile.log_seq(id)? + 1 {
                        let intent = self.profile.confirm_commit(id, seq)?;
                        self.intent_done(intent, Ok(()));
                    } else {
                        // Entries lie between our cursor and our commit: read them first.
                        self.state(&lane).behind = true;
                    }
                }
            }
            (Waiting::Text { outbox, post_id }, Ok(Response::Accepted { seq, .. })) => {
                if self.profile.mark_posted(outbox, &post_id, seq)? {
                    self.text_done(outbox, Ok(()));
                }
            }
            (Waiting::Announcement, Ok(Response::Accepted { .. })) => self.profile.announced(id)?,
            (Waiting::Notice, Ok(Response::Accepted { .. })) => self.profile.notice_posted(id)?,
            (Waiting::Notice, Err(e)) if !passes(e.code) => {
                tracing::warn!(code = ?e.code, "the delivery node refused our notice of a fork");
                self.profile.notice_posted(id)?;
            }
            (Waiting::Commit | Waiting::Text { .. } | Waiting::Announcement, Err(e))
                if matches!(e.code, ErrorCode::StaleEpoch | ErrorCode::BadToken) =>
            {
                // Another commit took the epoch (or removed us): the log says which.
                self.state(&lane).behind = true;
                self.stale_refusal(id)?;
            }
            (Waiting::Commit, Err(e)) if !passes(e.code) => {
                let intent = self.profile.fail_commit(id)?;
                self.intent_done(intent, Err(SyncError::refused(&e)));
            }
            (Waiting::Text { outbox, .. }, Err(e)) if !passes(e.code) => {
                self.profile
                    .fail_text(outbox, &SyncError::refused(&e).to_string())?;
                self.text_done(outbox, Err(SyncError::refused(&e)));
            }
            (_, Err(e)) => {
                tracing::warn!(code = ?e.code, "the delivery node refused; retrying later");
                self.park(&lane);
            }
            (_, Ok(other)) => return Err(SyncError::Unexpected(format!("{other:?}"))),
        }
        Ok(())
    }

    /// A post refused as stale. Once more with nothing read since the last one, posting again
    /// would be refused again: reload the group from storage and back off, longer each time.
    fn stale_refusal(&mut self, id: &GroupId) -> Result<(), SyncError> {
        let cursor = self.profile.log_seq(id)?;
        let lane = Lane::Group(id.as_slice().to_vec());
        let state = self.state(&lane);
        let count = match state.fruitless {
            Some((at, count)) if at == cursor => count + 1,
            _ => 1,
        };
        state.fruitless = Some((cursor, count));
        if count < 2 {
            return Ok(());
        }
        self.profile.reload_group(id);
        let wait = (RETRY_AFTER << (count - 2).min(9)).min(MAX_RETRY_WAIT);
        self.park_for(&lane, wait);
        if count == STUCK_AFTER {
            tracing::warn!(
                group = %hex::encode(id.as_slice()),
                "our posts keep being refused as stale while the log has nothing new; backing off"
            );
        }
        Ok(())
    }

    /// How long (s) a member added may take to join before the group's first admin removes it.
    pub fn set_invite_expiry(&mut self, seconds: u64) {
        self.invite_expiry = seconds;
    }

    /// Members added who never joined within the invitation expiry are removed, once.
    fn remove_overdue_invitees(&mut self) -> Result<(), ProfileError> {
        for (id, fingerprints) in self.profile.overdue_invitees(self.invite_expiry)? {
            let fresh: Vec<String> = fingerprints
                .into_iter()
                .filter(|f| self.expiring.insert((id.as_slice().to_vec(), f.clone())))
                .collect();
            if fresh.is_empty() {
                continue;
            }
            let group = hex::encode(id.as_slice());
            tracing::info!(%group, members = fresh.len(), "removing members who never joined");
            self.change(
                &group,
                Intent::Remove {
                    fingerprints: fresh,
                },
            )?;
        }
        Ok(())
    }

    /// Lanes whose posts keep being refused with nothing to read: `status` shows them.
    pub fn stuck_lanes(&self) -> Vec<StuckLane> {
        self.lanes
            .iter()
            .filter_map(|(lane, state)| match (lane, state.fruitless) {
                (Lane::Group(id), Some((_, refusals))) if refusals >= STUCK_AFTER => {
                    Some(StuckLane {
                        group: hex::encode(id),
                        refusals,
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// Applies what reading the log did to the requests waiting on it.
    fn after_read(&mut self, id: &GroupId, read: LogRead) {
        for intent in read.committed {
            self.intent_done(intent, Ok(()));
        }
        for outbox in read.posted {
            self.text_done(outbox, Ok(()));
        }
        if read.broken.is_none() && !read.removed {
            return self.touch_group(id.as_slice(), false);
        }
        // Nothing waiting in this group can be done in it any more: each request is told why.
        let group = hex::encode(id.as_slice());
        let gone = || match &read.broken {
            Some(why) => SyncError::Profile(ProfileError::Broken(group.clone(), why.clone())),
            None => SyncError::Removed,
        };
        if !read.removed
            && let Err(e) = self.schedule_recoveries()
        {
            tracing::warn!(error = %e, "could not plan starting a broken group again");
        }
        // Our notice of the fork, if we left one, goes out on the group's lane.
        self.touch_group(id.as_slice(), false);
        if let Ok(waiting) = self.profile.waiting_in(id) {
            for outbox in waiting.texts {
                self.text_done(outbox, Err(gone()));
            }
            for intent in waiting.intents {
                self.intent_done(intent, Err(gone()));
            }
        }
    }

    // ----- mailbox -----

    fn next_for_mailbox(&mut self) -> Result<Option<(Waiting, Request)>, SyncError> {
        while let Some(join) = self.joins.front() {
            if !join.for_us {
                let join = self.joins.pop_front().expect("looked at");
                tracing::debug!(mailbox_id = join.mailbox_id, "passed a Welcome not for us");
                self.profile.pass_mailbox_entry(join.mailbox_id)?;
                continue;
            }
            let Ok(secret) = &join.tree_secret else {
                // Without the secret there is no tree to fetch: the join fails and says why.
                let join = self.joins.pop_front().expect("looked at");
                let why = join.tree_secret.clone().err().unwrap_or_default();
                self.join(join, Err(ProfileError::Corrupt(why)))?;
                continue;
            };
            let tree = FetchTree {
                group_id: join.group_id.clone().into(),
                epoch: join.epoch,
                access: secret.access(),
            };
            return Ok(Some((Waiting::Tree, Request::FetchTree(tree))));
        }
        if let Some(up_to) = self.ack.take() {
            return Ok(Some((Waiting::Ack, Request::AckMailbox { up_to })));
        }
        if self.state(&Lane::Mailbox).behind {
            let fetch = Request::FetchMailbox {
                after: self.profile.mailbox_seq()?,
                limit: FETCH_LIMIT,
            };
            return Ok(Some((Waiting::Mailbox, fetch)));
        }
        Ok(None)
    }

    fn mailbox_answer(&mut self, waiting: Waiting, answer: Answer) -> Result<(), SyncError> {
        match (waiting, answer) {
            (Waiting::Mailbox, Ok(Response::Mailbox { entries })) => {
                self.state(&Lane::Mailbox).behind = !entries.is_empty();
                let after = self.profile.mailbox_seq()?;
                if let Some(last) = entries.last() {
                    self.ack = Some(last.id);
                }
                for entry in entries.into_iter().filter(|e| e.id > after) {
                    let for_us = self.profile.welcome_is_for_us(entry.welcome.as_slice())?;
                    let tree_secret = if for_us {
                        self.profile
                            .open_tree_secret(
                                entry.welcome.as_slice(),
                                entry.tree_key.as_slice(),
                                entry.group_id.as_slice(),
                                entry.epoch,
                            )
                            .map_err(|e| e.to_string())
                    } else {
                        Err("not for one of our KeyPackages".to_owned())
                    };
                    self.joins.push_back(Join {
                        mailbox_id: entry.id,
                        group_id: entry.group_id.into(),
                        epoch: entry.epoch,
                        welcome: entry.welcome.into(),
                        tree_secret,
                        for_us,
                    });
                }
            }
            (Waiting::Tree, answer) => {
                let join = self.joins.pop_front().expect("a join was waiting");
                let tree = match answer {
                    Ok(Response::Tree { sealed_tree }) => Ok(sealed_tree.into()),
                    // Joining then fails and says why; the Welcome is kept to try again.
                    Ok(other) => Err(ProfileError::Corrupt(format!("not a tree: {other:?}"))),
                    Err(e) => Err(ProfileError::Corrupt(format!(
                        "the delivery node has no tree for us ({:?})",
                        e.code
                    ))),
                };
                self.join(join, tree)?;
            }
            (Waiting::Ack, _) => {}
            (_, Err(e)) => {
                tracing::warn!(code = ?e.code, "the delivery node refused a mailbox request");
                self.park(&Lane::Mailbox);
            }
            (_, Ok(other)) => return Err(SyncError::Unexpected(format!("{other:?}"))),
        }
        Ok(())
    }

    /// Joins from a Welcome in our mailbox with its sealed tree (or fails, keeping the
    /// invitation).
    fn join(&mut self, join: Join, tree: Result<Vec<u8>, ProfileError>) -> Result<(), SyncError> {
        let joined = self.profile.join_hosted(
            join.mailbox_id,
            &join.group_id,
            join.epoch,
            &join.welcome,
            join.tree_secret.as_ref().ok(),
            tree,
        )?;
        let Ok(group) = joined else {
            // Tried again after a wait that doubles with each failure.
            let (failed, at) = self.join_retries.entry(join.mailbox_id).or_insert((0, 0));
            *failed += 1;
            *at = self.now + join_backoff(*failed);
            return Ok(());
        };
        self.join_retries.remove(&join.mailbox_id);
        let id = hex::decode(&group.id).expect("our own hex");
        self.touch_group(&id, true);
        // Each join used one of our KeyPackages.
        self.touch(Lane::Account, true);
        self.notices.push_back(Notice::Joined(group));
        Ok(())
    }

    /// Welcomes we could not join yet are tried again, each with its tree fetched again: when
    /// their wait after the last failed try is over (or all of them, when our user asks).
    fn queue_invitations(&mut self, retry: Retry) -> Result<(), ProfileError> {
        for invitation in self.profile.invitations_to_try(retry == Retry::All)? {
            let due = self
                .join_retries
                .get(&invitation.mailbox_id)
                .is_none_or(|(_, at)| *at <= self.now);
            if (due || retry == Retry::All)
                && self
                    .joins
                    .iter()
                    .all(|j| j.mailbox_id != invitation.mailbox_id)
            {
                self.joins.push_back(Join {
                    mailbox_id: invitation.mailbox_id,
                    group_id: invitation.group_id,
                    epoch: invitation.epoch,
                    welcome: invitation.welcome,
                    tree_secret: invitation
                        .tree_secret
                        .ok_or_else(|| "its tree secret could not be opened".to_owned()),
                    for_us: true,
                });
            }
        }
        if !self.joins.is_empty() {
            self.touch(Lane::Mailbox, false);
        }
        Ok(())
    }

    // ----- account -----

    fn next_for_account(&mut self) -> Result<Option<(Waiting, Request)>, SyncError> {
        while let Some(claims) = self.claims.front() {
            if claims.remaining.is_empty() {
                // Nobody to claim for: nothing to add.
                let claims = self.claims.pop_front().expect("looked at");
                self.queue_add(claims);
                continue;
            }
            // One round trip for up to MAX_CLAIMS members of an add, not one each.
            let owners = claims
                .remaining
                .iter()
                .take(MAX_CLAIMS)
                .map(|claimee| match claimee {
                    Claimee::Contact(name) => Ok(self.profile.contact(name)?.client_id()),
                    Claimee::Member(fingerprint) => Ok(fingerprint.0),
                })
                .collect::<Result<Vec<_>, ProfileError>>()?;
            let waiting = Waiting::Claims(owners.len());
            return Ok(Some((waiting, Request::ClaimKeyPackages { owners })));
        }
        if let Some(publish) = self.publish.take() {
            return Ok(Some((
                Waiting::Publish,
                Request::PublishKeyPackages(publish),
            )));
        }
        let state = self.state(&Lane::Account);
        if state.behind {
            state.behind = false;
            self.claim_log_due = true;
            return Ok(Some((Waiting::Stock, Request::KeyPackageStock)));
        }
        if std::mem::take(&mut self.claim_log_due) {
            let after = self.profile.claim_log_seq()?;
            return Ok(Some((Waiting::ClaimLog, Request::ClaimLog { after })));
        }
        Ok(None)
    }

    fn account_answer(&mut self, waiting: Waiting, answer: Answer) -> Result<(), SyncError> {
        match (waiting, answer) {
            (Waiting::Claims(count), answer) => self.claims_answered(count, answer)?,
            (
                Waiting::Stock,
                Ok(Response::KeyPackageStock {
                    one_time,
                    last_resort,
                }),
            ) => {
                let missing_last_resort = !bool::from(last_resort);
                if one_time < KEY_PACKAGE_LOW || missing_last_resort {
                    let fresh = if one_time < KEY_PACKAGE_LOW {
                        KEY_PACKAGE_STOCK - one_time
                    } else {
                        0
                    };
                    let mut packages = Vec::new();
                    for _ in 0..fresh {
                        packages.push(self.profile.new_key_package(false)?.into());
                    }
                    let last_resort = if missing_last_resort {
                        self.profile.new_key_package(true)?
                    } else {
                        Vec::new()
                    };
                    let publish = PublishKeyPackages {
                        one_time: packages,
                        last_resort: last_resort.into(),
                    };
                    self.publish = Some(publish);
                }
            }
            (Waiting::Publish, Ok(_)) => {}
            (Waiting::ClaimLog, Ok(Response::ClaimLog { entries })) => {
                let claims: Vec<Claim> = entries
                    .into_iter()
                    .map(|e| Claim {
                        seq: e.seq,
                        claimer: e.claimer,
                        at: e.at,
                        last_resort: e.last_resort.into(),
                        reference: e.reference.into(),
                    })
                    .collect();
                for alert in self.profile.record_claims(&claims)? {
                    self.notices.push_back(Notice::Alert(alert));
                }
                // Read on until the log is done; then forget keys nobody can use any more.
                self.claim_log_due = !claims.is_empty();
                if claims.is_empty() {
                    let now = crate::store::unix_now() as u64;
                    let forgotten = self.profile.forget_unusable_key_packages(now)?;
                    if forgotten > 0 {
                        tracing::info!(forgotten, "deleted KeyPackage keys nobody can use");
                    }
                }
            }
            (_, Err(e)) => {
                tracing::warn!(code = ?e.code, "the delivery node refused an account request");
                self.park(&Lane::Account);
            }
            (_, Ok(other)) => return Err(SyncError::Unexpected(format!("{other:?}"))),
        }
        Ok(())
    }

    /// The answer to a request claiming KeyPackages for the first `count` claimees of the
    /// first add. Claims refused for a reason that passes go again later; every KeyPackage
    /// handed out is kept (the owner's stock paid for it).
    fn claims_answered(&mut self, count: usize, answer: Answer) -> Result<(), SyncError> {
        let answers: Vec<Result<Vec<u8>, ErrorResponse>> = match answer {
            Ok(Response::KeyPackages { claims }) if claims.len() == count => claims
                .into_iter()
                .map(|answer| match answer {
                    ClaimAnswer::KeyPackage(kp) => Ok(kp.as_slice().to_vec()),
                    ClaimAnswer::Refused(e) => Err(e),
                })
                .collect(),
            // The whole request may pass (the node is busy): every claim goes again.
            Err(e) if passes(e.code) => return Err(SyncError::refused(&e)),
            Err(e) => vec![Err(e); count],
            Ok(other) => {
                let claims = self.claims.pop_front().expect("claims were waiting");
                self.touch_group(claims.group.as_slice(), false);
                let unexpected = SyncError::Unexpected(format!("{other:?}"));
                self.done(claims.ticket, Err(unexpected));
                return Ok(());
            }
        };
        let mut claims = self.claims.pop_front().expect("claims were waiting");
        let mut again = VecDeque::new();
        let mut passing = None;
        for answer in answers {
            let claimee = claims.remaining.pop_front().expect("a claim was made");
            let key_package = match answer {
                Err(e) if passes(e.code) => {
                    again.push_back(claimee);
                    passing.get_or_insert(e);
                    continue;
                }
                answer => self.checked_claim(&claimee, answer),
            };
            match (key_package, &claimee) {
                (Ok(key_package), _) => claims.key_packages.push(key_package),
                (Err(e), Claimee::Member(fingerprint)) => {
                    tracing::warn!(member = %fingerprint.to_hex(), error = %e, "a member is left out of a group started again");
                }
                (Err(e), Claimee::Contact(_)) => {
                    // The add is off: texts asked after it go.
                    self.touch_group(claims.group.as_slice(), false);
                    self.done(claims.ticket, Err(e));
                    return Ok(());
                }
            }
        }
        if let Some(e) = passing {
            again.append(&mut claims.remaining);
            claims.remaining = again;
            self.claims.push_front(claims);
            return Err(SyncError::refused(&e));
        }
        if claims.remaining.is_empty() {
            self.queue_add(claims);
        } else {
            self.claims.push_front(claims);
        }
        Ok(())
    }

    /// A claimed KeyPackage, checked to be of whom it was claimed for; or why there is none.
    fn checked_claim(
        &mut self,
        claimee: &Claimee,
        answer: Result<Vec<u8>, ErrorResponse>,
    ) -> Result<Vec<u8>, SyncError> {
        let key_package = match answer {
            Ok(key_package) => key_package,
            Err(e) if matches!(e.code, ErrorCode::NoKeyPackage | ErrorCode::UnknownClient) => {
                let never = match e.code {
                    ErrorCode::UnknownClient => {
                        " (they never connected to it, or their invite code names another node)"
                    }
                    _ => "",
                };
                return Err(SyncError::Refused {
                    code: e.code,
                    detail: format!(
                        "{} has no KeyPackage on the delivery node{never}: they must connect to \
                         it once (`mlschat sync`, or run the daemon) before they can be added",
                        claimee.describe()
                    ),
                });
            }
            Err(e) => return Err(SyncError::refused(&e)),
        };
        match claimee {
            Claimee::Contact(name) => {
                let contact = self.profile.contact(name)?;
                self.profile.check_claimed(&contact, &key_package)?;
            }
            Claimee::Member(fingerprint) => {
                self.profile
                    .check_claimed_member(fingerprint, &key_package)?;
            }
        }
        Ok(key_package)
    }

    /// Every KeyPackage is claimed: the add waits in the group's queue.
    fn queue_add(&mut self, claims: Claims) {
        // Texts asked after the add waited for its claims; now they wait for its commit.
        self.touch_group(claims.group.as_slice(), false);
        if claims.key_packages.is_empty() {
            return self.done(claims.ticket, Ok(()));
        }
        let intent = Intent::Add {
            key_packages: claims.key_packages,
        };
        let group = hex::encode(claims.group.as_slice());
        match self.profile.queue_intent(&group, &intent, claims.asked) {
            Ok(seq) => {
                self.intents.insert(seq, claims.ticket);
            }
            Err(e) => self.done(claims.ticket, Err(e.into())),
        }
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

/// Refusals that may pass by themselves: the request is tried again later. A quota refills
/// with time; an unknown code (a newer node's) is not retried.
fn passes(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Internal
            | ErrorCode::Unavailable
            | ErrorCode::RateLimited
            | ErrorCode::Timeout
            | ErrorCode::ByteQuota
            | ErrorCode::GroupQuota
            | ErrorCode::RegistrationLimited
    )
}

fn log_entry(entry: mlschat_wire::GroupEntry) -> LogEntry {
    LogEntry {
        seq: entry.seq,
        epoch: entry.epoch,
        kind: entry.kind,
        message: entry.message.into(),
    }
}

fn post_commit(pending: &PendingCommit) -> Request {
    let joiners = pending.joiners.as_ref();
    let welcomes = joiners.map_or(Vec::new(), |j| {
        j.recipients
            .iter()
            .map(|(recipient, tree_key)| WelcomeFor {
                recipient: *recipient,
                welcome: j.welcome.clone().into(),
                tree_key: tree_key.clone().into(),
            })
            .collect()
    });
    Request::PostCommit(PostCommit {
        group_id: pending.group_id.clone().into(),
        epoch: pending.epoch,
        token: pending.token,
        next_token_hash: pending.next_token_hash,
        commit: pending.message.clone().into(),
        welcomes,
        sealed_tree: joiners.map_or(Vec::new(), |j| j.sealed_tree.clone()).into(),
        tree_access_hash: joiners.map_or([0; 32], |j| j.tree_access_hash),
    })
}
