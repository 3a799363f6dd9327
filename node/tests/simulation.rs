//! Deterministic simulation of the sync core (in the spirit of FoundationDB's simulator and
//! TigerBeetle's VOPR): one seed drives members with real OpenMLS and their real profiles on
//! disk, the delivery node's group log in memory (`mlschat_grouplog`: the rules the node's own
//! storage passes in the conformance suite, and the node's answers to requests), and a
//! scheduler that delays, reorders, drops and duplicates pushes, loses answers with their
//! connections, crashes members (memory dropped, profile reopened from disk) and restarts the
//! node. Invariants are checked along the
//! way and after the system is healed and left to settle:
//!
//! - every text a member queued (its `send` returned) reaches every member exactly once;
//! - all members show the texts in one order, and each sender's texts in send order;
//! - epoch authenticators agree; nobody is left with queued work (nobody is stuck);
//! - every invitation is joined (a failed join is retried, never dropped).
//!
//! `SIM_SEEDS=N` runs N seeds per test, from `SIM_FIRST_SEED` on (1 by default, so that a long
//! run can go in parts; defaults: see each test), `SIM_SEED=S` replays one, `SIM_STEPS` sets the
//! steps per seed (default 400), `SIM_TRACE=1` prints the event log and every history. A failing
//! seed prints itself; replaying it takes the same decisions
//! (MLS randomness differs between runs, but no decision depends on it).

use mlschat_testkit::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mlschat_grouplog::host::{self, Effect, Limits, NotAnswered};
use mlschat_grouplog::keypackages::{KeyPackage, Store as _};
use mlschat_grouplog::{GroupLog as _, MemoryLog, NewCommit};
use mlschat_node::clock::Clock;
use mlschat_node::identity::DeviceName;
use mlschat_node::profile::{GroupState, HistoryKind, Home, Intent, Profile, RequestState};
use mlschat_node::sealed_tree::TreeSecret;
use mlschat_node::sync::{Answer, Core, Lane, Notice, Ticket};
use mlschat_wire::settings;
use mlschat_wire::token::{client_id, token_hash};
use mlschat_wire::{
    ClaimAnswer, ClaimLogEntry, ClientId, EntryKind, ErrorCode, ErrorResponse, Flag, GroupEntry,
    MailboxEntry, PostCommit, Push, Request, Response, Token, WelcomeFor,
};
use openmls::prelude::{
    Extension, ExtensionType, Extensions, GroupId, MlsGroup, RequiredCapabilitiesExtension,
    UnknownExtension, tls_codec::Serialize as _,
};
use openmls_traits::OpenMlsProvider;

// ----- randomness -----

// ----- the delivery node: the real group log, in memory -----

/// What one request may take, as a node is configured; small pages, so that paging is
/// exercised.
const LIMITS: Limits = Limits {
    max_message: 1 << 20,
    max_fetch: 5,
    max_fetch_bytes: u64::MAX,
    mailbox_quota: 10_000,
};

/// Unix time when a run starts; the run's one clock goes on from there (a second per 1000 of
/// the scheduler's milliseconds), for the node and every member's profile. The members'
/// KeyPackages, made with real lifetimes, live months past it.
const EPOCH: u64 = 1_800_000_000;

/// Runs a memory log's operation, which never waits.
fn ready<F: Future>(operation: F) -> F::Output {
    let mut operation = std::pin::pin!(operation);
    match operation
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => unreachable!("the memory log never waits"),
    }
}

/// What the node keeps: its log (the real rules, in memory: durable across its restarts, as
/// the real node's database is) and its connections.
#[derive(Default)]
struct Node {
    log: MemoryLog,
    /// The run's clock, in unix seconds.
    clock: Arc<AtomicU64>,
    /// Connections subscribed to each group: (member, connection). Lost on restart.
    subscribers: BTreeMap<Vec<u8>, BTreeSet<(usize, u64)>>,
    /// Fault: fetching a tree fails (a damaged tree), so joins fail and must be retried.
    trees_damaged: bool,
    /// Fault: every n-th claim is refused as rate-limited (a refusal that passes).
    claims_limited_every: Option<u64>,
    claims_made: u64,
}

fn refuse(code: ErrorCode) -> Response {
    Response::Error(ErrorResponse {
        code,
        current_epoch: 0,
        detail: format!("{code:?}").into_bytes().into(),
    })
}

/// What a request caused: pushes to members' connections (member, connection, push).
type Pushes = Vec<(usize, u64, Push)>;

