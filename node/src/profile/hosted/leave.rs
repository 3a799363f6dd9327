//! Leaving a group on a node: our proposal, made again each epoch, and the member whose turn
//! it is to commit others' proposals.

use super::*;

impl Profile {
    /// Asks to leave a hosted group: our proposal to remove us is queued like a text (returns
    /// its outbox row), and made again at each new epoch until a member's commit removes us
    /// ([`Self::encrypt_queued`], [`Self::receive_log`]).
    pub fn leave_hosted(&mut self, id: &GroupId) -> Result<i64, ProfileError> {
        let now = self.now();
        self.ensure_hosted(id)?;
        let me = self.me();
        self.in_transaction(|p| {
            let (epoch, _) = p.group_token(id)?;
            p.store.conn().execute(
                "UPDATE groups SET leaving = 1 WHERE group_id = ?1",
                [id.as_slice()],
            )?;
            append_history(p.store.conn(), id, epoch, &me, "asked to leave", now)?;
            p.queue_leave(id)
        })
    }

    /// Queues our proposal to remove us. It is made when its turn comes ([`Self::encrypt_queued`]),
    /// at the epoch of that moment: a proposal cannot be made while a commit of ours waits.
    pub(super) fn queue_leave(&mut self, id: &GroupId) -> Result<i64, ProfileError> {
        let conn = self.store.conn();
        conn.prepare_cached(
            "INSERT INTO outbox (group_id, audience, packet, created_at) VALUES (?1, 'group', X'', ?2)",
        )?
        .execute(params![id.as_slice(), self.now()])?;
        Ok(conn.last_insert_rowid())
    }

    /// Whether our user asked to leave the group.
    pub(super) fn is_leaving(&self, id: &GroupId) -> Result<bool, ProfileError> {
        let leaving: Option<bool> = self.store.query_opt(
            "SELECT leaving = 1 FROM groups WHERE group_id = ?1",
            [id.as_slice()],
        )?;
        Ok(leaving == Some(true))
    }

    /// After a commit that left us in a group we asked to leave: propose it again, since a
    /// proposal lives one epoch (unless one of ours is still queued, to be made again).
    pub(super) fn leave_again(&mut self, id: &GroupId) -> Result<(), ProfileError> {
        let again: bool = self.store.conn().query_row(
            "SELECT leaving = 1 AND state = 'active' AND NOT EXISTS (
                 SELECT 1 FROM outbox o WHERE o.group_id = ?1 AND o.text IS NULL
                 AND o.audience = 'group')
             FROM groups WHERE group_id = ?1",
            [id.as_slice()],
            |r| r.get(0),
        )?;
        if again && self.is_active(id)? {
            self.queue_leave(id)?;
        }
        Ok(())
    }

    /// Whether we are the member who commits a proposal from `proposer`
    /// (`engine::proposal_committer`).
    pub(super) fn commits_proposals_of(
        &mut self,
        id: &GroupId,
        proposer: &MemberInfo,
    ) -> Result<bool, ProfileError> {
        self.load(id)?;
        let settings = engine::group_settings(&self.groups[id])?;
        let members = self.members(id)?;
        let committer =
            engine::proposal_committer(settings.as_ref(), &members, &proposer.fingerprint);
        Ok(committer.is_some_and(|m| m.fingerprint == self.identity().fingerprint()))
    }

    /// Queues a commit of the proposals we hold (a key refresh takes them with it), first in
    /// line, unless a key refresh of ours is queued already. Another change queued would take
    /// them too, but it may make no commit (it changes nothing, or fails: an add of members who
    /// are in already), and then nobody would commit them.
    pub(super) fn commit_proposals(&mut self, id: &GroupId) -> Result<(), ProfileError> {
        let update = serde_json::to_string(&Intent::Update).expect("an intent serialises");
        let queued: bool = self.store.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM intents WHERE group_id = ?1 AND intent = ?2)",
            params![id.as_slice(), update],
            |r| r.get(0),
        )?;
        if !queued {
            self.store.conn().execute(
                "INSERT INTO intents (group_id, intent) VALUES (?1, ?2)",
                params![id.as_slice(), update],
            )?;
        }
        Ok(())
    }
}
