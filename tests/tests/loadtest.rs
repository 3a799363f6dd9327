//! `mlschat-loadtest` as its users run it (issue 12): every shipped scenario, small, against the
//! node it embeds (on the throwaway Postgres), with thresholds as a CI gate sets them; against
//! a delivery node process given by address; and the merge of workers' results. These runs are
//! the CI smoke test: a regression of the tool or the node that breaks a scenario, loses a
//! message or makes an operation fail turns them red.

use std::path::Path;
use std::process::{Command, Output};

use mlschat_tests::cluster::DeliveryProcess;
use mlschat_tests::{bin_dir, fresh_database};
use serde_json::Value;

fn loadtest(dir: &Path, args: &[&str]) -> (Output, Value) {
    let out = dir.join("report");
    let output = Command::new(bin_dir().join("mlschat-loadtest"))
        .args(args)
        .arg("--out")
        .arg(&out)
        .env("DATABASE_URL", fresh_database())
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let result = std::fs::read_to_string(out.join("result.json"))
        .map(|text| serde_json::from_str(&text).unwrap())
        .unwrap_or(Value::Null);
    (output, result)
}

/// [`loadtest`] with its arguments written as one line (none of them holds a space).
fn loadtest_line(dir: &Path, line: &str) -> (Output, Value) {
    loadtest(dir, &line.split_whitespace().collect::<Vec<_>>())
}

fn count(result: &Value, operation: &str) -> u64 {
    result["operations"][operation]["count"]
        .as_u64()
        .unwrap_or(0)
}

fn errors(result: &Value) -> Vec<String> {
    let operations = result["operations"].as_object().unwrap();
    operations
        .iter()
        .filter(|(_, s)| !s["errors"].as_object().unwrap().is_empty())
        .map(|(op, s)| format!("{op}: {}", s["errors"]))
        .collect()
}

fn assert_passed(output: &Output, result: &Value) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{stderr}",
        output.status
    );
    assert_eq!(result["passed"], true, "{stdout}");
    assert!(errors(result).is_empty(), "{:?}", errors(result));
}

#[test]
fn every_scenario_runs_and_passes_its_gate_against_an_embedded_node() {
    let dir = tempfile::tempdir().unwrap();

    // A group of 60 built 10 at a time, with the raw OpenMLS baseline beside it.
    let (output, result) = loadtest_line(
        dir.path(),
        concat!(
            "run build --set members=60 --set batch=10 --baseline ",
            "--threshold build.count>=7 --threshold build.processed.p99<60s ",
            "--threshold claim.error_rate<1% --quiet"
        ),
    );
    assert_passed(&output, &result);
    // 57 KeyPackage members in 6 commits, after the commit that added the 2 other full members.
    assert_eq!(count(&result, "build"), 7);
    assert_eq!(count(&result, "build.processed"), 7);
    assert_eq!(count(&result, "claim"), 57);
    let sizes: Vec<u64> = result["outcome"]["measured"]["samples"]["build"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [3, 13, 23, 33, 43, 53, 60]);
    for op in ["add", "remove", "message", "join"] {
        assert!(
            result["baseline"][op]["count"].as_u64().unwrap() >= 1,
            "{op}"
        );
    }
    assert!(result["outcome"]["node"]["stored_bytes"].as_f64().unwrap() > 0.0);
    for file in [
        "report.html",
        "latency-by-size.svg",
        "latency-over-time.svg",
        "throughput.svg",
    ] {
        assert!(dir.path().join("report").join(file).exists(), "{file}");
    }

    // Open-loop messages: every text reaches every sampled receiver, and is counted once.
    let (output, result) = loadtest_line(
        dir.path(),
        concat!(
            "run messaging --set members=30 --set per_second=20 --set seconds=3 ",
            "--set full_members=3 --threshold message.count>=118 ",
            "--threshold message.p99<30s --quiet"
        ),
    );
    assert_passed(&output, &result);
    let sent = count(&result, "message.sent");
    assert_eq!(sent, 60);
    assert_eq!(count(&result, "message"), 2 * sent);

    // Churn by two admins whose commits race.
    let (output, result) = loadtest_line(
        dir.path(),
        concat!(
            "run churn --set members=20 --set changes_per_second=6 --set batch=2 ",
            "--set committers=2 --set seconds=4 --threshold add.count>=6 ",
            "--threshold remove.count>=5 --quiet"
        ),
    );
    assert_passed(&output, &result);
    assert_eq!(count(&result, "add") + count(&result, "remove"), 12);
    // Each timed until the sampled members had its epoch, as its committer reported it.
    assert_eq!(count(&result, "add.processed"), count(&result, "add"));
    assert_eq!(count(&result, "remove.processed"), count(&result, "remove"));

    // One committer. Processing at a receiver takes time: a zero `add.processed` would be a
    // wrong epoch, matched early.
    let (output, result) = loadtest_line(
        dir.path(),
        concat!(
            "run churn --set members=20 --set changes_per_second=4 ",
            "--set committers=1 --set seconds=2 ",
            "--threshold add.processed.p50>0.1ms --quiet"
        ),
    );
    assert_passed(&output, &result);
    assert_eq!((count(&result, "add"), count(&result, "remove")), (4, 4));
    assert_eq!(count(&result, "add.processed"), 4);
    assert_eq!(count(&result, "remove.processed"), 4);

    // Joins: each joiner joins from its Welcome and the sealed tree, and is removed again.
    let (output, result) = loadtest_line(
        dir.path(),
        "run join --set members=40 --set joins=3 --threshold join.count>=3 --quiet",
    );
    assert_passed(&output, &result);
    assert_eq!(count(&result, "remove"), 3);

    // Two-member groups: the sampled partner decrypts its texts.
    let (output, result) = loadtest_line(
        dir.path(),
        concat!(
            "run small-groups --set groups=120 --threshold create.count>=120 ",
            "--threshold message.count>=2 --quiet"
        ),
    );
    assert_passed(&output, &result);
    assert_eq!(result["outcome"]["commits"], 120);
}

