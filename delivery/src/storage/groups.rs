//! Group logs: one total order of commits and messages per group, posting rights by token,
//! Welcome escrow, ratchet trees per epoch, and mailboxes.
//!
//! The heart is one compare-and-set: a commit for epoch `e` moves the group's row from `e` to
//! `e + 1` only if it is still at `e` and the token of `e` matches. On Postgres, racing
//! committers queue on that row's lock and the losers then see the new epoch; on SQLite the
//! write lock serialises them. The commit's log entry, the next epoch's token, its tree and its
//! Welcomes are written in the same transaction, so a loser's Welcomes never reach a mailbox.

use std::collections::{BTreeMap, btree_map};

use mlschat_grouplog::escrow::{self, OpenClaim, Recipient};
use mlschat_grouplog::{
    ClientId, Committed, Cuts, Entry, EntryKind, GroupLog, Judged, NewCommit, NewMessage, Page,
    Posted, Purged, Refused, TokenHash, UnixTime, Welcome,
};

use super::{Database, RowExt, StorageError, from_db, to_db, with_pool, write_transaction};

fn kind_code(kind: EntryKind) -> i64 {
    kind as u8 as i64
}

fn kind_of(code: i64) -> EntryKind {
    match code {
        1 => EntryKind::Commit,
        3 => EntryKind::Notice,
        _ => EntryKind::Message,
    }
}

/// Takes the group's next sequence number if it is still at `epoch` and the token matches; a
/// commit also moves it to the next epoch (`$4` = 1). Returns the sequence number taken.
const ADVANCE: &str = "
    UPDATE groups SET epoch = epoch + $4, next_seq = next_seq + 1
    WHERE group_id = $1 AND epoch = $2
      AND EXISTS (SELECT 1 FROM group_tokens t
                  WHERE t.group_id = $1 AND t.epoch = $2 AND t.token_hash = $3)
    RETURNING next_seq - 1";

/// Inside a write transaction: what the store knows of one recipient of a commit's Welcomes
/// from `$poster` ([`escrow::Recipient`]), read before any of them is written.
macro_rules! recipient {
    ($tx:ident, $owner:expr, $poster:expr) => {{
        let rows = sqlx::query(
            "SELECT id, reference, last_resort FROM claim_log
             WHERE owner = $1 AND claimer = $2 AND NOT welcomed
             ORDER BY id DESC LIMIT 64",
        )
        .bind($owner)
        .bind($poster)
        .fetch_all(&mut *$tx)
        .await?;
        let mut open_claims = Vec::with_capacity(rows.len());
        for row in &rows {
            open_claims.push(OpenClaim {
                seq: from_db(row.int(0)?),
                reference: row.bytes(1)?,
                last_resort: row.flag(2)?,
            });
        }
        let held: i64 = sqlx::query_scalar("SELECT count(*) FROM mailbox WHERE owner = $1")
            .bind($owner)
            .fetch_one(&mut *$tx)
            .await?;
        let waiting: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM mailbox WHERE owner = $1 AND last_resort_from = $2 LIMIT 1",
        )
        .bind($owner)
        .bind($poster)
        .fetch_optional(&mut *$tx)
        .await?;
        Recipient {
            open_claims,
            held: from_db(held),
            last_resort_waiting: waiting.is_some(),
        }
    }};
}

