//! Our changes (intents) waiting in order, each made into a commit when its turn comes, kept
//! as pending until the log orders it, then merged, or dropped and its intent queued again.

use super::*;

impl Profile {
    /// Where a change asked now stands: after every text queued so far.
    pub fn texts_mark(&self) -> Result<TextsMark, ProfileError> {
        let seq = self
            .store
            .conn()
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM outbox")?
            .query_row([], |r| r.get(0))?;
        Ok(TextsMark(seq))
    }

    /// Where the group's next change stands among its texts, if a change waits.
    pub fn next_change_mark(&self, id: &GroupId) -> Result<Option<TextsMark>, ProfileError> {
        let mark: Option<i64> = self
            .store
            .conn()
            .prepare_cached("SELECT MIN(texts_before) FROM intents WHERE group_id = ?1")?
            .query_row([id.as_slice()], |r| r.get(0))?;
        Ok(mark.map(TextsMark))
    }

    /// Queues a change of the group, asked at `mark`; returns its number.
    pub fn queue_intent(
        &mut self,
        id: &GroupId,
        intent: &Intent,
        mark: TextsMark,
    ) -> Result<i64, ProfileError> {
        self.ensure_hosted(id)?;
        let json = serde_json::to_string(intent).expect("an intent serialises");
        self.store.transaction(|| {
            self.store.conn().execute(
                "INSERT INTO intents (group_id, intent, texts_before) VALUES (?1, ?2, ?3)",
                params![id.as_slice(), json, mark.0],
            )?;
            Ok(self.store.conn().last_insert_rowid())
        })
    }

    /// The node took our commit but did not deliver the Welcomes of `clients` (their mailboxes
    /// are full): they are in the group's tree and can never join, so our next commit removes
    /// them again, before anything else, and the history says why.
    pub fn welcomes_undelivered(
        &mut self,
        id: &GroupId,
        clients: &[ClientId],
    ) -> Result<(), ProfileError> {
        let now = self.now();
        if clients.is_empty() {
            return Ok(());
        }
        let fingerprints: Vec<String> = clients.iter().map(hex::encode).collect();
        let intent = Intent::Remove {
            fingerprints: fingerprints.clone(),
        };
        let json = serde_json::to_string(&intent).expect("an intent serialises");
        let (epoch, _) = self.group_token(id)?;
        let me = self.me();
        self.store.transaction(|| {
            let conn = self.store.conn();
            conn.execute(
                "INSERT INTO intents (group_id, intent, texts_before) VALUES (?1, ?2, ?3)",
                params![id.as_slice(), json, TextsMark::FIRST.0],
            )?;
            for fingerprint in &fingerprints {
                let body = format!(
                    "the delivery node could not deliver the invitation of the member with key \
                     {} (their mailbox is full): they are removed again",
                    &fingerprint[..16]
                );
                append_history(conn, id, epoch, &me, &body, now)?;
            }
            Ok(())
        })
    }

