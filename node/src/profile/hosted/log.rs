//! Reading a group's log: each entry processed and the cursor moved in one transaction; our
//! own texts and commits met there confirm what we posted.

use super::*;

impl Profile {
    /// The newest history row.
    pub(super) fn last_history_seq(&self) -> Result<i64, ProfileError> {
        Ok(self
            .store
            .query_opt::<i64>("SELECT coalesce(max(seq), 0) FROM messages", [])?
            .unwrap_or(0))
    }

    /// Gives the group's history rows written after `after` the log position `log_seq`.
    pub(super) fn stamp_history(
        &self,
        id: &GroupId,
        after: i64,
        log_seq: u64,
    ) -> Result<(), ProfileError> {
        self.store
            .conn()
            .prepare_cached("UPDATE messages SET log_seq = ?3 WHERE group_id = ?1 AND seq > ?2")?
            .execute(params![id.as_slice(), after, log_seq as i64])?;
        Ok(())
    }

    pub(super) fn set_log_seq(&self, id: &GroupId, seq: u64) -> Result<(), ProfileError> {
        self.store.conn().execute(
            "UPDATE groups SET log_seq = max(log_seq, ?2) WHERE group_id = ?1",
            params![id.as_slice(), seq as i64],
        )?;
        Ok(())
    }

    /// Processes entries of a group's log in order, in one transaction, moving the group's
    /// cursor past each. Entries at or before the cursor are skipped (delivered twice); a
    /// jump past the cursor is recorded as missing messages; an entry we cannot read is
    /// reported in history and passed. A commit we cannot process stops the group: the cursor
    /// stays before it and the group is marked broken, since every later entry depends on it.
    pub fn receive_log(
        &mut self,
        id: &GroupId,
        entries: &[LogEntry],
    ) -> Result<LogRead, ProfileError> {
        let now = self.now();
        self.in_transaction(|p| {
            let mut read = LogRead::default();
            let mut cursor = p.log_seq(id)?;
            for entry in entries {
                if entry.seq <= cursor {
                    continue; // delivered twice
                }
                if p.broken(id)?.is_some() || !p.is_active(id)? {
                    break;
                }
                let before = p.last_history_seq()?;
                if entry.seq > cursor + 1 {
                    let missing = entry.seq - cursor - 1;
                    let (epoch, _) = p.group_token(id)?;
                    let body = format!(
                        "{missing} entries of the log (positions {} to {}) are gone from the \
                         delivery node; messages among them are lost to us",
                        cursor + 1,
                        entry.seq - 1
                    );
                    append_history(p.store.conn(), id, epoch, &p.me(), &body, now)?;
                }
                match p.receive_entry(id, entry)? {
                    Outcome::Read => {}
                    Outcome::Ours(outbox) => read.posted.push(outbox),
                    Outcome::Confirmed(intent) => read.committed.push(intent),
                    Outcome::Lost => read.lost = true,
                    Outcome::Unreadable(e) => {
                        read.failed += 1;
                        let body = format!(
                            "the message at log position {} could not be read: {e}",
                            entry.seq
                        );
                        tracing::warn!(group = %hex::encode(id.as_slice()), seq = entry.seq, error = %e, "unreadable log entry");
                        append_history(p.store.conn(), id, entry.epoch, &p.me(), &body, now)?;
                    }
                    Outcome::Abandoned(why) => {
                        p.mark_abandoned(id, entry.epoch, &why)?;
                        p.stamp_history(id, before, entry.seq)?;
                        p.set_log_seq(id, entry.seq)?;
                        read.broken = Some(why);
                        break;
                    }
                    Outcome::Broken(e) => {
                        let why = format!(
                            "the commit at log position {} (epoch {}) could not be processed: {e}",
                            entry.seq, entry.epoch
                        );
                        tracing::error!(group = %hex::encode(id.as_slice()), %why, "group broken");
                        p.store.conn().execute(
                            "UPDATE groups SET broken = ?2 WHERE group_id = ?1",
                            params![id.as_slice(), why],
                        )?;
                        let body = format!("cannot go on in this group: {why}");
                        append_history(p.store.conn(), id, entry.epoch, &p.me(), &body, now)?;
                        p.stamp_history(id, before, cursor)?;
                        let kind = format!("broken:{}", hex::encode(id.as_slice()));
                        let text = format!("group {} is broken for you: {why}", hex::encode(id.as_slice()));
                        crate::profile::alerts::raise_alert(p.store.conn(), &kind, &text, now as u64)?;
                        // Whoever accepted that commit went on without us: an admin tells them.
                        p.leave_notice(id, entry.epoch, &entry.message)?;
                        // An admin may have announced already where it goes on.
                        p.follow_announcements(id)?;
                        read.broken = Some(why);
                        break;
                    }
                }
                p.stamp_history(id, before, entry.seq)?;
                p.set_log_seq(id, entry.seq)?;
                cursor = entry.seq;
            }
            read.removed = !p.is_active(id)?;
            Ok(read)
        })
    }

