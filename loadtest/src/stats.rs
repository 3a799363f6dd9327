//! What a load test measures: for each kind of operation (`claim`, `commit`, `join`,
//! `message`, …), an HDR histogram of its latencies and its errors by wire code. Histograms
//! merge exactly, so workers on several machines each keep their own and one report adds them.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The longest latency recorded exactly (an hour); longer ones count as this.
const MAX_MICROS: u64 = 3_600_000_000;

/// Latencies of one kind of operation, in microseconds, to 3 significant digits. Saved as the
/// histogram's recorded values and counts, so a saved run merges as exactly as a live one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "Recorded", try_from = "Recorded")]
pub struct Latencies {
    histogram: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .expect("valid histogram bounds"),
            errors: BTreeMap::new(),
        }
    }
}

/// [`Latencies`] as saved: each recorded value (µs) with its count, and errors by code.
#[derive(Serialize, Deserialize)]
struct Recorded {
    recorded: Vec<(u64, u64)>,
    errors: BTreeMap<String, u64>,
}

impl From<Latencies> for Recorded {
    fn from(l: Latencies) -> Self {
        let recorded = l
            .histogram
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        Self {
            recorded,
            errors: l.errors,
        }
    }
}

impl TryFrom<Recorded> for Latencies {
    type Error = String;

    fn try_from(r: Recorded) -> Result<Self, String> {
        let mut l = Latencies {
            errors: r.errors,
            ..Latencies::default()
        };
        for (micros, count) in r.recorded {
            // Values are bucket tops, which may lie a little above MAX_MICROS: the histogram
            // itself refuses what it cannot hold.
            if micros == 0 || l.histogram.record_n(micros, count).is_err() {
                return Err(format!("a latency of {micros} µs is out of range"));
            }
        }
        Ok(l)
    }
}

/// The figures of one kind of operation, as reports and thresholds read them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Operations that succeeded (and were timed).
    pub count: u64,
    /// Operations that failed, by wire error code (or `timeout`, `disconnected`).
    pub errors: BTreeMap<String, u64>,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Summary {
    /// Failed operations, all codes together.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The share of operations that failed, 0 when there were none.
    pub fn error_rate(&self) -> f64 {
        let total = self.count + self.error_count();
        if total == 0 {
            0.0
        } else {
            self.error_count() as f64 / total as f64
        }
    }

    /// The latency at `quantile` (0 to 1), in microseconds.
    pub fn percentile(&self, quantile: f64) -> Option<u64> {
        // Only the published points: a threshold on another one is refused when parsed.
        [
            (0.5, self.p50_us),
            (0.9, self.p90_us),
            (0.99, self.p99_us),
            (0.999, self.p999_us),
            (1.0, self.max_us),
        ]
        .into_iter()
        .find(|(q, _)| (q - quantile).abs() < 1e-9)
        .map(|(_, v)| v)
    }
}

impl Latencies {
    /// Records one successful operation that took `took`.
    pub fn record(&mut self, took: Duration) {
        let micros = u64::try_from(took.as_micros())
            .unwrap_or(MAX_MICROS)
            .clamp(1, MAX_MICROS);
        self.histogram
            .record(micros)
            .expect("clamped into the histogram's range");
    }

    /// Records one failed operation, by its error code.
    pub fn error(&mut self, code: &str) {
        *self.errors.entry(code.to_owned()).or_default() += 1;
    }

    /// Adds another worker's figures for the same operation.
    pub fn merge(&mut self, other: &Latencies) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms of the same bounds add");
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
    }

    pub fn summary(&self) -> Summary {
        let h = &self.histogram;
        let at = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        Summary {
            count: h.len(),
            errors: self.errors.clone(),
            mean_us: if h.is_empty() { 0.0 } else { h.mean() },
            p50_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: if h.is_empty() { 0 } else { h.max() },
        }
    }
}

/// One timed operation, for the plots: when it finished (ms from the run's start), how long it
/// took (µs), and the group's size then.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at_ms: u64,
    pub took_us: u64,
    pub size: u64,
}

/// The figures of every kind of operation in one run (or several runs merged): histograms for
/// the report and thresholds, every sample for the plots.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Measurements {
    operations: BTreeMap<String, Latencies>,
    samples: BTreeMap<String, Vec<Sample>>,
}

impl Measurements {
    /// Records one successful `operation` that finished at `at` (from the run's start) after
    /// `took`, in a group of `size`.
    pub fn record(&mut self, operation: &str, at: Duration, took: Duration, size: u64) {
        self.of(operation).record(took);
        self.samples
            .entry(operation.to_owned())
            .or_default()
            .push(Sample {
                at_ms: at.as_millis() as u64,
                took_us: took.as_micros() as u64,
                size,
            });
    }

