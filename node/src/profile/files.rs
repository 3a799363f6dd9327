//! The file and pipe mode: MLS messages we make are queued in the outbox and written to files
//! or pipes; what arrives is read from them, Welcomes included. Commits are merged at once, and a
//! fork (two commits for one epoch) is judged alike on every side.

use super::*;

impl Profile {
    /// Adds members from their KeyPackages (`MLSMessage` bytes) in one commit.
    pub fn add_members(
        &mut self,
        id: &GroupId,
        key_packages: &[Vec<u8>],
    ) -> Result<Outgoing, ProfileError> {
        let key_packages = key_packages
            .iter()
            .map(|bytes| engine::validate_key_package(&self.crypto, bytes))
            .collect::<Result<Vec<KeyPackage>, _>>()?;
        self.in_transaction(|p| {
            p.own_commit(id, |engine, p, g| engine.add_members(p, g, &key_packages))
        })
    }

    /// Removes members, named as `user/device`, `user`, a fingerprint prefix or `#leaf`, in one
    /// commit.
    pub fn remove_members(
        &mut self,
        id: &GroupId,
        who: &[String],
    ) -> Result<Outgoing, ProfileError> {
        let members = self.members(id)?;
        let targets = who
            .iter()
            .map(|w| resolve_member(&members, w))
            .collect::<Result<Vec<&MemberInfo>, _>>()?;
        let leaves: Vec<u32> = targets.iter().map(|m| m.leaf_index).collect();
        self.in_transaction(|p| p.own_commit(id, |e, p, g| e.remove_members(p, g, &leaves)))
    }

    /// Refreshes our keys in the group, committing any queued proposals with it.
    pub fn self_update(&mut self, id: &GroupId) -> Result<Outgoing, ProfileError> {
        self.in_transaction(|p| p.own_commit(id, |e, p, g| e.self_update(p, g)))
    }

    /// Commits a change of the group's shared settings (name, topic, admins).
    pub fn change_settings(
        &mut self,
        id: &GroupId,
        change: &SettingsChange,
    ) -> Result<Outgoing, ProfileError> {
        let new = self.settings_after(id, change)?;
        self.in_transaction(|p| p.own_commit(id, |e, p, g| e.change_settings(p, g, &new)))
    }

    /// Proposes our own removal; another member's next commit carries it out.
    pub fn leave(&mut self, id: &GroupId) -> Result<Outgoing, ProfileError> {
        let now = self.now();
        if self.is_hosted(id)? {
            return Err(PlaceError::OnNode.into());
        }
        let me = self.me();
        self.in_transaction(|p| {
            p.with_group(id, |engine, provider, group, conn| {
                let proposal = engine.leave(provider, group)?;
                mark_processed(conn, &proposal, now)?;
                let epoch = group.epoch().as_u64();
                append_history(conn, id, epoch, &me, "asked to leave", now)?;
                let mut out = Outgoing::default();
                out.queue(conn, id, Packet::Mls(proposal), now)?;
                Ok(out)
            })
        })
    }

    /// Encrypts a text message for the group. A member who joined and has not refreshed its
    /// keys yet does so first, in the same transaction, and the commit goes out before the text.
    pub fn send(&mut self, id: &GroupId, text: &str) -> Result<Outgoing, ProfileError> {
        check_text(text)?;
        self.in_transaction(|p| {
            let mut out = Outgoing::default();
            if p.needs_self_update(id)? {
                out = p.own_commit(id, |e, p, g| e.self_update(p, g))?;
            }
            out.append(p.queue_text(id, text)?);
            Ok(out)
        })
    }

    /// Encrypts `text` at the group's current epoch as a new [`Content`], records it in history
    /// and queues the packet in the outbox (groups kept in files).
    pub(super) fn queue_text(
        &mut self,
        id: &GroupId,
        text: &str,
    ) -> Result<Outgoing, ProfileError> {
        let now = self.now();
        let me = self.me();
        let content = Content::text(self.new_post_id()?, text);
        self.with_group(id, |engine, provider, group, conn| {
            let message = engine.send(provider, group, &content.encode())?;
            mark_processed(conn, &message, now)?;
            append_text(conn, id, group.epoch().as_u64(), &me, &content, now)?;
            let mut out = Outgoing::default();
            out.queue(conn, id, Packet::Mls(message), now)?;
            Ok(out)
        })
    }

    pub(super) fn new_post_id(&self) -> Result<PostId, ProfileError> {
        let bytes = self
            .crypto
            .random_vec(16)
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        Ok(bytes.try_into().expect("16 bytes asked for"))
    }

    /// Processes one incoming packet: joins from a Welcome, or processes a group message.
    pub fn receive(&mut self, packet: &Packet) -> Result<Received, ProfileError> {
        self.in_transaction(|p| p.receive_one(packet))
    }

