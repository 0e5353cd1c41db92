//! Resource groups, resources of every [`Kind`], subnets, and the status
//! URLs of the operations they start.

use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};

use super::{Req, list, ok, put, retry_after};
use crate::domain::federated;
use crate::domain::{Deleted, Pending, Written, model};
use crate::error::ArmError;
use crate::records::{OpRecord, OpStatus};
use crate::resource::{FEDERATED_CREDENTIAL_TYPE, FEDERATED_CREDENTIALS, Kind};

const RG_ACTION: &str = "Microsoft.Resources/subscriptions/resourceGroups";

fn rg_scope(sub: &str, rg: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}")
}

/// `GET /subscriptions/{sub}/resourcegroups`.
pub(super) fn groups(r: &Req<'_>, sub: &str) -> Result<Response, ArmError> {
    r.only_get()?;
    r.authorize(
        &format!("{RG_ACTION}/read"),
        &format!("/subscriptions/{sub}"),
    )?;
    Ok(list(r.core.list_rgs(sub)?.iter().map(model::rg).collect()))
}

/// A resource group: GET, HEAD, PUT, PATCH, DELETE (202 + `Location` while
/// VM deletions are still running).
pub(super) async fn group(r: &Req<'_>, sub: &str, rg: &str) -> Result<Response, ArmError> {
    let core = r.core;
    core.check_sub(sub)?;
    let scope = rg_scope(sub, rg);
    match r.method {
        Method::GET | Method::HEAD => {
            r.authorize(&format!("{RG_ACTION}/read"), &scope)?;
            let group = core.require_rg(sub, rg)?;
            if r.method == Method::HEAD {
                return Ok(StatusCode::NO_CONTENT.into_response());
            }
            Ok(ok(model::rg(&group)))
        }
        Method::PUT | Method::PATCH => {
            r.authorize(&format!("{RG_ACTION}/write"), &scope)?;
            let b = r.json()?;
            if r.method == Method::PATCH {
                core.require_rg(sub, rg)?;
            }
            let (g, created) = core.put_rg(sub, rg, &b).await?;
            Ok(put(created, model::rg(&g)))
        }
        Method::DELETE => {
            r.authorize(&format!("{RG_ACTION}/delete"), &scope)?;
            let pending = core.delete_rg(sub, rg).await?;
            if pending.is_empty() {
                return Ok(StatusCode::OK.into_response());
            }
            // Azure's resource-group deletion: 202 + Location to poll.
            let mut resp = StatusCode::ACCEPTED.into_response();
            operation_results_location(r, &mut resp, sub, &pending.join("~"));
            Ok(resp)
        }
        _ => Err(r.method_not_allowed()),
    }
}

/// `GET` of the resources of one kind in a subscription or group.
pub(super) fn collection(
    r: &Req<'_>,
    sub: &str,
    rg: Option<&str>,
    kind: Kind,
) -> Result<Response, ArmError> {
    r.only_get()?;
    let scope = match rg {
        Some(rg) => rg_scope(sub, rg),
        None => format!("/subscriptions/{sub}"),
    };
    r.authorize(&kind.action("read"), &scope)?;
    Ok(list(r.core.list_resources(sub, rg, kind)?))
}

/// One resource: GET (`$expand=instanceView`), PUT, PATCH, DELETE. Writes are
/// authorized by the domain (the same check a template deployment makes).
pub(super) async fn resource(
    r: &Req<'_>,
    sub: &str,
    rg: &str,
    kind: Kind,
    name: &str,
) -> Result<Response, ArmError> {
    let core = r.core;
    match r.method {
        Method::GET => {
            r.authorize(&kind.action("read"), &kind.id(sub, rg, name))?;
            let expand = r
                .param("$expand")
                .is_some_and(|e| e.eq_ignore_ascii_case("instanceView"));
            Ok(ok(core.read_resource(sub, rg, kind, name, expand)?))
        }
        Method::PUT | Method::PATCH => {
            let b = r.json()?;
            let Written {
                body,
                created,
                pending,
            } = core
                .put_resource(
                    &r.principal,
                    sub,
                    rg,
                    kind,
                    name,
                    &b,
                    r.method == Method::PATCH,
                )
                .await?;
            let mut resp = put(created, body);
            if let Some(p) = pending {
                async_headers(r, &mut resp, sub, &p, false);
            }
            Ok(resp)
        }
        Method::DELETE => {
            r.authorize(&kind.action("delete"), &kind.id(sub, rg, name))?;
            match core.delete_resource(sub, rg, kind, name).await? {
                Deleted::Absent => Ok(StatusCode::NO_CONTENT.into_response()),
                Deleted::Done => Ok(StatusCode::OK.into_response()),
                Deleted::Pending(p) => {
                    let mut resp = StatusCode::ACCEPTED.into_response();
                    async_headers(r, &mut resp, sub, &p, true);
                    Ok(resp)
                }
            }
        }
        _ => Err(r.method_not_allowed()),
    }
}

/// `GET` of a virtual network's subnets, or of one.
pub(super) fn subnets(
    r: &Req<'_>,
    sub: &str,
    rg: &str,
    vnet: &str,
    name: Option<&str>,
) -> Result<Response, ArmError> {
    r.only_get()?;
    let vnet_id = Kind::VirtualNetwork.id(sub, rg, vnet);
    let read = "Microsoft.Network/virtualNetworks/subnets/read";
    match name {
        Some(n) => {
            r.authorize(read, &format!("{vnet_id}/subnets/{n}"))?;
            Ok(ok(r.core.get_subnet(sub, rg, vnet, n)?))
        }
        None => {
            r.authorize(read, &vnet_id)?;
            Ok(list(r.core.list_subnets(sub, rg, vnet)?))
        }
    }
}

