//! The directory's rules on top of a [`Store`]: rate limits for claimers and for owners, and
//! owners' views.

use std::sync::Mutex;
use std::time::Duration;

use crate::{
    ClaimRecord, Claimed, ClientId, KeyPackage, RateLimit, RateLimiter, Stock, Store, StoreError,
    UnixTime,
};

/// Why a claim handed out nothing.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The owner has no unexpired KeyPackage, not even a last-resort one.
    #[error("no KeyPackage left for this client")]
    NoKeyPackage,
    /// The claimer made too many claims; it may retry after the duration.
    #[error("too many claims; retry in {0:?}")]
    RateLimited(Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A KeyPackage directory over the store `S`.
#[derive(Debug)]
pub struct Directory<S> {
    store: S,
    claimers: Mutex<RateLimiter>,
    /// One-time packages taken from each owner: past the limit, claims get the owner's
    /// last-resort package, so that nobody can drain anyone's stock (prekey depletion).
    owners: Mutex<RateLimiter>,
}

impl<S: Store> Directory<S> {
    /// `claimer`: claims one client may make; `owner`: one-time packages one owner gives out.
    pub fn new(store: S, claimer: RateLimit, owner: RateLimit) -> Self {
        Self {
            store,
            claimers: Mutex::new(RateLimiter::new(claimer)),
            owners: Mutex::new(RateLimiter::new(owner)),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Publishes `owner`'s packages, already validated as theirs by the caller.
    pub async fn publish(
        &self,
        owner: &ClientId,
        one_time: Vec<KeyPackage>,
        last_resort: Option<KeyPackage>,
    ) -> Result<(), StoreError> {
        self.store.publish(owner, one_time, last_resort).await
    }

    /// Claims one of `owner`'s packages for `claimer`. `now` is wall-clock time (for lifetimes),
    /// `monotonic` any monotonic clock (for the rate limit).
    pub async fn claim(
        &self,
        owner: &ClientId,
        claimer: &ClientId,
        now: UnixTime,
        monotonic: Duration,
    ) -> Result<Claimed, ClaimError> {
        let poisoned = |_| StoreError("rate limiter lock poisoned".into());
        self.claimers
            .lock()
            .map_err(poisoned)?
            .check(claimer, monotonic)
            .map_err(ClaimError::RateLimited)?;
        let one_time = self
            .owners
            .lock()
            .map_err(poisoned)?
            .check(owner, monotonic)
            .is_ok();
        self.store
            .claim(owner, claimer, now, one_time)
            .await?
            .ok_or(ClaimError::NoKeyPackage)
    }

    /// The owner's stock, to know when to publish more.
    pub async fn stock(&self, owner: &ClientId, now: UnixTime) -> Result<Stock, StoreError> {
        self.store.stock(owner, now).await
    }

    /// Who claimed the owner's packages.
    pub async fn claim_log(
        &self,
        owner: &ClientId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<ClaimRecord>, StoreError> {
        self.store.claim_log(owner, after, limit).await
    }
}