/// Inside a write transaction: the compare-and-set of [`ADVANCE`] and, if it succeeds, the log
/// entry. Evaluates to `Ok(seq)`, or `Err(Refused)` with nothing written.
macro_rules! append {
    ($tx:ident, $group_id:expr, $epoch:expr, $token_hash:expr, $kind:expr, $message:expr, $post_key:expr, $now:expr) => {{
        let advance: i64 = if $kind == EntryKind::Commit { 1 } else { 0 };
        let seq: Option<i64> = sqlx::query_scalar(ADVANCE)
            .bind($group_id)
            .bind($epoch)
            .bind($token_hash.as_slice())
            .bind(advance)
            .fetch_optional(&mut *$tx)
            .await?;
        match seq {
            None => {
                let current: Option<(i64, bool)> = sqlx::query_as(CURRENT)
                    .bind($group_id)
                    .bind($epoch)
                    .bind($token_hash.as_slice())
                    .fetch_optional(&mut *$tx)
                    .await?;
                Err(refusal(current, $epoch))
            }
            Some(seq) => {
                sqlx::query(
                    "INSERT INTO group_log (group_id, seq, epoch, kind, message, at, post_key)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind($group_id)
                .bind(seq)
                .bind($epoch)
                .bind(kind_code($kind))
                .bind($message)
                .bind($now)
                .bind($post_key)
                .execute(&mut *$tx)
                .await?;
                Ok(seq)
            }
        }
    }};
}

impl GroupLog for Database {
    type Error = StorageError;

    async fn create_group(
        &self,
        group_id: &[u8],
        token_hash: &TokenHash,
        now: UnixTime,
    ) -> Judged<(), StorageError> {
        let now = to_db(now);
        Ok(write_transaction!(self, |tx, _postgres| {
            let created = sqlx::query(
                "INSERT INTO groups (group_id, epoch, next_seq, created_at) VALUES ($1, 0, 1, $2)
                 ON CONFLICT DO NOTHING",
            )
            .bind(group_id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if created {
                sqlx::query(
                    "INSERT INTO group_tokens (group_id, epoch, token_hash) VALUES ($1, 0, $2)",
                )
                .bind(group_id)
                .bind(token_hash.as_slice())
                .execute(&mut *tx)
                .await?;
                Ok(())
            } else {
                Err(Refused::GroupExists)
            }
        }))
    }

    /// A refusal returns before the transaction commits, so all of it is rolled back.
    async fn post_commit(
        &self,
        commit: &NewCommit,
        mailbox_quota: u64,
        now: UnixTime,
    ) -> Judged<Committed, StorageError> {
        let group_id = commit.group_id.as_slice();
        let epoch = to_db(commit.epoch);
        let now = to_db(now);
        Ok(write_transaction!(self, |tx, _postgres| {
            let kind = EntryKind::Commit;
            let seq = match append!(
                tx,
                group_id,
                epoch,
                &commit.token_hash,
                kind,
                &commit.commit,
                None::<&[u8]>,
                now
            ) {
                Err(refused) => return Ok(Err(refused)),
                Ok(seq) => seq,
            };
            let next = epoch + 1;
            sqlx::query(
                "INSERT INTO group_tokens (group_id, epoch, token_hash) VALUES ($1, $2, $3)",
            )
            .bind(group_id)
            .bind(next)
            .bind(commit.next_token_hash.as_slice())
            .execute(&mut *tx)
            .await?;
            if !commit.sealed_tree.is_empty() {
                sqlx::query(
                    "INSERT INTO group_trees (group_id, epoch, ratchet_tree, access_hash, at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(group_id)
                .bind(next)
                .bind(&commit.sealed_tree)
                .bind(commit.tree_access_hash.as_slice())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            // What the store knows of each recipient, read before any Welcome is written.
            let poster = commit.poster.as_slice();
            let mut recipients = BTreeMap::new();
            for welcome in &commit.welcomes {
                let owner = welcome.recipient;
                if let btree_map::Entry::Vacant(slot) = recipients.entry(owner) {
                    slot.insert(recipient!(tx, owner.as_slice(), poster));
                }
            }
            // A refusal returns before the transaction commits: all of it is rolled back.
            let releases = match escrow::releases(commit, mailbox_quota, &recipients) {
                Ok(releases) => releases,
                Err(refused) => return Ok(Err(refused)),
            };
            let mut welcomes = Vec::with_capacity(commit.welcomes.len());
            for (welcome, release) in commit.welcomes.iter().zip(releases) {
                let Some(claim) = release.claim else {
                    welcomes.push(None);
                    continue;
                };
                sqlx::query("UPDATE claim_log SET welcomed = TRUE WHERE id = $1")
                    .bind(to_db(claim))
                    .execute(&mut *tx)
                    .await?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO mailbox (owner, group_id, epoch, welcome, tree_key, at,
                         last_resort_from)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                )
                .bind(welcome.recipient.as_slice())
                .bind(group_id)
                .bind(next)
                .bind(&welcome.welcome)
                .bind(&welcome.tree_key)
                .bind(now)
                .bind(release.last_resort.then_some(poster))
                .fetch_one(&mut *tx)
                .await?;
                welcomes.push(Some(from_db(id)));
            }
            Ok(Committed {
                seq: from_db(seq),
                epoch: from_db(next),
                welcomes,
            })
        }))
    }

    async fn post_notice(
        &self,
        group_id: &[u8],
        token_hash: &TokenHash,
        notice: &[u8],
        now: UnixTime,
    ) -> Judged<Posted, StorageError> {
        let now = to_db(now);
        Ok(write_transaction!(self, |tx, _postgres| {
            let taken: Option<(i64, i64)> = sqlx::query_as(
                "UPDATE groups SET next_seq = next_seq + 1
                 WHERE group_id = $1 AND EXISTS (SELECT 1 FROM group_tokens t
                     WHERE t.group_id = $1 AND t.token_hash = $2)
                 RETURNING next_seq - 1, epoch",
            )
            .bind(group_id)
            .bind(token_hash.as_slice())
            .fetch_optional(&mut *tx)
            .await?;
            let Some((seq, epoch)) = taken else {
                let known: Option<i64> =
                    sqlx::query_scalar("SELECT epoch FROM groups WHERE group_id = $1")
                        .bind(group_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                return Ok(Err(match known {
                    None => Refused::UnknownGroup,
                    Some(_) => Refused::BadToken,
                }));
            };
            sqlx::query(
                "INSERT INTO group_log (group_id, seq, epoch, kind, message, at, post_key)
                 VALUES ($1, $2, $3, $4, $5, $6, NULL)",
            )
            .bind(group_id)
            .bind(seq)
            .bind(epoch)
            .bind(kind_code(EntryKind::Notice))
            .bind(notice)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Ok(Posted {
                seq: from_db(seq),
                epoch: from_db(epoch),
                repeat: false,
            })
        }))
    }

    /// One transaction: the node's group commit.
    async fn post_messages(
        &self,
        posts: &[NewMessage],
        now: UnixTime,
    ) -> Result<Vec<Result<Posted, Refused>>, StorageError> {
        let now = to_db(now);
        if let Database::Postgres(pool) = self {
            return post_messages_postgres(pool, posts, now).await;
        }
        Ok(write_transaction!(self, |tx, _postgres| {
            let mut results = Vec::with_capacity(posts.len());
            for post in posts {
                let (group_id, epoch) = (post.group_id.as_slice(), to_db(post.epoch));
                if let Some(key) = &post.post_key {
                    let first: Option<(i64, i64)> = sqlx::query_as(FIRST_POST)
                        .bind(group_id)
                        .bind(key.as_slice())
                        .fetch_optional(&mut *tx)
                        .await?;
                    if let Some((seq, epoch)) = first {
                        results.push(Ok(repeat(seq, epoch)));
                        continue;
                    }
                }
                let kind = EntryKind::Message;
                let key = post.post_key.as_ref().map(|k| k.as_slice());
                let appended = append!(
                    tx,
                    group_id,
                    epoch,
                    &post.token_hash,
                    kind,
                    &post.message,
                    key,
                    now
                );
                results.push(appended.map(|seq| Posted {
                    seq: from_db(seq),
                    epoch: from_db(epoch),
                    repeat: false,
                }));
            }
            results
        }))
    }

    async fn fetch_group(
        &self,
        group_id: &[u8],
        token_hash: &TokenHash,
        after_seq: u64,
        page: Page,
    ) -> Judged<Vec<Entry>, StorageError> {
        const TOKEN: &str =
            "SELECT count(*) FROM group_tokens WHERE group_id = $1 AND token_hash = $2";
        const EXISTS: &str = "SELECT count(*) FROM groups WHERE group_id = $1";
        macro_rules! check {
            ($pool:expr) => {{
                let tokens: i64 = sqlx::query_scalar(TOKEN)
                    .bind(group_id)
                    .bind(token_hash.as_slice())
                    .fetch_one($pool)
                    .await?;
                if tokens == 0 {
                    let exists: i64 = sqlx::query_scalar(EXISTS)
                        .bind(group_id)
                        .fetch_one($pool)
                        .await?;
                    return Ok(Err(if exists == 0 {
                        Refused::UnknownGroup
                    } else {
                        Refused::BadToken
                    }));
                }
            }};
        }
        with_pool!(self, |pool| check!(pool));
        Ok(Ok(self.log_after(group_id, after_seq, page).await?))
    }

    async fn fetch_tree(
        &self,
        group_id: &[u8],
        epoch: u64,
        access_hash: &[u8; 32],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        const SQL: &str = "SELECT ratchet_tree FROM group_trees
                           WHERE group_id = $1 AND epoch = $2 AND access_hash = $3";
        let epoch = to_db(epoch);
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(SQL)
                .bind(group_id)
                .bind(epoch)
                .bind(access_hash.as_slice())
                .fetch_optional(pool)
                .await?
        }))
    }

    async fn fetch_mailbox(
        &self,
        owner: &ClientId,
        after: u64,
        page: Page,
    ) -> Result<Vec<Welcome>, StorageError> {
        const SIZES: &str = "SELECT CAST(length(welcome) + length(tree_key) AS BIGINT) FROM mailbox
                             WHERE owner = $1 AND id > $2 ORDER BY id LIMIT $3";
        const SQL: &str = "SELECT id, epoch, group_id, welcome, tree_key FROM mailbox
                           WHERE owner = $1 AND id > $2 ORDER BY id LIMIT $3";
        fn entry(row: &impl RowExt) -> Result<Welcome, sqlx::Error> {
            Ok(Welcome {
                id: from_db(row.int(0)?),
                epoch: from_db(row.int(1)?),
                group_id: row.bytes(2)?,
                welcome: row.bytes(3)?,
                tree_key: row.bytes(4)?,
            })
        }
        let (owner, after) = (owner.as_slice(), to_db(after));
        let limit = self.fitting(SIZES, owner, after, page).await?;
        let rows: Result<Vec<Welcome>, sqlx::Error> = with_pool!(self, |pool| sqlx::query(SQL)
            .bind(owner)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?
            .iter()
            .map(entry)
            .collect());
        Ok(rows?)
    }

    async fn purge(&self, cuts: Cuts) -> Result<Purged, StorageError> {
        const LOG: &str = "DELETE FROM group_log WHERE at < $1";
        const CLAIMS: &str = "DELETE FROM claim_log WHERE at < $1";
        const MAILBOX: &str = "DELETE FROM mailbox WHERE at < $1";
        const TREES: &str = "DELETE FROM group_trees WHERE at < $1 AND NOT EXISTS (
                                 SELECT 1 FROM mailbox
                                 WHERE mailbox.group_id = group_trees.group_id
                                   AND mailbox.epoch = group_trees.epoch)";
        let mut purged = Purged::default();
        for (sql, cut, count) in [
            (LOG, cuts.log_before, &mut purged.log_entries),
            (CLAIMS, cuts.log_before, &mut purged.claims),
            (MAILBOX, cuts.mailbox_before, &mut purged.mailbox_entries),
            (TREES, cuts.tree_grace, &mut purged.trees),
        ] {
            let cut = to_db(cut);
            *count = with_pool!(self, |pool| {
                let done = sqlx::query(sql).bind(cut).execute(pool).await?;
                done.rows_affected()
            });
        }
        Ok(purged)
    }

    async fn ack_mailbox(&self, owner: &ClientId, up_to: u64) -> Result<u64, StorageError> {
        const SQL: &str = "DELETE FROM mailbox WHERE owner = $1 AND id <= $2";
        let (owner, up_to) = (owner.as_slice(), to_db(up_to));
        Ok(with_pool!(self, |pool| {
            let done = sqlx::query(SQL)
                .bind(owner)
                .bind(up_to)
                .execute(pool)
                .await?;
            done.rows_affected()
        }))
    }
}

