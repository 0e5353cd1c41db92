//! The scenario file: what `misim apply` declares and `misim export` writes (docs/scenarios.md).
//! Every struct refuses unknown fields, so a typo is an error naming its path, never ignored.

use serde::{Deserialize, Serialize};

/// The one format version this build reads and writes.
pub(crate) const API_VERSION: &str = "misim/v1";

/// A whole scenario.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Scenario {
    /// Always `misim/v1`.
    pub api_version: String,
    /// The sandbox clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<Clock>,
    /// Resource groups of the sandbox subscription.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_groups: Vec<Group>,
    /// User-assigned managed identities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<Identity>,
    /// Key Vaults and their secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vaults: Vec<Vault>,
    /// Virtual machines and their identities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<Vm>,
    /// Role assignments (matched by principal, role and scope).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub role_assignments: Vec<Assignment>,
    /// Fault rules (`misim fault add`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
}

/// The sandbox clock: moved to `at` unless it is already later (time only moves forward).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Clock {
    /// RFC 3339 (`2027-01-01T00:00:00Z`) or a date.
    pub at: String,
}

/// A resource group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Group {
    /// Name.
    pub name: String,
    /// Azure region (default `eastus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// A client id and object (principal) id to give a managed identity's service principal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PinnedIds {
    /// App (client) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Object (principal) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
}

/// A user-assigned managed identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Identity {
    /// Name.
    pub name: String,
    /// Its resource group (declared in `resourceGroups`).
    pub resource_group: String,
    /// Region (default: the group's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Fixed app (client) id (with `principalId`); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Fixed object (principal) id (with `clientId`); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
}

/// A vault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Vault {
    /// Name (global: 3-24 letters, digits and dashes).
    pub name: String,
    /// Its resource group.
    pub resource_group: String,
    /// Region (default: the group's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Secret>,
}

/// A secret: set to `value` unless it already holds it; without a value it is only
/// required to exist (created empty when missing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Secret {
    /// Name.
    pub name: String,
    /// Value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Vm {
    /// Name.
    pub name: String,
    /// Its resource group.
    pub resource_group: String,
    /// Region (default: the group's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// A system-assigned identity (`{}` for generated ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_assigned: Option<PinnedIds>,
    /// User-assigned identities: `NAME` or `GROUP/NAME` of declared identities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_assigned: Vec<String>,
}

/// Who a role assignment is for: exactly one field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Principal {
    /// A declared user-assigned identity (`NAME` or `GROUP/NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// A declared VM's system-assigned identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// Any principal by object id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
}

/// Where a role assignment applies: exactly one field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Scope {
    /// The sandbox subscription (`subscription: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<bool>,
    /// A declared resource group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group: Option<String>,
    /// A declared vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<String>,
    /// A declared identity (`NAME` or `GROUP/NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// A declared VM (`NAME` or `GROUP/NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// Any ARM resource id in the subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A role assignment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Assignment {
    /// A role's name (`Key Vault Secrets User`) or definition GUID.
    pub role: String,
    /// Who.
    pub principal: Principal,
    /// Where.
    pub scope: Scope,
}

/// A fault rule, as `misim fault add` takes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Fault {
    /// imds, entra, arm or keyvault.
    pub service: String,
    /// IMDS only: the VM (name or resource id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// A client or object id the request names or carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// A path glob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The status to answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Entra only: the AADSTS code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aadsts: Option<u32>,
    /// Retry-After, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u32>,
    /// Delay first: `250ms`, `2s`, `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
    /// Fire this many times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Fire for this fraction of matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
}

/// The format of a scenario file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

impl Format {
    /// By extension (`.json`, `.yaml`, `.yml`), else by content (`{` starts JSON).
    pub(crate) fn of(path: &std::path::Path, text: &str) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => Format::Json,
            Some(e) if e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml") => {
                Format::Yaml
            }
            _ if text.trim_start().starts_with('{') => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// Parses a scenario. Errors name the path of the offending field (`identities[2].clientID:
/// unknown field`), and the line for syntax errors.
pub(crate) fn parse(text: &str, format: Format) -> Result<Scenario, String> {
    let value: serde_json::Value = match format {
        Format::Json => serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?,
        Format::Yaml => yaml_serde::from_str(text).map_err(|e| format!("not YAML: {e}"))?,
    };
    if !value.is_object() {
        return Err("a scenario is a mapping (apiVersion, resourceGroups, ...)".into());
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// Renders a scenario in `format`.
pub(crate) fn render(s: &Scenario, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(s)? + "\n",
        Format::Yaml => yaml_serde::to_string(s)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let e = parse(
            "apiVersion: misim/v1\nidentities:\n  - name: a\n    resourceGroup: rg\n    clientID: x\n",
            Format::Yaml,
        )
        .unwrap_err();
        assert!(
            e.starts_with("identities[0].clientID: unknown field `clientID`"),
            "{e}"
        );
        let e = parse(
            r#"{"apiVersion": "misim/v1", "vms": [{"name": 1}]}"#,
            Format::Json,
        )
        .unwrap_err();
        assert!(e.starts_with("vms[0].name: invalid type"), "{e}");
    }

    #[test]
    fn yaml_and_json_read_the_same_and_render_back() {
        let y = "apiVersion: misim/v1\nresourceGroups:\n  - name: rg1\n";
        let j = r#"{"apiVersion":"misim/v1","resourceGroups":[{"name":"rg1"}]}"#;
        let a = parse(y, Format::Yaml).unwrap();
        assert_eq!(a, parse(j, Format::Json).unwrap());
        for f in [Format::Json, Format::Yaml] {
            assert_eq!(parse(&render(&a, f).unwrap(), f).unwrap(), a);
        }
        assert_eq!(Format::of("x.yml".as_ref(), "{"), Format::Yaml);
        assert_eq!(Format::of("x".as_ref(), " {}"), Format::Json);
    }
}
