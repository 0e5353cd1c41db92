//! Per-VM-address mode: the one VMs' listener (`crate::listener`), its
//! persisted port, and each VM's own loopback address (allocated by
//! [`AddressPool`], kept in the VM's record, looked up here per connection).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use misim_store::Store;
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpListener;

use super::{Imds, LISTENER_STATE, ListenerState, LiveVm, VmListener};
use crate::domain::VmRecord;
use crate::domain::addresses::AddressPool;
use crate::error::ImdsError;

impl VmListener {
    /// Binds the listener: on `port` when given, else on the port of the
    /// last run when it is free (VMs' endpoints stay the same across a
    /// restart), else on one the kernel picks. Addresses are restored later,
    /// with the VMs ([`Imds::restore`]).
    pub(super) async fn open(store: &Store, port: u16) -> Result<Self, ImdsError> {
        let table = store.table::<ListenerState>("vm_listener")?;
        let mut state = table.get(LISTENER_STATE)?.unwrap_or_default();
        let listener = match (port, state.port) {
            (0, 0) => crate::listener::bind_loopback_device(0)?,
            (0, last) => match crate::listener::bind_loopback_device(last) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(port = last, error = %e, "the last IMDS VM port is taken: every VM endpoint changes port");
                    crate::listener::bind_loopback_device(0)?
                }
            },
            (p, _) => crate::listener::bind_loopback_device(p)?,
        };
        let bound = listener.local_addr()?.port();
        if bound != state.port {
            state.port = bound;
            table.put(LISTENER_STATE, &state).await?;
        }
        tracing::info!(
            port = bound,
            "imds vm listener bound on the loopback device"
        );
        Ok(Self {
            listener: Mutex::new(Some(listener)),
            port: bound,
            table,
            pool: Mutex::new(AddressPool::resume(state.reserved, [])),
            vms: RwLock::new(HashMap::new()),
        })
    }

    /// A fresh address, the reservation persisted first. The caller holds
    /// IMDS's write lock.
    async fn allocate(&self) -> Result<Ipv4Addr, ImdsError> {
        loop {
            let needed = self.pool.lock().reservation_needed();
            if let Some(mark) = needed {
                let state = ListenerState {
                    port: self.port,
                    reserved: mark,
                };
                self.table.put(LISTENER_STATE, &state).await?;
                self.pool.lock().reserved(mark);
            }
            let vms = self.vms.read();
            let mut pool = self.pool.lock();
            if let Some(a) = pool.take(|a| vms.contains_key(&a)) {
                return Ok(a);
            }
            // Asked again, not `needed`: a take that skipped the block's last
            // index (always a `.255`) used the block up without handing out
            // an address; that is a reason to reserve the next block, not an
            // exhausted range.
            if pool.reservation_needed().is_none() {
                return Err(ImdsError::NoAddress);
            }
        }
    }
}

impl Imds {
    /// Per-VM-address mode: gives `record` an address unless it has its own
    /// one already (a record from before addresses, or one whose address
    /// another VM holds, gets a new one). True when the record changed.
    pub(super) async fn assign_address(
        &self,
        key: &str,
        record: &mut VmRecord,
    ) -> Result<bool, ImdsError> {
        let Some(l) = &self.inner.by_address else {
            return Ok(false);
        };
        if self.holds_address(key, record) {
            return Ok(false);
        }
        record.address = Some(l.allocate().await?);
        Ok(true)
    }

    /// True when `record` (of the VM `key`) has a VM address no other VM holds.
    pub(super) fn holds_address(&self, key: &str, record: &VmRecord) -> bool {
        let Some(l) = &self.inner.by_address else {
            return false;
        };
        record.address.is_some_and(|a| {
            crate::domain::addresses::is_vm_address(a)
                && l.vms.read().get(&a).is_none_or(|k| &**k == key)
        })
    }

    /// Makes `address` name the VM `key` (none: forget `key`'s `old` address).
    pub(super) fn map_address(&self, key: &str, old: Option<Ipv4Addr>, new: Option<Ipv4Addr>) {
        let Some(l) = &self.inner.by_address else {
            return;
        };
        let mut vms = l.vms.write();
        if let Some(old) = old
            && new != Some(old)
        {
            vms.remove(&old);
        }
        if let Some(new) = new {
            vms.insert(new, Arc::from(key));
        }
    }

    /// After restoring every VM: allocation resumes above every address in
    /// use and the persisted mark.
    pub(super) fn resume_addresses(&self) -> Result<(), ImdsError> {
        if let Some(l) = &self.inner.by_address {
            let mark = l.table.get(LISTENER_STATE)?.map_or(0, |s| s.reserved);
            let resumed = AddressPool::resume(mark, l.vms.read().keys().copied());
            *l.pool.lock() = resumed;
        }
        Ok(())
    }

    /// The VM's endpoint URL: `http://{its address}:{the VMs' port}`; empty
    /// in source-address mode (VMs call the one address Azure's IMDS has).
    pub(crate) fn endpoint(&self, record: &VmRecord) -> String {
        match (&self.inner.by_address, record.address) {
            (Some(l), Some(a)) => format!("http://{a}:{}", l.port),
            _ => String::new(),
        }
    }

    /// Per-VM-address mode: the VM (its key, and it) whose address a
    /// connection was made to.
    pub(crate) fn vm_by_local_address(&self, ip: IpAddr) -> Option<(Arc<str>, Arc<LiveVm>)> {
        let IpAddr::V4(ip) = ip else { return None };
        let key = self.inner.by_address.as_ref()?.vms.read().get(&ip)?.clone();
        let vm = self.vm(&key)?;
        Some((key, vm))
    }

    /// Per-VM-address mode: the VMs' listener bound at open, once (the
    /// caller serves it).
    pub(crate) fn take_vm_listener(&self) -> Option<TcpListener> {
        self.inner.by_address.as_ref()?.listener.lock().take()
    }

    /// Stops the VMs' listener with the process.
    pub(crate) fn shutdown(&self) -> &misim_runtime::Shutdown {
        &self.inner.shutdown
    }
}