impl Database {
    /// Log entries after `after_seq`, without a token: for the node's own use (pushing what
    /// another node process announced to connections that are subscribed).
    pub async fn log_after(
        &self,
        group_id: &[u8],
        after_seq: u64,
        page: impl Into<Page>,
    ) -> Result<Vec<Entry>, StorageError> {
        const SIZES: &str = "SELECT CAST(length(message) AS BIGINT) FROM group_log
                             WHERE group_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
        const LOG: &str = "SELECT seq, epoch, CAST(kind AS BIGINT), message FROM group_log
                           WHERE group_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
        fn entry(group_id: &[u8], row: &impl RowExt) -> Result<Entry, sqlx::Error> {
            Ok(Entry {
                seq: from_db(row.int(0)?),
                epoch: from_db(row.int(1)?),
                kind: kind_of(row.int(2)?),
                group_id: group_id.to_vec(),
                message: row.bytes(3)?,
            })
        }
        let page = page.into();
        let after = to_db(after_seq);
        let limit = self.fitting(SIZES, group_id, after, page).await?;
        let entries: Result<Vec<Entry>, sqlx::Error> = with_pool!(self, |pool| sqlx::query(LOG)
            .bind(group_id)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| entry(group_id, row))
            .collect());
        Ok(entries?)
    }

    /// How many of the entries `sizes` lists (by key and after a position) fit in `page`: the
    /// sizes are read first, so that no more bytes than the page holds are read.
    async fn fitting(
        &self,
        sizes: &'static str,
        key: &[u8],
        after: i64,
        page: Page,
    ) -> Result<i64, StorageError> {
        let limit = i64::from(page.entries);
        if page.bytes == u64::MAX {
            return Ok(limit);
        }
        let sizes: Vec<i64> = with_pool!(self, |pool| sqlx::query_scalar(sizes)
            .bind(key)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?);
        Ok(page.fit(sizes.iter().map(|&size| from_db(size))) as i64)
    }
}

