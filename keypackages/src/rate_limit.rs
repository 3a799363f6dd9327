//! Rate limiting: a token bucket per key (a claimer, a client, an address), driven by the
//! caller's clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use crate::ClientId;

/// How much a key may do: `burst` at once, then one more per `refill`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub burst: u32,
    pub refill: Duration,
}

impl Default for RateLimit {
    /// Enough to add a few hundred people at once, not to drain everyone's stock.
    fn default() -> Self {
        Self {
            burst: 500,
            refill: Duration::from_millis(100),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date, as time since the limiter's origin.
    at: Duration,
}

/// Token buckets for every key seen recently. `now` is any monotonic time (e.g. time since
/// the process started); the limiter never reads a clock itself.
#[derive(Debug)]
pub struct RateLimiter<K = ClientId> {
    limit: RateLimit,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `key` if it has one; otherwise says how long until it will.
    pub fn check(&mut self, key: &K, now: Duration) -> Result<(), Duration> {
        self.take(key, 1, now)
    }

    /// Takes `cost` tokens for `key` if it has them (a cost above the burst never passes);
    /// otherwise takes nothing and says how long until it will have them.
    pub fn take(&mut self, key: &K, cost: u64, now: Duration) -> Result<(), Duration> {
        let RateLimit { burst, refill } = self.limit;
        let per_second = 1.0 / refill.as_secs_f64();
        let bucket = self.buckets.entry(key.clone()).or_insert(Bucket {
            tokens: f64::from(burst),
            at: now,
        });
        let elapsed = now.saturating_sub(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(f64::from(burst));
        bucket.at = now;
        let cost = cost as f64;
        if bucket.tokens < cost {
            return Err(Duration::from_secs_f64((cost - bucket.tokens) / per_second));
        }
        bucket.tokens -= cost;
        self.forget_full(now);
        Ok(())
    }

    /// Drops buckets that have refilled completely: they hold no information, and the map
    /// must not grow with every claimer ever seen.
    fn forget_full(&mut self, now: Duration) {
        if self.buckets.len() < 10_000 {
            return;
        }
        let RateLimit { burst, refill } = self.limit;
        let full_after = refill * burst;
        self.buckets
            .retain(|_, b| now.saturating_sub(b.at) < full_after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_per_refill() {
        let limit = RateLimit {
            burst: 3,
            refill: Duration::from_secs(10),
        };
        let mut limiter = RateLimiter::new(limit);
        let alice = [1; 32];
        let t0 = Duration::from_secs(100);
        for _ in 0..3 {
            assert!(limiter.check(&alice, t0).is_ok());
        }
        let wait = limiter.check(&alice, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(10));
        assert!(limiter.check(&alice, t0 + Duration::from_secs(9)).is_err());
        assert!(limiter.check(&alice, t0 + Duration::from_secs(10)).is_ok());
        // Another claimer has its own bucket.
        assert!(limiter.check(&[2; 32], t0).is_ok());
    }

    #[test]
    fn a_cost_takes_that_many_tokens_or_none() {
        let limit = RateLimit {
            burst: 100,
            refill: Duration::from_millis(10),
        };
        let mut limiter = RateLimiter::<&str>::new(limit);
        let t0 = Duration::from_secs(1);
        assert!(limiter.take(&"a", 60, t0).is_ok());
        assert_eq!(limiter.take(&"a", 60, t0), Err(Duration::from_millis(200)));
        assert!(limiter.take(&"a", 40, t0).is_ok());
        assert!(
            limiter
                .take(&"b", 101, t0 + Duration::from_secs(60))
                .is_err()
        );
    }
}
