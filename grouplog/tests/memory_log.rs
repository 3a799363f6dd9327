//! The in-memory log passes the conformance suite every backend passes.

use mlschat_grouplog::{MemoryLog, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_memory_log_conforms() {
    conformance::run_all(async || MemoryLog::new()).await;
}
