//! VMs and identities as ARM configures them (step 3 of the flow): the
//! control-plane writes, each persisted before it is served, and the VMs'
//! loopback addresses they assign (`addressing`).

use std::sync::Arc;

use super::{Imds, LiveVm, vm_key};
use crate::domain::{IdentityRecord, Kind, LiveIdentity, VmMeta, VmRecord};
use crate::error::ImdsError;

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

    /// Creates or updates a VM (idempotent).
    pub(crate) async fn put_vm(&self, meta: VmMeta) -> Result<Arc<LiveVm>, ImdsError> {
        misim_types::ResourceId::parse(&meta.resource_id)
            .map_err(|e| ImdsError::Invalid(e.to_string()))?;
        let key = vm_key(&meta.resource_id);
        // Writes are applied under the lock and awaited after it (misim_store's
        // deferred acknowledgement): concurrent writers share one flush.
        let w = self.inner.write.lock().await;
        let existing = self.vm(&key);
        let (live, durable) = match existing {
            Some(old) => {
                let mut record = old.record.clone();
                record.meta = meta;
                if record == old.record {
                    drop(w);
                    self.inner.table.visible().await?;
                    return Ok(old);
                }
                let durable = self.inner.table.put_deferred(&key, &record)?;
                let live = Arc::new(LiveVm {
                    record,
                    identities: old.identities.clone(),
                });
                (live, durable)
            }
            None => {
                let mut record = VmRecord {
                    meta,
                    address: None,
                    identity_header: random_secret(),
                    identities: Vec::new(),
                };
                self.assign_address(&key, &mut record).await?;
                let durable = self.inner.table.put_deferred(&key, &record)?;
                self.map_address(&key, None, record.address);
                let live = Arc::new(LiveVm {
                    record,
                    identities: Vec::new(),
                });
                (live, durable)
            }
        };
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
        if record.client_id.is_empty() {
            return Err(ImdsError::Invalid("identity.client_id is required".into()));
        }
        let live = LiveIdentity::new(record.clone()).map_err(|reason| ImdsError::BadKey {
            client_id: record.client_id.clone(),
            reason,
        })?;
        let key = vm_key(vm_resource_id);
        let w = self.inner.write.lock().await;
        let old = self
            .vm(&key)
            .ok_or_else(|| ImdsError::VmNotFound(vm_resource_id.to_owned()))?;
        let replaced = |r: &IdentityRecord| {
            r.client_id.eq_ignore_ascii_case(&record.client_id)
                || (record.kind == Kind::System && r.kind == Kind::System)
        };
        if old.record.identities.contains(&record) {
            drop(w);
            self.inner.table.visible().await?;
            return Ok(());
        }
        // A renewed credential of a served identity is not a new identity.
        let is_new = !old
            .record
            .identities
            .iter()
            .any(|r| r.client_id.eq_ignore_ascii_case(&record.client_id));
        let mut vm = old.record.clone();
        let mut identities = old.identities.clone();
        for r in vm.identities.iter().filter(|r| replaced(r)) {
            self.inner.cache.purge(&r.client_id);
        }
        vm.identities.retain(|r| !replaced(r));
        identities.retain(|i| !replaced(&i.record));
        vm.identities.push(record);
        identities.push(Arc::new(live));
        let durable = self.inner.table.put_deferred(&key, &vm)?;
        self.inner
            .cache
            .purge(&vm.identities[vm.identities.len() - 1].client_id);
        if is_new {
            let client_id = &vm.identities[vm.identities.len() - 1].client_id;
            self.inner
                .settling
                .created(client_id, self.inner.clock.unix());
        }
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
