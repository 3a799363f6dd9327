//! The QUIC server: one task per connection, one per request stream. A request is read with its
//! size checked from the header, handled by its family, and answered on its stream.
//!
//! - `mod.rs`: connections, streams, reading a request within its budgets, draining;
//! - `auth.rs`: challenge, register, authenticate; what a request needs before it goes on;
//! - `groups.rs`: group logs, mailboxes and trees, answered by the group log's own rules
//!   (`mlschat_grouplog::host`), then pushed ([`crate::fanout`]) and announced;
//! - `keypackages.rs`: publishing, claiming, stock, claim log;
//! - `failure.rs`: every error answer, in one place (internal detail is logged, not sent);
//! - `metrics.rs`: the Prometheus metrics.

mod auth;
mod failure;
mod groups;
mod keypackages;
mod metrics;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mlschat_grouplog::host::Limits;
use mlschat_keypackages::{ClaimLimits, Directory};
use mlschat_wire::auth::{EXPORTER_LABEL, EXPORTER_LEN};
use mlschat_wire::frame::{self, FrameError, HEADER_LEN, Header};
use mlschat_wire::session::Session;
use mlschat_wire::{ClientId, ErrorCode, Request};
use openmls_rust_crypto::RustCrypto;
use tokio::sync::{Mutex, Notify, Semaphore, mpsc};
use tracing::Instrument;

use crate::announce::Announcer;
use crate::appender::Appender;
use crate::fanout::{Fanout, Frame, PUSH_QUEUE, PushQueue};
use crate::guard::{Guard, GuardConfig, Refusal};
use crate::storage::{Database, StorageError};
use crate::unix_now;
use failure::Failure;
use metrics::{Metrics, kind};

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
    /// The connections waiting for each group's entries and each client's Welcomes.
    fanout: Arc<Fanout>,
    /// What one group request may take.
    limits: Limits,
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

/// Writes a connection's pushes, one unidirectional stream each, until it closes.
async fn write_pushes(connection: quinn::Connection, mut queue: mpsc::Receiver<Frame>) {
    while let Some(bytes) = queue.recv().await {
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
            limits: Limits {
                max_message: config.max_message,
                max_fetch: config.max_fetch,
                max_fetch_bytes: config.max_fetch_bytes,
                mailbox_quota: config.mailbox_quota,
            },
            config,
            crypto: RustCrypto::default(),
            started: Instant::now(),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            fanout: Arc::new(Fanout::default()),
        }
    }

    /// This process's id in announcements.
    pub fn origin(&self) -> u64 {
        self.announcer.origin()
    }

    /// The connections waiting for pushes.
    pub fn fanout(&self) -> Arc<Fanout> {
        self.fanout.clone()
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
        pushes: PushQueue,
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
}
