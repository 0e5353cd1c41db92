//! Role definitions as ARM serves them: the built-ins (data, `rbac/builtin_roles.json`)
//! plus custom roles created with `PUT {scope}/providers/Microsoft.Authorization/roleDefinitions/{guid}`.
//! Both feed the one evaluator in [`crate::rbac`].

use misim_types::ResourceId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Core, Put};
use crate::error::ArmError;
use crate::rbac::{self, Permission, RoleDefinition};

/// A stored custom role definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomRoleRecord {
    /// The scope it was created at (as sent).
    pub scope: String,
    /// The definition (`custom` set).
    pub definition: RoleDefinition,
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

impl Core {
    /// A role definition by GUID: a built-in or a custom role.
    pub fn role(&self, guid: &str) -> Result<Option<RoleDefinition>, ArmError> {
        if let Some(r) = rbac::role_by_guid(guid) {
            return Ok(Some(r.clone()));
        }
        Ok(self
            .custom_roles
            .get(&guid.to_ascii_lowercase())?
            .map(|r| r.definition))
    }

    /// A role by GUID, full `roleDefinitionId` or display name (case-insensitive).
    pub fn resolve_role(&self, role: &str) -> Result<Option<RoleDefinition>, ArmError> {
        let guid = role.rsplit('/').next().unwrap_or(role);
        if is_guid(guid) {
            return self.role(guid);
        }
        if let Some(r) = rbac::role_by_name(role) {
            return Ok(Some(r.clone()));
        }
        Ok(self
            .custom_roles
            .all()?
            .iter()
            .map(|(_, r)| &r.definition)
            .find(|d| d.role_name.eq_ignore_ascii_case(role))
            .cloned())
    }

    /// Role definitions visible at `scope` (built-ins, then custom roles
    /// assignable at, above or below it), optionally by display name.
    pub fn list_roles(
        &self,
        scope: &str,
        role_name: Option<&str>,
    ) -> Result<Vec<RoleDefinition>, ArmError> {
        let target =
            ResourceId::parse(scope).map_err(|e| ArmError::InvalidParameter(e.to_string()))?;
        let mut out: Vec<RoleDefinition> = rbac::builtin_roles().to_vec();
        for (_, r) in self.custom_roles.all()?.iter() {
            let visible = r
                .definition
                .assignable_scopes
                .iter()
                .any(|s| ResourceId::parse(s).is_ok_and(|s| rbac::on_one_path(&target, &s)));
            if visible {
                out.push(r.definition.clone());
            }
        }
        out.retain(|r| role_name.is_none_or(|n| r.role_name.eq_ignore_ascii_case(n)));
        Ok(out)
    }

