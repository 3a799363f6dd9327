//! The log rows of a replica: groups, their tokens, entries, sealed trees and mailboxes, each
//! operation the contract's rule (`mlschat_grouplog`) over a connection the caller holds a
//! write transaction on.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use mlschat_grouplog::escrow::{self, Recipient};
use mlschat_grouplog::{
    ClientId, Committed, Cuts, Entry, EntryKind, NewCommit, NewMessage, Page, PostKey, Posted,
    Purged, Refused, TokenHash, UnixTime, Welcome,
};

use super::key_packages::{open_claims, purge_claims, use_claim};

type Judged<T> = rusqlite::Result<Result<T, Refused>>;

fn kind_code(kind: EntryKind) -> i64 {
    match kind {
        EntryKind::Commit => 1,
        EntryKind::Message => 2,
        EntryKind::Notice => 3,
    }
}

fn kind_of(code: i64) -> rusqlite::Result<EntryKind> {
    match code {
        1 => Ok(EntryKind::Commit),
        2 => Ok(EntryKind::Message),
        3 => Ok(EntryKind::Notice),
        other => Err(rusqlite::Error::IntegralValueOutOfRange(0, other)),
    }
}

/// The group's current epoch, if it has a log here.
pub fn current_epoch(conn: &Connection, group_id: &[u8]) -> rusqlite::Result<Option<u64>> {
    conn.prepare_cached("SELECT epoch FROM replica_groups WHERE group_id = ?1")?
        .query_row([group_id], |r| r.get::<_, i64>(0))
        .optional()
        .map(|e| e.map(|e| e as u64))
}

fn holds_token(
    conn: &Connection,
    group_id: &[u8],
    token_hash: &TokenHash,
) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM replica_tokens WHERE group_id = ?1 AND token_hash = ?2)",
    )?
    .query_row(params![group_id, &token_hash[..]], |r| r.get(0))
}

/// The compare-and-set every post goes through: the group is at `epoch` and the token is that
/// of `epoch`. The token is judged before the epoch, so that only a member learns where the
/// group is.
fn may_post(conn: &Connection, group_id: &[u8], epoch: u64, token_hash: &TokenHash) -> Judged<()> {
    let Some(current) = current_epoch(conn, group_id)? else {
        return Ok(Err(Refused::UnknownGroup));
    };
    let token: Option<Vec<u8>> = conn
        .prepare_cached("SELECT token_hash FROM replica_tokens WHERE group_id = ?1 AND epoch = ?2")?
        .query_row(params![group_id, epoch as i64], |r| r.get(0))
        .optional()?;
    Ok(if token.as_deref() != Some(&token_hash[..]) {
        Err(Refused::BadToken)
    } else if epoch != current {
        Err(Refused::StaleEpoch { current })
    } else {
        Ok(())
    })
}

struct Append<'a> {
    group_id: &'a [u8],
    epoch: u64,
    kind: EntryKind,
    message: &'a [u8],
    at: UnixTime,
    post_key: Option<&'a PostKey>,
}

fn append(conn: &Connection, entry: Append<'_>) -> rusqlite::Result<u64> {
    let seq: i64 = conn
        .prepare_cached(
            "UPDATE replica_groups SET next_seq = next_seq + 1 WHERE group_id = ?1
             RETURNING next_seq - 1",
        )?
        .query_row([entry.group_id], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT INTO replica_log (group_id, seq, epoch, kind, message, at, post_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        entry.group_id,
        seq,
        entry.epoch as i64,
        kind_code(entry.kind),
        entry.message,
        entry.at as i64,
        entry.post_key.map(|k| &k[..]),
    ])?;
    Ok(seq as u64)
}

pub fn create_group(conn: &Connection, group_id: &[u8], token_hash: &TokenHash) -> Judged<()> {
    if current_epoch(conn, group_id)?.is_some() {
        return Ok(Err(Refused::GroupExists));
    }
    conn.prepare_cached(
        "INSERT INTO replica_groups (group_id, epoch, next_seq) VALUES (?1, 0, 1)",
    )?
    .execute([group_id])?;
    conn.prepare_cached(
        "INSERT INTO replica_tokens (group_id, epoch, token_hash) VALUES (?1, 0, ?2)",
    )?
    .execute(params![group_id, &token_hash[..]])?;
    Ok(Ok(()))
}

