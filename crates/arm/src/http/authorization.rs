//! `Microsoft.Authorization` at any scope: role assignments and role
//! definitions (built-in and custom).

use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};

use super::{Req, list, ok, put, query};
use crate::domain::model;
use crate::error::ArmError;

const ASSIGNMENTS: &str = "Microsoft.Authorization/roleAssignments";

/// `GET {scope}/providers/Microsoft.Authorization/roleAssignments`, with the
/// `atScope()`, `principalId eq` and `assignedTo()` filters.
pub(super) fn assignments(r: &Req<'_>, scope: &str) -> Result<Response, ArmError> {
    r.only_get()?;
    r.authorize(&format!("{ASSIGNMENTS}/read"), scope)?;
    let filter = r.param("$filter").unwrap_or("");
    let (at_scope, who) = query::parse_assignment_filter(filter);
    let values = r
        .core
        .list_assignments(scope, at_scope, who.as_deref())?
        .iter()
        .map(model::assignment)
        .collect();
    Ok(list(values))
}

/// One role assignment: GET, PUT, DELETE.
pub(super) async fn assignment(r: &Req<'_>, scope: &str, name: &str) -> Result<Response, ArmError> {
    let core = r.core;
    match r.method {
        Method::GET => {
            r.authorize(&format!("{ASSIGNMENTS}/read"), scope)?;
            Ok(ok(model::assignment(&core.get_assignment(scope, name)?)))
        }
        Method::PUT => {
            r.authorize(&format!("{ASSIGNMENTS}/write"), scope)?;
            let b = r.json()?;
            let (a, created) = core.put_assignment(scope, name, &b).await?;
            Ok(put(created, model::assignment(&a)))
        }
        Method::DELETE => {
            r.authorize(&format!("{ASSIGNMENTS}/delete"), scope)?;
            match core.delete_assignment(scope, name).await? {
                Some(a) => Ok(ok(model::assignment(&a))),
                None => Ok(StatusCode::NO_CONTENT.into_response()),
            }
        }
        _ => Err(r.method_not_allowed()),
    }
}

/// `GET {scope}/providers/Microsoft.Authorization/roleDefinitions`, with the
/// `roleName eq` filter.
pub(super) fn definitions(r: &Req<'_>, scope: &str) -> Result<Response, ArmError> {
    r.only_get()?;
    r.authorize("Microsoft.Authorization/roleDefinitions/read", scope)?;
    let filter = r.param("$filter").unwrap_or("");
    let wanted = query::parse_role_name_filter(filter);
    let values = r
        .core
        .list_roles(scope, wanted.as_deref())?
        .iter()
        .map(|d| model::role_definition(&r.core.config, d))
        .collect();
    Ok(list(values))
}

/// One role definition: GET (built-in or custom), PUT and DELETE (custom).
pub(super) async fn definition(r: &Req<'_>, scope: &str, name: &str) -> Result<Response, ArmError> {
    let core = r.core;
    let verb = match r.method {
        Method::GET => "read",
        Method::PUT => "write",
        Method::DELETE => "delete",
        _ => return Err(r.method_not_allowed()),
    };
    r.authorize(
        &format!("Microsoft.Authorization/roleDefinitions/{verb}"),
        scope,
    )?;
    let render = |d| model::role_definition(&core.config, d);
    match r.method {
        Method::GET => {
            let d = core
                .role(name)?
                .ok_or_else(|| ArmError::RoleDefinitionNotFound(name.to_owned()))?;
            Ok(ok(render(&d)))
        }
        Method::PUT => {
            let b = r.json()?;
            let (d, created) = core.put_custom_role(&r.principal, scope, name, &b).await?;
            Ok(put(created, render(&d)))
        }
        _ => match core.delete_custom_role(&r.principal, name).await? {
            Some(d) => Ok(ok(render(&d))),
            None => Ok(StatusCode::NO_CONTENT.into_response()),
        },
    }
}
