//! Errors of the IMDS control plane and token path.

use misim_types::ErrorCode;

/// Something IMDS could not do.
#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    /// A control request is malformed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The VM is unknown.
    #[error("vm {0} not found")]
    VmNotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] misim_store::StoreError),
    /// A per-VM listener could not be bound.
    #[error("cannot bind vm listener: {0}")]
    Bind(#[from] std::io::Error),
    /// An identity's key or certificate is unusable.
    #[error("identity {client_id} has an unusable key: {reason}")]
    BadKey {
        /// The identity.
        client_id: String,
        /// Why.
        reason: String,
    },
}

impl ImdsError {
    /// The error class.
    pub fn code(&self) -> ErrorCode {
        match self {
            ImdsError::Invalid(_) | ImdsError::BadKey { .. } => ErrorCode::InvalidArgument,
            ImdsError::VmNotFound(_) => ErrorCode::NotFound,
            ImdsError::Store(_) | ImdsError::Bind(_) => ErrorCode::Internal,
        }
    }
}

impl From<ImdsError> for tonic::Status {
    fn from(e: ImdsError) -> Self {
        if e.code() == ErrorCode::Internal {
            tracing::error!(error = %e, "control request failed");
        }
        misim_proto::code_to_status(e.code(), e.to_string())
    }
}
