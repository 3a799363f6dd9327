//! The result of a run: the scenario as run, every operation's figures and each threshold's
//! verdict, as JSON; and the exit code a CI gate reads.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::scenario::Scenario;
use crate::stats::{Measurements, Summary};
use crate::threshold::{Threshold, Verdict};

/// The exit code when a threshold fails (k6 uses the same), apart from the tool's own failures.
pub const THRESHOLDS_FAILED: i32 = 99;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub operations: BTreeMap<String, Summary>,
    pub thresholds: Vec<Judged>,
    /// Every threshold passed.
    pub passed: bool,
}

/// One threshold and what the run made of it.
#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    pub rule: String,
    /// `pass`, `fail`, or `unmeasured` (the run did no such operation: a failure too).
    pub verdict: &'static str,
    /// The measured value, in the rule's unit: microseconds, a fraction, or a count.
    pub actual: Option<f64>,
}

impl Report {
    pub fn new(scenario: Scenario, measured: &Measurements, thresholds: &[Threshold]) -> Self {
        let operations = measured.summaries();
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
                    verdict,
                    actual,
                }
            })
            .collect();
        let passed = thresholds.iter().all(|j| j.verdict == "pass");
        Self {
            scenario,
            operations,
            thresholds,
            passed,
        }
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
        let mut run = Measurements::default();
        run.of("join").record(Duration::from_millis(40));
        run.of("join").record(Duration::from_millis(60));
        let rules = |texts: &[&str]| -> Vec<Threshold> {
            texts.iter().map(|t| t.parse().unwrap()).collect()
        };
        let good = Report::new(scenario.clone(), &run, &rules(&["join.p99<100ms"]));
        assert_eq!((good.passed, good.exit_code()), (true, 0));
        let bad = Report::new(
            scenario.clone(),
            &run,
            &rules(&["join.p99<100ms", "join.max<50ms", "claim.p50<1s"]),
        );
        assert_eq!((bad.passed, bad.exit_code()), (false, THRESHOLDS_FAILED));
        let json = serde_json::to_value(&bad).unwrap();
        assert_eq!(json["scenario"]["kind"], "join");
        assert_eq!(json["operations"]["join"]["count"], 2);
        let verdicts: Vec<&str> = bad.thresholds.iter().map(|j| j.verdict).collect();
        assert_eq!(verdicts, ["pass", "fail", "unmeasured"]);
        // No threshold: nothing to fail.
        assert!(Report::new(scenario, &run, &[]).passed);
    }
}
