//! The long-running node: keeps the connection to our delivery node (reconnecting with backoff),
//! applies its pushes, and serves a local JSON-RPC 2.0 API to front ends and bots, one JSON
//! object per line, on a Unix socket (mode 0600) and optionally on stdio.
//!
//! One task (the [`Actor`]) owns the profile; everything else sends it work. Events are the
//! profile's history rows, numbered and durable: `events` reads them after an id and `subscribe`
//! streams them from an id on, so a front end that reconnects resumes where it stopped and
//! loses nothing.
//!
//! Methods: `status`, `groups`, `members`, `history`, `events`, `subscribe`, `invite`,
//! `contacts`, `contact.add`, `group.create`, `group.add`, `group.remove`, `group.update`,
//! `send`, `sync`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

use mlschat_wire::Push;

use crate::online::{Online, OnlineError};
use crate::profile::{InviteCode, Profile, ProfileError};

/// The socket's file name in the profile directory.
pub const SOCKET: &str = "daemon.sock";

/// Reconnection backoff: from the first delay, doubling, up to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(15));
/// How often the mailbox is read even without a push (a push can be missed), and the stock of
/// our KeyPackages on the node checked.
const MAILBOX_POLL: Duration = Duration::from_secs(30);
/// Events sent per read while streaming a subscription.
const EVENT_BATCH: u32 = 500;

/// An error answer: a JSON-RPC code, a message for people, and a stable kind for programs.
#[derive(Debug)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub kind: &'static str,
    /// The connection to the delivery node is gone (go offline), as opposed to a refusal.
    pub disconnected: bool,
}

impl RpcError {
    fn invalid_params(e: impl std::fmt::Display) -> Self {
        Self {
            code: -32602,
            message: format!("invalid params: {e}"),
            kind: "invalid_input",
            disconnected: false,
        }
    }

    fn to_json(&self) -> Value {
        json!({"code": self.code, "message": self.message, "data": {"kind": self.kind}})
    }
}

impl From<OnlineError> for RpcError {
    fn from(e: OnlineError) -> Self {
        let kind = match &e {
            OnlineError::Profile(p) => profile_kind(p),
            OnlineError::Delivery(_) | OnlineError::Address(_) => "delivery",
            OnlineError::TooManyRaces(_) => "failure",
        };
        Self {
            code: -32000,
            message: e.to_string(),
            kind,
            disconnected: e.is_disconnect(),
        }
    }
}

impl From<ProfileError> for RpcError {
    fn from(e: ProfileError) -> Self {
        OnlineError::Profile(e).into()
    }
}

fn profile_kind(e: &ProfileError) -> &'static str {
    use crate::engine::EngineError as E;
    match e {
        ProfileError::UnknownGroup(_)
        | ProfileError::UnknownMember(_)
        | ProfileError::UnknownContact(_)
        | ProfileError::Ambiguous(..) => "unknown",
        ProfileError::Duplicate => "duplicate",
        ProfileError::ContactFlagged(..) => "flagged",
        ProfileError::NoHome => "delivery",
        ProfileError::NotOurGroup(_) => "not_for_us",
        ProfileError::WrongKind(_) => "invalid_input",
        ProfileError::Engine(E::WrongEpoch { .. }) => "wrong_epoch",
        ProfileError::Engine(E::NotForUs(_) | E::Inactive) => "not_for_us",
        ProfileError::Engine(E::Malformed(_) | E::Forged(_) | E::Invalid(_)) => "invalid_input",
        _ => "failure",
    }
}

/// A request the actor carries out.
enum Work {
    Call {
        method: String,
        params: Value,
        reply: oneshot::Sender<Result<Value, RpcError>>,
    },
    Push(Push),
    /// Connection number `n` closed; if it is the current one, go offline and try again later.
    Disconnected(u64),
    Reconnect,
    PollMailbox,
    Stop,
}

/// Where the profile is: connected, or waiting to reconnect.
enum Link {
    Online(Online),
    Offline(Profile, String),
}

