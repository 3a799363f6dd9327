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
//! - `api.rs`: the calls as types ([`Call`]) and the error answer ([`RpcError`]);
//! - `answers.rs`: the answers as types ([`Answer`], one variant per call);
//! - `local.rs`: the calls that need no delivery node ([`local`]), for the CLI too;
//! - `lines.rs`: one API connection: a JSON-RPC request per line, answers and event
//!   notifications out;
//! - `client.rs`: the one client of the API (the CLI, the chat, the test harness).
//!
//! Only the daemon knows JSON: below it, everything is the profile's and the core's types.

mod answers;
mod api;
pub mod client;
mod lines;
mod local;

pub use answers::*;
pub use api::{ApiError, Call, ErrorData, RpcError};
pub use local::{local, whoami};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::driver::Driver;
use crate::kind::ErrorKind;
use openmls::prelude::GroupId;

use crate::profile::{Intent, Profile};
use crate::sync::{Notice, SyncError, Ticket};
use lines::serve_lines;

/// The socket's file name in the profile directory.
pub const SOCKET: &str = "daemon.sock";

/// Reconnection backoff: from the first delay, doubling, up to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(15));

type Reply = oneshot::Sender<Result<Answer, RpcError>>;

/// A request the actor carries out.
enum Work {
    Call { call: Call, reply: Reply },
    Reconnect,
    Stop,
}

