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
    /// The certificate's validity (notBefore, notAfter), Unix seconds of the sandbox clock.
    /// `None` in records written before renewal existed: read from the certificate then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity: Option<(i64, i64)>,
    /// Certificates this one replaced, still registered with Entra until they expire.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<RetiredCert>,
}

/// A managed identity's earlier certificate: Entra keeps accepting it until `not_after`
/// (the overlap of a renewal), then ARM removes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredCert {
    /// Upper-case hex SHA-1 thumbprint (Entra's key for it).
    pub thumbprint_sha1: String,
    /// Its expiry, Unix seconds.
    pub not_after: i64,
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
    pub tags: Map<String, Value>,
    /// `properties.vmId`.
    pub vm_id: String,
    /// The caller's `properties` (without read-only fields and secrets).
    pub properties: Value,
    /// The system-assigned identity.
    pub sami: Option<Credential>,
    /// Attached UAMIs: lower-case id → id as sent. A deleted UAMI stays
    /// listed (as in Azure) until the VM is updated without it.
    pub uamis: BTreeMap<String, String>,
    /// Whether the system-assigned identity is wanted (`None`: as `sami`);
    /// the pending operation converges `sami` to it.
    #[serde(default)]
    pub want_sami: Option<bool>,
    /// `properties.provisioningState`.
    #[serde(default)]
    pub state: ProvState,
    /// The operation that last changed the VM (its async status URL).
    #[serde(default)]
    pub op: Option<String>,
    /// Why the last operation failed.
    #[serde(default)]
    pub error: Option<String>,
    /// The principal and client id each UAMI had when it was attached
    /// (lower-case id → ids): a UAMI deleted and created again under the same
    /// id is a new identity that the VM does not carry until it is assigned
    /// again, and a deleted one stays listed with these ids, as in Azure.
    #[serde(default)]
    pub uami_principals: BTreeMap<String, AttachedUami>,
}

/// What a VM recorded about a user-assigned identity when it was attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "AttachedRepr")]
pub struct AttachedUami {
    /// The identity's object id (`principalId`) when it was attached.
    pub principal_id: String,
    /// `clientId`; empty in records written when only the principal was kept.
    pub client_id: String,
}

/// The stored forms of [`AttachedUami`]: the current object, or the bare
/// principal id that records written before client ids were kept hold.
#[derive(Deserialize)]
#[serde(untagged)]
enum AttachedRepr {
    Ids {
        principal_id: String,
        #[serde(default)]
        client_id: String,
    },
    PrincipalOnly(String),
}

impl From<AttachedRepr> for AttachedUami {
    fn from(r: AttachedRepr) -> Self {
        match r {
            AttachedRepr::Ids {
                principal_id,
                client_id,
            } => Self {
                principal_id,
                client_id,
            },
            AttachedRepr::PrincipalOnly(principal_id) => Self {
                principal_id,
                client_id: String::new(),
            },
        }
    }
}

impl VmRecord {
    /// Whether the VM (will) have a system-assigned identity.
    pub fn wants_sami(&self) -> bool {
        self.want_sami.unwrap_or(self.sami.is_some())
    }
}

/// A resource's `provisioningState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ProvState {
    /// The last write has converged (the default: most resources have no cross-service work).
    #[default]
    Succeeded,
    /// Cross-service work pending.
    Updating,
    /// Deletion pending.
    Deleting,
    /// The last operation could not complete.
    Failed,
}

impl ProvState {
    /// As Azure spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProvState::Succeeded => "Succeeded",
            ProvState::Updating => "Updating",
            ProvState::Deleting => "Deleting",
            ProvState::Failed => "Failed",
        }
    }
}

/// What a persisted operation converges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OpKind {
    /// Bring Entra and IMDS in line with the VM record under `target`
    /// (or delete it everywhere when the record says `Deleting`).
    Vm,
    /// A deleted UAMI: remove it from every VM's IMDS, delete its principal.
    UamiDelete {
        /// The UAMI's id.
        uami_id: String,
        /// Its principal's object id: deleted in Entra once no VM's IMDS holds the identity.
        principal_id: String,
        /// Its client id, which each VM's IMDS knows the identity by (`RemoveIdentity`).
        client_id: String,
    },
    /// A UAMI creation that did not complete: delete any principal created
    /// under `request_id` unless the UAMI record owns it.
    UamiCreate {
        /// `Directory.CreateServicePrincipal` request id.
        request_id: String,
    },
    /// Bring Entra's federated identity credential `name` of the principal
    /// `client_id` in line with ARM's record under `target`'s identity:
    /// put it when the record exists (for that principal), else delete it.
    FicSync {
        /// The identity's client (app) id when the write was made.
        client_id: String,
        /// The credential's name.
        name: String,
    },
    /// Renew the certificate of the identity under `target` (a VM's system-assigned
    /// identity, or a user-assigned identity) when it is due, push the current one to
    /// IMDS, and remove expired earlier ones from Entra (`domain::renewal`).
    CredentialRoll {
        /// The identity's principal when the roll was scheduled: a different one
        /// (the identity was replaced) is left alone.
        principal_id: String,
        /// Renew whatever the certificate's age (`misim identity renew`); cleared,
        /// in the same write that records the renewal done, so a resumed operation
        /// does not renew twice. Absent in records from before it existed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
}

