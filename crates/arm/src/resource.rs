//! ARM's resource vocabulary, shared by the domain and the HTTP edge: the
//! resource types misim serves ([`Kind`]) and what an ARM id (or the path of a
//! request on one) addresses ([`Address`]). ARM ids are case-insensitive
//! (`resourceGroups` and `resourcegroups`, namespaces, types); names keep the
//! caller's casing. The HTTP router adds its own endpoints (metadata, catalogs,
//! operation status) on top of [`Address::parse`].

use crate::error::ArmError;

/// A resource type this ARM serves. Adding one: a variant here and its row in
/// [`Kind::ALL`] / [`Kind::type_name`], then the arms the compiler asks for in
/// `domain::resources` (the one place per-kind behaviour lives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Microsoft.Compute/virtualMachines`.
    Vm,
    /// `Microsoft.ManagedIdentity/userAssignedIdentities`.
    Uami,
    /// `Microsoft.KeyVault/vaults`.
    Vault,
    /// `Microsoft.Network/virtualNetworks`.
    VirtualNetwork,
    /// `Microsoft.Network/networkSecurityGroups`.
    NetworkSecurityGroup,
    /// `Microsoft.Network/publicIPAddresses`.
    PublicIp,
    /// `Microsoft.Network/networkInterfaces`.
    NetworkInterface,
    /// `Microsoft.Resources/deployments` (resource-group scope).
    Deployment,
}

impl Kind {
    /// The canonical `Namespace/type`.
    pub fn type_name(self) -> &'static str {
        match self {
            Kind::Vm => "Microsoft.Compute/virtualMachines",
            Kind::Uami => "Microsoft.ManagedIdentity/userAssignedIdentities",
            Kind::Vault => "Microsoft.KeyVault/vaults",
            Kind::VirtualNetwork => "Microsoft.Network/virtualNetworks",
            Kind::NetworkSecurityGroup => "Microsoft.Network/networkSecurityGroups",
            Kind::PublicIp => "Microsoft.Network/publicIPAddresses",
            Kind::NetworkInterface => "Microsoft.Network/networkInterfaces",
            Kind::Deployment => "Microsoft.Resources/deployments",
        }
    }

    /// Every kind, in the order a resource group's deletion removes them
    /// (VMs before the identities they carry).
    pub const ALL: [Kind; 8] = [
        Kind::Vm,
        Kind::Uami,
        Kind::Vault,
        Kind::VirtualNetwork,
        Kind::NetworkSecurityGroup,
        Kind::PublicIp,
        Kind::NetworkInterface,
        Kind::Deployment,
    ];

    /// True for the generic stored `Microsoft.Network` kinds.
    pub fn is_network(self) -> bool {
        matches!(
            self,
            Kind::VirtualNetwork
                | Kind::NetworkSecurityGroup
                | Kind::PublicIp
                | Kind::NetworkInterface
        )
    }

    /// `{type}/{verb}`: the RBAC action of a verb on this kind.
    pub fn action(self, verb: &str) -> String {
        format!("{}/{verb}", self.type_name())
    }

    /// The id of the resource `name` of this kind in a group.
    pub fn id(self, sub: &str, rg: &str, name: &str) -> String {
        format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/{}/{name}",
            self.type_name()
        )
    }

    /// Parses `Namespace`, `type` (case-insensitive).
    pub fn parse(ns: &str, ty: &str) -> Result<Self, ArmError> {
        let known = Kind::ALL;
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

/// What an ARM id addresses: a resource, a collection of them, or an
/// authorization object at some scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
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
    /// `…/Microsoft.Network/virtualNetworks/{vnet}/subnets[/{name}]`.
    Subnet {
        /// Subscription id.
        sub: String,
        /// Group name.
        rg: String,
        /// Virtual network name.
        vnet: String,
        /// Subnet name (absent: list).
        name: Option<String>,
    },
    /// `…/Microsoft.ManagedIdentity/userAssignedIdentities/{identity}/federatedIdentityCredentials[/{name}]`.
    FederatedCredential {
        /// Subscription id.
        sub: String,
        /// Group name.
        rg: String,
        /// The user-assigned identity's name.
        identity: String,
        /// The credential's name (absent: list).
        name: Option<String>,
    },
    /// `…/Microsoft.Resources/deployments/{name}/operationStatuses/{op}`.
    DeploymentOperation {
        /// Subscription id.
        sub: String,
        /// Group name.
        rg: String,
        /// Deployment name.
        name: String,
        /// Operation id.
        op: String,
    },
    /// `{scope}/providers/Microsoft.Authorization/roleAssignments`.
    RoleAssignments {
        /// The scope (`/` or an ARM id).
        scope: String,
    },
    /// `{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`.
    RoleAssignment {
        /// Where it applies: a subscription, resource group or resource id, as sent.
        scope: String,
        /// Assignment name (GUID).
        name: String,
    },
    /// `{scope}/providers/Microsoft.Authorization/roleDefinitions`.
    RoleDefinitions {
        /// Where it applies: a subscription, resource group or resource id, as sent.
        scope: String,
    },
    /// `{scope}/providers/Microsoft.Authorization/roleDefinitions/{guid}`.
    RoleDefinition {
        /// Where it applies: a subscription, resource group or resource id, as sent.
        scope: String,
        /// Definition GUID.
        name: String,
    },
}

