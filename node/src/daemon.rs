//! The long-running node: keeps the connection to our delivery node (reconnecting with backoff),
//! drives the sync core, and serves a local JSON-RPC 2.0 API to front ends and bots, one JSON
//! object per line, on a Unix socket (mode 0600) and optionally on stdio.
//!
//! One task (the [`Actor`]) owns the [`Driver`] and so the profile; API connections send it
//! calls. A call that needs the node (a send, a change of a group) is queued in the core and
//! answered when the core says it is done, so other calls are served meanwhile. Events are the
//! profile's history rows, numbered and durable: `events` reads them after an id and `subscribe`
//! streams them from an id on, so a front end that reconnects resumes where it stopped and
//! loses nothing.
//!
//! Methods: `status`, `alerts.ack`, `whoami`, `home`, `group.rename`, `groups`, `members`, `history`, `events`, `subscribe`, `invite`,
//! `contacts`, `contact.add`, `contact.verify`, `contact.remove`, `requests`, `request.accept`,
//! `request.decline`, `group.create`, `group.add`, `group.remove`, `group.update`, `send`,
//! `sync`. Those that need no delivery node are [`local`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

use crate::driver::Driver;
use crate::engine;
use crate::identity::Fingerprint;
use crate::kind::ErrorKind;
use crate::profile::{Intent, InviteCode, Profile, ProfileError};
use crate::sync::{Notice, SyncError, Ticket};

/// The socket's file name in the profile directory.
pub const SOCKET: &str = "daemon.sock";

/// Reconnection backoff: from the first delay, doubling, up to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(15));
/// Events sent per read while streaming a subscription.
const EVENT_BATCH: u32 = 500;

/// An error answer: a JSON-RPC code, a message for people, and a stable kind for programs.
#[derive(Debug)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub kind: ErrorKind,
}

impl RpcError {
    fn invalid_params(e: impl std::fmt::Display) -> Self {
        Self {
            code: -32602,
            message: format!("invalid params: {e}"),
            kind: ErrorKind::InvalidInput,
        }
    }

    fn offline(why: &str) -> Self {
        Self {
            code: -32001,
            message: format!("not connected to the delivery node ({why})"),
            kind: ErrorKind::Delivery,
        }
    }

    fn to_json(&self) -> Value {
        json!({"code": self.code, "message": self.message, "data": {"kind": self.kind.as_str()}})
    }
}

impl From<SyncError> for RpcError {
    fn from(e: SyncError) -> Self {
        Self {
            code: -32000,
            message: e.to_string(),
            kind: e.kind(),
        }
    }
}

impl From<ProfileError> for RpcError {
    fn from(e: ProfileError) -> Self {
        SyncError::Profile(e).into()
    }
}

type Reply = oneshot::Sender<Result<Value, RpcError>>;

/// A request the actor carries out.
enum Work {
    Call {
        method: String,
        params: Value,
        reply: Reply,
    },
    Reconnect,
    Stop,
}

/// What a call waiting for the core answers once its ticket is done.
enum Then {
    /// `{"posted": true}`; `{"posted": false}` if the connection went first (the text stays
    /// queued and goes out on reconnection).
    Posted,
    /// The group's summary; `{"group", "queued": true}` if the connection went first (the
    /// change stays queued and goes on after reconnecting).
    Summary(String),
    /// What arrived since the history row `since`, by group.
    Synced { since: i64 },
}

/// Owns the driver; carries out work one item at a time.
struct Actor {
    driver: Driver,
    work: mpsc::Sender<Work>,
    latest_event: watch::Sender<i64>,
    backoff: Duration,
    reconnect_scheduled: bool,
    waiting: BTreeMap<Ticket, (Then, Reply)>,
    /// A daemon reconnects when the connection goes; a CLI's one call does not.
    reconnects: bool,
}

impl Actor {
    fn new(profile: Profile, work: mpsc::Sender<Work>, latest_event: watch::Sender<i64>) -> Self {
        Self {
            driver: Driver::new(profile),
            work,
            latest_event,
            backoff: BACKOFF.0,
            reconnect_scheduled: false,
            waiting: BTreeMap::new(),
            reconnects: false,
        }
    }

