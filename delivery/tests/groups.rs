//! Group logs on both backends pass the group-log conformance suite (the same one the
//! in-memory log, and so the simulator's node, passes): one commit per epoch, Welcome escrow,
//! tokens, idempotent posts, mailboxes, paging, retention.

mod common;

use common::{fresh_postgres, fresh_sqlite};
use mlschat_grouplog::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_group_log_conforms() {
    conformance::run_all(fresh_postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_group_log_conforms() {
    conformance::run_all(fresh_sqlite).await;
}