/// What the replica knows of each recipient of `commit`'s Welcomes ([`escrow::releases`]).
fn recipients(
    conn: &Connection,
    commit: &NewCommit,
) -> rusqlite::Result<BTreeMap<ClientId, Recipient>> {
    let mut recipients = BTreeMap::new();
    for welcome in &commit.welcomes {
        let owner = welcome.recipient;
        if recipients.contains_key(&owner) {
            continue;
        }
        let held: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM replica_mailbox WHERE owner = ?1")?
            .query_row([&owner[..]], |r| r.get(0))?;
        let last_resort_waiting: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM replica_mailbox
                                WHERE owner = ?1 AND last_resort_from = ?2)",
            )?
            .query_row(params![&owner[..], &commit.poster[..]], |r| r.get(0))?;
        let known = Recipient {
            open_claims: open_claims(conn, &owner, &commit.poster)?,
            held: held as u64,
            last_resort_waiting,
        };
        recipients.insert(owner, known);
    }
    Ok(recipients)
}

pub fn post_commit(
    conn: &Connection,
    commit: &NewCommit,
    mailbox_quota: u64,
    now: UnixTime,
) -> Judged<Committed> {
    let group_id = commit.group_id.as_slice();
    if let Err(refused) = may_post(conn, group_id, commit.epoch, &commit.token_hash)? {
        return Ok(Err(refused));
    }
    let recipients = recipients(conn, commit)?;
    let releases = match escrow::releases(commit, mailbox_quota, &recipients) {
        Ok(releases) => releases,
        Err(refused) => return Ok(Err(refused)),
    };
    // Decided: from here on everything is written.
    let next = commit.epoch + 1;
    let seq = append(
        conn,
        Append {
            group_id,
            epoch: commit.epoch,
            kind: EntryKind::Commit,
            message: &commit.commit,
            at: now,
            post_key: None,
        },
    )?;
    conn.prepare_cached("UPDATE replica_groups SET epoch = ?2 WHERE group_id = ?1")?
        .execute(params![group_id, next as i64])?;
    conn.prepare_cached(
        "INSERT INTO replica_tokens (group_id, epoch, token_hash) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![group_id, next as i64, &commit.next_token_hash[..]])?;
    if !commit.sealed_tree.is_empty() {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO replica_trees (group_id, epoch, sealed, access_hash, at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            group_id,
            next as i64,
            commit.sealed_tree,
            &commit.tree_access_hash[..],
            now as i64
        ])?;
    }
    let mut welcomes = Vec::with_capacity(releases.len());
    for (welcome, release) in commit.welcomes.iter().zip(releases) {
        let Some(claim) = release.claim else {
            welcomes.push(None);
            continue;
        };
        use_claim(conn, &welcome.recipient, claim)?;
        let last_resort_from = release.last_resort.then_some(&commit.poster[..]);
        let id: i64 = conn
            .prepare_cached(
                "INSERT INTO replica_mailbox
                 (owner, group_id, epoch, welcome, tree_key, at, last_resort_from)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
            )?
            .query_row(
                params![
                    &welcome.recipient[..],
                    group_id,
                    next as i64,
                    welcome.welcome,
                    welcome.tree_key,
                    now as i64,
                    last_resort_from
                ],
                |r| r.get(0),
            )?;
        welcomes.push(Some(id as u64));
    }
    Ok(Ok(Committed {
        seq,
        epoch: next,
        welcomes,
    }))
}

/// Where the post with this key was stored, if it still is.
fn repeat(conn: &Connection, group_id: &[u8], key: &PostKey) -> rusqlite::Result<Option<Posted>> {
    conn.prepare_cached("SELECT seq, epoch FROM replica_log WHERE group_id = ?1 AND post_key = ?2")?
        .query_row(params![group_id, &key[..]], |r| {
            Ok(Posted {
                seq: r.get::<_, i64>(0)? as u64,
                epoch: r.get::<_, i64>(1)? as u64,
                repeat: true,
            })
        })
        .optional()
}

pub fn post_messages(
    conn: &Connection,
    posts: &[NewMessage],
    now: UnixTime,
) -> rusqlite::Result<Vec<Result<Posted, Refused>>> {
    let mut results = Vec::with_capacity(posts.len());
    for post in posts {
        let group_id = post.group_id.as_slice();
        if current_epoch(conn, group_id)?.is_none() {
            results.push(Err(Refused::UnknownGroup));
            continue;
        }
        if let Some(key) = &post.post_key
            && let Some(first) = repeat(conn, group_id, key)?
        {
            results.push(Ok(first));
            continue;
        }
        if let Err(refused) = may_post(conn, group_id, post.epoch, &post.token_hash)? {
            results.push(Err(refused));
            continue;
        }
        let entry = Append {
            group_id,
            epoch: post.epoch,
            kind: EntryKind::Message,
            message: &post.message,
            at: now,
            post_key: post.post_key.as_ref(),
        };
        results.push(Ok(Posted {
            seq: append(conn, entry)?,
            epoch: post.epoch,
            repeat: false,
        }));
    }
    Ok(results)
}

