//! The VM-facing HTTP surface: IMDS endpoints and the App Service-style token endpoint
//! (docs/azure-protocol.md, IMDS). Plain HTTP, as on Azure.
//!
//! One fallback handler dispatches on the path so that every failure
//! (wrong verb, duplicated parameters, missing headers) answers in the shape
//! the endpoint's clients expect.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, header};
use misim_runtime::serve::PeerAddr;
use serde::Serialize;
use serde_json::{Value, json};

use crate::domain::{SelectError, Selector, select};
use crate::service::{Imds, IssueError, LiveVm};

/// Oldest api-version of the identity endpoints.
const MIN_IDENTITY_API: &str = "2018-02-01";
/// Oldest api-version of the whole service.
const MIN_API: &str = "2017-03-01";
/// Oldest api-version of the App Service-style endpoint.
const MIN_APP_SERVICE_API: &str = "2019-08-01";
/// api-versions IMDS advertises, newest first
/// (<https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service#supported-api-versions>).
const API_VERSIONS: &[&str] = &[
    "2025-04-07",
    "2024-07-17",
    "2024-03-15",
    "2023-11-15",
    "2023-07-01",
    "2021-12-13",
    "2021-11-15",
    "2021-11-01",
    "2021-10-01",
    "2021-05-01",
    "2021-03-01",
    "2021-02-01",
    "2021-01-01",
    "2020-12-01",
    "2020-10-01",
    "2020-09-01",
    "2020-07-15",
    "2020-06-01",
    "2019-11-01",
    "2019-08-15",
    "2019-08-01",
    "2019-06-04",
    "2019-06-01",
    "2019-04-30",
    "2019-03-11",
    "2019-02-01",
    "2018-10-01",
    "2018-04-02",
    "2018-02-01",
    "2017-12-01",
    "2017-10-01",
    "2017-08-01",
    "2017-04-02",
    "2017-03-01",
];

#[derive(Clone)]
struct Ctx {
    imds: Imds,
    /// The VM this listener belongs to; `None` on the shared listener.
    vm: Option<Arc<str>>,
}

/// The router of one VM's own listener: it only ever sees that VM.
pub(crate) fn vm_router(imds: Imds, vm_key: Arc<str>) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(Ctx {
            imds,
            vm: Some(vm_key),
        })
        .layer(misim_runtime::telemetry::http_trace_layer("imds"))
}

/// What a per-VM listener answers a connection from another local user
/// (refused at accept, see `crate::peer`): a 403 in IMDS's OAuth2 error
/// shape rather than a reset, so the refused caller learns why.
pub(crate) fn refusal_router() -> Router {
    Router::new()
        .fallback(|| async {
            oauth_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "This IMDS endpoint serves only the user that owns the sandbox",
            )
        })
        .layer(misim_runtime::telemetry::http_trace_layer("imds"))
}

/// The shared router of source-address mode.
pub(crate) fn source_address_router(imds: Imds) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(Ctx { imds, vm: None })
        .layer(misim_runtime::telemetry::http_trace_layer("imds"))
}

async fn handle(State(ctx): State<Ctx>, req: Request) -> Response {
    let vm = match &ctx.vm {
        Some(key) => ctx.imds.vm(key),
        None => req
            .extensions()
            .get::<PeerAddr>()
            .and_then(|p| ctx.imds.vm_by_ip(p.0.ip())),
    };
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    match path {
        "/metadata/identity/oauth2/token" => {
            identity_token(&ctx.imds, vm, req.method(), req.headers(), query).await
        }
        "/msi/token" => app_service_token(&ctx.imds, vm, req.method(), req.headers(), query).await,
        "/metadata/identity/info" => identity_info(&ctx.imds, req.method(), req.headers(), query),
        "/metadata/versions" => versions(req.method(), req.headers()),
        p if p == "/metadata/instance" || p.starts_with("/metadata/instance/") => instance(
            vm,
            p.trim_start_matches("/metadata/instance"),
            req.method(),
            req.headers(),
            query,
        ),
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "Not found"})),
    }
}

fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            bytes,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The identity endpoint's error shape (docs/azure-protocol.md, IMDS: errors).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

/// The error shape of the other IMDS endpoints (docs/azure-protocol.md, IMDS: errors).
fn bad_request(message: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": format!("Bad request. {message}")}),
    )
}