    pub(super) fn is_active(&mut self, id: &GroupId) -> Result<bool, ProfileError> {
        self.load(id)?;
        Ok(self.groups[id].is_active())
    }

    pub(super) fn receive_entry(
        &mut self,
        id: &GroupId,
        entry: &LogEntry,
    ) -> Result<Outcome, ProfileError> {
        if entry.kind == EntryKind::Notice {
            // Not MLS: a signed word, judged on its own whatever its epoch.
            return Ok(match self.abandoned_by(id, &entry.message)? {
                Some(why) => Outcome::Abandoned(why),
                None => Outcome::Read,
            });
        }
        self.load(id)?;
        let epoch = self.groups[id].epoch().as_u64();
        if entry.epoch < epoch {
            // From before we joined, or of an epoch we left by our own commit: not for us.
            return Ok(Outcome::Read);
        }
        let mut lost = false;
        if entry.kind == EntryKind::Commit {
            let ours: Option<Vec<u8>> = self
                .store
                .conn()
                .query_row(
                    "SELECT message FROM pending_commits WHERE group_id = ?1 AND epoch = ?2",
                    params![id.as_slice(), entry.epoch as i64],
                    |r| r.get(0),
                )
                .optional()?;
            match ours {
                Some(ours) if ours == entry.message => {
                    return Ok(Outcome::Confirmed(self.confirm_in_transaction(id)?));
                }
                Some(_) => {
                    self.abandon_in_transaction(id)?;
                    lost = true;
                }
                None => {}
            }
        }
        match self.receive_one(&Packet::Mls(entry.message.clone())) {
            Ok(received) => {
                match &received {
                    Received::Message {
                        incoming: Incoming::Commit { added, .. },
                        ..
                    } => {
                        self.check_members_against_contacts(added)?;
                        self.leave_again(id)?;
                    }
                    Received::Message {
                        incoming: Incoming::Proposal { sender, .. },
                        ..
                    } if self.commits_proposals_of(id, sender)? => self.commit_proposals(id)?,
                    Received::Message {
                        incoming: Incoming::Application { sender, plaintext },
                        ..
                    } => {
                        if let Ok(content) = Content::decode(plaintext)
                            && content.kind == ContentKind::Continuation
                            && let Ok(continuation) = Continuation::decode(&content.body)
                        {
                            self.announced_continuation(id, sender, &continuation)?;
                        }
                    }
                    _ => {}
                }
                Ok(if lost { Outcome::Lost } else { Outcome::Read })
            }
            Err(ProfileError::Duplicate) => self.meet_own_text(id, entry),
            Err(e @ ProfileError::Store(_)) => Err(e),
            Err(e) if entry.kind == EntryKind::Commit => Ok(Outcome::Broken(e)),
            Err(e) => Ok(Outcome::Unreadable(e)),
        }
    }

    /// A message we sent, met in the log: if it is still queued (the node's answer was lost),
    /// the log's position is its position, and it leaves the queue.
    pub(super) fn meet_own_text(
        &mut self,
        id: &GroupId,
        entry: &LogEntry,
    ) -> Result<Outcome, ProfileError> {
        let packet = Packet::Mls(entry.message.clone()).encode()?;
        let queued: Option<i64> = self
            .store
            .conn()
            .query_row(
                "SELECT seq FROM outbox WHERE group_id = ?1 AND packet = ?2",
                params![id.as_slice(), packet],
                |r| r.get(0),
            )
            .optional()?;
        let Some(outbox) = queued else {
            return Ok(Outcome::Read);
        };
        self.store.conn().execute(
            "UPDATE messages SET log_seq = ?2
             WHERE seq = (SELECT history_seq FROM outbox WHERE seq = ?1)",
            params![outbox, entry.seq as i64],
        )?;
        self.store
            .conn()
            .execute("DELETE FROM outbox WHERE seq = ?1", [outbox])?;
        Ok(Outcome::Ours(outbox))
    }
}

/// What one log entry did.
pub(super) enum Outcome {
    Read,
    /// A text of ours still queued: the log took it (its answer was lost).
    Ours(i64),
    /// It is our pending commit, merged now; the intent it carried out.
    Confirmed(i64),
    /// Another commit took our pending commit's epoch: ours is dropped, its intent queued again.
    Lost,
    /// A message we cannot read; we go on past it.
    Unreadable(ProfileError),
    /// A commit we cannot process; we cannot go on.
    Broken(ProfileError),
    /// A valid notice that our group is a fork its admins left: we stop, past it.
    Abandoned(String),
}
