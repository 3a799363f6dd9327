//! The QUIC server: one task per connection, one per request stream. A request is read with its
//! size checked from the header, handled against the database, and answered on its stream.
//! Failures become wire error codes in one place ([`Failure`]), which logs internal detail and
//! sends only a short text.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mlschat_keypackages::{ClaimError, ClaimLimits, Directory, KeyPackage};
use mlschat_wire::auth::{EXPORTER_LABEL, EXPORTER_LEN, Purpose};
use mlschat_wire::frame::{self, FrameError, HEADER_LEN, Header};
use mlschat_wire::token::token_hash;
use mlschat_wire::{
    ClaimAnswer, ClaimLogEntry, ClientId, EntryKind, ErrorCode, ErrorResponse, Flag, GroupEntry,
    MAX_CLAIMS, MailboxEntry, Push, Request, Response,
};
use openmls::prelude::{KeyPackageIn, MlsMessageBodyIn, MlsMessageIn, ProtocolVersion};
use openmls_rust_crypto::RustCrypto;
use tls_codec::Deserialize as _;
use tokio::sync::{Mutex, Notify, Semaphore, mpsc};
use tracing::Instrument;

use crate::announce::{Announcement, Announcer};
use crate::appender::Appender;
use crate::guard::{Guard, GuardConfig, Refusal};
use crate::storage::{
    Database, Entry, GroupLog, NewCommit, NewMessage, Page, Refused, StorageError, Welcome,
    post_key,
};
use crate::unix_now;
use mlschat_grouplog::parse_welcome;
use mlschat_wire::session::{Authenticated, Session};

/// Who may register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    Open,
    /// Only with an unused invite token issued by the operator (admin HTTP).
    Invite,
}

/// The node's behaviour, as configured.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The largest request body accepted.
    pub max_frame: u32,
    pub registration: Registration,
    /// Claims per claimer, one-time packages per owner, claims per claimer of one owner.
    pub claims: ClaimLimits,
    /// The most entries one fetch returns.
    pub max_fetch: u32,
    /// The most bytes one fetch returns, past its first entry.
    pub max_fetch_bytes: u64,
    /// The largest application message (or proposal) accepted.
    pub max_message: u32,
    /// The most Welcomes a client's mailbox holds.
    pub mailbox_quota: u64,
    /// Batches of posts written at once (posts to one group always go to the same writer).
    pub writers: usize,
    /// How long a request may take to arrive whole (and to find room in its connection's
    /// budget): a stalled stream is answered `timeout` and its memory released.
    pub request_timeout: Duration,
    /// Bytes of request bodies one connection may have arrived and not yet handled: a client
    /// cannot make the node hold more for it by opening many streams.
    pub connection_budget: u32,
    /// The same for all connections together (bodies over 64 KiB only).
    pub memory_budget: u32,
    /// How long a connection may take to complete its handshake, and then to authenticate.
    pub handshake_timeout: Duration,
    /// Connection counts and per-client rates.
    pub guard: GuardConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            max_frame: mlschat_wire::MAX_FRAME,
            registration: Registration::Open,
            claims: ClaimLimits::default(),
            max_fetch: 1000,
            max_fetch_bytes: 8 * 1024 * 1024,
            max_message: 1024 * 1024,
            mailbox_quota: 10_000,
            writers: 2,
            request_timeout: Duration::from_secs(30),
            connection_budget: 2 * mlschat_wire::MAX_FRAME,
            memory_budget: 16 * mlschat_wire::MAX_FRAME,
            handshake_timeout: Duration::from_secs(10),
            guard: GuardConfig::default(),
        }
    }
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct Node {
    db: Database,
    appender: Appender,
    /// Tells other node processes on the same Postgres what this one committed.
    announcer: Announcer,
    directory: Directory<Database>,
    config: NodeConfig,
    crypto: RustCrypto,
    started: Instant,
    metrics: Metrics,
    guard: Arc<Guard>,
    /// Room for request bodies over [`SMALL_BODY`], all connections together.
    memory: Semaphore,
    /// Set on shutdown: new requests are refused with `unavailable`.
    draining: AtomicBool,
    /// Wakes requests still arriving when a drain starts: they are answered `unavailable`.
    drain_started: Notify,
    /// Requests being handled, so a drain can wait for them.
    in_flight: AtomicUsize,
    idle: Notify,
    /// Connections subscribed to each group, by their push queues.
    subscribers: std::sync::Mutex<HashMap<Vec<u8>, Vec<mpsc::Sender<Push>>>>,
    /// Authenticated connections of each client, by their push queues: new mailbox entries.
    mailboxes: std::sync::Mutex<HashMap<ClientId, Vec<mpsc::Sender<Push>>>>,
}

/// The largest request body from a connection that has not authenticated yet.
const PRE_AUTH_MAX_FRAME: u32 = 4096;

/// Request bodies up to this size take no room in the node-wide memory budget (they still do
/// in their connection's): however the budget is held, ordinary requests go through.
const SMALL_BODY: usize = 64 * 1024;

