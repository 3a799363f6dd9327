//! The protocol over QUIC (feature `quic`): TLS configurations and a client connection that
//! speaks one request per bidirectional stream, authenticates, and reads the node's pushes.
//! Shared by the peer, the load tool and the delivery node's tests, so that there is one client.

pub mod peer;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{EXPORTER_LABEL, EXPORTER_LEN, Purpose, Transcript};
use crate::messages::{Authenticate, ClientId, ErrorCode, Push, Register, Request, Response};
use crate::{FrameError, MAX_FRAME, frame};

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    /// The node presented a certificate whose fingerprint is not the pinned one.
    #[error(
        "the delivery node at {addr} presents another certificate than the one pinned: check \
         the fingerprint you were given (`mlschat home set ADDRESS FINGERPRINT`)"
    )]
    WrongCertificate { addr: SocketAddr },
    /// The peer proved another identity key than the one we meant to reach.
    #[error(
        "the peer at {addr} is not the one you meant to reach: it holds another identity key \
         (someone else has that address now, or is impersonating it)"
    )]
    WrongPeer { addr: SocketAddr },
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("bad frame from the node: {0}")]
    Frame(#[from] FrameError),
    #[error("the node refused: {code:?}: {detail}")]
    Refused { code: ErrorCode, detail: String },
    #[error("unexpected answer from the node: {0}")]
    Unexpected(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

impl QuicError {
    /// The node's error code, when it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            QuicError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// How long a silent connection lives: a dead node is noticed within this, not QUIC's default
/// thirty seconds.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Any local address of `addr`'s family, to dial it from.
fn any_address(addr: SocketAddr) -> SocketAddr {
    let any = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    any.parse().expect("a valid address")
}

/// A connection to a delivery node, or to a peer.
#[derive(Debug, Clone)]
pub struct Connection {
    connection: quinn::Connection,
    // Kept so that the socket lives as long as the connection.
    _endpoint: quinn::Endpoint,
}

impl Connection {
    /// Connects to the node at `addr` whose certificate has this SHA-256 `fingerprint`.
    pub async fn connect(addr: SocketAddr, fingerprint: [u8; 32]) -> Result<Self, QuicError> {
        Self::connect_from(any_address(addr), addr, fingerprint).await
    }

    /// Connects from the local address `local` (e.g. one of several addresses of this host).
    pub async fn connect_from(
        local: SocketAddr,
        addr: SocketAddr,
        fingerprint: [u8; 32],
    ) -> Result<Self, QuicError> {
        Self::dial(local, addr, tls::pinned_client_config(fingerprint)?).await
    }

    /// Connects to the peer at `addr` whose identity key has this fingerprint, as `ours`
    /// (PROTOCOL.md §11): the same requests as to a node, without logging in.
    pub async fn connect_peer(
        addr: SocketAddr,
        ours: &peer::PeerCertificate,
        fingerprint: [u8; 32],
    ) -> Result<Self, QuicError> {
        let config = peer::peer_client_config(ours, fingerprint)?;
        match Self::dial(any_address(addr), addr, config).await {
            Err(QuicError::WrongCertificate { addr }) => Err(QuicError::WrongPeer { addr }),
            other => other,
        }
    }

    async fn dial(
        local: SocketAddr,
        addr: SocketAddr,
        mut config: quinn::ClientConfig,
    ) -> Result<Self, QuicError> {
        let failed = |reason: String| QuicError::Connect { addr, reason };
        let mut endpoint = quinn::Endpoint::client(local).map_err(|e| failed(e.to_string()))?;
        let mut transport = quinn::TransportConfig::default();
        transport.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("a small duration")));
        transport.keep_alive_interval(Some(IDLE_TIMEOUT / 4));
        config.transport_config(Arc::new(transport));
        endpoint.set_default_client_config(config);
        let connection = endpoint
            .connect(addr, "localhost")
            .map_err(|e| failed(e.to_string()))?
            .await
            .map_err(|e| {
                // Our own verifier refused the certificate (tls::PinnedCertificate,
                // peer::IdentityKey).
                if e.to_string().contains("ApplicationVerificationFailure") {
                    QuicError::WrongCertificate { addr }
                } else {
                    failed(e.to_string())
                }
            })?;
        Ok(Self {
            connection,
            _endpoint: endpoint,
        })
    }

    /// Sends raw bytes as one request and returns the answer as sent (for hostile-input tests).
    pub async fn raw(&self, bytes: &[u8]) -> Result<Response, QuicError> {
        let lost = |e: &dyn std::fmt::Display| self.lost(e);
        let (mut send, mut recv) = self.connection.open_bi().await.map_err(|e| lost(&e))?;
        send.write_all(bytes).await.map_err(|e| lost(&e))?;
        send.finish().map_err(|e| lost(&e))?;
        let answer = recv
            .read_to_end(MAX_FRAME as usize + frame::HEADER_LEN)
            .await
            .map_err(|e| lost(&e))?;
        Ok(frame::decode(&answer, MAX_FRAME)?)
    }

    /// Sends one request; the node's answer, an error answer included.
    pub async fn answer(&self, request: &Request) -> Result<Response, QuicError> {
        self.raw(&frame::encode(request)?).await
    }

    /// Sends one request; an error answer becomes [`QuicError::Refused`].
    pub async fn request(&self, request: &Request) -> Result<Response, QuicError> {
        match self.answer(request).await? {
            Response::Error(e) => Err(QuicError::Refused {
                code: e.code,
                detail: String::from_utf8_lossy(e.detail.as_slice()).into_owned(),
            }),
            answer => Ok(answer),
        }
    }

    /// Authenticates as the holder of `signature_key`, registering first if the node does not
    /// know it (with `invite`, empty where registration is open). `sign` signs with that key.
    pub async fn log_in(
        &self,
        signature_key: &[u8],
        invite: &[u8],
        sign: impl Fn(&[u8]) -> Vec<u8>,
    ) -> Result<ClientId, QuicError> {
        let signature = self
            .sign_challenge(Purpose::Authenticate, signature_key, b"", &sign)
            .await?;
        let authenticate = Request::Authenticate(Authenticate {
            signature_key: signature_key.into(),
            signature: signature.into(),
        });
        let answer = match self.request(&authenticate).await {
            Err(e) if e.code() == Some(ErrorCode::UnknownClient) => {
                let signature = self
                    .sign_challenge(Purpose::Register, signature_key, invite, &sign)
                    .await?;
                let register = Request::Register(Register {
                    signature_key: signature_key.into(),
                    invite: invite.into(),
                    signature: signature.into(),
                });
                self.request(&register).await?
            }
            other => other?,
        };
        match answer {
            Response::Authenticated { client } => Ok(client),
            other => Err(QuicError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Gets a challenge and signs the transcript that binds it to this TLS session.
    pub async fn sign_challenge(
        &self,
        purpose: Purpose,
        signature_key: &[u8],
        invite: &[u8],
        sign: impl Fn(&[u8]) -> Vec<u8>,
    ) -> Result<Vec<u8>, QuicError> {
        let Response::Challenge { nonce } = self.request(&Request::Challenge).await? else {
            return Err(QuicError::Unexpected("no challenge".into()));
        };
        let mut exporter = [0u8; EXPORTER_LEN];
        self.connection
            .export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
            .map_err(|_| QuicError::Unexpected("no TLS exporter".into()))?;
        let transcript = Transcript::new(purpose, &exporter, &nonce, signature_key, invite);
        Ok(sign(&transcript.to_bytes()))
    }

    /// The next push the node sends on this connection.
    pub async fn next_push(&self) -> Result<Push, QuicError> {
        let lost = |e: &dyn std::fmt::Display| self.lost(e);
        let mut stream = self.connection.accept_uni().await.map_err(|e| lost(&e))?;
        let bytes = stream
            .read_to_end(MAX_FRAME as usize + frame::HEADER_LEN)
            .await
            .map_err(|e| lost(&e))?;
        Ok(frame::decode(&bytes, MAX_FRAME)?)
    }

    /// Why the connection went: the other side's reason when it closed it (a peer that does
    /// not know us says `stranger`), else what failed.
    fn lost(&self, failed: &dyn std::fmt::Display) -> QuicError {
        QuicError::Lost(match self.connection.close_reason() {
            Some(reason) => reason.to_string(),
            None => failed.to_string(),
        })
    }

    pub fn close(&self) {
        self.connection.close(0u32.into(), b"bye");
    }

    /// The underlying QUIC connection, for tests that misbehave on purpose.
    pub fn quinn(&self) -> &quinn::Connection {
        &self.connection
    }
}