/// [`Database::post_messages`] on Postgres in one statement, so a batch costs one round trip
/// (no BEGIN and COMMIT around it) rather than two per post. Same rules as [`ADVANCE`]: each
/// group's row is moved once by the number of accepted posts, and only if it is still at their
/// epoch when the row lock is held (a commit racing in re-evaluates the condition), so no
/// message lands after the epoch it was sent in. Refused posts (rare) then learn why with a
/// query each.
async fn post_messages_postgres(
    pool: &sqlx::PgPool,
    posts: &[NewMessage],
    now: i64,
) -> Result<Vec<Result<Posted, Refused>>, StorageError> {
    // Repeats are rare (a post whose answer was lost): the batch goes in as one statement, and
    // the unique index on post keys refuses it whole if it holds one; only then are repeats
    // looked up and answered from the log.
    match append_batch_postgres(pool, posts, now).await {
        Err(StorageError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
            post_with_repeats_postgres(pool, posts, now).await
        }
        answered => answered,
    }
}

/// A batch holding a repeat: repeats are answered from the log and leave the batch; so is a
/// second copy within it. The rest goes in as one statement.
async fn post_with_repeats_postgres(
    pool: &sqlx::PgPool,
    posts: &[NewMessage],
    now: i64,
) -> Result<Vec<Result<Posted, Refused>>, StorageError> {
    let mut answers: Vec<Option<Result<Posted, Refused>>> = vec![None; posts.len()];
    let keyed: Vec<usize> = (0..posts.len())
        .filter(|&i| posts[i].post_key.is_some())
        .collect();
    if !keyed.is_empty() {
        const FIRST_POSTS: &str = "
            SELECT k.i, l.seq, l.epoch
            FROM unnest($1::bytea[], $2::bytea[]) WITH ORDINALITY AS k(group_id, post_key, i)
            JOIN group_log l ON l.group_id = k.group_id AND l.post_key = k.post_key";
        let groups: Vec<&[u8]> = keyed
            .iter()
            .map(|&i| posts[i].group_id.as_slice())
            .collect();
        let keys: Vec<&[u8]> = keyed
            .iter()
            .map(|&i| posts[i].post_key.as_ref().expect("keyed").as_slice())
            .collect();
        let found: Vec<(i64, i64, i64)> = sqlx::query_as(FIRST_POSTS)
            .bind(&groups)
            .bind(&keys)
            .fetch_all(pool)
            .await?;
        for (i, seq, epoch) in found {
            answers[keyed[i as usize - 1]] = Some(Ok(repeat(seq, epoch)));
        }
    }
    let mut first_of = std::collections::HashMap::new();
    let mut copies = Vec::new();
    let fresh: Vec<usize> = (0..posts.len())
        .filter(|&i| {
            if answers[i].is_some() {
                return false;
            }
            let Some(key) = &posts[i].post_key else {
                return true;
            };
            match first_of.entry((posts[i].group_id.as_slice(), key)) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    copies.push((i, *first.get()));
                    false
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(i);
                    true
                }
            }
        })
        .collect();
    let batch: Vec<NewMessage> = fresh.iter().map(|&i| posts[i].clone()).collect();
    for (i, result) in fresh
        .iter()
        .zip(append_batch_postgres(pool, &batch, now).await?)
    {
        answers[*i] = Some(result);
    }
    for (copy, first) in copies {
        answers[copy] = Some(
            answers[first]
                .expect("answered above")
                .map(|posted| Posted {
                    repeat: true,
                    ..posted
                }),
        );
    }
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every post answered"))
        .collect())
}