    /// Creates or updates a custom role definition.
    // long: Azure's checks in Azure's order, each with its own
    // message; split up, the order would be harder to see.
    pub async fn put_custom_role(
        &self,
        principal: &str,
        scope: &str,
        guid: &str,
        body: &Value,
    ) -> Result<Put<RoleDefinition>, ArmError> {
        if !is_guid(guid) {
            return Err(ArmError::InvalidParameter(format!(
                "The role definition ID '{guid}' is not valid. The role definition ID must be a GUID."
            )));
        }
        if rbac::role_by_guid(guid).is_some() {
            return Err(ArmError::InvalidParameter(format!(
                "The role definition '{guid}' is a built-in role and cannot be modified."
            )));
        }
        let props = body
            .get("properties")
            .and_then(Value::as_object)
            .ok_or_else(|| ArmError::InvalidRequestContent("properties is required".into()))?;
        let role_name = props
            .get("roleName")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                ArmError::InvalidRequestContent("properties.roleName is required".into())
            })?
            .to_owned();
        if let Some(t) = props.get("type").and_then(Value::as_str)
            && !t.eq_ignore_ascii_case("CustomRole")
        {
            return Err(ArmError::InvalidParameter(format!(
                "The role definition type '{t}' is not valid; only CustomRole can be created."
            )));
        }
        let permissions: Vec<Permission> = match props.get("permissions") {
            None | Some(Value::Null) => Vec::new(),
            Some(p) => serde_json::from_value(p.clone())
                .map_err(|e| ArmError::InvalidRequestContent(format!("permissions: {e}")))?,
        };
        // Before anything else reads them: every later authorization of an
        // assignee matches these patterns.
        rbac::validate_permissions(&permissions).map_err(ArmError::InvalidActionOrNotAction)?;
        let assignable_scopes: Vec<String> = match props.get("assignableScopes") {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| ArmError::InvalidRequestContent(format!("assignableScopes: {e}")))?,
            None => Vec::new(),
        };
        if assignable_scopes.is_empty() {
            return Err(ArmError::InvalidParameter(
                "The role definition must have at least one assignable scope.".into(),
            ));
        }
        for s in &assignable_scopes {
            ResourceId::parse(s).map_err(|e| {
                ArmError::InvalidParameter(format!("The assignable scope '{s}' is not valid: {e}"))
            })?;
            // Only built-in roles are assignable everywhere.
            if s.trim_end_matches('/').is_empty() {
                return Err(ArmError::InvalidParameter(
                    "The assignable scope '/' is not allowed for custom role definitions; name subscriptions, resource groups or resources.".into(),
                ));
            }
            // Making a role assignable at a scope is a write there too.
            self.authorize(
                principal,
                "Microsoft.Authorization/roleDefinitions/write",
                s,
            )?;
        }
        let key = guid.to_ascii_lowercase();
        let previous = self.custom_roles.get(&key)?;
        if let Some(old) = &previous {
            // Changing a role changes what every assignment of it grants, at
            // every scope it was assignable at: the writer must hold the
            // right there too, and no assignment may end up outside.
            for s in &old.definition.assignable_scopes {
                self.authorize(
                    principal,
                    "Microsoft.Authorization/roleDefinitions/write",
                    s,
                )?;
            }
            let inside = |scope: &str| {
                ResourceId::parse(scope).is_ok_and(|t| {
                    assignable_scopes
                        .iter()
                        .any(|s| ResourceId::parse(s).is_ok_and(|s| t.is_within(&s)))
                })
            };
            if let Some((_, a)) = self
                .assignments
                .all()?
                .iter()
                .find(|(_, a)| a.role_guid == key && !inside(&a.scope))
            {
                return Err(ArmError::InvalidParameter(format!(
                    "The role definition cannot be updated: its assignment '{}' at scope '{}' would be outside the new assignable scopes. Delete the assignment first.",
                    a.name, a.scope
                )));
            }
        }
        let name_taken = self
            .custom_roles
            .all()?
            .iter()
            .any(|(k, r)| *k != key && r.definition.role_name.eq_ignore_ascii_case(&role_name))
            || rbac::role_by_name(&role_name).is_some();
        if name_taken {
            return Err(ArmError::RoleDefinitionWithSameNameExists(role_name));
        }
        let definition = RoleDefinition {
            name: key.clone(),
            role_name,
            description: props
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            assignable_scopes,
            permissions,
            custom: true,
        };
        let created = previous.is_none();
        let rec = CustomRoleRecord {
            scope: scope.to_owned(),
            definition: definition.clone(),
        };
        self.custom_roles.put(&key, &rec).await?;
        tracing::info!(guid = %key, role = %definition.role_name, "custom role definition written");
        Ok((definition, created))
    }

    /// Deletes a custom role definition; refuses while assignments use it.
    /// The caller needs `roleDefinitions/delete` at each of its assignable scopes.
    pub async fn delete_custom_role(
        &self,
        principal: &str,
        guid: &str,
    ) -> Result<Option<RoleDefinition>, ArmError> {
        if rbac::role_by_guid(guid).is_some() {
            return Err(ArmError::InvalidParameter(format!(
                "The role definition '{guid}' is a built-in role and cannot be deleted."
            )));
        }
        let key = guid.to_ascii_lowercase();
        if let Some(old) = self.custom_roles.get(&key)? {
            for s in &old.definition.assignable_scopes {
                self.authorize(
                    principal,
                    "Microsoft.Authorization/roleDefinitions/delete",
                    s,
                )?;
            }
        }
        if self
            .assignments
            .all()?
            .iter()
            .any(|(_, a)| a.role_guid == key)
        {
            return Err(ArmError::RoleDefinitionHasAssignments(guid.to_owned()));
        }
        Ok(self.custom_roles.remove(&key).await?.map(|r| r.definition))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids() {
        assert!(is_guid("8e3af657-a8ff-443c-a75c-2fe8c4bcb635"));
        assert!(!is_guid("8e3af657a8ff443ca75c2fe8c4bcb635"));
        assert!(!is_guid("zz3af657-a8ff-443c-a75c-2fe8c4bcb635"));
    }
}