impl Node {
    fn now(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    /// One claim of `owner`'s KeyPackages by `client`.
    fn claim(&mut self, client: ClientId, owner: ClientId) -> Response {
        self.claims_made += 1;
        if self
            .claims_limited_every
            .is_some_and(|n| self.claims_made.is_multiple_of(n))
        {
            return refuse(ErrorCode::RateLimited);
        }
        match ready(self.log.claim(&owner, &client, self.now(), true)).unwrap() {
            Some(claimed) => Response::KeyPackage {
                key_package: claimed.key_package.message.into(),
            },
            None => refuse(ErrorCode::NoKeyPackage),
        }
    }

    /// Carries out one request of `member` (client `client`) on connection `conn`: the answer
    /// and the pushes it causes, to subscribers and to mailboxes' owners.
    fn handle(
        &mut self,
        member: usize,
        conn: u64,
        client: ClientId,
        request: Request,
    ) -> (Response, Pushes, Vec<(ClientId, MailboxEntry)>) {
        if let Request::FetchTree(_) = request
            && self.trees_damaged
        {
            return (refuse(ErrorCode::UnknownGroup), Vec::new(), Vec::new());
        }
        let answered = ready(host::answer(
            &self.log,
            &self.log,
            &client,
            request,
            &LIMITS,
            self.now(),
        ));
        let answered = match answered {
            Ok(answered) => answered,
            Err(NotAnswered::Refused(e)) => return (Response::Error(e), Vec::new(), Vec::new()),
            Err(NotAnswered::Failed(e)) => panic!("the memory log failed: {e}"),
            Err(NotAnswered::Passed(request)) => {
                return (self.key_packages(client, *request), Vec::new(), Vec::new());
            }
        };
        let (mut pushes, mut welcomed) = (Vec::new(), Vec::new());
        for effect in answered.effects {
            match effect {
                Effect::Appended { group_id, entry } => {
                    pushes.extend(self.group_pushes(&group_id, entry));
                }
                Effect::Delivered { owner, entry } => welcomed.push((owner, entry)),
                Effect::Subscribed { group_id } => {
                    self.subscribers
                        .entry(group_id)
                        .or_default()
                        .insert((member, conn));
                }
            }
        }
        (answered.response, pushes, welcomed)
    }

    /// The KeyPackage requests, on the log's KeyPackage store (the directory's rate limits
    /// are a fault here: [`Node::claims_limited_every`]).
    fn key_packages(&mut self, client: ClientId, request: Request) -> Response {
        match request {
            Request::KeyPackageStock => {
                let stock = ready(self.log.stock(&client, self.now())).unwrap();
                Response::KeyPackageStock {
                    one_time: stock.one_time,
                    last_resort: Flag::from(stock.last_resort),
                }
            }
            Request::PublishKeyPackages(p) => {
                let stored = |kp: &[u8]| {
                    let crypto = openmls_rust_crypto::RustCrypto::default();
                    let valid = mlschat_node::engine::validate_key_package(&crypto, kp).unwrap();
                    KeyPackage {
                        reference: valid.hash_ref(&crypto).unwrap().as_slice().to_vec(),
                        message: kp.to_vec(),
                        not_after: valid.life_time().not_after(),
                    }
                };
                let one_time = p.one_time.iter().map(|k| stored(k.as_slice())).collect();
                let last_resort = Some(p.last_resort.as_slice())
                    .filter(|k| !k.is_empty())
                    .map(stored);
                ready(self.log.publish(&client, one_time, last_resort)).unwrap();
                Response::Ok
            }
            Request::ClaimKeyPackage { owner } => self.claim(client, owner),
            Request::ClaimKeyPackages { owners } => Response::KeyPackages {
                claims: owners
                    .into_iter()
                    .map(|owner| match self.claim(client, owner) {
                        Response::KeyPackage { key_package } => {
                            ClaimAnswer::KeyPackage(key_package)
                        }
                        Response::Error(e) => ClaimAnswer::Refused(e),
                        other => unreachable!("{other:?}"),
                    })
                    .collect(),
            },
            Request::ClaimLog { after } => Response::ClaimLog {
                entries: ready(self.log.claim_log(&client, after, 3))
                    .unwrap()
                    .into_iter()
                    .map(ClaimLogEntry::from)
                    .collect(),
            },
            other => panic!("the simulated node does not take {other:?}"),
        }
    }

    /// `poster`, a member with the token of the group's current epoch, posts a commit nobody
    /// can process and registers a next token only it knows: the group can go on only as a
    /// new group. Nothing if the token is not that of the current epoch.
    fn post_hostile_commit(
        &mut self,
        id: &[u8],
        poster: ClientId,
        epoch: u64,
        token: &Token,
    ) -> Pushes {
        let junk = b"not a commit anyone can process".to_vec();
        let commit = NewCommit {
            poster,
            group_id: id.to_vec(),
            epoch,
            token_hash: token_hash(token),
            next_token_hash: [0xee; 32],
            commit: junk.clone(),
            welcomes: Vec::new(),
            sealed_tree: Vec::new(),
            tree_access_hash: [0; 32],
        };
        match ready(
            self.log
                .post_commit(&commit, LIMITS.mailbox_quota, self.now()),
        )
        .unwrap()
        {
            Ok(committed) => {
                let entry = GroupEntry {
                    seq: committed.seq,
                    epoch,
                    kind: EntryKind::Commit,
                    message: junk.into(),
                };
                self.group_pushes(id, entry)
            }
            Err(_) => Vec::new(),
        }
    }

    /// A stranger's junk in `recipient`'s mailbox, as a node that took anything would hold it:
    /// bytes that are no MLS message, and real Welcomes for someone else's KeyPackage.
    fn inject_junk_welcomes(
        &mut self,
        recipient: ClientId,
        junk: Vec<Vec<u8>>,
    ) -> Vec<MailboxEntry> {
        junk.into_iter()
            .map(|welcome| {
                let delivered = self.log.deliver_unchecked(
                    &recipient,
                    b"junk",
                    1,
                    welcome,
                    vec![1; 48],
                    self.now(),
                );
                host::mailbox_entry(delivered.unwrap())
            })
            .collect()
    }

    fn group_pushes(&self, id: &[u8], entry: GroupEntry) -> Pushes {
        self.subscribers
            .get(id)
            .into_iter()
            .flatten()
            .map(|&(member, conn)| {
                let push = Push::Group {
                    group_id: id.to_vec().into(),
                    entry: entry.clone(),
                };
                (member, conn, push)
            })
            .collect()
    }
}

// ----- members -----

struct Member {
    name: String,
    dir: tempfile::TempDir,
    core: Option<Core>,
    client: ClientId,
    /// The current connection's number; 0 while offline.
    conn: u64,
    /// Texts this member queued: (tag, ticket if it was sent online).
    sent: Vec<String>,
    tickets: BTreeMap<Ticket, String>,
    /// Per lane, refusals in a row (no answer of success between them), and per group, our
    /// posts refused as stale in a row while our cursor stayed where it was: (cursor, count).
    refusals: BTreeMap<Lane, u32>,
    stale: BTreeMap<Vec<u8>, (u64, u32)>,
}

/// A lane refused more often than this in a row, with no success between, sends without
/// progress (rate limits and a busy node pass much sooner in these runs).
const MAX_REFUSALS_IN_A_ROW: u32 = 12;
/// Posts refused as stale at one cursor: one is a lost race (the read that follows moves the
/// cursor); more means the lane posts what cannot be taken.
const MAX_STALE_AT_ONE_CURSOR: u32 = 2;

impl Member {
    fn core(&mut self) -> &mut Core {
        self.core.as_mut().expect("the member is running")
    }
}

/// Something on its way.
enum Flight {
    ToNode {
        member: usize,
        conn: u64,
        lane: Lane,
        request: Request,
    },
    ToMember {
        member: usize,
        conn: u64,
        what: Delivery,
    },
}

enum Delivery {
    Answer(Lane, Answer),
    Push(Push),
}

/// How wild a run is.
#[derive(Clone, Copy)]
struct Faults {
    crash: u64,
    disconnect: u64,
    node_restart: u64,
    drop_push: u64,
    duplicate_push: u64,
    damaged_trees: u64,
    /// A member posts a commit nobody can process (once per run at most).
    hostile_commit: u64,
    /// Every n-th KeyPackage claim is refused as rate-limited (0: none).
    limited_claims: u64,
}

const HOSTILE: Faults = Faults {
    crash: 2,
    disconnect: 3,
    node_restart: 1,
    drop_push: 20,
    duplicate_push: 10,
    damaged_trees: 2,
    hostile_commit: 0,
    limited_claims: 3,
};

/// A hostile member among them: a commit nobody can process, then the group must recover.
const HOSTILE_MEMBER: Faults = Faults {
    hostile_commit: 5,
    ..HOSTILE
};

const CALM: Faults = Faults {
    crash: 0,
    disconnect: 0,
    node_restart: 0,
    drop_push: 0,
    duplicate_push: 0,
    damaged_trees: 0,
    hostile_commit: 0,
    limited_claims: 0,
};

struct Sim {
    rng: Rng,
    now: u64,
    node: Node,
    members: Vec<Member>,
    flights: Vec<Flight>,
    group: String,
    /// Whether the hostile commit was posted already.
    attacked: bool,
    /// The member who asked to leave, if one did.
    leaver: Option<usize>,
    /// Whether a member may ask to leave (once per run).
    may_leave: bool,
    /// Members running a modified client, or never added: the checks judge everyone else
    /// (their texts included), and that nothing of theirs took anyone over.
    excluded: BTreeSet<usize>,
    /// How many members (the first) form the group; the others are never added.
    group_size: usize,
    /// Statistics, printed with a failure.
    log: Vec<String>,
    /// The first invariant broken between checks (they look at the outcome, this at the way).
    violation: Option<String>,
}

fn profile_root() -> tempfile::TempDir {
    // tmpfs where there is one: the simulation fsyncs on every operation.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

const HOME: [u8; 32] = [7; 32];

impl Sim {
    fn new(seed: u64, names: &[&str]) -> Self {
        let clock = Arc::new(AtomicU64::new(EPOCH));
        let members = names
            .iter()
            .map(|name| {
                let dir = profile_root();
                let device = DeviceName::new(name, "dev").unwrap();
                let mut profile = Profile::create(dir.path(), device, None).unwrap();
                profile.set_clock(Clock::manual(&clock));
                profile
                    .set_home(&Home {
                        address: "simulated:1".into(),
                        fingerprint: HOME,
                        invite: Vec::new(),
                    })
                    .unwrap();
                let client = client_id(profile.identity().signer.public());
                Member {
                    name: name.to_string(),
                    dir,
                    core: Some(Core::new(profile)),
                    client,
                    conn: 0,
                    sent: Vec::new(),
                    tickets: BTreeMap::new(),
                    refusals: BTreeMap::new(),
                    stale: BTreeMap::new(),
                }
            })
            .collect();
        Self {
            rng: Rng(seed),
            now: 0,
            node: Node {
                clock,
                ..Node::default()
            },
            members,
            flights: Vec::new(),
            group: "team".into(),
            attacked: false,
            leaver: None,
            may_leave: true,
            excluded: BTreeSet::new(),
            group_size: names.len(),
            log: Vec::new(),
            violation: None,
        }
    }

    fn note(&mut self, what: String) {
        self.log.push(format!("t={} {what}", self.now));
    }

    fn connect(&mut self, m: usize) {
        if self.members[m].conn != 0 {
            return;
        }
        let conn = self.rng.next_u64() | 1;
        self.members[m].conn = conn;
        let now = self.now;
        self.members[m].core().handle_connected(now).unwrap();
        self.note(format!("{} connects", self.members[m].name));
        self.pump(m);
    }

    fn disconnect(&mut self, m: usize) {
        if self.members[m].conn == 0 {
            return;
        }
        self.members[m].conn = 0;
        let now = self.now;
        self.members[m].core().handle_disconnected(now);
        self.take_notices(m);
        for subs in self.node.subscribers.values_mut() {
            subs.retain(|&(member, _)| member != m);
        }
    }

    /// Kills the member's process: what it held in memory is gone; its profile is reopened.
    fn crash(&mut self, m: usize) {
        self.note(format!("{} crashes", self.members[m].name));
        self.disconnect(m);
        let clock = Clock::manual(&self.node.clock);
        let member = &mut self.members[m];
        member.core = None;
        member.tickets.clear();
        let mut profile = Profile::open(member.dir.path(), None).unwrap();
        profile.set_clock(clock);
        member.core = Some(Core::new(profile));
    }

    fn restart_node(&mut self) {
        self.note("the node restarts".into());
        for m in 0..self.members.len() {
            self.disconnect(m);
        }
        self.node.subscribers.clear();
        // Requests on the wire either reached the node before it died or never did.
        let flights = std::mem::take(&mut self.flights);
        for flight in flights {
            if let Flight::ToNode { .. } = flight
                && self.rng.chance(50)
            {
                self.flights.push(flight);
            }
        }
    }

    /// Sends whatever the member's core has to send.
    fn pump(&mut self, m: usize) {
        let conn = self.members[m].conn;
        while let Some(out) = self.members[m].core().poll_request() {
            self.flights.push(Flight::ToNode {
                member: m,
                conn,
                lane: out.lane,
                request: out.request,
            });
        }
        self.take_notices(m);
    }

    fn take_notices(&mut self, m: usize) {
        while let Some(notice) = self.members[m].core().poll_notice() {
            if let Notice::Done { ticket, result } = notice
                && let Some(tag) = self.members[m].tickets.remove(&ticket)
            {
                let outcome = match result {
                    Ok(()) => "acknowledged".to_owned(),
                    Err(e) => format!("not acknowledged ({e})"),
                };
                self.note(format!("{tag} {outcome}"));
            }
        }
    }

    /// Delivers one flight, chosen at random: the network reorders freely across lanes.
    fn deliver(&mut self, faults: Faults) -> bool {
        if self.flights.is_empty() {
            return false;
        }
        let flight = self.flights.swap_remove(self.rng.below(self.flights.len()));
        match flight {
            Flight::ToNode {
                member,
                conn,
                lane,
                request,
            } => {
                let client = self.members[member].client;
                let short = |g: &[u8]| hex::encode(&g[..2]);
                let what = match &request {
                    Request::PostMessage(m) => Some(format!(
                        "text {} e{}",
                        short(m.group_id.as_slice()),
                        m.epoch
                    )),
                    Request::PostCommit(c) => Some(format!(
                        "commit {} e{} +{}",
                        short(c.group_id.as_slice()),
                        c.epoch,
                        c.welcomes.len()
                    )),
                    Request::FetchGroup(f) => Some(format!(
                        "fetch {} after {}",
                        short(f.group_id.as_slice()),
                        f.after_seq
                    )),
                    Request::ClaimKeyPackage { .. } => Some("claim".into()),
                    Request::ClaimKeyPackages { owners } => Some(format!("claim {}", owners.len())),
                    Request::FetchMailbox { .. } => Some("mailbox".into()),
                    Request::FetchTree(_) => Some("tree".into()),
                    _ => None,
                };
                let (answer, pushes, welcomed) = self.node.handle(member, conn, client, request);
                if let Some(what) = what {
                    let name = self.members[member].name.clone();
                    let answered = match &answer {
                        Response::Accepted { seq, .. } | Response::Committed { seq, .. } => {
                            format!("at {seq}")
                        }
                        Response::GroupEntries { entries } => {
                            format!("{:?}", entries.iter().map(|e| e.seq).collect::<Vec<_>>())
                        }
                        other => format!("{other:?}").chars().take(40).collect(),
                    };
                    self.note(format!("{name} {what}: {answered}"));
                }
                let answer = match answer {
                    Response::Error(e) => Err(e),
                    other => Ok(other),
                };
                self.flights.push(Flight::ToMember {
                    member,
                    conn,
                    what: Delivery::Answer(lane, answer),
                });
                for (to, conn, push) in pushes {
                    if self.rng.chance(faults.drop_push) {
                        continue;
                    }
                    if self.rng.chance(faults.duplicate_push) {
                        let copy = push.clone();
                        self.flights.push(Flight::ToMember {
                            member: to,
                            conn,
                            what: Delivery::Push(copy),
                        });
                    }
                    self.flights.push(Flight::ToMember {
                        member: to,
                        conn,
                        what: Delivery::Push(push),
                    });
                }
                for (recipient, entry) in welcomed {
                    if let Some(to) = self.members.iter().position(|m| m.client == recipient)
                        && self.members[to].conn != 0
                    {
                        let conn = self.members[to].conn;
                        self.flights.push(Flight::ToMember {
                            member: to,
                            conn,
                            what: Delivery::Push(Push::Mailbox(entry)),
                        });
                    }
                }
            }
            Flight::ToMember { member, conn, what } => {
                if self.members[member].conn != conn || conn == 0 {
                    return true; // for a connection that is gone
                }
                match what {
                    Delivery::Answer(lane, answer) => {
                        self.count_progress(member, &lane, &answer);
                        let now = self.now;
                        self.members[member].core().handle_answer(lane, answer, now)
                    }
                    Delivery::Push(push) => {
                        let now = self.now;
                        self.members[member].core().handle_push(push, now).unwrap()
                    }
                }
                self.pump(member);
            }
        }
        true
    }

    /// No lane sends more than a bounded number of requests without progress: refusals in a
    /// row are bounded, and so are posts refused as stale while the log brings nothing new.
    fn count_progress(&mut self, m: usize, lane: &Lane, answer: &Answer) {
        let name = self.members[m].name.clone();
        let refused = match answer {
            Ok(_) => {
                self.members[m].refusals.remove(lane);
                return;
            }
            Err(e) => e.code,
        };
        let count = self.members[m].refusals.entry(lane.clone()).or_default();
        *count += 1;
        if *count > MAX_REFUSALS_IN_A_ROW && self.violation.is_none() {
            self.violation = Some(format!(
                "{name}'s lane {lane:?} was refused {count} times in a row"
            ));
        }
        let Lane::Group(id) = lane else { return };
        if !matches!(refused, ErrorCode::StaleEpoch | ErrorCode::BadToken) {
            return;
        }
        let cursor = self.members[m]
            .core()
            .profile()
            .log_seq(&GroupId::from_slice(id))
            .unwrap_or(0);
        let stale = self.members[m].stale.entry(id.clone()).or_default();
        *stale = match *stale {
            (at, count) if at == cursor => (at, count + 1),
            _ => (cursor, 1),
        };
        if stale.1 > MAX_STALE_AT_ONE_CURSOR && self.violation.is_none() {
            self.violation = Some(format!(
                "{name} posted {} times, refused as stale each time, at log position {cursor}",
                stale.1
            ));
        }
    }

    /// A second process opens a running member's profile (the CLI beside the daemon): the
    /// profile has one writer, so it must be refused.
    fn second_writer(&mut self, m: usize) {
        let member = &self.members[m];
        if member.core.is_some() && Profile::open(member.dir.path(), None).is_ok() {
            self.violation
                .get_or_insert(format!("a second process opened {}'s profile", member.name));
        }
    }

    /// Time passes, on the run's one clock.
    fn advance(&mut self, millis: u64) {
        self.now += millis;
        let unix = EPOCH + self.now / 1000;
        self.node.clock.store(unix, Ordering::Relaxed);
    }

    fn tick(&mut self) {
        let millis = 1 + self.rng.below(200) as u64;
        self.advance(millis);
        for m in 0..self.members.len() {
            let now = self.now;
            let core = self.members[m].core();
            if core.poll_timeout().is_some_and(|at| at <= now) {
                core.handle_timeout(now);
                self.pump(m);
            }
        }
    }

    /// The groups member `m` has been through: the first, then each that continued it.
    fn chain(&mut self, m: usize) -> Vec<String> {
        let mut chain = vec![self.group.clone()];
        let profile = self.members[m].core().profile();
        while let Ok(id) = profile.find_group(chain.last().unwrap())
            && let Ok(Some(next)) = profile.replaced_by(&id)
        {
            chain.push(hex::encode(next.as_slice()));
        }
        chain
    }

    /// The group member `m` is in now.
    fn current(&mut self, m: usize) -> String {
        self.chain(m).pop().unwrap()
    }

    fn in_group(&mut self, m: usize) -> bool {
        let group = self.current(m);
        self.members[m]
            .core()
            .profile()
            .ensure_hosted(&gid(&group))
            .is_ok()
    }

    fn send_text(&mut self, m: usize) {
        if !self.in_group(m) {
            return;
        }
        let tag = format!("{}-{}", self.members[m].name, self.members[m].sent.len());
        let group = self.current(m);
        let online = self.members[m].conn != 0;
        let member = &mut self.members[m];
        if online {
            let ticket = member.core().send(&gid(&group), &tag).unwrap();
            member.tickets.insert(ticket, tag.clone());
        } else {
            member
                .core()
                .profile()
                .send_hosted(&gid(&group), &tag)
                .unwrap();
        }
        member.sent.push(tag);
        self.pump(m);
    }

    /// Member `m` (not the creator, who commits it) asks to leave; once per run at most.
    fn ask_to_leave(&mut self, m: usize) {
        if m == 0 || self.leaver.is_some() || self.members[m].conn == 0 || !self.in_group(m) {
            return;
        }
        let group = self.current(m);
        let ticket = self.members[m].core().leave(&gid(&group)).unwrap();
        let tag = format!("{}'s leave", self.members[m].name);
        self.note(tag.clone());
        self.members[m].tickets.insert(ticket, tag);
        self.leaver = Some(m);
        self.pump(m);
    }

    fn commit_update(&mut self, m: usize) {
        if self.members[m].conn == 0 || !self.in_group(m) {
            return;
        }
        let group = self.current(m);
        let ticket = self.members[m]
            .core()
            .change(&gid(&group), Intent::Update)
            .unwrap();
        let tag = format!("{}'s update", self.members[m].name);
        self.members[m].tickets.insert(ticket, tag);
        self.pump(m);
    }

    /// One random step: a delivery most of the time, else an action or a fault.
    fn step(&mut self, faults: Faults) {
        self.tick();
        let roll = self.rng.below(100);
        let m = self.rng.below(self.members.len());
        match roll {
            0..=59 => {
                self.deliver(faults);
            }
            60..=74 if self.leaver != Some(m) => self.send_text(m),
            60..=74 => {}
            77 if self.may_leave && self.rng.chance(30) => self.ask_to_leave(m),
            75..=77 => self.commit_update(m),
            78..=89 => self.connect(m),
            _ => {
                if self.rng.chance(faults.crash * 10) {
                    self.crash(m);
                } else if self.rng.chance(faults.disconnect * 10) {
                    self.note(format!("{} loses its connection", self.members[m].name));
                    self.disconnect(m);
                } else if self.rng.chance(faults.node_restart * 10) {
                    self.restart_node();
                } else if self.rng.chance(10) {
                    self.second_writer(m);
                } else if self.rng.chance(faults.damaged_trees * 10) {
                    self.node.trees_damaged = !self.node.trees_damaged;
                } else if !self.attacked && self.rng.chance(faults.hostile_commit * 10) {
                    let id = GroupId::from_slice(&hex::decode(&self.group).unwrap());
                    self.attacked = self.hostile_commit(&id);
                }
            }
        }
    }

    /// Heals everything and runs until no member has anything left to do, and a sync by each
    /// (what a poll or a person does) brings nothing new.
    fn settle(&mut self) -> Result<(), String> {
        self.node.trees_damaged = false;
        for _ in 0..20 {
            self.run_until_idle()?;
            let before = self.history_rows();
            for m in 0..self.members.len() {
                let _ = self.members[m].core().sync();
                self.pump(m);
            }
            self.run_until_idle()?;
            if self.history_rows() == before {
                return Ok(());
            }
        }
        Err("every sync brings something new".into())
    }

    fn history_rows(&mut self) -> usize {
        let group = self.group.clone();
        (0..self.members.len())
            .map(|m| {
                let profile = self.members[m].core().profile();
                profile
                    .history(&gid(&group), u32::MAX)
                    .map_or(0, |h| h.len())
            })
            .sum()
    }

    fn run_until_idle(&mut self) -> Result<(), String> {
        for _ in 0..100_000 {
            for m in 0..self.members.len() {
                self.connect(m);
            }
            if self.deliver(CALM) {
                continue;
            }
            let idle = self
                .members
                .iter()
                .all(|m| m.core.as_ref().unwrap().is_settled());
            let invitations_left = self
                .members
                .iter_mut()
                .any(|m| !unjoined(m.core().profile()).is_empty());
            if idle && !invitations_left {
                return Ok(());
            }
            // Let time pass: parked lanes go again, polls retry invitations.
            self.advance(mlschat_node::sync::RETRY_AFTER * 5);
            self.tick();
        }
        let busy: Vec<String> = self
            .members
            .iter()
            .filter(|m| !m.core.as_ref().unwrap().is_settled())
            .map(|m| format!("{}: {:?}", m.name, m.core.as_ref().unwrap()))
            .collect();
        Err(format!("the system did not settle; busy: {busy:#?}"))
    }

    /// Alice creates the group and adds everyone else (under the run's faults).
    fn form_group(&mut self, faults: Faults) {
        self.form_group_of(self.members.len(), faults);
    }

    /// Forms the group of the first `size` members; everyone is a contact of Alice's.
    fn form_group_of(&mut self, size: usize, faults: Faults) {
        self.group_size = size;
        for m in 0..self.members.len() {
            self.connect(m);
        }
        let invites: Vec<_> = (1..self.members.len())
            .map(|m| self.members[m].core().profile().invite_code().unwrap())
            .collect();
        let alices = self.members[0].core().profile().invite_code().unwrap();
        for m in 1..self.members.len() {
            self.members[m]
                .core()
                .profile()
                .add_contact(&alices)
                .unwrap();
        }
        let group = self.group.clone();
        let alice = self.members[0].core();
        for code in &invites {
            alice.profile().add_contact(code).unwrap();
        }
        let created = alice.create_group(&group).unwrap();
        // Joiners know the group by its id (names are local).
        self.group = created.id;
        let group = self.group.clone();
        // Everyone publishes KeyPackages before Alice claims them.
        for _ in 0..200 {
            self.deliver(CALM);
        }
        let names: Vec<String> = invites[..size - 1]
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        // Alice adds whoever is not in yet, again when an add fails (as a person would, when
        // told the connection went), until everyone has joined.
        for _ in 0..200 {
            let in_alices_view: Vec<String> = self.members[0]
                .core()
                .profile()
                .members(&gid(&group))
                .unwrap()
                .iter()
                .filter_map(|m| m.name.as_ref().map(|n| n.to_string()))
                .collect();
            // Not one who asked to leave meanwhile and was removed: a person would not add
            // them back (seed 54,866 did, and then expected them gone).
            let leaver = self.leaver.map(|m| invites[m - 1].name.to_string());
            let missing: Vec<String> = names
                .iter()
                .filter(|n| !in_alices_view.contains(n) && leaver.as_ref() != Some(*n))
                .cloned()
                .collect();
            if missing.is_empty() {
                return;
            }
            let adding = self.members[0].tickets.values().any(|t| t == "the add");
            if !adding && self.members[0].conn != 0 {
                if let Ok(ticket) = self.members[0].core().add(&gid(&group), &missing) {
                    self.members[0].tickets.insert(ticket, "the add".into());
                }
                self.pump(0);
            }
            for _ in 0..20 {
                self.step(Faults {
                    crash: 0,
                    hostile_commit: 0,
                    ..faults
                });
            }
        }
        panic!("the group never formed");
    }

    /// The texts member `m` shows, through every group of its chain.
    fn texts(&mut self, m: usize) -> Vec<String> {
        let chain = self.chain(m);
        let profile = self.members[m].core().profile();
        chain
            .iter()
            .flat_map(|group| profile.history(&gid(group), u32::MAX).unwrap_or_default())
            .filter(|e| e.kind == HistoryKind::Text)
            .map(|e| e.body)
            .collect()
    }

    /// The invariants that must hold at every step: nobody shows a text twice, and each
    /// sender's texts appear in send order.
    fn check_always(&mut self) -> Result<(), String> {
        if let Some(violation) = &self.violation {
            return Err(violation.clone());
        }
        for m in 0..self.members.len() {
            let texts = self.texts(m);
            let unique: BTreeSet<&String> = texts.iter().collect();
            if unique.len() != texts.len() {
                return Err(format!(
                    "{} shows a text twice: {texts:?}",
                    self.members[m].name
                ));
            }
            check_sender_order(&texts).map_err(|e| format!("{}: {e}", self.members[m].name))?;
        }
        Ok(())
    }

    /// Each text's epoch as its sender shows it (the epoch the node took it at), and each
    /// member's join epoch (0 for the creator).
    fn epochs(&mut self) -> (BTreeMap<String, u64>, Vec<u64>) {
        let group = self.group.clone();
        let mut texts = BTreeMap::new();
        let mut joined = Vec::new();
        for m in 0..self.members.len() {
            let me = format!("{}/dev", self.members[m].name);
            let history = self.members[m]
                .core()
                .profile()
                .history(&gid(&group), u32::MAX)
                .unwrap_or_default();
            let join = history
                .iter()
                .find(|e| e.kind == HistoryKind::Event && e.body == "joined the group")
                .map_or(0, |e| e.epoch);
            joined.push(join);
            for e in history
                .iter()
                .filter(|e| e.kind == HistoryKind::Text && e.sender == me)
            {
                texts.insert(e.body.clone(), e.epoch);
            }
        }
        (texts, joined)
    }

    /// `by`'s modified client commits an add of `joiner` with OpenMLS directly, skipping the
    /// rule that only admins add (its own client refuses), on a copy of its state: its client
    /// goes on as if nothing happened, and then reads the commit in the log.
    fn forge_add(
        &mut self,
        by: usize,
        joiner: usize,
        group: &GroupId,
        promoting: bool,
    ) -> Result<(), String> {
        let (client, joiners_client) = (self.members[by].client, self.members[joiner].client);
        let key_package = match self.node.claim(client, joiners_client) {
            Response::KeyPackage { key_package } => key_package,
            // Refused this once (rate-limited): it claims again.
            _ => match self.node.claim(client, joiners_client) {
                Response::KeyPackage { key_package } => key_package,
                other => return Err(format!("no KeyPackage to claim: {other:?}")),
            },
        };
        let copy = profile_root();
        for file in std::fs::read_dir(self.members[by].dir.path()).unwrap() {
            let file = file.unwrap();
            std::fs::copy(file.path(), copy.path().join(file.file_name())).unwrap();
        }
        let modified = Profile::open(copy.path(), None).unwrap();
        let crypto = openmls_rust_crypto::RustCrypto::default();
        let provider = RawProvider {
            crypto: &crypto,
            storage: modified.store().mls_storage(),
        };
        let mut mls = MlsGroup::load(provider.storage(), group).unwrap().unwrap();
        // A commit of her own client may be pending: hers is made instead.
        mls.clear_pending_commit(provider.storage()).unwrap();
        let key_package =
            mlschat_node::engine::validate_key_package(&crypto, key_package.as_slice()).unwrap();
        let epoch = mls.epoch().as_u64();
        let token = mlschat_node::engine::epoch_token(&crypto, &mls).unwrap();
        let signer = &modified.identity().signer;
        let (commit, welcome) = if promoting {
            // The same commit adds Eve and makes Carol an admin.
            let mut settings = mlschat_node::engine::group_settings(&mls).unwrap().unwrap();
            settings.admins.push(modified.identity().fingerprint().0);
            let settings_type = ExtensionType::Unknown(settings::EXTENSION_TYPE);
            let extensions = Extensions::from_vec(vec![
                Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
                    &[settings_type],
                    &[],
                    &[],
                )),
                Extension::Unknown(
                    settings::EXTENSION_TYPE,
                    UnknownExtension(settings.encode().unwrap()),
                ),
            ])
            .unwrap();
            let bundle = mls
                .commit_builder()
                .propose_adds([key_package.clone()])
                .propose_group_context_extensions(extensions)
                .unwrap()
                .load_psks(provider.storage())
                .unwrap()
                .build(provider.rand(), provider.crypto(), signer, |_| true)
                .unwrap()
                .stage_commit(&provider)
                .unwrap();
            let welcome = bundle.to_welcome_msg().unwrap();
            (bundle.into_commit(), welcome)
        } else {
            let (commit, welcome, _) = mls
                .add_members_without_update(&provider, signer, std::slice::from_ref(&key_package))
                .unwrap();
            (commit, welcome)
        };
        let next_token = mlschat_node::engine::pending_epoch_token(&crypto, &mls).unwrap();
        mls.merge_pending_commit(&provider).unwrap();
        let tree = mls.export_ratchet_tree().tls_serialize_detached().unwrap();
        let secret = TreeSecret::random(&crypto).unwrap();
        let id = group.as_slice();
        let post = Request::PostCommit(PostCommit {
            group_id: id.to_vec().into(),
            epoch,
            token,
            next_token_hash: token_hash(&next_token),
            commit: commit.tls_serialize_detached().unwrap().into(),
            welcomes: vec![WelcomeFor {
                recipient: joiners_client,
                welcome: welcome.tls_serialize_detached().unwrap().into(),
                tree_key: secret
                    .seal_to(&crypto, &key_package, id, epoch + 1)
                    .unwrap()
                    .into(),
            }],
            sealed_tree: secret
                .seal_tree(&crypto, id, epoch + 1, &tree)
                .unwrap()
                .into(),
            tree_access_hash: token_hash(&secret.access()),
        });
        let conn = self.members[by].conn;
        let (answer, pushes, welcomed) = self.node.handle(by, conn, client, post);
        self.note(format!("the forged add: {answer:?}"));
        for (to, conn, push) in pushes {
            self.flights.push(Flight::ToMember {
                member: to,
                conn,
                what: Delivery::Push(push),
            });
        }
        for (_, entry) in welcomed.into_iter().filter(|(to, _)| *to == joiners_client) {
            let conn = self.members[joiner].conn;
            self.flights.push(Flight::ToMember {
                member: joiner,
                conn,
                what: Delivery::Push(Push::Mailbox(entry)),
            });
        }
        Ok(())
    }