/// The fresh posts of a batch, as one statement.
async fn append_batch_postgres(
    pool: &sqlx::PgPool,
    posts: &[NewMessage],
    now: i64,
) -> Result<Vec<Result<Posted, Refused>>, StorageError> {
    if posts.is_empty() {
        return Ok(Vec::new());
    }
    // Each claim is checked and numbered by one UPDATE of its group's row, however many posts
    // make it; at most one claim per group can pass (one token per epoch), so no row is updated
    // twice. Then each post is stored at its claim's first number plus its place in the claim.
    const BATCH: &str = "
        WITH claims AS (
            SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[], $4::int8[])
                WITH ORDINALITY AS c(group_id, epoch, token_hash, posts, claim)),
        numbered AS (
            UPDATE groups g SET next_seq = g.next_seq + c.posts FROM claims c
            WHERE g.group_id = c.group_id AND g.epoch = c.epoch
              AND EXISTS (SELECT 1 FROM group_tokens t WHERE t.group_id = c.group_id
                          AND t.epoch = c.epoch AND t.token_hash = c.token_hash)
            RETURNING c.claim, g.group_id, g.epoch, g.next_seq - c.posts AS first_seq),
        inserted AS (
            INSERT INTO group_log (group_id, seq, epoch, kind, message, at, post_key)
            SELECT n.group_id, n.first_seq + p.place, n.epoch, $8, p.message, $9, p.post_key
            FROM unnest($5::int8[], $6::int8[], $7::bytea[], $10::bytea[])
                AS p(claim, place, message, post_key)
            JOIN numbered n ON n.claim = p.claim)
        SELECT claim, first_seq FROM numbered";
    let claims = Claims::of(posts);
    let sizes: Vec<i64> = claims.keys.iter().map(|(_, n)| *n as i64).collect();
    let (mut groups, mut epochs, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
    for ((group_id, epoch, token_hash), _) in &claims.keys {
        groups.push(*group_id);
        epochs.push(to_db(*epoch));
        tokens.push(token_hash.as_slice());
    }
    let post_claims: Vec<i64> = claims.of_post.iter().map(|&(c, _)| c as i64 + 1).collect();
    let places: Vec<i64> = claims.of_post.iter().map(|&(_, k)| k as i64).collect();
    let messages: Vec<&[u8]> = posts.iter().map(|p| p.message.as_slice()).collect();
    let post_keys: Vec<Option<&[u8]>> = posts
        .iter()
        .map(|p| p.post_key.as_ref().map(|k| k.as_slice()))
        .collect();
    // One statement is one transaction (autocommit): atomic, and durable before it returns.
    let accepted: Vec<(i64, i64)> = sqlx::query_as(BATCH)
        .bind(&groups)
        .bind(&epochs)
        .bind(&tokens)
        .bind(&sizes)
        .bind(&post_claims)
        .bind(&places)
        .bind(&messages)
        .bind(kind_code(EntryKind::Message) as i16)
        .bind(now)
        .bind(&post_keys)
        .fetch_all(pool)
        .await?;
    let mut first_seqs = vec![None; claims.keys.len()];
    for (claim, first_seq) in accepted {
        first_seqs[claim as usize - 1] = Some(from_db(first_seq));
    }
    let mut results = Vec::with_capacity(posts.len());
    for (post, &(claim, place)) in posts.iter().zip(&claims.of_post) {
        results.push(match first_seqs[claim] {
            Some(first_seq) => Ok(Posted {
                seq: first_seq + place as u64,
                epoch: post.epoch,
                repeat: false,
            }),
            None => {
                let current: Option<(i64, bool)> = sqlx::query_as(CURRENT)
                    .bind(&post.group_id)
                    .bind(to_db(post.epoch))
                    .bind(post.token_hash.as_slice())
                    .fetch_optional(pool)
                    .await?;
                Err(refusal(current, to_db(post.epoch)))
            }
        });
    }
    Ok(results)
}