/// Where a request comes from: its connection's address and session.
struct Caller {
    address: IpAddr,
    session: Arc<Mutex<Session>>,
}

/// Pushes waiting for a slow connection; beyond this they are dropped, and the client, seeing a
/// gap in sequence numbers, fetches what it missed.
const PUSH_QUEUE: usize = 1024;

/// Prometheus metrics. Labels are bounded: request kind and result code, never ids.
#[derive(Debug)]
struct Metrics {
    registry: prometheus::Registry,
    requests: prometheus::IntCounterVec,
    latency: prometheus::HistogramVec,
    connections: prometheus::IntGauge,
    stored_bytes: prometheus::IntGauge,
    key_packages: prometheus::IntGauge,
    /// Welcomes of accepted commits that were not delivered (a full mailbox, or a second
    /// waiting Welcome from one last-resort claim).
    undelivered_welcomes: prometheus::IntCounter,
}

impl Metrics {
    fn new(guard: Vec<Box<dyn prometheus::core::Collector>>) -> Self {
        let registry = prometheus::Registry::new();
        let requests = prometheus::IntCounterVec::new(
            prometheus::Opts::new("mlschat_requests_total", "Requests by kind and result"),
            &["kind", "result"],
        )
        .expect("valid metric");
        let latency = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new("mlschat_request_seconds", "Request latency by kind")
                .buckets(prometheus::exponential_buckets(0.0001, 2.0, 18).expect("valid buckets")),
            &["kind"],
        )
        .expect("valid metric");
        let connections = prometheus::IntGauge::new("mlschat_connections", "Open QUIC connections")
            .expect("valid metric");
        let gauge =
            |name: &str, help: &str| prometheus::IntGauge::new(name, help).expect("valid metric");
        let stored_bytes = gauge(
            "mlschat_stored_bytes",
            "Bytes the database holds (Postgres database size, or SQLite file pages)",
        );
        let key_packages = gauge(
            "mlschat_key_packages",
            "Unexpired one-time KeyPackages in stock, all owners",
        );
        let undelivered_welcomes = prometheus::IntCounter::new(
            "mlschat_undelivered_welcomes_total",
            "Welcomes of accepted commits left out: a full mailbox, or one waiting already from \
             the same last-resort claim",
        )
        .expect("valid metric");
        for metric in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(undelivered_welcomes.clone()),
            Box::new(latency.clone()),
            Box::new(connections.clone()),
            Box::new(stored_bytes.clone()),
            Box::new(key_packages.clone()),
        ]
        .into_iter()
        .chain(guard)
        {
            registry.register(metric).expect("unique metric names");
        }
        Self {
            registry,
            requests,
            latency,
            connections,
            stored_bytes,
            key_packages,
            undelivered_welcomes,
        }
    }
}

/// The metric label of a request: its kind, one of a fixed set.
fn kind(request: &Request) -> &'static str {
    match request {
        Request::Challenge => "challenge",
        Request::Register(_) => "register",
        Request::Authenticate(_) => "authenticate",
        Request::PublishKeyPackages(_) => "publish_key_packages",
        Request::ClaimKeyPackage { .. } => "claim_key_package",
        Request::ClaimKeyPackages { .. } => "claim_key_packages",
        Request::KeyPackageStock => "key_package_stock",
        Request::ClaimLog { .. } => "claim_log",
        Request::CreateGroup(_) => "create_group",
        Request::PostCommit(_) => "post_commit",
        Request::PostMessage(_) => "post_message",
        Request::FetchGroup(_) => "fetch_group",
        Request::FetchTree(_) => "fetch_tree",
        Request::Subscribe(_) => "subscribe",
        Request::PostNotice(_) => "post_notice",
        Request::FetchMailbox { .. } => "fetch_mailbox",
        Request::AckMailbox { .. } => "ack_mailbox",
    }
}

/// A request that ends in an error response.
#[derive(Debug)]
struct Failure {
    code: ErrorCode,
    current_epoch: u64,
    detail: String,
}

impl Failure {
    fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            current_epoch: 0,
            detail: detail.into(),
        }
    }

    fn response(self) -> Response {
        Response::Error(self.error())
    }

    fn error(self) -> ErrorResponse {
        ErrorResponse {
            code: self.code,
            current_epoch: self.current_epoch,
            detail: self.detail.into_bytes().into(),
        }
    }
}

impl From<ErrorCode> for Failure {
    fn from(code: ErrorCode) -> Self {
        Failure::new(code, format!("{code:?}"))
    }
}

impl From<StorageError> for Failure {
    /// The only place a storage failure becomes a wire error: logged here, not sent.
    fn from(e: StorageError) -> Self {
        tracing::error!(error = %e, "storage failure");
        Failure::new(ErrorCode::Internal, "internal error")
    }
}

