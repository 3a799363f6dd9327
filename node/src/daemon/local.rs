//! The calls that need no delivery node, carried out on a profile: the daemon's answer, and the
//! CLI's when no daemon runs, so both answer alike.

use serde_json::{Value, json};

use super::api::{Call, RpcError};
use crate::engine;
use crate::identity::Fingerprint;
use crate::profile::{InviteCode, Profile};

/// Carries out `call` on `profile` if it needs no delivery node; `None` for one that does.
pub fn local(profile: &mut Profile, call: &Call) -> Result<Option<Value>, RpcError> {
    Ok(Some(match call {
        Call::Whoami {} => {
            let identity = profile.identity();
            let (one_time, last_resort) = profile.key_package_stock()?;
            json!({
                "user": identity.name.user,
                "device": identity.name.device,
                "fingerprint": identity.fingerprint().to_hex(),
                "profile": profile.store().dir().display().to_string(),
                "keypackages": {"one_time": one_time, "last_resort": last_resort},
            })
        }
        Call::Home {} => {
            let home = profile.home()?;
            json!({
                "address": home.as_ref().map(|h| &h.address),
                "fingerprint": home.as_ref().map(|h| hex::encode(h.fingerprint)),
            })
        }
        Call::Status {} => {
            let identity = profile.identity();
            json!({
                "name": identity.name.to_string(),
                "fingerprint": identity.fingerprint().to_hex(),
                "home": profile.home()?.map(|h| h.address),
                "link": {"connected": false, "why": "no daemon runs"},
                "lanes": [],
                "groups": value(&profile.groups()?),
                "invitations": value(&profile.invitations()?),
                "alerts": value(&profile.alerts()?),
            })
        }
        Call::AlertsAck { up_to } => {
            json!({"acknowledged": profile.acknowledge_alerts(*up_to)?})
        }
        Call::GroupRename { group, name } => {
            profile.rename_group(group, name)?;
            json!({"group": group, "name": name})
        }
        Call::Groups {} => value(&profile.groups()?),
        Call::Members { group } => members(profile, group)?,
        Call::History { group, limit } => value(&profile.history(group, *limit)?),
        Call::Events { after, limit } => value(&profile.events_after(*after, *limit)?),
        Call::Invite {} => {
            let code = profile.invite_code()?;
            let fingerprint = Fingerprint::of_signature_key(&code.signature_key);
            json!({"code": code.to_string(), "fingerprint": fingerprint.to_hex()})
        }
        Call::Contacts {} => value(&profile.contacts()?),
        Call::ContactAdd { code } => {
            let code: InviteCode = code.parse()?;
            value(&profile.add_contact(&code)?)
        }
        Call::ContactVerify { name, matches } => {
            if let Some(number) = matches {
                profile.verify_contact(name, number)?;
            }
            value(&profile.safety_number(name)?)
        }
        Call::ContactRemove { name } => value(&profile.remove_contact(name)?),
        Call::Requests {} => {
            let waiting: Vec<_> = profile
                .invitations()?
                .into_iter()
                .filter(|i| i.request.as_deref() == Some("waiting"))
                .collect();
            value(&waiting)
        }
        Call::RequestDecline { group } => value(&profile.answer_request(group, false)?),
        _ => return Ok(None),
    }))
}

/// The group's members, with how we know each and whether they are admins or still invited.
fn members(profile: &mut Profile, group: &str) -> Result<Value, RpcError> {
    let states = profile.sender_states()?;
    let settings = profile.settings(group)?;
    let invited = profile.invited(group)?;
    let members: Vec<Value> = profile
        .members(group)?
        .iter()
        .map(|m| {
            let name = m.name.as_ref().map(|n| n.to_string());
            let state = states.of(name.as_deref().unwrap_or(""), &m.fingerprint.0);
            let admin = engine::may_manage(settings.as_ref(), &m.fingerprint);
            json!({
                "leaf": m.leaf_index,
                "name": name,
                "fingerprint": m.fingerprint.to_hex(),
                "state": state,
                "admin": admin,
                "invited": invited.contains(&m.fingerprint),
            })
        })
        .collect();
    Ok(json!(members))
}

/// The JSON of a report; reports always serialise.
pub(super) fn value(report: impl serde::Serialize) -> Value {
    serde_json::to_value(report).unwrap_or(Value::Null)
}
