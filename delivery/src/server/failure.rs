//! Every way a request ends in an error answer, in one place: internal detail is logged here
//! and the client gets a code and a short text.

use mlschat_grouplog::host::NotAnswered;
use mlschat_wire::frame::FrameError;
use mlschat_wire::{ErrorCode, ErrorResponse, Response};

use crate::guard::Refusal;
use crate::storage::StorageError;

/// A request that ends in an error response.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) code: ErrorCode,
    current_epoch: u64,
    detail: String,
}

impl Failure {
    pub(super) fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            current_epoch: 0,
            detail: detail.into(),
        }
    }

    pub(super) fn response(self) -> Response {
        Response::Error(self.error())
    }

    pub(super) fn error(self) -> ErrorResponse {
        ErrorResponse {
            code: self.code,
            current_epoch: self.current_epoch,
            detail: self.detail.into_bytes().into(),
        }
    }
}

impl From<ErrorCode> for Failure {
    fn from(code: ErrorCode) -> Self {
        Failure::new(code, format!("{code:?}"))
    }
}

impl From<StorageError> for Failure {
    /// The only place a storage failure becomes a wire error: logged here, not sent.
    fn from(e: StorageError) -> Self {
        tracing::error!(error = %e, "storage failure");
        Failure::new(ErrorCode::Internal, "internal error")
    }
}

impl From<mlschat_keypackages::StoreError> for Failure {
    fn from(e: mlschat_keypackages::StoreError) -> Self {
        tracing::error!(error = %e, "KeyPackage store failure");
        Failure::new(ErrorCode::Internal, "internal error")
    }
}

impl From<ErrorResponse> for Failure {
    fn from(e: ErrorResponse) -> Self {
        Failure {
            code: e.code,
            current_epoch: e.current_epoch,
            detail: String::from_utf8_lossy(e.detail.as_slice()).into_owned(),
        }
    }
}

impl From<NotAnswered<StorageError>> for Failure {
    /// A request [`host::answer`](mlschat_grouplog::host::answer) passed on is answered by the
    /// node itself: it never becomes a failure.
    fn from(e: NotAnswered<StorageError>) -> Self {
        match e {
            NotAnswered::Refused(e) => e.into(),
            NotAnswered::Failed(e) => e.into(),
            NotAnswered::Passed(request) => {
                tracing::error!(?request, "a request nobody answers");
                Failure::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        let detail = match r {
            Refusal::ConnectionsPerAddress | Refusal::Connections => "too many connections",
            Refusal::Requests => "too many requests; slow down",
            Refusal::Bytes => "you wrote more than your quota allows for now; wait",
            Refusal::Groups => "you created more groups than your quota allows for now; wait",
            Refusal::Registrations => "too many registrations from your address; wait",
            Refusal::NodeRegistrations => "the node takes too many registrations now; wait",
            Refusal::Unauthenticated => "authenticate first",
        };
        Failure::new(r.code(), detail)
    }
}

impl From<FrameError> for Failure {
    fn from(e: FrameError) -> Self {
        let code = match e {
            FrameError::TooLarge { .. } => ErrorCode::TooLarge,
            FrameError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            FrameError::Truncated | FrameError::Malformed(_) => ErrorCode::Malformed,
        };
        Failure::new(code, e.to_string())
    }
}
