//! Our groups: creating and naming them, their settings and admins, their members, and
//! finding one by what our user types (its name, or a prefix of its id).

use super::*;

impl Profile {
    /// Creates a group with us as its only member.
    pub fn create_group(&mut self, name: &str) -> Result<GroupSummary, ProfileError> {
        self.create_group_as(name, false)
    }

    /// Creates a group, kept in files or (`hosted`) on our delivery node, in one transaction,
    /// named `name` for every member and with us as its admin.
    pub(super) fn create_group_as(
        &mut self,
        name: &str,
        hosted: bool,
    ) -> Result<GroupSummary, ProfileError> {
        let settings = self.engine.new_settings(name);
        self.create_group_with(name, hosted, &settings)
    }

    /// Creates a group as above, with `settings` (a continuation keeps the old group's).
    pub(super) fn create_group_with(
        &mut self,
        name: &str,
        hosted: bool,
        settings: &GroupSettings,
    ) -> Result<GroupSummary, ProfileError> {
        let now = self.now();
        validate_group_name(name)?;
        if self.find_group(name).is_ok() {
            return Err(GroupNameError::Taken(name.to_owned()).into());
        }
        let id = GroupId::from_slice(
            &self
                .crypto
                .random_vec(16)
                .map_err(|e| EngineError::Invalid(e.to_string()))?,
        );
        let provider = self.provider();
        let me = self.me();
        // A savepoint: a transaction of its own, or part of the caller's (a continuation).
        let group = self.store.savepoint(|| {
            let group = self.engine.create_group(&provider, id.clone(), settings)?;
            let conn = self.store.conn();
            insert_group(conn, &id, Some(name), false, now)?;
            append_history(conn, &id, 0, &me, "created the group", now)?;
            if hosted {
                // The first row of the node's log comes after this one.
                conn.execute(
                    "UPDATE groups SET hosted = 1 WHERE group_id = ?1",
                    [id.as_slice()],
                )?;
                conn.execute(
                    "UPDATE messages SET log_seq = 0 WHERE group_id = ?1",
                    [id.as_slice()],
                )?;
            }
            Ok::<_, ProfileError>(group)
        })?;
        self.groups.insert(id.clone(), group);
        self.summary(&id)
    }

    /// What `group set` asks for, resolved against the group as it is now: the members named
    /// by `admin` and `not_admin` become fingerprints, and the change is checked (we are an
    /// admin, the group has settings, one admin is left) before anything is queued.
    pub fn settings_change(
        &mut self,
        id: &GroupId,
        name: Option<String>,
        topic: Option<String>,
        admin: &[String],
        not_admin: &[String],
    ) -> Result<SettingsChange, ProfileError> {
        self.ensure_admin(id, "change the group's settings")?;
        if let Some(name) = &name {
            validate_group_name(name)?;
        }
        let fingerprints = |p: &mut Self, who: &[String]| -> Result<Vec<String>, ProfileError> {
            Ok(p.resolve_members(id, who)?
                .iter()
                .map(|m| m.fingerprint.to_hex())
                .collect())
        };
        let change = SettingsChange {
            name,
            topic,
            promote: fingerprints(self, admin)?,
            demote: fingerprints(self, not_admin)?,
        };
        if change == SettingsChange::default() {
            return Err(SettingsChangeError::NothingToChange.into());
        }
        self.settings_after(id, &change)?;
        Ok(change)
    }

    /// The group's shared settings, if it has them.
    pub fn settings(&mut self, id: &GroupId) -> Result<Option<GroupSettings>, ProfileError> {
        self.load(id)?;
        Ok(engine::group_settings(&self.groups[id])?)
    }

    /// Refuses, before anything is claimed or queued, what only the group's admins may do.
    pub fn ensure_admin(&mut self, id: &GroupId, what: &str) -> Result<(), ProfileError> {
        let me = self.identity().fingerprint();
        if engine::may_manage(self.settings(id)?.as_ref(), &me) {
            return Ok(());
        }
        let group = self.handle(id)?;
        Err(EngineError::NotAllowed(format!(
            "only the group's admins may {what}; ask one of them (`mlschat group members {group}` \
             shows who they are)"
        ))
        .into())
    }

    /// The group's settings after `change`; an error for a group that has none.
    pub(super) fn settings_after(
        &mut self,
        id: &GroupId,
        change: &SettingsChange,
    ) -> Result<GroupSettings, ProfileError> {
        self.load(id)?;
        let current = engine::group_settings(&self.groups[id])?
            .ok_or_else(|| ProfileError::from(SettingsChangeError::NoSettings))?;
        change.apply(&current)
    }

    /// Gives a group a local name (only we see it), e.g. after joining one.
    pub fn rename_group(&mut self, id: &GroupId, name: &str) -> Result<(), ProfileError> {
        validate_group_name(name)?;
        if self.find_group(name).is_ok_and(|other| other != *id) {
            return Err(GroupNameError::Taken(name.to_owned()).into());
        }
        self.store.conn().execute(
            "UPDATE groups SET name = ?2 WHERE group_id = ?1",
            params![id.as_slice(), name],
        )?;
        Ok(())
    }