    async fn run(mut self, mut queue: mpsc::Receiver<Work>) -> Profile {
        loop {
            tokio::select! {
                work = queue.recv() => match work {
                    None | Some(Work::Stop) => break,
                    Some(Work::Call { method, params, reply }) => self.call(&method, params, reply),
                    Some(Work::Reconnect) => self.reconnect().await,
                },
                () = self.driver.step() => {}
            }
            self.settle();
        }
        self.driver.into_profile()
    }

    /// After anything happened: send what the core has, answer the calls it finished, notice
    /// a lost connection, tell subscribers of new events.
    fn settle(&mut self) {
        self.driver.flush();
        while let Some(notice) = self.driver.poll_notice() {
            match notice {
                Notice::Done { ticket, result } => self.answer(ticket, result),
                Notice::Joined(group) => tracing::info!(group = %group.id, "joined a group"),
                // Logged where raised; `status` lists it.
                Notice::Alert(_) => {}
            }
        }
        if self.driver.offline().is_some() && !self.reconnect_scheduled {
            self.schedule_reconnect();
        }
        self.publish_latest_event();
    }

    fn answer(&mut self, ticket: Ticket, result: Result<(), SyncError>) {
        let Some((then, reply)) = self.waiting.remove(&ticket) else {
            return;
        };
        let answer = match (then, result) {
            (Then::Posted, Ok(())) => Ok(json!({"posted": true})),
            (Then::Posted, Err(SyncError::Disconnected)) => Ok(json!({"posted": false})),
            (Then::Summary(group), Ok(())) => self.summary(&group),
            // The change stays queued and goes on after reconnecting: not a refusal.
            (Then::Summary(group), Err(SyncError::Disconnected)) => {
                Ok(json!({"group": group, "queued": true}))
            }
            (Then::Synced { since }, Ok(())) => self.synced(since),
            (_, Err(e)) => Err(e.into()),
        };
        let _ = reply.send(answer);
    }

    fn publish_latest_event(&mut self) {
        if let Ok(Some(latest)) = self
            .driver
            .profile()
            .store()
            .query_opt::<i64>("SELECT max(seq) FROM messages", [])
        {
            self.latest_event.send_if_modified(|old| {
                let changed = *old != latest;
                *old = latest;
                changed
            });
        }
    }