/// Query parameters; a parameter given twice is an error (docs/azure-protocol.md, IMDS: token
/// request).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Result<Self, String> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(q).map_err(|_| "Query string is malformed".to_owned())?;
        for (i, (k, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(format!("Query parameter '{k}' is specified more than once"));
            }
        }
        Ok(Self(pairs))
    }

    /// A non-empty parameter.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// True for `YYYY-MM-DD[-suffix]` at or after `min`.
fn api_version_ok(v: Option<&str>, min: &str) -> bool {
    let Some(v) = v else { return false };
    // `get` rather than slicing: the value is caller input and may not be ASCII.
    let (Some(date), Some(rest)) = (v.get(..10), v.get(10..)) else {
        return false;
    };
    let b = date.as_bytes();
    let shape = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    shape && (rest.is_empty() || rest.starts_with('-')) && date >= min
}

fn has_metadata(h: &HeaderMap) -> bool {
    h.get("metadata").is_some_and(|v| v.as_bytes() == b"true")
}

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

async fn identity_token(
    imds: &Imds,
    vm: Option<Arc<LiveVm>>,
    method: &Method,
    h: &HeaderMap,
    q: &str,
) -> Response {
    let bad = |d: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_request", d);
    if method != Method::GET {
        return oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "The request method is not supported",
        );
    }
    if h.contains_key("x-forwarded-for") {
        return bad(
            "Request rejected: the X-Forwarded-For header is not allowed; IMDS does not support proxies",
        );
    }
    if !has_metadata(h) {
        return bad("Required metadata header not specified");
    }
    let q = match Query::parse(q) {
        Ok(q) => q,
        Err(e) => return bad(&e),
    };
    if !api_version_ok(q.get("api-version"), MIN_IDENTITY_API) {
        return bad(
            "api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds",
        );
    }
    let Some(resource) = q.get("resource") else {
        return bad("Required query variable 'resource' is missing");
    };
    let (client_id, object_id) = (q.get("client_id"), q.get("object_id"));
    let res_id = q.get("msi_res_id").or(q.get("mi_res_id"));
    let given = [
        client_id,
        object_id,
        q.get("msi_res_id"),
        q.get("mi_res_id"),
    ]
    .iter()
    .filter(|s| s.is_some())
    .count();
    if given > 1 {
        return bad("Only one of client_id, object_id, msi_res_id and mi_res_id may be specified");
    }
    let selector = match (client_id, object_id, res_id) {
        (Some(c), _, _) => Selector::ClientId(c),
        (_, Some(o), _) => Selector::ObjectId(o),
        (_, _, Some(r)) => Selector::ResourceId(r),
        _ => Selector::None,
    };
    let Some(vm) = vm else {
        return bad("Identity not found");
    };
    let identity = match select(&vm.identities, selector) {
        Ok(i) => i,
        Err(SelectError::NotFound) => return bad("Identity not found"),
        Err(SelectError::Ambiguous) => {
            return bad(
                "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request",
            );
        }
    };
    match imds.token(identity, resource).await {
        Ok(t) => {
            let now = imds.inner.clock.unix();
            let remaining = (t.expires_on - now).max(0).to_string();
            json_response(
                StatusCode::OK,
                &ImdsToken {
                    access_token: &t.access_token,
                    client_id: &identity.record.client_id,
                    expires_in: remaining.clone(),
                    expires_on: t.expires_on.to_string(),
                    ext_expires_in: remaining,
                    not_before: t.not_before.to_string(),
                    resource,
                    token_type: "Bearer",
                    object_id,
                    msi_res_id: res_id,
                },
            )
        }
        Err(IssueError::InvalidResource(d)) => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_resource", &d)
        }
        Err(IssueError::Rejected(d)) => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &d),
        Err(IssueError::Unavailable(d)) => {
            tracing::error!(error = %d, "entra unavailable");
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "Failed to retrieve token from the Active directory: the service is unavailable",
            )
        }
        Err(IssueError::Internal(d)) => {
            tracing::error!(error = %d, "token issuance failed");
            oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "Failed to retrieve token from the Active directory",
            )
        }
    }
}

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
fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn app_service_token(
    imds: &Imds,
    vm: Option<Arc<LiveVm>>,
    method: &Method,
    h: &HeaderMap,
    q: &str,
) -> Response {
    let err = |status: StatusCode, message: &str| {
        json_response(
            status,
            &json!({"statusCode": status.as_u16(), "message": message, "correlationId": imds.inner.ids.guid()}),
        )
    };
    if method != Method::GET {
        return err(
            StatusCode::METHOD_NOT_ALLOWED,
            "The request method is not supported",
        );
    }
    let Some(secret) = h.get("x-identity-header") else {
        return err(
            StatusCode::BAD_REQUEST,
            "The X-IDENTITY-HEADER header is required",
        );
    };
    let Some(vm) = vm else {
        return err(
            StatusCode::UNAUTHORIZED,
            "The X-IDENTITY-HEADER is not valid",
        );
    };
    if !secret_eq(secret.as_bytes(), vm.record.identity_header.as_bytes()) {
        return err(
            StatusCode::UNAUTHORIZED,
            "The X-IDENTITY-HEADER is not valid",
        );
    }
    let q = match Query::parse(q) {
        Ok(q) => q,
        Err(e) => return err(StatusCode::BAD_REQUEST, &e),
    };
    if !api_version_ok(q.get("api-version"), MIN_APP_SERVICE_API) {
        return err(
            StatusCode::BAD_REQUEST,
            "api-version is invalid or was not specified; use 2019-08-01",
        );
    }
    let Some(resource) = q.get("resource") else {
        return err(
            StatusCode::BAD_REQUEST,
            "The resource parameter is required",
        );
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
            return err(
                StatusCode::BAD_REQUEST,
                "Only one of client_id, principal_id, object_id and mi_res_id may be specified",
            );
        }
    };
    let identity = match select(&vm.identities, selector) {
        Ok(i) => i,
        Err(SelectError::NotFound) => return err(StatusCode::BAD_REQUEST, "Identity not found"),
        Err(SelectError::Ambiguous) => {
            return err(
                StatusCode::BAD_REQUEST,
                "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request",
            );
        }
    };
    match imds.token(identity, resource).await {
        Ok(t) => json_response(
            StatusCode::OK,
            &AppServiceToken {
                access_token: &t.access_token,
                expires_on: t.expires_on.to_string(),
                not_before: t.not_before.to_string(),
                resource,
                token_type: "Bearer",
                client_id: &identity.record.client_id,
            },
        ),
        Err(IssueError::InvalidResource(d) | IssueError::Rejected(d)) => {
            err(StatusCode::BAD_REQUEST, &d)
        }
        Err(IssueError::Unavailable(d)) => {
            tracing::error!(error = %d, "entra unavailable");
            err(
                StatusCode::SERVICE_UNAVAILABLE,
                "Failed to retrieve token: the identity service is unavailable",
            )
        }
        Err(IssueError::Internal(d)) => {
            tracing::error!(error = %d, "token issuance failed");
            err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Failed to retrieve token",
            )
        }
    }
}

