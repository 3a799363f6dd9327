//! The KeyPackage directory's [`Store`] on the node's database.
//!
//! A claim is one transaction: take the oldest unexpired one-time package (deleting it), or
//! else read the last-resort one, and append to the claim log. On Postgres concurrent claimers
//! skip each other's locked rows (`FOR UPDATE SKIP LOCKED`) instead of queueing; SQLite has one
//! writer at a time, and `BEGIN IMMEDIATE` makes the transaction take that role at once.

use mlschat_keypackages::{ClaimRecord, Claimed, ClientId, KeyPackage, Stock, Store, StoreError};

use super::{Database, RowExt, StorageError, from_db, to_db, with_pool, write_transaction};

impl From<StorageError> for StoreError {
    fn from(e: StorageError) -> Self {
        StoreError(e.to_string())
    }
}

const TAKE_ONE_TIME_PG: &str = "
    DELETE FROM key_packages WHERE id = (
        SELECT id FROM key_packages
        WHERE owner = $1 AND not_after >= $2
        ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING reference, message, not_after";

const TAKE_ONE_TIME_SQLITE: &str = "
    DELETE FROM key_packages WHERE id = (
        SELECT id FROM key_packages
        WHERE owner = $1 AND not_after >= $2
        ORDER BY id LIMIT 1)
    RETURNING reference, message, not_after";

fn key_package(row: &impl RowExt) -> Result<KeyPackage, sqlx::Error> {
    Ok(KeyPackage {
        reference: row.bytes(0)?,
        message: row.bytes(1)?,
        not_after: from_db(row.int(2)?),
    })
}

/// The store's operations, in terms of our own error type.
impl Database {
    async fn kp_publish(
        &self,
        owner: &ClientId,
        one_time: Vec<KeyPackage>,
        last_resort: Option<KeyPackage>,
    ) -> Result<(), StorageError> {
        let owner = owner.as_slice();
        write_transaction!(self, |tx, _postgres| {
            for kp in &one_time {
                let new = sqlx::query(
                    "INSERT INTO key_package_refs (owner, reference) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                )
                .bind(owner)
                .bind(&kp.reference)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if new {
                    sqlx::query(
                        "INSERT INTO key_packages (owner, reference, message, not_after)
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(owner)
                    .bind(&kp.reference)
                    .bind(&kp.message)
                    .bind(to_db(kp.not_after))
                    .execute(&mut *tx)
                    .await?;
                }
            }
            if let Some(kp) = &last_resort {
                sqlx::query(
                    "INSERT INTO last_resort_key_packages (owner, reference, message, not_after)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (owner) DO UPDATE SET reference = excluded.reference,
                         message = excluded.message, not_after = excluded.not_after",
                )
                .bind(owner)
                .bind(&kp.reference)
                .bind(&kp.message)
                .bind(to_db(kp.not_after))
                .execute(&mut *tx)
                .await?;
            }
        });
        Ok(())
    }

    async fn kp_claim(
        &self,
        owner: &ClientId,
        claimer: &ClientId,
        now: u64,
        one_time: bool,
    ) -> Result<Option<Claimed>, StorageError> {
        let (owner, claimer, now) = (owner.as_slice(), claimer.as_slice(), to_db(now));
        write_transaction!(self, |tx, postgres| {
            let take = if postgres {
                TAKE_ONE_TIME_PG
            } else {
                TAKE_ONE_TIME_SQLITE
            };
            let taken = if one_time {
                sqlx::query(take)
                    .bind(owner)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?
            } else {
                None
            };
            let claimed = match taken {
                Some(row) => Some(Claimed {
                    key_package: key_package(&row)?,
                    last_resort: false,
                }),
                None => sqlx::query(
                    "SELECT reference, message, not_after FROM last_resort_key_packages
                     WHERE owner = $1 AND not_after >= $2",
                )
                .bind(owner)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| key_package(&row))
                .transpose()?
                .map(|key_package| Claimed {
                    key_package,
                    last_resort: true,
                }),
            };
            if let Some(c) = &claimed {
                sqlx::query(
                    "INSERT INTO claim_log (owner, claimer, at, last_resort, reference)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(owner)
                .bind(claimer)
                .bind(now)
                .bind(c.last_resort)
                .bind(&c.key_package.reference)
                .execute(&mut *tx)
                .await?;
            }
            Ok(claimed)
        })
    }

    async fn kp_stock(&self, owner: &ClientId, now: u64) -> Result<Stock, StorageError> {
        const ONE_TIME: &str =
            "SELECT count(*) FROM key_packages WHERE owner = $1 AND not_after >= $2";
        const LAST_RESORT: &str =
            "SELECT count(*) FROM last_resort_key_packages WHERE owner = $1 AND not_after >= $2";
        let (owner, now) = (owner.as_slice(), to_db(now));
        let mut counts = [0i64; 2];
        for (count, sql) in counts.iter_mut().zip([ONE_TIME, LAST_RESORT]) {
            *count = with_pool!(self, |pool| {
                sqlx::query_scalar(sql)
                    .bind(owner)
                    .bind(now)
                    .fetch_one(pool)
                    .await
            })?;
        }
        let [one_time, last_resort] = counts;
        Ok(Stock {
            one_time: u32::try_from(one_time).unwrap_or(u32::MAX),
            last_resort: last_resort > 0,
        })
    }

    async fn kp_claim_log(
        &self,
        owner: &ClientId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<ClaimRecord>, StorageError> {
        const SQL: &str = "SELECT id, claimer, at, last_resort, reference FROM claim_log
                           WHERE owner = $1 AND id > $2 ORDER BY id LIMIT $3";
        let (owner, after, limit) = (owner.as_slice(), to_db(after), i64::from(limit));
        fn record(row: &impl RowExt) -> Result<ClaimRecord, sqlx::Error> {
            Ok(ClaimRecord {
                seq: from_db(row.int(0)?),
                claimer: row
                    .bytes(1)?
                    .try_into()
                    .map_err(|_| sqlx::Error::Decode("claimer id is not 32 bytes".into()))?,
                at: from_db(row.int(2)?),
                last_resort: row.flag(3)?,
                reference: row.bytes(4)?,
            })
        }
        let records: Result<Vec<ClaimRecord>, sqlx::Error> = with_pool!(self, |pool| {
            let rows = sqlx::query(SQL)
                .bind(owner)
                .bind(after)
                .bind(limit)
                .fetch_all(pool);
            rows.await?.iter().map(record).collect()
        });
        Ok(records?)
    }

    async fn kp_purge_expired(&self, now: u64) -> Result<u64, StorageError> {
        let now = to_db(now);
        write_transaction!(self, |tx, _postgres| {
            let mut purged = 0;
            for sql in [
                "DELETE FROM key_packages WHERE not_after < $1",
                "DELETE FROM last_resort_key_packages WHERE not_after < $1",
            ] {
                purged += sqlx::query(sql)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            Ok(purged)
        })
    }
}

impl Store for Database {
    async fn publish(
        &self,
        owner: &ClientId,
        one_time: Vec<KeyPackage>,
        last_resort: Option<KeyPackage>,
    ) -> Result<(), StoreError> {
        Ok(self.kp_publish(owner, one_time, last_resort).await?)
    }

    async fn claim(
        &self,
        owner: &ClientId,
        claimer: &ClientId,
        now: u64,
        one_time: bool,
    ) -> Result<Option<Claimed>, StoreError> {
        Ok(self.kp_claim(owner, claimer, now, one_time).await?)
    }

    async fn stock(&self, owner: &ClientId, now: u64) -> Result<Stock, StoreError> {
        Ok(self.kp_stock(owner, now).await?)
    }

    async fn claim_log(
        &self,
        owner: &ClientId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<ClaimRecord>, StoreError> {
        Ok(self.kp_claim_log(owner, after, limit).await?)
    }

    async fn purge_expired(&self, now: u64) -> Result<u64, StoreError> {
        Ok(self.kp_purge_expired(now).await?)
    }
}