/// A user-assigned identity's federated identity credentials: GET (one or
/// the list), PUT, DELETE, with the RBAC actions of their own type.
pub(super) async fn federated_credentials(
    r: &Req<'_>,
    sub: &str,
    rg: &str,
    identity: &str,
    name: Option<&str>,
) -> Result<Response, ArmError> {
    federated::api_version_ok(r.api_version())?;
    let core = r.core;
    let identity_id = Kind::Uami.id(sub, rg, identity);
    let action = |verb: &str| format!("{FEDERATED_CREDENTIAL_TYPE}/{verb}");
    let Some(name) = name else {
        r.only_get()?;
        r.authorize(&action("read"), &identity_id)?;
        let all = core.list_fics(sub, rg, identity)?;
        return Ok(list(all.iter().map(model::fic).collect()));
    };
    let scope = format!("{identity_id}/{FEDERATED_CREDENTIALS}/{name}");
    match r.method {
        Method::GET => {
            r.authorize(&action("read"), &scope)?;
            Ok(ok(model::fic(&core.get_fic(sub, rg, identity, name)?)))
        }
        Method::PUT => {
            r.authorize(&action("write"), &scope)?;
            let b = r.json()?;
            let (f, created) = core.put_fic(sub, rg, identity, name, &b).await?;
            Ok(put(created, model::fic(&f)))
        }
        Method::DELETE => {
            r.authorize(&action("delete"), &scope)?;
            Ok(if core.delete_fic(sub, rg, identity, name).await? {
                StatusCode::OK
            } else {
                StatusCode::NO_CONTENT
            }
            .into_response())
        }
        _ => Err(r.method_not_allowed()),
    }
}

/// A deployment's `operationStatuses`.
pub(super) fn deployment_operation(
    r: &Req<'_>,
    sub: &str,
    rg: &str,
    name: &str,
    op: &str,
) -> Result<Response, ArmError> {
    r.only_get()?;
    r.authorize(
        "Microsoft.Resources/deployments/operationStatuses/read",
        &Kind::Deployment.id(sub, rg, name),
    )?;
    Ok(ok(r.core.deployment_operation(sub, rg, name, op)?))
}

/// A resource group deletion's `Location`: 202 until every VM deletion it
/// waits for has finished, then 200.
pub(super) fn operation_results(r: &Req<'_>, sub: &str, ops: &str) -> Result<Response, ArmError> {
    r.only_get()?;
    r.core.check_sub(sub)?;
    let mut done = true;
    for id in ops.split('~') {
        let o = r
            .core
            .get_op(id)?
            .ok_or_else(|| ArmError::UnknownPath(r.path.to_owned()))?;
        authorize_operation(r, sub, &o)?;
        done &= o.status != OpStatus::InProgress;
    }
    if done {
        return Ok(StatusCode::OK.into_response());
    }
    let mut resp = StatusCode::ACCEPTED.into_response();
    operation_results_location(r, &mut resp, sub, ops);
    Ok(resp)
}

/// A VM operation's status (compute's `Azure-AsyncOperation`).
pub(super) fn compute_operation(r: &Req<'_>, sub: &str, op: &str) -> Result<Response, ArmError> {
    r.only_get()?;
    r.core.check_sub(sub)?;
    let o = r
        .core
        .get_op(op)?
        .ok_or_else(|| ArmError::UnknownPath(r.path.to_owned()))?;
    authorize_operation(r, sub, &o)?;
    Ok(ok(model::operation(&o)))
}

/// An operation's status is as private as the resource it converges: polling
/// it needs the permission a GET of that resource needs (`{type}/read`,
/// evaluated at the resource's id, which works while the resource is being
/// deleted too), refused as that GET is (403 `AuthorizationFailed`). Azure
/// documents no rule of its own for status URLs, so misim mirrors the resource
/// GET. An operation outside the URL's subscription does not exist there.
fn authorize_operation(r: &Req<'_>, sub: &str, o: &OpRecord) -> Result<(), ArmError> {
    let id = misim_types::ResourceId::parse(&o.resource_id)
        .ok()
        .filter(|id| {
            id.subscription()
                .is_some_and(|s| s.eq_ignore_ascii_case(sub))
        })
        .ok_or_else(|| ArmError::UnknownPath(r.path.to_owned()))?;
    r.authorize(&format!("{}/read", id.resource_type()), id.as_str())
}

/// Azure's long-running-operation headers for an operation still in
/// progress: `Azure-AsyncOperation` (the operation's status URL),
/// `Retry-After`, and for a DELETE also `Location`.
fn async_headers(r: &Req<'_>, resp: &mut Response, sub: &str, p: &Pending, with_location: bool) {
    let api = r.api_version();
    let url = match p {
        Pending::Compute { location, op } => {
            let loc = if location.is_empty() {
                "eastus"
            } else {
                location
            };
            format!(
                "/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{op}?api-version={api}"
            )
        }
        Pending::Deployment { id, op } => {
            format!("{id}/operationStatuses/{op}?api-version={api}")
        }
    };
    if let Some(v) = r.url(&url) {
        let h = resp.headers_mut();
        h.insert("azure-asyncoperation", v.clone());
        if with_location {
            h.insert(http::header::LOCATION, v);
        }
    }
    retry_after(resp);
}

/// `Location` (+ `Retry-After`) of a resource-group deletion still in progress.
fn operation_results_location(r: &Req<'_>, resp: &mut Response, sub: &str, ops: &str) {
    let url = format!(
        "/subscriptions/{sub}/operationresults/{ops}?api-version={}",
        r.api_version()
    );
    if let Some(v) = r.url(&url) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    retry_after(resp);
}
