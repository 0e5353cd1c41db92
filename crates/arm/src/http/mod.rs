//! ARM's HTTP surface: one fallback handler that checks `api-version`,
//! authenticates, parses the case-insensitive path into a [`route::Route`] and
//! hands the request to the handler of its route family (`resources`,
//! `authorization`, `catalog`), each of which authorizes the operation, calls
//! the domain and renders Azure-shaped JSON.

mod authorization;
mod catalog;
pub mod error;
mod query;
mod resources;
pub mod route;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use serde_json::{Value, json};

use crate::domain::{Core, model};
use crate::error::ArmError;
use crate::resource::Address;
use query::{param, query};
use route::Route;

/// Every ARM endpoint on one router: requests are parsed into a [`Route`] and handed to
/// the handler of its family.
pub(crate) fn router(core: Arc<Core>) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(core)
        .layer(axum::middleware::from_fn(
            misim_runtime::serve::run_to_completion,
        ))
        .layer(misim_runtime::telemetry::http_trace_layer("arm"))
}

async fn handle(
    State(core): State<Arc<Core>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match dispatch(&core, method, &uri, &headers, &body).await {
        Ok(r) => r,
        Err(e) => error::render(&core.config, e),
    }
}

/// An authenticated request, as the route handlers see it.
struct Req<'a> {
    core: &'a Arc<Core>,
    /// The caller's object id.
    principal: String,
    method: Method,
    path: &'a str,
    query: Vec<(String, String)>,
    body: &'a Bytes,
}

impl Req<'_> {
    /// The body as JSON (`{}` when empty).
    fn json(&self) -> Result<Value, ArmError> {
        if self.body.is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_slice(self.body)
            .map_err(|e| ArmError::InvalidRequestContent(e.to_string()))
    }

    fn param(&self, name: &str) -> Option<&str> {
        param(&self.query, name)
    }

    /// The `api-version` to put in status URLs handed out.
    fn api_version(&self) -> &str {
        self.param("api-version").unwrap_or("2024-11-01")
    }

    /// 405 unless the method is GET (the read-only routes).
    fn only_get(&self) -> Result<(), ArmError> {
        if self.method == Method::GET {
            Ok(())
        } else {
            Err(self.method_not_allowed())
        }
    }

    fn method_not_allowed(&self) -> ArmError {
        ArmError::MethodNotAllowed(self.method.to_string())
    }

    /// A `Location`, `Azure-AsyncOperation` or similar header value.
    fn url(&self, path_and_query: &str) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!("{}{path_and_query}", self.core.config.public_url)).ok()
    }

    fn authorize(&self, action: &str, scope: &str) -> Result<(), ArmError> {
        self.core.authorize(&self.principal, action, scope)
    }
}

async fn authenticate(core: &Core, headers: &HeaderMap) -> Result<String, ArmError> {
    let header = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(ArmError::AuthenticationMissing)?
        .to_str()
        .map_err(|_| {
            ArmError::InvalidToken("The authorization header is not valid text.".into())
        })?;
    let token = misim_token::bearer_token(header).ok_or_else(|| {
        ArmError::InvalidToken("The authentication scheme must be Bearer.".into())
    })?;
    core.authenticate(token).await
}

fn ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

/// 201 for a creation, 200 for an update.
fn put(created: bool, v: Value) -> Response {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, axum::Json(v)).into_response()
}

fn list(values: Vec<Value>) -> Response {
    ok(json!({ "value": values }))
}

/// `Retry-After: 1`, on every answer that asks the client to poll.
fn retry_after(resp: &mut Response) {
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
}

// long: the route table, one arm per route, each a call into its family's handler.
async fn dispatch(
    core: &Arc<Core>,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ArmError> {
    let route = route::parse(uri.path())?;
    // Read before any credential exists (`az cloud register`, image aliases).
    match route {
        Route::MetadataEndpoints => return Ok(ok(model::endpoints(&core.config))),
        Route::MetadataImageAliases => {
            return Ok((
                [(http::header::CONTENT_TYPE, "application/json")],
                crate::domain::catalog::IMAGE_ALIASES_JSON,
            )
                .into_response());
        }
        _ => {}
    }
    let q = query(uri);
    if param(&q, "api-version").is_none_or(str::is_empty) {
        return Err(ArmError::MissingApiVersion);
    }
    let principal = authenticate(core, headers).await?;
    tracing::Span::current().record("principal", principal.as_str());
    tracing::debug!(%principal, method = %method, path = uri.path(), "arm request");
    let r = Req {
        core,
        principal,
        method,
        path: uri.path(),
        query: q,
        body,
    };
    match route {
        Route::At(a) => match a {
            Address::ResourceGroups { sub } => resources::groups(&r, &sub),
            Address::ResourceGroup { sub, rg } => resources::group(&r, &sub, &rg).await,
            Address::Collection { sub, rg, kind } => {
                resources::collection(&r, &sub, rg.as_deref(), kind)
            }
            Address::Resource {
                sub,
                rg,
                kind,
                name,
            } => resources::resource(&r, &sub, &rg, kind, &name).await,
            Address::Subnet {
                sub,
                rg,
                vnet,
                name,
            } => resources::subnets(&r, &sub, &rg, &vnet, name.as_deref()),
            Address::FederatedCredential {
                sub,
                rg,
                identity,
                name,
            } => resources::federated_credentials(&r, &sub, &rg, &identity, name.as_deref()).await,
            Address::DeploymentOperation { sub, rg, name, op } => {
                resources::deployment_operation(&r, &sub, &rg, &name, &op)
            }
            Address::RoleAssignments { scope } => authorization::assignments(&r, &scope),
            Address::RoleAssignment { scope, name } => {
                authorization::assignment(&r, &scope, &name).await
            }
            Address::RoleDefinitions { scope } => authorization::definitions(&r, &scope),
            Address::RoleDefinition { scope, name } => {
                authorization::definition(&r, &scope, &name).await
            }
        },
        Route::OperationResults { sub, ops } => resources::operation_results(&r, &sub, &ops),
        Route::ComputeOperation { sub, op } => resources::compute_operation(&r, &sub, &op),
        Route::Subscriptions => catalog::subscriptions(&r),
        Route::Subscription { sub } => catalog::subscription(&r, &sub),
        Route::Providers { sub } => catalog::providers(&r, &sub),
        Route::Provider { sub, namespace } => catalog::provider(&r, &sub, namespace),
        Route::Locations { sub } => catalog::locations(&r, &sub),
        Route::VmSizes { sub, .. } => catalog::vm_sizes(&r, &sub),
        Route::ComputeSkus { sub } => catalog::compute_skus(&r, &sub),
        Route::VmImages {
            sub,
            location,
            publisher,
            offer,
            sku,
            version,
            versions,
        } => catalog::vm_images(
            &r,
            &sub,
            &catalog::ImageQuery {
                location: &location,
                publisher: &publisher,
                offer: offer.as_deref(),
                sku: sku.as_deref(),
                version: version.as_deref(),
                versions,
            },
        ),
        Route::MetadataEndpoints | Route::MetadataImageAliases => Err(ArmError::Internal(
            "metadata routes are answered before authentication".into(),
        )),
    }
}
