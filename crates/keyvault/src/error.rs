//! Key Vault errors and their Azure shape: `{"error":{"code","message"}}`.

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use misim_types::ErrorCode;

/// Something a Key Vault request could not do.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The request is malformed (bad name, body, api-version).
    #[error("{0}")]
    BadParameter(String),
    /// No, or an unacceptable, bearer token; answered with a challenge.
    #[error("{0}")]
    Unauthorized(String),
    /// RBAC said no; the full Azure message.
    #[error("{0}")]
    Forbidden(String),
    /// No vault of that name (ARM says so).
    #[error("vault {0} not found")]
    VaultNotFound(String),
    /// No such secret (or version).
    #[error(
        "A secret with (name/id) {0} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
    )]
    SecretNotFound(String),
    /// Unknown path.
    #[error("the requested path {0} does not exist")]
    NotFound(String),
    /// Wrong verb for a path.
    #[error("the requested method {0} is not allowed")]
    MethodNotAllowed(String),
    /// ARM or Entra is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] misim_store::StoreError),
}

impl KvError {
    /// The error class.
    pub fn code(&self) -> ErrorCode {
        match self {
            KvError::BadParameter(_) => ErrorCode::InvalidArgument,
            KvError::Unauthorized(_) => ErrorCode::Unauthenticated,
            KvError::Forbidden(_) => ErrorCode::PermissionDenied,
            KvError::VaultNotFound(_) | KvError::SecretNotFound(_) | KvError::NotFound(_) => {
                ErrorCode::NotFound
            }
            KvError::MethodNotAllowed(_) => ErrorCode::InvalidArgument,
            KvError::Unavailable(_) => ErrorCode::Unavailable,
            KvError::Store(_) => ErrorCode::Internal,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            KvError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            _ => misim_runtime::http_status(self.code()),
        }
    }

    fn azure_code(&self) -> &'static str {
        match self {
            KvError::BadParameter(_) => "BadParameter",
            KvError::Unauthorized(_) => "Unauthorized",
            KvError::Forbidden(_) => "Forbidden",
            KvError::VaultNotFound(_) => "VaultNotFound",
            KvError::SecretNotFound(_) => "SecretNotFound",
            KvError::NotFound(_) => "NotFound",
            KvError::MethodNotAllowed(_) => "MethodNotAllowed",
            KvError::Unavailable(_) => "ServiceUnavailable",
            KvError::Store(_) => "InternalError",
        }
    }
}

/// The error body without the challenge header (the HTTP layer adds it to 401s).
impl IntoResponse for KvError {
    fn into_response(self) -> Response {
        match self.code() {
            ErrorCode::Internal | ErrorCode::Unavailable => {
                tracing::error!(error = %self, "key vault request failed")
            }
            _ => tracing::debug!(error = %self, "key vault request refused"),
        }
        let mut error = serde_json::json!({"code": self.azure_code(), "message": self.to_string()});
        if matches!(self, KvError::Forbidden(_)) {
            error["innererror"] = serde_json::json!({"code": "ForbiddenByRbac"});
        }
        let body = serde_json::json!({ "error": error }).to_string();
        (
            self.status(),
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response()
    }
}