pub fn post_notice(
    conn: &Connection,
    group_id: &[u8],
    token_hash: &TokenHash,
    notice: &[u8],
    now: UnixTime,
) -> Judged<Posted> {
    let Some(epoch) = current_epoch(conn, group_id)? else {
        return Ok(Err(Refused::UnknownGroup));
    };
    if !holds_token(conn, group_id, token_hash)? {
        return Ok(Err(Refused::BadToken));
    }
    let entry = Append {
        group_id,
        epoch,
        kind: EntryKind::Notice,
        message: notice,
        at: now,
        post_key: None,
    };
    Ok(Ok(Posted {
        seq: append(conn, entry)?,
        epoch,
        repeat: false,
    }))
}

pub fn fetch_group(
    conn: &Connection,
    group_id: &[u8],
    token_hash: &TokenHash,
    after_seq: u64,
    page: Page,
) -> Judged<Vec<Entry>> {
    if current_epoch(conn, group_id)?.is_none() {
        return Ok(Err(Refused::UnknownGroup));
    }
    if !holds_token(conn, group_id, token_hash)? {
        return Ok(Err(Refused::BadToken));
    }
    let mut stmt = conn.prepare_cached(
        "SELECT seq, epoch, kind, message FROM replica_log
         WHERE group_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let after = after_seq.min(i64::MAX as u64) as i64;
    let rows = stmt.query_map(params![group_id, after, page.entries], |r| {
        Ok(Entry {
            seq: r.get::<_, i64>(0)? as u64,
            epoch: r.get::<_, i64>(1)? as u64,
            kind: kind_of(r.get(2)?)?,
            group_id: group_id.to_vec(),
            message: r.get(3)?,
        })
    })?;
    let entries: Vec<Entry> = rows.collect::<rusqlite::Result<_>>()?;
    let fit = page.fit(entries.iter().map(|e| e.message.len() as u64));
    Ok(Ok(entries.into_iter().take(fit).collect()))
}

pub fn fetch_tree(
    conn: &Connection,
    group_id: &[u8],
    epoch: u64,
    access_hash: &[u8; 32],
) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached(
        "SELECT sealed FROM replica_trees WHERE group_id = ?1 AND epoch = ?2 AND access_hash = ?3",
    )?
    .query_row(params![group_id, epoch as i64, &access_hash[..]], |r| {
        r.get(0)
    })
    .optional()
}

pub fn fetch_mailbox(
    conn: &Connection,
    owner: &ClientId,
    after: u64,
    page: Page,
) -> rusqlite::Result<Vec<Welcome>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, group_id, epoch, welcome, tree_key FROM replica_mailbox
         WHERE owner = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    )?;
    let after = after.min(i64::MAX as u64) as i64;
    let rows = stmt.query_map(params![&owner[..], after, page.entries], |r| {
        Ok(Welcome {
            id: r.get::<_, i64>(0)? as u64,
            group_id: r.get(1)?,
            epoch: r.get::<_, i64>(2)? as u64,
            welcome: r.get(3)?,
            tree_key: r.get(4)?,
        })
    })?;
    let welcomes: Vec<Welcome> = rows.collect::<rusqlite::Result<_>>()?;
    let fit = page.fit(
        welcomes
            .iter()
            .map(|w| (w.welcome.len() + w.tree_key.len()) as u64),
    );
    Ok(welcomes.into_iter().take(fit).collect())
}

pub fn ack_mailbox(conn: &Connection, owner: &ClientId, up_to: u64) -> rusqlite::Result<u64> {
    let up_to = up_to.min(i64::MAX as u64) as i64;
    conn.prepare_cached("DELETE FROM replica_mailbox WHERE owner = ?1 AND id <= ?2")?
        .execute(params![&owner[..], up_to])
        .map(|n| n as u64)
}

pub fn purge(conn: &Connection, cuts: Cuts) -> rusqlite::Result<Purged> {
    let claims = purge_claims(conn, cuts.log_before)?;
    let mailbox_entries = conn
        .prepare_cached("DELETE FROM replica_mailbox WHERE at < ?1")?
        .execute([cuts.mailbox_before as i64])? as u64;
    let log_entries = conn
        .prepare_cached("DELETE FROM replica_log WHERE at < ?1")?
        .execute([cuts.log_before as i64])? as u64;
    let trees = conn
        .prepare_cached(
            "DELETE FROM replica_trees WHERE at < ?1 AND NOT EXISTS (
                 SELECT 1 FROM replica_mailbox m
                 WHERE m.group_id = replica_trees.group_id AND m.epoch = replica_trees.epoch)",
        )?
        .execute([cuts.tree_grace as i64])? as u64;
    Ok(Purged {
        log_entries,
        claims,
        mailbox_entries,
        trees,
    })
}