    fn schedule_reconnect(&mut self) {
        if matches!(self.driver.profile().home(), Ok(None)) {
            return; // nowhere to connect to
        }
        self.reconnect_scheduled = true;
        let (work, delay) = (self.work.clone(), self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF.1);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = work.send(Work::Reconnect).await;
        });
    }

    async fn reconnect(&mut self) {
        self.reconnect_scheduled = false;
        if self.driver.offline().is_none() {
            return;
        }
        if self.driver.connect().await.is_ok() {
            self.backoff = BACKOFF.0;
        }
    }

    /// Fails unless connected: for calls that need the node now.
    fn online(&self) -> Result<(), RpcError> {
        match self.driver.offline() {
            None => Ok(()),
            Some(why) if self.reconnects => Err(RpcError::offline(&format!(
                "{why}; the daemon keeps trying to connect"
            ))),
            Some(why) => Err(RpcError::offline(why)),
        }
    }

    /// Carries out a call: answered now, or once the core is done with it.
    fn call(&mut self, method: &str, params: Value, reply: Reply) {
        match self.dispatch(method, params) {
            Ok(Answer::Now(value)) => {
                let _ = reply.send(Ok(value));
            }
            Ok(Answer::Later(ticket, then)) => {
                self.waiting.insert(ticket, (then, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn dispatch(&mut self, method: &str, params: Value) -> Result<Answer, RpcError> {
        fn p<T: for<'de> Deserialize<'de>>(params: Value) -> Result<T, RpcError> {
            serde_json::from_value(params).map_err(RpcError::invalid_params)
        }
        #[derive(Deserialize)]
        struct Group {
            group: String,
        }
        #[derive(Deserialize)]
        struct Name {
            name: String,
        }
        #[derive(Deserialize)]
        struct Who {
            group: String,
            who: Vec<String>,
        }
        #[derive(Deserialize)]
        struct Text {
            group: String,
            text: String,
        }
        let now = Answer::Now;
        Ok(match method {
            "status" => {
                let mut status =
                    local(self.driver.profile(), "status", &params)?.expect("a local method");
                status["link"] = match self.driver.offline() {
                    None => json!({"connected": true}),
                    Some(why) => json!({"connected": false, "why": why}),
                };
                status["lanes"] = value(self.driver.core().stuck_lanes());
                now(status)
            }
            "group.create" => {
                let Name { name } = p(params)?;
                now(value(&self.driver.core().create_group(&name)?))
            }
            "group.add" => {
                let Who { group, who } = p(params)?;
                self.online()?;
                let ticket = self.driver.core().add(&group, &who)?;
                Answer::Later(ticket, Then::Summary(group))
            }
            "group.remove" => {
                let Who { group, who } = p(params)?;
                self.online()?;
                let ticket = self.driver.core().remove(&group, &who)?;
                Answer::Later(ticket, Then::Summary(group))
            }
            "group.set" => {
                #[derive(Deserialize)]
                struct Set {
                    group: String,
                    name: Option<String>,
                    topic: Option<String>,
                    #[serde(default)]
                    admin: Vec<String>,
                    #[serde(default)]
                    not_admin: Vec<String>,
                }
                let Set {
                    group,
                    name,
                    topic,
                    admin,
                    not_admin,
                } = p(params)?;
                self.online()?;
                let profile = self.driver.profile();
                let change = profile.settings_change(&group, name, topic, &admin, &not_admin)?;
                // By id: a new shared name may rename the group here too.
                let id = hex::encode(profile.find_group(&group)?.as_slice());
                let ticket = self
                    .driver
                    .core()
                    .change(&group, Intent::Settings(change))?;
                Answer::Later(ticket, Then::Summary(id))
            }
            "group.leave" => {
                let Group { group } = p(params)?;
                self.online()?;
                let ticket = self.driver.core().leave(&group)?;
                Answer::Later(ticket, Then::Posted)
            }
            "group.update" => {
                let Group { group } = p(params)?;
                self.online()?;
                let ticket = self.driver.core().change(&group, Intent::Update)?;
                Answer::Later(ticket, Then::Summary(group))
            }
            "send" => {
                let Text { group, text } = p(params)?;
                if self.driver.offline().is_some() {
                    // Offline, the text waits in the outbox and goes out on reconnection.
                    self.driver.profile().send_hosted(&group, &text)?;
                    now(json!({"posted": false}))
                } else {
                    let ticket = self.driver.core().send(&group, &text)?;
                    Answer::Later(ticket, Then::Posted)
                }
            }
            "request.accept" => {
                let Group { group } = p(params)?;
                self.online()?;
                let since = self.driver.profile().latest_event()?;
                self.driver.profile().answer_request(&group, true)?;
                let ticket = self.driver.core().sync()?;
                Answer::Later(ticket, Then::Synced { since })
            }
            "request.decline" => {
                let declined = local(self.driver.profile(), method, &params)?;
                // We join only to ask to leave, so that the inviter learns it: now, if we can.
                if self.driver.offline().is_none() {
                    self.driver.core().sync()?;
                }
                now(declined.expect("a local method"))
            }
            "sync" => {
                self.online()?;
                let since = self.driver.profile().latest_event()?;
                let ticket = self.driver.core().sync()?;
                Answer::Later(ticket, Then::Synced { since })
            }
            _ => match local(self.driver.profile(), method, &params)? {
                Some(answer) => now(answer),
                None => {
                    return Err(RpcError {
                        code: -32601,
                        message: format!("no method {method:?}"),
                        kind: ErrorKind::InvalidInput,
                    });
                }
            },
        })
    }

    /// `{"synced": true, "new": [{"group", "entries"}]}`: how many history entries each group
    /// got since `since` (joins included).
    fn synced(&mut self, since: i64) -> Result<Value, RpcError> {
        let new = self.driver.profile().new_by_group(since)?;
        let new: Vec<Value> = new
            .into_iter()
            .map(|(group, entries)| json!({"group": group, "entries": entries}))
            .collect();
        Ok(json!({"synced": true, "new": new}))
    }

    fn summary(&mut self, group: &str) -> Result<Value, RpcError> {
        let profile = self.driver.profile();
        let groups = profile.groups()?;
        let id = hex::encode(profile.find_group(group)?.as_slice());
        Ok(json!(groups.into_iter().find(|g| g.id == id)))
    }
}

/// Carries out a method that needs no delivery node, on `profile`: the daemon's answer, and the
/// CLI's when no daemon runs. `None` for a method that is not one of these.
pub fn local(
    profile: &mut Profile,
    method: &str,
    params: &Value,
) -> Result<Option<Value>, RpcError> {
    fn p<T: for<'de> Deserialize<'de>>(params: &Value) -> Result<T, RpcError> {
        T::deserialize(params).map_err(RpcError::invalid_params)
    }
    #[derive(Deserialize)]
    struct Group {
        group: String,
    }
    #[derive(Deserialize)]
    struct After {
        #[serde(default)]
        after: i64,
        #[serde(default = "default_limit")]
        limit: u32,
    }
    #[derive(Deserialize)]
    struct History {
        group: String,
        #[serde(default = "default_limit")]
        limit: u32,
    }
    #[derive(Deserialize)]
    struct Code {
        code: String,
    }
    #[derive(Deserialize)]
    struct Verify {
        name: String,
        /// The safety number our user compared; without it, the number is only shown.
        matches: Option<String>,
    }
    #[derive(Deserialize)]
    struct Name {
        name: String,
    }
    fn default_limit() -> u32 {
        100
    }
    Ok(Some(match method {
        "whoami" => {
            let identity = profile.identity();
            let (one_time, last_resort) = profile.key_package_stock()?;
            json!({
                "user": identity.name.user,
                "device": identity.name.device,
                "fingerprint": identity.fingerprint().to_hex(),
                "profile": profile.store().dir().display().to_string(),
                "keypackages": {"one_time": one_time, "last_resort": last_resort},
            })
        }
        "home" => {
            let home = profile.home()?;
            json!({
                "address": home.as_ref().map(|h| &h.address),
                "fingerprint": home.as_ref().map(|h| hex::encode(h.fingerprint)),
            })
        }
        "status" => {
            let identity = profile.identity();
            json!({
                "name": identity.name.to_string(),
                "fingerprint": identity.fingerprint().to_hex(),
                "home": profile.home()?.map(|h| h.address),
                "link": {"connected": false, "why": "no daemon runs"},
                "lanes": [],
                "groups": value(&profile.groups()?),
                "invitations": value(&profile.invitations()?),
                "alerts": value(&profile.alerts()?),
            })
        }
        "alerts.ack" => {
            #[derive(Deserialize)]
            struct UpTo {
                up_to: Option<i64>,
            }
            let UpTo { up_to } = p(params)?;
            json!({"acknowledged": profile.acknowledge_alerts(up_to)?})
        }
        "group.rename" => {
            #[derive(Deserialize)]
            struct Rename {
                group: String,
                name: String,
            }
            let Rename { group, name } = p(params)?;
            profile.rename_group(&group, &name)?;
            json!({"group": group, "name": name})
        }
        "groups" => value(&profile.groups()?),
        "members" => {
            let Group { group } = p(params)?;
            let states = profile.sender_states()?;
            let settings = profile.settings(&group)?;
            let invited = profile.invited(&group)?;
            let members: Vec<Value> = profile
                .members(&group)?
                .iter()
                .map(|m| {
                    let name = m.name.as_ref().map(|n| n.to_string());
                    let state = states.of(name.as_deref().unwrap_or(""), &m.fingerprint.0);
                    let admin = engine::may_manage(settings.as_ref(), &m.fingerprint);
                    json!({
                        "leaf": m.leaf_index,
                        "name": name,
                        "fingerprint": m.fingerprint.to_hex(),
                        "state": state,
                        "admin": admin,
                        "invited": invited.contains(&m.fingerprint),
                    })
                })
                .collect();
            json!(members)
        }
        "history" => {
            let History { group, limit } = p(params)?;
            value(&profile.history(&group, limit)?)
        }
        "events" => {
            let After { after, limit } = p(params)?;
            value(&profile.events_after(after, limit)?)
        }
        "invite" => {
            let code = profile.invite_code()?;
            let fingerprint = Fingerprint::of_signature_key(&code.signature_key);
            json!({"code": code.to_string(), "fingerprint": fingerprint.to_hex()})
        }
        "contacts" => value(&profile.contacts()?),
        "contact.add" => {
            let Code { code } = p(params)?;
            let code: InviteCode = code.parse()?;
            value(&profile.add_contact(&code)?)
        }
        "contact.verify" => {
            let Verify { name, matches } = p(params)?;
            match matches {
                None => value(&profile.safety_number(&name)?),
                Some(number) => {
                    profile.verify_contact(&name, &number)?;
                    value(&profile.safety_number(&name)?)
                }
            }
        }
        "contact.remove" => {
            let Name { name } = p(params)?;
            value(&profile.remove_contact(&name)?)
        }
        "requests" => {
            let waiting: Vec<_> = profile
                .invitations()?
                .into_iter()
                .filter(|i| i.request.as_deref() == Some("waiting"))
                .collect();
            value(&waiting)
        }
        "request.decline" => {
            let Group { group } = p(params)?;
            value(&profile.answer_request(&group, false)?)
        }
        _ => return Ok(None),
    }))
}

/// A call's answer: now, or when the core is done with its ticket.
enum Answer {
    Now(Value),
    Later(Ticket, Then),
}

/// The JSON of a report; reports always serialise.
fn value(report: impl serde::Serialize) -> Value {
    serde_json::to_value(report).unwrap_or(Value::Null)
}

/// A handle to a running actor, shared by the API connections.
#[derive(Clone)]
struct Handle {
    work: mpsc::Sender<Work>,
    latest_event: watch::Receiver<i64>,
}

impl Handle {
    async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let (reply, answer) = oneshot::channel();
        let gone = || RpcError {
            code: -32002,
            message: "the daemon is stopping".into(),
            kind: ErrorKind::Failure,
        };
        self.work
            .send(Work::Call {
                method: method.into(),
                params,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Carries out one API call without a daemon: connects, calls, catches up, disconnects. This is
/// what the CLI does when no daemon runs; the answer is the same as the daemon's.
pub async fn call_once(
    profile: Profile,
    method: &str,
    params: Value,
) -> (Profile, Result<Value, RpcError>) {
    let (work, _unused) = mpsc::channel(1);
    let mut actor = Actor::new(profile, work, watch::channel(0).0);
    // Offline, the call answers as the daemon's would while it is offline.
    let _ = actor.driver.connect().await;
    let (reply, mut answer) = oneshot::channel();
    actor.call(method, params, reply);
    let result = loop {
        actor.settle();
        match answer.try_recv() {
            Ok(result) => break result,
            Err(oneshot::error::TryRecvError::Closed) => {
                break Err(RpcError::offline("the call was dropped"));
            }
            Err(oneshot::error::TryRecvError::Empty) => match actor.driver.offline() {
                Some(why) => break Err(RpcError::offline(why)),
                None => actor.driver.step().await,
            },
        }
    };
    // Whatever the call set going (and the catch-up) finishes before we go.
    if actor.driver.offline().is_none()
        && let Err(e) = actor.driver.sync().await
    {
        tracing::warn!(error = %e, "catching up did not finish");
    }
    (actor.driver.into_profile(), result)
}

/// How a daemon runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Also serve the API on stdin/stdout.
    pub stdio: bool,
    /// How long (s) a member we add may take to join before we remove it (if we are the
    /// group's first admin).
    pub invite_expiry: u64,
}

/// Runs the daemon for `profile` until `shutdown` completes: the API on `socket` (and on
/// stdin/stdout if `stdio`), the connection to the delivery node. Returns the profile.
pub async fn run(
    profile: Profile,
    socket: &Path,
    options: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<Profile> {
    let Options {
        stdio,
        invite_expiry,
    } = options;
    let listener = bind(socket)?;
    let (work, queue) = mpsc::channel(256);
    let (latest_event, latest_rx) = watch::channel(0);
    let mut actor = Actor::new(profile, work.clone(), latest_event);
    actor.driver.core().set_invite_expiry(invite_expiry);
    actor.reconnect_scheduled = true;
    actor.reconnects = true;
    work.send(Work::Reconnect).await.ok();
    let handle = Handle {
        work: work.clone(),
        latest_event: latest_rx,
    };
    if stdio {
        let handle = handle.clone();
        tokio::spawn(async move {
            serve_lines(handle, tokio::io::stdin(), tokio::io::stdout()).await;
        });
    }
    let accept = {
        let handle = handle.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (read, write) = stream.into_split();
                tokio::spawn(serve_lines(handle.clone(), read, write));
            }
        })
    };
    // The actor runs on this task (the profile's SQLite connection stays on one thread).
    let stop = async {
        shutdown.await;
        accept.abort();
        let _ = std::fs::remove_file(socket);
        work.send(Work::Stop).await.ok();
    };
    let (profile, ()) = tokio::join!(actor.run(queue), stop);
    Ok(profile)
}

/// Binds the API socket with mode 0600. A socket file nobody listens on (left by a killed
/// daemon) is replaced; a live one means another daemon runs for this profile.
fn bind(socket: &Path) -> std::io::Result<tokio::net::UnixListener> {
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "a daemon already serves this profile at {}",
                    socket.display()
                ),
            ));
        }
        std::fs::remove_file(socket)?;
    }
    // Created under a umask that leaves it to us alone, so it is never briefly open to others.
    let old = umask(0o177);
    let listener = tokio::net::UnixListener::bind(socket);
    umask(old);
    let listener = listener?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

