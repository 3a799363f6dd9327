//! Broken groups started again: by their admins in turn, each a new group that announces it
//! continues the old one once everyone is added.

use super::*;

impl Core {
    /// Starts a broken group again now: a new group on our node with everyone we knew there,
    /// which announces that it continues the old one. Done once they are added.
    pub fn recover(&mut self, old: &GroupId) -> Result<Ticket, ProfileError> {
        let (summary, members) = self.profile.start_continuation(old)?;
        tracing::info!(old = %hex::encode(old.as_slice()), new = %summary.id, "starting a broken group again");
        let id = GroupId::from_slice(&hex::decode(&summary.id).expect("our own hex"));
        self.touch_group(id.as_slice(), true);
        Ok(self.claim_members(id, members))
    }

    /// Claims KeyPackages of the members of a group we start again, to add them.
    pub(super) fn claim_members(&mut self, group: GroupId, members: Vec<MemberInfo>) -> Ticket {
        let ticket = self.ticket();
        self.claims.push_back(Claims {
            ticket,
            group,
            // Its members are added before anything is said in it (its texts were moved in).
            asked: TextsMark::FIRST,
            remaining: members
                .into_iter()
                .map(|m| Claimee::Member(m.fingerprint))
                .collect(),
            key_packages: Vec::new(),
        });
        self.touch(Lane::Account, false);
        ticket
    }

    /// Each broken group is started again by its members in leaf order, [`RECOVERY_STAGGER`]
    /// apart: the first who is able does it, and the others follow its announcement.
    pub(super) fn schedule_recoveries(&mut self) -> Result<(), ProfileError> {
        for (id, _, rank) in self.profile.broken_groups()? {
            let Some(rank) = rank else {
                continue; // not an admin: we follow whoever starts it again
            };
            let at = self.now + rank as u64 * RECOVERY_STAGGER;
            self.recoveries.entry(id.as_slice().to_vec()).or_insert(at);
        }
        Ok(())
    }
}
