//! The baseline: the same operations in raw OpenMLS, in this process, with its in-memory store
//! and no network, at the same group size, measured in the same run. Each latency is the
//! committer's work plus one member's processing, the least any deployment could do.
//!
//! It shares the benchmarks' raw side (`node/benches/raw`), so every figure of the project is
//! set against the same baseline.

use std::time::{Duration, Instant};

use mlschat_testkit::raw::{Raw, Side, Timings, key_package};

use crate::stats::Measurements;

/// Raw OpenMLS at `members`: `reps` times, an add of `batch` fresh members and their removal
/// (`add`, `remove`: commit, merge, and one member processing it) and a message (`message`:
/// encrypt and decrypt); and one `join` (Welcome and tree) of a group that size.
pub fn measure(members: u64, batch: u64, reps: u32) -> Measurements {
    let members = members.max(2) as usize;
    let mut measured = Measurements::default();
    let kps: Vec<_> = (0..members)
        .map(|i| key_package(&format!("r{i}")))
        .collect();
    let mut timings = Timings::default();
    let started = Instant::now();
    let mut group = Raw::new(members, &kps, &mut timings);
    let mut record = |operation: &str, took: Duration| {
        measured.record(operation, started.elapsed(), took, members as u64);
    };
    for took in timings.0.values().flatten() {
        record("join", *took);
    }
    for rep in 0..reps {
        let fresh: Vec<_> = (0..batch)
            .map(|i| key_package(&format!("x{rep}-{i}")))
            .collect();
        let start = Instant::now();
        let commit = group.add(&fresh);
        group.process(&commit);
        record("add", start.elapsed());
        let start = Instant::now();
        let commit = group.remove(&fresh);
        group.process(&commit);
        record("remove", start.elapsed());
        let start = Instant::now();
        let message = group.send();
        group.process(&message);
        record("message", start.elapsed());
    }
    measured
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_measures_every_operation() {
        let measured = measure(20, 3, 2);
        let summaries = measured.summaries();
        for op in ["add", "remove", "message"] {
            assert_eq!(summaries[op].count, 2, "{op}");
        }
        assert_eq!(summaries["join"].count, 1);
    }
}
