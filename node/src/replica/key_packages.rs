//! The KeyPackage rows of a replica (`mlschat_keypackages::Store`'s rules): the packages a
//! member serves to the peers it admits, those it claimed from others (published here when
//! claimed, so that its Welcomes are judged against its claims as a node judges them), and the
//! log of claims.

use rusqlite::{Connection, OptionalExtension, params};

use mlschat_grouplog::escrow::OpenClaim;
use mlschat_grouplog::keypackages::{ClaimRecord, Claimed, KeyPackage, Stock};
use mlschat_grouplog::{ClientId, UnixTime};

fn client_id(bytes: Vec<u8>) -> rusqlite::Result<ClientId> {
    let len = bytes.len();
    bytes.try_into().map_err(|_| {
        rusqlite::Error::InvalidColumnType(0, format!("{len} bytes"), rusqlite::types::Type::Blob)
    })
}

pub fn publish(
    conn: &Connection,
    owner: &ClientId,
    one_time: &[KeyPackage],
    last_resort: Option<&KeyPackage>,
) -> rusqlite::Result<()> {
    let mut seen = conn.prepare_cached(
        "INSERT OR IGNORE INTO replica_key_package_refs (owner, reference) VALUES (?1, ?2)",
    )?;
    let mut add = conn.prepare_cached(
        "INSERT INTO replica_key_packages (owner, reference, message, not_after)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for kp in one_time {
        if seen.execute(params![&owner[..], kp.reference])? == 1 {
            add.execute(params![
                &owner[..],
                kp.reference,
                kp.message,
                kp.not_after as i64
            ])?;
        }
    }
    if let Some(kp) = last_resort {
        seen.execute(params![&owner[..], kp.reference])?;
        conn.prepare_cached(
            "INSERT OR REPLACE INTO replica_last_resort (owner, reference, message, not_after)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            &owner[..],
            kp.reference,
            kp.message,
            kp.not_after as i64
        ])?;
    }
    Ok(())
}

fn key_package(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyPackage> {
    Ok(KeyPackage {
        reference: r.get(0)?,
        message: r.get(1)?,
        not_after: r.get::<_, i64>(2)? as u64,
    })
}

pub fn claim(
    conn: &Connection,
    owner: &ClientId,
    claimer: &ClientId,
    now: UnixTime,
    one_time: bool,
) -> rusqlite::Result<Option<Claimed>> {
    let now_i = now as i64;
    conn.prepare_cached("DELETE FROM replica_key_packages WHERE owner = ?1 AND not_after < ?2")?
        .execute(params![&owner[..], now_i])?;
    let taken = if one_time {
        conn.prepare_cached(
            "DELETE FROM replica_key_packages WHERE id = (
                 SELECT id FROM replica_key_packages WHERE owner = ?1 ORDER BY id LIMIT 1)
             RETURNING reference, message, not_after",
        )?
        .query_row([&owner[..]], key_package)
        .optional()?
    } else {
        None
    };
    let claimed = match taken {
        Some(key_package) => Claimed {
            key_package,
            last_resort: false,
        },
        None => {
            let last_resort = conn
                .prepare_cached(
                    "SELECT reference, message, not_after FROM replica_last_resort
                     WHERE owner = ?1 AND not_after >= ?2",
                )?
                .query_row(params![&owner[..], now_i], key_package)
                .optional()?;
            let Some(key_package) = last_resort else {
                return Ok(None);
            };
            Claimed {
                key_package,
                last_resort: true,
            }
        }
    };
    conn.prepare_cached(
        "INSERT INTO replica_claims (owner, claimer, at, last_resort, reference)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        &owner[..],
        &claimer[..],
        now_i,
        claimed.last_resort,
        claimed.key_package.reference
    ])?;
    Ok(Some(claimed))
}

pub fn stock(conn: &Connection, owner: &ClientId, now: UnixTime) -> rusqlite::Result<Stock> {
    let now = now as i64;
    let one_time: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM replica_key_packages WHERE owner = ?1 AND not_after >= ?2",
        )?
        .query_row(params![&owner[..], now], |r| r.get(0))?;
    let last_resort: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM replica_last_resort WHERE owner = ?1 AND not_after >= ?2)",
        )?
        .query_row(params![&owner[..], now], |r| r.get(0))?;
    Ok(Stock {
        one_time: one_time as u32,
        last_resort,
    })
}

fn claim_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClaimRecord> {
    Ok(ClaimRecord {
        seq: r.get::<_, i64>(0)? as u64,
        claimer: client_id(r.get(1)?)?,
        at: r.get::<_, i64>(2)? as u64,
        last_resort: r.get(3)?,
        reference: r.get(4)?,
    })
}

pub fn claim_log(
    conn: &Connection,
    owner: &ClientId,
    after: u64,
    limit: u32,
) -> rusqlite::Result<Vec<ClaimRecord>> {
    let after = after.min(i64::MAX as u64) as i64;
    conn.prepare_cached(
        "SELECT seq, claimer, at, last_resort, reference FROM replica_claims
         WHERE owner = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?
    .query_map(params![&owner[..], after, limit], claim_record)?
    .collect()
}

pub fn purge_expired(conn: &Connection, now: UnixTime) -> rusqlite::Result<u64> {
    let now = now as i64;
    let one_time = conn
        .prepare_cached("DELETE FROM replica_key_packages WHERE not_after < ?1")?
        .execute([now])?;
    let last_resort = conn
        .prepare_cached("DELETE FROM replica_last_resort WHERE not_after < ?1")?
        .execute([now])?;
    Ok((one_time + last_resort) as u64)
}

/// `claimer`'s claims of `owner`'s packages that no Welcome has used yet, newest first (at most
/// 64, as a committer claims just before it commits).
pub(super) fn open_claims(
    conn: &Connection,
    owner: &ClientId,
    claimer: &ClientId,
) -> rusqlite::Result<Vec<OpenClaim>> {
    conn.prepare_cached(
        "SELECT seq, reference, last_resort FROM replica_claims
         WHERE owner = ?1 AND claimer = ?2 AND welcomed = 0 ORDER BY seq DESC LIMIT 64",
    )?
    .query_map(params![&owner[..], &claimer[..]], |r| {
        Ok(OpenClaim {
            seq: r.get::<_, i64>(0)? as u64,
            reference: r.get(1)?,
            last_resort: r.get(2)?,
        })
    })?
    .collect()
}

/// Marks claim `seq` of `owner`'s packages as used by a Welcome.
pub(super) fn use_claim(conn: &Connection, owner: &ClientId, seq: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE replica_claims SET welcomed = 1 WHERE owner = ?1 AND seq = ?2")?
        .execute(params![&owner[..], seq as i64])?;
    Ok(())
}

/// Forgets claim records made before `before` (retention); returns how many.
pub(super) fn purge_claims(conn: &Connection, before: UnixTime) -> rusqlite::Result<u64> {
    conn.prepare_cached("DELETE FROM replica_claims WHERE at < ?1")?
        .execute([before as i64])
        .map(|n| n as u64)
}
