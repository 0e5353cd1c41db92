//! The issuers' errors, mapped to the shared [`ErrorCode`] vocabulary.

use misim_store::StoreError;
use misim_token::TokenError;
use misim_types::ErrorCode;

/// Everything that can go wrong in misim-oidc.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A request is invalid (a subject, cluster name or lifetime).
    #[error("{0}")]
    InvalidArgument(String),
    /// No such issuer.
    #[error("no issuer {0}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Key generation or signing failed.
    #[error("signing failed: {0}")]
    Signing(#[from] TokenError),
}

impl OidcError {
    /// The error class.
    pub fn code(&self) -> ErrorCode {
        match self {
            OidcError::Config(_) | OidcError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            OidcError::NotFound(_) => ErrorCode::NotFound,
            OidcError::Store(_) | OidcError::Signing(_) => ErrorCode::Internal,
        }
    }
}

impl From<OidcError> for tonic::Status {
    fn from(e: OidcError) -> Self {
        misim_proto::code_to_status(e.code(), e.to_string())
    }
}