    /// A member whose client has the token of the group's current epoch posts a commit nobody
    /// can process; whether one could.
    fn hostile_commit(&mut self, id: &GroupId) -> bool {
        let Some(epoch) = self.node.log.epoch(id.as_slice()).unwrap() else {
            return false;
        };
        for m in 0..self.members.len() {
            let Some(core) = self.members[m].core.as_mut() else {
                continue;
            };
            let Ok((at, token)) = core.profile().group_token(id) else {
                continue;
            };
            if at != epoch {
                continue;
            }
            let name = self.members[m].name.clone();
            self.note(format!("{name} posts a commit nobody can process"));
            let client = self.members[m].client;
            for (to, conn, push) in
                self.node
                    .post_hostile_commit(id.as_slice(), client, epoch, &token)
            {
                self.flights.push(Flight::ToMember {
                    member: to,
                    conn,
                    what: Delivery::Push(push),
                });
            }
            return true;
        }
        false
    }

    /// Members never added to the group.
    fn outsiders(&self) -> usize {
        self.members.len() - self.group_size
    }

    /// Whether a text (`name-n`) was sent by a member the checks judge.
    fn judged_text(&self, text: &str) -> bool {
        let sender = text.rsplit_once('-').map_or(text, |(s, _)| s);
        self.excluded
            .iter()
            .all(|&m| self.members[m].name != sender)
    }