/// What a call waiting for the core answers once its ticket is done.
enum Then {
    /// Whether the node has it: not if the connection went first (the text or proposal stays
    /// queued and goes out on reconnection).
    Posted(fn(Posted) -> Answer),
    /// The group's summary; queued if the connection went first (the change stays queued and
    /// goes on after reconnecting).
    Summary(GroupId, fn(Changed) -> Answer),
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
                    Some(Work::Call { call, reply }) => self.call(call, reply),
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
            (Then::Posted(answer), Ok(())) => Ok(answer(Posted { posted: true })),
            (Then::Posted(answer), Err(SyncError::Disconnected)) => {
                Ok(answer(Posted { posted: false }))
            }
            (Then::Summary(id, answer), Ok(())) => {
                let summary = self.driver.profile().summary(&id);
                summary
                    .map(|g| answer(Changed::Group(g)))
                    .map_err(Into::into)
            }
            // The change stays queued and goes on after reconnecting: not a refusal.
            (Then::Summary(id, answer), Err(SyncError::Disconnected)) => {
                let group = self.driver.profile().handle(&id);
                group
                    .map(|group| {
                        answer(Changed::Queued(Queued {
                            group,
                            queued: true,
                        }))
                    })
                    .map_err(Into::into)
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
    fn call(&mut self, call: Call, reply: Reply) {
        match self.dispatch(call) {
            Ok(When::Now(answer)) => {
                let _ = reply.send(Ok(answer));
            }
            Ok(Later(ticket, then)) => {
                self.waiting.insert(ticket, (then, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn dispatch(&mut self, call: Call) -> Result<When, RpcError> {
        let now = When::Now;
        Ok(match call {
            Call::Status {} => {
                let Some(Answer::Status(mut status)) = local(self.driver.profile(), &call)? else {
                    unreachable!("status is a local call");
                };
                status.link = Link {
                    connected: self.driver.offline().is_none(),
                    why: self.driver.offline().map(str::to_owned),
                };
                status.lanes = self.driver.core().stuck_lanes();
                now(Answer::Status(status))
            }
            Call::GroupCreate { name } => {
                now(Answer::Created(self.driver.core().create_group(&name)?))
            }
            Call::GroupAdd { group, who } => {
                self.online()?;
                let id = self.group(&group)?;
                let ticket = self.driver.core().add(&id, &who)?;
                Later(ticket, Then::Summary(id, Answer::Changed))
            }
            Call::GroupRemove { group, who } => {
                self.online()?;
                let id = self.group(&group)?;
                let ticket = self.driver.core().remove(&id, &who)?;
                Later(ticket, Then::Summary(id, Answer::Changed))
            }
            Call::GroupSet {
                group,
                name,
                topic,
                admin,
                not_admin,
            } => {
                self.online()?;
                let id = self.group(&group)?;
                let profile = self.driver.profile();
                let change = profile.settings_change(&id, name, topic, &admin, &not_admin)?;
                let ticket = self.driver.core().change(&id, Intent::Settings(change))?;
                Later(ticket, Then::Summary(id, Answer::SettingsChanged))
            }
            Call::GroupLeave { group } => {
                self.online()?;
                let id = self.group(&group)?;
                let ticket = self.driver.core().leave(&id)?;
                Later(ticket, Then::Posted(Answer::Leaving))
            }
            Call::GroupUpdate { group } => {
                self.online()?;
                let id = self.group(&group)?;
                let ticket = self.driver.core().change(&id, Intent::Update)?;
                Later(ticket, Then::Summary(id, Answer::Changed))
            }
            Call::Send { group, text } => {
                let id = self.group(&group)?;
                if self.driver.offline().is_some() {
                    // Offline, the text waits in the outbox and goes out on reconnection.
                    self.driver.profile().send_hosted(&id, &text)?;
                    now(Answer::Sent(Posted { posted: false }))
                } else {
                    let ticket = self.driver.core().send(&id, &text)?;
                    Later(ticket, Then::Posted(Answer::Sent))
                }
            }
            Call::RequestAccept { group } => {
                self.online()?;
                let since = self.driver.profile().latest_event()?;
                self.driver.profile().answer_request(&group, true)?;
                let ticket = self.driver.core().sync()?;
                Later(ticket, Then::Synced { since })
            }
            Call::RequestDecline { .. } => {
                let declined = local(self.driver.profile(), &call)?;
                // We join only to ask to leave, so that the inviter learns it: now, if we can.
                if self.driver.offline().is_none() {
                    self.driver.core().sync()?;
                }
                now(declined.expect("a local call"))
            }
            Call::Sync {} => {
                self.online()?;
                let since = self.driver.profile().latest_event()?;
                let ticket = self.driver.core().sync()?;
                Later(ticket, Then::Synced { since })
            }
            // A subscription is a connection's stream: its first events come from `events`.
            Call::Subscribe { after } => now(Answer::Subscribe(Subscribed { after })),
            call => now(local(self.driver.profile(), &call)?.expect("every other call is local")),
        })
    }

    /// How many history entries each group got since `since` (joins included).
    fn synced(&mut self, since: i64) -> Result<Answer, RpcError> {
        let new = self.driver.profile().new_by_group(since)?;
        Ok(Answer::Synced(Synced {
            synced: true,
            new: new
                .into_iter()
                .map(|(group, entries)| NewEntries { group, entries })
                .collect(),
        }))
    }

    /// The group our user names by `handle`: resolved here, once.
    fn group(&mut self, handle: &str) -> Result<GroupId, RpcError> {
        Ok(self.driver.profile().find_group(handle)?)
    }
}

/// When a call is answered: now, or when the core is done with its ticket.
enum When {
    Now(Answer),
    Later(Ticket, Then),
}
use When::Later;

/// A handle to a running actor, shared by the API connections.
#[derive(Clone)]
struct Handle {
    work: mpsc::Sender<Work>,
    latest_event: watch::Receiver<i64>,
}

impl Handle {
    async fn call(&self, call: Call) -> Result<Answer, RpcError> {
        let (reply, answer) = oneshot::channel();
        let gone = || RpcError {
            code: -32002,
            message: "the daemon is stopping".into(),
            kind: ErrorKind::Failure,
        };
        self.work
            .send(Work::Call { call, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Carries out one API call without a daemon: connects, calls, catches up, disconnects. This is
/// what the CLI does when no daemon runs; the answer is the same as the daemon's.
pub async fn call_once(profile: Profile, call: Call) -> (Profile, Result<Answer, RpcError>) {
    let (work, _unused) = mpsc::channel(1);
    let mut actor = Actor::new(profile, work, watch::channel(0).0);
    // Offline, the call answers as the daemon's would while it is offline.
    let _ = actor.driver.connect().await;
    let (reply, mut answer) = oneshot::channel();
    actor.call(call, reply);
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

/// The socket path of the daemon for the profile in `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET)
}