    /// Every group we are or were in.
    pub fn groups(&mut self) -> Result<Vec<GroupSummary>, ProfileError> {
        let ids: Vec<Vec<u8>> = {
            let mut stmt = self.store.conn().prepare(
                "SELECT group_id FROM groups WHERE declined = 0 ORDER BY created_at, name",
            )?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        ids.iter()
            .map(|id| self.summary(&GroupId::from_slice(id)))
            .collect()
    }

    /// The members of a group, in leaf order.
    pub fn members(&mut self, id: &GroupId) -> Result<Vec<MemberInfo>, ProfileError> {
        self.load(id)?;
        Ok(engine::members(&self.groups[id]))
    }

    /// The members of `group` added who have not joined yet ([`engine::invited`]).
    pub fn invited(
        &mut self,
        id: &GroupId,
    ) -> Result<Vec<crate::identity::Fingerprint>, ProfileError> {
        self.load(id)?;
        let me = self.identity().fingerprint();
        let mut invited = engine::invited(&self.groups[id]);
        invited.retain(|f| *f != me);
        Ok(invited)
    }

    /// Finds members by `user/device`, `user`, `#leaf` or a fingerprint prefix.
    pub fn resolve_members(
        &mut self,
        id: &GroupId,
        who: &[String],
    ) -> Result<Vec<MemberInfo>, ProfileError> {
        let members = self.members(id)?;
        who.iter()
            .map(|w| resolve_member(&members, w).cloned())
            .collect()
    }

    /// One group as listed to the user.
    pub fn summary(&mut self, id: &GroupId) -> Result<GroupSummary, ProfileError> {
        // A group we cannot go on in is shown so everywhere, until it continues elsewhere.
        let (name, state): (Option<String>, String) = self.store.conn().query_row(
            "SELECT name, CASE WHEN state != 'active' OR broken IS NULL THEN state
                 WHEN abandoned = 1 THEN 'abandoned'
                 WHEN replaced_by IS NOT NULL THEN 'continued' ELSE 'broken' END
             FROM groups WHERE group_id = ?1",
            [id.as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let state = GroupState::from_name(&state)
            .ok_or_else(|| ProfileError::Corrupt(format!("group state {state:?}")))?;
        self.load(id)?;
        let group = &self.groups[id];
        let settings = engine::group_settings(group)?;
        let me = self.engine.identity().fingerprint();
        Ok(GroupSummary {
            id: hex::encode(id.as_slice()),
            name,
            epoch: group.epoch().as_u64(),
            members: group.members().count() as u64,
            invited: engine::invited(group).iter().filter(|f| **f != me).count() as u64,
            state,
            epoch_authenticator: hex::encode(group.epoch_authenticator().as_slice()),
            admin: engine::may_manage(settings.as_ref(), &me),
            shared_name: settings.as_ref().map(|s| s.name.clone()),
            topic: settings.map(|s| s.topic),
        })
    }

    pub(super) fn group_ref(&self, id: &GroupId) -> Result<Option<GroupRef>, ProfileError> {
        let name: Option<Option<String>> = self
            .store
            .conn()
            .prepare_cached("SELECT name FROM groups WHERE group_id = ?1")?
            .query_row([id.as_slice()], |r| r.get(0))
            .optional()?;
        Ok(name.map(|name| GroupRef {
            id: hex::encode(id.as_slice()),
            name,
        }))
    }

    /// What our user calls the group: its name, or its id (hex) if it has none.
    pub fn handle(&self, id: &GroupId) -> Result<String, ProfileError> {
        Ok(self
            .group_ref(id)?
            .map_or_else(|| hex::encode(id.as_slice()), |g| g.handle().to_owned()))
    }

    /// Finds a group by its name or a prefix (4+ hex digits) of its id.
    pub fn find_group(&self, handle: &str) -> Result<GroupId, ProfileError> {
        let conn = self.store.conn();
        let by_name: Option<Vec<u8>> = conn
            .prepare_cached("SELECT group_id FROM groups WHERE name = ?1")?
            .query_row([handle], |r| r.get(0))
            .optional()?;
        if let Some(id) = by_name {
            return Ok(GroupId::from_slice(&id));
        }
        let prefix = handle.to_ascii_lowercase();
        if prefix.len() >= 4 && prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            let mut stmt = conn.prepare(
                "SELECT group_id FROM groups WHERE substr(lower(hex(group_id)), 1, length(?1)) = ?1",
            )?;
            let ids: Vec<Vec<u8>> = stmt
                .query_map([&prefix], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            match ids.as_slice() {
                [one] => return Ok(GroupId::from_slice(one)),
                [] => {}
                _ => return Err(ProfileError::Ambiguous(handle.into(), "group")),
            }
        }
        Err(ProfileError::UnknownGroup(handle.into()))
    }
}
