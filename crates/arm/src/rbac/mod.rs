//! Azure RBAC: built-in role definitions (data, in `builtin_roles.json`) and a
//! pure evaluator that decides whether assignments grant an action at a scope.
//!
//! Model (a first version): an assignment grants an action at a target scope
//! when the principal matches, the target lies within the assignment's scope,
//! and some permission block of the role matches the action in `actions`
//! (`dataActions` for data actions) and not in `notActions` (`notDataActions`).
//! There are no deny assignments and no conditions. Custom role definitions
//! (`PUT {scope}/providers/Microsoft.Authorization/roleDefinitions/{guid}`) are
//! the same [`RoleDefinition`] with `custom` set, evaluated the same way.
//! The decision names every assignment of the principal that applies at the
//! scope and what each did, so a denial can be explained.

pub mod pattern;

use std::sync::OnceLock;

use misim_types::ResourceId;
use serde::{Deserialize, Serialize};

/// One permission block of a role definition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    /// Control-plane actions granted.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Control-plane actions subtracted from `actions`.
    #[serde(default)]
    pub not_actions: Vec<String>,
    /// Data-plane actions granted.
    #[serde(default)]
    pub data_actions: Vec<String>,
    /// Data-plane actions subtracted from `data_actions`.
    #[serde(default)]
    pub not_data_actions: Vec<String>,
}

/// A role definition, built-in (from data) or custom (validated at write): the actions it
/// grants and carves out, and the scopes it may be assigned at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleDefinition {
    /// The GUID (the definition's `name`).
    pub name: String,
    /// Display name, e.g. `Reader`.
    pub role_name: String,
    /// What the role is for.
    pub description: String,
    /// Where it may be assigned.
    pub assignable_scopes: Vec<String>,
    /// Permission blocks.
    pub permissions: Vec<Permission>,
    /// True for a custom role (`type: CustomRole`); built-ins leave it out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub custom: bool,
}

/// The built-in role definitions.
pub fn builtin_roles() -> &'static [RoleDefinition] {
    static ROLES: OnceLock<Vec<RoleDefinition>> = OnceLock::new();
    ROLES.get_or_init(|| {
        serde_json::from_str(include_str!("builtin_roles.json"))
            .expect("builtin_roles.json is valid (checked by a unit test)")
    })
}

/// Finds a built-in role by GUID (case-insensitive).
pub fn role_by_guid(guid: &str) -> Option<&'static RoleDefinition> {
    builtin_roles()
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(guid))
}

/// Finds a built-in role by display name (case-insensitive).
pub fn role_by_name(name: &str) -> Option<&'static RoleDefinition> {
    builtin_roles()
        .iter()
        .find(|r| r.role_name.eq_ignore_ascii_case(name))
}

/// Built-in role GUIDs used in code.
pub mod roles {
    pub const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
    pub const KEY_VAULT_SECRETS_OFFICER: &str = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7";
}

pub use pattern::action_matches;

/// Checks the permission blocks a custom role would store (see
/// [`pattern`] for the limits); the message is for `InvalidActionOrNotAction`.
pub fn validate_permissions(perms: &[Permission]) -> Result<(), String> {
    if perms.len() > pattern::MAX_BLOCKS {
        return Err(format!(
            "The role definition has {} permission blocks; at most {} are allowed.",
            perms.len(),
            pattern::MAX_BLOCKS
        ));
    }
    let all = || {
        perms.iter().flat_map(|p| {
            p.actions
                .iter()
                .chain(&p.not_actions)
                .chain(&p.data_actions)
                .chain(&p.not_data_actions)
        })
    };
    let n = all().count();
    if n > pattern::MAX_PATTERNS {
        return Err(format!(
            "The role definition has {n} actions and data actions; at most {} are allowed.",
            pattern::MAX_PATTERNS
        ));
    }
    all().try_for_each(|a| pattern::validate_pattern(a))
}

