//! Read-only catalog data that clients look up around `az vm create`: VM
//! images (including the targets of az's image aliases), VM sizes, compute
//! SKUs, regions and resource-provider registrations. Pure data and JSON.

use serde_json::{Value, json};

/// A marketplace image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image {
    pub publisher: &'static str,
    pub offer: &'static str,
    pub sku: &'static str,
    /// `Linux` or `Windows`.
    pub os: &'static str,
    /// `V1` or `V2`.
    pub generation: &'static str,
    /// Versions, oldest first.
    pub versions: &'static [&'static str],
}

const UBUNTU: &[&str] = &["22.04.202410020", "22.04.202501080"];
const WINDOWS: &[&str] = &["14393.7428.241004", "14393.7699.250110"];
const WINDOWS22: &[&str] = &["20348.2762.241006", "20348.3091.250112"];

const fn img(
    publisher: &'static str,
    offer: &'static str,
    sku: &'static str,
    os: &'static str,
    generation: &'static str,
    versions: &'static [&'static str],
) -> Image {
    Image {
        publisher,
        offer,
        sku,
        os,
        generation,
        versions,
    }
}

/// The images misim knows (az aliases: Ubuntu2204, Ubuntu2404, Debian11,
/// Debian12, RHELRaw8LVMGen2, CentOS85Gen2, SuseSles15SP5, Win2016Datacenter,
/// Win2019Datacenter, Win2022Datacenter, Win2022AzureEditionCore, …).
/// The Azure CLI's image alias document (`outputs.aliases.value.{Linux,Windows}.{alias}`),
/// served as the cloud's `vmImageAliasDoc`. Every alias names an image in [`IMAGES`]
/// (checked by a test), so `az vm create --image <alias>` resolves offline.
pub const IMAGE_ALIASES_JSON: &str = include_str!("../data/vm_image_aliases.json");

