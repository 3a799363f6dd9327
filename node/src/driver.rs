//! The async driver of the [`crate::sync`] core over QUIC to our delivery node: it logs in,
//! sends each request the core asks for on its own stream (so lanes run in parallel), and feeds
//! the core the answers, the node's pushes and the time. It decides nothing itself.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use openmls_traits::signatures::Signer as _;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use mlschat_wire::quic::{Connection, QuicError};
use mlschat_wire::{Push, Response};

use crate::profile::{Profile, ProfileError};
use crate::sync::{Answer, Core, Lane, Notice, SyncError, Ticket};

/// Why we are not connected.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Delivery(#[from] QuicError),
    #[error("cannot resolve the delivery node's address {0:?}")]
    Address(String),
}

/// What ends one wait for a connection event.
type Arrival = (u64, Lane, Result<Response, QuicError>);

/// A profile's sync core, driven over a connection to its delivery node when there is one.
#[derive(Debug)]
pub struct Driver {
    core: Core,
    connection: Option<Connection>,
    /// Numbers connections, so that the end of an old one is not taken for the current one's.
    number: u64,
    started: Instant,
    answers: JoinSet<Arrival>,
    pushes: mpsc::Receiver<(u64, Option<Push>)>,
    pushes_in: mpsc::Sender<(u64, Option<Push>)>,
    /// Notices that arrived while [`Self::wait`] waited for another.
    kept: std::collections::VecDeque<Notice>,
    /// Why the last connection ended, if it did.
    offline: Option<String>,
}

impl Driver {
    pub fn new(profile: Profile) -> Self {
        let (pushes_in, pushes) = mpsc::channel(1024);
        Self {
            core: Core::new(profile),
            connection: None,
            number: 0,
            started: Instant::now(),
            answers: JoinSet::new(),
            pushes,
            pushes_in,
            kept: Default::default(),
            offline: Some("not connected yet".into()),
        }
    }

    pub fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    pub fn profile(&mut self) -> &mut Profile {
        self.core.profile()
    }

    pub fn into_profile(mut self) -> Profile {
        if let Some(connection) = self.connection.take() {
            connection.close();
            self.answers.abort_all();
        }
        self.core.into_profile()
    }

    /// Why we are offline; `None` while connected.
    pub fn offline(&self) -> Option<&str> {
        self.offline.as_deref()
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Connects to our home node and logs in (registering on first use), then starts catching
    /// up from our cursors.
    pub async fn connect(&mut self) -> Result<(), ConnectError> {
        let result = self.log_in().await;
        match result {
            Ok(connection) => {
                self.number += 1;
                spawn_push_reader(connection.clone(), self.number, self.pushes_in.clone());
                self.connection = Some(connection);
                self.offline = None;
                let now = self.now();
                self.core.handle_connected(now)?;
                self.flush();
                tracing::info!("connected to the delivery node");
                Ok(())
            }
            Err(e) => {
                let mut why = e.to_string();
                if let ConnectError::Delivery(q) = &e
                    && q.code() == Some(mlschat_wire::ErrorCode::InviteRequired)
                {
                    why.push_str(
                        "; give the invite token its operator gave you: `mlschat home set \
                         ADDRESS FINGERPRINT --invite TOKEN`",
                    );
                }
                self.offline = Some(why);
                Err(e)
            }
        }
    }

    async fn log_in(&mut self) -> Result<Connection, ConnectError> {
        let profile = self.core.profile();
        let home = profile.home()?.ok_or(ProfileError::NoHome)?;
        let addr = resolve(&home.address).await?;
        let connection = Connection::connect(addr, home.fingerprint).await?;
        let identity = profile.identity();
        let key = identity.signer.public().to_vec();
        let sign = |bytes: &[u8]| identity.signer.sign(bytes).unwrap_or_default();
        connection.log_in(&key, &home.invite, sign).await?;
        Ok(connection)
    }

    /// Drops the connection; what was in flight is lost (the core knows what to ask again).
    pub fn disconnect(&mut self, why: &str) {
        if let Some(connection) = self.connection.take() {
            connection.close();
            tracing::warn!(why, "offline");
            self.offline = Some(why.into());
            self.answers.abort_all();
            let now = self.now();
            self.core.handle_disconnected(now);
        }
    }

    /// Sends every request the core has ready.
    pub fn flush(&mut self) {
        let Some(connection) = &self.connection else {
            return;
        };
        while let Some(out) = self.core.poll_request() {
            let (connection, number) = (connection.clone(), self.number);
            tracing::trace!(lane = ?out.lane, "request");
            self.answers.spawn(async move {
                let answer = connection.answer(&out.request).await;
                (number, out.lane, answer)
            });
        }
    }

    /// Waits for one thing to happen (an answer, a push, a timer) and hands it to the core.
    /// While offline it waits forever: race it with whatever brings the connection back.
    pub async fn step(&mut self) {
        if self.connection.is_none() {
            return std::future::pending().await;
        }
        let deadline = self
            .core
            .poll_timeout()
            .map(|at| tokio::time::Instant::from_std(self.started + Duration::from_millis(at)));
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(Ok((number, lane, answer))) = self.answers.join_next() => {
                if number == self.number {
                    self.answer(lane, answer);
                }
            }
            Some((number, push)) = self.pushes.recv() => {
                match push {
                    _ if number != self.number => {}
                    Some(push) => {
                        let now = self.now();
                        if let Err(e) = self.core.handle_push(push, now) {
                            tracing::warn!(error = %e, "a push could not be applied");
                        }
                    }
                    None => self.disconnect("the connection closed"),
                }
            }
            () = timer => {
                let now = self.now();
                self.core.handle_timeout(now);
            }
        }
        self.flush();
    }

    fn answer(&mut self, lane: Lane, answer: Result<Response, QuicError>) {
        let answer: Answer = match answer {
            Ok(Response::Error(e)) => Err(e),
            Ok(response) => Ok(response),
            Err(e) => return self.disconnect(&e.to_string()),
        };
        let now = self.now();
        self.core.handle_answer(lane, answer, now);
    }

    /// The next notice for the user, if any.
    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.kept.pop_front().or_else(|| self.core.poll_notice())
    }

    /// Drives the core until `ticket` is done; other notices are kept for [`Self::poll_notice`].
    pub async fn wait(&mut self, ticket: Ticket) -> Result<(), SyncError> {
        self.flush();
        loop {
            while let Some(notice) = self.core.poll_notice() {
                match notice {
                    Notice::Done { ticket: t, result } if t == ticket => return result,
                    other => self.kept.push_back(other),
                }
            }
            if self.connection.is_none() {
                return Err(SyncError::Disconnected);
            }
            self.step().await;
        }
    }

    /// Drives the core until nothing is left to send or read.
    pub async fn sync(&mut self) -> Result<(), SyncError> {
        let ticket = self.core.sync()?;
        self.wait(ticket).await
    }
}

fn spawn_push_reader(
    connection: Connection,
    number: u64,
    pushes: mpsc::Sender<(u64, Option<Push>)>,
) {
    tokio::spawn(async move {
        loop {
            match connection.next_push().await {
                Ok(push) => {
                    if pushes.send((number, Some(push))).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "push stream ended");
                    let _ = pushes.send((number, None)).await;
                    return;
                }
            }
        }
    });
}

async fn resolve(address: &str) -> Result<SocketAddr, ConnectError> {
    tokio::net::lookup_host(address)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| ConnectError::Address(address.into()))
}
