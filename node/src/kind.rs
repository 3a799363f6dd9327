//! What kind of failure an error is: the one thing a program acts on. Every error of the peer
//! has exactly one [`ErrorKind`], decided here; the CLI turns it into an exit code and the
//! daemon's API into its `kind` string, each in one place, so the same failure answers the same
//! whether the CLI carried it out itself or asked the daemon.

use crate::engine::EngineError;
use crate::profile::ProfileError;
use crate::store::StoreError;
use crate::sync::SyncError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Anything else (I/O, the database): see the message.
    Failure,
    /// Malformed, truncated, tampered or forged input, or the wrong kind of message or
    /// parameter.
    InvalidInput,
    /// No such (or more than one) group, member, contact, request or profile.
    Unknown,
    /// Already processed (a replay, or our own message): nothing changed.
    Duplicate,
    /// For an epoch the group is not in, or the group forked.
    WrongEpoch,
    /// For someone else, a group we are not in, or we were removed.
    NotForUs,
    /// The profile's passphrase is missing or wrong.
    Passphrase,
    /// The delivery node: none set, unreachable, or it refused.
    Delivery,
    /// A contact's key is not the one we were given, or a stranger's invitation.
    Flagged,
    /// The group's settings do not allow it: only admins add, remove and change settings.
    NotAllowed,
    /// Another process (a daemon) writes the profile, and this verb cannot go through it.
    Busy,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::Failure,
        ErrorKind::InvalidInput,
        ErrorKind::Unknown,
        ErrorKind::Duplicate,
        ErrorKind::WrongEpoch,
        ErrorKind::NotForUs,
        ErrorKind::Passphrase,
        ErrorKind::Delivery,
        ErrorKind::Flagged,
        ErrorKind::NotAllowed,
        ErrorKind::Busy,
    ];

    /// The name in the daemon's API (`error.data.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Failure => "failure",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unknown => "unknown",
            ErrorKind::Duplicate => "duplicate",
            ErrorKind::WrongEpoch => "wrong_epoch",
            ErrorKind::NotForUs => "not_for_us",
            ErrorKind::Passphrase => "passphrase",
            ErrorKind::Delivery => "delivery",
            ErrorKind::Flagged => "flagged",
            ErrorKind::NotAllowed => "not_allowed",
            ErrorKind::Busy => "busy",
        }
    }

    /// The kind named in an API answer; a name this version does not know is a failure.
    pub fn from_name(name: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .unwrap_or(ErrorKind::Failure)
    }
}

/// In the API by its name ([`ErrorKind::as_str`]).
impl serde::Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(ErrorKind::from_name(&name))
    }
}

impl schemars::JsonSchema for ErrorKind {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ErrorKind".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        schemars::json_schema!({
            "description": "What kind of failure an error is: the one thing a program acts on.",
            "enum": names,
        })
    }
}

impl EngineError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Malformed(_) | EngineError::Forged(_) | EngineError::Invalid(_) => {
                ErrorKind::InvalidInput
            }
            EngineError::WrongEpoch { .. } | EngineError::Fork { .. } => ErrorKind::WrongEpoch,
            EngineError::Replay | EngineError::OwnMessage => ErrorKind::Duplicate,
            EngineError::NotForUs(_) | EngineError::Inactive => ErrorKind::NotForUs,
            EngineError::Storage(_) => ErrorKind::Failure,
            EngineError::NotAllowed(_) => ErrorKind::NotAllowed,
        }
    }
}

impl StoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound(_) => ErrorKind::Unknown,
            StoreError::PassphraseRequired | StoreError::WrongPassphrase => ErrorKind::Passphrase,
            StoreError::InUse(_) => ErrorKind::Busy,
            _ => ErrorKind::Failure,
        }
    }
}

impl ProfileError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProfileError::Engine(e) => e.kind(),
            ProfileError::Store(e) => e.kind(),
            ProfileError::Duplicate => ErrorKind::Duplicate,
            ProfileError::UnknownGroup(_)
            | ProfileError::UnknownMember(_)
            | ProfileError::UnknownContact(_)
            | ProfileError::Ambiguous(..) => ErrorKind::Unknown,
            ProfileError::NotOurGroup(_) | ProfileError::NotMember(_) => ErrorKind::NotForUs,
            ProfileError::Receive(_)
            | ProfileError::Text(_)
            | ProfileError::Settings(_)
            | ProfileError::GroupName(_)
            | ProfileError::Place(_)
            | ProfileError::Contact(_)
            | ProfileError::Add(_)
            | ProfileError::NoRequest(_)
            | ProfileError::Log(_)
            | ProfileError::Input(_) => ErrorKind::InvalidInput,
            ProfileError::NoHome => ErrorKind::Delivery,
            ProfileError::ContactFlagged(..) | ProfileError::Request { .. } => ErrorKind::Flagged,
            ProfileError::Packet(_)
            | ProfileError::Corrupt(_)
            | ProfileError::Broken(..)
            | ProfileError::Sealed(_) => ErrorKind::Failure,
        }
    }
}

impl SyncError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SyncError::Profile(e) => e.kind(),
            SyncError::Refused { .. } | SyncError::Disconnected | SyncError::Unexpected(_) => {
                ErrorKind::Delivery
            }
            SyncError::Dropped(_) | SyncError::Incomplete(_) => ErrorKind::Failure,
            SyncError::Removed => ErrorKind::NotForUs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_its_name() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(kind.as_str()), kind);
        }
        assert_eq!(ErrorKind::from_name("newer"), ErrorKind::Failure);
    }
}