    fn check_settled(&mut self) -> Result<String, String> {
        self.check_always()?;
        let sent: BTreeSet<String> = self
            .members
            .iter()
            .enumerate()
            .filter(|(m, _)| !self.excluded.contains(m))
            .flat_map(|(_, m)| m.sent.clone())
            .collect();
        let (epochs, joined) = self.epochs();
        let latest_join = joined.iter().copied().max().unwrap_or(0);
        let common = |texts: Vec<String>| -> Vec<String> {
            texts
                .into_iter()
                .filter(|t| epochs.get(t).is_some_and(|&e| e >= latest_join))
                .collect()
        };
        let first = self.texts(0);
        let first = common(first.into_iter().filter(|t| self.judged_text(t)).collect());
        let mut states = BTreeSet::new();
        let mut currents = BTreeSet::new();
        let leaver = self.leaver;
        if let Some(m) = leaver {
            // Out of the group, and gone from every other member's view of it.
            let group = self.current(m);
            let name = self.members[m].name.clone();
            let profile = self.members[m].core().profile();
            let summary = profile
                .groups()
                .unwrap()
                .into_iter()
                .find(|g| g.id == group);
            if summary.is_none_or(|g| g.state != GroupState::Removed) {
                return Err(format!("{name} asked to leave and is still in the group"));
            }
        }
        let stayed = self.members.len() - usize::from(leaver.is_some()) - self.outsiders();
        for (m, &join) in joined.iter().enumerate() {
            if Some(m) == leaver || self.excluded.contains(&m) {
                continue;
            }
            let name = self.members[m].name.clone();
            let texts = self.texts(m);
            let texts: Vec<String> = texts.into_iter().filter(|t| self.judged_text(t)).collect();
            let shown: BTreeSet<String> = texts.iter().cloned().collect();
            // Every text of an epoch at or after our join, exactly once (check_always: once).
            let due: BTreeSet<String> = sent
                .iter()
                .filter(|t| epochs.get(*t).is_none_or(|&e| e >= join))
                .cloned()
                .collect();
            let lost: Vec<&String> = due.difference(&shown).collect();
            if !lost.is_empty() {
                return Err(format!("{name} never got {lost:?}"));
            }
            let extra: Vec<&String> = shown.difference(&sent).collect();
            if !extra.is_empty() {
                return Err(format!("{name} shows texts nobody sent: {extra:?}"));
            }
            let order = common(texts);
            if order != first {
                return Err(format!(
                    "{name} shows another order than {}:\n  {order:?}\n  {first:?}",
                    self.members[0].name
                ));
            }
            let group = self.current(m);
            let profile = self.members[m].core().profile();
            let summary = profile
                .groups()
                .unwrap()
                .into_iter()
                .find(|g| g.id == group)
                .ok_or_else(|| format!("{name} is not in the group"))?;
            if summary.members != stayed as u64 {
                return Err(format!(
                    "{name} sees {} members, not {stayed}",
                    summary.members
                ));
            }
            states.insert((summary.epoch, summary.epoch_authenticator.clone()));
            let id = profile.find_group(&summary.id).unwrap();
            let waiting = profile.waiting_in(&id).unwrap();
            if !waiting.texts.is_empty() || !waiting.intents.is_empty() {
                return Err(format!("{name} is stuck with {waiting:?}"));
            }
            if let Some(why) = profile.broken(&id).unwrap() {
                return Err(format!("{name} is broken: {why}"));
            }
            let invitations = unjoined(profile);
            if !invitations.is_empty() {
                return Err(format!("{name} has unjoined invitations: {invitations:?}"));
            }
            currents.insert(group);
        }
        if currents.len() != 1 {
            return Err(format!("members went on in different groups: {currents:?}"));
        }
        if states.len() != 1 {
            return Err(format!("members disagree on the group's state: {states:?}"));
        }
        let count = |what: &str| self.log.iter().filter(|l| l.ends_with(what)).count();
        Ok(format!(
            "{} texts, epoch {}; {} crashes, {} lost connections, {} node restarts, {} left{}",
            sent.len(),
            states.first().unwrap().0,
            count(" crashes"),
            count(" loses its connection"),
            count("the node restarts"),
            count("'s leave"),
            if self.attacked {
                ", broken by a member"
            } else {
                ""
            },
        ))
    }
}