impl Link {
    fn profile(&mut self) -> &mut Profile {
        match self {
            Link::Online(online) => online.profile(),
            Link::Offline(profile, _) => profile,
        }
    }
}

/// Owns the profile; carries out work one item at a time.
struct Actor {
    link: Option<Link>,
    work: mpsc::Sender<Work>,
    latest_event: watch::Sender<i64>,
    backoff: Duration,
    /// Numbers connections, so that the end of an old one is not taken for the current one's.
    connection: u64,
}

impl Actor {
    async fn run(mut self, mut queue: mpsc::Receiver<Work>) -> Profile {
        while let Some(work) = queue.recv().await {
            match work {
                Work::Call {
                    method,
                    params,
                    reply,
                } => {
                    let answer = self.call(&method, params).await;
                    let _ = reply.send(answer);
                }
                Work::Push(push) => {
                    if let Some(Link::Online(online)) = &mut self.link {
                        let result = online.handle_push(push).await;
                        self.after(result);
                    }
                }
                Work::Disconnected(n) if n == self.connection => {
                    self.go_offline("the connection closed".into())
                }
                Work::Disconnected(_) => {}
                Work::Reconnect => self.reconnect().await,
                Work::PollMailbox => {
                    if let Some(Link::Online(online)) = &mut self.link {
                        let result = match online.read_mailbox().await {
                            // Others claim our KeyPackages without telling us: check the stock.
                            Ok(_) => online.top_up_key_packages().await,
                            Err(e) => Err(e),
                        };
                        self.after(result);
                    }
                }
                Work::Stop => break,
            }
            self.publish_latest_event();
        }
        self.into_profile()
    }

    fn into_profile(mut self) -> Profile {
        match self.link.take().expect("the link is always put back") {
            Link::Online(online) => online.into_profile(),
            Link::Offline(profile, _) => profile,
        }
    }

    fn profile(&mut self) -> &mut Profile {
        self.link
            .as_mut()
            .expect("the link is always put back")
            .profile()
    }

