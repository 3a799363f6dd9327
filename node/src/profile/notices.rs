//! Notices in a group's log ([`mlschat_wire::notice`]): an admin for whom a commit broke a group
//! leaves a signed word that everything after it is a fork, and a member past that point who
//! reads it learns that its group was abandoned. Each method is one step of a transaction the
//! caller holds, or one of its own.

use openmls::prelude::GroupId;
use openmls_traits::signatures::Signer as _;
use rusqlite::params;
use sha2::{Digest, Sha256};

use super::{Profile, ProfileError, append_history};
use crate::engine;
use crate::identity::Fingerprint;
use mlschat_wire::notice::{Abandoned, Notice};
use mlschat_wire::{PostNotice, Token};

impl Profile {
    /// The commit `commit` (the log entry that ended `epoch`) broke `id` for us: if we are an
    /// admin there, a notice that everything after `epoch` is a fork waits to be posted (the
    /// commit's joiners and committer went on without us, and only the log reaches them).
    pub(super) fn leave_notice(
        &mut self,
        id: &GroupId,
        epoch: u64,
        commit: &[u8],
    ) -> Result<(), ProfileError> {
        self.load(id)?;
        let settings = engine::group_settings(&self.groups[id])?;
        if !engine::may_manage(settings.as_ref(), &self.identity().fingerprint()) {
            return Ok(());
        }
        let abandoned = Abandoned {
            group_id: id.as_slice().to_vec().into(),
            epoch,
            rejected_commit: Sha256::digest(commit).into(),
        };
        let signer = &self.identity().signer;
        let signature = signer
            .sign(&abandoned.to_be_signed())
            .map_err(|e| ProfileError::Corrupt(format!("signing a notice: {e:?}")))?;
        let notice = Notice {
            abandoned,
            signature_key: signer.public().to_vec().into(),
            signature: signature.into(),
        };
        self.store.conn().execute(
            "UPDATE groups SET notice = ?2 WHERE group_id = ?1",
            params![id.as_slice(), notice.encode()],
        )?;
        Ok(())
    }

    /// The notice of ours still to post in `id`, as a request (with the token of our last
    /// epoch there, which gives the right to append to its log).
    pub fn notice_to_post(&mut self, id: &GroupId) -> Result<Option<PostNotice>, ProfileError> {
        let notice: Option<Option<Vec<u8>>> = self.store.query_opt(
            "SELECT notice FROM groups WHERE group_id = ?1",
            [id.as_slice()],
        )?;
        let Some(notice) = notice.flatten() else {
            return Ok(None);
        };
        let (_, token): (u64, Token) = self.group_token(id)?;
        Ok(Some(PostNotice {
            group_id: id.as_slice().to_vec().into(),
            token,
            notice: notice.into(),
        }))
    }

    /// Our notice in `id` is in its log (or will never be).
    pub fn notice_posted(&mut self, id: &GroupId) -> Result<(), ProfileError> {
        self.store.conn().execute(
            "UPDATE groups SET notice = NULL WHERE group_id = ?1",
            [id.as_slice()],
        )?;
        Ok(())
    }

    /// Groups with a notice of ours still to post.
    pub fn groups_with_notices(&self) -> Result<Vec<GroupId>, ProfileError> {
        let mut stmt = self
            .store
            .conn()
            .prepare("SELECT group_id FROM groups WHERE notice IS NOT NULL ORDER BY group_id")?;
        let rows = stmt.query_map([], |r| Ok(GroupId::from_slice(&r.get::<_, Vec<u8>>(0)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Judges a notice read in `id`'s log: `Some(why)` when it says, validly, that our group is
    /// a fork its admins left (its signer is a member and an admin as we see the group, and we
    /// are past the epoch it names). Anything else (a forgery, a stranger's, one about a point
    /// we have not reached) is passed.
    pub(super) fn abandoned_by(
        &mut self,
        id: &GroupId,
        notice: &[u8],
    ) -> Result<Option<String>, ProfileError> {
        let Ok(notice) = Notice::verified(notice) else {
            return Ok(None);
        };
        let abandoned = &notice.abandoned;
        self.load(id)?;
        let group = &self.groups[id];
        let signer = Fingerprint::of_signature_key(notice.signature_key.as_slice());
        let members = engine::members(group);
        let Some(signer) = members.iter().find(|m| m.fingerprint == signer) else {
            return Ok(None);
        };
        let settings = engine::group_settings(group)?;
        if abandoned.group_id.as_slice() != id.as_slice()
            || group.epoch().as_u64() <= abandoned.epoch
            || !engine::may_manage(settings.as_ref(), &signer.fingerprint)
        {
            return Ok(None);
        }
        Ok(Some(format!(
            "{}, an admin, rejected the commit that ended epoch {}: this group, from then on, is \
             a fork its admins left, and nobody there reads you",
            engine::display_member(signer),
            abandoned.epoch
        )))
    }

    /// Our group is a fork its admins left: it stops, says why, and is never started again by us.
    pub(super) fn mark_abandoned(
        &mut self,
        id: &GroupId,
        epoch: u64,
        why: &str,
    ) -> Result<(), ProfileError> {
        let now = self.now();
        let conn = self.store.conn();
        conn.execute(
            "UPDATE groups SET broken = ?2, abandoned = 1 WHERE group_id = ?1",
            params![id.as_slice(), why],
        )?;
        let me = self.me();
        append_history(self.store.conn(), id, epoch, &me, why, now)?;
        let kind = format!("abandoned:{}", hex::encode(id.as_slice()));
        super::alerts::raise_alert(self.store.conn(), &kind, why, self.now() as u64)?;
        Ok(())
    }
}
