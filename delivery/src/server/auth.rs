//! A request's first stop: the authentication family (challenge, register, authenticate) is
//! answered here, on the connection's session; any other request needs an authenticated
//! session, and a write takes from its client's byte quota, before it goes on.

use mlschat_wire::auth::Purpose;
use mlschat_wire::session::{Authenticated, Session};
use mlschat_wire::{ErrorCode, Request, Response};
use tokio::sync::Mutex;

use super::{Caller, Failure, Node, Registration};
use crate::fanout::PushQueue;
use crate::sha256;

impl Node {
    pub(super) async fn handle(
        &self,
        request: Request,
        size: usize,
        caller: &Caller,
        exporter: &[u8],
        pushes: &PushQueue,
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
        self.answer(request, &client, pushes).await
    }

    /// The connection is now `who`'s, and gets the pushes of its mailbox.
    async fn authenticated(
        &self,
        session: &Mutex<Session>,
        who: Authenticated,
        pushes: &PushQueue,
    ) -> Response {
        let client = who.id;
        self.fanout.watch_mailbox(&client, pushes);
        session.lock().await.authenticated(who);
        Response::Authenticated { client }
    }
}