pub const IMAGES: &[Image] = &[
    // Targets of az aliases that the list below did not cover.
    img(
        "microsoftazurelinux",
        "azurelinux-4",
        "4",
        "Linux",
        "V2",
        &["4.0.20250110"],
    ),
    img(
        "microsoftazurelinux",
        "azurelinux-4",
        "4-arm64",
        "Linux",
        "V2",
        &["4.0.20250110"],
    ),
    img(
        "microsoftazurelinux",
        "azurelinux-4",
        "4-gen1",
        "Linux",
        "V1",
        &["4.0.20250110"],
    ),
    img(
        "kinvolk",
        "flatcar-container-linux-free",
        "stable-gen2",
        "Linux",
        "V2",
        &["4081.2.1"],
    ),
    img(
        "SUSE",
        "openSUSE-leap-15-4",
        "gen2",
        "Linux",
        "V2",
        &["2024.01.10"],
    ),
    img(
        "SUSE",
        "sles-15-sp3",
        "gen2",
        "Linux",
        "V2",
        &["2024.01.10"],
    ),
    img(
        "MicrosoftWindowsServer",
        "WindowsServer",
        "2012-R2-Datacenter",
        "Windows",
        "V1",
        &["9600.21620.231004"],
    ),
    img(
        "MicrosoftWindowsServer",
        "WindowsServer",
        "2012-Datacenter",
        "Windows",
        "V1",
        &["9200.24523.231004"],
    ),
    img(
        "Canonical",
        "0001-com-ubuntu-server-jammy",
        "22_04-lts-gen2",
        "Linux",
        "V2",
        UBUNTU,
    ),
    img(
        "Canonical",
        "0001-com-ubuntu-server-jammy",
        "22_04-lts",
        "Linux",
        "V1",
        UBUNTU,
    ),
    img(
        "Canonical",
        "ubuntu-24_04-lts",
        "server",
        "Linux",
        "V2",
        &["24.04.202501140"],
    ),
    img(
        "Canonical",
        "0001-com-ubuntu-server-focal",
        "20_04-lts-gen2",
        "Linux",
        "V2",
        &["20.04.202501100"],
    ),
    img(
        "Debian",
        "debian-11",
        "11-backports-gen2",
        "Linux",
        "V2",
        &["0.20250113.1991"],
    ),
    img(
        "Debian",
        "debian-12",
        "12-gen2",
        "Linux",
        "V2",
        &["0.20250113.1978"],
    ),
    img(
        "RedHat",
        "RHEL",
        "8-lvm-gen2",
        "Linux",
        "V2",
        &["8.10.2024101711"],
    ),
    img(
        "OpenLogic",
        "CentOS",
        "8_5-gen2",
        "Linux",
        "V2",
        &["8.5.2022101401"],
    ),
    img(
        "SUSE",
        "sles-15-sp5",
        "gen2",
        "Linux",
        "V2",
        &["2024.11.05"],
    ),
    img(
        "MicrosoftCBLMariner",
        "cbl-mariner",
        "cbl-mariner-2-gen2",
        "Linux",
        "V2",
        &["2.20250103.01"],
    ),
    img(
        "MicrosoftWindowsServer",
        "WindowsServer",
        "2016-datacenter-gensecond",
        "Windows",
        "V2",
        WINDOWS,
    ),
    img(
        "MicrosoftWindowsServer",
        "WindowsServer",
        "2016-Datacenter",
        "Windows",
        "V1",
        WINDOWS,
    ),
    img(
        "MicrosoftWindowsServer",
        "WindowsServer",
        "2019-datacenter-gensecond",
        "Windows",
        "V2",
        &["17763.6775.250109"],
    ),
    img(
        "MicrosoftWindowsServer",
        "WindowsServer",
        "2022-datacenter-g2",
        "Windows",
        "V2",
        WINDOWS22,
    ),
    img(
        "MicrosoftWindowsServer",
        "WindowsServer",
        "2022-datacenter-azure-edition",
        "Windows",
        "V2",
        WINDOWS22,
    ),
    img(
        "MicrosoftWindowsServer",
        "WindowsServer",
        "2022-datacenter-azure-edition-core",
        "Windows",
        "V2",
        WINDOWS22,
    ),
    img(
        "MicrosoftWindowsServer",
        "WindowsServer",
        "2012-r2-datacenter-gensecond",
        "Windows",
        "V2",
        &["9600.21620.231004"],
    ),
];

/// Regions: (name, display name).
pub const LOCATIONS: &[(&str, &str)] = &[
    ("eastus", "East US"),
    ("eastus2", "East US 2"),
    ("centralus", "Central US"),
    ("westus2", "West US 2"),
    ("westus3", "West US 3"),
    ("northeurope", "North Europe"),
    ("westeurope", "West Europe"),
    ("uksouth", "UK South"),
    ("southeastasia", "Southeast Asia"),
    ("australiaeast", "Australia East"),
];

/// VM sizes: (name, cores, memory MiB, max data disks).
pub const SIZES: &[(&str, u32, u32, u32)] = &[
    ("Standard_B1s", 1, 1024, 2),
    ("Standard_B1ms", 1, 2048, 2),
    ("Standard_B2s", 2, 4096, 4),
    ("Standard_B2ms", 2, 8192, 4),
    ("Standard_DS1_v2", 1, 3584, 4),
    ("Standard_D2s_v3", 2, 8192, 4),
    ("Standard_D2s_v5", 2, 8192, 4),
    ("Standard_D4s_v5", 4, 16384, 8),
    ("Standard_D2as_v5", 2, 8192, 4),
    ("Standard_E2s_v5", 2, 16384, 4),
];

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// Finds an image by publisher, offer and SKU (case-insensitive).
pub fn image(publisher: &str, offer: &str, sku: &str) -> Option<&'static Image> {
    IMAGES
        .iter()
        .find(|i| eq(i.publisher, publisher) && eq(i.offer, offer) && eq(i.sku, sku))
}