/// Each sender's texts (`name-n`) must appear with rising `n`.
fn check_sender_order(texts: &[String]) -> Result<(), String> {
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for text in texts {
        let (sender, n) = text.rsplit_once('-').expect("tagged texts");
        let n: u64 = n.parse().expect("numbered texts");
        if let Some(&before) = last.get(sender)
            && n <= before
        {
            return Err(format!("{text} shown after {sender}-{before}"));
        }
        last.insert(sender, n);
    }
    Ok(())
}

/// Invitations a member should have joined by now: not those waiting for its user (a
/// stranger's, which it must not follow on its own).
fn unjoined(profile: &mut Profile) -> Vec<mlschat_node::profile::Invitation> {
    let invitations = profile.invitations().unwrap();
    invitations
        .into_iter()
        .filter(|i| i.request != Some(RequestState::Waiting))
        .collect()
}

/// One seed, start to end: form the group under faults, run, heal, check.
fn run_seed(seed: u64, steps: usize, members: usize, faults: Faults) -> Result<String, String> {
    let names = ["alice", "bob", "carol", "dave"];
    let mut sim = Sim::new(seed, &names[..members.clamp(2, names.len())]);
    sim.node.claims_limited_every = Some(faults.limited_claims).filter(|&n| n > 0);
    sim.form_group(faults);
    for step in 0..steps {
        sim.step(faults);
        if step % 50 == 0 {
            sim.check_always()?;
        }
    }
    sim.settle()
        .and_then(|()| sim.check_settled())
        .map_err(|e| {
            if std::env::var("SIM_TRACE").is_ok() {
                for m in 0..sim.members.len() {
                    let group = sim.group.clone();
                    let name = sim.members[m].name.clone();
                    for e in sim.members[m]
                        .core()
                        .profile()
                        .history(&gid(&group), u32::MAX)
                        .unwrap()
                    {
                        eprintln!(
                            "{name}: #{} e{} {:?} {}: {}",
                            e.seq, e.epoch, e.kind, e.sender, e.body
                        );
                    }
                }
                return format!("{e}\nevents:\n  {}", sim.log.join("\n  "));
            }
            let tail = sim.log.len().saturating_sub(40);
            format!("{e}\nlast events:\n  {}", sim.log[tail..].join("\n  "))
        })
}

