//! The calls that need no delivery node, carried out on a profile: the daemon's answer, and the
//! CLI's when no daemon runs, so both answer alike.

use super::answers::{
    Acknowledged, Answer, HomeNode, Link, MemberWithState, OurInvite, Renamed, Status, Stock,
    Whoami,
};
use super::api::{Call, RpcError};
use crate::engine;
use crate::identity::Fingerprint;
use crate::profile::{InviteCode, Profile, RequestState};

/// Carries out `call` on `profile` if it needs no delivery node; `None` for one that does.
pub fn local(profile: &mut Profile, call: &Call) -> Result<Option<Answer>, RpcError> {
    Ok(Some(match call {
        Call::Whoami {} => Answer::Whoami(whoami(profile)?),
        Call::Home {} => {
            let home = profile.home()?;
            Answer::Home(HomeNode {
                address: home.as_ref().map(|h| h.address.clone()),
                fingerprint: home.as_ref().map(|h| hex::encode(h.fingerprint)),
            })
        }
        Call::Status {} => Answer::Status(status(profile)?),
        Call::AlertsAck { up_to } => Answer::AlertsAck(Acknowledged {
            acknowledged: profile.acknowledge_alerts(*up_to)? as u64,
        }),
        Call::GroupRename { group, name } => {
            profile.rename_group(&profile.find_group(group)?, name)?;
            Answer::Renamed(Renamed {
                group: group.clone(),
                name: name.clone(),
            })
        }
        Call::Groups {} => Answer::Groups(profile.groups()?),
        Call::Members { group } => Answer::Members(members(profile, group)?),
        Call::History { group, limit } => {
            Answer::History(profile.history(&profile.find_group(group)?, *limit)?)
        }
        Call::Events { after, limit } => Answer::Events(profile.events_after(*after, *limit)?),
        Call::Invite {} => {
            let code = profile.invite_code()?;
            let fingerprint = Fingerprint::of_signature_key(&code.signature_key);
            Answer::Invite(OurInvite {
                code: code.to_string(),
                fingerprint: fingerprint.to_hex(),
            })
        }
        Call::Contacts {} => Answer::Contacts(profile.contacts()?),
        Call::ContactAdd { code } => {
            let code: InviteCode = code.parse()?;
            Answer::Contact(profile.add_contact(&code)?)
        }
        Call::ContactVerify { name, matches } => {
            if let Some(number) = matches {
                profile.verify_contact(name, number)?;
            }
            Answer::ContactVerify(profile.safety_number(name)?)
        }
        Call::ContactRemove { name } => Answer::ContactRemoved(profile.remove_contact(name)?),
        Call::Requests {} => Answer::Requests(
            profile
                .invitations()?
                .into_iter()
                .filter(|i| i.request == Some(RequestState::Waiting))
                .collect(),
        ),
        Call::RequestDecline { group } => Answer::Declined(profile.answer_request(group, false)?),
        _ => return Ok(None),
    }))
}

/// This device's identity (`whoami`, and what `init` reports).
pub fn whoami(profile: &Profile) -> Result<Whoami, RpcError> {
    let identity = profile.identity();
    let (one_time, last_resort) = profile.key_package_stock()?;
    Ok(Whoami {
        user: identity.name.user.clone(),
        device: identity.name.device.clone(),
        fingerprint: identity.fingerprint().to_hex(),
        profile: profile.store().dir().display().to_string(),
        keypackages: Stock {
            one_time,
            last_resort,
        },
    })
}

/// The status of a profile no daemon runs for (the daemon fills in its link and lanes).
fn status(profile: &mut Profile) -> Result<Status, RpcError> {
    let identity = profile.identity();
    let (name, fingerprint) = (identity.name.to_string(), identity.fingerprint().to_hex());
    Ok(Status {
        name,
        fingerprint,
        home: profile.home()?.map(|h| h.address),
        link: Link {
            connected: false,
            why: Some("no daemon runs".into()),
        },
        lanes: Vec::new(),
        groups: profile.groups()?,
        invitations: profile.invitations()?,
        alerts: profile.alerts()?,
    })
}

/// The group's members, with how we know each and whether they are admins or still invited.
fn members(profile: &mut Profile, group: &str) -> Result<Vec<MemberWithState>, RpcError> {
    let id = profile.find_group(group)?;
    let states = profile.sender_states()?;
    let settings = profile.settings(&id)?;
    let invited = profile.invited(&id)?;
    Ok(profile
        .members(&id)?
        .iter()
        .map(|m| {
            let name = m.name.as_ref().map(|n| n.to_string());
            MemberWithState {
                leaf: m.leaf_index,
                state: states.of(name.as_deref().unwrap_or(""), &m.fingerprint.0),
                fingerprint: m.fingerprint.to_hex(),
                admin: engine::may_manage(settings.as_ref(), &m.fingerprint),
                invited: invited.contains(&m.fingerprint),
                name,
            }
        })
        .collect())
}