    /// Processes several packets in one transaction, so that they share one fsync; each packet
    /// still succeeds or fails on its own (a savepoint each). Nothing is durable, and nothing
    /// should be shown, before this returns `Ok`.
    pub fn receive_batch(
        &mut self,
        packets: &[Packet],
    ) -> Result<Vec<Result<Received, ProfileError>>, ProfileError> {
        self.in_transaction(|p| Ok(packets.iter().map(|packet| p.receive_one(packet)).collect()))
    }

    pub(super) fn receive_one(&mut self, packet: &Packet) -> Result<Received, ProfileError> {
        let now = self.now();
        match packet {
            Packet::Join {
                welcome,
                ratchet_tree,
                // Read from a file or pipe our user chose to read.
            } => self.join(welcome, ratchet_tree, None),
            Packet::Mls(bytes) => match engine::parse_message(bytes)? {
                Parsed::Protocol(message) => {
                    let id = message.group_id().clone();
                    let group = self
                        .group_ref(&id)?
                        .ok_or_else(|| ProfileError::NotOurGroup(hex::encode(id.as_slice())))?;
                    let incoming = self.with_group(&id, |engine, provider, group, conn| {
                        if !mark_processed(conn, bytes, now)? {
                            return Err(ProfileError::Duplicate);
                        }
                        let shared_before = shared_name(group)?;
                        let incoming = engine.process(provider, group, message)?;
                        if let Incoming::Commit {
                            settings: Some(new),
                            ..
                        } = &incoming
                        {
                            follow_shared_name(conn, &id, shared_before.as_deref(), &new.name)?;
                        }
                        let epoch = group.epoch().as_u64();
                        if let Incoming::Commit { .. } = &incoming {
                            remember_commit(conn, &id, epoch - 1, bytes)?;
                        }
                        record_incoming(conn, &id, epoch, &incoming, now)?;
                        Ok(incoming)
                    });
                    if let Err(ProfileError::Engine(EngineError::Fork { epoch })) = &incoming {
                        self.judge_fork(&id, *epoch, bytes)?;
                    }
                    let incoming = incoming?;
                    Ok(Received::Message { group, incoming })
                }
                Parsed::Welcome(_) => Err(ReceiveError::BareWelcome.into()),
                Parsed::KeyPackage(_) => Err(ReceiveError::KeyPackage.into()),
            },
        }
    }

    /// Opens the tree secret sealed to us beside a Welcome from our node's mailbox; done before
    /// joining, which deletes the KeyPackage private key it was sealed to.
    pub fn open_tree_secret(
        &self,
        welcome: &[u8],
        tree_key: &[u8],
        group_id: &[u8],
        epoch: u64,
    ) -> Result<crate::sealed_tree::TreeSecret, ProfileError> {
        let provider = self.provider();
        Ok(crate::sealed_tree::TreeSecret::open_for(
            &provider, welcome, tree_key, group_id, epoch,
        )?)
    }

    /// Joins from a Welcome. With `admission`, only an inviter it admits is followed; anyone
    /// else's Welcome is refused as a [`ProfileError::Request`] and nothing is kept (the
    /// KeyPackage it was sealed to stays, for our user to accept it later).
    pub(super) fn join(
        &mut self,
        welcome: &[u8],
        ratchet_tree: &[u8],
        admission: Option<&Admission>,
    ) -> Result<Received, ProfileError> {
        let now = self.now();
        let Parsed::Welcome(parsed) = engine::parse_message(welcome)? else {
            return Err(ReceiveError::JoinWithoutWelcome.into());
        };
        let references: Vec<Vec<u8>> = parsed
            .secrets()
            .iter()
            .map(|s| s.new_member().as_slice().to_vec())
            .collect();
        let provider = self.provider();
        let (group, inviter) = self.store.savepoint(|| {
            let conn = self.store.conn();
            if !mark_processed(conn, welcome, now)? {
                return Err(ProfileError::Duplicate);
            }
            let (group, inviter) = self.engine.join(&provider, parsed, ratchet_tree)?;
            let shown_as = display_member(&inviter);
            if let Some(state) = admission.and_then(|a| a.refuses(&shown_as, &inviter.fingerprint))
            {
                return Err(ProfileError::Request {
                    inviter: shown_as,
                    fingerprint: inviter.fingerprint,
                    state,
                });
            }
            // The group's shared name becomes ours unless one of our groups already has it.
            let shared = engine::group_settings(&group)?.map(|s| s.name);
            let name = match shared.filter(|n| validate_group_name(n).is_ok()) {
                Some(n) if !name_taken(conn, &n)? => Some(n),
                _ => None,
            };
            insert_group(conn, group.group_id(), name.as_deref(), true, now)?;
            for reference in &references {
                conn.execute(
                    "UPDATE key_packages SET consumed_at = ?2
                     WHERE key_package_ref = ?1 AND last_resort = 0",
                    params![reference, self.now()],
                )?;
            }
            let epoch = group.epoch().as_u64();
            let text = "joined the group";
            append_history(conn, group.group_id(), epoch, &self.me(), text, now)?;
            Ok((group, inviter))
        })?;
        let id = group.group_id().clone();
        self.groups.insert(id.clone(), group);
        Ok(Received::Joined {
            group: self.summary(&id)?,
            inviter,
        })
    }

