//! Virtual machines: the write that validates and records the desired
//! identities (the persisted operation in [`super::orchestrate`] converges
//! Entra and IMDS), reads with the UAMIs a VM shows, deletion.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::identity::{self, IdentityRequest, IdentityState};
use super::{Core, Put, catalog, location_of, merge_patch, res_key, tags_of};
use crate::error::ArmError;
use crate::records::*;
use crate::resource::Kind;

/// Attaching a user-assigned identity to a resource.
const UAMI_ASSIGN: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action";

/// Fills the read-only parts of a VM's `properties` that clients read back:
/// `storageProfile.osDisk.osType` (from the image), the OS disk's name and
/// storage type when sent as `null`, and the OS configuration block.
fn complete_vm_properties(p: &mut Map<String, Value>, vm_name: &str) {
    let image = p
        .get("storageProfile")
        .and_then(|s| s.get("imageReference"))
        .cloned()
        .unwrap_or(Value::Null);
    let text = |k: &str| image.get(k).and_then(Value::as_str).unwrap_or("");
    let os = catalog::os_of(text("publisher"), text("offer"), text("sku"));
    if let Some(i) = catalog::image(text("publisher"), text("offer"), text("sku"))
        && let Some(v) = i.version(text("version"))
        && let Some(Value::Object(r)) = p
            .get_mut("storageProfile")
            .and_then(|s| s.get_mut("imageReference"))
    {
        r.insert("exactVersion".into(), Value::String(v.into()));
    }
    if let Some(Value::Object(sp)) = p.get_mut("storageProfile") {
        let disk = sp
            .entry("osDisk")
            .or_insert_with(|| serde_json::json!({"createOption": "FromImage"}));
        if let Some(d) = disk.as_object_mut() {
            if d.get("osType").is_none_or(Value::is_null) {
                d.insert("osType".into(), Value::String(os.into()));
            }
            if d.get("name").is_none_or(Value::is_null) {
                d.insert("name".into(), Value::String(format!("{vm_name}_OsDisk_1")));
            }
            let md = d
                .entry("managedDisk")
                .or_insert_with(|| serde_json::json!({}));
            if let Some(m) = md.as_object_mut()
                && m.get("storageAccountType").is_none_or(Value::is_null)
            {
                m.insert(
                    "storageAccountType".into(),
                    Value::String("Premium_LRS".into()),
                );
            }
        }
    }
    let windows = p
        .get("storageProfile")
        .and_then(|s| s.pointer("/osDisk/osType"))
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("windows"));
    if let Some(Value::Object(os)) = p.get_mut("osProfile") {
        if windows {
            os.entry("windowsConfiguration").or_insert_with(
                || serde_json::json!({"provisionVMAgent": true, "enableAutomaticUpdates": true}),
            );
        } else {
            os.entry("linuxConfiguration").or_insert_with(
                || serde_json::json!({"disablePasswordAuthentication": false, "provisionVMAgent": true}),
            );
        }
        os.entry("secrets").or_insert_with(|| Value::Array(vec![]));
    }
}

/// The identities a VM has (`current`) and is to have after this write: the
/// body's `identity` block replaces them (PUT) or merges into them (PATCH).
fn identities(
    body: &Value,
    existing: Option<&VmRecord>,
    patch: bool,
) -> Result<(IdentityState, IdentityState), ArmError> {
    let current = existing
        .map(|v| IdentityState {
            // What the VM is to have, not what exists yet: while the system
            // identity's creation is pending it has no principal, and a PATCH
            // naming no identity must not drop it.
            system: v.wants_sami(),
            uamis: v.uamis.clone(),
        })
        .unwrap_or_default();
    let request = match body.get("identity") {
        None | Some(Value::Null) => None,
        Some(v) => Some(IdentityRequest::from_json(v)?),
    };
    let desired = match (patch, &request) {
        (true, None) => current.clone(),
        (true, Some(r)) => identity::merge(&current, r)?,
        (false, r) => identity::replace(&current, r.as_ref())?,
    };
    Ok((current, desired))
}

