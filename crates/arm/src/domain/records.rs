//! What ARM stores. Ids keep the casing they were created with; table keys are
//! lower case and laid out `{sub}/{rg}/{type}/{name}` so listing is a prefix scan.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A resource group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RgRecord {
    /// Full id.
    pub id: String,
    /// Name as created.
    pub name: String,
    /// Region.
    pub location: String,
    /// Tags.
    pub tags: Map<String, Value>,
}

/// A managed identity's principal and credential.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Credential {
    /// Object id (`principalId`).
    pub principal_id: String,
    /// App id (`clientId`).
    pub client_id: String,
    /// PEM certificate registered with Entra.
    pub certificate_pem: String,
    /// PEM PKCS#8 private key.
    pub private_key_pem: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("principal_id", &self.principal_id)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// A user-assigned identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UamiRecord {
    /// Full id (`resourcegroups` lower-case, as the MSI RP returns it).
    pub id: String,
    /// Name as created.
    pub name: String,
    /// Region.
    pub location: String,
    /// Tags.
    pub tags: Map<String, Value>,
    /// Principal and credential.
    pub credential: Credential,
}

/// A virtual machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    /// Full id.
    pub id: String,
    /// Name as created.
    pub name: String,
    /// Resource group name as created.
    pub resource_group: String,
    /// Region.
    pub location: String,
    /// Tags.
    pub tags: Map<String, Value>,
    /// `properties.vmId`.
    pub vm_id: String,
    /// The caller's `properties` (without read-only fields and secrets).
    pub properties: Value,
    /// The system-assigned identity.
    pub sami: Option<Credential>,
    /// Attached UAMIs: lower-case id → id as sent.
    pub uamis: BTreeMap<String, String>,
}

/// A key vault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaultRecord {
    /// Full id.
    pub id: String,
    /// Name as created.
    pub name: String,
    /// Region.
    pub location: String,
    /// Tags.
    pub tags: Map<String, Value>,
    /// `properties` as returned (sku, tenantId, enableRbacAuthorization, vaultUri, …).
    pub properties: Value,
    /// Immutable id of this incarnation of the vault; Key Vault keys secrets by
    /// it. Empty in records written before it existed.
    #[serde(default)]
    pub uid: String,
}

/// A role assignment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentRecord {
    /// Full id: `{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`.
    pub id: String,
    /// Name (GUID).
    pub name: String,
    /// Scope as sent.
    pub scope: String,
    /// Role definition GUID (lower case).
    pub role_guid: String,
    /// Role definition id as sent.
    pub role_definition_id: String,
    /// Principal object id.
    pub principal_id: String,
    /// Principal type.
    pub principal_type: String,
}

/// A generic stored resource (the `Microsoft.Network` kinds): ARM keeps the
/// caller's `properties` plus the read-only fields it computes (ids of child
/// objects, addresses, `provisioningState`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// Full id.
    pub id: String,
    /// Name as created.
    pub name: String,
    /// Canonical `Namespace/type`.
    pub resource_type: String,
    /// Region.
    pub location: String,
    /// Tags.
    pub tags: Map<String, Value>,
    /// `sku`, when sent.
    pub sku: Option<Value>,
    /// `properties` as returned.
    pub properties: Value,
}

/// A resource-group deployment and its (already finished) operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// Full id.
    pub id: String,
    /// Name as created.
    pub name: String,
    /// `properties` as returned (state, parameters without secure values, outputs, error).
    pub properties: Value,
    /// The id of the async operation handed out by the last PUT.
    pub operation_id: String,
}
