//! Schema migrations, applied at start-up: numbered SQL scripts per dialect, each in its own
//! transaction, recorded in `schema_migrations`. Several nodes starting at once on one Postgres
//! take an advisory lock, so each script runs once.

use super::{Database, StorageError, write_transaction};

/// `(version, postgres script, sqlite script)`, in order. Never edit a released script: add one.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        include_str!("../../migrations/postgres_0001_keypackages.sql"),
        include_str!("../../migrations/sqlite_0001_keypackages.sql"),
    ),
    (
        2,
        include_str!("../../migrations/postgres_0002_groups.sql"),
        include_str!("../../migrations/sqlite_0002_groups.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres_0003_clients.sql"),
        include_str!("../../migrations/sqlite_0003_clients.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres_0004_invites.sql"),
        include_str!("../../migrations/sqlite_0004_invites.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres_0005_post_keys.sql"),
        include_str!("../../migrations/sqlite_0005_post_keys.sql"),
    ),
    (
        6,
        include_str!("../../migrations/postgres_0006_welcome_rights.sql"),
        include_str!("../../migrations/sqlite_0006_welcome_rights.sql"),
    ),
    (
        7,
        include_str!("../../migrations/postgres_0007_sealed_trees.sql"),
        include_str!("../../migrations/sqlite_0007_sealed_trees.sql"),
    ),
    (
        8,
        include_str!("../../migrations/postgres_0008_claimed_references.sql"),
        include_str!("../../migrations/sqlite_0008_claimed_references.sql"),
    ),
    (
        9,
        include_str!("../../migrations/postgres_0009_last_resort_welcomes.sql"),
        include_str!("../../migrations/sqlite_0009_last_resort_welcomes.sql"),
    ),
];

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";

const RECORD: &str = "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)";

/// An arbitrary constant: the key of the Postgres advisory lock held while migrating.
const LOCK_KEY: i64 = 0x6d6c_7363_6861_7401;

pub async fn run(db: &Database) -> Result<(), StorageError> {
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    write_transaction!(db, |tx, postgres| {
        if postgres {
            // Nodes starting together on one server: one migrates, the others wait and then
            // find nothing to do. (SQLite's BEGIN IMMEDIATE already serialises them.)
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(LOCK_KEY)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(CREATE_TABLE).execute(&mut *tx).await?;
        let current: i64 =
            sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM schema_migrations")
                .fetch_one(&mut *tx)
                .await?;
        check_not_newer(current, latest)?;
        for (version, postgres_script, sqlite_script) in MIGRATIONS.iter().filter(|m| m.0 > current)
        {
            let script = if postgres {
                *postgres_script
            } else {
                *sqlite_script
            };
            sqlx::raw_sql(script).execute(&mut *tx).await?;
            sqlx::query(RECORD)
                .bind(version)
                .bind(super::unix_now())
                .execute(&mut *tx)
                .await?;
        }
    });
    Ok(())
}

fn check_not_newer(current: i64, latest: i64) -> Result<(), StorageError> {
    if current > latest {
        return Err(StorageError::NewerSchema {
            found: current,
            known: latest,
        });
    }
    Ok(())
}