/// A VM's stored `properties`: the body's (merged into the stored ones for a
/// PATCH) without read-only fields and secrets, completed with what clients read back.
fn vm_properties(
    body: &Value,
    existing: Option<&VmRecord>,
    patch: bool,
    name: &str,
) -> Result<Value, ArmError> {
    let mut properties = match body.get("properties") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(ArmError::InvalidRequestContent(
                "properties must be an object".into(),
            ));
        }
    };
    if patch {
        let mut merged = existing
            .map(|v| v.properties.clone())
            .unwrap_or(Value::Object(Map::new()));
        merge_patch(&mut merged, &properties);
        properties = merged;
    }
    if let Some(p) = properties.as_object_mut() {
        for ro in ["provisioningState", "vmId", "instanceView"] {
            p.remove(ro);
        }
        if let Some(Value::Object(os)) = p.get_mut("osProfile") {
            os.remove("adminPassword");
            os.remove("customData");
        }
        complete_vm_properties(p, name);
    }
    Ok(properties)
}

/// A VM's tags after this write: the body's when it sends `tags`; else the
/// stored ones (a PATCH, or a PUT without `tags` over an existing VM keeps
/// them, as Azure does); else none.
fn vm_tags(
    body: &Value,
    existing: Option<&VmRecord>,
    patch: bool,
) -> Result<Map<String, Value>, ArmError> {
    Ok(match tags_of(body)? {
        Some(t) => t,
        None if patch || existing.is_some() => existing.map(|v| v.tags.clone()).unwrap_or_default(),
        None => Map::new(),
    })
}

/// The principal and client ids of the UAMIs being attached, kept on the VM
/// so that it can still show them after an identity is deleted or recreated.
fn attached_principals(attached: &BTreeMap<String, UamiRecord>) -> BTreeMap<String, AttachedUami> {
    attached
        .iter()
        .map(|(k, u)| {
            (
                k.clone(),
                AttachedUami {
                    principal_id: u.credential.principal_id.clone(),
                    client_id: u.credential.client_id.clone(),
                },
            )
        })
        .collect()
}

impl Core {
    /// Creates, replaces (PUT) or updates (PATCH) a VM, reconciling its identities.
    /// Checks `userAssignedIdentities/assign/action` for each newly attached UAMI.
    pub async fn put_vm(
        self: &Arc<Self>,
        principal: &str,
        sub: &str,
        rg: &str,
        name: &str,
        body: &Value,
        patch: bool,
    ) -> Result<Put<VmRecord>, ArmError> {
        let group = self.require_rg(sub, rg)?;
        if !body.is_object() {
            return Err(ArmError::InvalidRequestContent(
                "the body must be a JSON object".into(),
            ));
        }
        let key = res_key(sub, rg, Kind::Vm, name);
        let lock = self.locks.get(&key);
        let guard = lock.lock().await;
        let existing = self.writable_vm(&key, rg, name, patch)?;
        let (current, desired) = identities(body, existing.as_ref(), patch)?;
        let id = existing.as_ref().map(|v| v.id.clone()).unwrap_or_else(|| {
            format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{name}",
                self.config.subscription_id, group.name
            )
        });
        let (attached, links) = self.uamis_to_attach(&desired, &current, existing.as_ref())?;
        self.authorize_links(
            principal,
            "Microsoft.Compute/virtualMachines/write",
            &id,
            &links,
        )?;

