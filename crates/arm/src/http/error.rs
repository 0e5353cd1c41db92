//! The one place where [`ArmError`] becomes an HTTP response:
//! `{"error":{"code","message"}}` with the status of its class, plus the
//! `WWW-Authenticate` challenge on 401s (docs/azure-protocol.md, ARM: common rules).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use misim_types::ErrorCode;

use crate::config::Config;
use crate::error::ArmError;

/// Renders an error; logs server-side failures at ERROR (with the details
/// their fixed text leaves out) and client mistakes at DEBUG.
pub(crate) fn render(config: &Config, e: ArmError) -> Response {
    let status = match &e {
        ArmError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        other => misim_runtime::http_status(other.code()),
    };
    match e.code() {
        ErrorCode::Internal | ErrorCode::Unavailable => {
            tracing::error!(error = %e, detail = e.detail().as_deref(), "request failed")
        }
        _ => tracing::debug!(error = %e, code = e.arm_code(), "request rejected"),
    }
    let body = serde_json::json!({"error": {"code": e.arm_code(), "message": e.to_string()}});
    let mut resp = (status, axum::Json(body)).into_response();
    // The decision log (misim log) records RBAC's reasoning with the refusal.
    if let ArmError::AuthorizationFailed { explanation, .. } = &e {
        resp.extensions_mut()
            .insert(misim_chaos::Explanation(explanation.clone()));
    }
    if e.code() == ErrorCode::Unauthenticated {
        let challenge = format!(
            "Bearer authorization_uri=\"{}/{}\", error=\"invalid_token\", error_description=\"{}\"",
            config.entra_authority,
            config.tenant_id,
            e.to_string().replace('"', "'")
        );
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
        }
    }
    resp
}

impl IntoResponse for ArmError {
    /// Without a configuration the challenge names no authority; the router
    /// uses [`render`] instead.
    fn into_response(self) -> Response {
        render(&Config::default(), self)
    }
}
