//! The two token endpoints, one pipeline (step 5 of the flow): the Azure
//! IMDS endpoint `/metadata/identity/oauth2/token` and the App Service-style
//! `/msi/token` (docs/azure-protocol.md, IMDS: token request, App
//! Service-style endpoint).
//!
//! Each endpoint is a [`Flavour`]: how it checks the verb and headers, which
//! query parameters it reads, and how it renders a token or a refusal. The
//! steps between (query parsing, identity selection, the token from the
//! cache or Entra) are shared, and so is their order.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};
use serde::Serialize;
use serde_json::json;

use super::{Query, api_version_ok, has_metadata, json_bytes, json_response, oauth_error};
use crate::domain::cache::CachedToken;
use crate::domain::{LiveIdentity, SelectError, Selector, select};
use crate::error::IssueError;
use crate::service::{Imds, LiveVm};

/// Oldest api-version of the identity endpoints.
pub(super) const MIN_IDENTITY_API: &str = "2018-02-01";
/// Oldest api-version of the App Service-style endpoint.
const MIN_APP_SERVICE_API: &str = "2019-08-01";

const METHOD_NOT_SUPPORTED: &str = "The request method is not supported";
const AMBIGUOUS: &str = "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request";

/// Why a token request gets no token; each flavour words it in its own shape.
#[derive(Debug)]
enum Refusal {
    MethodNotAllowed,
    /// A malformed request, in the flavour's words.
    BadRequest(String),
    /// App Service: the `X-IDENTITY-HEADER` secret does not match the VM's.
    BadIdentityHeader,
    /// No identity of this VM matches (or the caller is no VM).
    NoIdentity(SelectError),
    /// Entra gave no token.
    Issue(IssueError),
}

/// What a token request asks for.
#[derive(Debug)]
struct Wanted<'q> {
    resource: &'q str,
    selector: Selector<'q>,
    /// Echoed in the IMDS response when given.
    object_id: Option<&'q str>,
    /// Echoed in the IMDS response when given (`msi_res_id` or `mi_res_id`).
    msi_res_id: Option<&'q str>,
}

/// One token endpoint's wire shape.
trait Flavour {
    /// Checks the verb and headers. The VM comes back when the flavour needs
    /// it before reading the query (App Service authenticates first).
    fn admit(
        vm: Option<Arc<LiveVm>>,
        method: &Method,
        h: &HeaderMap,
    ) -> Result<Option<Arc<LiveVm>>, Refusal>;
    /// The api-version, resource and identity selector from the query.
    fn read<'a>(q: &'a Query<'_>) -> Result<Wanted<'a>, Refusal>;
    /// The 200 answer.
    fn render(
        imds: &Imds,
        wanted: &Wanted<'_>,
        identity: &LiveIdentity,
        t: &CachedToken,
    ) -> Response;
    /// The error answer.
    fn refuse(imds: &Imds, r: Refusal) -> Response;
}

/// `/metadata/identity/oauth2/token`.
pub(super) async fn identity_token(
    imds: &Imds,
    vm: Option<Arc<LiveVm>>,
    method: &Method,
    h: &HeaderMap,
    q: &str,
) -> Response {
    serve::<ImdsEndpoint>(imds, vm, method, h, q).await
}

/// `/msi/token`.
pub(super) async fn app_service_token(
    imds: &Imds,
    vm: Option<Arc<LiveVm>>,
    method: &Method,
    h: &HeaderMap,
    q: &str,
) -> Response {
    serve::<AppServiceEndpoint>(imds, vm, method, h, q).await
}

