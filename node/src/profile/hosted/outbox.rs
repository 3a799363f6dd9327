//! Texts (and our leave proposal) waiting to be posted, encrypted when their turn comes and
//! again in place if their epoch ended first.

use super::*;

impl Profile {
    /// The node will never take a queued text (it refused it for good): it leaves the outbox,
    /// and its history says so.
    pub fn fail_text(&mut self, outbox_seq: i64, why: &str) -> Result<(), ProfileError> {
        let now = self.now();
        self.in_transaction(|p| {
            let (group_id, history_seq): (Vec<u8>, Option<i64>) = p.store.conn().query_row(
                "SELECT group_id, history_seq FROM outbox WHERE seq = ?1",
                [outbox_seq],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let id = GroupId::from_slice(&group_id);
            p.store
                .conn()
                .execute("DELETE FROM outbox WHERE seq = ?1", [outbox_seq])?;
            let (epoch, _) = p.group_token(&id)?;
            let body = format!(
                "the text above (#{}) was not delivered: {why}",
                history_seq.unwrap_or(0)
            );
            append_history(p.store.conn(), &id, epoch, &p.me(), &body, now)?;
            Ok(())
        })
    }

    /// Outbox rows and intents waiting in a group.
    pub fn waiting_in(&mut self, id: &GroupId) -> Result<Waiting, ProfileError> {
        let list = |sql: &str| -> Result<Vec<i64>, ProfileError> {
            let mut stmt = self.store.conn().prepare(sql)?;
            let rows = stmt.query_map([id.as_slice()], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        };
        Ok(Waiting {
            texts: list("SELECT seq FROM outbox WHERE group_id = ?1")?,
            intents: list(
                "SELECT seq FROM intents WHERE group_id = ?1
                 UNION ALL SELECT intent_seq FROM pending_commits WHERE group_id = ?1",
            )?,
        })
    }

    /// Whether the group holds another member's proposals (one asked to leave): no text can be
    /// made before a commit takes them. Our own proposal to leave is not one of them: made, it
    /// is posted as it is, and another member commits it (counting it held our lane for good
    /// when its post was lost: seed 56,265 of the simulator's long run).
    pub fn holds_proposals(&mut self, id: &GroupId) -> Result<bool, ProfileError> {
        self.load(id)?;
        let group = &self.groups[id];
        let me = group.own_leaf_index();
        Ok(group
            .pending_proposals()
            .any(|p| !matches!(p.sender(), Sender::Member(leaf) if *leaf == me)))
    }

    /// Queues a text for a hosted group and records it in history; returns its outbox row. It
    /// is encrypted only when its turn to be posted comes ([`Self::encrypt_queued`]), so that
    /// our texts' ratchet generations follow the order in which the log takes them.
    pub fn send_hosted(&mut self, id: &GroupId, text: &str) -> Result<i64, ProfileError> {
        let now = self.now();
        crate::profile::check_text(text)?;
        self.ensure_hosted(id)?;
        // Queued behind our leave proposal, it could never go out once we are removed.
        if self.is_leaving(id)? {
            return Err(TextError::Leaving.into());
        }
        let content = Content::text(self.new_post_id()?, text);
        let (epoch, _) = self.group_token(id)?;
        let me = self.me();
        let may_encrypt = !self.holds_proposals(id)?;
        self.in_transaction(|p| {
            // Alone in line (nothing queued or being committed before it), it is its turn now:
            // encrypted in this same transaction, it costs one write to disk, not two.
            let alone: bool = may_encrypt
                && p.store
                    .conn()
                    .prepare_cached(
                        "SELECT NOT EXISTS (SELECT 1 FROM outbox WHERE group_id = ?1)
                    AND NOT EXISTS (SELECT 1 FROM intents WHERE group_id = ?1)
                    AND NOT EXISTS (SELECT 1 FROM pending_commits WHERE group_id = ?1)
                    AND (SELECT continues IS NULL FROM groups WHERE group_id = ?1)",
                    )?
                    .query_row([id.as_slice()], |r| r.get(0))?;
            let conn = p.store.conn();
            append_text(conn, id, epoch, &me, &content, now)?;
            let history_seq = conn.last_insert_rowid();
            let outbox = queue_text(
                conn,
                id,
                &content.encode(),
                &content.id,
                Some(history_seq),
                now,
            )?;
            if alone {
                p.encrypt_in_place(id, outbox, &content.encode(), Some(history_seq))?;
            }
            Ok(outbox)
        })
    }

    /// Encrypts a queued text's content at the group's current epoch into its outbox row.
    pub(super) fn encrypt_in_place(
        &mut self,
        id: &GroupId,
        outbox_seq: i64,
        content: &[u8],
        history_seq: Option<i64>,
    ) -> Result<(), ProfileError> {
        let now = self.now();
        self.with_group(id, |engine, provider, group, conn| {
            let message = engine.send(provider, group, content)?;
            mark_processed(conn, &message, now)?;
            conn.prepare_cached("UPDATE outbox SET packet = ?2 WHERE seq = ?1")?
                .execute(params![outbox_seq, Packet::Mls(message).encode()?])?;
            conn.prepare_cached("UPDATE messages SET epoch = ?2 WHERE seq = ?1")?
                .execute(params![history_seq, group.epoch().as_u64() as i64])?;
            Ok(())
        })
    }

    /// The outbox row of the oldest message queued for a hosted group (a text, or a proposal to
    /// leave), if any.
    pub fn first_text(&self, id: &GroupId) -> Result<Option<i64>, ProfileError> {
        Ok(self
            .store
            .conn()
            .prepare_cached(
                "SELECT seq FROM outbox WHERE group_id = ?1 AND audience = 'group'
                 ORDER BY seq LIMIT 1",
            )?
            .query_row([id.as_slice()], |r| r.get(0))
            .optional()?)
    }

    /// The oldest message queued for a hosted group: a text, or a proposal (leaving).
    pub fn next_text(&self, id: &GroupId) -> Result<Option<QueuedText>, ProfileError> {
        let row: Option<(i64, Vec<u8>, Option<Vec<u8>>)> = self
            .store
            .conn()
            .prepare_cached(
                "SELECT seq, packet, post_id FROM outbox
                 WHERE group_id = ?1 AND audience = 'group' ORDER BY seq LIMIT 1",
            )?
            .query_row([id.as_slice()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((seq, packet, post_id)) = row else {
            return Ok(None);
        };
        let unreadable = || ProfileError::Corrupt(format!("outbox row {seq} is unreadable"));
        let encrypted = if packet.is_empty() {
            None
        } else {
            let Ok(Some(Packet::Mls(message))) = Packet::read_from(&mut packet.as_slice()) else {
                return Err(unreadable());
            };
            let Ok(Parsed::Protocol(parsed)) = engine::parse_message(&message) else {
                return Err(unreadable());
            };
            Some((parsed.epoch().as_u64(), message))
        };
        // A message queued without an id (a proposal) is named by its hash: it is never
        // encrypted again, so its bytes are its identity.
        let post_id = match (post_id, &encrypted) {
            (Some(id), _) => id.try_into().map_err(|_| unreadable())?,
            (None, Some((_, message))) => {
                Sha256::digest(message)[..16].try_into().expect("16 bytes")
            }
            // Our leave proposal, not made yet: it is, before it is posted.
            (None, None) => [0; 16],
        };
        Ok(Some(QueuedText {
            seq,
            encrypted,
            post_id,
        }))
    }

    /// Encrypts a queued text at the group's current epoch (its turn has come, or the epoch it
    /// was encrypted for ended before the node took it). It keeps its place in the queue and
    /// its post id. A queued proposal cannot be made again: it is dropped, and false returned.
    pub fn encrypt_queued(&mut self, outbox_seq: i64) -> Result<bool, ProfileError> {
        let now = self.now();
        let (group_id, content, history_seq): (Vec<u8>, Option<Vec<u8>>, Option<i64>) =
            self.store.conn().query_row(
                "SELECT group_id, text, history_seq FROM outbox WHERE seq = ?1",
                [outbox_seq],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
        let id = GroupId::from_slice(&group_id);
        self.in_transaction(|p| {
            let Some(content) = content else {
                // A proposal: ours to leave is made (again) at this epoch, in its place.
                if p.is_leaving(&id)? && p.is_active(&id)? {
                    p.with_group(&id, |engine, provider, group, conn| {
                        let proposal = engine.leave(provider, group)?;
                        mark_processed(conn, &proposal, now)?;
                        conn.prepare_cached("UPDATE outbox SET packet = ?2 WHERE seq = ?1")?
                            .execute(params![outbox_seq, Packet::Mls(proposal).encode()?])?;
                        Ok(())
                    })?;
                    return Ok(true);
                }
                p.store
                    .conn()
                    .execute("DELETE FROM outbox WHERE seq = ?1", [outbox_seq])?;
                return Ok(false);
            };
            p.encrypt_in_place(&id, outbox_seq, &content, history_seq)?;
            Ok(true)
        })
    }

    /// The node took a queued text (`post_id`) at log position `log_seq`: its history row takes
    /// that place in the group's order, and the outbox row goes. False if the row had gone
    /// already (the log showed it to us first). Not waited for on disk: if lost, the text is
    /// posted again and the node answers with the same position.
    pub fn mark_posted(
        &self,
        outbox_seq: i64,
        post_id: &PostId,
        log_seq: u64,
    ) -> Result<bool, ProfileError> {
        self.store.transaction_without_sync(|| {
            let conn = self.store.conn();
            conn.execute(
                "UPDATE messages SET log_seq = ?3
                 WHERE seq = (SELECT history_seq FROM outbox WHERE seq = ?1 AND post_id = ?2)",
                params![outbox_seq, post_id.as_slice(), log_seq as i64],
            )?;
            let gone = conn.execute(
                "DELETE FROM outbox WHERE seq = ?1 AND post_id = ?2",
                params![outbox_seq, post_id.as_slice()],
            )?;
            Ok(gone == 1)
        })
    }
}

/// Queues a text for a hosted group, not yet encrypted: its encoded content and post id, and
/// its history row. Returns its outbox row.
pub(super) fn queue_text(
    conn: &rusqlite::Connection,
    id: &GroupId,
    content: &[u8],
    post_id: &[u8],
    history: Option<i64>,
    at: i64,
) -> Result<i64, ProfileError> {
    conn.prepare_cached(
        "INSERT INTO outbox (group_id, audience, packet, created_at, text, history_seq, post_id)
         VALUES (?1, 'group', X'', ?2, ?3, ?4, ?5)",
    )?
    .execute(params![id.as_slice(), at, content, history, post_id])?;
    Ok(conn.last_insert_rowid())
}
