//! ARM's HTTP surface: one fallback handler that authenticates, checks
//! `api-version`, parses the case-insensitive path into a [`route::Route`],
//! authorizes the operation and renders Azure-shaped JSON.

pub mod error;
mod query;
pub mod route;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{Value, json};

use crate::domain::{Core, catalog, model};
use crate::error::ArmError;
use crate::records::ProvState;
use crate::resource::{Address, Kind};
use query::{param, query};
use route::Route;

/// Builds the router.
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
    match dispatch(&core, &method, &uri, &headers, &body).await {
        Ok(r) => r,
        Err(e) => error::render(&core.config, e),
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

fn body_json(body: &Bytes) -> Result<Value, ArmError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ArmError::InvalidRequestContent(e.to_string()))
}

fn ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

fn put_status(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

fn deleted(existed: bool) -> Response {
    if existed {
        StatusCode::OK.into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

fn list(values: Vec<Value>) -> Response {
    ok(json!({ "value": values }))
}

fn action(kind: Kind, verb: &str) -> String {
    format!("{}/{verb}", kind.type_name())
}

async fn dispatch(
    core: &Core,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ArmError> {
    let route = route::parse(uri.path())?;
    if route == Route::MetadataEndpoints {
        return Ok(ok(model::endpoints(&core.config)));
    }
    if route == Route::MetadataImageAliases {
        return Ok((
            [(http::header::CONTENT_TYPE, "application/json")],
            crate::domain::catalog::IMAGE_ALIASES_JSON,
        )
            .into_response());
    }
    let q = query(uri);
    if param(&q, "api-version").is_none_or(str::is_empty) {
        return Err(ArmError::MissingApiVersion);
    }
    let principal = authenticate(core, headers).await?;
    tracing::Span::current().record("principal", principal.as_str());
    tracing::debug!(%principal, method = %method, path = uri.path(), "arm request");
    let sub_scope = |sub: &str| format!("/subscriptions/{sub}");
    let rg_scope = |sub: &str, rg: &str| format!("/subscriptions/{sub}/resourceGroups/{rg}");
    let res_scope = |sub: &str, rg: &str, kind: Kind, name: &str| {
        format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/{}/{name}",
            kind.type_name()
        )
    };
    const RG_ACTION: &str = "Microsoft.Resources/subscriptions/resourceGroups";
    const PROVIDERS_READ: &str = "Microsoft.Resources/subscriptions/providers/read";
    let m = method.clone();
    match (route, m) {
        (Route::Subscriptions, Method::GET) => {
            // As on Azure, a principal sees the subscriptions it holds any
            // role assignment in (at, above or below the subscription).
            let visible: Vec<Value> =
                if core.has_access_in(&principal, &core.config.subscription_id)? {
                    vec![model::subscription(&core.config)]
                } else {
                    Vec::new()
                };
            Ok(ok(json!({
                "count": {"type": "Total", "value": visible.len()},
                "value": visible,
            })))
        }
        (Route::Subscription { sub }, Method::GET) => {
            core.require_access_in(&principal, "Microsoft.Resources/subscriptions/read", &sub)?;
            Ok(ok(model::subscription(&core.config)))
        }
        (Route::At(Address::ResourceGroups { sub }), Method::GET) => {
            core.authorize(&principal, &format!("{RG_ACTION}/read"), &sub_scope(&sub))?;
            Ok(list(core.list_rgs(&sub)?.iter().map(model::rg).collect()))
        }
        (Route::At(Address::ResourceGroup { sub, rg }), m) => {
            core.check_sub(&sub)?;
            let scope = rg_scope(&sub, &rg);
            match m {
                Method::GET | Method::HEAD => {
                    core.authorize(&principal, &format!("{RG_ACTION}/read"), &scope)?;
                    if m == Method::HEAD {
                        core.require_rg(&sub, &rg)?;
                        return Ok(StatusCode::NO_CONTENT.into_response());
                    }
                    Ok(ok(model::rg(&core.require_rg(&sub, &rg)?)))
                }
                Method::PUT | Method::PATCH => {
                    core.authorize(&principal, &format!("{RG_ACTION}/write"), &scope)?;
                    let b = body_json(body)?;
                    if m == Method::PATCH {
                        core.require_rg(&sub, &rg)?;
                    }
                    let (r, created) = core.put_rg(&sub, &rg, &b).await?;
                    Ok((put_status(created), axum::Json(model::rg(&r))).into_response())
                }
                Method::DELETE => {
                    core.authorize(&principal, &format!("{RG_ACTION}/delete"), &scope)?;
                    let pending = core.delete_rg(&sub, &rg).await?;
                    if pending.is_empty() {
                        return Ok(StatusCode::OK.into_response());
                    }
                    // Azure's resource-group deletion: 202 + Location to poll.
                    let mut resp = StatusCode::ACCEPTED.into_response();
                    operation_results_location(core, &mut resp, &sub, &pending.join("~"), &q);
                    Ok(resp)
                }
                other => Err(ArmError::MethodNotAllowed(other.to_string())),
            }
        }
        (Route::At(Address::Collection { sub, rg, kind }), Method::GET) => {
            let scope = match &rg {
                Some(rg) => rg_scope(&sub, rg),
                None => sub_scope(&sub),
            };
            core.authorize(&principal, &action(kind, "read"), &scope)?;
            let rg = rg.as_deref();
            let values = match kind {
                Kind::Uami => core
                    .list_uamis(&sub, rg)?
                    .iter()
                    .map(|u| model::uami(&core.config, u))
                    .collect(),
                Kind::Vm => {
                    let mut out = Vec::new();
                    for v in core.list_vms(&sub, rg)? {
                        out.push(model::vm(
                            &core.config,
                            &v,
                            &core.attached_uamis(&v)?,
                            false,
                        ));
                    }
                    out
                }
                Kind::Vault => core
                    .list_vaults(&sub, rg)?
                    .iter()
                    .map(model::vault)
                    .collect(),
                Kind::Deployment => match rg {
                    Some(rg) => core
                        .list_deployments(&sub, rg)?
                        .iter()
                        .map(model::deployment)
                        .collect(),
                    // Subscription-scope deployments: misim runs none.
                    None => Vec::new(),
                },
                k => core
                    .list_network(&sub, rg, k)?
                    .iter()
                    .map(model::network)
                    .collect(),
            };
            Ok(list(values))
        }
        (
            Route::At(Address::Resource {
                sub,
                rg,
                kind,
                name,
            }),
            m,
        ) => {
            let scope = res_scope(&sub, &rg, kind, &name);
            let verb = match m {
                Method::GET => "read",
                // Writes are authorized by the domain (the same check a
                // template deployment makes).
                Method::PUT | Method::PATCH => "write",
                Method::DELETE => "delete",
                other => return Err(ArmError::MethodNotAllowed(other.to_string())),
            };
            if verb != "write" {
                core.authorize(&principal, &action(kind, verb), &scope)?;
            }
            resource(core, &principal, &m, &sub, &rg, kind, &name, &q, body).await
        }
        (
            Route::At(Address::Subnet {
                sub,
                rg,
                vnet,
                name,
            }),
            Method::GET,
        ) => {
            let vnet_id = res_scope(&sub, &rg, Kind::VirtualNetwork, &vnet);
            let read = "Microsoft.Network/virtualNetworks/subnets/read";
            match name {
                Some(n) => {
                    core.authorize(&principal, read, &format!("{vnet_id}/subnets/{n}"))?;
                    Ok(ok(core.get_subnet(&sub, &rg, &vnet, &n)?))
                }
                None => {
                    core.authorize(&principal, read, &vnet_id)?;
                    Ok(list(core.list_subnets(&sub, &rg, &vnet)?))
                }
            }
        }
        (Route::At(Address::DeploymentOperation { sub, rg, name, op }), Method::GET) => {
            let id = res_scope(&sub, &rg, Kind::Deployment, &name);
            core.authorize(
                &principal,
                "Microsoft.Resources/deployments/operationStatuses/read",
                &id,
            )?;
            Ok(ok(core.deployment_operation(&sub, &rg, &name, &op)?))
        }
        (Route::OperationResults { sub, ops }, Method::GET) => {
            core.check_sub(&sub)?;
            let mut done = true;
            for id in ops.split('~') {
                let o = core
                    .get_op(id)?
                    .ok_or_else(|| ArmError::UnknownPath(uri.path().to_owned()))?;
                authorize_operation(core, &principal, &sub, &o, uri.path())?;
                done &= o.status != crate::records::OpStatus::InProgress;
            }
            if done {
                return Ok(StatusCode::OK.into_response());
            }
            let mut resp = StatusCode::ACCEPTED.into_response();
            operation_results_location(core, &mut resp, &sub, &ops, &q);
            Ok(resp)
        }
        (Route::ComputeOperation { sub, op }, Method::GET) => {
            core.check_sub(&sub)?;
            let o = core
                .get_op(&op)?
                .ok_or_else(|| ArmError::UnknownPath(uri.path().to_owned()))?;
            authorize_operation(core, &principal, &sub, &o, uri.path())?;
            Ok(ok(model::operation(&o)))
        }
        (Route::Providers { sub }, Method::GET) => {
            core.require_access_in(&principal, PROVIDERS_READ, &sub)?;
            Ok(list(catalog::providers(&sub)))
        }
        (Route::Provider { sub, namespace }, Method::GET) => {
            core.require_access_in(&principal, PROVIDERS_READ, &sub)?;
            catalog::provider(&sub, &namespace)
                .map(ok)
                .ok_or(ArmError::InvalidResourceNamespace(namespace))
        }
        (Route::Locations { sub }, Method::GET) => {
            core.require_access_in(
                &principal,
                "Microsoft.Resources/subscriptions/locations/read",
                &sub,
            )?;
            Ok(list(catalog::locations(&sub)))
        }
        (Route::VmSizes { sub, .. }, Method::GET) => {
            core.authorize_subscription_read(
                &principal,
                "Microsoft.Compute/locations/vmSizes/read",
                &sub,
            )?;
            Ok(list(catalog::vm_sizes()))
        }
        (Route::ComputeSkus { sub }, Method::GET) => {
            // Resource SKUs are read like providers (any access in the
            // subscription): `az vm create` lists them to pick defaults.
            core.require_access_in(&principal, "Microsoft.Compute/skus/read", &sub)?;
            let filter = param(&q, "$filter").unwrap_or("");
            let location = query::quoted_after(filter, "location eq");
            Ok(list(catalog::compute_skus(location.as_deref())))
        }
        (
            Route::VmImages {
                sub,
                location,
                publisher,
                offer,
                sku,
                version,
                versions,
            },
            Method::GET,
        ) => {
            let level = match (&offer, &sku, versions) {
                (None, _, _) => "offers",
                (Some(_), None, _) | (Some(_), Some(_), false) => "offers/skus",
                (Some(_), Some(_), true) => "offers/skus/versions",
            };
            core.authorize_subscription_read(
                &principal,
                &format!("Microsoft.Compute/locations/publishers/artifacttypes/{level}/read"),
                &sub,
            )?;
            vm_images(
                &q,
                &sub,
                &location,
                &publisher,
                offer.as_deref(),
                sku.as_deref(),
                version.as_deref(),
                versions,
            )
        }
        (Route::At(Address::RoleAssignments { scope }), Method::GET) => {
            core.authorize(
                &principal,
                "Microsoft.Authorization/roleAssignments/read",
                &scope,
            )?;
            let filter = param(&q, "$filter").unwrap_or("");
            let (at_scope, who) = query::parse_assignment_filter(filter);
            let values = core
                .list_assignments(&scope, at_scope, who.as_deref())?
                .iter()
                .map(model::assignment)
                .collect();
            Ok(list(values))
        }
        (Route::At(Address::RoleAssignment { scope, name }), m) => match m {
            Method::GET => {
                core.authorize(
                    &principal,
                    "Microsoft.Authorization/roleAssignments/read",
                    &scope,
                )?;
                Ok(ok(model::assignment(&core.get_assignment(&scope, &name)?)))
            }
            Method::PUT => {
                core.authorize(
                    &principal,
                    "Microsoft.Authorization/roleAssignments/write",
                    &scope,
                )?;
                let b = body_json(body)?;
                let (a, created) = core.put_assignment(&scope, &name, &b).await?;
                Ok((put_status(created), axum::Json(model::assignment(&a))).into_response())
            }
            Method::DELETE => {
                core.authorize(
                    &principal,
                    "Microsoft.Authorization/roleAssignments/delete",
                    &scope,
                )?;
                match core.delete_assignment(&scope, &name).await? {
                    Some(a) => Ok(ok(model::assignment(&a))),
                    None => Ok(StatusCode::NO_CONTENT.into_response()),
                }
            }
            other => Err(ArmError::MethodNotAllowed(other.to_string())),
        },
        (Route::At(Address::RoleDefinitions { scope }), Method::GET) => {
            core.authorize(
                &principal,
                "Microsoft.Authorization/roleDefinitions/read",
                &scope,
            )?;
            let filter = param(&q, "$filter").unwrap_or("");
            let wanted = query::parse_role_name_filter(filter);
            let values = core
                .list_roles(&scope, wanted.as_deref())?
                .iter()
                .map(|r| model::role_definition(&core.config, r))
                .collect();
            Ok(list(values))
        }
        (Route::At(Address::RoleDefinition { scope, name }), m) => {
            let verb = match m {
                Method::GET => "read",
                Method::PUT => "write",
                Method::DELETE => "delete",
                other => return Err(ArmError::MethodNotAllowed(other.to_string())),
            };
            core.authorize(
                &principal,
                &format!("Microsoft.Authorization/roleDefinitions/{verb}"),
                &scope,
            )?;
            match m {
                Method::GET => {
                    let r = core
                        .role(&name)?
                        .ok_or(ArmError::RoleDefinitionNotFound(name))?;
                    Ok(ok(model::role_definition(&core.config, &r)))
                }
                Method::PUT => {
                    let b = body_json(body)?;
                    let (r, created) = core.put_custom_role(&principal, &scope, &name, &b).await?;
                    Ok((
                        put_status(created),
                        axum::Json(model::role_definition(&core.config, &r)),
                    )
                        .into_response())
                }
                _ => match core.delete_custom_role(&principal, &name).await? {
                    Some(r) => Ok(ok(model::role_definition(&core.config, &r))),
                    None => Ok(StatusCode::NO_CONTENT.into_response()),
                },
            }
        }
        (_, other) => Err(ArmError::MethodNotAllowed(other.to_string())),
    }
}

/// The image catalog: bare JSON arrays for lists (as Compute answers), one
/// object for a version. Lists honour `$orderby=name desc` and `$top`.
#[allow(clippy::too_many_arguments)]
fn vm_images(
    q: &[(String, String)],
    sub: &str,
    location: &str,
    publisher: &str,
    offer: Option<&str>,
    sku: Option<&str>,
    version: Option<&str>,
    versions: bool,
) -> Result<Response, ArmError> {
    let (offer, sku) = match (offer, sku, versions) {
        (None, _, _) => {
            return Ok(ok(Value::Array(catalog::list_names(
                sub, location, publisher, None,
            ))));
        }
        (Some(o), None, _) | (Some(o), Some(_), false) => {
            return Ok(ok(Value::Array(catalog::list_names(
                sub,
                location,
                publisher,
                Some(o),
            ))));
        }
        (Some(o), Some(s), true) => (o, s),
    };
    let image = catalog::image(publisher, offer, sku);
    match version {
        Some(v) => {
            let i = image.ok_or(ArmError::ImageNotFound)?;
            let v = i.version(v).ok_or(ArmError::ImageNotFound)?;
            Ok(ok(i.version_json(sub, location, v)))
        }
        None => {
            let Some(i) = image else {
                return Ok(ok(json!([])));
            };
            let mut names = i.versions_desc();
            let desc =
                param(q, "$orderby").is_some_and(|o| o.to_ascii_lowercase().contains("desc"));
            if !desc {
                names.reverse();
            }
            if let Some(top) = param(q, "$top").and_then(|t| t.parse::<usize>().ok()) {
                names.truncate(top);
            }
            Ok(ok(Value::Array(
                names
                    .into_iter()
                    .map(|v| i.version_entry(sub, location, v))
                    .collect(),
            )))
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    core: &Core,
    principal: &str,
    m: &Method,
    sub: &str,
    rg: &str,
    kind: Kind,
    name: &str,
    q: &[(String, String)],
    body: &Bytes,
) -> Result<Response, ArmError> {
    match *m {
        Method::GET => {
            let expand =
                param(q, "$expand").is_some_and(|e| e.eq_ignore_ascii_case("instanceView"));
            Ok(ok(core.read_resource(sub, rg, kind, name, expand)?))
        }
        Method::PUT if kind == Kind::Deployment => {
            let b = body_json(body)?;
            let (d, created) = core.put_deployment(principal, sub, rg, name, &b).await?;
            let api = param(q, "api-version").unwrap_or("2024-11-01");
            let status_url = format!(
                "{}{}/operationStatuses/{}?api-version={api}",
                core.config.public_url, d.id, d.operation_id
            );
            let mut resp = (put_status(created), axum::Json(model::deployment(&d))).into_response();
            let h = resp.headers_mut();
            if let Ok(v) = http::HeaderValue::from_str(&status_url) {
                h.insert("azure-asyncoperation", v);
            }
            h.insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
            Ok(resp)
        }
        Method::PUT | Method::PATCH => {
            let b = body_json(body)?;
            let (v, created) = core
                .write_resource(principal, sub, rg, kind, name, &b, m == Method::PATCH)
                .await?;
            let mut resp = (put_status(created), axum::Json(v)).into_response();
            if kind == Kind::Vm
                && let Ok(vm) = core.get_vm(sub, rg, name)
                && vm.state == ProvState::Updating
                && let Some(op) = &vm.op
            {
                async_headers(core, &mut resp, sub, &vm.location, op, q, false);
            }
            Ok(resp)
        }
        Method::DELETE if kind == Kind::Vm => match core.delete_vm(sub, rg, name).await? {
            None => Ok(deleted(false)),
            Some((true, _)) => Ok(deleted(true)),
            Some((false, op)) => {
                let loc = core
                    .get_vm(sub, rg, name)
                    .map(|v| v.location)
                    .unwrap_or_default();
                let mut resp = StatusCode::ACCEPTED.into_response();
                async_headers(core, &mut resp, sub, &loc, &op, q, true);
                Ok(resp)
            }
        },
        Method::DELETE => {
            let existed = match kind {
                Kind::Uami => core.delete_uami(sub, rg, name).await?,
                Kind::Vm => unreachable!("handled above"),
                Kind::Vault => core.delete_vault(sub, rg, name).await?,
                Kind::Deployment => core.delete_deployment(sub, rg, name).await?,
                k => core.delete_network(sub, rg, k, name).await?,
            };
            Ok(deleted(existed))
        }
        ref other => Err(ArmError::MethodNotAllowed(other.to_string())),
    }
}

/// An operation's status is as private as the resource it converges: polling
/// it needs the permission a GET of that resource needs (`{type}/read`,
/// evaluated at the resource's id, which works while the resource is being
/// deleted too), refused as that GET is (403 `AuthorizationFailed`). Azure
/// documents no rule of its own for status URLs, so misim mirrors the resource
/// GET. An operation outside the URL's subscription does not exist there.
fn authorize_operation(
    core: &Core,
    principal: &str,
    sub: &str,
    o: &crate::records::OpRecord,
    path: &str,
) -> Result<(), ArmError> {
    let id = misim_types::ResourceId::parse(&o.resource_id)
        .ok()
        .filter(|id| {
            id.subscription()
                .is_some_and(|s| s.eq_ignore_ascii_case(sub))
        })
        .ok_or_else(|| ArmError::UnknownPath(path.to_owned()))?;
    core.authorize(
        principal,
        &format!("{}/read", id.resource_type()),
        id.as_str(),
    )
}

/// Azure's long-running-operation headers for a VM operation still in progress:
/// `Azure-AsyncOperation` (compute's status URL), `Retry-After`, and for a
/// DELETE also `Location`.
fn async_headers(
    core: &Core,
    resp: &mut Response,
    sub: &str,
    location: &str,
    op: &str,
    q: &[(String, String)],
    with_location: bool,
) {
    let api = param(q, "api-version").unwrap_or("2024-11-01");
    let loc = if location.is_empty() {
        "eastus"
    } else {
        location
    };
    let url = format!(
        "{}/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{op}?api-version={api}",
        core.config.public_url
    );
    let h = resp.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(&url) {
        h.insert("azure-asyncoperation", v.clone());
        if with_location {
            h.insert(http::header::LOCATION, v);
        }
    }
    h.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
}

/// `Location` (+ `Retry-After`) of a resource-group deletion still in progress.
fn operation_results_location(
    core: &Core,
    resp: &mut Response,
    sub: &str,
    ops: &str,
    q: &[(String, String)],
) {
    let api = param(q, "api-version").unwrap_or("2024-11-01");
    let url = format!(
        "{}/subscriptions/{sub}/operationresults/{ops}?api-version={api}",
        core.config.public_url
    );
    let h = resp.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(&url) {
        h.insert(http::header::LOCATION, v);
    }
    h.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
}