/// The shared steps. Their order decides which refusal a request with
/// several faults gets, so it is fixed here for both flavours.
async fn serve<F: Flavour>(
    imds: &Imds,
    vm: Option<Arc<LiveVm>>,
    method: &Method,
    h: &HeaderMap,
    raw_query: &str,
) -> Response {
    let outcome = async {
        let vm = F::admit(vm, method, h)?;
        let query = Query::parse(raw_query).map_err(Refusal::BadRequest)?;
        let wanted = F::read(&query)?;
        let vm = vm.ok_or(Refusal::NoIdentity(SelectError::NotFound))?;
        let identity = select(&vm.identities, wanted.selector).map_err(Refusal::NoIdentity)?;
        // A new identity is not found until it settles (`set_identity_delay`).
        if imds.settling(identity).is_some() {
            return Err(Refusal::NoIdentity(SelectError::NotFound));
        }
        let token = imds
            .token(identity, wanted.resource)
            .await
            .map_err(Refusal::Issue)?;
        Ok(F::render(imds, &wanted, identity, &token))
    }
    .await;
    outcome.unwrap_or_else(|r| {
        if let Refusal::Issue(e @ (IssueError::Unavailable(_) | IssueError::Internal(_))) = &r {
            tracing::error!(error = %e, "no token from entra");
        }
        F::refuse(imds, r)
    })
}

struct ImdsEndpoint;

/// The IMDS answer's shape, which [`ImdsEndpoint::render`] writes by hand
/// (the unit test holds the two byte for byte).
#[cfg(test)]
#[derive(Serialize)]
struct ImdsToken<'a> {
    access_token: &'a str,
    client_id: &'a str,
    expires_in: String,
    expires_on: String,
    ext_expires_in: String,
    not_before: String,
    resource: &'a str,
    token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    msi_res_id: Option<&'a str>,
}

impl Flavour for ImdsEndpoint {
    fn admit(
        vm: Option<Arc<LiveVm>>,
        method: &Method,
        h: &HeaderMap,
    ) -> Result<Option<Arc<LiveVm>>, Refusal> {
        let bad = |d: &str| Err(Refusal::BadRequest(d.to_owned()));
        if method != Method::GET {
            return Err(Refusal::MethodNotAllowed);
        }
        if h.contains_key("x-forwarded-for") {
            return bad(
                "Request rejected: the X-Forwarded-For header is not allowed; IMDS does not support proxies",
            );
        }
        if !has_metadata(h) {
            return bad("Required metadata header not specified");
        }
        Ok(vm)
    }

    fn read<'a>(q: &'a Query<'_>) -> Result<Wanted<'a>, Refusal> {
        let bad = |d: &str| Err(Refusal::BadRequest(d.to_owned()));
        if !api_version_ok(q.get("api-version"), MIN_IDENTITY_API) {
            return bad(
                "api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds",
            );
        }
        let Some(resource) = q.get("resource") else {
            return bad("Required query variable 'resource' is missing");
        };
        let (client_id, object_id) = (q.get("client_id"), q.get("object_id"));
        let (msi_res_id, mi_res_id) = (q.get("msi_res_id"), q.get("mi_res_id"));
        let given = [client_id, object_id, msi_res_id, mi_res_id];
        if given.iter().flatten().count() > 1 {
            return bad(
                "Only one of client_id, object_id, msi_res_id and mi_res_id may be specified",
            );
        }
        let res_id = msi_res_id.or(mi_res_id);
        let selector = match (client_id, object_id, res_id) {
            (Some(c), _, _) => Selector::ClientId(c),
            (_, Some(o), _) => Selector::ObjectId(o),
            (_, _, Some(r)) => Selector::ResourceId(r),
            _ => Selector::None,
        };
        Ok(Wanted {
            resource,
            selector,
            object_id,
            msi_res_id: res_id,
        })
    }

