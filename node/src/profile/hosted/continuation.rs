//! Broken groups started again as new groups, the announcements that they continue the old
//! ones, and the judgement of an announcement before it is followed.

use super::*;

impl Profile {
    /// Groups we cannot go on in and that no group continues yet, each with the members who may
    /// start it again (its admins; everyone in a group without settings), in leaf order, and
    /// our place among them (`None`: we may not, and follow whoever does). Were anyone to start
    /// it, a member who broke it by a commit the settings forbid would become its admin.
    #[allow(clippy::type_complexity)]
    pub fn broken_groups(
        &mut self,
    ) -> Result<Vec<(GroupId, Vec<MemberInfo>, Option<usize>)>, ProfileError> {
        let ids: Vec<Vec<u8>> = {
            let mut stmt = self.store.conn().prepare(
                "SELECT group_id FROM groups WHERE hosted = 1 AND broken IS NOT NULL
                 AND replaced_by IS NULL AND state = 'active' AND abandoned = 0
                 ORDER BY group_id",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let me = self.identity().fingerprint();
        let mut broken = Vec::new();
        for id in ids {
            let id = GroupId::from_slice(&id);
            let settings = {
                self.load(&id)?;
                engine::group_settings(&self.groups[&id])?
            };
            let starters: Vec<MemberInfo> = self
                .members(&id)?
                .into_iter()
                .filter(|m| engine::may_manage(settings.as_ref(), &m.fingerprint))
                .collect();
            let rank = starters.iter().position(|m| m.fingerprint == me);
            broken.push((id, starters, rank));
        }
        Ok(broken)
    }

    /// Starts a broken group again as a new group on our node, in one transaction: the new
    /// group takes the old one's name and our texts still queued there, and announces, once its
    /// members are added, that it continues the old one. Returns the new group and the members
    /// to add (everyone we knew in the old group but us).
    pub fn start_continuation(
        &mut self,
        old: &GroupId,
    ) -> Result<(GroupSummary, Vec<MemberInfo>), ProfileError> {
        let me = self.identity().fingerprint();
        let members: Vec<MemberInfo> = self
            .members(old)?
            .into_iter()
            .filter(|m| m.fingerprint != me)
            .collect();
        let name: Option<String> = self
            .store
            .query_opt(
                "SELECT name FROM groups WHERE group_id = ?1",
                [old.as_slice()],
            )?
            .flatten();
        let placeholder = format!("continues {}", hex::encode(old.as_slice()));
        // The old group's settings, admins included, hold in the new one.
        let settings = {
            self.load(old)?;
            engine::group_settings(&self.groups[old])?
        };
        let settings = match settings {
            Some(s) => s,
            None => self
                .engine
                .new_settings(name.as_deref().unwrap_or(&placeholder)),
        };
        self.in_transaction(|p| {
            let conn = p.store.conn();
            conn.execute(
                "UPDATE groups SET name = NULL WHERE group_id = ?1",
                [old.as_slice()],
            )?;
            let local_name = name.as_deref().unwrap_or(&placeholder);
            let summary = p.create_group_with(local_name, true, &settings)?;
            let new = GroupId::from_slice(&hex::decode(&summary.id).expect("our own hex"));
            p.store.conn().execute(
                "UPDATE groups SET continues = ?2 WHERE group_id = ?1",
                params![new.as_slice(), old.as_slice()],
            )?;
            p.replace_group(old, &new)?;
            Ok((summary, members))
        })
    }

    /// Groups we started again whose members are not added yet (the claims were lost with our
    /// memory): each with the members to add (everyone we knew in the old group but us).
    pub fn unfinished_continuations(
        &mut self,
    ) -> Result<Vec<(GroupId, Vec<MemberInfo>)>, ProfileError> {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = {
            let mut stmt = self.store.conn().prepare(
                // No add of ours queued or pending there (other changes our user asked for in
                // the meantime wait behind the add: they do not stand for it).
                "SELECT g.group_id, g.continues FROM groups g
                 WHERE g.continues IS NOT NULL AND g.state = 'active' AND g.broken IS NULL
                   AND NOT EXISTS (SELECT 1 FROM intents i
                       WHERE i.group_id = g.group_id AND json_type(i.intent, '$.add') IS NOT NULL)
                   AND NOT EXISTS (SELECT 1 FROM pending_commits p
                       WHERE p.group_id = g.group_id AND json_type(p.intent, '$.add') IS NOT NULL)",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let me = self.identity().fingerprint();
        let mut unfinished = Vec::new();
        for (new, old) in rows {
            let (new, old) = (GroupId::from_slice(&new), GroupId::from_slice(&old));
            // Those of the old group not in yet (a crash may come between two adds).
            let added = self.members(&new)?;
            let members: Vec<MemberInfo> = self
                .members(&old)?
                .into_iter()
                .filter(|m| m.fingerprint != me)
                .filter(|m| added.iter().all(|a| a.fingerprint != m.fingerprint))
                .collect();
            if !members.is_empty() {
                unfinished.push((new, members));
            }
        }
        Ok(unfinished)
    }

    /// The announcement that `id` continues a group, while it is still to be made: encrypted
    /// now once the members are added. Its post id is derived from the two groups, so that
    /// posting it again is a repeat.
    pub fn announcement(&mut self, id: &GroupId) -> Result<Option<Announcement>, ProfileError> {
        let now = self.now();
        let old: Option<Option<Vec<u8>>> = self.store.query_opt(
            "SELECT continues FROM groups WHERE group_id = ?1",
            [id.as_slice()],
        )?;
        let Some(old) = old.flatten() else {
            return Ok(None);
        };
        if self.members(id)?.len() <= 1 {
            return Ok(Some(Announcement::Waiting));
        }
        let post_id: PostId = Sha256::new()
            .chain_update(b"mlschat continuation")
            .chain_update(&old)
            .chain_update(id.as_slice())
            .finalize()[..16]
            .try_into()
            .expect("16 bytes");
        // Where the old group broke for us: followers check that it broke there for them too.
        let old = GroupId::from_slice(&old);
        self.load(&old)?;
        let body = Continuation {
            old_group: old.as_slice().to_vec().into(),
            epoch: self.groups[&old].epoch().as_u64(),
            epoch_authenticator: self.groups[&old]
                .epoch_authenticator()
                .as_slice()
                .to_vec()
                .into(),
        };
        let content = Content {
            id: post_id,
            kind: ContentKind::Continuation,
            body: body.encode(),
        };
        let (epoch, message) = self.in_transaction(|p| {
            p.with_group(id, |engine, provider, group, conn| {
                let message = engine.send(provider, group, &content.encode())?;
                mark_processed(conn, &message, now)?;
                Ok((group.epoch().as_u64(), message))
            })
        })?;
        Ok(Some(Announcement::Ready {
            epoch,
            message,
            post_id,
        }))
    }

    /// The announcement that `id` continues a group is in its log.
    pub fn announced(&mut self, id: &GroupId) -> Result<(), ProfileError> {
        self.store.conn().execute(
            "UPDATE groups SET continues = NULL WHERE group_id = ?1",
            [id.as_slice()],
        )?;
        Ok(())
    }

    /// `sender` announced in `new` that it continues a group: the word is kept, and followed
    /// as soon as the rules allow ([`Self::follow_announcements`]).
    pub(super) fn announced_continuation(
        &mut self,
        new: &GroupId,
        sender: &MemberInfo,
        continuation: &Continuation,
    ) -> Result<(), ProfileError> {
        let now = self.now();
        let old = GroupId::from_slice(continuation.old_group.as_slice());
        // The new group as it is now, when it is announced: later changes are its own affair.
        let members: Vec<u8> = self
            .members(new)?
            .iter()
            .flat_map(|m| m.fingerprint.0)
            .collect();
        let settings = match engine::group_settings(&self.groups[new])? {
            Some(settings) => settings
                .encode()
                .map_err(|e| ProfileError::Corrupt(e.to_string()))?,
            None => Vec::new(),
        };
        self.store.conn().execute(
            "INSERT OR IGNORE INTO announcements
                 (old, new, sender, epoch, authenticator, members, settings)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                old.as_slice(),
                new.as_slice(),
                sender.fingerprint.0,
                continuation.epoch as i64,
                continuation.epoch_authenticator.as_slice(),
                members,
                settings
            ],
        )?;
        self.follow_announcements(&old)?;
        let waiting: Option<i64> = self.store.query_opt(
            "SELECT 1 FROM announcements WHERE old = ?1 AND new = ?2 AND refused IS NULL",
            params![old.as_slice(), new.as_slice()],
        )?;
        if waiting.is_some() {
            let (epoch, _) = self.group_token(new)?;
            let body = format!(
                "{} says this group continues group {}, which is not broken for you: it is \
                 followed only if that group breaks where it says",
                display_member(sender),
                hex::encode(old.as_slice())
            );
            append_history(self.store.conn(), new, epoch, &self.me(), &body, now)?;
        }
        Ok(())
    }

    /// Applies what was announced about `old` that can be judged now: when it was announced,
    /// when we join `old`, and when `old` breaks for us. The first continuation the rules
    /// allow is followed; one they refuse is shown, with why, and never followed.
    pub(super) fn follow_announcements(&mut self, old: &GroupId) -> Result<(), ProfileError> {
        let announced: Vec<Announced> = {
            let mut stmt = self.store.conn().prepare(
                "SELECT new, sender, epoch, authenticator, members, settings FROM announcements
                 WHERE old = ?1 AND refused IS NULL ORDER BY rowid",
            )?;
            let rows = stmt.query_map([old.as_slice()], |r| {
                let fingerprints = |bytes: Vec<u8>| -> Vec<Fingerprint> {
                    bytes
                        .chunks_exact(32)
                        .map(|c| Fingerprint(c.try_into().expect("32 bytes")))
                        .collect()
                };
                Ok(Announced {
                    new: GroupId::from_slice(&r.get::<_, Vec<u8>>(0)?),
                    sender: fingerprints(r.get(1)?).pop(),
                    claim: Continuation {
                        old_group: old.as_slice().to_vec().into(),
                        epoch: r.get::<_, i64>(2)? as u64,
                        epoch_authenticator: r.get::<_, Vec<u8>>(3)?.into(),
                    },
                    members: fingerprints(r.get(4)?),
                    // Unreadable settings are no settings: they then differ from the old ones.
                    settings: GroupSettings::decode(&r.get::<_, Vec<u8>>(5)?).ok(),
                })
            })?;
            rows.collect::<Result<_, _>>()?
        };
        for announced in announced {
            let (new, Some(sender)) = (&announced.new, announced.sender) else {
                continue;
            };
            match self.judge_continuation(old, &announced)? {
                Verdict::Wait => {}
                verdict @ (Verdict::Follow | Verdict::Moot) => {
                    self.store.conn().execute(
                        "DELETE FROM announcements WHERE old = ?1 AND new = ?2",
                        params![old.as_slice(), new.as_slice()],
                    )?;
                    if verdict == Verdict::Follow {
                        self.follow_continuation(old, new)?;
                    }
                }
                Verdict::Refuse(why) => self.refuse_continuation(old, new, &sender, &why)?,
            }
        }
        Ok(())
    }

    /// Whether `sender`'s word that `new` continues `old` (broken at `claim`) may be followed:
    /// only for a group broken for us at that very point, from one of its admins there, and
    /// only when the new group keeps its settings (admins, name, topic) and every member we
    /// had in it. Anything else could be a member taking the group over.
    pub(super) fn judge_continuation(
        &mut self,
        old: &GroupId,
        announced: &Announced,
    ) -> Result<Verdict, ProfileError> {
        let (new, claim) = (&announced.new, &announced.claim);
        let Some(sender) = &announced.sender else {
            return Ok(Verdict::Refuse("it names no announcer".into()));
        };
        let ours: Option<(bool, Option<Vec<u8>>, Option<String>)> = self
            .store
            .conn()
            .query_row(
                "SELECT hosted, replaced_by, broken FROM groups WHERE group_id = ?1",
                [old.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let broken = match ours {
            // We may be about to join it (its Welcome waits): judged then.
            None => return Ok(Verdict::Wait),
            Some((true, None, broken)) => broken,
            // We went on elsewhere already: the first continuation followed is the one.
            Some((true, Some(_), _)) => return Ok(Verdict::Moot),
            Some((false, ..)) => {
                return Ok(Verdict::Refuse(
                    "that group is not on a delivery node: nothing continues it".into(),
                ));
            }
        };
        if old == new {
            return Ok(Verdict::Refuse("a group cannot continue itself".into()));
        }
        if broken.is_none() {
            // Not broken for us (yet): followed if it breaks at the point named.
            return Ok(Verdict::Wait);
        }
        self.load(old)?;
        let group = &self.groups[old];
        let (epoch, authenticator) = (group.epoch().as_u64(), group.epoch_authenticator());
        if claim.epoch != epoch || claim.epoch_authenticator.as_slice() != authenticator.as_slice()
        {
            return Ok(Verdict::Refuse(format!(
                "it continues the group as it was at epoch {}, but it broke for you after \
                 epoch {epoch}, in another state",
                claim.epoch
            )));
        }
        let settings = engine::group_settings(group)?;
        if !engine::may_manage(settings.as_ref(), sender) {
            return Ok(Verdict::Refuse(
                "its announcer was not an admin of the broken group".into(),
            ));
        }
        let members = self.members(old)?;
        if settings.is_some() && announced.settings != settings {
            return Ok(Verdict::Refuse(
                "it does not keep the broken group's name, topic and admins".into(),
            ));
        }
        // As the new group was when it was announced: who leaves it later is its own affair.
        let missing: Vec<String> = members
            .iter()
            .filter(|m| !announced.members.contains(&m.fingerprint))
            .map(display_member)
            .collect();
        if !missing.is_empty() {
            return Ok(Verdict::Refuse(format!(
                "it leaves out members of the broken group: {}",
                missing.join(", ")
            )));
        }
        Ok(Verdict::Follow)
    }

    /// A continuation the rules refuse: kept with why, told in both groups' history and as an
    /// alert; we stay where we are.
    pub(super) fn refuse_continuation(
        &mut self,
        old: &GroupId,
        new: &GroupId,
        sender: &Fingerprint,
        why: &str,
    ) -> Result<(), ProfileError> {
        let now = self.now();
        let conn = self.store.conn();
        conn.execute(
            "UPDATE announcements SET refused = ?3 WHERE old = ?1 AND new = ?2",
            params![old.as_slice(), new.as_slice(), why],
        )?;
        let text = format!(
            "the member with key {} announced that group {} continues group {}, but {why}: \
             not followed",
            &sender.to_hex()[..16],
            hex::encode(new.as_slice()),
            hex::encode(old.as_slice()),
        );
        tracing::warn!(%text, "continuation refused");
        let me = self.me();
        for group in [old, new] {
            if let Ok((epoch, _)) = self.group_token(group) {
                append_history(self.store.conn(), group, epoch, &me, &text, now)?;
            }
        }
        let kind = format!("continuation:{}", hex::encode(new.as_slice()));
        crate::profile::alerts::raise_alert(self.store.conn(), &kind, &text, self.now() as u64)?;
        Ok(())
    }

    /// `old` is replaced by `new`, which a legitimate announcement says continues it: the
    /// name and our queued texts move there.
    pub(super) fn follow_continuation(
        &mut self,
        old: &GroupId,
        new: &GroupId,
    ) -> Result<(), ProfileError> {
        let name: Option<String> = self
            .store
            .query_opt(
                "SELECT name FROM groups WHERE group_id = ?1",
                [old.as_slice()],
            )?
            .flatten();
        let conn = self.store.conn();
        conn.execute(
            "UPDATE groups SET name = NULL WHERE group_id = ?1",
            [old.as_slice()],
        )?;
        conn.execute(
            "UPDATE groups SET name = coalesce(name, ?2) WHERE group_id = ?1",
            params![new.as_slice(), name],
        )?;
        self.replace_group(old, new)
    }

    /// `old` goes on as `new`: it is closed (with a history event), and our texts still queued
    /// in it move to `new`'s queue, in order, keeping their post ids.
    pub(super) fn replace_group(
        &mut self,
        old: &GroupId,
        new: &GroupId,
    ) -> Result<(), ProfileError> {
        let now = self.now();
        let conn = self.store.conn();
        // Still read up to where it breaks (if it does): what was said there before stands.
        conn.execute(
            "UPDATE groups SET replaced_by = ?2 WHERE group_id = ?1",
            params![old.as_slice(), new.as_slice()],
        )?;
        let moved: Vec<(Vec<u8>, i64, Vec<u8>)> = {
            let mut stmt = conn.prepare(
                "SELECT text, history_seq, post_id FROM outbox
                 WHERE group_id = ?1 AND text IS NOT NULL ORDER BY seq",
            )?;
            let rows =
                stmt.query_map([old.as_slice()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        conn.execute("DELETE FROM outbox WHERE group_id = ?1", [old.as_slice()])?;
        conn.execute("DELETE FROM intents WHERE group_id = ?1", [old.as_slice()])?;
        for (content, history_seq, post_id) in moved {
            queue_text(conn, new, &content, &post_id, Some(history_seq), now)?;
            conn.execute(
                "UPDATE messages SET group_id = ?2, log_seq = NULL WHERE seq = ?1",
                params![history_seq, new.as_slice()],
            )?;
        }
        // A wish to leave holds in the new group: our proposal follows the moved texts.
        if self.is_leaving(old)? {
            self.store.conn().execute(
                "UPDATE groups SET leaving = 1 WHERE group_id = ?1",
                [new.as_slice()],
            )?;
            self.queue_leave(new)?;
        }
        let (epoch, _) = self.group_token(old)?;
        let me = self.me();
        let body = format!(
            "this group continues in group {}",
            hex::encode(new.as_slice())
        );
        append_history(self.store.conn(), old, epoch, &me, &body, now)?;
        let body = format!("this group continues group {}", hex::encode(old.as_slice()));
        append_history(self.store.conn(), new, 0, &me, &body, now)?;
        Ok(())
    }
}
