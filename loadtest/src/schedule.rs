//! Open-loop arrivals, as wrk2 does them: operations are due at a fixed rate from the start,
//! whether or not earlier ones have finished, and each latency runs from when the operation was
//! due, not from when a busy sender got round to it. A stalled system then shows its queueing
//! in the percentiles instead of hiding it by sending less (coordinated omission).

use std::time::Duration;

/// When each operation of a run at `rate` per second is due, counted from the run's start.
/// Exact integer arithmetic on the rate in millionths, so that counts never drift: 3 a second
/// for 4 seconds is 12 operations, not 13.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    micro_per_second: u128,
}

/// Nanoseconds in a second times the rate's scale (millionths).
const SCALE: u128 = 1_000_000_000 * 1_000_000;

impl Schedule {
    /// `rate` operations a second; `None` unless it is finite, at least a millionth and at
    /// most a billion.
    pub fn per_second(rate: f64) -> Option<Self> {
        if !(rate.is_finite() && (1e-6..=1e9).contains(&rate)) {
            return None;
        }
        Some(Self {
            micro_per_second: (rate * 1e6).round() as u128,
        })
    }

    /// When operation `n` (from 0) is due.
    pub fn due(&self, n: u64) -> Duration {
        nanos(u128::from(n) * SCALE / self.micro_per_second)
    }

    /// How many operations a run of `length` makes: those due before its end.
    pub fn due_before(&self, length: Duration) -> u64 {
        let scaled = length.as_nanos().saturating_mul(self.micro_per_second);
        u64::try_from(scaled.div_ceil(SCALE)).unwrap_or(u64::MAX)
    }

    /// The latency of operation `n` that finished at `done` (both from the run's start): from
    /// when it was due, whenever it was actually sent.
    pub fn latency(&self, n: u64, done: Duration) -> Duration {
        done.saturating_sub(self.due(n))
    }
}

fn nanos(n: u128) -> Duration {
    Duration::new(
        u64::try_from(n / 1_000_000_000).unwrap_or(u64::MAX),
        (n % 1_000_000_000) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_fall_due_at_the_rate() {
        let s = Schedule::per_second(200.0).unwrap();
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(1), Duration::from_millis(5));
        assert_eq!(s.due(200), Duration::from_secs(1));
        assert_eq!(s.due_before(Duration::ZERO), 0);
        assert_eq!(s.due_before(Duration::from_millis(4)), 1);
        assert_eq!(s.due_before(Duration::from_millis(5)), 1);
        assert_eq!(s.due_before(Duration::from_nanos(5_000_001)), 2);
        assert_eq!(s.due_before(Duration::from_secs(1)), 200);
        let thirds = Schedule::per_second(3.0).unwrap();
        assert_eq!(thirds.due_before(Duration::from_secs(4)), 12);
        for bad in [0.0, 1e-9, -1.0, f64::NAN, f64::INFINITY, 2e9] {
            assert!(Schedule::per_second(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_stall_shows_in_every_latency_behind_it() {
        // 100 a second; the system stalls for one second at the start, then answers at once.
        let s = Schedule::per_second(100.0).unwrap();
        let stall = Duration::from_secs(1);
        let latencies: Vec<Duration> = (0..100)
            .map(|n| s.latency(n, stall.max(s.due(n))))
            .collect();
        // A closed loop would have sent one operation and seen one slow answer; here the 100
        // that fell due during the stall each waited for its end.
        assert_eq!(latencies[0], stall);
        assert_eq!(latencies[50], Duration::from_millis(500));
        assert!(latencies.windows(2).all(|w| w[0] >= w[1]));
    }

    #[test]
    fn due_before_counts_exactly_the_operations_of_a_run() {
        let mut rng = mlschat_testkit::Rng(7);
        for _ in 0..10_000 {
            let seed = rng.next_u64();
            let rate = 1.0 + (seed >> 40) as f64 / 1000.0;
            let s = Schedule::per_second(rate).unwrap();
            let elapsed = Duration::from_nanos(seed % 10_000_000_000);
            let made = s.due_before(elapsed);
            assert!(
                made == 0 || s.due(made - 1) < elapsed,
                "rate {rate}, {elapsed:?}"
            );
            assert!(s.due(made) >= elapsed, "rate {rate}, {elapsed:?}");
        }
    }
}