    fn render(
        imds: &Imds,
        wanted: &Wanted<'_>,
        identity: &LiveIdentity,
        t: &CachedToken,
    ) -> Response {
        let remaining = (t.expires_on - imds.now()).max(0);
        match imds_token_json(wanted, &identity.record.client_id, t, remaining) {
            Ok(body) => json_bytes(StatusCode::OK, body),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }

    /// The identity endpoint's OAuth2 shape (docs/azure-protocol.md, IMDS: errors).
    fn refuse(_: &Imds, r: Refusal) -> Response {
        let bad = |d: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_request", d);
        match r {
            Refusal::MethodNotAllowed => oauth_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                METHOD_NOT_SUPPORTED,
            ),
            Refusal::BadRequest(d) => bad(&d),
            Refusal::NoIdentity(SelectError::NotFound) => bad("Identity not found"),
            // Never made by this flavour, which has no identity header; the
            // caller is no VM's, so it has no identity.
            Refusal::BadIdentityHeader => bad("Identity not found"),
            Refusal::NoIdentity(SelectError::Ambiguous) => bad(AMBIGUOUS),
            Refusal::Issue(IssueError::InvalidResource(d)) => {
                oauth_error(StatusCode::BAD_REQUEST, "invalid_resource", &d)
            }
            Refusal::Issue(IssueError::Rejected(d)) => bad(&d),
            Refusal::Issue(IssueError::Unavailable(_)) => oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "Failed to retrieve token from the Active directory: the service is unavailable",
            ),
            Refusal::Issue(IssueError::Internal(_)) => oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "Failed to retrieve token from the Active directory",
            ),
        }
    }
}

/// The IMDS token answer, as serde would write [`ImdsToken`] (same fields,
/// same order), but with the access token copied already escaped from the
/// cache: this is the answer of every cache hit, the hot path.
fn imds_token_json(
    wanted: &Wanted<'_>,
    client_id: &str,
    t: &CachedToken,
    remaining: i64,
) -> Result<Vec<u8>, std::io::Error> {
    use std::io::Write as _;
    let string = |b: &mut Vec<u8>, name: &str, v: &str| -> Result<(), std::io::Error> {
        write!(b, ",\"{name}\":")?;
        serde_json::to_writer(&mut *b, v).map_err(std::io::Error::other)
    };
    let mut b = Vec::with_capacity(t.access_token_json.len() + 320);
    b.extend_from_slice(b"{\"access_token\":");
    b.extend_from_slice(t.access_token_json.as_bytes());
    string(&mut b, "client_id", client_id)?;
    write!(
        b,
        ",\"expires_in\":\"{remaining}\",\"expires_on\":\"{}\",\"ext_expires_in\":\"{remaining}\",\"not_before\":\"{}\"",
        t.expires_on, t.not_before
    )?;
    string(&mut b, "resource", wanted.resource)?;
    b.extend_from_slice(b",\"token_type\":\"Bearer\"");
    if let Some(o) = wanted.object_id {
        string(&mut b, "object_id", o)?;
    }
    if let Some(r) = wanted.msi_res_id {
        string(&mut b, "msi_res_id", r)?;
    }
    b.push(b'}');
    Ok(b)
}

struct AppServiceEndpoint;

#[derive(Serialize)]
struct AppServiceToken<'a> {
    access_token: &'a str,
    expires_on: String,
    not_before: String,
    resource: &'a str,
    token_type: &'static str,
    client_id: &'a str,
}

/// Compares secrets without an early exit.
impl Flavour for AppServiceEndpoint {
    fn admit(
        vm: Option<Arc<LiveVm>>,
        method: &Method,
        h: &HeaderMap,
    ) -> Result<Option<Arc<LiveVm>>, Refusal> {
        if method != Method::GET {
            return Err(Refusal::MethodNotAllowed);
        }
        let Some(secret) = h.get("x-identity-header") else {
            return Err(Refusal::BadRequest(
                "The X-IDENTITY-HEADER header is required".into(),
            ));
        };
        match vm {
            Some(vm)
                if misim_token::constant_time_eq(
                    secret.as_bytes(),
                    vm.record.identity_header.as_bytes(),
                ) =>
            {
                Ok(Some(vm))
            }
            _ => Err(Refusal::BadIdentityHeader),
        }
    }

