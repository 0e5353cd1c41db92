//! ARM's JSON shapes (docs/azure-protocol.md, ARM): camelCase, ids with their
//! original casing. Rendered from records and configuration alone, for HTTP
//! responses and for what a template's `reference()` reads.

use serde_json::{Value, json};

use super::identity::IdentityType;
use crate::config::Config;
use crate::rbac::RoleDefinition;
use crate::records::*;

/// `/metadata/endpoints` (docs/azure-protocol.md, ARM: cloud metadata endpoints).
pub fn endpoints(c: &Config) -> Value {
    let arm = format!("{}/", c.public_url);
    json!({
        "name": "misim",
        "resourceManager": arm,
        "portal": arm,
        "gallery": arm,
        "batch": "https://batch.core.windows.net/",
        "media": "https://rest.media.azure.net",
        "sqlManagement": "https://management.core.windows.net:8443/",
        "vmImageAliasDoc": format!("{}/metadata/vm-image-aliases.json", c.public_url.trim_end_matches('/')),
        "graphAudience": "https://graph.windows.net/",
        "graph": "https://graph.windows.net/",
        "microsoftGraphResourceId": format!("{}/", c.entra_authority),
        "appInsightsResourceId": "https://api.applicationinsights.io",
        "logAnalyticsResourceId": "https://api.loganalytics.io",
        "authentication": {
            "loginEndpoint": format!("{}/", c.entra_authority),
            "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "suffixes": {
            "keyVaultDns": c.keyvault_dns_suffix,
            "storage": "core.windows.net",
            "sqlServerHostname": "database.windows.net",
            "acrLoginServer": "azurecr.io",
            "azureDataLakeStoreFileSystem": "azuredatalakestore.net",
            "azureDataLakeAnalyticsCatalogAndJob": "azuredatalakeanalytics.net",
            "mhsmDns": "managedhsm.azure.net",
            "mysqlServerEndpoint": "mysql.database.azure.com",
            "postgresqlServerEndpoint": "postgres.database.azure.com",
            "mariadbServerEndpoint": "mariadb.database.azure.com",
            "synapseAnalytics": "dev.azuresynapse.net",
            "attestationEndpoint": "attest.azure.net",
            "storageSyncEndpointSuffix": "afs.azure.net",
        },
    })
}

/// One subscription (docs/azure-protocol.md, ARM: subscriptions).
pub fn subscription(c: &Config) -> Value {
    json!({
        "id": format!("/subscriptions/{}", c.subscription_id),
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionId": c.subscription_id,
        "tenantId": c.tenant_id,
        "displayName": c.subscription_display_name,
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off",
        },
    })
}

/// A resource group (docs/azure-protocol.md, ARM: resource groups).
pub fn rg(r: &RgRecord) -> Value {
    json!({
        "id": r.id, "name": r.name, "type": "Microsoft.Resources/resourceGroups",
        "location": r.location, "tags": r.tags,
        "properties": {"provisioningState": "Succeeded"},
    })
}

/// A user-assigned identity (docs/azure-protocol.md, ARM: user-assigned identities).
pub fn uami(c: &Config, u: &UamiRecord) -> Value {
    json!({
        "id": u.id, "name": u.name, "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
        "location": u.location, "tags": u.tags,
        "properties": {
            "tenantId": c.tenant_id,
            "principalId": u.credential.principal_id,
            "clientId": u.credential.client_id,
            "isolationScope": "None",
        },
    })
}

/// A user-assigned identity's federated identity credential (the shape
/// azure-cli's recordings show).
pub fn fic(f: &FicRecord) -> Value {
    json!({
        "id": f.id, "name": f.name,
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
        "properties": {"issuer": f.issuer, "subject": f.subject, "audiences": f.audiences},
    })
}

/// The error code of a failed operation. Every persisted operation is
/// identity work of the managed-identity resource provider (principals,
/// certificates, IMDS identities), which Azure reports with this code.
pub const FAILED_OPERATION_CODE: &str = "FailedIdentityOperation";

