//! Errors of the IMDS control plane ([`ImdsError`], answered over gRPC) and
//! of the token path ([`IssueError`], answered in each token endpoint's shape).

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
    /// The VMs' listener could not be bound.
    #[error("cannot bind the imds vm listener: {0}")]
    Bind(#[from] std::io::Error),
    /// Every loopback address of the VMs' range is in use.
    #[error("no free loopback address for another vm")]
    NoAddress,
    /// An identity's key or certificate is unusable.
    #[error("identity {client_id} has an unusable key: {reason}")]
    BadKey {
        /// The client id ARM pushed the identity under.
        client_id: String,
        /// What parsing the PEM key or certificate said.
        reason: String,
    },
}

impl ImdsError {
    /// The error class.
    pub fn code(&self) -> ErrorCode {
        match self {
            ImdsError::Invalid(_) | ImdsError::BadKey { .. } => ErrorCode::InvalidArgument,
            ImdsError::VmNotFound(_) => ErrorCode::NotFound,
            ImdsError::Store(_) | ImdsError::Bind(_) | ImdsError::NoAddress => ErrorCode::Internal,
        }
    }
}

impl From<ImdsError> for tonic::Status {
    /// An internal failure's details stay in IMDS's log: ARM, the caller,
    /// learns only that IMDS failed.
    fn from(e: ImdsError) -> Self {
        if e.code() == ErrorCode::Internal {
            tracing::error!(error = %e, "control request failed");
            return misim_proto::code_to_status(ErrorCode::Internal, "imds internal error");
        }
        misim_proto::code_to_status(e.code(), e.to_string())
    }
}

/// Why a token could not be obtained from Entra: what IMDS's Entra client
/// (`crate::entra`) makes of Entra's answer. Clone, because concurrent
/// requests for one token share one fetch and so its error
/// ([`TokenCache::get_or_fetch`](crate::domain::cache::TokenCache::get_or_fetch)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// Entra does not know the resource (AADSTS500011); Entra's text, which
    /// the VM's client sees.
    #[error("{0}")]
    InvalidResource(String),
    /// Entra refused for another client-side reason; Entra's text.
    #[error("{0}")]
    Rejected(String),
    /// Entra is unreachable or overloaded; for the log only.
    #[error("entra unavailable: {0}")]
    Unavailable(String),
    /// Anything else; for the log only.
    #[error("token issuance failed: {0}")]
    Internal(String),
}
