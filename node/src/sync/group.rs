//! A group's lane: what to post or read next in its log, what the node's answers mean, and
//! what reading the log did to the requests waiting on it.

use super::order::{self, Heads, Next};
use super::*;

impl Core {
    /// What the group's lane sends next: a word for those past a break, the group made on the
    /// node, a subscription, a read of the log, our pending commit, then our changes and texts
    /// in the order asked.
    pub(super) fn next_for_group(
        &mut self,
        id: &GroupId,
    ) -> Result<Option<(Waiting, Request)>, SyncError> {
        // A group broken for us may still have a word for those who went on past it.
        if let Some(notice) = self.profile.notice_to_post(id)? {
            return Ok(Some((Waiting::Notice, Request::PostNotice(notice))));
        }
        if !self.profile.is_read(id)? {
            return Ok(None);
        }
        let (epoch, token) = self.profile.group_token(id)?;
        let state = &self.lanes[&Lane::Group(id.as_slice().to_vec())];
        let (subscribed, behind) = (state.subscribed, state.behind);
        let read = |limit| FetchGroup {
            group_id: id.as_slice().into(),
            token,
            after_seq: 0,
            limit,
        };
        if state.create {
            let create = CreateGroup {
                group_id: id.as_slice().into(),
                token_hash: mlschat_wire::token::token_hash(&token),
            };
            return Ok(Some((Waiting::Create, Request::CreateGroup(create))));
        }
        if !subscribed {
            return Ok(Some((Waiting::Subscribe, Request::Subscribe(read(0)))));
        }
        if behind {
            let fetch = FetchGroup {
                after_seq: self.profile.log_seq(id)?,
                ..read(FETCH_LIMIT)
            };
            return Ok(Some((Waiting::Fetch, Request::FetchGroup(fetch))));
        }
        if let Some(pending) = self.profile.pending_commit(id)? {
            return Ok(Some((Waiting::Commit, post_commit(&pending))));
        }
        // Changes and texts go in the order asked (`order.rs`); a joiner's key refresh and the
        // members of a group started again come before anything is said.
        let claiming = self
            .claims
            .iter()
            .filter(|c| c.group == *id)
            .map(|c| c.asked)
            .min();
        if let Some(commit) = self.next_change(id, claiming)? {
            return Ok(Some(commit));
        }
        // A group started again says so before anything is said in it, once its members are
        // in: all of them (its followers check), so not while some are still being claimed.
        match self.profile.announcement(id)? {
            None => {}
            Some(Announcement::Waiting) => return Ok(None),
            Some(Announcement::Ready { .. }) if claiming.is_some() => return Ok(None),
            Some(Announcement::Ready {
                epoch,
                message,
                post_id,
            }) => {
                let post = PostMessage {
                    group_id: id.as_slice().into(),
                    epoch,
                    token,
                    post_id,
                    message: message.into(),
                };
                return Ok(Some((Waiting::Announcement, Request::PostMessage(post))));
            }
        }
        self.next_text(id, (epoch, token), claiming)
    }

    /// The heads of the group's queues, for the order rule.
    fn heads(
        &mut self,
        id: &GroupId,
        claiming: Option<TextsMark>,
        text: Option<i64>,
        holds_proposals: bool,
    ) -> Result<Heads, SyncError> {
        Ok(Heads {
            change: self.profile.next_change_mark(id)?,
            claiming,
            text,
            holds_proposals,
        })
    }

    /// Our next commit, when a change's turn has come (changes that need no commit, or fail,
    /// are settled on the way).
    fn next_change(
        &mut self,
        id: &GroupId,
        claiming: Option<TextsMark>,
    ) -> Result<Option<(Waiting, Request)>, SyncError> {
        loop {
            let (first_text, holds) = (
                self.profile.first_text(id)?,
                self.profile.holds_proposals(id)?,
            );
            if order::next(self.heads(id, claiming, first_text, holds)?) != Next::Change {
                break;
            }
            match self.profile.prepare_next_commit(id)? {
                Prepared::Nothing => break,
                Prepared::Commit(pending) => {
                    return Ok(Some((Waiting::Commit, post_commit(&pending))));
                }
                Prepared::Done { intent } => self.intent_done(intent, Ok(())),
                Prepared::Failed { intent, error } => {
                    tracing::warn!(intent, %error, "a change could not be made");
                    self.intent_done(intent, Err(error.into()));
                }
            }
        }
        Ok(None)
    }

