//! Pass/fail rules for CI gates, as `--threshold` takes them: `OPERATION.METRIC OP LIMIT`, e.g.
//! `commit.p99<250ms`, `message.p50<=20ms`, `claim.max<2s`, `commit.errors<1`,
//! `message.error_rate<0.1%`, `join.count>=100`. A rule on an operation the run never did fails:
//! a gate must not pass because nothing was measured.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::stats::Summary;

#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub operation: String,
    pub metric: Metric,
    pub comparison: Comparison,
    /// Microseconds for latencies, a fraction for `error_rate`, a number for counts.
    pub limit: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// p50, p90, p99, p99.9 or max (quantile 1).
    Percentile(f64),
    Mean,
    Count,
    Errors,
    ErrorRate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Below,
    AtMost,
    Above,
    AtLeast,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("threshold {rule:?}: {why} (e.g. `commit.p99<250ms`, `message.error_rate<1%`)")]
pub struct ThresholdError {
    rule: String,
    why: String,
}

/// What a rule says of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass {
        actual: f64,
    },
    Fail {
        actual: f64,
    },
    /// The run has no figures for the operation.
    Unmeasured,
}

/// Each metric by the name rules give it.
const METRICS: [(&str, Metric); 10] = [
    ("p50", Metric::Percentile(0.5)),
    ("p90", Metric::Percentile(0.9)),
    ("p99", Metric::Percentile(0.99)),
    ("p99.9", Metric::Percentile(0.999)),
    ("p999", Metric::Percentile(0.999)),
    ("max", Metric::Percentile(1.0)),
    ("mean", Metric::Mean),
    ("count", Metric::Count),
    ("errors", Metric::Errors),
    ("error_rate", Metric::ErrorRate),
];

impl Metric {
    fn is_latency(self) -> bool {
        matches!(self, Metric::Percentile(_) | Metric::Mean)
    }

    fn of(self, s: &Summary) -> f64 {
        match self {
            Metric::Percentile(q) => s.percentile(q).unwrap_or(s.max_us) as f64,
            Metric::Mean => s.mean_us,
            Metric::Count => s.count as f64,
            Metric::Errors => s.error_count() as f64,
            Metric::ErrorRate => s.error_rate(),
        }
    }
}

impl FromStr for Threshold {
    type Err = ThresholdError;

    fn from_str(rule: &str) -> Result<Self, Self::Err> {
        let fail = |why: &str| ThresholdError {
            rule: rule.to_owned(),
            why: why.to_owned(),
        };
        let compact: String = rule.chars().filter(|c| !c.is_whitespace()).collect();
        let (at, comparison, width) = [
            ("<=", Comparison::AtMost),
            (">=", Comparison::AtLeast),
            ("<", Comparison::Below),
            (">", Comparison::Above),
        ]
        .into_iter()
        .find_map(|(op, c)| compact.find(op).map(|at| (at, c, op.len())))
        .ok_or_else(|| fail("no comparison (<, <=, >, >=)"))?;
        let (subject, limit) = (&compact[..at], &compact[at + width..]);
        let (operation, metric) = METRICS
            .into_iter()
            .find_map(|(name, metric)| {
                let operation = subject.strip_suffix(name)?.strip_suffix('.')?;
                Some((operation, metric))
            })
            .ok_or_else(|| match subject.contains('.') {
                true => {
                    fail("metrics are p50, p90, p99, p99.9, max, mean, count, errors, error_rate")
                }
                false => fail("name it OPERATION.METRIC"),
            })?;
        if operation.is_empty() {
            return Err(fail("no operation"));
        }
        let limit = parse_limit(limit, metric).ok_or_else(|| {
            fail(if metric.is_latency() {
                "a latency needs a unit: us, ms or s"
            } else if metric == Metric::ErrorRate {
                "an error rate is a percentage (1%) or a fraction (0.01)"
            } else {
                "a count is a number"
            })
        })?;
        Ok(Threshold {
            operation: operation.to_owned(),
            metric,
            comparison,
            limit,
        })
    }
}

fn parse_limit(text: &str, metric: Metric) -> Option<f64> {
    let number = |t: &str| t.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
    if metric.is_latency() {
        let (digits, scale) = [("us", 1.0), ("µs", 1.0), ("ms", 1e3), ("s", 1e6)]
            .into_iter()
            .find_map(|(unit, scale)| text.strip_suffix(unit).map(|d| (d, scale)))?;
        return number(digits).map(|v| v * scale);
    }
    if metric == Metric::ErrorRate {
        return match text.strip_suffix('%') {
            Some(percent) => number(percent).map(|v| v / 100.0),
            None => number(text),
        }
        .filter(|v| *v <= 1.0);
    }
    number(text)
}

