//! The VM-facing HTTP surface: IMDS endpoints and the App Service-style token endpoint
//! (docs/azure-protocol.md, IMDS). Plain HTTP, as on Azure.
//!
//! One fallback handler dispatches on the path so that every failure
//! (wrong verb, duplicated parameters, missing headers) answers in the shape
//! the endpoint's clients expect. Handlers reach IMDS only through the
//! service's narrow API (`crate::service::Imds`): `token` serves both token
//! endpoints (step 5 of the flow), `metadata` the rest.

use std::borrow::Cow;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use misim_runtime::serve::{LocalAddr, PeerAddr};
use serde::Serialize;
use serde_json::json;

use crate::service::{Imds, LiveVm};

mod metadata;
mod token;

/// How the one VM listener tells which VM a connection is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum By {
    /// The loopback address the connection was made to: each VM has its own
    /// (per-VM-address mode, the embedded sandbox).
    LocalAddress,
    /// The address the connection comes from: each VM container has its own
    /// (source-address mode, the compose sandbox).
    SourceAddress,
}

/// The VM a request is from, as [`tag_vm`] resolved it (absent: no VM).
#[derive(Clone)]
struct Caller(Arc<LiveVm>);

/// The router of the VMs' listener: every request is bound to the VM its
/// connection names ([`By`]), never to anything the caller sends. Fault
/// rules and throttling see the VM through [`misim_chaos::VmKey`].
///
/// One handler does the VM binding, the toolkit's checks (what
/// `Chaos::wrap` adds as a layer elsewhere) and the dispatch: this is the
/// hottest path misim serves, and each router layer costs a clone of the
/// layered service and a boxed future per request (docs/performance.md
/// finding 14).
pub(crate) fn vm_router(imds: Imds, by: By) -> Router {
    Router::new().fallback(serve_vm).with_state((imds, by))
}

/// A request on the VMs' listener: in its span (as `http_trace_layer` would
/// open it), bound to its VM, through the toolkit, answered.
async fn serve_vm(State((imds, by)): State<(Imds, By)>, req: Request) -> Response {
    use misim_runtime::telemetry;
    use tracing::Instrument as _;
    let span = telemetry::request_span("imds", &req);
    let started = tokio::time::Instant::now();
    async move {
        let req = tag_vm(&imds, by, req);
        let res = imds.chaos().around(req, |req| handle(&imds, req)).await;
        telemetry::log_response(res.status(), started.elapsed());
        res
    }
    .instrument(span)
    .await
}

/// What the VMs' listener answers a connection from another local user
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

/// Resolves the request's VM once, from its connection, for the toolkit
/// ([`misim_chaos::VmKey`]) and the handlers ([`Caller`]).
fn tag_vm(imds: &Imds, by: By, mut req: Request) -> Request {
    let found = match by {
        By::LocalAddress => req
            .extensions()
            .get::<LocalAddr>()
            .and_then(|l| imds.vm_by_local_address(l.0.ip())),
        By::SourceAddress => req
            .extensions()
            .get::<PeerAddr>()
            .and_then(|p| imds.vm_by_ip(p.0.ip()))
            .map(|vm| {
                (
                    crate::service::vm_key(&vm.record.meta.resource_id).into(),
                    vm,
                )
            }),
    };
    if let Some((key, vm)) = found {
        req.extensions_mut().insert(misim_chaos::VmKey(key));
        req.extensions_mut().insert(Caller(vm));
    }
    req
}

async fn handle(imds: &Imds, req: Request) -> Response {
    let vm = req.extensions().get::<Caller>().map(|c| c.0.clone());
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    match path {
        "/metadata/identity/oauth2/token" => {
            token::identity_token(imds, vm, req.method(), req.headers(), query).await
        }
        "/msi/token" => {
            token::app_service_token(imds, vm, req.method(), req.headers(), query).await
        }
        "/metadata/identity/info" => {
            metadata::identity_info(imds, req.method(), req.headers(), query)
        }
        "/metadata/versions" => metadata::versions(req.method(), req.headers()),
        p if p == "/metadata/instance" || p.starts_with("/metadata/instance/") => {
            metadata::instance(
                vm,
                p.trim_start_matches("/metadata/instance"),
                req.method(),
                req.headers(),
                query,
            )
        }
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "Not found"})),
    }
}

/// The content type of every JSON answer, built once rather than parsed per response.
const JSON: header::HeaderValue =
    header::HeaderValue::from_static("application/json; charset=utf-8");

fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_bytes(status, bytes),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A JSON answer from its serialised body.
fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, JSON)], body).into_response()
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
/// request). Decoded as `application/x-www-form-urlencoded` (`+` is a space, invalid UTF-8 is
/// replaced), borrowing from the query where nothing was escaped: a token request on the hot
/// path allocates only for its percent-encoded resource.
struct Query<'q>(Vec<(Cow<'q, str>, Cow<'q, str>)>);

impl<'q> Query<'q> {
    fn parse(q: &'q str) -> Result<Self, String> {
        let pairs: Vec<_> = form_urlencoded::parse(q.as_bytes()).collect();
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
            .map(|(_, v)| v.as_ref())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions() {
        use token::MIN_IDENTITY_API;
        assert!(api_version_ok(Some("2018-02-01"), MIN_IDENTITY_API));
        assert!(api_version_ok(Some("2025-04-07"), MIN_IDENTITY_API));
        assert!(api_version_ok(Some("2021-05-01-preview"), MIN_IDENTITY_API));
        assert!(!api_version_ok(Some("2017-12-01"), MIN_IDENTITY_API));
        assert!(!api_version_ok(Some("banana"), MIN_IDENTITY_API));
        assert!(!api_version_ok(Some("2018-02-01x"), MIN_IDENTITY_API));
        assert!(!api_version_ok(None, MIN_IDENTITY_API));
        // Non-ASCII input is refused, never a panic.
        assert!(!api_version_ok(Some("2018-02-0é"), MIN_IDENTITY_API));
        assert!(!api_version_ok(Some("é"), MIN_IDENTITY_API));
    }

    #[test]
    fn duplicated_parameters_are_rejected() {
        assert!(Query::parse("a=1&a=2").is_err());
        let q = Query::parse("a=1&b=&c=x%2Fy").unwrap();
        assert_eq!(q.get("b"), None);
        assert_eq!(q.get("c"), Some("x/y"));
    }
}
