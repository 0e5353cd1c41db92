//! Errors in Entra's shape (docs/azure-protocol.md, Entra: errors): `error`, `error_description`
//! with the AADSTS code and trace lines, `error_codes`, ids and timestamp.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};

use crate::{Entra, EntraError};

/// `YYYY-MM-DD hh:mm:ssZ` for Unix seconds (Entra's timestamp format).
pub(crate) fn format_timestamp(unix: i64) -> String {
    let t = misim_types::time::UtcDateTime::from_unix(unix);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// Renders `e` as Entra does; the correlation id echoes `client-request-id`.
pub(crate) fn oauth_error(entra: &Entra, headers: &HeaderMap, e: &EntraError) -> Response {
    let (error, code) = e.oauth();
    let status = match e.code() {
        misim_types::ErrorCode::Internal | misim_types::ErrorCode::Unavailable => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ if error == "invalid_client" => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    };
    let trace_id = entra.inner.ids.guid();
    let correlation_id = headers
        .get("client-request-id")
        .or_else(|| headers.get("x-ms-client-request-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| entra.inner.ids.guid());
    let timestamp = format_timestamp(entra.inner.clock.unix());
    let description = format!(
        "AADSTS{code}: {e}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
    );
    let body = serde_json::json!({
        "error": error,
        "error_description": description,
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("{}/error?code={code}", entra.inner.config.public_url),
    });
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(format_timestamp(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_timestamp(1_767_225_599), "2025-12-31 23:59:59Z");
        assert_eq!(format_timestamp(951_782_400), "2000-02-29 00:00:00Z");
    }
}
