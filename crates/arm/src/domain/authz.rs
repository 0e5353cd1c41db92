//! RBAC at ARM's edge: the bootstrap assignments, decisions from the one
//! evaluator in [`crate::rbac`] over stored assignments and custom roles, and
//! the checks every request makes (plain, subscription-wide catalog reads,
//! linked authorization).

use misim_types::ResourceId;

use super::Core;
use crate::error::ArmError;
use crate::rbac::{self, AccessRequest, AssignmentView, Decision};
use crate::records::*;

/// The id of subscription `sub` as a scope.
fn sub_id(sub: &str) -> Result<ResourceId, ArmError> {
    ResourceId::parse(&format!("/subscriptions/{sub}"))
        .map_err(|e| ArmError::InvalidParameter(e.to_string()))
}

impl Core {
    /// Ensures the bootstrap assignments exist at the subscription scope.
    pub async fn bootstrap(&self) -> Result<(), ArmError> {
        let scope = format!("/subscriptions/{}", self.config.subscription_id);
        for (principal, role) in &self.config.bootstrap_assignments {
            let exists = self.assignments.all()?.iter().any(|(_, a)| {
                a.principal_id.eq_ignore_ascii_case(principal)
                    && a.role_guid.eq_ignore_ascii_case(role)
                    && a.scope.eq_ignore_ascii_case(&scope)
            });
            if exists {
                continue;
            }
            let name = self.ids.guid();
            let rec = AssignmentRecord {
                id: format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"),
                name,
                scope: scope.clone(),
                role_guid: role.to_ascii_lowercase(),
                role_definition_id: self.config.role_definition_id(role),
                principal_id: principal.clone(),
                principal_type: "ServicePrincipal".into(),
            };
            self.assignments
                .put(&rec.id.to_ascii_lowercase(), &rec)
                .await?;
            tracing::info!(principal, role, "bootstrap role assignment created");
        }
        Ok(())
    }

    /// Decides an access question.
    pub fn decide(
        &self,
        principal: &str,
        action: &str,
        scope: &ResourceId,
        data: bool,
    ) -> Result<Decision, ArmError> {
        self.decide_with(principal, action, scope, data, rbac::evaluate)
    }

