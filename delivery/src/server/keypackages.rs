//! The KeyPackage family: publishing one's own packages (validated here), claiming others'
//! (the directory's rules and rate limits), one's stock and the log of who claimed what.

use mlschat_keypackages::{ClaimError, KeyPackage};
use mlschat_wire::session::Authenticated;
use mlschat_wire::{
    ClaimAnswer, ClaimLogEntry, ClientId, ErrorCode, Flag, MAX_CLAIMS, Request, Response,
};
use openmls::prelude::{KeyPackageIn, MlsMessageBodyIn, MlsMessageIn, ProtocolVersion};
use tls_codec::Deserialize as _;

use super::{Failure, Node};

impl Node {
    /// Answers a KeyPackage request of `client`.
    pub(super) async fn key_packages(
        &self,
        request: Request,
        client: &Authenticated,
        now: u64,
    ) -> Result<Response, Failure> {
        Ok(match request {
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
                    entries: log.into_iter().map(ClaimLogEntry::from).collect(),
                }
            }
            other => {
                tracing::error!(?other, "not a KeyPackage request");
                return Err(Failure::new(ErrorCode::Internal, "internal error"));
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
