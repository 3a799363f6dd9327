//! What can go wrong in an engine operation, and how OpenMLS's errors map to it (once, here).

use openmls::prelude::*;

/// What can go wrong in an engine operation. The variants are the distinctions a caller acts on;
/// the OpenMLS detail travels in the message.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The bytes are not a well-formed MLS structure of the kind expected.
    #[error("malformed input: {0}")]
    Malformed(String),
    /// A signature or MAC did not verify, or decryption failed: tampered or forged input.
    #[error("authentication failed: {0}")]
    Forged(String),
    /// The message belongs to another epoch than the group's current one (and not a kept past one).
    #[error("{}", wrong_epoch(*message, *group))]
    WrongEpoch { message: u64, group: u64 },
    /// A commit for an epoch we already left by another commit: the group has forked.
    #[error(
        "the group has forked: this commit is for epoch {epoch}, which another commit already \
         ended here; of the two, the one with the lower hash wins on every side (`mlschat \
         status` says so if ours lost), and members who applied the other must be added again"
    )]
    Fork { epoch: u64 },
    /// The message's key was already used: a replay.
    #[error("replayed message: its key was already used")]
    Replay,
    /// A message we sent ourselves came back to us.
    #[error("this is our own message")]
    OwnMessage,
    /// The input is for a group or a member that is not us.
    #[error("not addressed to us: {0}")]
    NotForUs(String),
    /// The group no longer accepts operations from us (we were removed, or left).
    #[error("we are no longer a member of this group")]
    Inactive,
    /// The operation is not allowed in the group's current state.
    #[error("invalid operation: {0}")]
    Invalid(String),
    /// The group's settings do not let this member do this (only admins add, remove others
    /// and change settings): refused when we would do it, rejected when a commit does.
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// The storage backend failed; the caller must reload the group from storage.
    #[error("storage: {0}")]
    Storage(String),
}

fn wrong_epoch(message: u64, group: u64) -> String {
    if message < group {
        format!(
            "wrong epoch: this message is from epoch {message} and the group is at epoch \
             {group}; it was sent before a change you have already applied, and can no longer \
             be read"
        )
    } else {
        format!(
            "wrong epoch: this message is from epoch {message} and the group is at epoch \
             {group}; receive the changes before it first"
        )
    }
}

pub(super) fn classify_process_error<E: std::fmt::Debug + std::fmt::Display>(
    error: ProcessMessageError<E>,
    message: u64,
    group: u64,
) -> EngineError {
    use openmls::framing::errors::{MessageDecryptionError as D, SecretTreeError as S};
    match error {
        ProcessMessageError::StorageError(e) => EngineError::Storage(format!("{e:?}")),
        ProcessMessageError::ValidationError(v) => match v {
            ValidationError::WrongEpoch | ValidationError::NoPastEpochData => {
                EngineError::WrongEpoch { message, group }
            }
            ValidationError::WrongGroupId => EngineError::NotForUs("another group".into()),
            ValidationError::UnableToDecrypt(D::SecretTreeError(S::SecretReuseError)) => {
                EngineError::Replay
            }
            ValidationError::UnableToDecrypt(D::SecretTreeError(S::TooDistantInThePast)) => {
                EngineError::Replay
            }
            ValidationError::UnableToDecrypt(e) => {
                EngineError::Forged(format!("cannot decrypt: {e}"))
            }
            ValidationError::InvalidSignature
            | ValidationError::InvalidMembershipTag
            | ValidationError::UnknownMember => EngineError::Forged(v.to_string()),
            v => EngineError::Invalid(v.to_string()),
        },
        ProcessMessageError::InvalidCommit(e) => {
            EngineError::Forged(format!("commit rejected: {e}"))
        }
        ProcessMessageError::GroupStateError(e) => EngineError::Invalid(e.to_string()),
        e => EngineError::Invalid(e.to_string()),
    }
}