    pub(crate) fn decide_with(
        &self,
        principal: &str,
        action: &str,
        scope: &ResourceId,
        data: bool,
        evaluate: fn(&AccessRequest<'_>, &[AssignmentView<'_>]) -> Decision,
    ) -> Result<Decision, ArmError> {
        let all = self.assignments.all()?;
        let custom = self.custom_roles.all()?;
        let custom_role = |guid: &str| {
            custom
                .iter()
                .find(|(k, _)| k == guid)
                .map(|(_, r)| &r.definition)
        };
        let now = self.clock.unix();
        let mut propagating = Vec::new();
        let views: Vec<AssignmentView<'_>> = all
            .iter()
            .map(|(_, a)| a)
            .filter(|a| a.principal_id.eq_ignore_ascii_case(principal))
            .filter(|a| match self.propagation.remaining(&a.id, now) {
                Some(left) => {
                    propagating.push(format!("{} (in effect in {left} s)", a.id));
                    false
                }
                None => true,
            })
            .filter_map(|a| {
                Some(AssignmentView {
                    id: &a.id,
                    principal_id: &a.principal_id,
                    scope: ResourceId::parse(&a.scope).ok()?,
                    role: rbac::role_by_guid(&a.role_guid).or_else(|| custom_role(&a.role_guid))?,
                })
            })
            .collect();
        let mut d = evaluate(
            &AccessRequest {
                principal_id: principal,
                action,
                scope,
                data,
            },
            &views,
        );
        if !d.allowed && !propagating.is_empty() {
            d.reason = format!(
                "{}; still propagating: {}",
                d.reason,
                propagating.join(", ")
            );
        }
        Ok(d)
    }

    /// Fails with 403 `AuthorizationFailed` unless `principal` may do `action` at `scope`.
    pub fn authorize(&self, principal: &str, action: &str, scope: &str) -> Result<(), ArmError> {
        let id = ResourceId::parse(scope).map_err(|e| ArmError::InvalidParameter(e.to_string()))?;
        let d = self.decide(principal, action, &id, false)?;
        Self::enforce(principal, action, scope, &d)
    }

    /// Like [`Core::authorize`] for reads of the subscription's catalogs
    /// (images, VM sizes, SKUs), which any assignment within the subscription
    /// whose role lists the action allows (see [`rbac::evaluate_subscription_read`]).
    pub fn authorize_subscription_read(
        &self,
        principal: &str,
        action: &str,
        sub: &str,
    ) -> Result<(), ArmError> {
        self.check_sub(sub)?;
        let id = sub_id(sub)?;
        let d = self.decide_with(
            principal,
            action,
            &id,
            false,
            rbac::evaluate_subscription_read,
        )?;
        Self::enforce(principal, action, id.as_str(), &d)
    }

    /// True when `principal` holds any role assignment at, above or within
    /// `sub`: what makes a subscription visible to it (`GET /subscriptions`,
    /// providers, locations), as on Azure.
    pub fn has_access_in(&self, principal: &str, sub: &str) -> Result<bool, ArmError> {
        if self.check_sub(sub).is_err() {
            return Ok(false);
        }
        let id = sub_id(sub)?;
        Ok(self.assignments.all()?.iter().any(|(_, a)| {
            a.principal_id.eq_ignore_ascii_case(principal)
                && ResourceId::parse(&a.scope).is_ok_and(|s| rbac::on_one_path(&id, &s))
        }))
    }

    /// Fails with 403 `AuthorizationFailed` unless `principal` has any access
    /// in `sub` (reported as a denial of `action`, as Azure words it).
    pub fn require_access_in(
        &self,
        principal: &str,
        action: &str,
        sub: &str,
    ) -> Result<(), ArmError> {
        self.check_sub(sub)?;
        if self.has_access_in(principal, sub)? {
            return Ok(());
        }
        tracing::info!(
            principal,
            action,
            sub,
            "authorization denied: no access in the subscription"
        );
        Err(ArmError::AuthorizationFailed {
            principal: principal.to_owned(),
            action: action.to_owned(),
            scope: format!("/subscriptions/{sub}"),
            explanation: format!("the principal has no role assignment in subscription {sub}"),
        })
    }

    /// Azure's linked authorization: the caller, allowed `action` at `scope`,
    /// must also be allowed each `(action, scope)` of the resources the
    /// request links to (identities a VM attaches, the subnet, NSG and public
    /// IP a NIC joins). Fails with 403 `LinkedAuthorizationFailed` naming
    /// every refused link.
    pub(crate) fn authorize_links(
        &self,
        principal: &str,
        action: &str,
        scope: &str,
        links: &[(&str, String)],
    ) -> Result<(), ArmError> {
        let mut refused: Vec<&(&str, String)> = Vec::new();
        for link in links {
            let (linked_action, linked_scope) = link;
            let id = ResourceId::parse(linked_scope).map_err(|e| {
                ArmError::InvalidParameter(format!(
                    "'{linked_scope}' is not a valid resource id: {e}"
                ))
            })?;
            let d = self.decide(principal, linked_action, &id, false)?;
            if !d.allowed {
                tracing::info!(principal, action = linked_action, scope = %linked_scope, reason = %d.reason, "linked authorization denied");
                refused.push(link);
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        Err(ArmError::LinkedAuthorizationFailed {
            principal: principal.to_owned(),
            action: action.to_owned(),
            scope: scope.to_owned(),
            linked_actions: refused
                .iter()
                .map(|(a, _)| *a)
                .collect::<Vec<_>>()
                .join(","),
            linked_scopes: refused
                .iter()
                .map(|(_, s)| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
        })
    }

    pub(crate) fn enforce(
        principal: &str,
        action: &str,
        scope: &str,
        d: &Decision,
    ) -> Result<(), ArmError> {
        if d.allowed {
            tracing::debug!(principal, action, scope, reason = %d.reason, "authorization allowed");
            return Ok(());
        }
        tracing::info!(principal, action, scope, reason = %d.reason, "authorization denied");
        Err(ArmError::AuthorizationFailed {
            principal: principal.to_owned(),
            action: action.to_owned(),
            scope: scope.to_owned(),
            explanation: d.reason.clone(),
        })
    }
}