/// A federated identity credential of a user-assigned identity, as ARM
/// stores it (Entra holds the copy it matches tokens against).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FicRecord {
    /// Full id (under the identity's id).
    pub id: String,
    /// Name as created.
    pub name: String,
    /// The external issuer (an https URL).
    pub issuer: String,
    /// The external subject, matched case-sensitively.
    pub subject: String,
    /// Accepted audiences (one).
    pub audiences: Vec<String>,
}

impl OpKind {
    /// Whether the operation may fail for good after repeated refusals:
    /// those whose record stays for the user to retry from, and renewals,
    /// which the next scan schedules again.
    pub fn may_fail(&self) -> bool {
        matches!(
            self,
            OpKind::Vm | OpKind::FicSync { .. } | OpKind::CredentialRoll { .. }
        )
    }
}

/// An operation's status (compute's async operation shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpStatus {
    /// Still converging (written before the first peer call).
    InProgress,
    /// Every peer agrees with the record.
    Succeeded,
    /// Given up after repeated refusals (VM and federated-credential operations only): the
    /// resource's record keeps the error for the user to retry from.
    Failed,
}

/// A persisted cross-service operation: written before any gRPC call,
/// completed after the last one; the reconciler resumes it after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpRecord {
    /// Operation id (GUID).
    pub id: String,
    /// Order of creation (ops on one target run oldest first).
    pub seq: u64,
    /// The table key of the resource it converges.
    pub target: String,
    /// The resource's id.
    pub resource_id: String,
    /// What to do.
    pub kind: OpKind,
    /// `InProgress` until the reconciler or the inline run completes it; what a status URL
    /// reports.
    pub status: OpStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// RFC 3339.
    pub start_time: String,
    /// RFC 3339, once finished.
    pub end_time: Option<String>,
    /// Unix seconds, once finished: when the record may be pruned from.
    #[serde(default)]
    pub ended_unix: Option<i64>,
    /// Attempts so far.
    pub attempts: u32,
    /// Attempts that failed with a non-transient error.
    #[serde(default)]
    pub hard_failures: u32,
    /// Principals to delete before completing (a disabled or replaced SAMI).
    pub retire: Vec<String>,
    /// The request id of a SAMI principal being created.
    pub sami_request: Option<String>,
    /// The credential being registered: a VM operation's SAMI credential (ids ARM chose and a
    /// certificate for them, written with the intent, sent with `CreateServicePrincipal`; or,
    /// where a reservation gave the principal other ids, one for those, persisted before
    /// `AddKeyCredential`), or a renewal's new certificate.
    pub pending_cred: Option<Credential>,
    /// Set when the operation has failed for good but still has cleanup to
    /// do (principals to retire, an abandoned SAMI request): the error it
    /// will finish with once that is done. Cleanup never fails for good.
    #[serde(default)]
    pub failed: Option<String>,
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
    /// `principalType` as sent (`ServicePrincipal` when absent); stored and echoed, not
    /// checked against Entra.
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm(uami_principals: Option<Value>) -> Value {
        let mut v = json!({
            "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
            "name": "vm1", "resource_group": "rg", "location": "eastus", "tags": {},
            "vm_id": "v", "properties": {}, "sami": null,
            "uamis": {"/x/id1": "/X/id1"},
        });
        if let Some(p) = uami_principals {
            v["uami_principals"] = p;
        }
        v
    }

    #[test]
    fn vm_records_of_every_earlier_shape_still_read() {
        // Before attached identities were recorded at all.
        let r: VmRecord = serde_json::from_value(vm(None)).unwrap();
        assert!(r.uami_principals.is_empty());
        assert_eq!(r.state, ProvState::Succeeded);
        // When only the principal id was kept.
        let r: VmRecord = serde_json::from_value(vm(Some(json!({"/x/id1": "p1"})))).unwrap();
        assert_eq!(
            r.uami_principals["/x/id1"],
            AttachedUami {
                principal_id: "p1".into(),
                client_id: String::new()
            }
        );
        // Now: both ids, and a round trip keeps them.
        let r: VmRecord = serde_json::from_value(vm(Some(
            json!({"/x/id1": {"principal_id": "p1", "client_id": "c1"}}),
        )))
        .unwrap();
        assert_eq!(r.uami_principals["/x/id1"].client_id, "c1");
        let again: VmRecord = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(again, r);
    }
}