    /// Every sample of `operation`, in the order recorded.
    pub fn samples(&self, operation: &str) -> &[Sample] {
        self.samples.get(operation).map_or(&[], Vec::as_slice)
    }

    pub fn operations(&self) -> impl Iterator<Item = &str> {
        self.operations.keys().map(String::as_str)
    }

    /// The latencies of `operation`, made on first use.
    pub fn of(&mut self, operation: &str) -> &mut Latencies {
        self.operations.entry(operation.to_owned()).or_default()
    }

    pub fn merge(&mut self, other: &Measurements) {
        for (operation, latencies) in &other.operations {
            self.of(operation).merge(latencies);
        }
        for (operation, samples) in &other.samples {
            let mine = self.samples.entry(operation.clone()).or_default();
            mine.extend_from_slice(samples);
            mine.sort_by_key(|s| s.at_ms);
        }
    }

    pub fn summaries(&self) -> BTreeMap<String, Summary> {
        self.operations
            .iter()
            .map(|(op, l)| (op.clone(), l.summary()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use mlschat_testkit::Rng;

    /// A latency spread over six orders of magnitude, as real ones are.
    fn latency(rng: &mut Rng) -> Duration {
        let digits = rng.next_u64() % 7;
        Duration::from_micros(1 + rng.next_u64() % 10u64.pow(digits as u32 + 1))
    }

    #[test]
    fn merged_workers_report_what_one_would_have() {
        for seed in 0..200 {
            let mut rng = Rng(seed);
            let mut whole = Measurements::default();
            let mut parts = vec![Measurements::default(); 1 + (rng.next_u64() % 4) as usize];
            for _ in 0..rng.next_u64() % 500 {
                let op = ["claim", "commit", "message"][(rng.next_u64() % 3) as usize];
                let part = (rng.next_u64() % parts.len() as u64) as usize;
                if rng.next_u64().is_multiple_of(10) {
                    whole.of(op).error("stale_epoch");
                    parts[part].of(op).error("stale_epoch");
                } else {
                    let took = latency(&mut rng);
                    whole.of(op).record(took);
                    parts[part].of(op).record(took);
                }
            }
            let mut merged = Measurements::default();
            for part in &parts {
                merged.merge(part);
            }
            assert_eq!(merged.summaries(), whole.summaries(), "seed {seed}");
        }
    }

    #[test]
    fn percentiles_rise_and_stay_within_a_thousandth() {
        for seed in 0..200 {
            let mut rng = Rng(seed);
            let mut latencies = Latencies::default();
            let mut exact = Vec::new();
            for _ in 0..1 + rng.next_u64() % 2_000 {
                let took = latency(&mut rng);
                latencies.record(took);
                exact.push(took.as_micros() as u64);
            }
            exact.sort_unstable();
            let s = latencies.summary();
            assert!(
                s.p50_us <= s.p90_us && s.p90_us <= s.p99_us,
                "seed {seed}: {s:?}"
            );
            assert!(
                s.p99_us <= s.p999_us && s.p999_us <= s.max_us,
                "seed {seed}: {s:?}"
            );
            assert_eq!(s.count, exact.len() as u64);
            // HDR keeps 3 significant digits: within 0.1% of the exact order statistic.
            let true_max = *exact.last().unwrap();
            assert!(
                s.max_us.abs_diff(true_max) <= true_max / 1000 + 1,
                "seed {seed}"
            );
        }
    }

    #[test]
    fn a_saved_run_reads_back_exactly() {
        for seed in 0..50 {
            let mut rng = Rng(seed);
            let mut run = Measurements::default();
            for i in 0..rng.next_u64() % 300 {
                let took = latency(&mut rng);
                run.record("commit", Duration::from_millis(i), took, i);
                if rng.next_u64().is_multiple_of(7) {
                    run.of("commit").error("stale_epoch");
                }
            }
            let saved = serde_json::to_string(&run).unwrap();
            let back: Measurements = serde_json::from_str(&saved).unwrap();
            assert_eq!(back.summaries(), run.summaries(), "seed {seed}");
            assert_eq!(back.samples("commit"), run.samples("commit"));
        }
        let hostile = r#"{"operations":{"x":{"recorded":[[0,1]],"errors":{}}},"samples":{}}"#;
        assert!(serde_json::from_str::<Measurements>(hostile).is_err());
    }

    #[test]
    fn errors_count_apart_from_latencies() {
        let mut l = Latencies::default();
        l.record(Duration::from_millis(3));
        l.error("too_many_requests");
        l.error("too_many_requests");
        l.error("timeout");
        let s = l.summary();
        assert_eq!((s.count, s.error_count()), (1, 3));
        assert!((s.error_rate() - 0.75).abs() < 1e-9);
        assert_eq!(Latencies::default().summary().error_rate(), 0.0);
    }
}
