//! The mailbox lane: Welcomes fetched, their trees fetched and joined, invitations tried again.

use super::*;

impl Core {
    pub(super) fn next_for_mailbox(&mut self) -> Result<Option<(Waiting, Request)>, SyncError> {
        while let Some(join) = self.joins.front() {
            if !join.for_us {
                let join = self.joins.pop_front().expect("looked at");
                tracing::debug!(mailbox_id = join.mailbox_id, "passed a Welcome not for us");
                self.profile.pass_mailbox_entry(join.mailbox_id)?;
                continue;
            }
            let Ok(secret) = &join.tree_secret else {
                // Without the secret there is no tree to fetch: the join fails and says why.
                let join = self.joins.pop_front().expect("looked at");
                let why = join.tree_secret.clone().err().unwrap_or_default();
                self.join(join, Err(ProfileError::Corrupt(why)))?;
                continue;
            };
            let tree = FetchTree {
                group_id: join.group_id.clone().into(),
                epoch: join.epoch,
                access: secret.access(),
            };
            return Ok(Some((Waiting::Tree, Request::FetchTree(tree))));
        }
        if let Some(up_to) = self.ack.take() {
            return Ok(Some((Waiting::Ack, Request::AckMailbox { up_to })));
        }
        if self.state(&Lane::Mailbox).behind {
            let fetch = Request::FetchMailbox {
                after: self.profile.mailbox_seq()?,
                limit: FETCH_LIMIT,
            };
            return Ok(Some((Waiting::Mailbox, fetch)));
        }
        Ok(None)
    }

    pub(super) fn mailbox_answer(
        &mut self,
        waiting: Waiting,
        answer: Answer,
    ) -> Result<(), SyncError> {
        match (waiting, answer) {
            (Waiting::Mailbox, Ok(Response::Mailbox { entries })) => {
                self.state(&Lane::Mailbox).behind = !entries.is_empty();
                let after = self.profile.mailbox_seq()?;
                if let Some(last) = entries.last() {
                    self.ack = Some(last.id);
                }
                for entry in entries.into_iter().filter(|e| e.id > after) {
                    let for_us = self.profile.welcome_is_for_us(entry.welcome.as_slice())?;
                    let tree_secret = if for_us {
                        self.profile
                            .open_tree_secret(
                                entry.welcome.as_slice(),
                                entry.tree_key.as_slice(),
                                entry.group_id.as_slice(),
                                entry.epoch,
                            )
                            .map_err(|e| e.to_string())
                    } else {
                        Err("not for one of our KeyPackages".to_owned())
                    };
                    self.joins.push_back(Join {
                        mailbox_id: entry.id,
                        group_id: entry.group_id.into(),
                        epoch: entry.epoch,
                        welcome: entry.welcome.into(),
                        tree_secret,
                        for_us,
                    });
                }
            }
            (Waiting::Tree, answer) => {
                let join = self.joins.pop_front().expect("a join was waiting");
                let tree = match answer {
                    Ok(Response::Tree { sealed_tree }) => Ok(sealed_tree.into()),
                    // Joining then fails and says why; the Welcome is kept to try again.
                    Ok(other) => Err(ProfileError::Corrupt(format!("not a tree: {other:?}"))),
                    Err(e) => Err(ProfileError::Corrupt(format!(
                        "the delivery node has no tree for us ({:?})",
                        e.code
                    ))),
                };
                self.join(join, tree)?;
            }
            (Waiting::Ack, _) => {}
            (_, Err(e)) => {
                tracing::warn!(code = ?e.code, "the delivery node refused a mailbox request");
                self.park(&Lane::Mailbox);
            }
            (_, Ok(other)) => return Err(SyncError::Unexpected(format!("{other:?}"))),
        }
        Ok(())
    }

    /// Joins from a Welcome in our mailbox with its sealed tree (or fails, keeping the
    /// invitation).
    pub(super) fn join(
        &mut self,
        join: Join,
        tree: Result<Vec<u8>, ProfileError>,
    ) -> Result<(), SyncError> {
        let joined = self.profile.join_hosted(
            join.mailbox_id,
            &join.group_id,
            join.epoch,
            &join.welcome,
            join.tree_secret.as_ref().ok(),
            tree,
        )?;
        let Ok(group) = joined else {
            // Tried again after a wait that doubles with each failure.
            let (failed, at) = self.join_retries.entry(join.mailbox_id).or_insert((0, 0));
            *failed += 1;
            *at = self.now + join_backoff(*failed);
            return Ok(());
        };
        self.join_retries.remove(&join.mailbox_id);
        let id = hex::decode(&group.id).expect("our own hex");
        self.touch_group(&id, true);
        // Each join used one of our KeyPackages.
        self.touch(Lane::Account, true);
        self.notices.push_back(Notice::Joined(group));
        Ok(())
    }

    /// Welcomes we could not join yet are tried again, each with its tree fetched again: when
    /// their wait after the last failed try is over (or all of them, when our user asks).
    pub(super) fn queue_invitations(&mut self, retry: Retry) -> Result<(), ProfileError> {
        for invitation in self.profile.invitations_to_try(retry == Retry::All)? {
            let due = self
                .join_retries
                .get(&invitation.mailbox_id)
                .is_none_or(|(_, at)| *at <= self.now);
            if (due || retry == Retry::All)
                && self
                    .joins
                    .iter()
                    .all(|j| j.mailbox_id != invitation.mailbox_id)
            {
                self.joins.push_back(Join {
                    mailbox_id: invitation.mailbox_id,
                    group_id: invitation.group_id,
                    epoch: invitation.epoch,
                    welcome: invitation.welcome,
                    tree_secret: invitation
                        .tree_secret
                        .ok_or_else(|| "its tree secret could not be opened".to_owned()),
                    for_us: true,
                });
            }
        }
        if !self.joins.is_empty() {
            self.touch(Lane::Mailbox, false);
        }
        Ok(())
    }
}
