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

    /// Every kind.
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

/// A parsed ARM path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/subscriptions/{sub}/operationresults/{ops}`: a resource group
    /// deletion's `Location` (`ops`: the pending operation ids, `~`-separated).
    OperationResults {
        /// Subscription.
        sub: String,
        /// Operation ids.
        ops: String,
    },
    /// `/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{op}`:
    /// a VM operation's async status.
    ComputeOperation {
        /// Subscription.
        sub: String,
        /// Operation id.
        op: String,
    },
    /// `/metadata/endpoints`.
    MetadataEndpoints,
    /// `/metadata/vm-image-aliases.json`: the image alias document az reads
    /// (the cloud's `vmImageAliasDoc`), served locally so az never fetches the public one.
    MetadataImageAliases,
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
    /// `/subscriptions/{sub}/providers`.
    Providers {
        /// Subscription id.
        sub: String,
    },
    /// `/subscriptions/{sub}/providers/{ns}`.
    Provider {
        /// Subscription id.
        sub: String,
        /// Namespace as sent.
        namespace: String,
    },
    /// `/subscriptions/{sub}/locations`.
    Locations {
        /// Subscription id.
        sub: String,
    },
    /// `/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/publishers/{p}/artifacttypes/vmimage/offers[/{o}/skus[/{s}/versions[/{v}]]]`.
    VmImages {
        /// Subscription id.
        sub: String,
        /// Region.
        location: String,
        /// Publisher.
        publisher: String,
        /// Offer (absent: list offers).
        offer: Option<String>,
        /// SKU (absent: list SKUs).
        sku: Option<String>,
        /// Version (absent: list versions).
        version: Option<String>,
        /// True when the path ends in `versions` (list) rather than `skus/{s}`.
        versions: bool,
    },
    /// `/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/vmSizes`.
    VmSizes {
        /// Subscription id.
        sub: String,
        /// Region.
        location: String,
    },
    /// `/subscriptions/{sub}/providers/Microsoft.Compute/skus`.
    ComputeSkus {
        /// Subscription id.
        sub: String,
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
        [m, e] if eq(m, "metadata") && eq(e, "vm-image-aliases.json") => {
            Ok(Route::MetadataImageAliases)
        }
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
        [x, sub, o, ops] if eq(x, "subscriptions") && eq(o, "operationresults") => {
            Ok(Route::OperationResults {
                sub: s(sub),
                ops: s(ops),
            })
        }
        [x, sub, p] if eq(x, "subscriptions") && eq(p, "providers") => {
            Ok(Route::Providers { sub: s(sub) })
        }
        [x, sub, l] if eq(x, "subscriptions") && eq(l, "locations") => {
            Ok(Route::Locations { sub: s(sub) })
        }
        [x, sub, p, ns] if eq(x, "subscriptions") && eq(p, "providers") => Ok(Route::Provider {
            sub: s(sub),
            namespace: s(ns),
        }),
        [x, sub, p, ns, k]
            if eq(x, "subscriptions")
                && eq(p, "providers")
                && eq(ns, "Microsoft.Compute")
                && eq(k, "skus") =>
        {
            Ok(Route::ComputeSkus { sub: s(sub) })
        }
        [x, sub, p, ns, l, _loc, o, op]
            if eq(x, "subscriptions")
                && eq(p, "providers")
                && eq(ns, "Microsoft.Compute")
                && eq(l, "locations")
                && eq(o, "operations") =>
        {
            Ok(Route::ComputeOperation {
                sub: s(sub),
                op: s(op),
            })
        }
        [x, sub, p, ns, l, loc, v]
            if eq(x, "subscriptions")
                && eq(p, "providers")
                && eq(ns, "Microsoft.Compute")
                && eq(l, "locations")
                && eq(v, "vmSizes") =>
        {
            Ok(Route::VmSizes {
                sub: s(sub),
                location: s(loc),
            })
        }
        [x, sub, p, ns, l, loc, pb, publisher, a, vi, o, rest @ ..]
            if eq(x, "subscriptions")
                && eq(p, "providers")
                && eq(ns, "Microsoft.Compute")
                && eq(l, "locations")
                && eq(pb, "publishers")
                && eq(a, "artifacttypes")
                && eq(vi, "vmimage")
                && eq(o, "offers") =>
        {
            let image = |offer: Option<&&str>,
                         sku: Option<&&str>,
                         version: Option<&&str>,
                         versions: bool| Route::VmImages {
                sub: s(sub),
                location: s(loc),
                publisher: s(publisher),
                offer: offer.map(|x| s(x)),
                sku: sku.map(|x| s(x)),
                version: version.map(|x| s(x)),
                versions,
            };
            match rest {
                [] => Ok(image(None, None, None, false)),
                [offer, k] if eq(k, "skus") => Ok(image(Some(offer), None, None, false)),
                [offer, k, sku, v] if eq(k, "skus") && eq(v, "versions") => {
                    Ok(image(Some(offer), Some(sku), None, true))
                }
                [offer, k, sku, v, ver] if eq(k, "skus") && eq(v, "versions") => {
                    Ok(image(Some(offer), Some(sku), Some(ver), true))
                }
                _ => Err(unknown()),
            }
        }
        [x, sub, r, rg, p, ns, ty, name, child, rest @ ..]
            if eq(x, "subscriptions") && eq(r, "resourceGroups") && eq(p, "providers") =>
        {
            match (Kind::parse(ns, ty)?, rest) {
                (Kind::VirtualNetwork, []) if eq(child, "subnets") => Ok(Route::Subnet {
                    sub: s(sub),
                    rg: s(rg),
                    vnet: s(name),
                    name: None,
                }),
                (Kind::VirtualNetwork, [sn]) if eq(child, "subnets") => Ok(Route::Subnet {
                    sub: s(sub),
                    rg: s(rg),
                    vnet: s(name),
                    name: Some(s(sn)),
                }),
                (Kind::Deployment, [op]) if eq(child, "operationStatuses") => {
                    Ok(Route::DeploymentOperation {
                        sub: s(sub),
                        rg: s(rg),
                        name: s(name),
                        op: s(op),
                    })
                }
                _ => Err(unknown()),
            }
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
    fn parses_catalog_network_and_deployment_routes() {
        let img = "/subscriptions/s1/providers/Microsoft.Compute/locations/eastus/publishers/Canonical/artifacttypes/vmimage/offers/0001-com-ubuntu-server-jammy/skus/22_04-lts-gen2/versions";
        match parse(img).unwrap() {
            Route::VmImages {
                sku: Some(sku),
                version: None,
                versions: true,
                ..
            } => assert_eq!(sku, "22_04-lts-gen2"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&format!("{img}/22.04.202501080")).unwrap(),
            Route::VmImages {
                version: Some(_),
                ..
            }
        ));
        assert_eq!(
            parse("/subscriptions/s1/providers/Microsoft.Compute/skus").unwrap(),
            Route::ComputeSkus { sub: "s1".into() }
        );
        assert_eq!(
            parse("/subscriptions/s1/providers/microsoft.network").unwrap(),
            Route::Provider {
                sub: "s1".into(),
                namespace: "microsoft.network".into()
            }
        );
        assert_eq!(
            parse("/subscriptions/s1/resourcegroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/sn").unwrap(),
            Route::Subnet {
                sub: "s1".into(),
                rg: "rg".into(),
                vnet: "v".into(),
                name: Some("sn".into())
            }
        );
        assert_eq!(
            parse("/subscriptions/s1/resourcegroups/rg/providers/Microsoft.Resources/deployments/d/operationStatuses/o1").unwrap(),
            Route::DeploymentOperation {
                sub: "s1".into(),
                rg: "rg".into(),
                name: "d".into(),
                op: "o1".into()
            }
        );
        assert!(matches!(
            parse("/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Network/publicIpAddresses/ip").unwrap(),
            Route::Resource { kind: Kind::PublicIp, .. }
        ));
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