        let properties = vm_properties(body, existing.as_ref(), patch, name)?;
        let mut rec = VmRecord {
            id: id.clone(),
            name: existing
                .as_ref()
                .map(|v| v.name.clone())
                .unwrap_or_else(|| name.to_owned()),
            resource_group: group.name.clone(),
            location: location_of(body)
                .or_else(|| existing.as_ref().map(|v| v.location.clone()))
                .unwrap_or_else(|| group.location.clone()),
            tags: vm_tags(body, existing.as_ref(), patch)?,
            vm_id: existing
                .as_ref()
                .map(|v| v.vm_id.clone())
                .unwrap_or_else(|| self.ids.guid()),
            properties,
            sami: existing.as_ref().and_then(|v| v.sami.clone()),
            uamis: desired.uamis.clone(),
            want_sami: Some(desired.system),
            state: ProvState::Updating,
            op: None,
            error: None,
            uami_principals: attached_principals(&attached),
        };
        // The system-assigned identity's credential, made before the intent
        // is written (`sami_intent`), unless an operation still pending is
        // to create the identity (only an existing VM can have one).
        let proposed = if desired.system
            && rec.sami.is_none()
            && !(existing.is_some() && self.sami_pending(&key)?)
        {
            Some(self.proposed_credential().await?)
        } else {
            None
        };
        // Intent first, then the record (one flush for both); the operation
        // converges Entra and IMDS.
        let (op, intent) = self.new_op_deferred(&key, &id, OpKind::Vm, sami_intent(proposed))?;
        rec.op = Some(op.id.clone());
        let recorded = self.vms.put_deferred(&key, &rec)?;
        intent.and(recorded).await?;
        drop(guard);
        let done = self.drive_inline(&key).await;
        let rec = self
            .vms
            .get(&key)?
            .ok_or_else(|| Self::not_found(Kind::Vm, rg, name))?;
        // Every write of this operation was awaited when it completed inline.
        // Otherwise what was read may not be durable yet (the operation cut
        // short by the inline budget, or a later request's record): reply
        // only once it is.
        if !done || rec.op.as_deref() != Some(op.id.as_str()) {
            self.vms.visible().await?;
        }
        tracing::info!(id = %rec.id, identity = desired.kind().canonical(), state = rec.state.as_str(), "virtual machine written");
        Ok((rec, existing.is_none()))
    }

    /// The stored VM a write at `key` starts from: `None` for a create (a
    /// PATCH needs an existing VM: 404), and 409 `OperationNotAllowed` while
    /// a delete of it is in progress. Call it under the VM's lock.
    fn writable_vm(
        &self,
        key: &str,
        rg: &str,
        name: &str,
        patch: bool,
    ) -> Result<Option<VmRecord>, ArmError> {
        let existing = self.vms.get(key)?;
        if patch && existing.is_none() {
            return Err(Self::not_found(Kind::Vm, rg, name));
        }
        if existing
            .as_ref()
            .is_some_and(|v| v.state == ProvState::Deleting)
        {
            return Err(ArmError::OperationNotAllowed(format!(
                "The operation is not allowed: virtual machine '{name}' is being deleted."
            )));
        }
        Ok(existing)
    }

    /// The UAMIs a VM is to carry (lower-case id → record), and the linked
    /// authorizations attaching them takes. Every UAMI must exist; new ones
    /// need the assign permission. So does one whose identity changed under
    /// the same id (deleted and created again): attaching it would hand the
    /// VM a principal the caller was never checked for.
    #[allow(clippy::type_complexity)]
    fn uamis_to_attach(
        &self,
        desired: &IdentityState,
        current: &IdentityState,
        existing: Option<&VmRecord>,
    ) -> Result<(BTreeMap<String, UamiRecord>, Vec<(&'static str, String)>), ArmError> {
        let mut attached = BTreeMap::new();
        let mut links = Vec::new();
        for (k, original) in &desired.uamis {
            let u = self.uami_by_id(original)?.ok_or_else(|| {
                ArmError::FailedIdentityOperation(format!(
                    "Identity '{original}' could not be found: the user-assigned identity does not exist."
                ))
            })?;
            let same_identity = current.uamis.contains_key(k)
                && existing
                    .and_then(|v| v.uami_principals.get(k))
                    .is_some_and(|a| a.principal_id == u.credential.principal_id);
            if !same_identity {
                links.push((UAMI_ASSIGN, u.id.clone()));
            }
            attached.insert(k.clone(), u);
        }
        Ok((attached, links))
    }

    /// A VM as stored, 404 `ResourceNotFound` (or `ResourceGroupNotFound`) otherwise; one being
    /// deleted is still found, in state `Deleting`.
    pub fn get_vm(&self, sub: &str, rg: &str, name: &str) -> Result<VmRecord, ArmError> {
        self.require_rg(sub, rg)?;
        self.vms
            .get(&res_key(sub, rg, Kind::Vm, name))?
            .ok_or_else(|| Self::not_found(Kind::Vm, rg, name))
    }

    /// The ids to show for each UAMI a VM lists (id as sent → ids, `None`
    /// when unknown): the identity's own while it exists and is the one that
    /// was attached; else, as Azure does for a deleted (or deleted and
    /// recreated) identity, the ids it had when it was attached.
    pub fn attached_uamis(
        &self,
        vm: &VmRecord,
    ) -> Result<Vec<(String, Option<AttachedUami>)>, ArmError> {
        let mut out = Vec::new();
        for (k, original) in &vm.uamis {
            let stored = vm.uami_principals.get(k);
            let live = self
                .uami_by_id(original)?
                .filter(|u| stored.is_none_or(|s| s.principal_id == u.credential.principal_id));
            let ids = match live {
                Some(u) => Some(AttachedUami {
                    principal_id: u.credential.principal_id,
                    client_id: u.credential.client_id,
                }),
                None => stored.cloned(),
            };
            out.push((original.clone(), ids));
        }
        Ok(out)
    }

    /// The UAMIs a VM carries: attached, existing, and the same identity
    /// (principal) that was attached.
    pub(crate) fn live_uamis(&self, vm: &VmRecord) -> Result<Vec<UamiRecord>, ArmError> {
        let mut out = Vec::new();
        for (k, original) in &vm.uamis {
            if let Some(u) = self.uami_by_id(original)?
                && vm
                    .uami_principals
                    .get(k)
                    .is_none_or(|a| a.principal_id == u.credential.principal_id)
            {
                out.push(u);
            }
        }
        Ok(out)
    }

    /// Deletes a VM, its system-assigned principal and its IMDS state:
    /// marks it `Deleting` (with a persisted operation) and runs the
    /// operation. `None` when it did not exist, else whether the deletion
    /// completed and the operation id.
    pub async fn delete_vm(
        self: &Arc<Self>,
        sub: &str,
        rg: &str,
        name: &str,
    ) -> Result<Option<(bool, String)>, ArmError> {
        self.require_rg(sub, rg)?;
        let key = res_key(sub, rg, Kind::Vm, name);
        let lock = self.locks.get(&key);
        let guard = lock.lock().await;
        let Some(mut rec) = self.vms.get(&key)? else {
            return Ok(None);
        };
        let op_id = match (&rec.state, &rec.op) {
            (ProvState::Deleting, Some(op)) => op.clone(),
            _ => {
                let op = self.new_op(&key, &rec.id, OpKind::Vm).await?;
                rec.state = ProvState::Deleting;
                rec.op = Some(op.id.clone());
                self.vms.put(&key, &rec).await?;
                op.id
            }
        };
        drop(guard);
        let done = self.drive_inline(&key).await;
        Ok(Some((done, op_id)))
    }
}

/// Puts in a VM operation's intent the request id of the principal the
/// operation will create and the credential it will be created with (the ids
/// ARM chose, and a certificate for them), when it is to create one: part of
/// the intent rather than writes of their own before the call to Entra, so
/// that whatever becomes of the operation, a principal made under it is found
/// again and deleted unless the VM took it, and a retried create sends the
/// same ids and certificate (Entra never holds a second one).
fn sami_intent(proposed: Option<Credential>) -> impl FnOnce(&mut OpRecord) {
    move |op| {
        if let Some(cred) = proposed {
            op.sami_request = Some(super::orchestrate::sami_request_id(op));
            op.pending_cred = Some(cred);
        }
    }
}
