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

/// How many claims the directory allows. The defaults keep "nobody can drain anyone's stock"
/// true against a client that keeps [`ClaimLimits::STOCK`] one-time packages: an owner gives
/// out well under that at once, and one claimer gets only a few of one owner's packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimLimits {
    /// Claims one client may make, of anyone's packages.
    pub claimer: RateLimit,
    /// One-time packages one owner gives out: past the limit, claims get the owner's
    /// last-resort package, so that nobody can drain anyone's stock (prekey depletion).
    pub owner: RateLimit,
    /// Claims one claimer may make of one owner's packages (of either kind); past it, claims
    /// are refused `rate_limited`. Each claim allows one Welcome, so this also bounds what one
    /// account can put into one mailbox.
    pub pair: RateLimit,
}

impl ClaimLimits {
    /// The one-time packages a client keeps published (mlschat's peer tops up to this).
    pub const STOCK: u32 = 30;
}

impl Default for ClaimLimits {
    fn default() -> Self {
        Self {
            claimer: RateLimit::default(),
            owner: RateLimit {
                burst: 10,
                refill: Duration::from_secs(60),
            },
            pair: RateLimit {
                burst: 4,
                refill: Duration::from_secs(300),
            },
        }
    }
}

/// A KeyPackage directory over the store `S`.
#[derive(Debug)]
pub struct Directory<S> {
    store: S,
    claimers: Mutex<RateLimiter>,
    owners: Mutex<RateLimiter>,
    pairs: Mutex<RateLimiter<(ClientId, ClientId)>>,
}

impl<S: Store> Directory<S> {
    pub fn new(store: S, limits: ClaimLimits) -> Self {
        Self {
            store,
            claimers: Mutex::new(RateLimiter::new(limits.claimer)),
            owners: Mutex::new(RateLimiter::new(limits.owner)),
            pairs: Mutex::new(RateLimiter::new(limits.pair)),
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
        self.pairs
            .lock()
            .map_err(|_| StoreError("rate limiter lock poisoned".into()))?
            .check(&(*owner, *claimer), monotonic)
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
