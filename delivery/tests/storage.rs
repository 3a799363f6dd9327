//! Both database backends pass the same suites.

mod common;

use common::{fresh_postgres, fresh_sqlite};
use mlschat_keypackages::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_key_package_store_conforms() {
    conformance::run_all(fresh_postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_key_package_store_conforms() {
    conformance::run_all(fresh_sqlite).await;
}

#[tokio::test]
async fn migrations_run_once_and_again_is_a_no_op() {
    // Opening twice runs the migration code twice; the second finds nothing to do.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    mlschat_delivery::storage::Database::sqlite(&path)
        .await
        .unwrap();
    let db = mlschat_delivery::storage::Database::sqlite(&path)
        .await
        .unwrap();
    let mlschat_delivery::storage::Database::Sqlite(pool) = db else {
        unreachable!()
    };
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(versions, [1, 2, 3, 4]);
}
