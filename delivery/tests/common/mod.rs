#![allow(dead_code)] // each test binary uses part of the harness
//! Test harness: a fresh database of each backend for every test.

use std::sync::atomic::{AtomicU32, Ordering};

use mlschat_delivery::storage::Database;

/// A new, empty database on the Postgres server named by `DATABASE_URL` (the README's test
/// command starts a throwaway one). Without it the test fails: it must not pass unchecked.
pub async fn fresh_postgres() -> Database {
    static N: AtomicU32 = AtomicU32::new(0);
    let url = std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: run the tests with ./scripts/test.sh, which starts Postgres",
    );
    let name = format!(
        "mlschat_test_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let admin = sqlx::PgPool::connect(&url)
        .await
        .expect("connecting to DATABASE_URL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let (server, _) = url.rsplit_once('/').expect("a URL ending in /database");
    Database::postgres(&format!("{server}/{name}"), 80)
        .await
        .unwrap()
}

/// A new SQLite database in a temporary directory that lives as long as the process.
pub async fn fresh_sqlite() -> Database {
    let dir = tempfile::tempdir().unwrap().keep();
    Database::sqlite(&dir.join("delivery.db")).await.unwrap()
}