impl Threshold {
    pub fn judge(&self, summaries: &BTreeMap<String, Summary>) -> Verdict {
        let Some(summary) = summaries.get(&self.operation) else {
            return Verdict::Unmeasured;
        };
        let actual = self.metric.of(summary);
        let holds = match self.comparison {
            Comparison::Below => actual < self.limit,
            Comparison::AtMost => actual <= self.limit,
            Comparison::Above => actual > self.limit,
            Comparison::AtLeast => actual >= self.limit,
        };
        if holds {
            Verdict::Pass { actual }
        } else {
            Verdict::Fail { actual }
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let metric = METRICS
            .into_iter()
            .find(|(_, m)| *m == self.metric)
            .map_or("?", |(name, _)| name);
        let op = match self.comparison {
            Comparison::Below => "<",
            Comparison::AtMost => "<=",
            Comparison::Above => ">",
            Comparison::AtLeast => ">=",
        };
        let limit = if self.metric.is_latency() {
            format!("{}ms", self.limit / 1e3)
        } else if self.metric == Metric::ErrorRate {
            format!("{}%", self.limit * 100.0)
        } else {
            format!("{}", self.limit)
        };
        write!(f, "{}.{metric}{op}{limit}", self.operation)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::Measurements;

    fn rule(text: &str) -> Threshold {
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn rules_parse_with_their_units() {
        let r = rule("commit.p99<250ms");
        assert_eq!(
            (r.operation.as_str(), r.metric, r.comparison, r.limit),
            (
                "commit",
                Metric::Percentile(0.99),
                Comparison::Below,
                250_000.0
            )
        );
        assert_eq!(rule("message.p50 <= 20 ms").limit, 20_000.0);
        assert_eq!(rule("claim.max<2s").limit, 2_000_000.0);
        assert_eq!(rule("join.p99.9<900us").metric, Metric::Percentile(0.999));
        assert_eq!(rule("message.error_rate<0.1%").limit, 0.001);
        assert_eq!(rule("message.error_rate<0.05").limit, 0.05);
        assert_eq!(rule("join.count>=100").comparison, Comparison::AtLeast);
        // Operations may hold dots of their own: the metric is after the last one.
        assert_eq!(rule("group.add.p50<1s").operation, "group.add");
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (text, says) in [
            ("commit.p99", "no comparison"),
            ("commit<250ms", "OPERATION.METRIC"),
            (".p99<1ms", "no operation"),
            ("commit.p42<1ms", "metrics are"),
            ("commit.p99<250", "needs a unit"),
            ("commit.p99<-1ms", "needs a unit"),
            ("commit.error_rate<150%", "percentage"),
            ("commit.count>many", "a number"),
        ] {
            let error = text.parse::<Threshold>().unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn a_rule_prints_as_it_parses() {
        for text in [
            "commit.p99<250ms",
            "message.p50<=20ms",
            "claim.max>2000ms",
            "join.p99.9>=0.9ms",
            "message.error_rate<0.1%",
            "join.count>=100",
            "commit.errors<1",
        ] {
            let parsed = rule(text);
            assert_eq!(rule(&parsed.to_string()), parsed, "{text} -> {parsed}");
        }
    }

    #[test]
    fn a_gate_judges_the_run_and_never_passes_on_nothing() {
        let mut run = Measurements::default();
        for ms in [10, 20, 30, 40, 300] {
            run.of("commit").record(Duration::from_millis(ms));
        }
        run.of("commit").error("stale_epoch");
        let summaries = run.summaries();
        assert!(matches!(
            rule("commit.p50<50ms").judge(&summaries),
            Verdict::Pass { .. }
        ));
        assert!(matches!(
            rule("commit.max<250ms").judge(&summaries),
            Verdict::Fail { actual } if (actual - 300_000.0).abs() < 300.0
        ));
        assert!(matches!(
            rule("commit.errors<1").judge(&summaries),
            Verdict::Fail { actual } if actual == 1.0
        ));
        assert!(matches!(
            rule("commit.error_rate<20%").judge(&summaries),
            Verdict::Pass { .. }
        ));
        assert_eq!(
            rule("message.p99<1s").judge(&summaries),
            Verdict::Unmeasured
        );
    }
}
