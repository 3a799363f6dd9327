//! What the delivery node learns (wire/PROTOCOL.md §9), checked on a real node after real use:
//! issue 10, finding 4 found member names and keys in the trees it stored and served.

use mlschat_tests::cluster::{DeliveryProcess, PeerProcess};
use mlschat_tests::{bin_dir, converged, eventually};
use serde_json::json;
use sqlx::Row as _;

/// Names long enough that no ciphertext holds one by chance.
const PEOPLE: [&str; 3] = ["avalanche", "bergamot", "cardamom"];
const DEVICE: &str = "laptop";
const TEXT: &str = "the quarterly plan";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every value of every column of every table but the KeyPackage directory's (a KeyPackage
/// carries its owner's credential by design), as `(table, bytes)`.
async fn stored_values(database: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let url = format!("sqlite://{}?mode=ro", database.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut values = Vec::new();
    for table in tables {
        if table == "key_packages" || table == "last_resort_key_packages" {
            continue;
        }
        let columns: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT name FROM pragma_table_info('{table}')"
        )))
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
        for column in columns {
            let sql = format!("SELECT CAST({column} AS BLOB) FROM {table}");
            let rows: Vec<Option<Vec<u8>>> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(&pool)
                .await
                .unwrap();
            values.extend(rows.into_iter().flatten().map(|v| (table.clone(), v)));
        }
    }
    pool.close().await;
    values
}

#[test]
fn the_node_stores_logs_and_counts_no_member_name_outside_key_packages() {
    let dir = tempfile::tempdir().unwrap();
    let node = DeliveryProcess::start(
        bin_dir(),
        &dir.path().join("node"),
        None,
        &[("RUST_LOG", "debug")],
    )
    .unwrap();
    let mut peers: Vec<PeerProcess> = PEOPLE
        .iter()
        .map(|name| PeerProcess::new(bin_dir(), &dir.path().join("peers"), name, &node).unwrap())
        .collect();
    for peer in &mut peers {
        peer.start().unwrap();
    }
    let (first, rest) = peers.split_first().unwrap();
    for other in rest {
        first.meet(other).unwrap();
    }
    // A group, everyone added, a text from each, someone removed: trees, Welcomes, commits,
    // messages and mailbox entries all pass through the node.
    let id = first.call("group.create", json!({"name": "team"})).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let others: Vec<&str> = PEOPLE[1..].to_vec();
    first
        .call("group.add", json!({"group": id, "who": others}))
        .unwrap();
    let all: Vec<&PeerProcess> = peers.iter().collect();
    converged(&all, &id);
    for peer in &peers {
        let text = format!("{TEXT} from {}", peer.name);
        peer.call("send", json!({"group": id, "text": text}))
            .unwrap();
    }
    for peer in &peers {
        eventually("everyone reads every text", || {
            peer.texts(&id).is_ok_and(|t| t.len() == 3)
        });
    }
    first
        .call("group.remove", json!({"group": id, "who": [PEOPLE[2]]}))
        .unwrap();
    converged(&all[..2], &id);
    for peer in &mut peers {
        peer.stop();
    }

    let needles: Vec<&str> = PEOPLE.iter().copied().chain([DEVICE, TEXT]).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let values = runtime.block_on(stored_values(&node.data_dir().join("delivery.db")));
    assert!(
        values.iter().any(|(table, _)| table == "group_trees"),
        "no tree was stored: the check would prove nothing"
    );
    for (table, value) in &values {
        for needle in &needles {
            assert!(
                !contains(value, needle.as_bytes()),
                "{needle:?} is stored in table {table}"
            );
        }
    }
    let log = node.log().unwrap();
    let metrics = node.admin_get("/metrics").unwrap();
    assert!(log.contains("DEBUG"), "the node logged at debug level");
    assert!(metrics.contains("mlschat_requests_total"));
    for needle in &needles {
        assert!(!log.contains(needle), "{needle:?} is in the node's log");
        assert!(
            !metrics.contains(needle),
            "{needle:?} is in the node's metrics"
        );
    }
}
