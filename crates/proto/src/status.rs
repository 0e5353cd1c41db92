//! Error mapping at the gRPC edge: the shared `ErrorCode` vocabulary to and from
//! `tonic::Status`, and `ProtocolError` for fields a peer sent empty or malformed.

use misim_types::ErrorCode;

/// Maps the shared error vocabulary to a gRPC status.
pub fn code_to_status(code: ErrorCode, message: impl Into<String>) -> tonic::Status {
    let c = match code {
        ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorCode::TooManyRequests => tonic::Code::ResourceExhausted,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::Internal => tonic::Code::Internal,
    };
    tonic::Status::new(c, message)
}

/// Maps a gRPC status received from a peer back to the shared vocabulary.
pub fn status_to_code(status: &tonic::Status) -> ErrorCode {
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ErrorCode::InvalidArgument,
        tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
        tonic::Code::PermissionDenied => ErrorCode::PermissionDenied,
        tonic::Code::NotFound => ErrorCode::NotFound,
        tonic::Code::AlreadyExists => ErrorCode::AlreadyExists,
        tonic::Code::FailedPrecondition | tonic::Code::Aborted => ErrorCode::FailedPrecondition,
        tonic::Code::ResourceExhausted => ErrorCode::TooManyRequests,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            ErrorCode::Unavailable
        }
        _ => ErrorCode::Internal,
    }
}

/// A message received over gRPC that does not satisfy the contract.
/// Validation happens on receipt, when converting to domain types.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A required field was empty.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A field held a value that cannot be parsed.
    #[error("invalid value {1:?} for field {0}")]
    Invalid(&'static str, String),
}

impl From<ProtocolError> for tonic::Status {
    fn from(e: ProtocolError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// Returns `value` or [`ProtocolError::Missing`] when it is empty.
pub fn required<'a>(field: &'static str, value: &'a str) -> Result<&'a str, ProtocolError> {
    if value.is_empty() {
        Err(ProtocolError::Missing(field))
    } else {
        Ok(value)
    }
}
