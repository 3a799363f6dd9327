//! A member's replica of a node-less group's log (`mlschat_node::replica`) passes the suites
//! every group log and every KeyPackage store pass: the delivery node's Postgres and SQLite
//! stores and the in-memory log.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use mlschat_node::replica::SqliteLog;

/// A fresh replica in a directory of its own under `root`.
fn fresh(root: &Path, made: &AtomicU32) -> SqliteLog {
    let dir = root.join(made.fetch_add(1, Ordering::Relaxed).to_string());
    std::fs::create_dir(&dir).unwrap();
    SqliteLog::create(&dir).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_replica_conforms_to_the_group_log_contract() {
    let (root, made) = (tempfile::tempdir().unwrap(), AtomicU32::new(0));
    mlschat_grouplog::conformance::run_all(async || fresh(root.path(), &made)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_replica_conforms_to_the_key_package_store_contract() {
    let (root, made) = (tempfile::tempdir().unwrap(), AtomicU32::new(0));
    mlschat_keypackages::conformance::run_all(async || fresh(root.path(), &made)).await;
}
