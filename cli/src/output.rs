//! The CLI's own reports, as types: those of groups kept in files, and the error line. With the
//! daemon's answers (`mlschat_node::daemon::Answer`) they are everything `-o json` prints, and
//! `docs/json-output.schema.json` is generated from both (`schema.rs`).

use mlschat_node::engine::MemberInfo;
use mlschat_node::profile::{GroupRef, GroupSummary};
use mlschat_node::schema::FingerprintHex;
use mlschat_wire::settings::GroupSettings;
use schemars::JsonSchema;
use serde::Serialize;

/// Any failure, on stderr (the exit code follows it; see `mlschat --help`).
#[derive(Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorLine {
    pub error: String,
    #[schemars(range(min = 1))]
    pub exit_code: i32,
}

/// `keypackage`: a KeyPackage was written.
#[derive(Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyPackageWritten {
    pub keypackage: Written,
    pub one_time_outstanding: u64,
    pub last_resort_exists: bool,
}

/// The KeyPackage written.
#[derive(Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Written {
    pub last_resort: bool,
}

/// A commit made in a group kept in files (its packets went to --out or stdout).
#[derive(Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Committed {
    pub group: String,
    pub action: Action,
    pub count: u64,
}

/// What a commit of ours did.
#[derive(Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Added,
    Removed,
    Left,
    Updated,
    Changed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Added => "added",
            Action::Removed => "removed",
            Action::Left => "left",
            Action::Updated => "updated",
            Action::Changed => "changed",
        }
    }
}

/// `send` in a group kept in files: how many packets were written.
#[derive(Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SentToFiles {
    pub group: String,
    pub sent: u64,
}

/// `outbox`: packets written after a crash.
#[derive(Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Outbox {
    pub unsent: Vec<UnsentPacket>,
}

/// One packet written again.
#[derive(Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnsentPacket {
    pub group: String,
    /// `group` (its members) or `joiners` (a Welcome).
    pub audience: String,
}

/// What receiving one packet did (`receive FILES`).
#[derive(Serialize, JsonSchema)]
#[serde(tag = "event", rename_all = "lowercase", deny_unknown_fields)]
pub enum PacketReport {
    /// We joined a group from a Welcome.
    Joined {
        group: GroupSummary,
        inviter: Member,
    },
    /// A message.
    Message {
        group: GroupRef,
        sender: Member,
        text: String,
    },
    /// A proposal, to be committed.
    Proposal {
        group: GroupRef,
        sender: Member,
        proposal: String,
    },
    /// A commit: the group's next epoch.
    Commit {
        group: GroupRef,
        sender: Member,
        added: Vec<Member>,
        removed: Vec<Member>,
        /// The group's new settings, if this commit changed them.
        settings: Option<Settings>,
        /// Whether it removed us.
        removed_us: bool,
        epoch: u64,
    },
}

/// A member of a group, as a packet's sender or a commit's subject.
#[derive(Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub leaf: u32,
    /// `user/device`, or null for a credential that is not one.
    pub name: Option<String>,
    #[schemars(with = "FingerprintHex")]
    pub fingerprint: String,
}

impl From<&MemberInfo> for Member {
    fn from(m: &MemberInfo) -> Self {
        Member {
            leaf: m.leaf_index,
            name: m.name.as_ref().map(|n| n.to_string()),
            fingerprint: m.fingerprint.to_hex(),
        }
    }
}

/// A group's shared settings.
#[derive(Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub name: String,
    pub topic: String,
    /// The admins' keys.
    #[schemars(with = "Vec<FingerprintHex>")]
    pub admins: Vec<String>,
}

impl From<&GroupSettings> for Settings {
    fn from(s: &GroupSettings) -> Self {
        Settings {
            name: s.name.clone(),
            topic: s.topic.clone(),
            admins: s.admins.iter().map(hex::encode).collect(),
        }
    }
}
