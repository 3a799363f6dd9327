//! Exit codes: the one place where an error becomes a number a script can act on.

use mlschat_node::engine::EngineError;
use mlschat_node::kind::ErrorKind;
use mlschat_node::profile::ProfileError;
use mlschat_node::store::StoreError;
use mlschat_wire::packet::PacketError;
use mlschat_wire::quic::QuicError;

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  other failure (I/O, database)
  2  bad command line
  3  invalid input: malformed, truncated, tampered or forged bytes, the wrong kind of message,
     or a bad argument (an address, a fingerprint, an empty or too long text)
  4  unknown or ambiguous group, member or profile
  5  duplicate: already processed (a replay, or our own message); nothing changed
  6  wrong epoch: the message is for an epoch the group is not in (stale, too new, or a
     commit for an epoch another commit ended here: the group forked)
  7  not for us: a Welcome for someone else, a group we are not in, or we were removed
  8  passphrase missing or wrong
  9  delivery node: none set, unreachable, or it refused the request
 10  a contact is flagged (their key is not the one we were given: `mlschat contact verify`),
     or an invitation waits as a request
 11  not allowed: only the group's admins add members, remove others and change its settings
 12  busy: a daemon (or another command) holds the profile, and this verb cannot go through
     it; stop the daemon first";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failure = 1,
    InvalidInput = 3,
    Unknown = 4,
    Duplicate = 5,
    WrongEpoch = 6,
    NotForUs = 7,
    Passphrase = 8,
    Delivery = 9,
    Flagged = 10,
    NotAllowed = 11,
    Busy = 12,
}

impl Exit {
    /// Keeps the first failure.
    pub fn or(self, other: Exit) -> Exit {
        if self == Exit::Ok { other } else { self }
    }
}

impl From<ErrorKind> for Exit {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Failure => Exit::Failure,
            ErrorKind::InvalidInput => Exit::InvalidInput,
            ErrorKind::Unknown => Exit::Unknown,
            ErrorKind::Duplicate => Exit::Duplicate,
            ErrorKind::WrongEpoch => Exit::WrongEpoch,
            ErrorKind::NotForUs => Exit::NotForUs,
            ErrorKind::Passphrase => Exit::Passphrase,
            ErrorKind::Delivery => Exit::Delivery,
            ErrorKind::Flagged => Exit::Flagged,
            ErrorKind::NotAllowed => Exit::NotAllowed,
            ErrorKind::Busy => Exit::Busy,
        }
    }
}

/// The exit code of an error: its [`ErrorKind`], whether this process or the daemon failed.
pub fn exit_code(error: &anyhow::Error) -> Exit {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<ProfileError>() {
            return e.kind().into();
        }
        if let Some(e) = cause.downcast_ref::<EngineError>() {
            return e.kind().into();
        }
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            return e.kind().into();
        }
        if let Some(refused) = cause.downcast_ref::<crate::online::Refused>() {
            return refused.kind.into();
        }
        if let Some(e) = cause.downcast_ref::<PacketError>() {
            return match e {
                PacketError::Io(_) => Exit::Failure,
                _ => Exit::InvalidInput,
            };
        }
        if cause.downcast_ref::<QuicError>().is_some() {
            return Exit::Delivery;
        }
    }
    Exit::Failure
}
