//! The delivery node's database: Postgres when a URL is configured, SQLite (one file) as the
//! embedded default. Both run the same operations with the same guarantees and pass the same
//! test suites; the SQL differs only where the dialects do.

mod clients;
mod groups;
mod keypackages;
mod migrate;

// The group log's contract and its types; `Database` implements it in `groups.rs`.
pub use mlschat_grouplog::{
    Committed, Cuts, Entry, GroupLog, NewCommit, NewMessage, NewWelcome, Page, PostKey, Posted,
    Purged, Refused, Welcome, post_key,
};

use std::path::Path;
use std::str::FromStr;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// What can go wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The batch this write was part of failed (the cause is logged once for the batch).
    #[error("the batch holding this write failed")]
    BatchFailed,
    /// The writer task is gone (the node is stopping).
    #[error("the writer is closed")]
    Closed,
    /// The database was migrated by a newer version of the node.
    #[error("database schema version {found} is newer than this node's {known}")]
    NewerSchema { found: i64, known: i64 },
    /// Postgres could not be reached (or refused us) when the node started.
    #[error("cannot connect to Postgres at {at}: {source}")]
    Connect { at: String, source: sqlx::Error },
}

/// What the node holds (see [`Database::totals`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub stored_bytes: u64,
    pub key_packages: u64,
}

/// A connection pool to one of the two backends.
#[derive(Debug, Clone)]
pub enum Database {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Database {
    /// Connects to Postgres at `url` and brings its schema up to date.
    pub async fn postgres(url: &str, max_connections: u32) -> Result<Self, StorageError> {
        let options = sqlx::postgres::PgConnectOptions::from_str(url)?;
        // Where, without the password: what the operator needs to check.
        let at = format!(
            "{}:{} (database {:?}, user {:?})",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default(),
            options.get_username()
        );
        tracing::info!(%at, "connecting to Postgres");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|source| StorageError::Connect { at, source })?;
        let db = Database::Postgres(pool);
        migrate::run(&db).await?;
        Ok(db)
    }

    /// Sends `payload` on a Postgres notification channel (see `announce`). Postgres only.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), StorageError> {
        if let Database::Postgres(pool) = self {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// Opens (creating it if needed) the SQLite file at `path`, in WAL mode with full fsync, and
    /// brings its schema up to date.
    pub async fn sqlite(path: &Path) -> Result<Self, StorageError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let db = Database::Sqlite(pool);
        migrate::run(&db).await?;
        Ok(db)
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StorageError> {
        with_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// What the node holds, for its metrics: bytes on disk (the Postgres database, or the SQLite
    /// file's pages) and unexpired one-time KeyPackages, all owners together.
    pub async fn totals(&self, now: u64) -> Result<Totals, StorageError> {
        const STOCK: &str = "SELECT count(*) FROM key_packages WHERE not_after >= $1";
        let stored_bytes: i64 =
            match self {
                Database::Postgres(pool) => {
                    sqlx::query_scalar("SELECT pg_database_size(current_database())")
                        .fetch_one(pool)
                        .await?
                }
                Database::Sqlite(pool) => sqlx::query_scalar(
                    "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                )
                .fetch_one(pool)
                .await?,
            };
        let now = to_db(now);
        let key_packages: i64 = with_pool!(self, |pool| sqlx::query_scalar(STOCK)
            .bind(now)
            .fetch_one(pool)
            .await)?;
        Ok(Totals {
            stored_bytes: from_db(stored_bytes),
            key_packages: from_db(key_packages),
        })
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Database::Postgres(_) => "postgres",
            Database::Sqlite(_) => "sqlite",
        }
    }
}

/// Integers are BIGINT in the database; ours are u64 but never near 2^63.
fn to_db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_db(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Evaluates `$body` with `$pool` bound to this database's pool, whichever backend it is: the
/// same code, type-checked once per backend. `$body` must reduce to a backend-neutral value.
macro_rules! with_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            Database::Postgres($pool) => $body,
            Database::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Runs `$body` in a write transaction on either backend; `$tx` is the transaction and
/// `$postgres` tells which dialect to speak. Commits if the body returns normally (it returns
/// early, rolling back, on `?`). SQLite's `BEGIN IMMEDIATE` takes its single write lock at once,
/// so two writers never both read before one writes.
macro_rules! write_transaction {
    ($db:expr, |$tx:ident, $postgres:ident| $body:block) => {
        match $db {
            Database::Postgres(pool) => {
                let $postgres = true;
                let mut $tx = pool.begin().await?;
                let result = $body;
                $tx.commit().await?;
                result
            }
            Database::Sqlite(pool) => {
                let $postgres = false;
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let result = $body;
                $tx.commit().await?;
                result
            }
        }
    };
}
pub(crate) use write_transaction;

/// Column access that reads the same on both backends.
pub(crate) trait RowExt {
    fn bytes(&self, i: usize) -> Result<Vec<u8>, sqlx::Error>;
    fn int(&self, i: usize) -> Result<i64, sqlx::Error>;
    fn flag(&self, i: usize) -> Result<bool, sqlx::Error>;
}

macro_rules! impl_row_ext {
    ($row:ty) => {
        impl RowExt for $row {
            fn bytes(&self, i: usize) -> Result<Vec<u8>, sqlx::Error> {
                sqlx::Row::try_get(self, i)
            }
            fn int(&self, i: usize) -> Result<i64, sqlx::Error> {
                sqlx::Row::try_get(self, i)
            }
            fn flag(&self, i: usize) -> Result<bool, sqlx::Error> {
                sqlx::Row::try_get(self, i)
            }
        }
    };
}
impl_row_ext!(sqlx::postgres::PgRow);
impl_row_ext!(sqlx::sqlite::SqliteRow);

/// Seconds since the Unix epoch, as stored.
fn unix_now() -> i64 {
    to_db(crate::unix_now())
}
