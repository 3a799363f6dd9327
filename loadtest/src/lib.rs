//! `mlschat-loadtest`: group add/remove and messaging at scale against real delivery nodes
//! (issue 12). The binary is `src/bin/mlschat-loadtest.rs`; README.md says how to use it.
//!
//! I/O-free core, what every scenario and every worker shares:
//! - [`scenario`]: what a run does, from a TOML file in `loadtest/scenarios/` with `--set`
//!   overrides, checked before anything starts.
//! - [`schedule`]: open-loop arrivals (wrk2's way): operations fall due at a fixed rate, and
//!   latency runs from when each was due, so a stalled system cannot hide its queueing.
//! - [`stats`]: per-operation HDR latency histograms, errors by wire code, and samples for the
//!   plots; they merge exactly, so workers on several machines add up to one report.
//! - [`threshold`]: the `--threshold 'commit.p99<250ms'` rules that make a CI gate's exit code.
//! - [`report`]: the JSON result (scenario, figures, verdicts) and the gate's exit code.
//!
//! Drivers, doing the I/O:
//! - [`target`]: the node under load (given, or embedded in this process) and its side of the
//!   figures (`/metrics`, CPU and memory of local processes).
//! - [`delay`]: a network's delay between members and nodes (a UDP relay), for figures of
//!   round trips on a machine without `tc netem`.
//! - [`crowd`]: KeyPackage members (cheap: a registration each) and full members (real peers,
//!   each a durable profile and the sync core on its own thread).
//! - [`runner`]: sets up each scenario's members and measures its operations.
//! - [`baseline`]: the same operations in raw in-process OpenMLS, in the same run.
//! - [`plot`]: the SVG report.
//! - [`progress`]: the live display.

pub mod baseline;
pub mod crowd;
pub mod delay;
pub mod plot;
pub mod progress;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod schedule;
pub mod stats;
pub mod target;
pub mod threshold;