    /// Makes the group's first waiting intent (in the order asked) into our pending commit, in
    /// one transaction. Whether its turn has come is the core's order rule (`sync/order.rs`).
    pub fn prepare_next_commit(&mut self, id: &GroupId) -> Result<Prepared, ProfileError> {
        let pending: Option<i64> = self.store.query_opt(
            "SELECT 1 FROM pending_commits WHERE group_id = ?1",
            [id.as_slice()],
        )?;
        if pending.is_some() {
            return Err(LogError::CommitPending.into());
        }
        // An add whose KeyPackages were claimed late was asked before changes queued earlier.
        let next: Option<(i64, String)> = self
            .store
            .conn()
            .query_row(
                "SELECT seq, intent FROM intents WHERE group_id = ?1
                 ORDER BY texts_before, seq LIMIT 1",
                [id.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((seq, json)) = next else {
            return Ok(Prepared::Nothing);
        };
        let intent: Intent = serde_json::from_str(&json)
            .map_err(|e| ProfileError::Corrupt(format!("intent {seq}: {e}")))?;
        self.in_transaction(|p| {
            p.store
                .conn()
                .execute("DELETE FROM intents WHERE seq = ?1", [seq])?;
            match p.make_commit(id, seq, &intent, &json) {
                Ok(Some(pending)) => Ok(Prepared::Commit(pending)),
                Ok(None) => Ok(Prepared::Done { intent: seq }),
                Err(e @ ProfileError::Store(_)) => Err(e),
                Err(error) => Ok(Prepared::Failed { intent: seq, error }),
            }
        })
    }

    /// Makes and stores our commit for `intent`; `None` when there is nothing left to do.
    pub(super) fn make_commit(
        &mut self,
        id: &GroupId,
        intent_seq: i64,
        intent: &Intent,
        intent_json: &str,
    ) -> Result<Option<PendingCommit>, ProfileError> {
        let key_packages = match intent {
            Intent::Add { key_packages } => key_packages
                .iter()
                .map(|kp| engine::validate_key_package(&self.crypto, kp))
                .collect::<Result<Vec<KeyPackage>, _>>()?,
            _ => Vec::new(),
        };
        let leaves: Vec<u32> = match intent {
            Intent::Remove { fingerprints } => {
                let members = self.members(id)?;
                fingerprints
                    .iter()
                    .filter_map(|f| resolve_member(&members, f).ok())
                    .map(|m| m.leaf_index)
                    .collect()
            }
            _ => Vec::new(),
        };
        if matches!(intent, Intent::Remove { .. }) && leaves.is_empty() {
            return Ok(None);
        }
        let settings = match intent {
            Intent::Settings(change) => {
                let new = self.settings_after(id, change)?;
                if Some(&new) == engine::group_settings(&self.groups[id])?.as_ref() {
                    return Ok(None); // already so (another admin's commit did it)
                }
                Some(new)
            }
            _ => None,
        };
        let recipients: Vec<ClientId> = key_packages
            .iter()
            .map(|kp| client_id(kp.leaf_node().signature_key().as_slice()))
            .collect();
        self.with_group(id, |engine, provider, group, conn| {
            let token = engine::epoch_token(provider.crypto, group)?;
            let out = match intent {
                Intent::Add { .. } => engine.add_members(provider, group, &key_packages)?,
                Intent::Remove { .. } => engine.remove_members(provider, group, &leaves)?,
                Intent::Update => engine.self_update(provider, group)?,
                Intent::Settings(_) => {
                    let new = settings.as_ref().expect("made above");
                    engine.change_settings(provider, group, new)?
                }
            };
            let next_token = engine::pending_epoch_token(provider.crypto, group)?;
            let epoch = group.epoch().as_u64();
            let joiners = match out.welcome {
                None => None,
                Some(welcome) => {
                    let secret = TreeSecret::random(provider.crypto)?;
                    let (group_id, next) = (id.as_slice(), epoch + 1);
                    let sealed_tree =
                        secret.seal_tree(provider.crypto, group_id, next, &welcome.ratchet_tree)?;
                    let keys = key_packages
                        .iter()
                        .map(|kp| secret.seal_to(provider.crypto, kp, group_id, next))
                        .collect::<Result<Vec<_>, _>>()?;
                    Some(Joiners {
                        welcome: welcome.welcome,
                        sealed_tree,
                        tree_access_hash: token_hash(&secret.access()),
                        recipients: recipients.into_iter().zip(keys).collect(),
                    })
                }
            };
            let pending = PendingCommit {
                group_id: id.as_slice().to_vec(),
                epoch,
                token,
                next_token_hash: token_hash(&next_token),
                message: out.commit,
                joiners,
                intent: intent_seq,
            };
            let joiners = pending.joiners.as_ref();
            conn.execute(
                "INSERT INTO pending_commits (group_id, epoch, message, welcome, ratchet_tree,
                     recipients, next_token_hash, intent, intent_seq, tree_keys, tree_access_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    pending.group_id,
                    pending.epoch as i64,
                    pending.message,
                    joiners.map(|j| &j.welcome),
                    joiners.map(|j| &j.sealed_tree),
                    joiners.map_or(Vec::new(), |j| j
                        .recipients
                        .iter()
                        .flat_map(|(r, _)| r.to_vec())
                        .collect()),
                    pending.next_token_hash,
                    intent_json,
                    intent_seq,
                    joiners.map(|j| encode_tree_keys(&j.recipients)),
                    joiners.map(|j| j.tree_access_hash.to_vec()),
                ],
            )?;
            Ok(Some(pending))
        })
    }

    /// Our commit waiting for the log in this group, if any.
    pub fn pending_commit(&mut self, id: &GroupId) -> Result<Option<PendingCommit>, ProfileError> {
        type Row = (
            u64,
            Vec<u8>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Vec<u8>,
            Vec<u8>,
            Option<i64>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
        );
        let row: Option<Row> = self
            .store
            .conn()
            .query_row(
                "SELECT epoch, message, welcome, ratchet_tree, recipients, next_token_hash,
                        intent_seq, tree_keys, tree_access_hash
                 FROM pending_commits WHERE group_id = ?1",
                [id.as_slice()],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                    ))
                },
            )
            .optional()?;
        let Some((epoch, message, welcome, sealed_tree, recipients, next, intent, keys, access)) =
            row
        else {
            return Ok(None);
        };
        let corrupt = |what: &str| ProfileError::Corrupt(format!("pending commit {what}"));
        let joiners = match welcome {
            None => None,
            Some(welcome) => {
                let mut keys = decode_tree_keys(keys)?.into_iter();
                Some(Joiners {
                    welcome,
                    sealed_tree: sealed_tree.unwrap_or_default(),
                    tree_access_hash: access
                        .unwrap_or(vec![0; 32])
                        .try_into()
                        .map_err(|_| corrupt("access hash"))?,
                    recipients: recipients
                        .chunks_exact(32)
                        .map(|c| {
                            let id: ClientId = c.try_into().expect("32-byte chunks");
                            (id, keys.next().unwrap_or_default())
                        })
                        .collect(),
                })
            }
        };
        let (_, token) = self.group_token(id)?;
        Ok(Some(PendingCommit {
            group_id: id.as_slice().to_vec(),
            epoch,
            token,
            next_token_hash: next.try_into().map_err(|_| corrupt("token hash"))?,
            message,
            joiners,
            intent: intent.unwrap_or(0),
        }))
    }

    /// The log ordered our pending commit at `seq`, right after our cursor: merge it. Returns
    /// its intent. (When entries lie between, read them with [`Self::receive_log`] instead:
    /// it merges ours when it meets it.)
    pub fn confirm_commit(&mut self, id: &GroupId, seq: u64) -> Result<i64, ProfileError> {
        let cursor = self.log_seq(id)?;
        if seq != cursor + 1 {
            return Err(LogError::Behind { seq, cursor }.into());
        }
        self.in_transaction(|p| {
            let before = p.last_history_seq()?;
            let intent = p.confirm_in_transaction(id)?;
            p.stamp_history(id, before, seq)?;
            p.set_log_seq(id, seq)?;
            Ok(intent)
        })
    }

    pub(super) fn confirm_in_transaction(&mut self, id: &GroupId) -> Result<i64, ProfileError> {
        let now = self.now();
        let (message, adds, intent): (Vec<u8>, bool, Option<i64>) = self.store.conn().query_row(
            "SELECT message, welcome IS NOT NULL, intent_seq FROM pending_commits
             WHERE group_id = ?1",
            [id.as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        self.with_group(id, |engine, provider, group, conn| {
            merge_own_commit(engine, provider, group, conn, &message, adds, now)?;
            conn.execute(
                "DELETE FROM pending_commits WHERE group_id = ?1",
                [id.as_slice()],
            )?;
            Ok(())
        })?;
        Ok(intent.unwrap_or(0))
    }

    /// Another commit took our pending commit's epoch: drop ours and put its intent back at the
    /// head of the queue (same number), to be made again at the new epoch.
    pub(super) fn abandon_in_transaction(&mut self, id: &GroupId) -> Result<(), ProfileError> {
        let (intent, seq): (String, Option<i64>) = self.store.conn().query_row(
            "SELECT intent, intent_seq FROM pending_commits WHERE group_id = ?1",
            [id.as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        self.with_group(id, |_, provider, group, conn| {
            group
                .clear_pending_commit(&provider.storage)
                .map_err(StoreError::from)?;
            conn.execute(
                "DELETE FROM pending_commits WHERE group_id = ?1",
                [id.as_slice()],
            )?;
            conn.execute(
                "INSERT INTO intents (seq, group_id, intent) VALUES (?1, ?2, ?3)",
                params![seq, id.as_slice(), intent],
            )?;
            Ok(())
        })
    }

    /// The node will never take our pending commit (it refused it for good): drop it, and its
    /// intent with it. Returns the intent.
    pub fn fail_commit(&mut self, id: &GroupId) -> Result<i64, ProfileError> {
        self.in_transaction(|p| {
            let intent: Option<i64> = p.store.query_opt(
                "SELECT intent_seq FROM pending_commits WHERE group_id = ?1",
                [id.as_slice()],
            )?;
            p.abandon_in_transaction(id)?;
            p.store
                .conn()
                .execute("DELETE FROM intents WHERE seq = ?1", [intent.unwrap_or(0)])?;
            Ok(intent.unwrap_or(0))
        })
    }
}