    /// Runs one of our own commits: create it, merge it at once (with no delivery node there is
    /// nobody to refuse it), and record it, all in one savepoint.
    pub(super) fn own_commit(
        &mut self,
        id: &GroupId,
        make: impl FnOnce(&Engine, &Provider<'_>, &mut MlsGroup) -> Result<CommitOut, EngineError>,
    ) -> Result<Outgoing, ProfileError> {
        let now = self.now();
        self.with_group(id, |engine, provider, group, conn| {
            let out = make(engine, provider, group)?;
            merge_own_commit(
                engine,
                provider,
                group,
                conn,
                &out.commit,
                out.welcome.is_some(),
                now,
            )?;
            remember_commit(conn, id, group.epoch().as_u64() - 1, &out.commit)?;
            let mut outgoing = Outgoing::default();
            outgoing.queue(conn, id, Packet::Mls(out.commit), now)?;
            if let Some(w) = out.welcome {
                let join = Packet::Join {
                    welcome: w.welcome,
                    ratchet_tree: w.ratchet_tree,
                };
                outgoing.queue(conn, id, join, now)?;
            }
            Ok(outgoing)
        })
    }

    /// Drops outbox rows once their packets are delivered (written to their file or pipe).
    /// This does not wait for the disk: losing it only means sending a packet twice.
    pub fn mark_sent(&self, outbox: &[i64]) -> Result<(), ProfileError> {
        self.store.transaction_without_sync(|| {
            let mut stmt = self
                .store
                .conn()
                .prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
            for seq in outbox {
                stmt.execute([seq])?;
            }
            Ok(())
        })
    }

    /// Packets made but never marked as sent, oldest first.
    pub fn unsent(&self) -> Result<Vec<Unsent>, ProfileError> {
        let mut stmt = self.store.conn().prepare(
            "SELECT o.seq, coalesce(g.name, lower(hex(g.group_id))), o.audience, o.packet
             FROM outbox o JOIN groups g USING (group_id)
             ORDER BY o.seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, Vec<u8>>(3)?))
        })?;
        let mut unsent = Vec::new();
        for row in rows {
            let (seq, group, audience, bytes) = row?;
            let packet = Packet::read_from(&mut bytes.as_slice())
                .ok()
                .flatten()
                .ok_or_else(|| ProfileError::Corrupt(format!("outbox row {seq} is unreadable")))?;
            unsent.push(Unsent {
                seq,
                group,
                audience,
                packet,
            });
        }
        Ok(unsent)
    }

    /// Two commits ended one epoch of a group kept in files: with no log to order them, each
    /// side merged one. The commit with the lower hash wins, on every side alike: a member who
    /// applied the other is told (an alert) that it is in the losing fork and what to do; one
    /// who applied the winner hears nothing more than the error of the commit it refused.
    pub(super) fn judge_fork(
        &mut self,
        id: &GroupId,
        epoch: u64,
        theirs: &[u8],
    ) -> Result<(), ProfileError> {
        let ours: Option<Vec<u8>> = self.store.query_opt(
            "SELECT commit_hash FROM applied_commits WHERE group_id = ?1 AND epoch = ?2",
            params![id.as_slice(), epoch as i64],
        )?;
        let theirs: [u8; 32] = Sha256::digest(theirs).into();
        let Some(ours) = ours else {
            return Ok(()); // not ours to judge: we joined after that epoch
        };
        if ours.as_slice() <= theirs.as_slice() {
            return Ok(());
        }
        // Nothing from an epoch we left can be authenticated (its keys are gone): anyone who
        // knows the group's id can make such a "commit". So it is said, never acted on: the
        // group stays as it is, and our user is told what to do if it came from a member.
        let text = format!(
            "group {}: a commit for epoch {epoch} conflicts with the one we applied, and wins by \
             the rule every side applies (the lower hash). If a member sent it, the group forked \
             and texts here reach nobody on their side: ask one of them to add you again \
             (`group add` with a new KeyPackage of yours). It cannot be checked: the keys of \
             that epoch are gone.",
            hex::encode(id.as_slice())
        );
        let kind = format!("fork:{}", hex::encode(id.as_slice()));
        super::alerts::raise_alert(self.store.conn(), &kind, &text, self.now() as u64)?;
        Ok(())
    }

    pub(super) fn needs_self_update(&self, id: &GroupId) -> Result<bool, ProfileError> {
        Ok(self
            .store
            .query_opt(
                "SELECT needs_self_update FROM groups WHERE group_id = ?1",
                [id.as_slice()],
            )?
            .unwrap_or(false))
    }
}