#[test]
fn a_failed_threshold_fails_the_gate_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let (output, result) = loadtest_line(
        dir.path(),
        concat!(
            "run build --set members=10 --set batch=5 --threshold build.p50<1us ",
            "--threshold build.count>=1 --threshold join.count>=1 -q"
        ),
    );
    assert_eq!(output.status.code(), Some(99));
    let verdicts: Vec<&str> = result["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["fail", "pass", "unmeasured"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("threshold build.p50<0.001ms: fail"),
        "{stdout}"
    );

    // The merge of two workers' results adds them up and judges them again.
    let first = dir.path().join("report/result.json");
    let second = dir.path().join("second.json");
    std::fs::copy(&first, &second).unwrap();
    let merged = dir.path().join("merged");
    let output = Command::new(bin_dir().join("mlschat-loadtest"))
        .arg("merge")
        .args([&first, &second])
        .args(["--threshold", "build.count>=4", "--out"])
        .arg(&merged)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let result: Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("result.json")).unwrap())
            .unwrap();
    assert_eq!(result["workers"], 2);
    assert_eq!(count(&result, "build"), 6);
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    for (args, code, says) in [
        (
            &["run", "nonsense"][..],
            1,
            "neither a file nor a shipped scenario",
        ),
        (
            &["run", "build", "--set", "members=1"],
            1,
            "members must be 2",
        ),
        (
            &["run", "build", "--threshold", "build.p99<fast"],
            2,
            "a latency needs a unit",
        ),
        (&["run", "build", "--node", "127.0.0.1:1"], 2, "--pin"),
        (
            &["run", "build", "--node", "127.0.0.1:1", "--pin", "abc"],
            1,
            "64-hex-digit",
        ),
        (
            &["merge", "/nonexistent.json"],
            1,
            "reading /nonexistent.json",
        ),
    ] {
        let (output, _) = loadtest(dir.path(), args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let not_a_result = dir.path().join("x.json");
    std::fs::write(&not_a_result, "{\"scenario\": 1}").unwrap();
    let (output, _) = loadtest(dir.path(), &["merge", not_a_result.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a result"));
}

/// Two node processes on one Postgres, given by address: members are spread over both, so every
/// text reaches a receiver on the other process through its push (LISTEN/NOTIFY).
#[test]
fn node_processes_given_by_address_are_loaded_and_their_metrics_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/loadtest-node.toml");
    // The shipped configuration, through the environment as a container would set it.
    let settings: Vec<(String, String)> = toml_settings(&std::fs::read_to_string(config).unwrap());
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let database = fresh_database();
    let start = |name: &str| {
        let data = dir.path().join(name);
        DeliveryProcess::start(bin_dir(), &data, Some(&database), &settings).unwrap()
    };
    // One organisation's processes share its certificate, so that members of either are one
    // node's members (and contacts of each other).
    let first = start("a");
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    for file in ["node-cert.der", "node-key.der"] {
        std::fs::copy(first.data_dir().join(file), dir.path().join("b").join(file)).unwrap();
    }
    let nodes = [first, start("b")];
    assert_eq!(nodes[0].fingerprint, nodes[1].fingerprint);
    let mut args: Vec<&str> = vec!["run", "messaging", "--set", "members=30"];
    args.extend(["--set", "per_second=10", "--set", "seconds=2", "-q"]);
    for node in &nodes {
        args.extend(["--node", &node.address, "--pin", &node.fingerprint]);
        args.extend(["--admin", &node.admin]);
    }
    let (output, result) = loadtest(dir.path(), &args);
    assert_passed(&output, &result);
    assert_eq!(count(&result, "message.sent"), 20);
    assert_eq!(count(&result, "message"), 40);
    let side = &result["outcome"]["node"];
    assert!(side["stored_bytes"].as_f64().unwrap() > 0.0, "{side}");
    assert_eq!(side["refusals"], serde_json::json!({}), "{side}");
    // Both processes had full members: the creator (who sends) on the first, a receiver on
    // the second, so the texts counted above crossed from one process to the other.
    for node in &nodes {
        let metrics = node.admin_get("/metrics").unwrap();
        let subscribed = "mlschat_requests_total{kind=\"subscribe\",result=\"ok\"}";
        assert!(metrics.contains(subscribed), "{metrics}");
    }
}

/// A TOML file's keys as `MLSCHAT__SECTION__KEY` variables.
fn toml_settings(text: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut settings = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap().trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_uppercase();
        } else if let Some((key, value)) = line.split_once('=') {
            let name = format!("MLSCHAT__{section}__{}", key.trim().to_uppercase());
            settings.push((name, value.trim().to_owned()));
        }
    }
    settings
}