/// The OS of an image reference: from the catalog, else guessed from the publisher.
pub fn os_of(publisher: &str, offer: &str, sku: &str) -> &'static str {
    match image(publisher, offer, sku) {
        Some(i) => i.os,
        None if publisher.to_ascii_lowercase().contains("windows") => "Windows",
        None => "Linux",
    }
}

impl Image {
    /// Versions newest first.
    pub fn versions_desc(&self) -> Vec<&'static str> {
        let mut v = self.versions.to_vec();
        v.sort_by_key(|x| std::cmp::Reverse(version_key(x)));
        v
    }

    /// Resolves `latest` or an exact version.
    pub fn version(&self, v: &str) -> Option<&'static str> {
        if eq(v, "latest") {
            return self.versions_desc().first().copied();
        }
        self.versions.iter().find(|x| eq(x, v)).copied()
    }

    fn base_id(&self, sub: &str, location: &str) -> String {
        format!(
            "/Subscriptions/{sub}/Providers/Microsoft.Compute/Locations/{location}/Publishers/{}/ArtifactTypes/VMImage/Offers/{}/Skus/{}",
            self.publisher, self.offer, self.sku
        )
    }

    /// An entry of the versions list.
    pub fn version_entry(&self, sub: &str, location: &str, v: &str) -> Value {
        json!({"location": location, "name": v, "id": format!("{}/Versions/{v}", self.base_id(sub, location))})
    }

    /// One version in full.
    pub fn version_json(&self, sub: &str, location: &str, v: &str) -> Value {
        json!({
            "properties": {
                "hyperVGeneration": self.generation,
                "architecture": "x64",
                "replicaType": "Unmanaged",
                "disallowed": {"vmDiskType": "Unmanaged"},
                "automaticOSUpgradeProperties": {"automaticOSUpgradeSupported": false},
                "imageDeprecationStatus": {"imageState": "Active"},
                "osDiskImage": {"operatingSystem": self.os, "sizeInGb": if self.os == "Windows" { 127 } else { 30 }},
                "dataDiskImages": [],
            },
            "location": location,
            "name": v,
            "id": format!("{}/Versions/{v}", self.base_id(sub, location)),
        })
    }
}

/// `GET …/publishers/{p}/artifacttypes/vmimage/offers[/{o}/skus]`: names under a publisher or offer.
pub fn list_names(sub: &str, location: &str, publisher: &str, offer: Option<&str>) -> Vec<Value> {
    let mut names: Vec<&str> = IMAGES
        .iter()
        .filter(|i| eq(i.publisher, publisher) && offer.is_none_or(|o| eq(i.offer, o)))
        .map(|i| if offer.is_some() { i.sku } else { i.offer })
        .collect();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let id = match offer {
                Some(o) => format!("/Subscriptions/{sub}/Providers/Microsoft.Compute/Locations/{location}/Publishers/{publisher}/ArtifactTypes/VMImage/Offers/{o}/Skus/{n}"),
                None => format!("/Subscriptions/{sub}/Providers/Microsoft.Compute/Locations/{location}/Publishers/{publisher}/ArtifactTypes/VMImage/Offers/{n}"),
            };
            json!({"location": location, "name": n, "id": id})
        })
        .collect()
}

/// `GET …/locations/{loc}/vmSizes`.
pub fn vm_sizes() -> Vec<Value> {
    SIZES
        .iter()
        .map(|(name, cores, mem, disks)| {
            json!({"name": name, "numberOfCores": cores, "osDiskSizeInMB": 1_047_552,
                   "resourceDiskSizeInMB": 8192, "memoryInMB": mem, "maxDataDiskCount": disks})
        })
        .collect()
}

