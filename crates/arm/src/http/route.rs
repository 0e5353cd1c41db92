//! ARM paths are case-insensitive (`resourceGroups` and `resourcegroups`,
//! provider namespaces, types), so one fallback handler parses the path into a
//! [`Route`] here instead of using axum's case-sensitive routes. Names keep the
//! caller's casing.

use crate::error::ArmError;

/// A resource type this ARM serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Microsoft.Compute/virtualMachines`.
    Vm,
    /// `Microsoft.ManagedIdentity/userAssignedIdentities`.
    Uami,
    /// `Microsoft.KeyVault/vaults`.
    Vault,
}

impl Kind {
    /// The canonical `Namespace/type`.
    pub fn type_name(self) -> &'static str {
        match self {
            Kind::Vm => "Microsoft.Compute/virtualMachines",
            Kind::Uami => "Microsoft.ManagedIdentity/userAssignedIdentities",
            Kind::Vault => "Microsoft.KeyVault/vaults",
        }
    }

    fn parse(ns: &str, ty: &str) -> Result<Self, ArmError> {
        let known = [Kind::Vm, Kind::Uami, Kind::Vault];
        if let Some(k) = known
            .iter()
            .find(|k| k.type_name().eq_ignore_ascii_case(&format!("{ns}/{ty}")))
        {
            return Ok(*k);
        }
        if known.iter().any(|k| {
            k.type_name()
                .split('/')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case(ns))
        }) {
            Err(ArmError::InvalidResourceType {
                namespace: ns.to_owned(),
                resource_type: ty.to_owned(),
            })
        } else {
            Err(ArmError::NoRegisteredProviderFound(format!("{ns}/{ty}")))
        }
    }
}

