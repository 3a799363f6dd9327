//! `mlschat-loadtest`: group add/remove and messaging at scale against real delivery nodes
//! (issue 12).
//!
//! Built so far: its I/O-free core, what every scenario and every worker shares.
//! - [`scenario`]: what a run does, from a TOML file in `loadtest/scenarios/` with `--set`
//!   overrides, checked before anything starts.
//! - [`stats`]: per-operation HDR latency histograms and errors by wire code; they merge
//!   exactly, so workers on several machines add up to one report.
//! - [`threshold`]: the `--threshold 'commit.p99<250ms'` rules that make the exit code of a
//!   CI gate.
//! - [`report`]: the JSON result (scenario, figures, verdicts) and the exit code of a gate.
//! - [`schedule`]: open-loop arrivals (wrk2's way): operations fall due at a fixed rate, and
//!   latency runs from when each was due, so a stalled system cannot hide its queueing.
//!
//! Not built yet: the driver that runs scenarios against real nodes, the live display, the
//! plots and the binary.

pub mod report;
pub mod scenario;
pub mod schedule;
pub mod stats;
pub mod threshold;

/// Seeded randomness for the property tests: SplitMix64, the same sequence for the same seed
/// everywhere.
#[cfg(test)]
mod test_rng {
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }
}