impl From<mlschat_keypackages::StoreError> for Failure {
    fn from(e: mlschat_keypackages::StoreError) -> Self {
        tracing::error!(error = %e, "KeyPackage store failure");
        Failure::new(ErrorCode::Internal, "internal error")
    }
}

impl From<Refused> for Failure {
    fn from(r: Refused) -> Self {
        match r {
            Refused::UnknownGroup => Failure::new(ErrorCode::UnknownGroup, "no such group"),
            Refused::GroupExists => Failure::new(ErrorCode::GroupExists, "group exists"),
            Refused::BadToken => Failure::new(ErrorCode::BadToken, "token does not match"),
            Refused::NotClaimed => Failure::new(
                ErrorCode::Forbidden,
                "a Welcome for a client whose KeyPackage you did not claim",
            ),
            Refused::StaleEpoch { current } => Failure {
                code: ErrorCode::StaleEpoch,
                current_epoch: current,
                detail: format!("group is at epoch {current}"),
            },
        }
    }
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        let detail = match r {
            Refusal::ConnectionsPerAddress | Refusal::Connections => "too many connections",
            Refusal::Requests => "too many requests; slow down",
            Refusal::Bytes => "you wrote more than your quota allows for now; wait",
            Refusal::Groups => "you created more groups than your quota allows for now; wait",
            Refusal::Registrations => "too many registrations from your address; wait",
            Refusal::NodeRegistrations => "the node takes too many registrations now; wait",
            Refusal::Unauthenticated => "authenticate first",
        };
        Failure::new(r.code(), detail)
    }
}

