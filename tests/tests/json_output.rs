//! Every `-o json` report and every daemon API answer follows `docs/json-output.schema.json`
//! (issue 11's acceptance): each verb is run here, in groups kept in files and in groups on a
//! delivery node, and each report checked; every verb of `mlschat --help` must be documented,
//! and every documented output must have been seen.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use mlschat_node::kind::ErrorKind;
use mlschat_tests::json_output::{self, check, check_error, check_lines, output_of};
use mlschat_tests::{Node, bin_dir, eventually};
use serde_json::{Value, json};

/// `mlschat -o json --profile PROFILE ARGS` in `dir`, for groups kept in files: its report
/// checked, its stdout returned.
fn offline(dir: &Path, profile: &str, args: &[&str]) -> Value {
    let output = Command::new(bin_dir().join("mlschat"))
        .current_dir(dir)
        .args(["--data-dir", ".", "--profile", profile, "-o", "json"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "mlschat {args:?}: {stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let verb = output_of(args).unwrap();
    check_lines(&verb, &stdout).unwrap();
    let last = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("{args:?} printed nothing"));
    serde_json::from_str(last).unwrap()
}

/// The first line a long-running command (`receive --follow`, `chat`) prints.
fn first_line(mut child: std::process::Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    line
}

#[test]
fn every_report_follows_its_documentation() {
    in_files();
    through_a_delivery_node();
    let unseen: Vec<String> = json_output::documented()
        .difference(&json_output::checked())
        .cloned()
        .collect();
    assert!(
        unseen.is_empty(),
        "documented but never checked (run them here): {unseen:?}"
    );
}

fn in_files() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let run = |profile: &str, args: &[&str]| offline(dir, profile, args);
    for user in ["ann", "ben", "cid"] {
        run(user, &["init", "--user", user]);
    }
    run("ann", &["home", "show"]);
    run("ben", &["keypackage", "--out", "ben.kp"]);
    run("cid", &["keypackage", "--out", "cid.kp"]);
    let team = run("ann", &["group", "create", "team"]);
    let id = team["id"].as_str().unwrap().to_owned();
    let add = ["group", "add", "team", "ben.kp", "cid.kp"];
    run(
        "ann",
        &[&add[..], &["--out", "c1", "--welcome-out", "w1"]].concat(),
    );
    run("ben", &["receive", "w1"]);
    run("ann", &["send", "team", "hello", "--out", "m1"]);
    assert_eq!(run("ben", &["receive", "m1"])["text"], "hello");
    run("ben", &["group", "update", &id, "--out", "u1"]);
    assert_eq!(run("ann", &["receive", "u1"])["event"], "commit");
    run("ann", &["group", "remove", "team", "cid", "--out", "r1"]);
    run("ben", &["receive", "r1"]);
    run("ben", &["group", "leave", &id, "--out", "l1"]);
    assert_eq!(run("ann", &["receive", "l1"])["event"], "proposal");
    run(
        "ann",
        &["group", "set", "team", "--topic", "the plan", "--out", "s1"],
    );
    assert_eq!(run("ben", &["receive", "s1"])["event"], "commit");
    run("ann", &["group", "rename", "team", "crew"]);
    run("ann", &["outbox", "--out", "o1"]);
    assert!(
        !run("ann", &["history", "crew"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    run("ann", &["group", "list"]);
    run("ann", &["group", "members", "crew"]);
    run("ann", &["whoami"]);
    run("ann", &["status"]);
    // A failure: its error line on stderr.
    let output = Command::new(bin_dir().join("mlschat"))
        .current_dir(dir)
        .args(["--data-dir", ".", "--profile", "ann", "-o", "json"])
        .args(["receive", "ben.kp"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    check_error(&String::from_utf8_lossy(&output.stderr)).unwrap();
}

fn through_a_delivery_node() {
    // Every `cli` and `try_call` below checks what it gets (`PeerProcess`).
    let node = Node::start();
    let mut alice = node.peer("alice");
    let bob = node.peer("bob");
    let mallory = node.peer("mallory");
    alice.meet(&bob).unwrap(); // `invite` and `contact add`
    alice.cli(&["contact", "list"]).unwrap();
    let verify = alice.cli(&["contact", "verify", "bob"]).unwrap();
    let number: Value = serde_json::from_str(&verify).unwrap();
    let number = number["safety_number"].as_str().unwrap();
    alice
        .cli(&["contact", "verify", "bob", "--matches", number])
        .unwrap();
    bob.knows(&mallory).unwrap();
    bob.cli(&["contact", "remove", "mallory"]).unwrap();
    mallory.knows(&bob).unwrap();
    bob.cli(&["sync"]).unwrap();
    alice
        .cli(&[
            "home",
            "set",
            &node.process.address,
            &node.process.fingerprint,
        ])
        .unwrap();
    let team: Value =
        serde_json::from_str(&alice.cli(&["group", "create", "team"]).unwrap()).unwrap();
    let id = team["id"].as_str().unwrap().to_owned();
    alice.cli(&["group", "add", "team", "bob"]).unwrap();
    alice.cli(&["send", "team", "hi"]).unwrap();
    bob.cli(&["sync"]).unwrap();
    bob.cli(&["history", &id]).unwrap();
    bob.cli(&["group", "members", &id]).unwrap();
    // Two invitations from a stranger: one accepted, one declined.
    for name in ["m1", "m2"] {
        mallory.cli(&["group", "create", name]).unwrap();
        mallory.cli(&["group", "add", name, "bob"]).unwrap();
    }
    bob.cli(&["sync"]).unwrap();
    let requests: Value = serde_json::from_str(&bob.cli(&["request", "list"]).unwrap()).unwrap();
    let [first, second] = requests.as_array().unwrap().as_slice() else {
        panic!("two requests wait: {requests}");
    };
    bob.cli(&["request", "accept", first["group"].as_str().unwrap()])
        .unwrap();
    bob.cli(&["request", "decline", second["group"].as_str().unwrap()])
        .unwrap();
    bob.cli(&["group", "leave", first["group"].as_str().unwrap()])
        .unwrap();
    alice
        .cli(&[
            "group", "set", "team", "--topic", "the plan", "--admin", "bob",
        ])
        .unwrap();
    alice.cli(&["group", "update", "team"]).unwrap();
    alice.cli(&["group", "remove", "team", "bob"]).unwrap();
    assert_eq!(alice.exit_code(&["send", "no-such-group", "x"]).unwrap(), 4);

    // The daemon's API, and the verbs that need a daemon.
    alice.start().unwrap();
    alice.try_call("status", json!({})).unwrap();
    alice.try_call("alerts.ack", json!({})).unwrap();
    alice.cli(&["status", "--ack"]).unwrap();
    alice.try_call("events", json!({"after": 0})).unwrap();
    alice.try_call("subscribe", json!({})).unwrap();
    let error = alice
        .try_call("history", json!({"group": "no-such-group"}))
        .unwrap_err();
    assert_eq!(error["data"]["kind"], "unknown");
    let follow = first_line(alice.spawn(&["receive", "--follow"]).unwrap());
    check_lines("receive.follow", &follow).unwrap();
    let mut chat = alice.spawn(&["chat", "team"]).unwrap();
    chat.stdin.take(); // nothing to say
    let chat_line = first_line(chat);
    check_lines(&output_of(&["chat"]).unwrap(), &chat_line).unwrap();
    alice.cli(&["send", "team", "through the daemon"]).unwrap();
    eventually("alice's own text is in her history", || {
        alice
            .cli(&["history", "team"])
            .unwrap()
            .contains("through the daemon")
    });
}

/// `mlschat ARGS --help`.
fn help(args: &[&str]) -> String {
    let output = Command::new(bin_dir().join("mlschat"))
        .args(args)
        .arg("--help")
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap()
}

/// Every verb path of the CLI (`send`, `group add`, …), from `--help`, walked down.
fn verb_paths() -> Vec<Vec<String>> {
    let commands = |args: &[&str]| -> Vec<String> {
        help(args)
            .lines()
            .skip_while(|l| *l != "Commands:")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_whitespace().next())
            .filter(|verb| *verb != "help")
            .map(str::to_owned)
            .collect()
    };
    let mut paths = Vec::new();
    for verb in commands(&[]) {
        let subs = commands(&[&verb]);
        if subs.is_empty() {
            paths.push(vec![verb.clone()]);
        }
        for sub in subs {
            paths.push(vec![verb.clone(), sub]);
        }
    }
    paths
}

/// Every verb `mlschat --help` lists (and each sub-verb) has its documented output.
#[test]
fn every_verb_is_documented() {
    let documented = json_output::documented();
    let mut verbs = 0;
    for path in verb_paths() {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        verbs += 1;
        match output_of(&path) {
            Some(output) => assert!(
                documented.contains(&output),
                "`mlschat {}` prints `{output}`, which docs/json-output.schema.json lacks",
                path.join(" ")
            ),
            None => assert_eq!(path, ["daemon"], "only the daemon prints no report"),
        }
    }
    assert!(verbs > 25, "only {verbs} verbs found in --help");
    // The API's error kinds are the ones the schema lists, and no others.
    for kind in ErrorKind::ALL {
        let error = json!({"code": -32000, "message": "m", "data": {"kind": kind.as_str()}});
        check("api.error", &error).unwrap();
    }
    let unknown = json!({"code": -32000, "message": "m", "data": {"kind": "no_such_kind"}});
    assert!(check("api.error", &unknown).is_err());
    check(
        "api.error",
        &json!({"code": -32601, "message": "no method"}),
    )
    .unwrap();
}

/// Every argument and option of every verb says in `--help` what it is (issue 11, finding 7:
/// most were bare names).
#[test]
fn every_argument_is_described() {
    let mut bare = Vec::new();
    for path in verb_paths() {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&path);
        let lines: Vec<&str> = text.lines().collect();
        let mut in_list = false;
        for (i, line) in lines.iter().enumerate() {
            if *line == "Arguments:" || *line == "Options:" {
                in_list = true;
                continue;
            }
            let item = line.trim_start();
            let indent = line.len() - item.len();
            if line.trim().is_empty() {
                in_list = false;
            }
            // An entry starts at a small indent; its description follows on the line, after
            // two spaces, or on the next line, indented further.
            if !in_list || indent > 6 || line.trim().is_empty() {
                continue;
            }
            let on_the_line = item.split("  ").skip(1).any(|t| !t.trim().is_empty());
            let below = lines.get(i + 1).is_some_and(|next| {
                let text = next.trim_start();
                !text.is_empty() && next.len() - text.len() > indent + 2
            });
            if !on_the_line && !below {
                bare.push(format!("mlschat {}: {}", path.join(" "), item.trim()));
            }
        }
    }
    assert!(
        bare.is_empty(),
        "arguments without a description:\n{}",
        bare.join("\n")
    );
}
