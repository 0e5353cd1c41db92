//! VMs and identities as ARM configures them (step 3 of the flow): the
//! control-plane writes, each persisted before it is served, and the VMs'
//! loopback addresses they assign (`addressing`).

use std::sync::Arc;

use super::{Imds, LiveVm, vm_key};
use crate::domain::{IdentityRecord, Kind, LiveIdentity, VmMeta, VmRecord};
use crate::error::ImdsError;

/// An identity ARM configures, checked before any write: a client id, and a
/// key that parses (a bad key is refused now, not at its first token).
fn checked_identity(record: IdentityRecord) -> Result<(IdentityRecord, LiveIdentity), ImdsError> {
    if record.client_id.is_empty() {
        return Err(ImdsError::Invalid("identity.client_id is required".into()));
    }
    let live = LiveIdentity::new(record.clone()).map_err(|reason| ImdsError::BadKey {
        client_id: record.client_id.clone(),
        reason,
    })?;
    Ok((record, live))
}

fn random_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Imds {
    /// Loads every persisted VM and, in per-VM-address mode, its address:
    /// a VM keeps its address (so its endpoint) across restarts; a record
    /// without one (written before VMs had addresses) gets one now.
    pub(super) async fn restore(&self) -> Result<(), ImdsError> {
        let mut unaddressed = Vec::new();
        // Streamed, one record at a time: collecting every record first held
        // two copies of 100,000 VMs at the peak of a restart.
        self.inner.table.for_each_as(|key, record: VmRecord| {
            let identities = record
                .identities
                .iter()
                .map(|r| Arc::new(LiveIdentity::restored(r.clone())))
                .collect();
            if self.holds_address(&key, &record) {
                self.map_address(&key, None, record.address);
            } else {
                unaddressed.push(key.clone());
            }
            self.inner
                .vms
                .write()
                .insert(key, Arc::new(LiveVm { record, identities }));
        })?;
        self.resume_addresses()?;
        for key in unaddressed {
            let Some(old) = self.vm(&key) else { continue };
            let mut record = old.record.clone();
            if !self.assign_address(&key, &mut record).await? {
                continue;
            }
            self.inner.table.put(&key, &record).await?;
            self.map_address(&key, None, record.address);
            tracing::info!(vm = key, endpoint = %self.endpoint(&record), "vm given an imds address");
            self.inner.vms.write().insert(
                key,
                Arc::new(LiveVm {
                    record,
                    identities: old.identities.clone(),
                }),
            );
        }
        Ok(())
    }

    /// Creates or updates a VM (idempotent) and configures `identities` on
    /// it, each as [`put_identity`](Self::put_identity) would, in one durable
    /// write: ARM's VM operation puts a VM with every identity it carries in
    /// one call. Every identity is checked (its key parsed) before anything
    /// is written, so a bad one refuses the whole request.
    pub(crate) async fn put_vm(
        &self,
        meta: VmMeta,
        identities: Vec<IdentityRecord>,
    ) -> Result<Arc<LiveVm>, ImdsError> {
        misim_types::ResourceId::parse(&meta.resource_id)
            .map_err(|e| ImdsError::Invalid(e.to_string()))?;
        let checked = identities
            .into_iter()
            .map(checked_identity)
            .collect::<Result<Vec<_>, _>>()?;
        let key = vm_key(&meta.resource_id);
        // Writes are applied under the lock and awaited after it (misim_store's
        // deferred acknowledgement): concurrent writers share one flush.
        let w = self.inner.write.lock().await;
        let old = self.vm(&key);
        let (mut record, mut live_ids) = match &old {
            Some(old) => {
                let mut record = old.record.clone();
                record.meta = meta;
                (record, old.identities.clone())
            }
            None => {
                let record = VmRecord {
                    meta,
                    address: None,
                    identity_header: random_secret(),
                    identities: Vec::new(),
                };
                (record, Vec::new())
            }
        };
        for (identity, live) in checked {
            self.apply_identity(&mut record, &mut live_ids, identity, live);
        }
        if let Some(old) = old.as_ref().filter(|old| old.record == record) {
            // Nothing new: acknowledged once what was read is durable.
            drop(w);
            self.inner.table.visible().await?;
            return Ok(old.clone());
        }
        let created = old.is_none();
        if created {
            self.assign_address(&key, &mut record).await?;
        }
        let durable = self.inner.table.put_deferred(&key, &record)?;
        if created {
            self.map_address(&key, None, record.address);
        }
        let live = Arc::new(LiveVm {
            record,
            identities: live_ids,
        });
        self.inner.vms.write().insert(key, live.clone());
        drop(w);
        durable.await?;
        Ok(live)
    }

    /// Deletes a VM, stops serving its address, forgets its tokens.
    pub(crate) async fn delete_vm(&self, resource_id: &str) -> Result<bool, ImdsError> {
        let key = vm_key(resource_id);
        let _w = self.inner.write.lock().await;
        self.inner.table.remove(&key).await?;
        let old = self.inner.vms.write().remove(&key);
        match old {
            Some(vm) => {
                self.map_address(&key, vm.record.address, None);
                for i in &vm.identities {
                    self.inner.cache.purge(&i.record.client_id);
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Configures (or replaces) an identity on a VM. A new system-assigned
    /// identity replaces the old one: a VM has at most one.
    pub(crate) async fn put_identity(
        &self,
        vm_resource_id: &str,
        record: IdentityRecord,
    ) -> Result<(), ImdsError> {
        let (record, live) = checked_identity(record)?;
        let key = vm_key(vm_resource_id);
        let w = self.inner.write.lock().await;
        let old = self
            .vm(&key)
            .ok_or_else(|| ImdsError::VmNotFound(vm_resource_id.to_owned()))?;
        let mut vm = old.record.clone();
        let mut identities = old.identities.clone();
        if !self.apply_identity(&mut vm, &mut identities, record, live) {
            drop(w);
            self.inner.table.visible().await?;
            return Ok(());
        }
        let durable = self.inner.table.put_deferred(&key, &vm)?;
        self.inner.vms.write().insert(
            key,
            Arc::new(LiveVm {
                record: vm,
                identities,
            }),
        );
        drop(w);
        durable.await?;
        Ok(())
    }

    /// Puts one identity into a VM's record and live identities (under the
    /// write lock; the caller writes the record): a served identity of the
    /// same client id, or any system-assigned one for a system-assigned
    /// identity, is replaced and its cached tokens purged. False when the VM
    /// already serves exactly this identity (nothing changed).
    fn apply_identity(
        &self,
        vm: &mut VmRecord,
        identities: &mut Vec<Arc<LiveIdentity>>,
        record: IdentityRecord,
        live: LiveIdentity,
    ) -> bool {
        if vm.identities.contains(&record) {
            return false;
        }
        let replaced = |r: &IdentityRecord| {
            r.client_id.eq_ignore_ascii_case(&record.client_id)
                || (record.kind == Kind::System && r.kind == Kind::System)
        };
        // A renewed credential of a served identity is not a new identity.
        let is_new = !vm
            .identities
            .iter()
            .any(|r| r.client_id.eq_ignore_ascii_case(&record.client_id));
        for r in vm.identities.iter().filter(|r| replaced(r)) {
            self.inner.cache.purge(&r.client_id);
        }
        vm.identities.retain(|r| !replaced(r));
        identities.retain(|i| !replaced(&i.record));
        self.inner.cache.purge(&record.client_id);
        if is_new {
            self.inner
                .settling
                .created(&record.client_id, self.inner.clock.unix());
        }
        vm.identities.push(record);
        identities.push(Arc::new(live));
        true
    }

    /// Removes an identity from a VM; false when it was not there.
    pub(crate) async fn remove_identity(
        &self,
        vm_resource_id: &str,
        client_id: &str,
    ) -> Result<bool, ImdsError> {
        let key = vm_key(vm_resource_id);
        let w = self.inner.write.lock().await;
        let old = self.vm(&key).filter(|old| {
            old.record
                .identities
                .iter()
                .any(|r| r.client_id.eq_ignore_ascii_case(client_id))
        });
        let Some(old) = old else {
            // "Not there" may rest on a removal not yet durable.
            drop(w);
            self.inner.table.visible().await?;
            return Ok(false);
        };
        let mut vm = old.record.clone();
        vm.identities
            .retain(|r| !r.client_id.eq_ignore_ascii_case(client_id));
        let identities = old
            .identities
            .iter()
            .filter(|i| !i.record.client_id.eq_ignore_ascii_case(client_id))
            .cloned()
            .collect();
        let durable = self.inner.table.put_deferred(&key, &vm)?;
        self.inner.cache.purge(client_id);
        self.inner.vms.write().insert(
            key,
            Arc::new(LiveVm {
                record: vm,
                identities,
            }),
        );
        drop(w);
        durable.await?;
        Ok(true)
    }
}
