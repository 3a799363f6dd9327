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
}
