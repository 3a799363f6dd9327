//! Exit codes: the one place where an error becomes a number a script can act on.

use mlschat_node::engine::EngineError;
use mlschat_node::profile::ProfileError;
use mlschat_node::store::StoreError;
use mlschat_wire::packet::PacketError;
use mlschat_wire::quic::QuicError;

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  other failure (I/O, database)
  2  bad command line
  3  invalid input: malformed, truncated, tampered or forged bytes, or the wrong kind of message
  4  unknown or ambiguous group, member or profile
  5  duplicate: already processed (a replay, or our own message); nothing changed
  6  wrong epoch: the message is for an epoch the group is not in (stale, too new, or a
     commit for an epoch another commit ended here: the group forked)
  7  not for us: a Welcome for someone else, a group we are not in, or we were removed
  8  passphrase missing or wrong
  9  delivery node: none set, unreachable, or it refused the request
 10  a contact is flagged: their key is not the one we were given; check it with them";

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
}

impl Exit {
    /// Keeps the first failure.
    pub fn or(self, other: Exit) -> Exit {
        if self == Exit::Ok { other } else { self }
    }
}

pub fn exit_code(error: &anyhow::Error) -> Exit {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<ProfileError>() {
            return match e {
                ProfileError::Engine(e) => engine_code(e),
                ProfileError::Store(e) => store_code(e),
                ProfileError::Duplicate => Exit::Duplicate,
                ProfileError::UnknownGroup(_)
                | ProfileError::UnknownMember(_)
                | ProfileError::UnknownContact(_)
                | ProfileError::Ambiguous(..) => Exit::Unknown,
                ProfileError::NotOurGroup(_) => Exit::NotForUs,
                ProfileError::WrongKind(_) => Exit::InvalidInput,
                ProfileError::Packet(_) => Exit::Failure,
                ProfileError::Corrupt(_) => Exit::Failure,
                ProfileError::NoHome => Exit::Delivery,
                ProfileError::ContactFlagged(..) => Exit::Flagged,
                ProfileError::Broken(..) => Exit::Failure,
                ProfileError::Sealed(_) => Exit::Failure,
            };
        }
        if let Some(e) = cause.downcast_ref::<EngineError>() {
            return engine_code(e);
        }
        if let Some(e) = cause.downcast_ref::<PacketError>() {
            return match e {
                PacketError::Io(_) => Exit::Failure,
                _ => Exit::InvalidInput,
            };
        }
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            return store_code(e);
        }
        if let Some(refused) = cause.downcast_ref::<crate::online::Refused>() {
            return refused.exit();
        }
        if cause.downcast_ref::<QuicError>().is_some() {
            return Exit::Delivery;
        }
    }
    Exit::Failure
}

fn engine_code(error: &EngineError) -> Exit {
    match error {
        EngineError::Malformed(_) | EngineError::Forged(_) | EngineError::Invalid(_) => {
            Exit::InvalidInput
        }
        EngineError::WrongEpoch { .. } | EngineError::Fork { .. } => Exit::WrongEpoch,
        EngineError::Replay | EngineError::OwnMessage => Exit::Duplicate,
        EngineError::NotForUs(_) | EngineError::Inactive => Exit::NotForUs,
        EngineError::Storage(_) => Exit::Failure,
    }
}

fn store_code(error: &StoreError) -> Exit {
    match error {
        StoreError::NotFound(_) => Exit::Unknown,
        StoreError::PassphraseRequired | StoreError::WrongPassphrase => Exit::Passphrase,
        _ => Exit::Failure,
    }
}