/// What a post claims: its group, its epoch and the hash of its token.
type Claim<'a> = (&'a [u8], u64, TokenHash);

/// A batch of posts grouped by what they claim, so that each claim is checked and numbered once
/// however many posts make it.
struct Claims<'a> {
    /// Each claim and how many posts make it, ordered by group.
    keys: Vec<(Claim<'a>, usize)>,
    /// For each post, its claim and its place among that claim's posts.
    of_post: Vec<(usize, usize)>,
}

impl<'a> Claims<'a> {
    fn of(posts: &'a [NewMessage]) -> Self {
        let claim = |post: &'a NewMessage| (post.group_id.as_slice(), post.epoch, post.token_hash);
        // claim -> (posts so far, index in group order)
        let mut claims = std::collections::BTreeMap::<Claim, (usize, usize)>::new();
        for post in posts {
            claims.entry(claim(post)).or_default();
        }
        for (index, (_, place)) in claims.values_mut().enumerate() {
            *place = index;
        }
        let of_post = posts
            .iter()
            .map(|post| {
                let (taken, index) = claims.get_mut(&claim(post)).expect("counted above");
                *taken += 1;
                (*index, *taken - 1)
            })
            .collect();
        Claims {
            keys: claims.into_iter().map(|(key, (n, _))| (key, n)).collect(),
            of_post,
        }
    }
}

/// Where a post with the same key was stored the first time.
const FIRST_POST: &str = "SELECT seq, epoch FROM group_log WHERE group_id = $1 AND post_key = $2";

fn repeat(seq: i64, epoch: i64) -> Posted {
    Posted {
        seq: from_db(seq),
        epoch: from_db(epoch),
        repeat: true,
    }
}

/// For a refused post: the group's current epoch, and whether the token presented is the one
/// of the epoch posted at.
const CURRENT: &str = "SELECT g.epoch, EXISTS (SELECT 1 FROM group_tokens t
                           WHERE t.group_id = g.group_id AND t.epoch = $2 AND t.token_hash = $3)
                       FROM groups g WHERE g.group_id = $1";

/// Why the compare-and-set found nothing to update. The token is judged before the epoch, so
/// that only a member learns the group's current epoch.
fn refusal(current: Option<(i64, bool)>, posted: i64) -> Refused {
    match current {
        None => Refused::UnknownGroup,
        Some((_, false)) => Refused::BadToken,
        Some((current, true)) if current != posted => Refused::StaleEpoch {
            current: from_db(current),
        },
        Some(_) => Refused::BadToken,
    }
}