/// Alice's texts as `m` shows them.
fn texts_from_alice(sim: &mut Sim, m: usize) -> Vec<String> {
    let texts = sim.texts(m);
    texts
        .into_iter()
        .filter(|t| t.starts_with("alice-"))
        .collect()
}

/// One seed of a script: Alice adds Carol, then removes Bob, sending bursts of texts around
/// both while the network reorders, drops and duplicates, the node refuses every other claim
/// as rate-limited, and Bob and Carol crash and lose their connections (Alice keeps hers, so what she was told of her add and remove stands). A
/// text reaches who was in the group when Alice sent it: one sent after the add reaches Carol
/// and one sent before does not; one sent before the remove reaches Bob and one sent after
/// does not.
fn run_order_seed(seed: u64) -> Result<String, String> {
    let faults = Faults {
        drop_push: 20,
        duplicate_push: 10,
        ..CALM
    };
    let mut sim = Sim::new(seed, &["alice", "bob", "carol"]);
    sim.may_leave = false;
    sim.form_group_of(2, faults);
    // Carol's KeyPackage is refused once (the claimer's rate limit): the add waits, not fails.
    sim.node.claims_limited_every = Some(2);
    let group = sim.group.clone();
    let burst = |sim: &mut Sim| {
        for _ in 0..sim.rng.below(4) {
            sim.send_text(0);
            for _ in 0..sim.rng.below(3) {
                sim.deliver(faults);
            }
            let other = 1 + sim.rng.below(2);
            match sim.rng.below(20) {
                0 => sim.crash(other),
                1 => sim.disconnect(other),
                2..=4 => sim.connect(other),
                _ => {}
            }
        }
    };
    burst(&mut sim);
    let before_add = sim.members[0].sent.len();
    let add = sim.members[0]
        .core()
        .add(&gid(&group), &["carol".into()])
        .unwrap();
    sim.members[0].tickets.insert(add, "the add".into());
    sim.pump(0);
    burst(&mut sim);
    burst(&mut sim);
    let before_remove = sim.members[0].sent.len();
    let remove = sim.members[0]
        .core()
        .remove(&gid(&group), &["bob".into()])
        .unwrap();
    sim.members[0].tickets.insert(remove, "the remove".into());
    sim.pump(0);
    burst(&mut sim);
    sim.settle()?;

    let trace = |sim: &Sim| {
        let tail = sim.log.len().saturating_sub(60);
        sim.log[tail..].join("\n  ")
    };
    let sent = sim.members[0].sent.clone();
    let (epochs, joined) = sim.epochs();
    let bob_joined = joined[1];
    let expected_at_bob: Vec<String> = sent[..before_remove]
        .iter()
        .filter(|t| epochs.get(*t).is_some_and(|&e| e >= bob_joined))
        .cloned()
        .collect();
    let expected = [
        (0, sent.clone()),
        (1, expected_at_bob),
        (2, sent[before_add..].to_vec()),
    ];
    for (m, expected) in expected {
        let shown = texts_from_alice(&mut sim, m);
        if shown != expected {
            let name = &sim.members[m].name;
            return Err(format!(
                "{name} shows {shown:?}, not {expected:?} (Alice added Carol after {before_add} \
                 texts and removed Bob after {before_remove})\nlast events:\n  {}",
                trace(&sim)
            ));
        }
    }
    let crashes = sim.log.iter().filter(|e| e.ends_with(" crashes")).count();
    Ok(format!(
        "{} texts, add after {before_add}, remove after {before_remove}, {crashes} crashes",
        sent.len()
    ))
}

