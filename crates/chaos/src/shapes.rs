//! The answers Azure gives, per service and status: body shape, error code,
//! message and headers (docs/toolkit.md, Faults, cites the public sources;
//! docs/compatibility.md lists the texts no public source confirms).
//!
//! A rule may only ask for a status listed here, so every injected answer is
//! one a client can meet on Azure.

use http::{HeaderName, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::{ChaosError, Service};

/// The statuses each service can be made to answer.
pub(crate) fn statuses(service: Service) -> &'static [u16] {
    match service {
        Service::Imds => &[400, 404, 410, 429, 500, 503],
        Service::Entra => &[400, 401, 429, 500, 503],
        Service::Arm => &[400, 403, 409, 429, 500, 503],
        Service::KeyVault => &[401, 403, 429, 500, 503],
    }
}

pub(crate) fn check_status(service: Service, status: u16) -> Result<(), ChaosError> {
    let known = statuses(service);
    if known.contains(&status) {
        return Ok(());
    }
    let list: Vec<String> = known.iter().map(u16::to_string).collect();
    Err(ChaosError::invalid(format!(
        "status {status} is not one misim can answer for {service} (Azure's answers are known for {})",
        list.join(", ")
    )))
}

/// The seconds of `Retry-After` when a rule gives none (msal's own default).
const DEFAULT_RETRY_AFTER: u32 = 5;

/// What the answer depends on besides the rule.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cx<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    /// The identity the rule names, or the request's caller.
    pub(crate) principal: Option<&'a str>,
    /// Key Vault's bearer challenge (its `WWW-Authenticate` value).
    pub(crate) challenge: Option<&'a str>,
    /// `YYYY-MM-DD hh:mm:ssZ`, for Entra's `timestamp`.
    pub(crate) timestamp: String,
    /// A fresh GUID for trace and correlation ids.
    pub(crate) guid: String,
}

/// An answer ready to send, and its code and message for the log.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(HeaderName, String)>,
    pub(crate) body: Value,
    pub(crate) code: String,
    pub(crate) message: String,
}

impl Answer {
    fn new(status: u16, code: &str, message: String, body: Value) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers: Vec::new(),
            body,
            code: code.to_owned(),
            message,
        }
    }

    fn retry_after(mut self, status: u16, given: Option<u32>) -> Self {
        let secs = given.or((status == 429 || status == 503).then_some(DEFAULT_RETRY_AFTER));
        if let Some(s) = secs {
            self.headers.push((header::RETRY_AFTER, s.to_string()));
        }
        self
    }

    /// The HTTP response.
    pub(crate) fn into_response(self) -> axum::response::Response {
        let mut res = axum::response::Response::new(axum::body::Body::from(self.body.to_string()));
        *res.status_mut() = self.status;
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        res
    }
}

/// The answer of `service` for `status` (checked by [`check_status`]).
pub(crate) fn answer(
    service: Service,
    status: u16,
    aadsts: Option<u32>,
    retry_after: Option<u32>,
    cx: &Cx<'_>,
) -> Answer {
    match service {
        Service::Imds => imds(status, cx),
        Service::Entra if is_graph(cx.path) => graph(status, cx),
        Service::Entra => entra(status, aadsts, cx),
        Service::Arm => arm(status, retry_after, cx),
        Service::KeyVault => keyvault(status, retry_after, cx),
    }
    .retry_after(status, retry_after)
}

/// Graph lives on Entra's listener (`/v1.0/...`, `/beta/...`).
pub(crate) fn is_graph(path: &str) -> bool {
    path.starts_with("/v1.0/") || path.starts_with("/beta/")
}

/// IMDS's identity-endpoint error shape `{"error","error_description"}`
/// (its OpenAPI `IdentityErrorResponse`); texts from the VM token how-to.
fn imds(status: u16, _cx: &Cx<'_>) -> Answer {
    let (error, text) = match status {
        400 => ("invalid_request", "Identity not found"),
        404 => (
            "not_found",
            "IMDS is updating; retry with exponential back-off",
        ),
        410 => (
            "service_unavailable",
            "IMDS is being updated and will be available within 70 seconds",
        ),
        429 => (
            "too_many_requests",
            "Too many requests: the IMDS rate limit for this VM was exceeded",
        ),
        503 => (
            "service_unavailable",
            "The service is temporarily unavailable",
        ),
        _ => (
            "unknown",
            "Failed to retrieve token from the Active directory. For details see logs in C:\\WindowsAzure\\Logs\\Plugins\\Microsoft.Identity.MSI",
        ),
    };
    Answer::new(
        status,
        error,
        text.to_owned(),
        json!({"error": error, "error_description": text}),
    )
}