fn identity_info(imds: &Imds, method: &Method, h: &HeaderMap, q: &str) -> Response {
    let bad = |d: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_request", d);
    if method != Method::GET {
        return oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "The request method is not supported",
        );
    }
    if !has_metadata(h) {
        return bad("Required metadata header not specified");
    }
    match Query::parse(q) {
        Ok(q) if api_version_ok(q.get("api-version"), MIN_IDENTITY_API) => json_response(
            StatusCode::OK,
            &json!({"tenantId": imds.inner.config.tenant_id}),
        ),
        Ok(_) => bad(
            "api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds",
        ),
        Err(e) => bad(&e),
    }
}

fn versions(method: &Method, h: &HeaderMap) -> Response {
    if method != Method::GET {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "Method not allowed"}),
        );
    }
    if !has_metadata(h) {
        return bad_request("Required metadata header not specified");
    }
    json_response(StatusCode::OK, &json!({"apiVersions": API_VERSIONS}))
}

/// The instance document: every leaf a string, missing values `""` (docs/azure-protocol.md, IMDS:
/// instance metadata).
fn instance_doc(vm: &LiveVm) -> Value {
    let m = &vm.record.meta;
    let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    let tags_list: Vec<Value> = m
        .tags
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    json!({
        "compute": {
            "azEnvironment": "AzurePublicCloud",
            "location": m.location,
            "name": m.name,
            "offer": m.offer,
            "osProfile": {"adminUsername": m.admin_username, "computerName": m.computer_name, "disablePasswordAuthentication": "true"},
            "osType": m.os_type,
            "platformFaultDomain": "0",
            "platformUpdateDomain": "0",
            "priority": "",
            "provider": "Microsoft.Compute",
            "publisher": m.publisher,
            "resourceGroupName": m.resource_group,
            "resourceId": m.resource_id,
            "sku": m.sku,
            "storageProfile": {"imageReference": {"offer": m.offer, "publisher": m.publisher, "sku": m.sku, "version": m.version, "id": ""}},
            "subscriptionId": m.subscription_id,
            "tags": tags.join(";"),
            "tagsList": tags_list,
            "userData": "",
            "version": m.version,
            "vmId": m.vm_id,
            "vmScaleSetName": "",
            "vmSize": m.vm_size,
            "zone": "",
        },
        "network": {
            "interface": [{
                "ipv4": {"ipAddress": [{"privateIpAddress": m.private_ip, "publicIpAddress": ""}], "subnet": [{"address": "", "prefix": ""}]},
                "ipv6": {"ipAddress": []},
                "macAddress": "",
            }],
        },
    })
}