#[allow(unsafe_code)] // umask(2) has no safe wrapper in std; it cannot fail.
fn umask(mask: libc::mode_t) -> libc::mode_t {
    // SAFETY: umask only swaps the process's file mode creation mask.
    unsafe { libc::umask(mask) }
}

/// The longest request line the API reads: the largest text (1 MiB) escaped, with room.
const MAX_REQUEST_LINE: usize = 8 << 20;

/// One line of a connection to the API.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Request(Vec<u8>),
    /// Longer than allowed: passed to its end, never held.
    TooLong,
}

/// Reads the next line, holding at most `max` bytes of it: a longer line is read to its end and
/// dropped, so a client cannot make the daemon allocate what it sends. `None` at the end.
async fn next_request(
    read: &mut (impl tokio::io::AsyncBufRead + Unpin),
    max: usize,
) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let available = read.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (too_long, line.is_empty()) {
                (true, _) => Some(Line::TooLong),
                (false, true) => None,
                (false, false) => Some(Line::Request(line)),
            });
        }
        let end = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..end.unwrap_or(available.len())];
        too_long |= line.len() + chunk.len() > max;
        if too_long {
            line = Vec::new();
        } else {
            line.extend_from_slice(chunk);
        }
        let used = end.map_or(available.len(), |i| i + 1);
        read.consume(used);
        if end.is_some() {
            return Ok(Some(if too_long {
                Line::TooLong
            } else {
                Line::Request(line)
            }));
        }
    }
}