/// Entra's AADSTS errors: `error` and message per code (the error-code
/// reference), and the default code for a status.
fn aadsts_text(code: u32) -> (&'static str, &'static str) {
    match code {
        7000215 => (
            "invalid_client",
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        ),
        7000222 => (
            "invalid_client",
            "The provided client secret keys are expired.",
        ),
        700027 => (
            "invalid_client",
            "Client assertion failed signature validation.",
        ),
        700024 => (
            "invalid_client",
            "Client assertion is not within its valid time range.",
        ),
        700016 => (
            "unauthorized_client",
            "Application with identifier was not found in the directory.",
        ),
        500011 => (
            "invalid_resource",
            "The resource principal named was not found in the tenant.",
        ),
        70011 => (
            "invalid_scope",
            "The provided value for the input parameter 'scope' is not valid.",
        ),
        90002 => ("invalid_request", "Tenant not found."),
        50027 => ("invalid_request", "JWT token is invalid or malformed."),
        50196 => (
            "invalid_request",
            "The server terminated an operation because it encountered a client request loop.",
        ),
        50000 => (
            "server_error",
            "There was an error issuing a token or an issue with our sign-in service.",
        ),
        90033 => (
            "temporarily_unavailable",
            "A transient error has occurred. Please try again.",
        ),
        _ => (
            "invalid_request",
            "The request was refused (injected by misim).",
        ),
    }
}

fn entra_default_code(status: u16) -> u32 {
    match status {
        401 => 7000215,
        429 => 50196,
        500 => 50000,
        503 => 90033,
        _ => 700016,
    }
}