    /// Our next text (or proposal to leave), when its turn has come: made now if it was not,
    /// or again if its epoch ended first.
    fn next_text(
        &mut self,
        id: &GroupId,
        (epoch, token): (u64, mlschat_wire::Token),
        claiming: Option<TextsMark>,
    ) -> Result<Option<(Waiting, Request)>, SyncError> {
        // Others' proposals held: no text may be made before the commit that takes them.
        let holds = self.profile.holds_proposals(id)?;
        while let Some(text) = self.profile.next_text(id)? {
            if order::next(self.heads(id, claiming, Some(text.seq), holds)?) != Next::Text {
                return Ok(None);
            }
            let Some((at, message)) = text.encrypted.filter(|(at, _)| *at == epoch) else {
                // Its turn has come, or its epoch ended before the node took it.
                if !self.profile.encrypt_queued(text.seq)? {
                    let dropped = "a queued proposal's epoch ended before the node took it";
                    self.text_done(text.seq, Err(SyncError::Dropped(dropped)));
                }
                continue;
            };
            let post = PostMessage {
                group_id: id.as_slice().into(),
                epoch: at,
                token,
                post_id: text.post_id,
                message: message.into(),
            };
            let waiting = Waiting::Text {
                outbox: text.seq,
                post_id: text.post_id,
            };
            return Ok(Some((waiting, Request::PostMessage(post))));
        }
        Ok(None)
    }

    pub(super) fn group_answer(
        &mut self,
        id: &GroupId,
        waiting: Waiting,
        answer: Answer,
    ) -> Result<(), SyncError> {
        let lane = Lane::Group(id.as_slice().to_vec());
        match (waiting, answer) {
            (Waiting::Subscribe, Ok(_)) => self.state(&lane).subscribed = true,
            (Waiting::Fetch, Ok(Response::GroupEntries { entries })) => {
                self.state(&lane).behind = !entries.is_empty();
                let entries: Vec<LogEntry> = entries.into_iter().map(log_entry).collect();
                let read = self.profile.receive_log(id, &entries)?;
                self.after_read(id, read);
            }
            (Waiting::Subscribe | Waiting::Fetch, Err(e)) if e.code == ErrorCode::UnknownGroup => {
                // Our group's creation never reached the node: create it now.
                if self.profile.group_token(id)?.0 != 0 || self.profile.log_seq(id)? != 0 {
                    return Err(SyncError::refused(&e));
                }
                self.state(&lane).create = true;
            }
            (Waiting::Create, Ok(_)) => self.state(&lane).create = false,
            (Waiting::Create, Err(e)) if e.code == ErrorCode::GroupExists => {
                self.state(&lane).create = false;
            }
            (
                Waiting::Commit,
                Ok(Response::Committed {
                    seq, undelivered, ..
                }),
            ) => {
                self.profile.welcomes_undelivered(id, &undelivered)?;
                if self.profile.pending_commit(id)?.is_some() {
                    if seq == self.profile.log_seq(id)? + 1 {
                        let intent = self.profile.confirm_commit(id, seq)?;
                        self.intent_done(intent, Ok(()));
                    } else {
                        // Entries lie between our cursor and our commit: read them first.
                        self.state(&lane).behind = true;
                    }
                }
            }
            (Waiting::Text { outbox, post_id }, Ok(Response::Accepted { seq, .. })) => {
                if self.profile.mark_posted(outbox, &post_id, seq)? {
                    self.text_done(outbox, Ok(()));
                }
            }
            (Waiting::Announcement, Ok(Response::Accepted { .. })) => self.profile.announced(id)?,
            (Waiting::Notice, Ok(Response::Accepted { .. })) => self.profile.notice_posted(id)?,
            (Waiting::Notice, Err(e)) if !passes(e.code) => {
                tracing::warn!(code = ?e.code, "the delivery node refused our notice of a fork");
                self.profile.notice_posted(id)?;
            }
            (Waiting::Commit | Waiting::Text { .. } | Waiting::Announcement, Err(e))
                if matches!(e.code, ErrorCode::StaleEpoch | ErrorCode::BadToken) =>
            {
                // Another commit took the epoch (or removed us): the log says which.
                self.state(&lane).behind = true;
                self.stale_refusal(id)?;
            }
            (Waiting::Commit, Err(e)) if !passes(e.code) => {
                let intent = self.profile.fail_commit(id)?;
                self.intent_done(intent, Err(SyncError::refused(&e)));
            }
            (Waiting::Text { outbox, .. }, Err(e)) if !passes(e.code) => {
                self.profile
                    .fail_text(outbox, &SyncError::refused(&e).to_string())?;
                self.text_done(outbox, Err(SyncError::refused(&e)));
            }
            (_, Err(e)) => {
                tracing::warn!(code = ?e.code, "the delivery node refused; retrying later");
                self.park(&lane);
            }
            (_, Ok(other)) => return Err(SyncError::Unexpected(format!("{other:?}"))),
        }
        Ok(())
    }