/// What a member with a modified client does in [`run_insider_seed`].
#[derive(Debug, Clone, Copy)]
enum Insider {
    /// Carol, not an admin, starts a group of her own as the continuation of the healthy one
    /// (her client skips every check), and with `breaks` she also breaks the old group at the
    /// very epoch her announcement names.
    ForgedContinuation { breaks: bool },
    /// Carol, not an admin, commits an add of Eve (her client skips the admin check); with
    /// `promoting`, the same commit makes her an admin, so Eve cannot tell from what she sees.
    NonAdminAdd { promoting: bool },
    /// A stranger fills Bob's mailbox with junk: bytes that are no Welcome, and a Welcome for
    /// somebody else's KeyPackage.
    JunkWelcomes,
}

/// One seed of an insider's attack on a group of Alice (the only admin), Bob and Carol, with
/// Eve outside, while texts flow and the network drops, duplicates and reorders pushes and
/// members lose connections. Besides the invariants of every run (checked for everyone but
/// Carol and Eve): nobody follows a group that nobody legitimate started, nobody joins a fork
/// the admins abandon, and junk costs its victim nothing.
fn run_insider_seed(seed: u64, attack: Insider) -> Result<String, String> {
    let faults = Faults {
        disconnect: 3,
        drop_push: 20,
        duplicate_push: 10,
        limited_claims: 3,
        ..CALM
    };
    let (alice, bob, carol, eve) = (0, 1, 2, 3);
    let mut sim = Sim::new(seed, &["alice", "bob", "carol", "eve"]);
    sim.may_leave = false;
    sim.node.claims_limited_every = Some(faults.limited_claims);
    sim.form_group_of(3, faults);
    sim.excluded = BTreeSet::from([carol, eve]);
    // Everyone joined before the attack.
    sim.settle()?;
    for _ in 0..sim.rng.below(150) {
        sim.step(faults);
    }
    // The attack, at once (Carol's client stays connected for it).
    sim.connect(carol);
    let group = sim.current(carol);
    let team = sim.members[carol]
        .core()
        .profile()
        .find_group(&group)
        .unwrap();
    let mut forged = None;
    match attack {
        Insider::ForgedContinuation { breaks } => {
            // Her client makes a group of its own and marks it, in her profile, as the
            // continuation of the healthy one; her sync core then adds everyone and announces it.
            sim.note("carol forges a continuation".into());
            let own = sim.members[carol].core().create_group("forged").unwrap();
            let profile = sim.members[carol].core().profile();
            let own_id = profile.find_group(&own.id).unwrap();
            profile
                .store()
                .conn()
                .execute(
                    "UPDATE groups SET continues = ?1 WHERE group_id = ?2",
                    [team.as_slice(), own_id.as_slice()],
                )
                .unwrap();
            sim.disconnect(carol);
            sim.connect(carol);
            forged = Some(own.id);
            if breaks {
                sim.note("carol breaks the group at the epoch she named".into());
                // A member's modified client posts it once the group's epoch is one she has.
                for _ in 0..1000 {
                    if sim.hostile_commit(&team) {
                        sim.attacked = true;
                        break;
                    }
                    sim.deliver(CALM);
                }
                if !sim.attacked {
                    return Err("nobody reached the group's epoch to break it".into());
                }
            }
            sim.pump(carol);
        }
        Insider::NonAdminAdd { promoting } => {
            sim.note("carol, no admin, adds eve (who knows her)".into());
            let carols_code = sim.members[carol].core().profile().invite_code().unwrap();
            sim.members[eve]
                .core()
                .profile()
                .add_contact(&carols_code)
                .unwrap();
            sim.forge_add(carol, eve, &team, promoting)?;
        }
        Insider::JunkWelcomes => {
            sim.note("a stranger fills bob's mailbox".into());
            let elsewhere = sim.members[eve]
                .core()
                .profile()
                .new_key_package(false)
                .unwrap();
            let mut junk: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100]).collect();
            junk.push(welcome_to(&elsewhere));
            let bobs = sim.members[bob].client;
            let entries = sim.node.inject_junk_welcomes(bobs, junk);
            let conn = sim.members[bob].conn;
            for entry in entries {
                sim.flights.push(Flight::ToMember {
                    member: bob,
                    conn,
                    what: Delivery::Push(Push::Mailbox(entry)),
                });
            }
        }
    }
    for _ in 0..sim.rng.below(150) {
        sim.step(faults);
    }
    sim.settle()?;
    let summary = sim.check_settled().map_err(|e| {
        let tail = sim.log.len().saturating_sub(60);
        format!("{e}\nlast events:\n  {}", sim.log[tail..].join("\n  "))
    })?;
    // Nobody legitimate started Carol's group: no honest member follows it.
    if let Some(forged) = &forged {
        for m in [alice, bob] {
            if sim.chain(m).contains(forged) {
                return Err(format!(
                    "{} followed carol's forged continuation",
                    sim.members[m].name
                ));
            }
        }
    }
    // Eve, added by a commit the admin rejects, must not believe she shares a group with them.
    let eve_groups = sim.members[eve].core().profile().groups().unwrap();
    if let Some(g) = eve_groups.iter().find(|g| g.state == GroupState::Active) {
        return Err(format!("eve is in a group the admins abandoned: {g:?}"));
    }
    if !unjoined(sim.members[eve].core().profile()).is_empty() {
        return Err("eve keeps retrying a fork's Welcome".into());
    }
    // Junk passed at once: nothing kept, the mailbox read past it.
    let bobs_invitations = sim.members[bob].core().profile().invitations().unwrap();
    if !bobs_invitations.is_empty() && matches!(attack, Insider::JunkWelcomes) {
        return Err(format!("bob keeps junk: {bobs_invitations:?}"));
    }
    if std::env::var("SIM_TRACE").is_ok() {
        eprintln!("events:\n  {}", sim.log.join("\n  "));
        eprintln!("eve: {eve_groups:?}");
    }
    Ok(format!("{attack:?}: {summary}"))
}