/// The OAuth2 error body Entra sends (the error-code reference's sample):
/// `error`, `error_description` with trace/correlation ids and timestamp,
/// integer `error_codes` (Rust's azure_identity reads them), `error_uri`.
fn entra(status: u16, aadsts: Option<u32>, cx: &Cx<'_>) -> Answer {
    let code = aadsts.unwrap_or_else(|| entra_default_code(status));
    let (error, text) = aadsts_text(code);
    let ts = &cx.timestamp;
    let id = &cx.guid;
    let description = format!(
        "AADSTS{code}: {text}\r\nTrace ID: {id}\r\nCorrelation ID: {id}\r\nTimestamp: {ts}"
    );
    let body = json!({
        "error": error,
        "error_description": description,
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": id,
        "correlation_id": id,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    Answer::new(status, error, format!("AADSTS{code}: {text}"), body)
}

/// Microsoft Graph's error shape `{"error":{"code","message","innerError"}}`.
fn graph(status: u16, cx: &Cx<'_>) -> Answer {
    let (code, text) = match status {
        400 => ("Request_BadRequest", "Invalid request."),
        401 => (
            "InvalidAuthenticationToken",
            "Access token validation failure.",
        ),
        429 => ("TooManyRequests", "Too many requests."),
        503 => (
            "serviceNotAvailable",
            "The service is temporarily unavailable.",
        ),
        _ => ("generalException", "An unspecified error has occurred."),
    };
    let body = json!({"error": {"code": code, "message": text,
        "innerError": {"date": cx.timestamp.replace(' ', "T"), "request-id": cx.guid, "client-request-id": cx.guid}}});
    Answer::new(status, code, text.to_owned(), body)
}

fn arm_error(status: u16, code: &str, message: String) -> Answer {
    let body = json!({"error": {"code": code, "message": message}});
    Answer::new(status, code, message, body)
}

/// ARM's `{"error":{"code","message"}}` (the ARM RPC error contract); the
/// throttling text from "Understand how ARM throttles requests", the
/// principal text from RBAC troubleshooting.
fn arm(status: u16, retry_after: Option<u32>, cx: &Cx<'_>) -> Answer {
    let who = cx
        .principal
        .unwrap_or("00000000-0000-0000-0000-000000000000");
    match status {
        400 => arm_error(
            400,
            "PrincipalNotFound",
            format!(
                "Principal {who} does not exist in the directory. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay. In this case, set the role assignment principalType property to a value, such as ServicePrincipal, User, or Group. See https://aka.ms/docs-principaltype"
            ),
        ),
        403 => arm_error(
            403,
            "AuthorizationFailed",
            format!(
                "The client '{who}' with object id '{who}' does not have authorization to perform action over scope '{}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                cx.path
            ),
        ),
        409 if cx.path.to_ascii_lowercase().contains("/roleassignments/") => arm_error(
            409,
            "RoleAssignmentExists",
            "The role assignment already exists.".into(),
        ),
        409 => arm_error(
            409,
            "Conflict",
            format!(
                "The request conflicts with an operation in progress on '{}'. Retry after it completes.",
                cx.path
            ),
        ),
        429 => {
            let kind = if cx.method.eq_ignore_ascii_case("GET") {
                "read"
            } else {
                "write"
            };
            let secs = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
            let mut a = arm_error(
                429,
                "SubscriptionRequestsThrottled",
                format!(
                    "Number of '{kind}' requests for subscription actor '{who}' exceeded. Please try again after '{secs}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling"
                ),
            );
            a.headers.push((
                HeaderName::from_static("x-ms-failure-cause"),
                "gateway".into(),
            ));
            a
        }
        503 => arm_error(
            503,
            "ServiceUnavailable",
            "The service is temporarily unavailable. Please retry.".into(),
        ),
        _ => arm_error(
            500,
            "InternalServerError",
            "Encountered internal server error. Please try again.".into(),
        ),
    }
}

/// Key Vault's `{"error":{"code","message"}}`: the 401 bearer challenge,
/// RBAC's 403 with `innererror`, and its throttling text (Key Vault
/// throttling guidance).
fn keyvault(status: u16, retry_after: Option<u32>, cx: &Cx<'_>) -> Answer {
    match status {
        401 => {
            let mut a = arm_error(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.".into(),
            );
            if let Some(c) = cx.challenge {
                a.headers.push((header::WWW_AUTHENTICATE, c.to_owned()));
            }
            a
        }
        403 => {
            let text = "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.";
            let body = json!({"error": {"code": "Forbidden", "message": text, "innererror": {"code": "ForbiddenByRbac"}}});
            Answer::new(403, "Forbidden", text.to_owned(), body)
        }
        429 => {
            let secs = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
            arm_error(
                429,
                "Throttled",
                format!("Rate limit is exceeded. Try again in {secs} seconds."),
            )
        }
        503 => arm_error(
            503,
            "ServiceUnavailable",
            "The service is temporarily unavailable.".into(),
        ),
        _ => arm_error(
            500,
            "InternalServerError",
            "An unexpected error occurred.".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> Cx<'static> {
        Cx {
            method: "GET",
            path: "/p",
            timestamp: "2026-01-01 00:00:00Z".into(),
            guid: "g".into(),
            ..Default::default()
        }
    }

    #[test]
    fn every_listed_status_has_an_answer_in_its_services_shape() {
        for s in [
            Service::Imds,
            Service::Entra,
            Service::Arm,
            Service::KeyVault,
        ] {
            for &st in statuses(s) {
                let a = answer(s, st, None, None, &cx());
                assert_eq!(a.status.as_u16(), st, "{s} {st}");
                match s {
                    Service::Imds => assert!(
                        a.body["error"].is_string() && a.body["error_description"].is_string()
                    ),
                    Service::Entra => {
                        assert!(a.body["error_codes"][0].is_u64(), "{}", a.body);
                        assert!(
                            a.body["error_description"]
                                .as_str()
                                .unwrap()
                                .starts_with("AADSTS")
                        );
                    }
                    _ => assert!(
                        a.body["error"]["code"].is_string()
                            && a.body["error"]["message"].is_string()
                    ),
                }
                let has_retry = a.headers.iter().any(|(h, _)| h == header::RETRY_AFTER);
                assert_eq!(has_retry, st == 429 || st == 503, "{s} {st}");
            }
        }
    }

    #[test]
    fn chosen_codes_and_headers() {
        let a = answer(Service::Entra, 401, Some(700027), None, &cx());
        assert_eq!(a.body["error"], "invalid_client");
        assert_eq!(a.body["error_codes"], json!([700027]));
        let a = answer(Service::Arm, 429, None, Some(17), &cx());
        assert_eq!(a.body["error"]["code"], "SubscriptionRequestsThrottled");
        assert!(a.headers.contains(&(header::RETRY_AFTER, "17".into())));
        assert!(
            a.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("'read'")
        );
        let c = Cx {
            path: "/subscriptions/s/providers/Microsoft.Authorization/roleAssignments/x",
            principal: Some("p1"),
            ..cx()
        };
        assert_eq!(
            answer(Service::Arm, 409, None, None, &c).code,
            "RoleAssignmentExists"
        );
        assert!(
            answer(Service::Arm, 400, None, None, &c)
                .message
                .starts_with("Principal p1 does not exist")
        );
        let c = Cx {
            challenge: Some("Bearer authorization=\"x\""),
            ..cx()
        };
        let a = answer(Service::KeyVault, 401, None, None, &c);
        assert!(
            a.headers
                .iter()
                .any(|(h, v)| h == header::WWW_AUTHENTICATE && v.starts_with("Bearer"))
        );
        assert_eq!(
            answer(Service::KeyVault, 403, None, None, &c).body["error"]["innererror"]["code"],
            "ForbiddenByRbac"
        );
        let g = Cx {
            path: "/v1.0/applications",
            ..cx()
        };
        assert_eq!(
            answer(Service::Entra, 429, None, None, &g).body["error"]["code"],
            "TooManyRequests"
        );
        assert!(
            check_status(Service::KeyVault, 400)
                .unwrap_err()
                .to_string()
                .contains("401, 403, 429, 500, 503")
        );
    }
}
