//! What the tests, the benchmarks and the load tool share, written once:
//! - [`Rng`]: seeded randomness, the same sequence for the same seed everywhere;
//! - [`percentile`]: of sorted latencies;
//! - [`fresh_postgres_url`]: a new, empty database on the test Postgres server;
//! - `raw` (feature `raw`): raw OpenMLS with its in-memory store, the baseline every engine figure is
//!   measured against in the same run.

#[cfg(feature = "raw")]
pub mod raw;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// SplitMix64: small, fast, and the same sequence for the same seed everywhere.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// The `p`-quantile (0 to 1) of `sorted`, the nearest rank; zero for none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The URL of a new, empty database on the Postgres server named by `DATABASE_URL` (the
/// README's test command starts a throwaway one). Without it the caller fails: a test must not
/// pass unchecked.
pub async fn fresh_postgres_url() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let url = std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: run the tests with ./scripts/test.sh, which starts Postgres",
    );
    let name = format!(
        "mlschat_test_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let admin = sqlx::PgPool::connect(&url)
        .await
        .expect("connecting to DATABASE_URL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("creating a test database");
    admin.close().await;
    let (server, _) = url.rsplit_once('/').expect("a URL ending in /database");
    format!("{server}/{name}")
}

/// [`fresh_postgres_url`], for a caller that is not async.
pub fn fresh_postgres_url_blocking() -> String {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(fresh_postgres_url())
}