/// True when `perm` grants `action` (`data` selects the data-action lists).
pub fn permission_grants(perm: &Permission, action: &str, data: bool) -> bool {
    let (allow, deny) = if data {
        (&perm.data_actions, &perm.not_data_actions)
    } else {
        (&perm.actions, &perm.not_actions)
    };
    allow.iter().any(|p| action_matches(p, action))
        && !deny.iter().any(|p| action_matches(p, action))
}

/// An assignment as the evaluator sees it.
#[derive(Debug, Clone)]
pub struct AssignmentView<'a> {
    /// The assignment's resource id (for explanations).
    pub id: &'a str,
    /// Object id of the principal.
    pub principal_id: &'a str,
    /// Scope of the assignment.
    pub scope: ResourceId,
    /// The role it grants, resolved (custom roles read from the store).
    pub role: &'a RoleDefinition,
}

/// An access question.
#[derive(Debug, Clone)]
pub struct AccessRequest<'a> {
    /// Caller object id.
    pub principal_id: &'a str,
    /// The action asked for (`Microsoft.KeyVault/vaults/secrets/getSecret/action` for a
    /// data action), matched against the roles' patterns case-insensitively.
    pub action: &'a str,
    /// Target scope.
    pub scope: &'a ResourceId,
    /// True for data actions.
    pub data: bool,
}

/// The evaluator's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// True when some assignment grants the action.
    pub allowed: bool,
    /// Why: the granting assignment (if any) and every assignment considered.
    pub reason: String,
    /// One line per assignment of the principal that applies at the scope:
    /// `'{role}' at '{scope}' ({id}): grants|does not grant|excluded by notActions`.
    pub considered: Vec<String>,
}

/// What one permission block says about an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Grants,
    Excluded,
    NotListed,
}

fn verdict(role: &RoleDefinition, action: &str, data: bool) -> Verdict {
    let mut excluded = false;
    for perm in &role.permissions {
        let (allow, deny) = if data {
            (&perm.data_actions, &perm.not_data_actions)
        } else {
            (&perm.actions, &perm.not_actions)
        };
        if allow.iter().any(|p| action_matches(p, action)) {
            if deny.iter().any(|p| action_matches(p, action)) {
                excluded = true;
            } else {
                return Verdict::Grants;
            }
        }
    }
    if excluded {
        Verdict::Excluded
    } else {
        Verdict::NotListed
    }
}

/// Decides an access question against `assignments` (of any principals).
/// An assignment applies when its principal is the caller and the target lies
/// at or below its scope; it grants when one of its role's permission blocks
/// lists the action and that block's `notActions` do not remove it (`notActions`
/// never cancel what another assignment grants).
pub fn evaluate(req: &AccessRequest<'_>, assignments: &[AssignmentView<'_>]) -> Decision {
    evaluate_where(req, assignments, |target, at| target.is_within(at))
}

