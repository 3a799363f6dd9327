//! A group's shared settings (name, topic, admins) in its context, and the rule every member
//! applies alike: only an admin adds, removes others or changes the settings.

use openmls::prelude::*;

use super::{EngineError, MemberInfo, display_member, member_info};
use crate::identity::Fingerprint;
use mlschat_wire::settings::{self, GroupSettings};

/// What every leaf of ours supports: last-resort KeyPackages and the group settings.
pub(super) fn capabilities() -> Capabilities {
    Capabilities::builder()
        .extensions(vec![
            ExtensionType::LastResort,
            ExtensionType::Unknown(settings::EXTENSION_TYPE),
        ])
        .build()
}

/// The group-context extensions that carry `settings`: the settings, and the requirement that
/// every member support them (without it, no member could change them later, RFC 9420 §12.1.7).
pub(super) fn settings_extensions(
    settings: &GroupSettings,
) -> Result<Extensions<GroupContext>, EngineError> {
    let bytes = settings
        .encode()
        .map_err(|e| EngineError::Invalid(e.to_string()))?;
    let settings_type = ExtensionType::Unknown(settings::EXTENSION_TYPE);
    Extensions::from_vec(vec![
        Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
            &[settings_type],
            &[],
            &[],
        )),
        Extension::Unknown(settings::EXTENSION_TYPE, UnknownExtension(bytes)),
    ])
    .map_err(|e| EngineError::Invalid(e.to_string()))
}

/// The group's shared settings; `None` for a group made without them (by another client, or
/// before they existed), where every member may add and remove.
pub fn group_settings(group: &MlsGroup) -> Result<Option<GroupSettings>, EngineError> {
    settings_of(group.extensions())
}

/// Whether the member with key `fingerprint` may add members, remove others and change the
/// settings: an admin, or anyone in a group without settings.
pub fn may_manage(settings: Option<&GroupSettings>, fingerprint: &Fingerprint) -> bool {
    settings.is_none_or(|s| s.is_admin(&fingerprint.0))
}

/// Who commits a proposal from `proposer` (a member leaving): the first admin by leaf order
/// other than the proposer, else the first other member (no admin left, or a group without
/// settings). One member commits, so that members do not race to; `None` when nobody is left.
pub fn proposal_committer<'m>(
    settings: Option<&GroupSettings>,
    members: &'m [MemberInfo],
    proposer: &Fingerprint,
) -> Option<&'m MemberInfo> {
    let mut others = members.iter().filter(|m| m.fingerprint != *proposer);
    let first = others.clone().next();
    others
        .find(|m| may_manage(settings, &m.fingerprint))
        .or(first)
}

pub(super) fn settings_of(
    extensions: &Extensions<GroupContext>,
) -> Result<Option<GroupSettings>, EngineError> {
    extensions
        .unknown(settings::EXTENSION_TYPE)
        .map(|e| GroupSettings::decode(&e.0))
        .transpose()
        .map_err(|e| EngineError::Forged(format!("group settings: {e}")))
}

/// Rejects a commit that the group's settings (as they were before it) do not allow: any
/// proposal but an update or a member's own removal, from a member who is not an admin. The
/// node cannot judge this (it cannot read the settings), so every member does, alike.
pub(super) fn authorize(group: &MlsGroup, staged: &StagedCommit) -> Result<(), EngineError> {
    // Decoded once: a commit may hold a thousand adds.
    let settings = group_settings(group)?;
    for queued in staged.queued_proposals() {
        authorize_proposal(group, settings.as_ref(), queued.sender(), queued.proposal())?;
    }
    Ok(())
}

/// The rule for one proposal. A proposal sent on its own is judged when it arrives too, so that
/// a forbidden one never enters our proposal store, where our next commit would take it and be
/// rejected by everyone else.
pub(super) fn authorize_proposal(
    group: &MlsGroup,
    settings: Option<&GroupSettings>,
    sender: &Sender,
    proposal: &Proposal,
) -> Result<(), EngineError> {
    let Some(settings) = settings else {
        return Ok(());
    };
    let Sender::Member(proposer) = sender else {
        return Err(EngineError::NotAllowed(
            "a proposal from outside the group".into(),
        ));
    };
    // Anything but refreshing one's keys or leaving is an admin's (a ReInit included).
    let what = match proposal {
        Proposal::Update(_) => return Ok(()),
        Proposal::Remove(r) if r.removed() == *proposer => return Ok(()), // leaving
        Proposal::Add(_) => "add members",
        Proposal::Remove(_) => "remove members",
        Proposal::GroupContextExtensions(extensions) => {
            // New settings must be valid settings: a group never loses them or its admins.
            if settings_of(extensions.extensions())?.is_none() {
                return Err(EngineError::NotAllowed(
                    "a proposal that drops the group's settings".into(),
                ));
            }
            "change the group's settings"
        }
        _ => "make this kind of proposal",
    };
    let member = group.member_at(*proposer);
    let fingerprint = |m: &Member| Fingerprint::of_signature_key(&m.signature_key);
    if member
        .as_ref()
        .is_some_and(|m| settings.is_admin(&fingerprint(m).0))
    {
        return Ok(());
    }
    let who = member
        .map(|m| display_member(&member_info(&m)))
        .unwrap_or_else(|| format!("leaf {proposer}"));
    Err(EngineError::NotAllowed(format!(
        "{who}, who is not an admin, tried to {what}; it was rejected"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(leaf_index: u32) -> MemberInfo {
        MemberInfo {
            leaf_index,
            name: None,
            fingerprint: Fingerprint([leaf_index as u8; 32]),
        }
    }

    fn admins(of: &[u32]) -> GroupSettings {
        GroupSettings {
            admins: of.iter().map(|&i| [i as u8; 32]).collect(),
            ..GroupSettings::default()
        }
    }

    fn committer(settings: Option<&GroupSettings>, leaves: &[u32], proposer: u32) -> Option<u32> {
        let members: Vec<MemberInfo> = leaves.iter().map(|&i| member(i)).collect();
        proposal_committer(settings, &members, &member(proposer).fingerprint).map(|m| m.leaf_index)
    }

    #[test]
    fn the_first_admin_but_the_proposer_commits() {
        let settings = admins(&[3, 5]);
        assert_eq!(committer(Some(&settings), &[1, 2, 3, 5], 2), Some(3));
        assert_eq!(committer(Some(&settings), &[1, 2, 3, 5], 3), Some(5));
    }

    #[test]
    fn without_an_admin_left_the_first_other_member_commits() {
        let settings = admins(&[1]);
        assert_eq!(committer(Some(&settings), &[1, 2, 3], 1), Some(2));
        assert_eq!(committer(None, &[1, 2, 3], 1), Some(2));
        assert_eq!(committer(None, &[1, 2, 3], 2), Some(1));
    }

    #[test]
    fn nobody_commits_the_last_members_proposal() {
        assert_eq!(committer(None, &[4], 4), None);
        assert_eq!(committer(Some(&admins(&[4])), &[4], 4), None);
    }
}
