//! The `mlschat-delivery` binary as a real process: killed with SIGKILL while clients write,
//! drained with SIGTERM, configured through the environment, issuing invites.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Client, NodeProcess};
use mlschat_wire::token::token_hash;
use mlschat_wire::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_while_clients_write_loses_no_acknowledged_message() {
    let url = common::fresh_postgres_url().await;
    let data = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(data.path(), &url, &[]);
    let writer = Arc::new(node.client().await);
    writer.register().await;
    let group: tls_codec::VLBytes = b"kill-test".as_slice().into();
    let token = [3u8; 32];
    let create = Request::CreateGroup(CreateGroup {
        group_id: group.clone(),
        token_hash: token_hash(&token),
    });
    assert_eq!(writer.request(&create).await, Response::Ok);

    // Four writers post as fast as they can; each remembers what was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..4u8)
        .map(|w| {
            let (writer, group, stop) = (writer.clone(), group.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0u32.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let body = format!("w{w}-{i}").into_bytes();
                    let post = Request::PostMessage(PostMessage {
                        group_id: group.clone(),
                        epoch: 0,
                        token,
                        post_id: common::post_id(),
                        message: body.clone().into(),
                    });
                    let Ok((mut send, mut recv)) = writer.connection.quinn().open_bi().await else {
                        break;
                    };
                    let frame = frame::encode(&post).unwrap();
                    if send.write_all(&frame).await.is_err() || send.finish().is_err() {
                        break;
                    }
                    match recv.read_to_end(1 << 20).await {
                        Ok(answer) => match frame::decode::<Response>(&answer, MAX_FRAME) {
                            Ok(Response::Accepted { .. }) => acknowledged.push(body),
                            other => panic!("unexpected answer {other:?}"),
                        },
                        Err(_) => break, // the node died mid-request: not acknowledged
                    }
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    drop(node); // SIGKILL, mid-stream
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    assert!(
        acknowledged.len() > 20,
        "too few writes before the kill: {}",
        acknowledged.len()
    );

    // Restart on the same database; everything acknowledged is there, once, in order of seq.
    let node = NodeProcess::start(data.path(), &url, &[]);
    let reader = node.client().await;
    reader.register().await;
    let fetch = |after| {
        Request::FetchGroup(FetchGroup {
            group_id: group.clone(),
            token,
            after_seq: after,
            limit: 1000,
        })
    };
    let mut stored = Vec::new();
    loop {
        let Response::GroupEntries { entries } = reader.request(&fetch(stored.len() as u64)).await
        else {
            panic!("fetch failed")
        };
        if entries.is_empty() {
            break;
        }
        for e in entries {
            assert_eq!(
                e.seq,
                stored.len() as u64 + 1,
                "sequence numbers have no gaps"
            );
            stored.push(e.message.as_slice().to_vec());
        }
    }
    for body in &acknowledged {
        let copies = stored.iter().filter(|s| *s == body).count();
        assert_eq!(
            copies,
            1,
            "{} stored {copies} times",
            String::from_utf8_lossy(body)
        );
    }
    // The writer, back on the restarted node, authenticates with the key it registered.
    let writer = Client {
        signer: Arc::try_unwrap(writer).ok().unwrap().signer,
        ..node.client().await
    };
    writer.authenticate().await;
}

#[tokio::test]
async fn invite_only_registration_and_admin_endpoints() {
    let url = common::fresh_postgres_url().await;
    let data = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        data.path(),
        &url,
        &[("MLSCHAT__SERVER__REGISTRATION", "invite")],
    );
    assert!(node.admin("GET", "/healthz").0.contains("200"));
    assert!(node.admin("GET", "/readyz").0.contains("200"));
    let alice = node.client().await;
    assert!(matches!(
        alice.request(&alice.register_request().await).await,
        Response::Error(ErrorResponse {
            code: ErrorCode::InviteRequired,
            ..
        })
    ));
    let (status, body) = node.admin("POST", "/invites");
    assert!(status.contains("200"), "{status}");
    let invite: serde_json::Value = serde_json::from_str(&body).unwrap();
    let invite = invite["invite"].as_str().unwrap().to_owned();
    // Register with the invite: accepted once, then used up.
    for expected_ok in [true, false] {
        let client = node.client().await;
        // The invite is part of the signed transcript.
        let register = client.sign_register(invite.as_bytes()).await;
        let answer = client.request(&register).await;
        assert_eq!(
            matches!(answer, Response::Authenticated { .. }),
            expected_ok,
            "{answer:?}"
        );
    }
    let (_, metrics) = node.admin("GET", "/metrics");
    assert!(
        metrics.contains("mlschat_requests_total{kind=\"register\",result=\"InviteRequired\"}")
    );
    assert!(metrics.contains("mlschat_requests_total{kind=\"register\",result=\"ok\"} 1"));
    assert!(metrics.contains("mlschat_stored_bytes "));
    assert!(metrics.contains("mlschat_key_packages "));
}

#[tokio::test]
async fn sigterm_drains_and_the_node_exits_cleanly() {
    let url = common::fresh_postgres_url().await;
    let data = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(data.path(), &url, &[]);
    let client = node.client().await;
    client.register().await;
    let pid = node.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = node.child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    // The certificate survives a restart: clients keep their pin.
    let again = NodeProcess::start(data.path(), &url, &[]);
    assert_eq!(again.fingerprint, node.fingerprint);
}

/// Two node processes on one Postgres: a connection on one gets the pushes for writes taken by
/// the other (a subscribed group's commits and messages, its own mailbox's Welcomes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_cross_node_processes_sharing_one_postgres() {
    let url = common::fresh_postgres_url().await;
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node_a = NodeProcess::start(data_a.path(), &url, &[]);
    let node_b = NodeProcess::start(data_b.path(), &url, &[]);
    let (reader, invitee, writer) = (
        node_a.client().await,
        node_a.client().await,
        node_b.client().await,
    );
    for client in [&reader, &invitee, &writer] {
        client.register().await;
    }
    let welcome = writer.claims_key_package_of(&invitee).await;
    let group: tls_codec::VLBytes = b"two-nodes".as_slice().into();
    let (t0, t1) = ([5u8; 32], [6u8; 32]);
    let create = Request::CreateGroup(CreateGroup {
        group_id: group.clone(),
        token_hash: token_hash(&t0),
    });
    assert_eq!(writer.request(&create).await, Response::Ok);
    let subscribe = Request::Subscribe(FetchGroup {
        group_id: group.clone(),
        token: t0,
        after_seq: 0,
        limit: 0,
    });
    assert_eq!(reader.request(&subscribe).await, Response::Ok);
    // The listener of node A may still be connecting: post until A pushes one, then check
    // that everything after it arrives, in full and as stored.
    async fn push(client: &Client) -> Push {
        client.connection.next_push().await.unwrap()
    }
    let post = |body: &str| {
        Request::PostMessage(PostMessage {
            group_id: group.clone(),
            epoch: 0,
            token: t0,
            post_id: common::post_id(),
            message: body.as_bytes().into(),
        })
    };
    let mut first = None;
    for attempt in 0..50 {
        let Response::Accepted { seq, .. } =
            writer.request(&post(&format!("hello {attempt}"))).await
        else {
            panic!("post refused")
        };
        if let Ok(pushed) = tokio::time::timeout(Duration::from_millis(200), push(&reader)).await {
            first = Some((seq, pushed));
            break;
        }
    }
    let (seq, pushed) = first.expect("node A pushed a write that node B took");
    let Push::Group { group_id, entry } = pushed else {
        panic!("not a group push: {pushed:?}")
    };
    assert_eq!(group_id, group);
    assert!(entry.seq <= seq && entry.kind == EntryKind::Message);

    // A commit with a Welcome for someone connected to node A.
    let Response::Committed { seq, epoch: 1, .. } = writer
        .request(&Request::PostCommit(PostCommit {
            group_id: group.clone(),
            epoch: 0,
            token: t0,
            next_token_hash: token_hash(&t1),
            commit: b"commit".as_slice().into(),
            welcomes: vec![WelcomeFor {
                recipient: invitee.id(),
                welcome: welcome.clone(),
                tree_key: b"key".as_slice().into(),
            }],
            sealed_tree: b"tree".as_slice().into(),
            tree_access_hash: [1; 32],
        }))
        .await
    else {
        panic!("commit refused")
    };
    let wait = Duration::from_secs(10);
    let pushed = tokio::time::timeout(wait, push(&invitee))
        .await
        .expect("Welcome pushed");
    let Push::Mailbox(pushed) = pushed else {
        panic!("not a mailbox push: {pushed:?}")
    };
    assert_eq!(pushed.welcome, welcome);
    assert_eq!(pushed.group_id, group);
    // The reader sees the commit too (after any message pushes still on their way).
    loop {
        let pushed = tokio::time::timeout(wait, push(&reader))
            .await
            .expect("commit pushed");
        if let Push::Group { entry, .. } = pushed
            && entry.kind == EntryKind::Commit
        {
            assert_eq!(
                (entry.seq, entry.message.as_slice()),
                (seq, b"commit".as_slice())
            );
            break;
        }
    }
}

/// Issue 10, finding 7: a web page on the node's machine could ask the admin port for an invite
/// (DNS rebinding, cross-site POST). Now Host must name the port by IP or localhost, requests
/// with an Origin are refused, and changes need the admin token. Finding 8: the data directory
/// and what the node writes there are for nobody else.
#[tokio::test]
async fn the_admin_port_refuses_web_pages_and_changes_without_its_token() {
    use std::os::unix::fs::PermissionsExt;
    let url = common::fresh_postgres_url().await;
    let data = tempfile::tempdir().unwrap();
    // As an operator's `mkdir` leaves it.
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let node = NodeProcess::start(data.path(), &url, &[]);
    let token = std::fs::read_to_string(data.path().join("admin-token")).unwrap();
    let ours = format!("Host: {}\r\n", node.admin);
    let with_token = format!("{ours}Authorization: Bearer {}\r\n", token.trim());
    let port = node.admin.port();
    let refused = [
        // A rebinding attack's own name for the port.
        format!(
            "Host: attacker.example:{port}\r\nAuthorization: Bearer {}\r\n",
            token.trim()
        ),
        // No Host at all, or another port.
        String::new(),
        format!("Host: 127.0.0.1:{}\r\n", port.wrapping_add(1)),
        // A cross-site request from a page, even with the right Host.
        format!("{with_token}Origin: http://attacker.example\r\n"),
        // The right Host and no token, or a wrong one.
        ours.clone(),
        format!("{ours}Authorization: Bearer wrong\r\n"),
    ];
    for headers in &refused {
        let (status, body) = node.admin_with("POST", "/invites", headers);
        assert!(!status.contains("200"), "{headers:?} got {status} {body}");
        assert!(!body.contains("invite"), "{headers:?} got an invite");
    }
    // Reading is open to the operator's tools without the token, but not to web pages.
    assert!(node.admin_with("GET", "/healthz", &ours).0.contains("200"));
    assert!(
        node.admin_with("GET", "/healthz", &format!("Host: localhost:{port}\r\n"))
            .0
            .contains("200")
    );
    let from_page = format!("{ours}Origin: http://attacker.example\r\n");
    assert!(
        !node
            .admin_with("GET", "/metrics", &from_page)
            .0
            .contains("200")
    );
    let (status, body) = node.admin_with("POST", "/invites", &with_token);
    assert!(
        status.contains("200") && body.contains("invite"),
        "{status} {body}"
    );

    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(data.path()), 0o700, "the data directory");
    for entry in std::fs::read_dir(data.path()).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(
            mode(&path) & 0o077,
            0,
            "{} is readable by others",
            path.display()
        );
    }
}

/// Issue 19, finding 9: `--database-url "$DATABASE_URL"` with the variable unset ran the node on
/// SQLite without a word, and an unreachable Postgres gave 30 s of silence, then "pool timed
/// out" naming no host.
#[test]
fn an_empty_or_unreachable_database_url_is_refused_with_where() {
    let dir = tempfile::tempdir().unwrap();
    let run = |url: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_mlschat-delivery"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--database-url", url])
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let said = run("");
    assert!(said.contains("is DATABASE_URL set?"), "{said}");
    // Nothing listens on port 1.
    let said = run("postgres://nobody@127.0.0.1:1/chat");
    assert!(
        said.contains("cannot connect to Postgres at 127.0.0.1:1"),
        "{said}"
    );
}
