//! The admin HTTP port: `/healthz`, `/readyz`, `/metrics`, and `POST /invites`.
//!
//! It is meant for the operator's machine or network, and a web page in a browser there must
//! not reach it (DNS rebinding, cross-site requests): every request must name the port by an
//! IP literal or `localhost` in `Host`, may carry no `Origin` (browsers send one; operators'
//! tools do not), and anything that changes state needs `Authorization: Bearer TOKEN` (the admin
//! token, `mlschat-delivery admin-token`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};

use crate::server::Node;

/// What the guard checks requests against.
#[derive(Debug, Clone)]
struct Guard {
    port: u16,
    /// SHA-256 of the admin token (compared as hashes, so the comparison leaks nothing useful).
    token_hash: [u8; 32],
}

pub fn routes(node: Arc<Node>, listening: SocketAddr, token: String) -> axum::Router {
    let guard = Arc::new(Guard {
        port: listening.port(),
        token_hash: Sha256::digest(token.as_bytes()).into(),
    });
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/invites", post(new_invite))
        .with_state(node)
        .layer(middleware::from_fn_with_state(guard, check))
}

async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    if let Err(refusal) = guard.admit(request.method(), request.headers()) {
        tracing::warn!(reason = refusal.1, "admin request refused");
        return refusal.into_response();
    }
    next.run(request).await
}

impl Guard {
    fn admit(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<(), (StatusCode, &'static str)> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !self.is_our_host(host) {
            return Err((
                StatusCode::MISDIRECTED_REQUEST,
                "Host must name this port by IP or localhost\n",
            ));
        }
        if headers.contains_key(header::ORIGIN) {
            return Err((
                StatusCode::FORBIDDEN,
                "requests from web pages are refused\n",
            ));
        }
        if method != Method::GET && method != Method::HEAD {
            let bearer = headers
                .get(header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.strip_prefix("Bearer "))
                .unwrap_or_default();
            let presented: [u8; 32] = Sha256::digest(bearer.trim().as_bytes()).into();
            if presented != self.token_hash {
                return Err((StatusCode::UNAUTHORIZED, "this needs the admin token\n"));
            }
        }
        Ok(())
    }

    /// `IP:port` or `localhost:port`, our port: a name a rebinding attack controls is refused.
    fn is_our_host(&self, host: &str) -> bool {
        let Some((name, port)) = host.rsplit_once(':') else {
            return false;
        };
        if port.parse() != Ok(self.port) {
            return false;
        }
        let name = name.trim_start_matches('[').trim_end_matches(']');
        name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
    }
}

async fn ready(State(node): State<Arc<Node>>) -> (StatusCode, &'static str) {
    if node.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    match node.database().ping().await {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n"),
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> String {
    node.metrics_text()
}

/// Issues an invite token (32 hex digits, used as given in `Register.invite`); only its hash
/// is stored.
async fn new_invite(
    State(node): State<Arc<Node>>,
) -> Result<axum::Json<serde_json::Value>, StatusCode> {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let token = hex::encode(random);
    let hash = {
        use sha2::Digest;
        sha2::Sha256::digest(token.as_bytes()).into()
    };
    node.database().create_invite(&hash).await.map_err(|e| {
        tracing::error!(error = %e, "storing an invite");
        StatusCode::INTERNAL_SERVER_ERROR
    })?;
    Ok(axum::Json(serde_json::json!({ "invite": token })))
}