/// `GET /subscriptions/{s}/providers/Microsoft.Compute/skus[?$filter=location eq 'x']`.
pub fn compute_skus(location: Option<&str>) -> Vec<Value> {
    let locations: Vec<&str> = match location {
        Some(l) => LOCATIONS.iter().map(|l| l.0).filter(|n| eq(n, l)).collect(),
        None => LOCATIONS.iter().map(|l| l.0).collect(),
    };
    if locations.is_empty() {
        return Vec::new();
    }
    SIZES
        .iter()
        .map(|(name, cores, mem, _)| {
            let size = name.trim_start_matches("Standard_");
            json!({
                "resourceType": "virtualMachines", "name": name, "tier": "Standard", "size": size,
                "family": format!("standard{}Family", size.split('_').next().unwrap_or(size)),
                "locations": locations,
                "locationInfo": locations.iter().map(|l| json!({"location": l, "zones": [], "zoneDetails": []})).collect::<Vec<_>>(),
                "capabilities": [
                    {"name": "vCPUs", "value": cores.to_string()},
                    {"name": "MemoryGB", "value": (mem / 1024).to_string()},
                    {"name": "HyperVGenerations", "value": "V1,V2"},
                    {"name": "PremiumIO", "value": "True"},
                    {"name": "CpuArchitectureType", "value": "x64"},
                    {"name": "AcceleratedNetworkingEnabled", "value": "False"},
                ],
                "restrictions": [],
            })
        })
        .collect()
}

/// `GET /subscriptions/{s}/locations`.
pub fn locations(sub: &str) -> Vec<Value> {
    LOCATIONS
        .iter()
        .map(|(name, display)| {
            json!({"id": format!("/subscriptions/{sub}/locations/{name}"), "name": name, "type": "Region",
                   "displayName": display, "regionalDisplayName": display,
                   "metadata": {"regionType": "Physical", "regionCategory": "Recommended"}})
        })
        .collect()
}

const COMMON_VERSIONS: &[&str] = &[
    "2026-04-01",
    "2025-04-01",
    "2024-11-01",
    "2024-07-01",
    "2024-03-01",
    "2023-09-01",
    "2023-03-01",
    "2022-11-01",
    "2022-08-01",
    "2022-05-01",
    "2022-01-01",
    "2021-11-01",
    "2021-07-01",
    "2021-03-01",
    "2020-12-01",
    "2020-06-01",
    "2019-07-01",
    "2018-06-01",
    "2017-12-01",
    "2016-09-01",
    "2015-06-15",
];

/// Registered providers: (namespace, resource types, api versions).
const PROVIDERS: &[(&str, &[&str], &[&str])] = &[
    (
        "Microsoft.Compute",
        &[
            "virtualMachines",
            "locations",
            "locations/vmSizes",
            "locations/publishers",
            "skus",
        ],
        COMMON_VERSIONS,
    ),
    (
        "Microsoft.Network",
        &[
            "virtualNetworks",
            "virtualNetworks/subnets",
            "networkSecurityGroups",
            "publicIPAddresses",
            "networkInterfaces",
        ],
        COMMON_VERSIONS,
    ),
    (
        "Microsoft.ManagedIdentity",
        &["userAssignedIdentities", "identities"],
        &[
            "2025-05-31-preview",
            "2024-11-30",
            "2023-01-31",
            "2018-11-30",
        ],
    ),
    (
        "Microsoft.KeyVault",
        &["vaults"],
        &[
            "2024-11-01",
            "2023-07-01",
            "2023-02-01",
            "2022-07-01",
            "2021-10-01",
            "2019-09-01",
        ],
    ),
    (
        "Microsoft.Authorization",
        &["roleAssignments", "roleDefinitions"],
        &[
            "2022-05-01-preview",
            "2022-04-01",
            "2020-04-01-preview",
            "2018-07-01",
            "2015-07-01",
        ],
    ),
    (
        "Microsoft.Resources",
        &[
            "deployments",
            "deployments/operationStatuses",
            "resourceGroups",
            "subscriptions",
            "locations",
        ],
        &[
            "2024-11-01",
            "2024-03-01",
            "2022-09-01",
            "2021-04-01",
            "2020-06-01",
            "2019-10-01",
        ],
    ),
];

