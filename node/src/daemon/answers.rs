//! The daemon API's answers as types: [`Answer`] has one variant per [`Call`], and what the
//! daemon sends is that variant's value. The CLI prints the same values with `-o json`, and
//! `docs/json-output.schema.json` is generated from these types (by `mlschat-cli`'s schema
//! test).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::api::Call;
use crate::profile::{
    Alert, Contact, Event, GroupSummary, HistoryEntry, Invitation, SafetyNumber, SenderState,
};
use crate::schema::FingerprintHex;
use crate::sync::StuckLane;

/// The answer to one call. On the wire each is its value alone: which variant it is follows
/// from the call ([`Answer::decode`]).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Status(Status),
    AlertsAck(Acknowledged),
    Whoami(Whoami),
    Home(HomeNode),
    Invite(OurInvite),
    Groups(Vec<GroupSummary>),
    Members(Vec<MemberWithState>),
    History(Vec<HistoryEntry>),
    Events(Vec<Event>),
    Subscribe(Subscribed),
    Contacts(Vec<Contact>),
    /// `contact.add`.
    Contact(Contact),
    /// `contact.remove`: the contact forgotten.
    ContactRemoved(Contact),
    ContactVerify(SafetyNumber),
    Requests(Vec<Invitation>),
    /// `request.decline`: the invitation forgotten.
    Declined(Invitation),
    /// `group.create`.
    Created(GroupSummary),
    Renamed(Renamed),
    /// `group.add`, `group.remove`, `group.update`.
    Changed(Changed),
    /// `group.set`.
    SettingsChanged(Changed),
    /// `send`.
    Sent(Posted),
    /// `group.leave`.
    Leaving(Posted),
    /// `sync` and `request.accept`.
    Synced(Synced),
}

impl Answer {
    /// The answer to `call` in its JSON form.
    pub fn decode(call: &Call, value: serde_json::Value) -> serde_json::Result<Answer> {
        use serde_json::from_value as from;
        Ok(match call {
            Call::Status {} => Answer::Status(from(value)?),
            Call::AlertsAck { .. } => Answer::AlertsAck(from(value)?),
            Call::Whoami {} => Answer::Whoami(from(value)?),
            Call::Home {} => Answer::Home(from(value)?),
            Call::Invite {} => Answer::Invite(from(value)?),
            Call::Groups {} => Answer::Groups(from(value)?),
            Call::Members { .. } => Answer::Members(from(value)?),
            Call::History { .. } => Answer::History(from(value)?),
            Call::Events { .. } => Answer::Events(from(value)?),
            Call::Subscribe { .. } => Answer::Subscribe(from(value)?),
            Call::Contacts {} => Answer::Contacts(from(value)?),
            Call::ContactAdd { .. } => Answer::Contact(from(value)?),
            Call::ContactRemove { .. } => Answer::ContactRemoved(from(value)?),
            Call::ContactVerify { .. } => Answer::ContactVerify(from(value)?),
            Call::Requests {} => Answer::Requests(from(value)?),
            Call::RequestDecline { .. } => Answer::Declined(from(value)?),
            Call::GroupCreate { .. } => Answer::Created(from(value)?),
            Call::GroupRename { .. } => Answer::Renamed(from(value)?),
            Call::GroupAdd { .. } | Call::GroupRemove { .. } | Call::GroupUpdate { .. } => {
                Answer::Changed(from(value)?)
            }
            Call::GroupSet { .. } => Answer::SettingsChanged(from(value)?),
            Call::Send { .. } => Answer::Sent(from(value)?),
            Call::GroupLeave { .. } => Answer::Leaving(from(value)?),
            Call::Sync {} | Call::RequestAccept { .. } => Answer::Synced(from(value)?),
        })
    }

    /// Its JSON form; answers always serialise.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// `status`: who we are, the delivery node and whether the daemon is connected to it, our
/// groups, invitations, alerts not acknowledged yet, and lanes that are stuck.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// `user/device`.
    pub name: String,
    #[schemars(with = "FingerprintHex")]
    pub fingerprint: String,
    /// The delivery node's address, if one is set.
    pub home: Option<String>,
    pub link: Link,
    /// Groups whose posts keep being refused as stale while their log has nothing new to
    /// read: the daemon backs off.
    pub lanes: Vec<StuckLane>,
    pub groups: Vec<GroupSummary>,
    pub invitations: Vec<Invitation>,
    pub alerts: Vec<Alert>,
}

/// Whether the daemon is connected to its delivery node, and if not, why.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub connected: bool,
    /// Why not (offline, or no daemon runs); absent when connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// `alerts.ack`: how many alerts were acknowledged.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Acknowledged {
    pub acknowledged: u64,
}

/// `whoami` (and `init`): this device's identity.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Whoami {
    pub user: String,
    pub device: String,
    #[schemars(with = "FingerprintHex")]
    pub fingerprint: String,
    /// The profile's directory.
    pub profile: String,
    pub keypackages: Stock,
}

/// KeyPackages in stock.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stock {
    pub one_time: u64,
    pub last_resort: bool,
}

/// `home`: the delivery node, or nulls when groups are kept in files.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HomeNode {
    pub address: Option<String>,
    /// Its certificate's fingerprint.
    #[schemars(with = "Option<FingerprintHex>")]
    pub fingerprint: Option<String>,
}

/// `invite`: our invite code and our key's fingerprint.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OurInvite {
    #[schemars(pattern("^mlschat:"))]
    pub code: String,
    #[schemars(with = "FingerprintHex")]
    pub fingerprint: String,
}

/// A member of a group, what our contacts say of it, whether it is an admin, and whether it
/// has joined yet.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberWithState {
    pub leaf: u32,
    /// `user/device`, or null for a credential that is not one.
    pub name: Option<String>,
    #[schemars(with = "FingerprintHex")]
    pub fingerprint: String,
    pub state: SenderState,
    pub admin: bool,
    /// Added but not joined yet (its leaf is still its KeyPackage's).
    pub invited: bool,
}

/// `subscribe`: events after `after` follow as `event` notifications (each an [`Event`]).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subscribed {
    pub after: i64,
}

/// `group.rename`: the group's local name.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Renamed {
    pub group: String,
    pub name: String,
}

/// A change of a hosted group: the group once the commit is accepted, or queued.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Changed {
    Group(GroupSummary),
    Queued(Queued),
}

/// A change of a hosted group whose connection went before it was committed: it stays
/// queued and goes on after reconnecting.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Queued {
    pub group: String,
    #[schemars(extend("const" = true))]
    pub queued: bool,
}

/// `send` and `group.leave` of a hosted group: whether the node has it (`false`: queued, it
/// goes out on reconnection). A leave is a proposal: a member's next commit removes us.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Posted {
    pub posted: bool,
}

/// `sync` and `request.accept`: how many history entries each group got (joins included).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Synced {
    #[schemars(extend("const" = true))]
    pub synced: bool,
    pub new: Vec<NewEntries>,
}

/// A group with news.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEntries {
    /// Its name, or its id if it has none.
    pub group: String,
    pub entries: u64,
}
