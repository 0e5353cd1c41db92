//! The VM-facing HTTP surface: IMDS endpoints and the App Service-style token endpoint
//! (docs/azure-protocol.md, IMDS). Plain HTTP, as on Azure.
//!
//! One fallback handler dispatches on the path so that every failure
//! (wrong verb, duplicated parameters, missing headers) answers in the shape
//! the endpoint's clients expect. Handlers reach IMDS only through the
//! service's narrow API (`crate::service::Imds`): `token` serves both token
//! endpoints (step 5 of the flow), `metadata` the rest.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use misim_runtime::serve::PeerAddr;
use serde::Serialize;
use serde_json::json;

use crate::service::Imds;

mod metadata;
mod token;

#[derive(Clone)]
struct Ctx {
    imds: Imds,
    /// The VM this listener belongs to; `None` on the shared listener.
    vm: Option<Arc<str>>,
}

/// The router of one VM's own listener: it only ever sees that VM.
/// Fault rules and throttling see the VM through [`misim_chaos::VmKey`].
pub(crate) fn vm_router(imds: Imds, vm_key: Arc<str>) -> Router {
    let chaos = imds.chaos().clone();
    let router = Router::new().fallback(handle).with_state(Ctx {
        imds,
        vm: Some(vm_key.clone()),
    });
    chaos
        .wrap(router)
        .layer(axum::Extension(misim_chaos::VmKey(vm_key)))
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
    let chaos = imds.chaos().clone();
    let router = Router::new().fallback(handle).with_state(Ctx {
        imds: imds.clone(),
        vm: None,
    });
    chaos
        .wrap(router)
        .layer(axum::middleware::map_request_with_state(imds, tag_vm))
        .layer(misim_runtime::telemetry::http_trace_layer("imds"))
}

/// Tells the toolkit which VM a shared-listener request is from.
async fn tag_vm(State(imds): State<Imds>, mut req: Request) -> Request {
    let vm = req
        .extensions()
        .get::<PeerAddr>()
        .and_then(|p| imds.vm_by_ip(p.0.ip()));
    if let Some(vm) = vm {
        let key: Arc<str> = crate::service::vm_key(&vm.record.meta.resource_id).into();
        req.extensions_mut().insert(misim_chaos::VmKey(key));
    }
    req
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
            token::identity_token(&ctx.imds, vm, req.method(), req.headers(), query).await
        }
        "/msi/token" => {
            token::app_service_token(&ctx.imds, vm, req.method(), req.headers(), query).await
        }
        "/metadata/identity/info" => {
            metadata::identity_info(&ctx.imds, req.method(), req.headers(), query)
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
