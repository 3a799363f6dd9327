//! Welcomes from our mailbox: joined, kept to try again, or waiting for our user as requests
//! (a declined one is joined only to ask to leave); members who never join.

use super::*;

impl Profile {
    /// Joins a group from a Welcome in our node's mailbox (entry `mailbox_id`), with the tree the
    /// node keeps; the group is then read from its log. A Welcome we cannot join is kept as an
    /// [`Invitation`], to be tried again and listed, and never acknowledged unseen.
    /// `sealed_tree` is the tree as the node keeps it, opened here with the tree `secret`, or
    /// why there is none.
    pub fn join_hosted(
        &mut self,
        mailbox_id: u64,
        group_id: &[u8],
        epoch: u64,
        welcome: &[u8],
        secret: Option<&TreeSecret>,
        sealed_tree: Result<Vec<u8>, ProfileError>,
    ) -> Result<Result<GroupSummary, String>, ProfileError> {
        let now = self.now();
        let tree = sealed_tree.and_then(|sealed| {
            let secret = secret.ok_or(SealError::DoesNotOpen)?;
            Ok(secret.open_tree(&self.crypto, group_id, epoch, &sealed)?)
        });
        let id = GroupId::from_slice(group_id);
        let request: Option<Option<RequestState>> = self.store.query_opt(
            "SELECT request FROM invitations WHERE mailbox_id = ?1",
            [mailbox_id as i64],
        )?;
        let request = request.flatten();
        let declined = request == Some(RequestState::Declined);
        let admission = match request {
            Some(RequestState::Accepted | RequestState::Declined) => None,
            Some(RequestState::Waiting) => return Ok(Err("it waits for your decision".to_owned())),
            None => Some(self.admission()?),
        };
        self.in_transaction(|p| {
            // Added back after a removal: the old MLS state is useless (a new leaf, new keys)
            // and in the way; the history stays.
            p.forget_if_removed(&id)?;
            let member: Option<String> = p.store.query_opt(
                "SELECT state FROM groups WHERE group_id = ?1",
                [id.as_slice()],
            )?;
            if member.as_deref() == Some("active") {
                // In it already (an invitation tried again, or delivered twice): joining again
                // would throw away the state we have.
                p.store.conn().execute(
                    "DELETE FROM invitations WHERE mailbox_id = ?1",
                    [mailbox_id as i64],
                )?;
                p.store.conn().execute(
                    "UPDATE home SET mailbox_seq = max(mailbox_seq, ?1) WHERE id = 1",
                    [mailbox_id as i64],
                )?;
                return Ok(Err("joined already".to_owned()));
            }
            let joined = match tree.and_then(|tree| p.join(welcome, &tree, admission.as_ref())) {
                Ok(Received::Joined { group, .. }) => {
                    p.settle_join(&group, declined, mailbox_id)?;
                    Ok(group)
                }
                Ok(Received::Message { .. }) => Err("not a Welcome".to_owned()),
                // Joined already (the mailbox entry was delivered twice).
                Err(ProfileError::Duplicate) => {
                    p.store.conn().execute(
                        "DELETE FROM invitations WHERE mailbox_id = ?1",
                        [mailbox_id as i64],
                    )?;
                    Err("joined already".to_owned())
                }
                Err(e @ ProfileError::Store(_)) => return Err(e),
                Err(ProfileError::Request {
                    inviter,
                    fingerprint,
                    state,
                }) => {
                    let kept = Kept {
                        mailbox_id,
                        group_id,
                        epoch,
                        welcome,
                        secret,
                    };
                    Err(p.keep_request(&kept, inviter, fingerprint, state, now)?)
                }
                Err(ProfileError::Engine(EngineError::NotAllowed(why))) => {
                    // Final: no retry makes a non-admin's add acceptable to the group's members.
                    tracing::warn!(mailbox_id, %why, "refused to join a fork");
                    let kind = format!("fork:{}", hex::encode(group_id));
                    let text = format!("not joined group {}: {why}", hex::encode(group_id));
                    crate::profile::alerts::raise_alert(p.store.conn(), &kind, &text, now as u64)?;
                    p.store.conn().execute(
                        "DELETE FROM invitations WHERE mailbox_id = ?1",
                        [mailbox_id as i64],
                    )?;
                    Err(why)
                }
                Err(e) => {
                    tracing::warn!(mailbox_id, error = %e, "could not join from a Welcome");
                    p.store.conn().execute(
                        "INSERT INTO invitations (mailbox_id, group_id, epoch, welcome, failure,
                             attempts, tree_secret)
                         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)
                         ON CONFLICT (mailbox_id) DO UPDATE
                         SET failure = ?5, attempts = attempts + 1",
                        params![
                            mailbox_id as i64,
                            group_id,
                            epoch as i64,
                            welcome,
                            e.to_string(),
                            secret.map(|s| s.as_bytes().to_vec())
                        ],
                    )?;
                    Err(e.to_string())
                }
            };
            p.store.conn().execute(
                "UPDATE home SET mailbox_seq = max(mailbox_seq, ?1) WHERE id = 1",
                [mailbox_id as i64],
            )?;
            Ok(joined)
        })
    }

    /// Whether a Welcome from our mailbox is for one of our KeyPackages that can still be
    /// joined with: anything else (junk, a Welcome for someone else, or for a package whose
    /// keys are gone) can never be joined, and is passed at once rather than kept and retried.
    pub fn welcome_is_for_us(&self, welcome: &[u8]) -> Result<bool, ProfileError> {
        let Ok(Parsed::Welcome(welcome)) = engine::parse_message(welcome) else {
            return Ok(false);
        };
        let mut stmt = self.store.conn().prepare_cached(
            "SELECT 1 FROM key_packages WHERE key_package_ref = ?1
                 AND forgotten_at IS NULL AND (last_resort = 1 OR consumed_at IS NULL)",
        )?;
        for secret in welcome.secrets() {
            if stmt.exists([secret.new_member().as_slice()])? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Our mailbox entry `mailbox_id` holds nothing we can join: we pass it (the cursor moves
    /// past it, so it is acknowledged with the entries after it).
    pub fn pass_mailbox_entry(&mut self, mailbox_id: u64) -> Result<(), ProfileError> {
        self.store.conn().execute(
            "UPDATE home SET mailbox_seq = max(mailbox_seq, ?1) WHERE id = 1",
            [mailbox_id as i64],
        )?;
        Ok(())
    }

    /// Welcomes we did not join yet: those we could not, and requests (from people who are not
    /// contacts) waiting for our user.
    pub fn invitations(&self) -> Result<Vec<Invitation>, ProfileError> {
        let states = self.sender_states()?;
        let mut stmt = self.store.conn().prepare(
            "SELECT mailbox_id, group_id, epoch, welcome, failure, attempts, tree_secret,
                 inviter, inviter_fingerprint, request
             FROM invitations ORDER BY mailbox_id",
        )?;
        let rows = stmt.query_map([], |r| {
            let group_id: Vec<u8> = r.get(1)?;
            let secret: Option<Vec<u8>> = r.get(6)?;
            let inviter: Option<String> = r.get(7)?;
            let fingerprint: Option<Vec<u8>> = r.get(8)?;
            let inviter_state = inviter
                .as_deref()
                .zip(fingerprint.as_deref())
                .map(|(name, fingerprint)| states.of(name, fingerprint));
            Ok(Invitation {
                mailbox_id: r.get::<_, i64>(0)? as u64,
                group: hex::encode(&group_id),
                group_id,
                epoch: r.get::<_, i64>(2)? as u64,
                welcome: r.get(3)?,
                failure: r.get(4)?,
                attempts: r.get(5)?,
                inviter,
                inviter_fingerprint: fingerprint.map(hex::encode),
                inviter_state,
                request: r.get(9)?,
                tree_secret: secret.as_deref().and_then(TreeSecret::from_bytes),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The invitations to try (again) now, each with its tree fetched again, at every poll and
    /// reconnection: the node's tree may come back, and the cost is one fetch. A request waits
    /// for our user, unless its inviter has become someone we admit meanwhile (a contact, or a
    /// member of a group of ours that broke and that they start again).
    pub fn invitations_to_try(&mut self, every: bool) -> Result<Vec<Invitation>, ProfileError> {
        // After `JOIN_ATTEMPTS` failed tries one stays listed (by `status`), tried again only
        // when our user asks (`every`).
        let all: Vec<Invitation> = self
            .invitations()?
            .into_iter()
            .filter(|i| every || i.request.is_some() || i.attempts < JOIN_ATTEMPTS)
            .collect();
        if all.iter().all(|i| i.request != Some(RequestState::Waiting)) {
            return Ok(all);
        }
        let admission = self.admission()?;
        let admitted = |i: &Invitation| -> bool {
            let fingerprint = i
                .inviter_fingerprint
                .as_deref()
                .and_then(|f| hex::decode(f).ok());
            let Some(fingerprint) = fingerprint.and_then(|f| <[u8; 32]>::try_from(f).ok()) else {
                return false;
            };
            let name = i.inviter.as_deref().unwrap_or_default();
            admission.refuses(name, &Fingerprint(fingerprint)).is_none()
        };
        let mut to_try = Vec::new();
        for invitation in all {
            if invitation.request == Some(RequestState::Waiting) {
                if !admitted(&invitation) {
                    continue;
                }
                // Judged again when it is tried.
                self.store.conn().execute(
                    "UPDATE invitations SET request = NULL WHERE mailbox_id = ?1",
                    [invitation.mailbox_id as i64],
                )?;
            }
            to_try.push(invitation);
        }
        Ok(to_try)
    }

    /// Our user's answer to a request (an invitation from someone who is not a contact), found
    /// by its group id or a unique prefix of it: accepted, it is joined as soon as it can be;
    /// declined, it is forgotten.
    pub fn answer_request(
        &mut self,
        group: &str,
        accept: bool,
    ) -> Result<Invitation, ProfileError> {
        let group = group.to_ascii_lowercase();
        let matching: Vec<Invitation> = self
            .invitations()?
            .into_iter()
            .filter(|i| i.request == Some(RequestState::Waiting) && i.group.starts_with(&group))
            .collect();
        let request = match <[Invitation; 1]>::try_from(matching) {
            Ok([one]) => one,
            Err(v) if v.is_empty() => {
                return Err(ProfileError::NoRequest(group));
            }
            Err(_) => return Err(ProfileError::Ambiguous(group, "request")),
        };
        let mailbox_id = request.mailbox_id as i64;
        // Declined, its inviter must learn that we will not join, or we stay a member who never
        // reads: we join only to ask to leave (see `join_hosted`).
        let answer = if accept {
            RequestState::Accepted
        } else {
            RequestState::Declined
        };
        self.store.conn().execute(
            "UPDATE invitations SET request = ?2 WHERE mailbox_id = ?1",
            params![mailbox_id, answer.as_str()],
        )?;
        Ok(request)
    }

    /// Drops the MLS state of a group we were removed from, keeping its row and history.
    pub(super) fn forget_if_removed(&mut self, id: &GroupId) -> Result<(), ProfileError> {
        let state: Option<String> = self.store.query_opt(
            "SELECT state FROM groups WHERE group_id = ?1",
            [id.as_slice()],
        )?;
        if state.as_deref() != Some("removed") {
            return Ok(());
        }
        let storage = self.store.mls_storage();
        if let Some(mut old) = MlsGroup::load(&storage, id).map_err(StoreError::from)? {
            old.delete(&storage).map_err(StoreError::from)?;
        }
        self.groups.remove(id);
        Ok(())
    }

    /// The last mailbox entry we processed.
    pub fn mailbox_seq(&self) -> Result<u64, ProfileError> {
        Ok(self
            .store
            .query_opt::<i64>("SELECT mailbox_seq FROM home WHERE id = 1", [])?
            .unwrap_or(0) as u64)
    }

    /// Members of our groups on the node who were added `expiry` seconds ago or more and have
    /// not joined (a declined invitation that never reached us, a lost device), by group: in
    /// each group the first admin removes them, so that texts stop being encrypted to them.
    pub fn overdue_invitees(
        &mut self,
        expiry: u64,
    ) -> Result<Vec<(GroupId, Vec<String>)>, ProfileError> {
        let now = self.now();
        let mut overdue = Vec::new();
        for id in self.hosted_groups()? {
            if self.broken(&id)?.is_some() || !self.is_member(&id)? {
                continue;
            }
            self.load(&id)?;
            let me = self.identity().fingerprint();
            let group = &self.groups[&id];
            let settings = engine::group_settings(group)?;
            // Most members are no admin: they skip the walk over every member (at each poll).
            if !engine::may_manage(settings.as_ref(), &me) {
                continue;
            }
            let first_admin = engine::members(group)
                .into_iter()
                .find(|m| engine::may_manage(settings.as_ref(), &m.fingerprint));
            if first_admin.is_none_or(|m| m.fingerprint != me) {
                continue;
            }
            let mut due = Vec::new();
            for fingerprint in engine::invited(group) {
                let since: Option<i64> = self.store.query_opt(
                    "SELECT since FROM invitees WHERE group_id = ?1 AND fingerprint = ?2",
                    params![id.as_slice(), fingerprint.0],
                )?;
                match since {
                    Some(since) if since.saturating_add(expiry as i64) <= now => {
                        due.push(fingerprint.to_hex())
                    }
                    Some(_) => {}
                    // Added before we noted adds (or in a commit we never read): from now on.
                    None => {
                        self.store.conn().execute(
                            "INSERT INTO invitees (group_id, fingerprint, since) VALUES (?1, ?2, ?3)",
                            params![id.as_slice(), fingerprint.0, now],
                        )?;
                    }
                }
            }
            if !due.is_empty() {
                overdue.push((id, due));
            }
        }
        Ok(overdue)
    }
}

/// A Welcome from our mailbox that is kept: waiting for our user, or to be tried again.
struct Kept<'a> {
    mailbox_id: u64,
    group_id: &'a [u8],
    epoch: u64,
    welcome: &'a [u8],
    secret: Option<&'a TreeSecret>,
}

impl Profile {
    /// After joining from mailbox entry `mailbox_id`: the group is hosted, the join stands
    /// where we are in its log, and either our leave (a declined invitation) or the refresh
    /// of our leaf is queued.
    fn settle_join(
        &mut self,
        group: &GroupSummary,
        declined: bool,
        mailbox_id: u64,
    ) -> Result<(), ProfileError> {
        let joined = GroupId::from_slice(&hex::decode(&group.id).expect("our hex"));
        self.store.conn().execute(
            "UPDATE groups SET hosted = 1, broken = NULL WHERE group_id = ?1",
            [joined.as_slice()],
        )?;
        // The join sits where we are in the log: at its start when we first join,
        // after what we had read when we are added back.
        let join_row = self.last_history_seq()?;
        let cursor = self.log_seq(&joined)?;
        self.stamp_history(&joined, join_row - 1, cursor)?;
        if declined {
            // In only to leave: our proposal goes out first, and the group is not
            // shown to our user.
            self.store.conn().execute(
                "UPDATE groups SET leaving = 1, declined = 1 WHERE group_id = ?1",
                [joined.as_slice()],
            )?;
            self.queue_leave(&joined)?;
        } else {
            // Our leaf came from a KeyPackage: refresh it before we send.
            self.store.conn().execute(
                "INSERT INTO intents (group_id, intent) VALUES (?1, ?2)",
                params![
                    joined.as_slice(),
                    serde_json::to_string(&Intent::Update).expect("serialises")
                ],
            )?;
        }
        self.store.conn().execute(
            "DELETE FROM invitations WHERE mailbox_id = ?1",
            [mailbox_id as i64],
        )?;
        self.follow_announcements(&joined)?;
        Ok(())
    }

    /// An invitation from someone who is not a contact: kept, waiting for our user, who is
    /// alerted. Returns why it was not joined.
    fn keep_request(
        &mut self,
        kept: &Kept<'_>,
        inviter: String,
        fingerprint: Fingerprint,
        state: SenderState,
        now: i64,
    ) -> Result<String, ProfileError> {
        let (mailbox_id, group_id) = (kept.mailbox_id, kept.group_id);
        let why = ProfileError::Request {
            inviter: inviter.clone(),
            fingerprint,
            state,
        }
        .to_string();
        self.store.conn().execute(
            "INSERT INTO invitations (mailbox_id, group_id, epoch, welcome, failure,
                     attempts, tree_secret, inviter, inviter_fingerprint, request)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8, 'waiting')
                 ON CONFLICT (mailbox_id) DO UPDATE
                 SET request = 'waiting', failure = ?5, inviter = ?7,
                     inviter_fingerprint = ?8",
            params![
                mailbox_id as i64,
                group_id,
                kept.epoch as i64,
                kept.welcome,
                why,
                kept.secret.map(|s| s.as_bytes().to_vec()),
                inviter,
                fingerprint.0.to_vec()
            ],
        )?;
        let kind = format!("request:{mailbox_id}");
        let text = format!(
            "{inviter} ({}, key {fingerprint}) invites you to group {}: \
                 `mlschat request accept {}` to join, `mlschat request decline {}` not to",
            match state {
                SenderState::Impostor => "NOT your contact of that name",
                _ => "not a contact",
            },
            hex::encode(group_id),
            hex::encode(group_id),
            hex::encode(group_id),
        );
        crate::profile::alerts::raise_alert(self.store.conn(), &kind, &text, now as u64)?;
        Ok(why)
    }
}
