//! Errors that say what happened and what to do (issue 11, finding 7): each was measured
//! leaking an internal name (`ApplicationVerificationFailure`, `NoKeyPackage`, OpenMLS's
//! `Duplicate signature key in proposals and group.`).

use mlschat_tests::Node;

fn failure(result: anyhow::Result<String>) -> String {
    match result {
        Ok(out) => panic!("it succeeded: {out}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_wrong_pin_a_member_who_never_connected_and_a_second_add_are_explained() {
    let node = Node::start();
    let alice = node.peer("alice");
    let bob = node.peer("bob");
    // Bob's profile exists but he never connected: no KeyPackage of his is on the node.
    alice.knows(&bob).unwrap();
    alice.cli(&["group", "create", "team"]).unwrap();
    let error = failure(alice.cli(&["group", "add", "team", "bob"]));
    assert!(
        error.contains("bob has no KeyPackage on the delivery node")
            && error.contains("mlschat sync"),
        "{error}"
    );
    // Issue 19, finding 9: a KeyPackage file given for a group on the node said only "no
    // contact named bob.kp".
    let error = failure(alice.cli(&["group", "add", "team", "bob.kp"]));
    assert!(error.contains("add members by contact name"), "{error}");
    bob.cli(&["sync"]).unwrap();
    alice.cli(&["group", "add", "team", "bob"]).unwrap();
    let error = failure(alice.cli(&["group", "add", "team", "bob"]));
    assert!(
        error.contains("bob/laptop is already in this group"),
        "{error}"
    );
    // A pin that is not the node's certificate.
    let carol = node.peer("carol");
    let address = &node.process.address;
    carol
        .cli(&["home", "set", address, &"ab".repeat(32)])
        .unwrap();
    let error = failure(carol.cli(&["sync"]));
    assert!(
        error.contains("presents another certificate than the one pinned"),
        "{error}"
    );
    assert!(!error.contains("ApplicationVerificationFailure"), "{error}");
    // `home set` checks what it is given (it took anything).
    let pin = "ab".repeat(32);
    for (address, fingerprint, says) in [
        ("nonsense", pin.as_str(), "give HOST:PORT"),
        ("127.0.0.1:0", pin.as_str(), "give HOST:PORT"),
        (
            "no-such-host.invalid:4433",
            pin.as_str(),
            "cannot find the host",
        ),
        ("127.0.0.1:4433", "abc", "64 hex digits"),
    ] {
        let args = ["home", "set", address, fingerprint];
        let error = failure(carol.cli(&args));
        assert!(error.contains(says), "{error}");
        assert_eq!(carol.exit_code(&args).unwrap(), 3);
    }
}

/// Issue 11, finding 7: the same failure gave different exit codes offline and through the
/// daemon (an unknown profile: 4 and 1). Every error has one kind now, which both the CLI and
/// the daemon's answers carry: each failure here exits alike with and without a daemon.
#[test]
fn each_failure_exits_alike_offline_and_through_the_daemon() {
    let node = Node::start();
    let mut alice = node.peer("alice");
    let cases: &[(&[&str], i32)] = &[
        (&["send", "no-such-group", "hi"], 4),
        (&["group", "add", "no-such-group", "bob"], 4),
        (&["contact", "verify", "nobody"], 4),
        (&["contact", "remove", "nobody"], 4),
        (&["contact", "add", "mlschat:invite?name=x"], 3),
        (&["request", "decline", "ffff"], 3),
        (&["request", "accept", "ffff"], 3),
    ];
    let codes = |alice: &mlschat_tests::cluster::PeerProcess| -> Vec<i32> {
        cases
            .iter()
            .map(|(args, _)| alice.exit_code(args).unwrap())
            .collect()
    };
    let expected: Vec<i32> = cases.iter().map(|(_, code)| *code).collect();
    assert_eq!(codes(&alice), expected, "without a daemon");
    alice.start().unwrap();
    assert_eq!(codes(&alice), expected, "through the daemon");
    // A profile that does not exist, for a verb that would go to its daemon and one that
    // would not.
    for verb in [&["chat", "team"][..], &["send", "team", "hi"]] {
        let status = std::process::Command::new(mlschat_tests::bin_dir().join("mlschat"))
            .arg("--data-dir")
            .arg(alice.data_dir())
            .args(["--profile", "nobody"])
            .args(verb)
            .output()
            .unwrap()
            .status;
        assert_eq!(status.code(), Some(4), "{verb:?}");
    }
}

/// Issue 19, finding 9: an empty text was sent, a text too large for the node was queued and
/// refused later with a word about attachments that do not exist, and `init --encrypt` without
/// a passphrase exited 1 where `--help` says 8.
#[test]
fn empty_and_oversized_texts_and_a_missing_passphrase_are_refused_as_documented() {
    let node = Node::start();
    let mut alice = node.peer("alice");
    alice.cli(&["group", "create", "team"]).unwrap();
    for text in ["", "  "] {
        let error = failure(alice.cli(&["send", "team", text]));
        assert!(error.contains("an empty text is not sent"), "{error}");
        assert_eq!(alice.exit_code(&["send", "team", text]).unwrap(), 3);
    }
    // Too large for a command line: through the daemon's API.
    alice.start().unwrap();
    let huge = "x".repeat(600 * 1024);
    let error = alice
        .try_call("send", serde_json::json!({"group": "team", "text": huge}))
        .unwrap_err();
    assert_eq!(error["data"]["kind"], "invalid_input", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("at most 512 KiB") && !message.contains("attachment"));
    let history = alice.cli(&["history", "team"]).unwrap();
    assert!(!history.contains("\"kind\":\"text\""), "{history}");
    let status = std::process::Command::new(mlschat_tests::bin_dir().join("mlschat"))
        .arg("--data-dir")
        .arg(alice.data_dir())
        .args(["--profile", "secret", "init", "--user", "s", "--encrypt"])
        .env_remove("MLSCHAT_PASSPHRASE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(8));
}
