//! The result of a run: the scenario as run, every operation's figures and each threshold's
//! verdict, as JSON; and the exit code a CI gate reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::runner::Outcome;
use crate::scenario::Scenario;
use crate::stats::Summary;
use crate::threshold::{Threshold, Verdict};

/// The exit code when a threshold fails (k6 uses the same), apart from the tool's own failures.
pub const THRESHOLDS_FAILED: i32 = 99;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: Scenario,
    pub operations: BTreeMap<String, Summary>,
    /// The same operations in raw in-process OpenMLS at the same size, when asked for.
    #[serde(default)]
    pub baseline: BTreeMap<String, Summary>,
    pub thresholds: Vec<Judged>,
    /// Every threshold passed.
    pub passed: bool,
    /// Workers whose runs this report adds up (1 for a single run).
    pub workers: u32,
    /// Everything else the run measured, its samples and histograms included, so that reports
    /// merge.
    pub outcome: Outcome,
}

/// One threshold and what the run made of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Judged {
    pub rule: String,
    /// `pass`, `fail`, or `unmeasured` (the run did no such operation: a failure too).
    pub verdict: String,
    /// The measured value, in the rule's unit: microseconds, a fraction, or a count.
    pub actual: Option<f64>,
}

impl Report {
    /// The report of a run, judged by `thresholds`; its baseline is added by whoever measures
    /// one.
    pub fn new(scenario: Scenario, outcome: Outcome, thresholds: &[Threshold]) -> Self {
        let operations = outcome.measured.summaries();
        let thresholds: Vec<Judged> = thresholds
            .iter()
            .map(|t| {
                let (verdict, actual) = match t.judge(&operations) {
                    Verdict::Pass { actual } => ("pass", Some(actual)),
                    Verdict::Fail { actual } => ("fail", Some(actual)),
                    Verdict::Unmeasured => ("unmeasured", None),
                };
                Judged {
                    rule: t.to_string(),
                    verdict: verdict.into(),
                    actual,
                }
            })
            .collect();
        let passed = thresholds.iter().all(|j| j.verdict == "pass");
        Self {
            scenario,
            operations,
            baseline: BTreeMap::new(),
            thresholds,
            passed,
            workers: 1,
            outcome,
        }
    }

    /// Adds up workers' reports of one scenario, judged again by `thresholds`.
    pub fn merge(reports: Vec<Report>, thresholds: &[Threshold]) -> Result<Report, String> {
        let mut reports = reports.into_iter();
        let first = reports.next().ok_or("no report to merge")?;
        let scenario = first.scenario.clone();
        let mut outcome = first.outcome;
        let mut workers = first.workers;
        let mut baseline = first.baseline;
        for report in reports {
            if report.scenario != scenario {
                return Err(format!(
                    "reports of different scenarios: {:?} and {:?}",
                    scenario, report.scenario
                ));
            }
            workers += report.workers;
            outcome.measured.merge(&report.outcome.measured);
            outcome.commits += report.outcome.commits;
            outcome.seconds = outcome.seconds.max(report.outcome.seconds);
            outcome.notes.extend(report.outcome.notes);
            for (name, usage) in report.outcome.usage {
                let total = outcome.usage.entry(name).or_default();
                total.cpu_seconds += usage.cpu_seconds;
                total.memory_bytes += usage.memory_bytes;
                total.processes += usage.processes;
            }
            if baseline.is_empty() {
                baseline = report.baseline;
            }
        }
        // Workers loading one node each read all of its figures: they do not add up.
        if workers > 1 {
            outcome.node = None;
        }
        let mut merged = Report::new(scenario, outcome, thresholds);
        merged.workers = workers;
        merged.baseline = baseline;
        Ok(merged)
    }

    /// Bytes the node's database grew by per commit ordered in the measured phase.
    pub fn stored_bytes_per_commit(&self) -> Option<f64> {
        let node = self.outcome.node.as_ref()?;
        (self.outcome.commits > 0).then(|| node.stored_bytes / self.outcome.commits as f64)
    }

    pub fn exit_code(&self) -> i32 {
        if self.passed { 0 } else { THRESHOLDS_FAILED }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_report_judges_every_threshold_and_sets_the_exit_code() {
        let scenario = Scenario::parse("kind = \"join\"\nmembers = 100\njoins = 2\n", &[]).unwrap();
        let mut run = Outcome::default();
        run.measured.of("join").record(Duration::from_millis(40));
        run.measured.of("join").record(Duration::from_millis(60));
        let rules = |texts: &[&str]| -> Vec<Threshold> {
            texts.iter().map(|t| t.parse().unwrap()).collect()
        };
        let good = Report::new(scenario.clone(), run.clone(), &rules(&["join.p99<100ms"]));
        assert_eq!((good.passed, good.exit_code()), (true, 0));
        let bad = Report::new(
            scenario.clone(),
            run.clone(),
            &rules(&["join.p99<100ms", "join.max<50ms", "claim.p50<1s"]),
        );
        assert_eq!((bad.passed, bad.exit_code()), (false, THRESHOLDS_FAILED));
        let json = serde_json::to_value(&bad).unwrap();
        assert_eq!(json["scenario"]["kind"], "join");
        assert_eq!(json["operations"]["join"]["count"], 2);
        let verdicts: Vec<&str> = bad.thresholds.iter().map(|j| j.verdict.as_str()).collect();
        assert_eq!(verdicts, ["pass", "fail", "unmeasured"]);
        // No threshold: nothing to fail.
        assert!(Report::new(scenario, run, &[]).passed);
    }

    #[test]
    fn workers_merge_into_one_report_judged_again() {
        let scenario = Scenario::parse("kind = \"join\"\nmembers = 100\njoins = 2\n", &[]).unwrap();
        let worker = |millis: u64| {
            let mut run = Outcome::default();
            run.measured
                .of("join")
                .record(Duration::from_millis(millis));
            run.commits = 2;
            let saved = serde_json::to_string(&Report::new(scenario.clone(), run, &[])).unwrap();
            serde_json::from_str::<Report>(&saved).unwrap()
        };
        let rule: Threshold = "join.max<100ms".parse().unwrap();
        let merged =
            Report::merge(vec![worker(40), worker(150)], std::slice::from_ref(&rule)).unwrap();
        assert_eq!(merged.workers, 2);
        assert_eq!(merged.operations["join"].count, 2);
        assert_eq!(merged.outcome.commits, 4);
        // One worker alone passes; together they do not.
        assert!(
            Report::merge(vec![worker(40)], std::slice::from_ref(&rule))
                .unwrap()
                .passed
        );
        assert!(!merged.passed);
        let other = Scenario::parse("kind = \"join\"\nmembers = 200\njoins = 2\n", &[]).unwrap();
        let mut stranger = worker(1);
        stranger.scenario = other;
        assert!(Report::merge(vec![worker(1), stranger], &[]).is_err());
        assert!(Report::merge(vec![], &[]).is_err());
    }
}