    /// A post refused as stale. Once more with nothing read since the last one, posting again
    /// would be refused again: reload the group from storage and back off, longer each time.
    pub(super) fn stale_refusal(&mut self, id: &GroupId) -> Result<(), SyncError> {
        let cursor = self.profile.log_seq(id)?;
        let lane = Lane::Group(id.as_slice().to_vec());
        let state = self.state(&lane);
        let count = match state.fruitless {
            Some((at, count)) if at == cursor => count + 1,
            _ => 1,
        };
        state.fruitless = Some((cursor, count));
        if count < 2 {
            return Ok(());
        }
        self.profile.reload_group(id);
        let wait = (RETRY_AFTER << (count - 2).min(9)).min(MAX_RETRY_WAIT);
        self.park_for(&lane, wait);
        if count == STUCK_AFTER {
            tracing::warn!(
                group = %hex::encode(id.as_slice()),
                "our posts keep being refused as stale while the log has nothing new; backing off"
            );
        }
        Ok(())
    }

    /// How long (s) a member added may take to join before the group's first admin removes it.
    pub fn set_invite_expiry(&mut self, seconds: u64) {
        self.invite_expiry = seconds;
    }

    /// Members added who never joined within the invitation expiry are removed, once.
    pub(super) fn remove_overdue_invitees(&mut self) -> Result<(), ProfileError> {
        for (id, fingerprints) in self.profile.overdue_invitees(self.invite_expiry)? {
            let fresh: Vec<String> = fingerprints
                .into_iter()
                .filter(|f| self.expiring.insert((id.as_slice().to_vec(), f.clone())))
                .collect();
            if fresh.is_empty() {
                continue;
            }
            let group = hex::encode(id.as_slice());
            tracing::info!(%group, members = fresh.len(), "removing members who never joined");
            self.change(
                &id,
                Intent::Remove {
                    fingerprints: fresh,
                },
            )?;
        }
        Ok(())
    }

    /// Lanes whose posts keep being refused with nothing to read: `status` shows them.
    pub fn stuck_lanes(&self) -> Vec<StuckLane> {
        self.lanes
            .iter()
            .filter_map(|(lane, state)| match (lane, state.fruitless) {
                (Lane::Group(id), Some((_, refusals))) if refusals >= STUCK_AFTER => {
                    Some(StuckLane {
                        group: hex::encode(id),
                        refusals,
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// Applies what reading the log did to the requests waiting on it.
    pub(super) fn after_read(&mut self, id: &GroupId, read: LogRead) {
        for intent in read.committed {
            self.intent_done(intent, Ok(()));
        }
        for outbox in read.posted {
            self.text_done(outbox, Ok(()));
        }
        if read.broken.is_none() && !read.removed {
            return self.touch_group(id.as_slice(), false);
        }
        // Nothing waiting in this group can be done in it any more: each request is told why.
        let group = hex::encode(id.as_slice());
        let gone = || match &read.broken {
            Some(why) => SyncError::Profile(ProfileError::Broken(group.clone(), why.clone())),
            None => SyncError::Removed,
        };
        if !read.removed
            && let Err(e) = self.schedule_recoveries()
        {
            tracing::warn!(error = %e, "could not plan starting a broken group again");
        }
        // Our notice of the fork, if we left one, goes out on the group's lane.
        self.touch_group(id.as_slice(), false);
        if let Ok(waiting) = self.profile.waiting_in(id) {
            for outbox in waiting.texts {
                self.text_done(outbox, Err(gone()));
            }
            for intent in waiting.intents {
                self.intent_done(intent, Err(gone()));
            }
        }
    }
}

pub(super) fn log_entry(entry: mlschat_wire::GroupEntry) -> LogEntry {
    LogEntry {
        seq: entry.seq,
        epoch: entry.epoch,
        kind: entry.kind,
        message: entry.message.into(),
    }
}

pub(super) fn post_commit(pending: &PendingCommit) -> Request {
    let joiners = pending.joiners.as_ref();
    let welcomes = joiners.map_or(Vec::new(), |j| {
        j.recipients
            .iter()
            .map(|(recipient, tree_key)| WelcomeFor {
                recipient: *recipient,
                welcome: j.welcome.clone().into(),
                tree_key: tree_key.clone().into(),
            })
            .collect()
    });
    Request::PostCommit(PostCommit {
        group_id: pending.group_id.clone().into(),
        epoch: pending.epoch,
        token: pending.token,
        next_token_hash: pending.next_token_hash,
        commit: pending.message.clone().into(),
        welcomes,
        sealed_tree: joiners.map_or(Vec::new(), |j| j.sealed_tree.clone()).into(),
        tree_access_hash: joiners.map_or([0; 32], |j| j.tree_access_hash),
    })
}
