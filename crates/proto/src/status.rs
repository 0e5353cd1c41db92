//! Error mapping at the gRPC edge: the shared `ErrorCode` vocabulary to and from
//! `tonic::Status`, an error's reason as a `google.rpc.ErrorInfo` detail
//! ([`with_reason`], [`reason_of`]), and `ProtocolError` for fields a peer
//! sent empty or malformed.
//!
//! The code says what class of failure a status is; the reason says which
//! failure, for a peer that must tell them apart. Messages are for people and
//! logs: no caller reads meaning out of them (docs/error-handling.md).

use misim_types::ErrorCode;
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo` domain of Entra's AADSTS codes: the reason is the code as
/// Entra publishes it (`AADSTS500011`), and the domain is the authority that
/// defines those codes.
pub const ENTRA_DOMAIN: &str = "login.microsoftonline.com";

/// `status` with a `google.rpc.ErrorInfo` detail naming `reason` in `domain`;
/// the code and message are kept (any other details and metadata are not:
/// call this on a fresh status).
pub fn with_reason(status: tonic::Status, domain: &str, reason: &str) -> tonic::Status {
    tonic::Status::with_error_details(
        status.code(),
        status.message(),
        ErrorDetails::with_error_info(reason, domain, std::collections::HashMap::new()),
    )
}

/// The reason of `status`'s `ErrorInfo` detail when its domain is `domain`;
/// `None` for a status without one (a transport failure, an older peer) or
/// from another domain.
pub fn reason_of(status: &tonic::Status, domain: &str) -> Option<String> {
    status
        .get_details_error_info()
        .filter(|info| info.domain == domain)
        .map(|info| info.reason)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_survives_the_wire_encoding() {
        let s = with_reason(
            code_to_status(ErrorCode::InvalidArgument, "AADSTS500011: no such resource"),
            ENTRA_DOMAIN,
            "AADSTS500011",
        );
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(s.message(), "AADSTS500011: no such resource");
        // As a peer receives it: code, message and details from the trailers.
        let mut trailers = http::HeaderMap::new();
        s.add_header(&mut trailers).unwrap();
        let received = tonic::Status::from_header_map(&trailers).unwrap();
        assert_eq!(
            reason_of(&received, ENTRA_DOMAIN).as_deref(),
            Some("AADSTS500011")
        );
        assert_eq!(reason_of(&received, "misim.arm"), None);
        // A status without details has no reason, whatever its message says.
        let plain = tonic::Status::invalid_argument("AADSTS500011: text only");
        assert_eq!(reason_of(&plain, ENTRA_DOMAIN), None);
    }
}