/// A VM with its canonical identity block (docs/azure-protocol.md, ARM: VM identity block).
pub fn vm(
    c: &Config,
    v: &VmRecord,
    uamis: &[(String, Option<AttachedUami>)],
    expand_instance_view: bool,
) -> Value {
    let mut props = v.properties.clone();
    if let Some(p) = props.as_object_mut() {
        p.insert("vmId".into(), json!(v.vm_id));
        p.insert("provisioningState".into(), json!(v.state.as_str()));
        if expand_instance_view {
            // Compute reports the provisioning state, and why it failed, here.
            let provisioning = match v.state {
                ProvState::Succeeded => {
                    json!({"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded"})
                }
                ProvState::Updating => {
                    json!({"code": "ProvisioningState/updating", "level": "Info", "displayStatus": "Updating"})
                }
                ProvState::Deleting => {
                    json!({"code": "ProvisioningState/deleting", "level": "Info", "displayStatus": "Deleting"})
                }
                ProvState::Failed => json!({
                    "code": format!("ProvisioningState/failed/{FAILED_OPERATION_CODE}"),
                    "level": "Error",
                    "displayStatus": "Provisioning failed",
                    "message": v.error.as_deref().unwrap_or("The operation failed."),
                }),
            };
            p.insert(
                "instanceView".into(),
                json!({
                    "computerName": v.properties.pointer("/osProfile/computerName").and_then(Value::as_str).unwrap_or(&v.name),
                    "statuses": [
                        provisioning,
                        {"code": "PowerState/running", "level": "Info", "displayStatus": "VM running"},
                    ],
                }),
            );
        }
    }
    let mut out = json!({
        "id": v.id, "name": v.name, "type": "Microsoft.Compute/virtualMachines",
        "location": v.location, "tags": v.tags, "properties": props,
    });
    let kind = IdentityType {
        system: v.wants_sami(),
        user: !v.uamis.is_empty(),
    };
    if kind.system || kind.user {
        let mut ident = json!({"type": kind.canonical()});
        if let Some(s) = v.sami.as_ref().filter(|_| kind.system) {
            ident["principalId"] = json!(s.principal_id);
            ident["tenantId"] = json!(c.tenant_id);
        }
        if kind.user {
            let map: serde_json::Map<String, Value> = uamis
                .iter()
                .map(|(id, ids)| {
                    let mut val = json!({});
                    if let Some(a) = ids {
                        val["principalId"] = json!(a.principal_id);
                        // Unknown for identities attached before client ids were kept.
                        if !a.client_id.is_empty() {
                            val["clientId"] = json!(a.client_id);
                        }
                    }
                    (id.clone(), val)
                })
                .collect();
            ident["userAssignedIdentities"] = Value::Object(map);
        }
        out["identity"] = ident;
    }
    out
}

/// A vault from its record alone: `properties` (`vaultUri`, `tenantId`) were completed
/// when it was written.
pub fn vault(v: &VaultRecord) -> Value {
    json!({
        "id": v.id, "name": v.name, "type": "Microsoft.KeyVault/vaults",
        "location": v.location, "tags": v.tags, "properties": v.properties,
    })
}

/// A generic stored (network) resource.
pub fn network(r: &NetworkRecord) -> Value {
    let mut v = json!({
        "id": r.id, "name": r.name, "type": r.resource_type,
        "location": r.location, "tags": r.tags, "properties": r.properties,
    });
    if let Some(sku) = &r.sku {
        v["sku"] = sku.clone();
    }
    v
}

/// A resource-group deployment.
pub fn deployment(d: &DeploymentRecord) -> Value {
    json!({
        "id": d.id, "name": d.name, "type": "Microsoft.Resources/deployments",
        "properties": d.properties,
    })
}

/// A role assignment (docs/azure-protocol.md, ARM: role assignments).
pub fn assignment(a: &AssignmentRecord) -> Value {
    json!({
        "id": a.id, "name": a.name, "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": a.role_definition_id,
            "principalId": a.principal_id,
            "principalType": a.principal_type,
            "scope": a.scope,
        },
    })
}

/// A role definition with its id under the subscription (built-ins too, as Azure lists them).
pub fn role_definition(c: &Config, r: &RoleDefinition) -> Value {
    json!({
        "id": c.role_definition_id(&r.name), "name": r.name, "type": "Microsoft.Authorization/roleDefinitions",
        "properties": {
            "roleName": r.role_name,
            "type": if r.custom { "CustomRole" } else { "BuiltInRole" },
            "description": r.description,
            "assignableScopes": r.assignable_scopes, "permissions": r.permissions,
        },
    })
}

/// A compute async operation's status (docs/azure-protocol.md, ARM: async operations):
/// `{"startTime","status":"InProgress|Succeeded|Failed","name"}` (+ `endTime`, `error`).
pub fn operation(o: &OpRecord) -> Value {
    let status = match o.status {
        OpStatus::InProgress => "InProgress",
        OpStatus::Succeeded => "Succeeded",
        OpStatus::Failed => "Failed",
    };
    let mut out = json!({"startTime": o.start_time, "status": status, "name": o.id});
    if let Some(t) = &o.end_time {
        out["endTime"] = json!(t);
    }
    if o.status == OpStatus::Failed {
        out["error"] = json!({
            "code": FAILED_OPERATION_CODE,
            "message": o.error.clone().unwrap_or_else(|| "The operation failed.".into()),
        });
    }
    out
}