/// Decides a read of a subscription-wide catalog (providers, locations, VM
/// sizes, images) at the subscription `req.scope`: an assignment applies when
/// its scope is at, above *or below* the subscription. Azure lets a principal
/// whose access is limited to one resource group read these (`az vm create`
/// looks up images and sizes that way); a principal with no access in the
/// subscription, or whose roles do not list the action, is still refused.
pub fn evaluate_subscription_read(
    req: &AccessRequest<'_>,
    assignments: &[AssignmentView<'_>],
) -> Decision {
    evaluate_where(req, assignments, on_one_path)
}

/// True when one scope contains the other (or they are equal): an assignment
/// at `b` reaches into, or covers, `a`.
pub fn on_one_path(a: &ResourceId, b: &ResourceId) -> bool {
    a.is_within(b) || b.is_within(a)
}

fn evaluate_where(
    req: &AccessRequest<'_>,
    assignments: &[AssignmentView<'_>],
    applies: impl Fn(&ResourceId, &ResourceId) -> bool,
) -> Decision {
    let kind = if req.data { "data action" } else { "action" };
    let mut considered = Vec::new();
    let mut granted_by = None;
    for a in assignments {
        if !a.principal_id.eq_ignore_ascii_case(req.principal_id) || !applies(req.scope, &a.scope) {
            continue;
        }
        let v = verdict(a.role, req.action, req.data);
        let what = match v {
            Verdict::Grants => "grants",
            Verdict::Excluded => {
                if req.data {
                    "excluded by notDataActions"
                } else {
                    "excluded by notActions"
                }
            }
            Verdict::NotListed => "does not grant",
        };
        let line = format!("'{}' at '{}' ({}): {what}", a.role.role_name, a.scope, a.id);
        if v == Verdict::Grants && granted_by.is_none() {
            granted_by = Some(line.clone());
        }
        considered.push(line);
    }
    let listed = if considered.is_empty() {
        "none".to_owned()
    } else {
        considered.join("; ")
    };
    let reason = match &granted_by {
        Some(g) => format!("{kind} granted by {g}; assignments considered: {listed}"),
        None if considered.is_empty() => {
            "no role assignment of the principal applies at this scope; assignments considered: none"
                .to_owned()
        }
        None => format!("no applicable assignment grants the {kind}; assignments considered: {listed}"),
    };
    Decision {
        allowed: granted_by.is_some(),
        reason,
        considered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_roles_parse_and_are_unique() {
        let roles = builtin_roles();
        assert_eq!(roles.len(), 12);
        for r in roles {
            assert!(uuid_like(&r.name), "{}", r.name);
            assert_eq!(r.assignable_scopes, vec!["/"]);
            assert_eq!(roles.iter().filter(|o| o.name == r.name).count(), 1);
        }
        assert_eq!(
            role_by_name("reader").map(|r| r.name.as_str()),
            Some("acdd72a7-3385-48ef-bd42-f606fba81ae7")
        );
        assert!(role_by_guid(roles::OWNER).is_some());
        assert!(role_by_guid(roles::KEY_VAULT_SECRETS_OFFICER).is_some());
    }

    fn uuid_like(s: &str) -> bool {
        s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
    }

    #[test]
    fn wildcard_table() {
        let cases = [
            ("*", "Microsoft.Compute/virtualMachines/write", true),
            ("*/read", "Microsoft.Compute/virtualMachines/read", true),
            ("*/read", "Microsoft.Compute/virtualMachines/write", false),
            (
                "Microsoft.Compute/*",
                "microsoft.compute/virtualmachines/delete",
                true,
            ),
            (
                "Microsoft.Compute/*",
                "Microsoft.ComputeX/virtualMachines/delete",
                false,
            ),
            (
                "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
                "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
                true,
            ),
            (
                "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
                "Microsoft.ManagedIdentity/userAssignedIdentities/read",
                true,
            ),
            (
                "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
                "Microsoft.ManagedIdentity/userAssignedIdentities/write",
                false,
            ),
            (
                "Microsoft.Authorization/*/Write",
                "Microsoft.Authorization/roleAssignments/write",
                true,
            ),
            (
                "Microsoft.KeyVault/vaults/secrets/getSecret/action",
                "Microsoft.KeyVault/vaults/secrets/getsecret/action",
                true,
            ),
            (
                "Microsoft.KeyVault/vaults/secrets/getSecret/action",
                "Microsoft.KeyVault/vaults/secrets/setSecret/action",
                false,
            ),
        ];
        for (p, a, want) in cases {
            assert_eq!(action_matches(p, a), want, "{p} vs {a}");
        }
    }

    fn id(s: &str) -> ResourceId {
        ResourceId::parse(s).unwrap()
    }

    const SUB: &str = "/subscriptions/s1";
    const RG: &str = "/subscriptions/s1/resourceGroups/rg1";
    const VM: &str =
        "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1";
    const KV: &str = "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/kv1";
    const KV2: &str =
        "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/kv2";

    #[test]
    fn evaluator_table() {
        let role = |n: &str| role_by_name(n).unwrap();
        struct Case {
            role: &'static str,
            at: &'static str,
            action: &'static str,
            target: &'static str,
            data: bool,
            want: bool,
        }
        let c = |role, at, action, target, data, want| Case {
            role,
            at,
            action,
            target,
            data,
            want,
        };
        let cases = [
            c(
                "Owner",
                "/",
                "Microsoft.Compute/virtualMachines/write",
                VM,
                false,
                true,
            ),
            c(
                "Owner",
                SUB,
                "Microsoft.Authorization/roleAssignments/write",
                RG,
                false,
                true,
            ),
            c(
                "Owner",
                SUB,
                "Microsoft.KeyVault/vaults/secrets/getSecret/action",
                KV,
                true,
                false,
            ),
            c(
                "Contributor",
                SUB,
                "Microsoft.Compute/virtualMachines/write",
                VM,
                false,
                true,
            ),
            c(
                "Contributor",
                SUB,
                "Microsoft.Authorization/roleAssignments/write",
                RG,
                false,
                false,
            ),
            c(
                "Contributor",
                SUB,
                "Microsoft.Authorization/roleAssignments/read",
                RG,
                false,
                true,
            ),
            c(
                "Reader",
                RG,
                "Microsoft.Compute/virtualMachines/read",
                VM,
                false,
                true,
            ),
            c(
                "Reader",
                RG,
                "Microsoft.Compute/virtualMachines/write",
                VM,
                false,
                false,
            ),
            c(
                "Reader",
                VM,
                "Microsoft.Resources/subscriptions/resourceGroups/read",
                RG,
                false,
                false,
            ),
            c(
                "Virtual Machine Contributor",
                RG,
                "Microsoft.Compute/virtualMachines/write",
                VM,
                false,
                true,
            ),
            c(
                "Virtual Machine Contributor",
                RG,
                "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
                RG,
                false,
                false,
            ),
            c(
                "Managed Identity Operator",
                RG,
                "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
                RG,
                false,
                true,
            ),
            c(
                "Managed Identity Contributor",
                RG,
                "Microsoft.ManagedIdentity/userAssignedIdentities/write",
                RG,
                false,
                true,
            ),
            c(
                "Managed Identity Contributor",
                RG,
                "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
                RG,
                false,
                false,
            ),
            c(
                "User Access Administrator",
                SUB,
                "Microsoft.Authorization/roleAssignments/write",
                VM,
                false,
                true,
            ),
            c(
                "Role Based Access Control Administrator",
                SUB,
                "Microsoft.Authorization/roleAssignments/delete",
                VM,
                false,
                true,
            ),
            c(
                "Role Based Access Control Administrator",
                SUB,
                "Microsoft.Compute/virtualMachines/write",
                VM,
                false,
                false,
            ),
            c(
                "Key Vault Secrets User",
                KV,
                "Microsoft.KeyVault/vaults/secrets/getSecret/action",
                KV,
                true,
                true,
            ),
            c(
                "Key Vault Secrets User",
                KV,
                "Microsoft.KeyVault/vaults/secrets/getSecret/action",
                KV2,
                true,
                false,
            ),
            c(
                "Key Vault Secrets User",
                KV,
                "Microsoft.KeyVault/vaults/secrets/setSecret/action",
                KV,
                true,
                false,
            ),
            c(
                "Key Vault Secrets User",
                KV,
                "Microsoft.KeyVault/vaults/secrets/getSecret/action",
                KV,
                false,
                false,
            ),
            c(
                "Key Vault Secrets Officer",
                SUB,
                "Microsoft.KeyVault/vaults/secrets/delete",
                KV,
                true,
                true,
            ),
            c(
                "Key Vault Administrator",
                RG,
                "Microsoft.KeyVault/vaults/secrets/setSecret/action",
                KV,
                true,
                true,
            ),
            c(
                "Key Vault Administrator",
                RG,
                "Microsoft.KeyVault/vaults/write",
                KV,
                false,
                false,
            ),
            c(
                "Key Vault Reader",
                RG,
                "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
                KV,
                true,
                true,
            ),
            c(
                "Key Vault Reader",
                RG,
                "Microsoft.KeyVault/vaults/secrets/getSecret/action",
                KV,
                true,
                false,
            ),
        ];
        for case in cases {
            let assignments = [AssignmentView {
                id: "a1",
                principal_id: "P1",
                scope: id(case.at),
                role: role(case.role),
            }];
            let target = id(case.target);
            let req = AccessRequest {
                principal_id: "p1",
                action: case.action,
                scope: &target,
                data: case.data,
            };
            let d = evaluate(&req, &assignments);
            assert_eq!(
                d.allowed, case.want,
                "{} at {} → {} on {}: {}",
                case.role, case.at, case.action, case.target, d.reason
            );
            // Another principal never benefits.
            let other = AccessRequest {
                principal_id: "p2",
                ..req
            };
            assert!(!evaluate(&other, &assignments).allowed);
        }
    }

    #[test]
    fn custom_roles_evaluate_like_builtins() {
        let custom = RoleDefinition {
            name: "6f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0".into(),
            role_name: "VM Starter".into(),
            description: String::new(),
            assignable_scopes: vec![RG.into()],
            permissions: vec![Permission {
                actions: vec!["Microsoft.Compute/virtualMachines/*".into()],
                not_actions: vec!["Microsoft.Compute/virtualMachines/delete".into()],
                ..Default::default()
            }],
            custom: true,
        };
        let assignments = [AssignmentView {
            id: "c",
            principal_id: "p",
            scope: id(RG),
            role: &custom,
        }];
        let target = id(VM);
        let ask = |action| AccessRequest {
            principal_id: "p",
            action,
            scope: &target,
            data: false,
        };
        assert!(
            evaluate(
                &ask("Microsoft.Compute/virtualMachines/write"),
                &assignments
            )
            .allowed
        );
        let d = evaluate(
            &ask("Microsoft.Compute/virtualMachines/delete"),
            &assignments,
        );
        assert!(!d.allowed);
        assert!(d.reason.contains("'VM Starter'"), "{}", d.reason);
        let none = evaluate(
            &AccessRequest {
                principal_id: "q",
                ..ask("Microsoft.Compute/virtualMachines/write")
            },
            &assignments,
        );
        assert!(none.considered.is_empty());
        assert!(
            none.reason.contains("assignments considered: none"),
            "{}",
            none.reason
        );
    }

    #[test]
    fn notactions_are_per_assignment() {
        // Contributor's notActions do not cancel what another assignment grants.
        let assignments = [
            AssignmentView {
                id: "a",
                principal_id: "p",
                scope: id(SUB),
                role: role_by_name("Contributor").unwrap(),
            },
            AssignmentView {
                id: "b",
                principal_id: "p",
                scope: id(RG),
                role: role_by_name("User Access Administrator").unwrap(),
            },
        ];
        let target = id(VM);
        let req = AccessRequest {
            principal_id: "p",
            action: "Microsoft.Authorization/roleAssignments/write",
            scope: &target,
            data: false,
        };
        let d = evaluate(&req, &assignments);
        assert!(d.allowed, "{}", d.reason);
        // The explanation lists both assignments and what each did.
        assert_eq!(d.considered.len(), 2, "{:?}", d.considered);
        assert!(
            d.considered[0].ends_with("excluded by notActions"),
            "{:?}",
            d.considered
        );
        assert!(d.considered[1].ends_with(": grants"), "{:?}", d.considered);
        assert!(
            d.reason.contains("granted by 'User Access Administrator'"),
            "{}",
            d.reason
        );
        let sub = id(SUB);
        let d = evaluate(&AccessRequest { scope: &sub, ..req }, &assignments);
        assert!(!d.allowed);
        assert!(d.reason.contains("Contributor"), "{}", d.reason);
    }
}