/// Serves one API connection: a JSON-RPC request per line in, responses and notifications out.
async fn serve_lines(
    handle: Handle,
    read: impl tokio::io::AsyncRead + Unpin,
    write: impl AsyncWrite + Unpin + Send + 'static,
) {
    let (out, lines_out) = mpsc::channel::<String>(1024);
    let writer = tokio::spawn(write_lines(write, lines_out));
    let mut read = BufReader::new(read);
    let mut subscription: Option<tokio::task::JoinHandle<()>> = None;
    while let Ok(Some(line)) = next_request(&mut read, MAX_REQUEST_LINE).await {
        let Line::Request(line) = line else {
            let message = format!("request too large: at most {MAX_REQUEST_LINE} bytes a line");
            let error = json!({"code": -32600, "message": message});
            let _ = out.send(response(Value::Null, Err(error))).await;
            continue;
        };
        if line.trim_ascii().is_empty() {
            continue;
        }
        let request: Value = match serde_json::from_slice(&line) {
            Ok(v) => v,
            Err(e) => {
                let error = json!({"code": -32700, "message": format!("parse error: {e}")});
                let _ = out.send(response(Value::Null, Err(error))).await;
                continue;
            }
        };
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let Some(method) = request.get("method").and_then(Value::as_str) else {
            let error = json!({"code": -32600, "message": "invalid request: no method"});
            let _ = out.send(response(id, Err(error))).await;
            continue;
        };
        let params = request.get("params").cloned().unwrap_or(json!({}));
        if method == "subscribe" {
            let after = params.get("after").and_then(Value::as_i64).unwrap_or(0);
            if let Some(old) = subscription.take() {
                old.abort();
            }
            let _ = out.send(response(id, Ok(json!({"after": after})))).await;
            subscription = Some(tokio::spawn(stream_events(
                handle.clone(),
                after,
                out.clone(),
            )));
            continue;
        }
        let answer = handle.call(method, params).await.map_err(|e| e.to_json());
        if out.send(response(id, answer)).await.is_err() {
            break;
        }
    }
    if let Some(s) = subscription {
        s.abort();
    }
    drop(out);
    let _ = writer.await;
}