    fn publish_latest_event(&mut self) {
        if let Ok(Some(latest)) = self
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

    /// Logs a failed background step; a lost connection takes us offline.
    fn after(&mut self, result: Result<(), OnlineError>) {
        if let Err(e) = result {
            if e.is_disconnect() {
                self.go_offline(e.to_string());
            } else {
                tracing::warn!(error = %e, "background step failed");
            }
        }
    }

    fn go_offline(&mut self, why: String) {
        let link = self.link.take().expect("the link is always put back");
        self.link = Some(match link {
            Link::Online(online) => {
                tracing::warn!(%why, "offline; reconnecting");
                self.schedule_reconnect();
                Link::Offline(online.into_profile(), why)
            }
            offline => offline,
        });
    }

    fn schedule_reconnect(&mut self) {
        let (work, delay) = (self.work.clone(), self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF.1);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = work.send(Work::Reconnect).await;
        });
    }

    async fn reconnect(&mut self) {
        let Some(Link::Offline(..)) = &self.link else {
            return;
        };
        let Some(Link::Offline(profile, _)) = self.link.take() else {
            unreachable!("checked above")
        };
        match Online::connect(profile).await {
            Ok(mut online) => {
                self.connection += 1;
                let started = online.start().await;
                spawn_push_reader(&online, self.connection, self.work.clone());
                self.link = Some(Link::Online(online));
                self.backoff = BACKOFF.0;
                tracing::info!("connected to the delivery node");
                self.after(started);
            }
            Err((profile, e)) => {
                self.link = Some(Link::Offline(profile, e.to_string()));
                if !matches!(e, OnlineError::Profile(ProfileError::NoHome)) {
                    self.schedule_reconnect();
                }
            }
        }
    }

    /// Runs a network operation when online; offline, it fails with the reason.
    fn online(&mut self) -> Result<&mut Online, RpcError> {
        match self.link.as_mut().expect("the link is always put back") {
            Link::Online(online) => Ok(online),
            Link::Offline(_, why) => Err(RpcError {
                code: -32001,
                message: format!("not connected to the delivery node ({why}); retrying"),
                kind: "delivery",
                disconnected: false,
            }),
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Result<Value, RpcError> {
        let result = self.dispatch(method, params).await;
        if let Err(e) = &result
            && e.disconnected
            && let Some(Link::Online(_)) = &self.link
        {
            self.go_offline(e.message.clone());
        }
        result
    }

    async fn dispatch(&mut self, method: &str, params: Value) -> Result<Value, RpcError> {
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
        fn default_limit() -> u32 {
            100
        }
        Ok(match method {
            "status" => {
                let link = match self.link.as_ref().expect("the link is always put back") {
                    Link::Online(_) => json!({"connected": true}),
                    Link::Offline(_, why) => json!({"connected": false, "why": why}),
                };
                let profile = self.profile();
                let identity = profile.identity();
                json!({
                    "name": identity.name.to_string(),
                    "fingerprint": identity.fingerprint().to_hex(),
                    "home": profile.home()?.map(|h| h.address),
                    "link": link,
                })
            }
            "groups" => value(&self.profile().groups()?),
            "members" => {
                let Group { group } = p(params)?;
                let members: Vec<Value> = self
                    .profile()
                    .members(&group)?
                    .iter()
                    .map(|m| {
                        json!({
                            "leaf": m.leaf_index,
                            "name": m.name.as_ref().map(|n| n.to_string()),
                            "fingerprint": m.fingerprint.to_hex(),
                        })
                    })
                    .collect();
                json!(members)
            }
            "history" => {
                let History { group, limit } = p(params)?;
                value(&self.profile().history(&group, limit)?)
            }
            "events" => {
                let After { after, limit } = p(params)?;
                value(&self.profile().events_after(after, limit)?)
            }
            "invite" => json!({"code": self.profile().invite_code()?.to_string()}),
            "contacts" => value(&self.profile().contacts()?),
            "contact.add" => {
                let Code { code } = p(params)?;
                let code: InviteCode = code.parse()?;
                value(&self.profile().add_contact(&code)?)
            }
            "group.create" => {
                let Name { name } = p(params)?;
                value(&self.online()?.create_group(&name).await?)
            }
            "group.add" => {
                let Who { group, who } = p(params)?;
                self.online()?.add(&group, &who).await?;
                self.summary(&group)?
            }
            "group.remove" => {
                let Who { group, who } = p(params)?;
                self.online()?.remove(&group, &who).await?;
                self.summary(&group)?
            }
            "group.update" => {
                let Group { group } = p(params)?;
                self.online()?.update(&group).await?;
                self.summary(&group)?
            }
            "send" => {
                let Text { group, text } = p(params)?;
                match &mut self.link {
                    Some(Link::Online(online)) => {
                        let posted = online.send(&group, &text).await?;
                        if !posted {
                            self.go_offline("the connection dropped while sending".into());
                        }
                        json!({"posted": posted})
                    }
                    // Offline, the text waits in the outbox and goes out on reconnection.
                    _ => {
                        if self.profile().needs_refresh(&group)? {
                            self.online()?;
                        }
                        self.profile().send_hosted(&group, &text)?;
                        json!({"posted": false})
                    }
                }
            }
            "sync" => {
                let online = self.online()?;
                online.top_up_key_packages().await?;
                online.catch_up().await?;
                json!({"synced": true})
            }
            _ => {
                return Err(RpcError {
                    code: -32601,
                    message: format!("no method {method:?}"),
                    kind: "invalid_input",
                    disconnected: false,
                });
            }
        })
    }

    fn summary(&mut self, group: &str) -> Result<Value, RpcError> {
        let groups = self.profile().groups()?;
        let id = self.profile().find_group(group)?;
        let id = hex::encode(id.as_slice());
        Ok(json!(groups.into_iter().find(|g| g.id == id)))
    }
}

/// The JSON of a report; reports always serialise.
fn value(report: impl serde::Serialize) -> Value {
    serde_json::to_value(report).unwrap_or(Value::Null)
}

fn spawn_push_reader(online: &Online, number: u64, work: mpsc::Sender<Work>) {
    let connection = online.connection().clone();
    tokio::spawn(async move {
        loop {
            match connection.next_push().await {
                Ok(push) => {
                    if work.send(Work::Push(push)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "push stream ended");
                    let _ = work.send(Work::Disconnected(number)).await;
                    return;
                }
            }
        }
    });
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
            kind: "failure",
            disconnected: false,
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

/// Carries out one API call without a daemon: connects, catches up, calls, disconnects. This is
/// what the CLI does when no daemon runs; the answer is the same as the daemon's.
pub async fn call_once(
    profile: Profile,
    method: &str,
    params: Value,
) -> (Profile, Result<Value, RpcError>) {
    let (work, _unused) = mpsc::channel(1);
    let mut actor = Actor {
        link: Some(Link::Offline(profile, "not connected".into())),
        work,
        latest_event: watch::channel(0).0,
        backoff: BACKOFF.0,
        connection: 0,
    };
    actor.reconnect().await;
    let result = actor.call(method, params).await;
    (actor.into_profile(), result)
}

/// Runs the daemon for `profile` until `shutdown` completes: the API on `socket` (and on
/// stdin/stdout if `stdio`), the connection to the delivery node. Returns the profile.
pub async fn run(
    profile: Profile,
    socket: &Path,
    stdio: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<Profile> {
    let listener = bind(socket)?;
    let (work, queue) = mpsc::channel(256);
    let (latest_event, latest_rx) = watch::channel(0);
    let actor = Actor {
        link: Some(Link::Offline(profile, "starting".into())),
        work: work.clone(),
        latest_event,
        backoff: BACKOFF.0,
        connection: 0,
    };
    work.send(Work::Reconnect).await.ok();
    let handle = Handle {
        work: work.clone(),
        latest_event: latest_rx,
    };
    let poll = {
        let work = work.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(MAILBOX_POLL).await;
                if work.send(Work::PollMailbox).await.is_err() {
                    return;
                }
            }
        })
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
        poll.abort();
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

/// Serves one API connection: a JSON-RPC request per line in, responses and notifications out.
async fn serve_lines(
    handle: Handle,
    read: impl tokio::io::AsyncRead + Unpin,
    write: impl AsyncWrite + Unpin + Send + 'static,
) {
    let (out, lines_out) = mpsc::channel::<String>(1024);
    let writer = tokio::spawn(write_lines(write, lines_out));
    let mut lines = BufReader::new(read).lines();
    let mut subscription: Option<tokio::task::JoinHandle<()>> = None;
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        let request: Value = match serde_json::from_str(&line) {
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
        Refused { kind: String, message: String },
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
            let id = self.next_id;
            self.next_id += 1;
            let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            self.write
                .write_all(format!("{request}\n").as_bytes())
                .await?;
            loop {
                let answer = self.next().await?;
                if answer.get("id").and_then(Value::as_u64) != Some(id) {
                    continue;
                }
                if let Some(error) = answer.get("error") {
                    let text = |k: &str| {
                        error
                            .pointer(k)
                            .and_then(Value::as_str)
                            .unwrap_or("failure")
                            .to_owned()
                    };
                    return Err(CallError::Refused {
                        kind: text("/data/kind"),
                        message: text("/message"),
                    });
                }
                return Ok(answer.get("result").cloned().unwrap_or(Value::Null));
            }
        }

        /// The next line from the daemon: an answer or a notification.
        pub async fn next(&mut self) -> Result<Value, CallError> {
            let line = self.lines.next_line().await?.ok_or(CallError::Closed)?;
            serde_json::from_str(&line).map_err(|e| CallError::Io(std::io::Error::other(e)))
        }
    }
}