    fn read<'a>(q: &'a Query<'_>) -> Result<Wanted<'a>, Refusal> {
        let bad = |d: &str| Err(Refusal::BadRequest(d.to_owned()));
        if !api_version_ok(q.get("api-version"), MIN_APP_SERVICE_API) {
            return bad("api-version is invalid or was not specified; use 2019-08-01");
        }
        let Some(resource) = q.get("resource") else {
            return bad("The resource parameter is required");
        };
        // App Service ignores msi_res_id; principal_id and object_id are aliases
        // (docs/azure-protocol.md, IMDS: App Service-style endpoint).
        let sels = [
            q.get("client_id").map(Selector::ClientId),
            q.get("principal_id").map(Selector::ObjectId),
            q.get("object_id").map(Selector::ObjectId),
            q.get("mi_res_id").map(Selector::ResourceId),
        ];
        let mut given = sels.iter().flatten();
        let selector = match (given.next(), given.next()) {
            (None, _) => Selector::None,
            (Some(s), None) => *s,
            (Some(_), Some(_)) => {
                return bad(
                    "Only one of client_id, principal_id, object_id and mi_res_id may be specified",
                );
            }
        };
        Ok(Wanted {
            resource,
            selector,
            object_id: None,
            msi_res_id: None,
        })
    }

    fn render(_: &Imds, wanted: &Wanted<'_>, identity: &LiveIdentity, t: &CachedToken) -> Response {
        json_response(
            StatusCode::OK,
            &AppServiceToken {
                access_token: &t.access_token,
                expires_on: t.expires_on.to_string(),
                not_before: t.not_before.to_string(),
                resource: wanted.resource,
                token_type: "Bearer",
                client_id: &identity.record.client_id,
            },
        )
    }

    /// App Service's shape: `statusCode`, `message`, `correlationId`.
    fn refuse(imds: &Imds, r: Refusal) -> Response {
        let (status, message) = match &r {
            Refusal::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, METHOD_NOT_SUPPORTED),
            Refusal::BadRequest(m) => (StatusCode::BAD_REQUEST, m.as_str()),
            Refusal::BadIdentityHeader => (
                StatusCode::UNAUTHORIZED,
                "The X-IDENTITY-HEADER is not valid",
            ),
            Refusal::NoIdentity(SelectError::NotFound) => {
                (StatusCode::BAD_REQUEST, "Identity not found")
            }
            Refusal::NoIdentity(SelectError::Ambiguous) => (StatusCode::BAD_REQUEST, AMBIGUOUS),
            Refusal::Issue(IssueError::InvalidResource(d) | IssueError::Rejected(d)) => {
                (StatusCode::BAD_REQUEST, d.as_str())
            }
            Refusal::Issue(IssueError::Unavailable(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Failed to retrieve token: the identity service is unavailable",
            ),
            Refusal::Issue(IssueError::Internal(_)) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Failed to retrieve token",
            ),
        };
        json_response(
            status,
            &json!({"statusCode": status.as_u16(), "message": message, "correlationId": imds.correlation_id()}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written answer is what serde writes for [`ImdsToken`], byte
    /// for byte, with and without the echoed selectors and with strings that
    /// need escaping.
    #[test]
    fn the_imds_answer_is_byte_for_byte_serdes() {
        let t = CachedToken::new("eyJ0.a\"b\\c\u{1}é".into(), 100, 90, 86_500);
        for (object_id, msi_res_id) in [
            (None, None),
            (Some("o-1"), None),
            (None, Some("/subscriptions/s/x\"y")),
        ] {
            let wanted = Wanted {
                resource: "https://vault.azure.net/\u{7f}\n",
                selector: Selector::None,
                object_id,
                msi_res_id,
            };
            let remaining = 3_600;
            let ours = imds_token_json(&wanted, "client\"1", &t, remaining).unwrap();
            let serde = serde_json::to_vec(&ImdsToken {
                access_token: &t.access_token,
                client_id: "client\"1",
                expires_in: remaining.to_string(),
                expires_on: t.expires_on.to_string(),
                ext_expires_in: remaining.to_string(),
                not_before: t.not_before.to_string(),
                resource: wanted.resource,
                token_type: "Bearer",
                object_id,
                msi_res_id,
            })
            .unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(serde).unwrap()
            );
        }
    }
}
