//! Scenarios: what a run does, from a TOML file in `loadtest/scenarios/`, with `--set KEY=VALUE`
//! overrides applied before it is checked. Each kind names what the issue asks to measure.

use serde::{Deserialize, Serialize};

/// One scenario, by its `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Scenario {
    /// Build one group to `members`, adding `batch` per commit; report add latency against
    /// group size.
    Build {
        members: u64,
        #[serde(default = "default_batch")]
        batch: u64,
        /// Members with real MLS state who process every commit (the rest are KeyPackages).
        #[serde(default = "default_full_members")]
        full_members: u64,
        /// Stop building after this long, and report the size reached: where a size stops
        /// being practical is a result too.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stop_after_seconds: Option<u64>,
    },
    /// In a group of `members`, add and remove members at `changes_per_second`, `batch` per
    /// commit, by `committers` admins at once (their commits race), for `seconds`.
    Churn {
        members: u64,
        changes_per_second: f64,
        #[serde(default = "default_one")]
        batch: u64,
        #[serde(default = "default_one")]
        committers: u64,
        seconds: u64,
        #[serde(default = "default_full_members")]
        full_members: u64,
    },
    /// Messages at `per_second` (open loop) in a group of `members` for `seconds`; latency at
    /// the sampled full members.
    Messaging {
        members: u64,
        per_second: f64,
        seconds: u64,
        #[serde(default = "default_full_members")]
        full_members: u64,
    },
    /// `groups` two-member groups, each with one message.
    SmallGroups { groups: u64 },
    /// `joins` joins (Welcome plus tree fetch) into a group of `members`.
    Join { members: u64, joins: u64 },
}

fn default_batch() -> u64 {
    100
}
fn default_full_members() -> u64 {
    3
}
fn default_one() -> u64 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario: {0}")]
    Parse(String),
    #[error("--set {0:?}: give KEY=VALUE, with a key of the scenario (e.g. --set members=10000)")]
    Override(String),
    #[error("scenario: {0}")]
    Invalid(String),
}

/// The largest group a scenario may ask for: beyond it the tool says where it stops rather
/// than trying for hours.
pub const MAX_MEMBERS: u64 = 1_000_000;

impl Scenario {
    /// Parses a scenario file's text, applies `overrides` (`KEY=VALUE`, VALUE as in TOML) and
    /// checks the result.
    pub fn parse(text: &str, overrides: &[String]) -> Result<Self, ScenarioError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ScenarioError::Parse(e.message().to_owned()))?;
        for pair in overrides {
            let (key, value) = pair
                .split_once('=')
                .filter(|(k, v)| !k.trim().is_empty() && !v.trim().is_empty())
                .ok_or_else(|| ScenarioError::Override(pair.clone()))?;
            let key = key.trim();
            if key == "kind" {
                return Err(ScenarioError::Override(pair.clone()));
            }
            // A value in TOML's syntax (a number, true, "text"); anything else as a string.
            let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.trim().to_owned()));
            table.insert(key.to_owned(), value);
        }
        let scenario: Scenario = table
            .try_into()
            .map_err(|e: toml::de::Error| ScenarioError::Parse(e.message().to_owned()))?;
        scenario.check()?;
        Ok(scenario)
    }

    /// The group size and commit batch its raw OpenMLS baseline is measured at.
    pub fn baseline_size(&self) -> (u64, u64) {
        match *self {
            Scenario::Build { members, batch, .. } | Scenario::Churn { members, batch, .. } => {
                (members, batch)
            }
            Scenario::Messaging { members, .. } | Scenario::Join { members, .. } => (members, 1),
            Scenario::SmallGroups { .. } => (2, 1),
        }
    }

    fn check(&self) -> Result<(), ScenarioError> {
        const DAY: u64 = 86_400;
        match *self {
            Scenario::Build {
                members,
                batch,
                full_members,
                stop_after_seconds,
            } => {
                within("members", members, 2, MAX_MEMBERS)?;
                within("full_members", full_members, 1, members)?;
                within(
                    "stop_after_seconds",
                    stop_after_seconds.unwrap_or(1),
                    1,
                    DAY,
                )?;
                within("batch", batch, 1, 1_000)
            }
            Scenario::Churn {
                members,
                changes_per_second,
                batch,
                committers,
                seconds,
                full_members,
            } => {
                within("members", members, 2, MAX_MEMBERS)?;
                within("full_members", full_members, 1, members)?;
                rate("changes_per_second", changes_per_second)?;
                within("batch", batch, 1, 1_000)?;
                within("seconds", seconds, 1, DAY)?;
                within("committers", committers, 1, members)
            }
            Scenario::Messaging {
                members,
                per_second,
                seconds,
                full_members,
            } => {
                within("members", members, 2, MAX_MEMBERS)?;
                within("full_members", full_members, 1, members)?;
                rate("per_second", per_second)?;
                within("seconds", seconds, 1, DAY)
            }
            Scenario::SmallGroups { groups } => within("groups", groups, 1, MAX_MEMBERS),
            Scenario::Join { members, joins } => {
                within("members", members, 2, MAX_MEMBERS)?;
                within("joins", joins, 1, 100_000)
            }
        }
    }
}