/// The child collection of a user-assigned identity that holds its federated
/// identity credentials.
pub const FEDERATED_CREDENTIALS: &str = "federatedIdentityCredentials";

/// The type of a user-assigned identity's federated identity credential
/// (its RBAC actions are `{type}/read|write|delete`).
pub const FEDERATED_CREDENTIAL_TYPE: &str =
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials";

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The segments of a path (without the leading `/` and trailing slashes);
/// `None` when one is empty (`//`).
pub(crate) fn segments(path: &str) -> Option<Vec<&str>> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    (!segs.iter().any(|s| s.is_empty())).then_some(segs)
}

impl Address {
    /// Parses an id. `Ok(None)` when the path has no resource shape (the
    /// router's own endpoints); an error for a malformed id or an unknown type.
    // long: the id grammar as one table of slice patterns, read
    // top to bottom in the order ARM matches them.
    pub fn parse(path: &str) -> Result<Option<Self>, ArmError> {
        let unknown = || ArmError::UnknownPath(path.to_owned());
        let segs = segments(path).ok_or_else(unknown)?;
        // Authorization objects hang off any scope.
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
            let name = |n: &str| n.to_owned();
            return match &segs[p + 2..] {
                [t] if eq(t, "roleAssignments") => Ok(Some(Self::RoleAssignments { scope })),
                [t, n] if eq(t, "roleAssignments") => Ok(Some(Self::RoleAssignment {
                    scope,
                    name: name(n),
                })),
                [t] if eq(t, "roleDefinitions") => Ok(Some(Self::RoleDefinitions { scope })),
                [t, n] if eq(t, "roleDefinitions") => Ok(Some(Self::RoleDefinition {
                    scope,
                    name: name(n),
                })),
                [t, ..] => Err(ArmError::InvalidResourceType {
                    namespace: "Microsoft.Authorization".into(),
                    resource_type: t.to_string(),
                }),
                [] => Err(unknown()),
            };
        }
        let s = |x: &str| x.to_owned();
        let sub_rg = |x: &str, r: &str| eq(x, "subscriptions") && eq(r, "resourceGroups");
        match segs.as_slice() {
            [x, sub, r] if sub_rg(x, r) => Ok(Some(Self::ResourceGroups { sub: s(sub) })),
            [x, sub, r, rg] if sub_rg(x, r) => Ok(Some(Self::ResourceGroup {
                sub: s(sub),
                rg: s(rg),
            })),
            // The compute SKU catalog has a collection's shape but is no resource type.
            [x, _, p, ns, k]
                if eq(x, "subscriptions")
                    && eq(p, "providers")
                    && eq(ns, "Microsoft.Compute")
                    && eq(k, "skus") =>
            {
                Ok(None)
            }
            [x, sub, p, ns, ty] if eq(x, "subscriptions") && eq(p, "providers") => {
                Ok(Some(Self::Collection {
                    sub: s(sub),
                    rg: None,
                    kind: Kind::parse(ns, ty)?,
                }))
            }
            [x, sub, r, rg, p, ns, ty] if sub_rg(x, r) && eq(p, "providers") => {
                Ok(Some(Self::Collection {
                    sub: s(sub),
                    rg: Some(s(rg)),
                    kind: Kind::parse(ns, ty)?,
                }))
            }
            [x, sub, r, rg, p, ns, ty, name] if sub_rg(x, r) && eq(p, "providers") => {
                Ok(Some(Self::Resource {
                    sub: s(sub),
                    rg: s(rg),
                    kind: Kind::parse(ns, ty)?,
                    name: s(name),
                }))
            }
            [x, sub, r, rg, p, ns, ty, name, child, rest @ ..]
                if sub_rg(x, r) && eq(p, "providers") =>
            {
                match (Kind::parse(ns, ty)?, rest) {
                    (Kind::VirtualNetwork, []) if eq(child, "subnets") => Ok(Some(Self::Subnet {
                        sub: s(sub),
                        rg: s(rg),
                        vnet: s(name),
                        name: None,
                    })),
                    (Kind::VirtualNetwork, [sn]) if eq(child, "subnets") => {
                        Ok(Some(Self::Subnet {
                            sub: s(sub),
                            rg: s(rg),
                            vnet: s(name),
                            name: Some(s(sn)),
                        }))
                    }
                    (Kind::Uami, []) if eq(child, FEDERATED_CREDENTIALS) => {
                        Ok(Some(Self::FederatedCredential {
                            sub: s(sub),
                            rg: s(rg),
                            identity: s(name),
                            name: None,
                        }))
                    }
                    (Kind::Uami, [fic]) if eq(child, FEDERATED_CREDENTIALS) => {
                        Ok(Some(Self::FederatedCredential {
                            sub: s(sub),
                            rg: s(rg),
                            identity: s(name),
                            name: Some(s(fic)),
                        }))
                    }
                    (Kind::Deployment, [op]) if eq(child, "operationStatuses") => {
                        Ok(Some(Self::DeploymentOperation {
                            sub: s(sub),
                            rg: s(rg),
                            name: s(name),
                            op: s(op),
                        }))
                    }
                    _ => Err(unknown()),
                }
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_case_insensitively() {
        let cases = [
            (
                "/subscriptions/s1/resourcegroups",
                Address::ResourceGroups { sub: "s1".into() },
            ),
            (
                "/SUBSCRIPTIONS/s1/resourceGroups/My-RG/",
                Address::ResourceGroup {
                    sub: "s1".into(),
                    rg: "My-RG".into(),
                },
            ),
            (
                "/subscriptions/s1/providers/microsoft.managedidentity/USERASSIGNEDIDENTITIES",
                Address::Collection {
                    sub: "s1".into(),
                    rg: None,
                    kind: Kind::Uami,
                },
            ),
            (
                "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/KV1",
                Address::Resource {
                    sub: "s1".into(),
                    rg: "rg".into(),
                    kind: Kind::Vault,
                    name: "KV1".into(),
                },
            ),
            (
                "/subscriptions/s1/resourceGroups/rg/providers/microsoft.authorization/roleassignments/abc",
                Address::RoleAssignment {
                    scope: "/subscriptions/s1/resourceGroups/rg".into(),
                    name: "abc".into(),
                },
            ),
            (
                "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1/FEDERATEDIDENTITYCREDENTIALS/Fic1",
                Address::FederatedCredential {
                    sub: "s1".into(),
                    rg: "rg".into(),
                    identity: "id1".into(),
                    name: Some("Fic1".into()),
                },
            ),
            (
                "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1/federatedIdentityCredentials",
                Address::FederatedCredential {
                    sub: "s1".into(),
                    rg: "rg".into(),
                    identity: "id1".into(),
                    name: None,
                },
            ),
            (
                "/providers/Microsoft.Authorization/roleDefinitions",
                Address::RoleDefinitions { scope: "/".into() },
            ),
        ];
        for (id, want) in cases {
            assert_eq!(Address::parse(id).unwrap(), Some(want), "{id}");
        }
        for other in [
            "/subscriptions",
            "/subscriptions/s1",
            "/subscriptions/s1/providers/Microsoft.Compute/skus",
            "/metadata/endpoints",
        ] {
            assert_eq!(Address::parse(other).unwrap(), None, "{other}");
        }
    }

    #[test]
    fn kinds_know_their_ids_and_actions() {
        assert_eq!(
            Kind::Vm.id("s", "rg", "vm1"),
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
        );
        assert_eq!(Kind::Vault.action("read"), "Microsoft.KeyVault/vaults/read");
        for k in Kind::ALL {
            let (ns, ty) = k.type_name().split_once('/').unwrap();
            assert_eq!(Kind::parse(ns, ty).unwrap(), k);
        }
    }
}