fn instance(
    vm: Option<Arc<LiveVm>>,
    sub: &str,
    method: &Method,
    h: &HeaderMap,
    q: &str,
) -> Response {
    if method != Method::GET {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "Method not allowed"}),
        );
    }
    if h.contains_key("x-forwarded-for") {
        return bad_request("Requests with X-Forwarded-For are not allowed");
    }
    if !has_metadata(h) {
        return bad_request("Required metadata header not specified");
    }
    let q = match Query::parse(q) {
        Ok(q) => q,
        Err(e) => return bad_request(&e),
    };
    if !api_version_ok(q.get("api-version"), MIN_API) {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": "Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds",
                "newest-versions": &API_VERSIONS[..3],
            }),
        );
    }
    let text = match q.get("format") {
        None | Some("json") => false,
        Some("text") => true,
        Some(_) => return bad_request("Invalid format; use json or text"),
    };
    let Some(vm) = vm else {
        return json_response(StatusCode::NOT_FOUND, &json!({"error": "Not found"}));
    };
    let doc = instance_doc(&vm);
    let mut node = &doc;
    for seg in sub.split('/').filter(|s| !s.is_empty()) {
        let next = match node {
            Value::Object(m) => m.get(seg),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return json_response(StatusCode::NOT_FOUND, &json!({"error": "Not found"})),
        }
    }
    match (node, text) {
        (Value::String(s), true) => text_response(s.clone()),
        (Value::String(_), false) => bad_request("Leaf nodes are only supported with format=text"),
        (Value::Object(m), true) => text_response(
            m.iter()
                .map(|(k, v)| {
                    if v.is_string() {
                        k.clone()
                    } else {
                        format!("{k}/")
                    }
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        (Value::Array(a), true) => text_response(
            (0..a.len())
                .map(|i| format!("{i}/"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        (n, _) => json_response(StatusCode::OK, n),
    }
}

fn text_response(s: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from(s),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions() {
        assert!(api_version_ok(Some("2018-02-01"), MIN_IDENTITY_API));
        assert!(api_version_ok(Some("2025-04-07"), MIN_IDENTITY_API));
        assert!(api_version_ok(Some("2021-05-01-preview"), MIN_IDENTITY_API));
        assert!(!api_version_ok(Some("2017-12-01"), MIN_IDENTITY_API));
        assert!(!api_version_ok(Some("banana"), MIN_IDENTITY_API));
        assert!(!api_version_ok(Some("2018-02-01x"), MIN_IDENTITY_API));
        assert!(!api_version_ok(None, MIN_IDENTITY_API));
    }

    #[test]
    fn duplicated_parameters_are_rejected() {
        assert!(Query::parse("a=1&a=2").is_err());
        let q = Query::parse("a=1&b=&c=x%2Fy").unwrap();
        assert_eq!(q.get("b"), None);
        assert_eq!(q.get("c"), Some("x/y"));
    }
}

#[cfg(test)]
mod api_version_tests {
    use super::api_version_ok;

    #[test]
    fn api_versions() {
        assert!(api_version_ok(Some("2018-02-01"), "2018-02-01"));
        assert!(api_version_ok(Some("2025-04-07-preview"), "2018-02-01"));
        assert!(!api_version_ok(Some("2017-12-01"), "2018-02-01"));
        assert!(!api_version_ok(None, "2018-02-01"));
        // Non-ASCII input is refused, never a panic.
        assert!(!api_version_ok(Some("2018-02-0é"), "2018-02-01"));
        assert!(!api_version_ok(Some("é"), "2018-02-01"));
        assert!(!api_version_ok(Some("2018-02-01x"), "2018-02-01"));
    }
}
