//! ARM's logic: resources, managed-identity provisioning (ARM acting as the
//! MSI resource provider, docs/contracts.md) and RBAC decisions. No axum,
//! tonic or generated proto types: peers are reached through [`crate::peers`].

mod assignments;
mod authz;
pub mod catalog;
pub mod deployment;
pub mod doctor;
pub mod federated;
mod groups;
pub mod identities;
pub mod identity;
pub mod model;
pub mod network;
pub mod orchestrate;
pub mod renew_now;
pub mod renewal;
mod resources;
pub mod roles;
mod vaults;
mod vms;

pub use resources::{Deleted, Pending, Written};

use misim_store::{CachedTable, Store, Table};
use misim_types::{SharedClock, SharedIds};
use serde_json::{Map, Value};

use crate::config::Config;
use crate::error::ArmError;
use crate::peers::Peers;
use crate::records::*;
use crate::resource::Kind;

/// The ARM core shared by the HTTP and gRPC edges.
#[derive(Debug)]
pub struct Core {
    pub(crate) config: Config,
    pub(crate) clock: SharedClock,
    ids: SharedIds,
    /// Entra and IMDS.
    peers: Peers,
    rgs: Table<RgRecord>,
    uamis: Table<UamiRecord>,
    /// Federated identity credentials, keyed under their identity's key.
    fics: Table<FicRecord>,
    /// Identities with a federated-credential write in flight.
    fic_writes: federated::InFlight,
    vms: Table<VmRecord>,
    vaults: Table<VaultRecord>,
    vault_names: Table<String>,
    /// Read whole on every authorization: kept in memory between writes.
    assignments: CachedTable<AssignmentRecord>,
    network: Table<NetworkRecord>,
    deployments: Table<DeploymentRecord>,
    custom_roles: CachedTable<roles::CustomRoleRecord>,
    ops: Table<OpRecord>,
    pending: Table<String>,
    locks: orchestrate::Locks,
    op_seq: std::sync::Mutex<u64>,
    /// New role assignments' simulated propagation delay.
    pub(crate) propagation: misim_chaos::Settling,
    /// When managed-identity certificates are next due for renewal.
    pub(crate) renewal: renewal::Renewal,
    /// When the background scans (renewal, operation pruning) are next due, so that a
    /// restart does not read every record to find nothing to do.
    schedule: Table<i64>,
}
/// A PUT's outcome: the record and whether it was created.
pub type Put<T> = (T, bool);

fn rg_key(sub: &str, rg: &str) -> String {
    format!("{sub}/{rg}/").to_ascii_lowercase()
}

fn res_key(sub: &str, rg: &str, kind: Kind, name: &str) -> String {
    format!("{sub}/{rg}/{}/{name}", kind.type_name()).to_ascii_lowercase()
}

fn tags_of(body: &Value) -> Result<Option<Map<String, Value>>, ArmError> {
    match body.get("tags") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(_) => Err(ArmError::InvalidRequestContent(
            "tags must be an object".into(),
        )),
    }
}

fn location_of(body: &Value) -> Option<String> {
    body.get("location")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl Core {
    /// Opens the tables.
    pub(crate) fn new(
        config: Config,
        store: &Store,
        clock: SharedClock,
        ids: SharedIds,
        peers: Peers,
    ) -> Result<Self, ArmError> {
        let schedule = renewal::Renewal::table(store)?;
        Ok(Self {
            config,
            clock,
            ids,
            peers,
            rgs: store.table("resource_groups")?,
            uamis: store.table("user_assigned_identities")?,
            fics: store.table("federated_identity_credentials")?,
            fic_writes: federated::InFlight::default(),
            vms: store.table("virtual_machines")?,
            vaults: store.table("vaults")?,
            vault_names: store.table("vault_names")?,
            assignments: CachedTable::new(store.table("role_assignments")?),
            network: store.table("network_resources")?,
            deployments: store.table("deployments")?,
            custom_roles: CachedTable::new(store.table("custom_role_definitions")?),
            ops: store.table("operations")?,
            pending: store.table("pending_operations")?,
            locks: orchestrate::Locks::default(),
            op_seq: std::sync::Mutex::new(0),
            propagation: misim_chaos::Settling::default(),
            renewal: renewal::Renewal::open(schedule.clone())?,
            schedule,
        })
    }

    // ------------------------------------------------------------ scopes

    /// The object id of the caller of an ARM bearer `token`.
    pub async fn authenticate(&self, token: &str) -> Result<String, ArmError> {
        self.peers.verify_bearer(token, self.clock.as_ref()).await
    }

    /// Fails unless `sub` is the configured subscription.
    pub fn check_sub(&self, sub: &str) -> Result<(), ArmError> {
        if sub.eq_ignore_ascii_case(&self.config.subscription_id) {
            Ok(())
        } else {
            Err(ArmError::SubscriptionNotFound(sub.to_owned()))
        }
    }

    /// The resource group, or 404 `ResourceGroupNotFound`.
    pub fn require_rg(&self, sub: &str, rg: &str) -> Result<RgRecord, ArmError> {
        self.check_sub(sub)?;
        self.rgs
            .get(&rg_key(sub, rg))?
            .ok_or_else(|| ArmError::ResourceGroupNotFound(rg.to_owned()))
    }

    fn not_found(kind: Kind, rg: &str, name: &str) -> ArmError {
        ArmError::ResourceNotFound {
            resource_type: kind.type_name().into(),
            name: name.into(),
            resource_group: rg.into(),
        }
    }

    fn list<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        table: &Table<T>,
        sub: &str,
        rg: Option<&str>,
        kind: Kind,
    ) -> Result<Vec<T>, ArmError> {
        self.check_sub(sub)?;
        let ty = format!("/{}/", kind.type_name().to_ascii_lowercase());
        let prefix = match rg {
            Some(rg) => {
                self.require_rg(sub, rg)?;
                rg_key(sub, rg)
            }
            None => format!("{}/", sub.to_ascii_lowercase()),
        };
        Ok(table
            .scan_prefix(&prefix)?
            .into_iter()
            .filter(|(k, _)| k.contains(&ty))
            .map(|(_, v)| v)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut t, &json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(t, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }

    #[test]
    fn keys_are_lower_case_prefixes() {
        assert_eq!(rg_key("S1", "RG"), "s1/rg/");
        assert_eq!(
            res_key("S1", "RG", Kind::Vm, "VM1"),
            "s1/rg/microsoft.compute/virtualmachines/vm1"
        );
        assert!(res_key("s1", "rg", Kind::Vm, "x").starts_with(&rg_key("s1", "rg")));
    }
}