/// `name`'s `value` is within `lo..=hi`, or the error says so.
fn within(name: &str, value: u64, lo: u64, hi: u64) -> Result<(), ScenarioError> {
    if (lo..=hi).contains(&value) {
        return Ok(());
    }
    Err(ScenarioError::Invalid(format!(
        "{name} must be {lo} to {hi}, not {value}"
    )))
}

/// A rate per second: above 0, at most a million.
fn rate(name: &str, value: f64) -> Result<(), ScenarioError> {
    if value.is_finite() && value > 0.0 && value <= 1e6 {
        return Ok(());
    }
    Err(ScenarioError::Invalid(format!(
        "{name} must be above 0 and at most 1000000, not {value}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_scenario_parses() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            Scenario::parse(&text, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
        assert!(seen >= 5, "one file per kind at least, found {seen}");
    }

    #[test]
    fn overrides_apply_before_the_check() {
        let text = "kind = \"build\"\nmembers = 1000\n";
        let s = Scenario::parse(text, &["members=10000".into(), "batch = 10".into()]).unwrap();
        assert_eq!(
            s,
            Scenario::Build {
                members: 10_000,
                batch: 10,
                full_members: 3,
                stop_after_seconds: None,
            }
        );
        let too_big = Scenario::parse(text, &["members=2000000".into()]).unwrap_err();
        assert!(too_big.to_string().contains("members must be"), "{too_big}");
    }

    #[test]
    fn bad_scenarios_say_what_is_wrong() {
        for (text, overrides, says) in [
            (
                "kind = \"build\"\nmembers = 1\n",
                vec![],
                "members must be 2",
            ),
            (
                "kind = \"build\"\nmembers = 10\nbatch = 0\n",
                vec![],
                "batch must be",
            ),
            (
                "kind = \"build\"\nmembers = 10\nfull_members = 11\n",
                vec![],
                "full_members",
            ),
            (
                "kind = \"build\"\nmembers = 10\nmembrs = 3\n",
                vec![],
                "unknown field",
            ),
            ("kind = \"flood\"\n", vec![], "unknown variant"),
            ("members = 10\n", vec![], "kind"),
            (
                "kind = \"build\"\nmembers = 10\n",
                vec!["members"],
                "KEY=VALUE",
            ),
            (
                "kind = \"build\"\nmembers = 10\n",
                vec!["kind=join"],
                "KEY=VALUE",
            ),
            (
                "kind = \"build\"\nmembers = 10\n",
                vec!["members=lots"],
                "invalid type",
            ),
            (
                "kind = \"messaging\"\nmembers = 10\nper_second = 0\nseconds = 5\n",
                vec![],
                "per_second must be",
            ),
            (
                "kind = \"churn\"\nmembers = 10\nchanges_per_second = 1\nseconds = 5\ncommitters = 0\n",
                vec![],
                "committers must be",
            ),
            ("kind = [\n", vec![], "scenario:"),
        ] {
            let overrides: Vec<String> = overrides.into_iter().map(String::from).collect();
            let error = Scenario::parse(text, &overrides).unwrap_err().to_string();
            assert!(error.contains(says), "{text:?} {overrides:?}: {error}");
        }
    }
}
