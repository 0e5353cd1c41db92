//! Role assignments: creation with Azure's checks (role exists, scope is
//! assignable, principal exists in Entra, no duplicate), reads, deletion.

use misim_types::ResourceId;
use serde_json::Value;

use super::{Core, Put};
use crate::error::ArmError;
use crate::records::*;

impl Core {
    /// Grants `role` (GUID, roleDefinitionId or name) to `principal_id` at
    /// `scope` under a new assignment name: the gRPC form of a role
    /// assignment PUT, with the same checks.
    pub async fn grant(
        &self,
        principal_id: &str,
        role: &str,
        scope: &str,
    ) -> Result<AssignmentRecord, ArmError> {
        let def = self
            .resolve_role(role)?
            .ok_or_else(|| ArmError::RoleDefinitionDoesNotExist(role.to_owned()))?;
        let body = serde_json::json!({"properties": {
            "principalId": principal_id,
            "principalType": "ServicePrincipal",
            "roleDefinitionId": format!(
                "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{}",
                self.config.subscription_id, def.name
            ),
        }});
        let (rec, _) = self.put_assignment(scope, &self.ids.guid(), &body).await?;
        Ok(rec)
    }

    /// Creates a role assignment at `scope`.
    pub async fn put_assignment(
        &self,
        scope: &str,
        name: &str,
        body: &Value,
    ) -> Result<Put<AssignmentRecord>, ArmError> {
        let props = body
            .get("properties")
            .and_then(Value::as_object)
            .ok_or_else(|| ArmError::InvalidRequestContent("properties is required".into()))?;
        let text = |k: &str| {
            props
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    ArmError::InvalidRequestContent(format!("properties.{k} is required"))
                })
        };
        let principal_id = text("principalId")?;
        let role_definition_id = text("roleDefinitionId")?;
        let role_guid = role_definition_id
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let Some(role) = self.role(&role_guid)? else {
            return Err(ArmError::RoleDefinitionDoesNotExist(role_guid));
        };
        let principal_type = props
            .get("principalType")
            .and_then(Value::as_str)
            .unwrap_or("ServicePrincipal")
            .to_owned();
        let id = format!(
            "{}/providers/Microsoft.Authorization/roleAssignments/{name}",
            scope.trim_end_matches('/')
        );
        let key = id.to_ascii_lowercase();
        if let Some(old) = self.assignments.get(&key)? {
            if old.principal_id.eq_ignore_ascii_case(&principal_id) && old.role_guid == role_guid {
                return Ok((old, false));
            }
            return Err(ArmError::RoleAssignmentUpdateNotPermitted);
        }
        // A role is assignable only at or below one of its assignableScopes
        // (built-ins have "/"; a custom role names its subscriptions or groups).
        let target = ResourceId::parse(if scope.is_empty() { "/" } else { scope })
            .map_err(|e| ArmError::InvalidParameter(e.to_string()))?;
        let assignable = role
            .assignable_scopes
            .iter()
            .any(|s| ResourceId::parse(s).is_ok_and(|s| target.is_within(&s)));
        if !assignable {
            return Err(ArmError::ScopeDoesNotMatchRoleDefinition(role.role_name));
        }
        let dup = self.assignments.all()?.iter().any(|(_, a)| {
            a.principal_id.eq_ignore_ascii_case(&principal_id)
                && a.role_guid == role_guid
                && a.scope
                    .trim_end_matches('/')
                    .eq_ignore_ascii_case(scope.trim_end_matches('/'))
        });
        if dup {
            return Err(ArmError::RoleAssignmentExists);
        }
        if !self.peers.principal_exists(&principal_id).await? {
            return Err(ArmError::PrincipalNotFound {
                principal: principal_id,
                tenant: self.config.tenant_id.clone(),
            });
        }
        let rec = AssignmentRecord {
            id,
            name: name.to_owned(),
            scope: if scope.is_empty() {
                "/".into()
            } else {
                scope.to_owned()
            },
            role_guid,
            role_definition_id,
            principal_id,
            principal_type,
        };
        self.assignments.put(&key, &rec).await?;
        self.propagation.created(&rec.id, self.clock.unix());
        tracing::info!(id = %rec.id, principal = %rec.principal_id, role = %rec.role_guid, "role assignment created");
        Ok((rec, true))
    }

    pub(crate) fn assignment_key(scope: &str, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.Authorization/roleAssignments/{name}",
            scope.trim_end_matches('/')
        )
        .to_ascii_lowercase()
    }

    pub fn get_assignment(&self, scope: &str, name: &str) -> Result<AssignmentRecord, ArmError> {
        self.assignments
            .get(&Self::assignment_key(scope, name))?
            .ok_or_else(|| ArmError::RoleAssignmentNotFound(name.to_owned()))
    }

    /// Deletes a role assignment; returns it if it existed.
    pub async fn delete_assignment(
        &self,
        scope: &str,
        name: &str,
    ) -> Result<Option<AssignmentRecord>, ArmError> {
        Ok(self
            .assignments
            .remove(&Self::assignment_key(scope, name))
            .await?)
    }

    /// Lists role assignments relevant at `scope`: at or above it with
    /// `at_scope`, else also below it; optionally of one principal.
    pub fn list_assignments(
        &self,
        scope: &str,
        at_scope: bool,
        principal: Option<&str>,
    ) -> Result<Vec<AssignmentRecord>, ArmError> {
        let target =
            ResourceId::parse(scope).map_err(|e| ArmError::InvalidParameter(e.to_string()))?;
        Ok(self
            .assignments
            .all()?
            .iter()
            .map(|(_, a)| a)
            .filter(|a| principal.is_none_or(|p| a.principal_id.eq_ignore_ascii_case(p)))
            .filter(|a| match ResourceId::parse(&a.scope) {
                Ok(s) => target.is_within(&s) || (!at_scope && s.is_within(&target)),
                Err(_) => false,
            })
            .cloned()
            .collect())
    }
}