/// One provider registration, if misim serves the namespace.
pub fn provider(sub: &str, namespace: &str) -> Option<Value> {
    let (ns, types, versions) = PROVIDERS.iter().find(|p| eq(p.0, namespace))?;
    let regions: Vec<&str> = LOCATIONS.iter().map(|l| l.1).collect();
    Some(json!({
        "id": format!("/subscriptions/{sub}/providers/{ns}"),
        "namespace": ns,
        "registrationState": "Registered",
        "registrationPolicy": "RegistrationRequired",
        "resourceTypes": types.iter().map(|t| json!({
            "resourceType": t, "locations": regions, "apiVersions": versions,
            "defaultApiVersion": versions.iter().find(|v| !v.ends_with("-preview")).unwrap_or(&versions[0]),
            "capabilities": "None",
        })).collect::<Vec<_>>(),
    }))
}

/// Every provider registration.
pub fn providers(sub: &str) -> Vec<Value> {
    PROVIDERS
        .iter()
        .filter_map(|p| provider(sub, p.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn az_alias_targets_resolve() {
        let cases = [
            (
                "Canonical",
                "0001-com-ubuntu-server-jammy",
                "22_04-lts-gen2",
                "Linux",
            ),
            (
                "MicrosoftWindowsServer",
                "WindowsServer",
                "2016-datacenter-gensecond",
                "Windows",
            ),
            (
                "MicrosoftWindowsServer",
                "WindowsServer",
                "2022-datacenter-g2",
                "Windows",
            ),
            ("debian", "DEBIAN-11", "11-backports-gen2", "Linux"),
        ];
        for (p, o, s, os) in cases {
            let i = image(p, o, s).unwrap_or_else(|| panic!("{p}:{o}:{s}"));
            assert_eq!(i.os, os);
            let latest = i.version("latest").unwrap();
            assert_eq!(i.versions_desc()[0], latest);
            assert_eq!(
                i.version_json("s", "eastus", latest)["properties"]["osDiskImage"]["operatingSystem"],
                os
            );
        }
        assert_eq!(
            image(
                "MicrosoftWindowsServer",
                "WindowsServer",
                "2016-datacenter-gensecond"
            )
            .unwrap()
            .version("latest"),
            Some("14393.7699.250110")
        );
        assert_eq!(os_of("MicrosoftWindowsDesktop", "x", "y"), "Windows");
        assert_eq!(os_of("Contoso", "x", "y"), "Linux");
    }

    #[test]
    fn providers_and_skus() {
        let p = provider("s", "microsoft.network").unwrap();
        assert_eq!(p["registrationState"], "Registered");
        assert_eq!(p["namespace"], "Microsoft.Network");
        assert!(provider("s", "Contoso.Widgets").is_none());
        assert_eq!(compute_skus(Some("EastUS")).len(), SIZES.len());
        assert!(compute_skus(Some("mars")).is_empty());
    }
}

#[cfg(test)]
mod alias_tests {
    #[test]
    fn every_alias_names_a_known_image() {
        let doc: serde_json::Value = serde_json::from_str(super::IMAGE_ALIASES_JSON).unwrap();
        let mut n = 0;
        for (_os, aliases) in doc["outputs"]["aliases"]["value"].as_object().unwrap() {
            for (alias, a) in aliases.as_object().unwrap() {
                let (p, o, s) = (
                    a["publisher"].as_str().unwrap(),
                    a["offer"].as_str().unwrap(),
                    a["sku"].as_str().unwrap(),
                );
                assert!(
                    super::image(p, o, s).is_some(),
                    "alias {alias} -> {p}:{o}:{s} unknown"
                );
                n += 1;
            }
        }
        assert!(n >= 10);
    }
}
