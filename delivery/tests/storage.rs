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
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
}

#[tokio::test]
async fn totals_count_stored_bytes_and_unexpired_key_packages_on_both_backends() {
    use mlschat_keypackages::{KeyPackage, Store};
    for db in [fresh_postgres().await, fresh_sqlite().await] {
        let now = 1_000;
        let package = |n: u8, not_after| KeyPackage {
            reference: vec![n; 16],
            message: vec![n; 300],
            not_after,
        };
        let empty = db.totals(now).await.unwrap();
        assert_eq!(empty.key_packages, 0);
        assert!(empty.stored_bytes > 0, "{}: no size", db.backend());
        let owner = [7u8; 32];
        let fresh: Vec<KeyPackage> = (0..5).map(|n| package(n, now + 10)).collect();
        db.publish(&owner, fresh, None).await.unwrap();
        db.publish(&[8u8; 32], vec![package(9, now - 1)], None)
            .await
            .unwrap();
        // Five unexpired ones; the expired one is not stock.
        assert_eq!(
            db.totals(now).await.unwrap().key_packages,
            5,
            "{}",
            db.backend()
        );
        db.claim(&owner, &[1u8; 32], now, true)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            db.totals(now).await.unwrap().key_packages,
            4,
            "{}",
            db.backend()
        );
    }
}