/// An OpenMLS provider over a profile's storage, for a modified client's raw operations.
struct RawProvider<'a> {
    crypto: &'a openmls_rust_crypto::RustCrypto,
    storage: mlschat_node::store::MlsStorage<'a>,
}

impl<'a> OpenMlsProvider for RawProvider<'a> {
    type CryptoProvider = openmls_rust_crypto::RustCrypto;
    type RandProvider = openmls_rust_crypto::RustCrypto;
    type StorageProvider = mlschat_node::store::MlsStorage<'a>;

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

/// A real Welcome to `key_package` (someone else's): junk that parses.
fn welcome_to(key_package: &[u8]) -> Vec<u8> {
    let dir = profile_root();
    let device = DeviceName::new("mallory", "dev").unwrap();
    let mut mallory = Profile::create(dir.path(), device, None).unwrap();
    let group = mallory.create_group("junk").unwrap();
    let out = mallory
        .add_members(&gid(&group.id), &[key_package.to_vec()])
        .unwrap();
    match out.to_joiners {
        Some(mlschat_wire::packet::Packet::Join { welcome, .. }) => welcome,
        other => panic!("no Welcome: {other:?}"),
    }
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn run_seeds(faults: Faults, default_seeds: u64) {
    run_seeds_of(3, faults, default_seeds);
}

/// `members` unless SIM_MEMBERS says otherwise.
fn run_seeds_of(members: u64, faults: Faults, default_seeds: u64) {
    let members = env("SIM_MEMBERS").unwrap_or(members) as usize;
    let steps = env("SIM_STEPS").unwrap_or(400) as usize;
    for_each_seed(default_seeds, |seed| run_seed(seed, steps, members, faults));
}

/// Runs `run` for seeds 1..=`default_seeds` (SIM_SEEDS as many, from SIM_FIRST_SEED on; SIM_SEED
/// one) and fails if any seed did, naming them.
fn for_each_seed(default_seeds: u64, mut run: impl FnMut(u64) -> Result<String, String>) {
    if std::env::var("SIM_TRACE").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_writer(std::io::stderr)
            .try_init();
    }
    let seeds: Vec<u64> = match env("SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env("SIM_FIRST_SEED").unwrap_or(1);
            (first..first + env("SIM_SEEDS").unwrap_or(default_seeds)).collect()
        }
    };
    let mut failures = Vec::new();
    for &seed in &seeds {
        match run(seed) {
            Ok(summary) => eprintln!("seed {seed}: ok ({summary})"),
            Err(e) => {
                eprintln!("seed {seed}: FAILED: {e}");
                failures.push(seed);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed: {failures:?} (replay one with SIM_SEED=…)",
        failures.len(),
        seeds.len()
    );
}

#[test]
fn texts_reach_the_members_who_were_in_when_they_were_sent() {
    for_each_seed(100, run_order_seed);
}

#[test]
fn members_agree_on_every_text_without_faults() {
    run_seeds(CALM, 20);
}

#[test]
fn members_agree_on_every_text_through_crashes_losses_and_reordering() {
    run_seeds(HOSTILE, 300);
}

#[test]
fn a_group_that_a_hostile_commit_breaks_goes_on_as_a_new_group() {
    run_seeds(HOSTILE_MEMBER, 100);
}

/// Four members: adds of three at once, so claims in one request are refused in part.
#[test]
fn four_members_agree_through_crashes_losses_refused_claims_and_a_hostile_commit() {
    run_seeds_of(4, HOSTILE_MEMBER, 600);
}

/// Issue 18, finding 1: a non-admin marked a group of his own as the continuation of a healthy
/// group, and every other member followed it at once.
#[test]
fn a_forged_continuation_takes_nobody_over() {
    for_each_seed(40, |seed| {
        run_insider_seed(
            seed,
            Insider::ForgedContinuation {
                breaks: seed % 2 == 0,
            },
        )
    });
}

/// Issue 18, finding 2: a joiner brought in by a non-admin's commit joined it and chatted in a
/// fork that the admin never reads.
#[test]
fn a_non_admins_add_joins_nobody_into_a_fork() {
    for_each_seed(30, |seed| {
        let promoting = seed % 2 == 0;
        run_insider_seed(seed, Insider::NonAdminAdd { promoting })
    });
}

/// Issue 18, finding 3: junk in a mailbox was kept as invitations and retried on every sync.
#[test]
fn junk_in_a_mailbox_is_passed_at_once() {
    for_each_seed(30, |seed| run_insider_seed(seed, Insider::JunkWelcomes));
}

/// A group id as the simulator keeps it (hex), as the profile takes it.
fn gid(hex: &str) -> GroupId {
    GroupId::from_slice(&hex::decode(hex).expect("a group id in hex"))
}
