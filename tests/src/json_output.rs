//! The documented shape of every `mlschat -o json` report (`docs/json-output.schema.json`),
//! checked on each report the tests see: `PeerProcess` checks every line its commands print,
//! and `tests/json_output.rs` runs every verb so that none goes unchecked.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// The schema, as committed: a change to it rebuilds the tests.
const SCHEMA: &str = include_str!("../../docs/json-output.schema.json");

/// The schema's definitions that describe a verb's (or an API method's) output. The others
/// (`GroupSummary`, `Member`, …) are the types they are made of, and start with a capital.
pub fn documented() -> BTreeSet<String> {
    schema()["$defs"]
        .as_object()
        .expect("the schema has $defs")
        .keys()
        .filter(|name| name.starts_with(|c: char| c.is_ascii_lowercase()))
        .cloned()
        .collect()
}

/// Which definition describes the output of `mlschat ARGS`; `None` for a verb with no report
/// (`daemon`). ARGS start at the verb (global flags come before it).
pub fn output_of(args: &[&str]) -> Option<String> {
    let verb = *args.first()?;
    let sub = args.get(1).copied().unwrap_or_default();
    Some(match (verb, sub) {
        ("daemon", _) => return None,
        ("init", _) => "whoami".into(),
        ("group", "list") => "groups".into(),
        ("group", "members") => "members".into(),
        ("contact", "list") => "contacts".into(),
        ("request", "list") => "requests".into(),
        ("home", _) => "home".into(),
        ("receive", _) if args.contains(&"--follow") => "receive.follow".into(),
        ("group" | "contact" | "request", sub) => format!("{verb}.{sub}"),
        (verb, _) => verb.into(),
    })
}

/// Checks one report against the definition `output`, and records that `output` was checked.
pub fn check(output: &str, report: &Value) -> anyhow::Result<()> {
    let validator = validator(output)?;
    let problems: Vec<String> = validator
        .iter_errors(report)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if !problems.is_empty() {
        bail!(
            "this `{output}` report does not follow docs/json-output.schema.json:\n  {}\n{report}",
            problems.join("\n  ")
        );
    }
    CHECKED.lock().unwrap().insert(output.to_owned());
    Ok(())
}

/// Checks each line of a command's report (one JSON value per line).
pub fn check_lines(output: &str, text: &str) -> anyhow::Result<()> {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let report: Value = serde_json::from_str(line)
            .with_context(|| format!("a `{output}` report line is not JSON: {line}"))?;
        check(output, &report)?;
    }
    Ok(())
}

/// The error line of a failed command, on its stderr (log lines, which are not JSON, aside).
pub fn check_error(stderr: &str) -> anyhow::Result<()> {
    let line = stderr
        .lines()
        .rfind(|l| l.starts_with('{'))
        .with_context(|| format!("no JSON error line on stderr: {stderr}"))?;
    check_lines("error", line)
}

/// The definitions checked so far in this test process.
pub fn checked() -> BTreeSet<String> {
    CHECKED.lock().unwrap().clone()
}

static CHECKED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn schema() -> &'static Value {
    static SCHEMA_VALUE: OnceLock<Value> = OnceLock::new();
    SCHEMA_VALUE.get_or_init(|| serde_json::from_str(SCHEMA).expect("the schema is JSON"))
}

fn validator(output: &str) -> anyhow::Result<&'static jsonschema::Validator> {
    static VALIDATORS: OnceLock<BTreeMap<String, jsonschema::Validator>> = OnceLock::new();
    let validators = VALIDATORS.get_or_init(|| {
        documented()
            .into_iter()
            .map(|name| {
                // The whole document, pointed at one definition.
                let mut root = schema().clone();
                root["$ref"] = json!(format!("#/$defs/{name}"));
                let validator = jsonschema::validator_for(&root)
                    .unwrap_or_else(|e| panic!("the schema's `{name}` is not valid: {e}"));
                (name, validator)
            })
            .collect()
    });
    validators
        .get(output)
        .with_context(|| format!("docs/json-output.schema.json does not document `{output}`"))
}
