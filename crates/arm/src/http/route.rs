//! ARM paths are case-insensitive (`resourceGroups` and `resourcegroups`,
//! provider namespaces, types), so one fallback handler parses the path into a
//! [`Route`] here instead of using axum's case-sensitive routes. Resource-shaped
//! paths are the domain's [`Address`]es; the rest are this edge's own
//! endpoints (metadata, catalogs, operation status). Names keep the caller's casing.

use crate::error::ArmError;
use crate::resource::{Address, segments};

/// A parsed ARM path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A resource, collection or authorization object.
    At(Address),
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
        /// Image publisher (`Canonical`), matched case-insensitively.
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
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Parses a request path.
// long: the endpoint grammar as one table of slice patterns.
pub fn parse(path: &str) -> Result<Route, ArmError> {
    if let Some(a) = Address::parse(path)? {
        return Ok(Route::At(a));
    }
    let unknown = || ArmError::UnknownPath(path.to_owned());
    let segs = segments(path).ok_or_else(unknown)?;
    let s = |x: &str| x.to_owned();
    match segs.as_slice() {
        [m, e] if eq(m, "metadata") && eq(e, "endpoints") => Ok(Route::MetadataEndpoints),
        [m, e] if eq(m, "metadata") && eq(e, "vm-image-aliases.json") => {
            Ok(Route::MetadataImageAliases)
        }
        [x] if eq(x, "subscriptions") => Ok(Route::Subscriptions),
        [x, sub] if eq(x, "subscriptions") => Ok(Route::Subscription { sub: s(sub) }),
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
        _ => Err(unknown()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Kind;

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
                Route::At(Address::ResourceGroups { sub: "s1".into() }),
            ),
            (
                "/SUBSCRIPTIONS/s1/resourceGroups/My-RG",
                Route::At(Address::ResourceGroup {
                    sub: "s1".into(),
                    rg: "My-RG".into(),
                }),
            ),
            (
                "/subscriptions/s1/providers/microsoft.managedidentity/USERASSIGNEDIDENTITIES",
                Route::At(Address::Collection {
                    sub: "s1".into(),
                    rg: None,
                    kind: Kind::Uami,
                }),
            ),
            (
                "/subscriptions/s1/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines",
                Route::At(Address::Collection {
                    sub: "s1".into(),
                    rg: Some("rg".into()),
                    kind: Kind::Vm,
                }),
            ),
            (
                "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/KV1",
                Route::At(Address::Resource {
                    sub: "s1".into(),
                    rg: "rg".into(),
                    kind: Kind::Vault,
                    name: "KV1".into(),
                }),
            ),
            (
                "/subscriptions/s1/resourceGroups/rg/providers/microsoft.authorization/roleassignments/abc",
                Route::At(Address::RoleAssignment {
                    scope: "/subscriptions/s1/resourceGroups/rg".into(),
                    name: "abc".into(),
                }),
            ),
            (
                "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv/providers/Microsoft.Authorization/roleAssignments",
                Route::At(Address::RoleAssignments {
                    scope:
                        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"
                            .into(),
                }),
            ),
            (
                "/providers/Microsoft.Authorization/roleDefinitions",
                Route::At(Address::RoleDefinitions { scope: "/".into() }),
            ),
            (
                "/subscriptions/s1/providers/Microsoft.Authorization/roleDefinitions/g1",
                Route::At(Address::RoleDefinition {
                    scope: "/subscriptions/s1".into(),
                    name: "g1".into(),
                }),
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
            Route::At(Address::Subnet {
                sub: "s1".into(),
                rg: "rg".into(),
                vnet: "v".into(),
                name: Some("sn".into())
            })
        );
        assert_eq!(
            parse("/subscriptions/s1/resourcegroups/rg/providers/Microsoft.Resources/deployments/d/operationStatuses/o1").unwrap(),
            Route::At(Address::DeploymentOperation {
                sub: "s1".into(),
                rg: "rg".into(),
                name: "d".into(),
                op: "o1".into()
            })
        );
        assert!(matches!(
            parse("/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Network/publicIpAddresses/ip").unwrap(),
            Route::At(Address::Resource { kind: Kind::PublicIp, .. })
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