/// Sends every event after `after` as an `event` notification, then each new one as it comes.
async fn stream_events(handle: Handle, mut after: i64, out: mpsc::Sender<String>) {
    let mut latest = handle.latest_event.clone();
    loop {
        let params = json!({"after": after, "limit": EVENT_BATCH});
        let Ok(Value::Array(events)) = handle.call("events", params).await else {
            return;
        };
        for event in &events {
            after = event.get("id").and_then(Value::as_i64).unwrap_or(after);
            let note = json!({"jsonrpc": "2.0", "method": "event", "params": event});
            if out.send(note.to_string()).await.is_err() {
                return;
            }
        }
        if events.is_empty() && latest.changed().await.is_err() {
            return;
        }
    }
}

async fn write_lines(mut write: impl AsyncWrite + Unpin, mut lines: mpsc::Receiver<String>) {
    while let Some(mut line) = lines.recv().await {
        line.push('\n');
        if write.write_all(line.as_bytes()).await.is_err() || write.flush().await.is_err() {
            return;
        }
    }
}

fn response(id: Value, result: Result<Value, Value>) -> String {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
    }
    .to_string()
}

/// The socket path of the daemon for the profile in `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET)
}

/// A client of a running daemon's API, for the CLI.
pub mod client {
    use super::*;
    use tokio::net::UnixStream;

