//! Why a request did not go through, and which refusals pass by themselves.

use mlschat_wire::{ErrorCode, ErrorResponse};

use super::Lane;
use crate::profile::ProfileError;

/// Why a request did not go through.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The node refused, for a reason that will not pass by retrying.
    #[error("the delivery node refused: {detail} ({code:?})")]
    Refused { code: ErrorCode, detail: String },
    /// The connection went before the request was done. Texts stay queued and changes too:
    /// they go on after reconnecting.
    #[error("the connection to the delivery node was lost; the request goes on once it is back")]
    Disconnected,
    /// We are no longer a member of the group.
    #[error("we are no longer a member of this group")]
    Removed,
    /// A sync stopped before everything was read or sent: this lane failed (the log says why)
    /// and is tried again.
    #[error("not up to date: reading or sending for {0} failed and is tried again (see the log)")]
    Incomplete(Lane),
    /// The request was dropped, for the reason given.
    #[error("dropped: {0}")]
    Dropped(&'static str),
    /// The node answered with something that does not answer the request.
    #[error("the delivery node answered out of protocol: {0}")]
    Unexpected(String),
}

impl SyncError {
    pub(super) fn refused(e: &ErrorResponse) -> Self {
        let mut detail = String::from_utf8_lossy(e.detail.as_slice()).into_owned();
        if e.code == ErrorCode::InviteRequired {
            detail.push_str(
                "; give the invite token its operator gave you: `mlschat home set ADDRESS \
                 FINGERPRINT --invite TOKEN`",
            );
        }
        SyncError::Refused {
            code: e.code,
            detail,
        }
    }
}

/// Refusals that may pass by themselves: the request is tried again later. A quota refills
/// with time; an unknown code (a newer node's) is not retried.
pub(super) fn passes(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Internal
            | ErrorCode::Unavailable
            | ErrorCode::RateLimited
            | ErrorCode::Timeout
            | ErrorCode::ByteQuota
            | ErrorCode::GroupQuota
            | ErrorCode::RegistrationLimited
    )
}
