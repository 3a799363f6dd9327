//! Peers directly (issue 21; PROTOCOL.md §11): a listener that admits only the peers its owner
//! knows and answers their requests as a node would, from its replica of its node-less groups'
//! logs (`crate::replica`) and its own KeyPackages. Dialing a peer is
//! `mlschat_wire::quic::Connection::connect_peer`, the one client of nodes and peers.
//!
//! Work in progress: the daemon does not listen yet, and nothing pushes a peer's new entries
//! (ARCHITECTURE.md, "Without a node").

use std::net::SocketAddr;
use std::sync::Arc;

use mlschat_grouplog::host::{self, Limits, NotAnswered};
use mlschat_grouplog::keypackages::Store as _;
use mlschat_wire::quic::peer::{PeerCertificate, peer_fingerprint, peer_server_config};
use mlschat_wire::quic::tls::TlsError;
use mlschat_wire::{
    ClaimAnswer, ClientId, ErrorCode, ErrorResponse, MAX_CLAIMS, MAX_FRAME, Request, Response,
    frame,
};

use crate::clock::Clock;
use crate::identity::{Fingerprint, Identity};
use crate::replica::SqliteLog;

/// The QUIC application error code a listener closes a stranger's connection with.
pub const STRANGER: u32 = 1;

/// What one request to a peer may take: a peer serves its friends, not the world, but every
/// input is still bounded.
pub const LIMITS: Limits = Limits {
    max_message: 1 << 20,
    max_fetch: 500,
    max_fetch_bytes: 8 << 20,
    mailbox_quota: 1_000,
};

/// Whom a listener serves: decided by its owner (its contacts, its groups' members).
pub trait Admission: Send + Sync + 'static {
    fn admits(&self, peer: &Fingerprint) -> bool;
}

#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
}

/// Our side of peer connections: the certificate of our identity key.
pub fn certificate(identity: &Identity) -> Result<PeerCertificate, DirectError> {
    Ok(PeerCertificate::of_identity(&identity.signing_seed())?)
}

/// A QUIC endpoint on `addr` that peers can dial, presenting `ours`.
pub fn listen(ours: &PeerCertificate, addr: SocketAddr) -> Result<quinn::Endpoint, DirectError> {
    let config = peer_server_config(ours)?;
    quinn::Endpoint::server(config, addr).map_err(|e| DirectError::Listen {
        addr,
        reason: e.to_string(),
    })
}

/// What a listener answers from: our replica, whom we admit, and our clock.
#[derive(Debug)]
pub struct PeerServer<A> {
    /// Our own client id (our fingerprint): the owner of the KeyPackages we hand out.
    pub us: ClientId,
    pub replica: Arc<SqliteLog>,
    pub admission: A,
    pub clock: Clock,
}

/// Serves the peers that dial `endpoint` until it is closed.
pub async fn serve<A: Admission>(endpoint: quinn::Endpoint, server: Arc<PeerServer<A>>) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(connection(incoming, server.clone()));
    }
}

async fn connection<A: Admission>(incoming: quinn::Incoming, server: Arc<PeerServer<A>>) {
    let Ok(connection) = incoming.await else {
        return;
    };
    let Some(peer) = peer_fingerprint(&connection).map(Fingerprint) else {
        connection.close(STRANGER.into(), b"stranger");
        return;
    };
    if !server.admission.admits(&peer) {
        tracing::info!(peer = %peer, "refused a stranger's connection");
        connection.close(STRANGER.into(), b"stranger");
        return;
    }
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let server = server.clone();
        tokio::spawn(async move {
            let limit = MAX_FRAME as usize + frame::HEADER_LEN;
            let response = match recv.read_to_end(limit).await {
                Ok(bytes) => match frame::decode::<Request>(&bytes, MAX_FRAME) {
                    Ok(request) => server.answer(&peer.0, request).await,
                    Err(e) => Response::Error(error(ErrorCode::Malformed, &e.to_string())),
                },
                Err(quinn::ReadToEndError::TooLong) => {
                    Response::Error(error(ErrorCode::TooLarge, "the request is over the limit"))
                }
                // The stream went (reset, or the connection lost): nobody to answer.
                Err(quinn::ReadToEndError::Read(_)) => return,
            };
            if let Ok(bytes) = frame::encode(&response) {
                let _ = send.write_all(&bytes).await;
                let _ = send.finish();
            }
        });
    }
}

fn error(code: ErrorCode, detail: &str) -> ErrorResponse {
    ErrorResponse {
        code,
        current_epoch: 0,
        detail: detail.as_bytes().to_vec().into(),
    }
}

impl<A: Admission> PeerServer<A> {
    /// Answers an admitted peer's request: group requests from the replica, as a node would;
    /// claims of our own KeyPackages; nothing else.
    async fn answer(&self, client: &ClientId, request: Request) -> Response {
        let now = self.clock.unix();
        let log = &*self.replica;
        match host::answer(log, log, client, request, &LIMITS, now).await {
            Ok(answered) => answered.response,
            Err(NotAnswered::Refused(refusal)) => Response::Error(refusal),
            Err(NotAnswered::Failed(e)) => {
                tracing::error!(error = %e, "the replica failed a peer's request");
                Response::Error(error(ErrorCode::Internal, "the peer's store failed"))
            }
            Err(NotAnswered::Passed(request)) => match *request {
                Request::ClaimKeyPackages { owners } => self.claims(client, &owners, now).await,
                _ => Response::Error(error(
                    ErrorCode::Forbidden,
                    "a peer answers group requests and claims of its own KeyPackages only",
                )),
            },
        }
    }

    async fn claims(&self, claimer: &ClientId, owners: &[ClientId], now: u64) -> Response {
        if owners.len() > MAX_CLAIMS {
            return Response::Error(error(ErrorCode::Malformed, "too many owners"));
        }
        let mut claims = Vec::with_capacity(owners.len());
        for owner in owners {
            let answer = if *owner != self.us {
                ClaimAnswer::Refused(error(
                    ErrorCode::UnknownClient,
                    "a peer hands out its own KeyPackages only",
                ))
            } else {
                match self.replica.claim(owner, claimer, now, true).await {
                    Ok(Some(claimed)) => {
                        ClaimAnswer::KeyPackage(claimed.key_package.message.into())
                    }
                    Ok(None) => {
                        ClaimAnswer::Refused(error(ErrorCode::NoKeyPackage, "no KeyPackage left"))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the replica failed a claim");
                        ClaimAnswer::Refused(error(ErrorCode::Internal, "the peer's store failed"))
                    }
                }
            };
            claims.push(answer);
        }
        Response::KeyPackages { claims }
    }
}