    /// A connection to a running daemon.
    pub struct DaemonClient {
        lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
        write: tokio::net::unix::OwnedWriteHalf,
        next_id: u64,
    }

    /// What a call can end in.
    #[derive(Debug, thiserror::Error)]
    pub enum CallError {
        #[error("daemon API: {0}")]
        Io(#[from] std::io::Error),
        #[error("{message}")]
        Refused { kind: ErrorKind, message: String },
        #[error("the daemon closed the connection")]
        Closed,
    }

    impl DaemonClient {
        /// Connects to the daemon of the profile in `dir`; `None` when none is running.
        pub async fn connect(dir: &Path) -> Option<Self> {
            let stream = UnixStream::connect(socket_path(dir)).await.ok()?;
            let (read, write) = stream.into_split();
            Some(Self {
                lines: BufReader::new(read).lines(),
                write,
                next_id: 1,
            })
        }

        /// Calls `method` and waits for its answer (notifications in between are skipped).
        pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, CallError> {
            self.answer(method, params).await?.map_err(|error| {
                let text = |k: &str| {
                    error
                        .pointer(k)
                        .and_then(Value::as_str)
                        .unwrap_or("failure")
                        .to_owned()
                };
                CallError::Refused {
                    kind: ErrorKind::from_name(&text("/data/kind")),
                    message: text("/message"),
                }
            })
        }

        /// Calls `method`: its result, or the JSON-RPC error object the daemon answered with.
        pub async fn answer(
            &mut self,
            method: &str,
            params: Value,
        ) -> Result<Result<Value, Value>, CallError> {
            let id = self.next_id;
            self.next_id += 1;
            let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            self.write
                .write_all(format!("{request}\n").as_bytes())
                .await?;
            loop {
                let mut answer = self.next().await?;
                if answer.get("id").and_then(Value::as_u64) != Some(id) {
                    continue;
                }
                return Ok(match answer.get_mut("error") {
                    Some(error) => Err(error.take()),
                    None => Ok(answer
                        .get_mut("result")
                        .map(Value::take)
                        .unwrap_or(Value::Null)),
                });
            }
        }

        /// The next line from the daemon: an answer or a notification.
        pub async fn next(&mut self) -> Result<Value, CallError> {
            let line = self.lines.next_line().await?.ok_or(CallError::Closed)?;
            serde_json::from_str(&line).map_err(|e| CallError::Io(std::io::Error::other(e)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18, finding 8: one 256 MiB line took the daemon from 88 to 350 MB. A line over the
    /// limit is answered as too large, never held, and the next line is read as usual.
    #[tokio::test]
    async fn a_line_over_the_limit_is_dropped_and_the_next_one_read() {
        let mut input = vec![b'x'; 5_000];
        input.extend_from_slice(b"\n{\"method\":\"status\"}\nlast");
        let mut read = BufReader::with_capacity(64, input.as_slice());
        let mut lines = Vec::new();
        while let Some(line) = next_request(&mut read, 1_000).await.unwrap() {
            lines.push(line);
        }
        assert_eq!(
            lines,
            [
                Line::TooLong,
                Line::Request(br#"{"method":"status"}"#.to_vec()),
                Line::Request(b"last".to_vec()),
            ]
        );
    }
}
