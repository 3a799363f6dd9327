//! The directory's rules on top of a [`Store`]: rate limits for claimers, and owners' views.

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
    limiter: Mutex<RateLimiter>,
}

impl<S: Store> Directory<S> {
    pub fn new(store: S, limit: RateLimit) -> Self {
        Self {
            store,
            limiter: Mutex::new(RateLimiter::new(limit)),
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
        self.limiter
            .lock()
            .map_err(|_| StoreError("rate limiter lock poisoned".into()))?
            .check(claimer, monotonic)
            .map_err(ClaimError::RateLimited)?;
        self.store
            .claim(owner, claimer, now)
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