impl From<FrameError> for Failure {
    fn from(e: FrameError) -> Self {
        let code = match e {
            FrameError::TooLarge { .. } => ErrorCode::TooLarge,
            FrameError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            FrameError::Truncated | FrameError::Malformed(_) => ErrorCode::Malformed,
        };
        Failure::new(code, e.to_string())
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Writes a connection's pushes, one unidirectional stream each, until it closes.
async fn write_pushes(connection: quinn::Connection, mut queue: mpsc::Receiver<Push>) {
    while let Some(push) = queue.recv().await {
        let Ok(bytes) = frame::encode(&push) else {
            continue;
        };
        let Ok(mut stream) = connection.open_uni().await else {
            break;
        };
        if stream.write_all(&bytes).await.is_err() || stream.finish().is_err() {
            break;
        }
    }
}

/// Accepts connections until the endpoint is closed: each within the connection limits, and
/// only if its handshake completes in time.
pub async fn serve(endpoint: quinn::Endpoint, node: Arc<Node>) {
    while let Some(incoming) = endpoint.accept().await {
        let address = incoming.remote_address();
        let slot = match node.guard.admit(address.ip()) {
            Ok(slot) => slot,
            Err(_) => {
                incoming.refuse();
                continue;
            }
        };
        let node = node.clone();
        tokio::spawn(async move {
            let handshake = match incoming.accept() {
                Ok(connecting) => tokio::time::timeout(node.config.handshake_timeout, connecting),
                Err(e) => return tracing::debug!(error = %e, "handshake failed"),
            };
            match handshake.await {
                Ok(Ok(connection)) => {
                    let span = tracing::info_span!("connection", remote = %address);
                    node.connection(connection).instrument(span).await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "handshake failed"),
                Err(_) => tracing::debug!(%address, "handshake timed out"),
            }
            drop(slot);
        });
    }
}

impl Node {
    pub fn new(db: Database, config: NodeConfig) -> Self {
        let announcer = Announcer::new(db.clone());
        let guard = Arc::new(Guard::new(config.guard.clone()));
        Self {
            metrics: Metrics::new(guard.metrics()),
            memory: Semaphore::new(config.memory_budget as usize),
            guard,
            drain_started: Notify::new(),
            directory: Directory::new(db.clone(), config.claims),
            // Posts to different groups commit in parallel; SQLite has one writer anyway,
            // where they simply take turns.
            appender: Appender::start(db.clone(), config.writers, 256, announcer.clone()),
            announcer,
            db,
            config,
            crypto: RustCrypto::default(),
            started: Instant::now(),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            subscribers: std::sync::Mutex::new(HashMap::new()),
            mailboxes: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// A fetch's page: what the client asked for, within the node's limits.
    fn page(&self, asked: u32) -> Page {
        Page {
            entries: asked.min(self.config.max_fetch),
            bytes: self.config.max_fetch_bytes,
        }
    }

    /// Hands a new log entry to every connection subscribed to its group. Pushes are sent after
    /// the entry is committed; they may arrive out of order, and clients order them by `seq`.
    fn publish(&self, group_id: &[u8], entry: GroupEntry) {
        let Ok(mut subscribers) = self.subscribers.lock() else {
            return;
        };
        let Some(queues) = subscribers.get_mut(group_id) else {
            return;
        };
        queues.retain(|queue| {
            let push = Push::Group {
                group_id: group_id.into(),
                entry: entry.clone(),
            };
            !matches!(
                queue.try_send(push),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        });
        if queues.is_empty() {
            subscribers.remove(group_id);
        }
    }

    /// This process's id in announcements.
    pub fn origin(&self) -> u64 {
        self.announcer.origin()
    }

    /// Pushes what another node process committed to this one's connections that wait for it.
    pub async fn push_announced(&self, write: Announcement) {
        let pushed = match write {
            Announcement::Log {
                group_id,
                first,
                last,
            } => self.push_announced_log(&group_id, first, last).await,
            Announcement::Mailbox { owner, id } => self.push_announced_welcome(&owner, id).await,
        };
        if let Err(e) = pushed {
            tracing::warn!(error = %e, "reading what another node process announced");
        }
    }

    async fn push_announced_log(
        &self,
        group_id: &[u8],
        first: u64,
        last: u64,
    ) -> Result<(), StorageError> {
        if !self
            .subscribers
            .lock()
            .is_ok_and(|s| s.contains_key(group_id))
        {
            return Ok(());
        }
        let count = u32::try_from(last.saturating_sub(first) + 1).unwrap_or(u32::MAX);
        for entry in self
            .db
            .log_after(group_id, first.saturating_sub(1), count)
            .await?
        {
            self.publish(group_id, group_entry(entry));
        }
        Ok(())
    }

    async fn push_announced_welcome(&self, owner: &ClientId, id: u64) -> Result<(), StorageError> {
        if !self.mailboxes.lock().is_ok_and(|m| m.contains_key(owner)) {
            return Ok(());
        }
        let entries = self
            .db
            .fetch_mailbox(owner, id.saturating_sub(1), Page::from(1))
            .await?;
        for entry in entries.into_iter().filter(|e| e.id == id) {
            self.deliver_to_mailbox(owner, mailbox_entry(entry));
        }
        Ok(())
    }

    /// Hands a new mailbox entry to the owner's connections.
    fn deliver_to_mailbox(&self, owner: &ClientId, entry: MailboxEntry) {
        let Ok(mut mailboxes) = self.mailboxes.lock() else {
            return;
        };
        let Some(queues) = mailboxes.get_mut(owner) else {
            return;
        };
        queues.retain(|queue| {
            !matches!(
                queue.try_send(Push::Mailbox(entry.clone())),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        });
        if queues.is_empty() {
            mailboxes.remove(owner);
        }
    }

    /// Sends this connection the pushes of `client`'s mailbox from now on.
    fn watch_mailbox(&self, client: ClientId, pushes: &mpsc::Sender<Push>) {
        if let Ok(mut mailboxes) = self.mailboxes.lock() {
            let queues = mailboxes.entry(client).or_default();
            queues.retain(|q| !q.is_closed());
            if !queues.iter().any(|q| q.same_channel(pushes)) {
                queues.push(pushes.clone());
            }
        }
    }

    /// Refreshes the gauges that need a query (stored bytes, KeyPackage stock).
    pub async fn refresh_totals(&self) -> Result<(), StorageError> {
        let totals = self.db.totals(unix_now()).await?;
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.stored_bytes.set(gauge(totals.stored_bytes));
        self.metrics.key_packages.set(gauge(totals.key_packages));
        Ok(())
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Refuses new requests from now on and waits until those in flight are answered.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.drain_started.notify_waiters();
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            let notified = self.idle.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                break;
            }
            notified.await;
        }
    }

    /// The metrics in Prometheus's text format.
    pub fn metrics_text(&self) -> String {
        let families = self.metrics.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_default()
    }

    async fn connection(self: Arc<Self>, connection: quinn::Connection) {
        let mut exporter = [0u8; EXPORTER_LEN];
        if connection
            .export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
            .is_err()
        {
            connection.close(1u32.into(), b"no TLS exporter");
            return;
        }
        let address = connection.remote_address().ip();
        let session = Arc::new(Mutex::new(Session::default()));
        let budget = Arc::new(Semaphore::new(self.config.connection_budget as usize));
        self.metrics.connections.inc();
        let (pushes, queue) = mpsc::channel(PUSH_QUEUE);
        tokio::spawn(write_pushes(connection.clone(), queue).in_current_span());
        tokio::spawn(
            self.clone()
                .authenticate_in_time(connection.clone(), session.clone()),
        );
        while let Ok((send, recv)) = connection.accept_bi().await {
            let (node, session, pushes) = (self.clone(), session.clone(), pushes.clone());
            let budget = budget.clone();
            let stream = async move {
                let caller = Caller { address, session };
                node.stream(caller, exporter, pushes, &budget, send, recv)
                    .await
            };
            tokio::spawn(stream.in_current_span());
        }
        self.metrics.connections.dec();
    }

    /// Closes the connection if it has not authenticated within the handshake timeout: an
    /// anonymous connection costs the node a slot and must not hold it.
    async fn authenticate_in_time(
        self: Arc<Self>,
        connection: quinn::Connection,
        session: Arc<Mutex<Session>>,
    ) {
        tokio::select! {
            _ = tokio::time::sleep(self.config.handshake_timeout) => {}
            _ = connection.closed() => return,
        }
        if session.lock().await.client().is_err() {
            let reason = self.guard.refused(Refusal::Unauthenticated);
            connection.close((reason.code() as u16).into(), b"authenticate first");
        }
    }

    async fn stream(
        &self,
        caller: Caller,
        exporter: [u8; EXPORTER_LEN],
        pushes: mpsc::Sender<Push>,
        budget: &Semaphore,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let client = caller.session.lock().await.client().ok().map(|c| c.id);
        // Before authentication only the small auth requests are allowed, so a stranger cannot
        // make the node allocate a large frame.
        let limit = match client {
            Some(_) => self.config.max_frame,
            None => PRE_AUTH_MAX_FRAME,
        };
        let read = tokio::time::timeout(
            self.config.request_timeout,
            self.read_request(&mut recv, limit, budget, client.as_ref(), caller.address),
        );
        // A drain does not wait for requests still arriving: they are refused at once.
        let drain = self.drain_started.notified();
        let read = tokio::select! {
            read = read => read.unwrap_or_else(|_| {
                Err(Failure::new(ErrorCode::Timeout, "the request did not arrive in time"))
            }),
            _ = drain => Err(Failure::new(ErrorCode::Unavailable, "the node is shutting down")),
        };
        let (kind, result) = match read {
            Ok(_) if self.is_draining() => (
                "any",
                Err(Failure::new(
                    ErrorCode::Unavailable,
                    "the node is shutting down",
                )),
            ),
            Ok((request, size)) => (
                kind(&request),
                async {
                    self.guard.request(client.as_ref(), caller.address)?;
                    self.handle(request, size, &caller, &exporter, &pushes)
                        .await
                }
                .await,
            ),
            Err(failure) => ("unreadable", Err(failure)),
        };
        let label = match &result {
            Ok(_) => "ok".to_owned(),
            Err(f) => format!("{:?}", f.code),
        };
        self.metrics
            .requests
            .with_label_values(&[kind, &label])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
        let response = result.unwrap_or_else(Failure::response);
        match frame::encode(&response) {
            Ok(bytes) => {
                let _ = send.write_all(&bytes).await;
                let _ = send.finish();
            }
            Err(e) => tracing::error!(error = %e, "response could not be encoded"),
        }
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Reads one request frame and its body's size: the header first (the body must be within
    /// `limit`), then the body as its bytes arrive, each chunk taking room in the connection's
    /// budget and, past [`SMALL_BODY`], in its client's and address's shares of the node's
    /// budget and in the node's (held until the body is decoded). A stream that declares much and sends little
    /// holds little: room is taken for bytes that came, never for bytes promised.
    async fn read_request(
        &self,
        recv: &mut quinn::RecvStream,
        limit: u32,
        budget: &Semaphore,
        client: Option<&ClientId>,
        address: IpAddr,
    ) -> Result<(Request, usize), Failure> {
        let truncated = || Failure::from(FrameError::Truncated);
        let mut header = [0u8; HEADER_LEN];
        recv.read_exact(&mut header)
            .await
            .map_err(|_| truncated())?;
        let header = Header::parse(&header, limit)?;
        let length = header.length as usize;
        let closing = |_| Failure::new(ErrorCode::Unavailable, "the connection is closing");
        // Small requests (nearly all) never wait for the node's budget, whoever holds it.
        let node_wide = length > SMALL_BODY;
        // Big bodies come only from authenticated clients (PRE_AUTH_MAX_FRAME is small).
        let shares = match client {
            Some(client) if node_wide => Some(self.guard.body_shares(client, address)),
            _ => None,
        };
        let mut body = Vec::with_capacity(length.min(SMALL_BODY));
        let mut room = Vec::new();
        while body.len() < length {
            let wanted = length - body.len();
            let chunk = recv
                .read_chunk(wanted, true)
                .await
                .map_err(|_| truncated())?
                .ok_or_else(truncated)?;
            let size = chunk.bytes.len() as u32;
            room.push(budget.acquire_many(size).await.map_err(closing)?);
            if node_wide {
                // Always in this order (connection, client, address, node): no cycle to wait in.
                for share in shares.iter().flatten() {
                    room.push(share.acquire_many(size).await.map_err(closing)?);
                }
                room.push(self.memory.acquire_many(size).await.map_err(closing)?);
            }
            body.extend_from_slice(&chunk.bytes);
        }
        // Nothing may follow the frame on a request stream.
        let mut probe = [0u8; 1];
        if let Ok(Some(_)) = recv.read(&mut probe).await {
            return Err(FrameError::Malformed("bytes after the request".into()).into());
        }
        Ok((frame::decode_body(&body)?, body.len()))
    }

    async fn handle(
        &self,
        request: Request,
        size: usize,
        caller: &Caller,
        exporter: &[u8],
        pushes: &mpsc::Sender<Push>,
    ) -> Result<Response, Failure> {
        let session = &caller.session;
        let client = match request {
            Request::Challenge => {
                let mut nonce = [0u8; 32];
                getrandom::fill(&mut nonce)
                    .map_err(|_| Failure::new(ErrorCode::Internal, "no randomness"))?;
                let nonce = session.lock().await.challenge(nonce);
                return Ok(Response::Challenge { nonce });
            }
            Request::Register(r) => {
                let who = session.lock().await.prove(
                    Purpose::Register,
                    exporter,
                    r.signature_key.as_slice(),
                    r.invite.as_slice(),
                    r.signature.as_slice(),
                )?;
                // The signature is checked first, so nobody burns invites without a key.
                self.guard.register(caller.address)?;
                if self.config.registration == Registration::Invite {
                    let invite = sha256(r.invite.as_slice());
                    if !self.db.use_invite(&invite).await? {
                        return Err(Failure::new(ErrorCode::InviteRequired, "invite required"));
                    }
                }
                self.db.register_client(&who.id, &who.signature_key).await?;
                return Ok(self.authenticated(session, who, pushes).await);
            }
            Request::Authenticate(a) => {
                let who = session.lock().await.prove(
                    Purpose::Authenticate,
                    exporter,
                    a.signature_key.as_slice(),
                    b"",
                    a.signature.as_slice(),
                )?;
                if self.db.client_key(&who.id).await?.is_none() {
                    return Err(Failure::new(ErrorCode::UnknownClient, "not registered"));
                }
                return Ok(self.authenticated(session, who, pushes).await);
            }
            _ => session.lock().await.client()?.clone(),
        };
        if matches!(
            request,
            Request::PostCommit(_)
                | Request::PostMessage(_)
                | Request::PostNotice(_)
                | Request::PublishKeyPackages(_)
        ) {
            self.guard.write(&client.id, size)?;
        }
        self.handle_authenticated(request, &client, pushes).await
    }

    /// The connection is now `who`'s, and gets the pushes of its mailbox.
    async fn authenticated(
        &self,
        session: &Mutex<Session>,
        who: Authenticated,
        pushes: &mpsc::Sender<Push>,
    ) -> Response {
        let client = who.id;
        self.watch_mailbox(client, pushes);
        session.lock().await.authenticated(who);
        Response::Authenticated { client }
    }

    async fn handle_authenticated(
        &self,
        request: Request,
        client: &Authenticated,
        pushes: &mpsc::Sender<Push>,
    ) -> Result<Response, Failure> {
        let now = unix_now();
        Ok(match request {
            Request::Challenge | Request::Register(_) | Request::Authenticate(_) => {
                unreachable!("handled before authentication")
            }
            Request::PublishKeyPackages(p) => {
                let one_time = p
                    .one_time
                    .iter()
                    .map(|kp| self.own_key_package(kp.as_slice(), client, false))
                    .collect::<Result<Vec<_>, _>>()?;
                let last_resort = if p.last_resort.as_slice().is_empty() {
                    None
                } else {
                    Some(self.own_key_package(p.last_resort.as_slice(), client, true)?)
                };
                self.directory
                    .publish(&client.id, one_time, last_resort)
                    .await?;
                Response::Ok
            }
            Request::ClaimKeyPackage { owner } => Response::KeyPackage {
                key_package: self.claim(&owner, client, now).await?.into(),
            },
            Request::ClaimKeyPackages { owners } => {
                if owners.len() > MAX_CLAIMS {
                    let detail = format!("at most {MAX_CLAIMS} owners in one claim");
                    return Err(Failure::new(ErrorCode::TooLarge, detail));
                }
                let mut claims = Vec::with_capacity(owners.len());
                for owner in &owners {
                    claims.push(match self.claim(owner, client, now).await {
                        Ok(key_package) => ClaimAnswer::KeyPackage(key_package.into()),
                        Err(failure) => ClaimAnswer::Refused(failure.error()),
                    });
                }
                Response::KeyPackages { claims }
            }
            Request::KeyPackageStock => {
                let stock = self.directory.stock(&client.id, now).await?;
                Response::KeyPackageStock {
                    one_time: stock.one_time,
                    last_resort: Flag::from(stock.last_resort),
                }
            }
            Request::ClaimLog { after } => {
                let log = self
                    .directory
                    .claim_log(&client.id, after, self.config.max_fetch)
                    .await?;
                Response::ClaimLog {
                    entries: log
                        .into_iter()
                        .map(|r| ClaimLogEntry {
                            seq: r.seq,
                            claimer: r.claimer,
                            at: r.at,
                            last_resort: Flag::from(r.last_resort),
                            reference: r.reference.into(),
                        })
                        .collect(),
                }
            }
            Request::CreateGroup(g) => {
                self.guard.create_group(&client.id)?;
                self.db
                    .create_group(g.group_id.as_slice(), &g.token_hash, now)
                    .await??;
                Response::Ok
            }
            Request::PostCommit(c) => {
                let welcomes = c
                    .welcomes
                    .iter()
                    .map(|w| parse_welcome(w).map_err(|e| Failure::new(ErrorCode::Malformed, e.0)))
                    .collect::<Result<Vec<_>, _>>()?;
                let posted = self
                    .db
                    .post_commit(
                        &NewCommit {
                            poster: client.id,
                            group_id: c.group_id.as_slice().to_vec(),
                            epoch: c.epoch,
                            token_hash: token_hash(&c.token),
                            next_token_hash: c.next_token_hash,
                            commit: c.commit.as_slice().to_vec(),
                            welcomes,
                            sealed_tree: c.sealed_tree.as_slice().to_vec(),
                            tree_access_hash: c.tree_access_hash,
                        },
                        self.config.mailbox_quota,
                        now,
                    )
                    .await??;
                let mut announced = vec![Announcement::Log {
                    group_id: c.group_id.as_slice().to_vec(),
                    first: posted.seq,
                    last: posted.seq,
                }];
                let mut undelivered = Vec::new();
                for (welcome, id) in c.welcomes.into_iter().zip(&posted.welcomes) {
                    let Some(id) = *id else {
                        self.metrics.undelivered_welcomes.inc();
                        undelivered.push(welcome.recipient);
                        continue;
                    };
                    announced.push(Announcement::Mailbox {
                        owner: welcome.recipient,
                        id,
                    });
                    let entry = MailboxEntry {
                        id,
                        group_id: c.group_id.clone(),
                        epoch: posted.epoch,
                        welcome: welcome.welcome,
                        tree_key: welcome.tree_key,
                    };
                    self.deliver_to_mailbox(&welcome.recipient, entry);
                }
                self.announcer.announce(announced);
                let entry = GroupEntry {
                    seq: posted.seq,
                    epoch: c.epoch,
                    kind: EntryKind::Commit,
                    message: c.commit,
                };
                self.publish(c.group_id.as_slice(), entry);
                Response::Committed {
                    seq: posted.seq,
                    epoch: posted.epoch,
                    undelivered,
                }
            }
            Request::PostMessage(m) => {
                if m.message.as_slice().len() > self.config.max_message as usize {
                    return Err(Failure::new(
                        ErrorCode::TooLarge,
                        format!("a message may be at most {} bytes", self.config.max_message),
                    ));
                }
                let posted = self
                    .appender
                    .post(NewMessage {
                        group_id: m.group_id.as_slice().to_vec(),
                        epoch: m.epoch,
                        token_hash: token_hash(&m.token),
                        message: m.message.as_slice().to_vec(),
                        post_key: Some(post_key(&client.id, &m.post_id)),
                    })
                    .await??;
                // A repeat was pushed the first time, and its bytes here may differ (the
                // poster encrypted it again); the log keeps the first.
                if !posted.repeat {
                    let entry = GroupEntry {
                        seq: posted.seq,
                        epoch: m.epoch,
                        kind: EntryKind::Message,
                        message: m.message,
                    };
                    self.publish(m.group_id.as_slice(), entry);
                }
                Response::Accepted {
                    seq: posted.seq,
                    epoch: posted.epoch,
                }
            }
            Request::PostNotice(n) => {
                if n.notice.as_slice().len() > mlschat_wire::notice::MAX_NOTICE {
                    let detail = format!(
                        "a notice may be at most {} bytes",
                        mlschat_wire::notice::MAX_NOTICE
                    );
                    return Err(Failure::new(ErrorCode::TooLarge, detail));
                }
                let posted = self
                    .db
                    .post_notice(
                        n.group_id.as_slice(),
                        &token_hash(&n.token),
                        n.notice.as_slice(),
                        now,
                    )
                    .await??;
                let entry = GroupEntry {
                    seq: posted.seq,
                    epoch: posted.epoch,
                    kind: EntryKind::Notice,
                    message: n.notice,
                };
                self.announcer.announce(vec![Announcement::Log {
                    group_id: n.group_id.as_slice().to_vec(),
                    first: posted.seq,
                    last: posted.seq,
                }]);
                self.publish(n.group_id.as_slice(), entry);
                Response::Accepted {
                    seq: posted.seq,
                    epoch: posted.epoch,
                }
            }
            Request::FetchGroup(f) => {
                let limit = self.page(f.limit);
                let entries = self
                    .db
                    .fetch_group(
                        f.group_id.as_slice(),
                        &token_hash(&f.token),
                        f.after_seq,
                        limit,
                    )
                    .await??;
                Response::GroupEntries {
                    entries: entries.into_iter().map(group_entry).collect(),
                }
            }
            Request::FetchTree(t) => {
                let access_hash = sha256(&t.access);
                match self
                    .db
                    .fetch_tree(t.group_id.as_slice(), t.epoch, &access_hash)
                    .await?
                {
                    Some(tree) => Response::Tree {
                        sealed_tree: tree.into(),
                    },
                    None => {
                        return Err(Failure::new(
                            ErrorCode::UnknownGroup,
                            "no tree for that epoch",
                        ));
                    }
                }
            }
            Request::Subscribe(f) => {
                // The same rights as a fetch: a token of any epoch of the group.
                self.db
                    .fetch_group(
                        f.group_id.as_slice(),
                        &token_hash(&f.token),
                        u64::MAX >> 1,
                        Page::from(0),
                    )
                    .await??;
                if let Ok(mut subscribers) = self.subscribers.lock() {
                    let queues = subscribers
                        .entry(f.group_id.as_slice().to_vec())
                        .or_default();
                    if !queues.iter().any(|q| q.same_channel(pushes)) {
                        queues.push(pushes.clone());
                    }
                }
                Response::Ok
            }
            Request::FetchMailbox { after, limit } => {
                let limit = self.page(limit);
                let entries = self.db.fetch_mailbox(&client.id, after, limit).await?;
                Response::Mailbox {
                    entries: entries.into_iter().map(mailbox_entry).collect(),
                }
            }
            Request::AckMailbox { up_to } => {
                self.db.ack_mailbox(&client.id, up_to).await?;
                Response::Ok
            }
        })
    }

    /// Claims one of `owner`'s KeyPackages for `client`: the package's `MLSMessage`.
    async fn claim(
        &self,
        owner: &ClientId,
        client: &Authenticated,
        now: u64,
    ) -> Result<Vec<u8>, Failure> {
        let claimed = self
            .directory
            .claim(owner, &client.id, now, self.started.elapsed())
            .await;
        match claimed {
            Ok(claimed) => Ok(claimed.key_package.message),
            // An owner who never registered is not one with an empty stock: the claimer's
            // client should say "no such client", not "ask them to come online".
            Err(ClaimError::NoKeyPackage) if self.db.client_key(owner).await?.is_none() => {
                Err(Failure::new(
                    ErrorCode::UnknownClient,
                    "no client with that id is registered here",
                ))
            }
            Err(ClaimError::NoKeyPackage) => {
                Err(Failure::new(ErrorCode::NoKeyPackage, "no KeyPackage left"))
            }
            Err(ClaimError::RateLimited(wait)) => Err(Failure::new(
                ErrorCode::RateLimited,
                format!("retry in {} ms", wait.as_millis()),
            )),
            Err(ClaimError::Store(e)) => Err(e.into()),
        }
    }

    /// Validates a KeyPackage (`MLSMessage`): well formed, validly signed, unexpired, carrying
    /// the uploader's own signature key, and marked with the `last_resort` extension exactly
    /// when it is published as the last-resort package (RFC 9420 §17.4, and what joiners of
    /// other implementations expect: they may delete a one-time package's keys on use).
    fn own_key_package(
        &self,
        bytes: &[u8],
        client: &Authenticated,
        last_resort: bool,
    ) -> Result<KeyPackage, Failure> {
        let invalid = |why: &str| Failure::new(ErrorCode::InvalidKeyPackage, why);
        let message = MlsMessageIn::tls_deserialize_exact(bytes)
            .map_err(|_| invalid("not an MLS message"))?;
        let MlsMessageBodyIn::KeyPackage(kp) = message.extract() else {
            return Err(invalid("not a KeyPackage"));
        };
        let kp: KeyPackageIn = kp;
        let kp = kp
            .validate(&self.crypto, ProtocolVersion::Mls10)
            .map_err(|e| invalid(&format!("rejected: {e}")))?;
        if kp.leaf_node().signature_key().as_slice() != client.signature_key.as_slice() {
            return Err(invalid("the KeyPackage is not signed with your key"));
        }
        match (last_resort, kp.last_resort()) {
            (true, false) => {
                return Err(invalid(
                    "a last-resort KeyPackage must carry the last_resort extension",
                ));
            }
            (false, true) => {
                return Err(invalid(
                    "a one-time KeyPackage must not carry the last_resort extension",
                ));
            }
            _ => {}
        }
        Ok(KeyPackage {
            reference: kp
                .hash_ref(&self.crypto)
                .map_err(|_| invalid("cannot hash"))?
                .as_slice()
                .to_vec(),
            message: bytes.to_vec(),
            not_after: kp.life_time().not_after(),
        })
    }
}

/// A stored log entry as the wire carries it.
fn group_entry(e: Entry) -> GroupEntry {
    GroupEntry {
        seq: e.seq,
        epoch: e.epoch,
        kind: e.kind,
        message: e.message.into(),
    }
}

/// A stored mailbox entry as the wire carries it.
fn mailbox_entry(w: Welcome) -> MailboxEntry {
    MailboxEntry {
        id: w.id,
        group_id: w.group_id.into(),
        epoch: w.epoch,
        welcome: w.welcome.into(),
        tree_key: w.tree_key.into(),
    }
}