/// A parsed ARM path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/metadata/endpoints`.
    MetadataEndpoints,
    /// `/subscriptions`.
    Subscriptions,
    /// `/subscriptions/{sub}`.
    Subscription {
        /// Subscription id.
        sub: String,
    },
    /// `/subscriptions/{sub}/resourcegroups`.
    ResourceGroups {
        /// Subscription id.
        sub: String,
    },
    /// `/subscriptions/{sub}/resourcegroups/{rg}`.
    ResourceGroup {
        /// Subscription id.
        sub: String,
        /// Group name.
        rg: String,
    },
    /// `/subscriptions/{sub}[/resourcegroups/{rg}]/providers/{ns}/{type}`.
    Collection {
        /// Subscription id.
        sub: String,
        /// Group name, for RG-scoped lists.
        rg: Option<String>,
        /// The type.
        kind: Kind,
    },
    /// `/subscriptions/{sub}/resourcegroups/{rg}/providers/{ns}/{type}/{name}`.
    Resource {
        /// Subscription id.
        sub: String,
        /// Group name.
        rg: String,
        /// The type.
        kind: Kind,
        /// Resource name.
        name: String,
    },
    /// `{scope}/providers/Microsoft.Authorization/roleAssignments`.
    RoleAssignments {
        /// The scope (`/` or an ARM id).
        scope: String,
    },
    /// `{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`.
    RoleAssignment {
        /// The scope.
        scope: String,
        /// Assignment name (GUID).
        name: String,
    },
    /// `{scope}/providers/Microsoft.Authorization/roleDefinitions`.
    RoleDefinitions {
        /// The scope.
        scope: String,
    },
    /// `{scope}/providers/Microsoft.Authorization/roleDefinitions/{guid}`.
    RoleDefinition {
        /// The scope.
        scope: String,
        /// Definition GUID.
        name: String,
    },
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Parses a request path.
pub fn parse(path: &str) -> Result<Route, ArmError> {
    let unknown = || ArmError::UnknownPath(path.to_owned());
    let trimmed = path.trim_end_matches('/');
    let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Err(unknown());
    }
    // Authorization routes hang off any scope.
    if let Some(p) = segs.iter().rposition(|s| eq(s, "providers"))
        && segs
            .get(p + 1)
            .is_some_and(|ns| eq(ns, "Microsoft.Authorization"))
    {
        let scope = if p == 0 {
            "/".to_owned()
        } else {
            format!("/{}", segs[..p].join("/"))
        };
        let rest = &segs[p + 2..];
        return match rest {
            [t] if eq(t, "roleAssignments") => Ok(Route::RoleAssignments { scope }),
            [t, n] if eq(t, "roleAssignments") => Ok(Route::RoleAssignment {
                scope,
                name: n.to_string(),
            }),
            [t] if eq(t, "roleDefinitions") => Ok(Route::RoleDefinitions { scope }),
            [t, n] if eq(t, "roleDefinitions") => Ok(Route::RoleDefinition {
                scope,
                name: n.to_string(),
            }),
            [t, ..] => Err(ArmError::InvalidResourceType {
                namespace: "Microsoft.Authorization".into(),
                resource_type: t.to_string(),
            }),
            [] => Err(unknown()),
        };
    }
    let s = |x: &str| x.to_owned();
    match segs.as_slice() {
        [m, e] if eq(m, "metadata") && eq(e, "endpoints") => Ok(Route::MetadataEndpoints),
        [x] if eq(x, "subscriptions") => Ok(Route::Subscriptions),
        [x, sub] if eq(x, "subscriptions") => Ok(Route::Subscription { sub: s(sub) }),
        [x, sub, r] if eq(x, "subscriptions") && eq(r, "resourceGroups") => {
            Ok(Route::ResourceGroups { sub: s(sub) })
        }
        [x, sub, r, rg] if eq(x, "subscriptions") && eq(r, "resourceGroups") => {
            Ok(Route::ResourceGroup {
                sub: s(sub),
                rg: s(rg),
            })
        }
        [x, sub, p, ns, ty] if eq(x, "subscriptions") && eq(p, "providers") => {
            Ok(Route::Collection {
                sub: s(sub),
                rg: None,
                kind: Kind::parse(ns, ty)?,
            })
        }
        [x, sub, r, rg, p, ns, ty]
            if eq(x, "subscriptions") && eq(r, "resourceGroups") && eq(p, "providers") =>
        {
            Ok(Route::Collection {
                sub: s(sub),
                rg: Some(s(rg)),
                kind: Kind::parse(ns, ty)?,
            })
        }
        [x, sub, r, rg, p, ns, ty, name]
            if eq(x, "subscriptions") && eq(r, "resourceGroups") && eq(p, "providers") =>
        {
            Ok(Route::Resource {
                sub: s(sub),
                rg: s(rg),
                kind: Kind::parse(ns, ty)?,
                name: s(name),
            })
        }
        _ => Err(unknown()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routes_case_insensitively() {
        let cases = [
            ("/metadata/endpoints", Route::MetadataEndpoints),
            ("/subscriptions", Route::Subscriptions),
            (
                "/subscriptions/S1/",
                Route::Subscription { sub: "S1".into() },
            ),
            (
                "/subscriptions/s1/resourcegroups",
                Route::ResourceGroups { sub: "s1".into() },
            ),
            (
                "/SUBSCRIPTIONS/s1/resourceGroups/My-RG",
                Route::ResourceGroup {
                    sub: "s1".into(),
                    rg: "My-RG".into(),
                },
            ),
            (
                "/subscriptions/s1/providers/microsoft.managedidentity/USERASSIGNEDIDENTITIES",
                Route::Collection {
                    sub: "s1".into(),
                    rg: None,
                    kind: Kind::Uami,
                },
            ),
            (
                "/subscriptions/s1/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines",
                Route::Collection {
                    sub: "s1".into(),
                    rg: Some("rg".into()),
                    kind: Kind::Vm,
                },
            ),
            (
                "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/KV1",
                Route::Resource {
                    sub: "s1".into(),
                    rg: "rg".into(),
                    kind: Kind::Vault,
                    name: "KV1".into(),
                },
            ),
            (
                "/subscriptions/s1/resourceGroups/rg/providers/microsoft.authorization/roleassignments/abc",
                Route::RoleAssignment {
                    scope: "/subscriptions/s1/resourceGroups/rg".into(),
                    name: "abc".into(),
                },
            ),
            (
                "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv/providers/Microsoft.Authorization/roleAssignments",
                Route::RoleAssignments {
                    scope:
                        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"
                            .into(),
                },
            ),
            (
                "/providers/Microsoft.Authorization/roleDefinitions",
                Route::RoleDefinitions { scope: "/".into() },
            ),
            (
                "/subscriptions/s1/providers/Microsoft.Authorization/roleDefinitions/g1",
                Route::RoleDefinition {
                    scope: "/subscriptions/s1".into(),
                    name: "g1".into(),
                },
            ),
        ];
        for (path, want) in cases {
            assert_eq!(parse(path).unwrap(), want, "{path}");
        }
    }

    #[test]
    fn unknown_types_and_paths() {
        let r = parse("/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/disks/d1");
        assert!(
            matches!(r, Err(ArmError::InvalidResourceType { .. })),
            "{r:?}"
        );
        let r = parse("/subscriptions/s1/resourceGroups/rg/providers/Contoso.Widgets/widgets/w1");
        assert!(
            matches!(r, Err(ArmError::NoRegisteredProviderFound(_))),
            "{r:?}"
        );
        for bad in [
            "/",
            "/foo",
            "/subscriptions//x",
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm/extensions/x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
