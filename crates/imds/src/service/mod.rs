//! The IMDS handle: VMs in memory (backed by the store), and the narrow API
//! the HTTP and gRPC edges use. Layering: `http`/`grpc` -> `service` ->
//! `domain`, the store and Entra (`crate::entra`); the service never names
//! an edge module.
//!
//! `vms` holds the control-plane writes and the VMs' loopback addresses
//! (step 3 of the flow), `token` the token path (step 6).

mod addressing;
mod token;
mod vms;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use misim_proto::auth::ControlChannel;
use misim_proto::entra::v1::directory_client::DirectoryClient;
use misim_runtime::Shutdown;
use misim_store::{Store, Table};
use misim_types::{SharedClock, SharedIds};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::config::{Config, VmAddresses, VmAddressing};
use crate::domain::addresses::AddressPool;
use crate::domain::cache::TokenCache;
use crate::domain::{LiveIdentity, VmRecord};
use crate::entra::EntraClient;
use crate::error::ImdsError;

/// What IMDS is built from.
#[derive(Debug, Clone)]
pub struct Deps {
    /// IMDS's own store (holds identity private keys).
    pub store: Store,
    /// What IMDS calls now: assertion lifetimes and the token cache's expiry.
    pub clock: SharedClock,
    /// GUIDs (assertion `jti`).
    pub ids: SharedIds,
    /// Entra's directory, for `IssueToken`.
    pub directory: DirectoryClient<ControlChannel>,
    /// Process shutdown; the VMs' listener stops with it.
    pub shutdown: Shutdown,
}

/// A VM as served: its record and ready-to-sign identities.
#[derive(Debug)]
pub(crate) struct LiveVm {
    pub(crate) record: VmRecord,
    pub(crate) identities: Vec<Arc<LiveIdentity>>,
}

/// What per-VM-address mode persists besides the VMs (table `vm_listener`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
struct ListenerState {
    /// The port of the VMs' listener, bound again at restart when free.
    port: u16,
    /// The addresses' high-water mark ([`AddressPool`]).
    reserved: u32,
}

/// The key of the one [`ListenerState`].
const LISTENER_STATE: &str = "state";

/// Per-VM-address mode: the one listener and the VMs' addresses.
struct VmListener {
    /// Bound at open, taken by [`Imds::take_vm_listener`] to be served.
    listener: Mutex<Option<TcpListener>>,
    /// Its port, in every VM's endpoint.
    port: u16,
    /// Persists [`ListenerState`].
    table: Table<ListenerState>,
    /// Serialised by `Inner::write`.
    pool: Mutex<AddressPool>,
    /// The VM (its key) at each address.
    vms: RwLock<HashMap<Ipv4Addr, Arc<str>>>,
}

struct Inner {
    config: Config,
    table: Table<VmRecord>,
    clock: SharedClock,
    ids: SharedIds,
    entra: EntraClient,
    shutdown: Shutdown,
    /// Per-VM-address mode's listener and addresses (`None`: source-address mode).
    by_address: Option<VmListener>,
    /// VMs by lower-case resource id.
    vms: RwLock<HashMap<String, Arc<LiveVm>>>,
    cache: TokenCache,
    /// Serialises control-plane writes (reads never take it).
    write: tokio::sync::Mutex<()>,
    assertion_aud: String,
    /// The static address map of source-address mode (see
    /// [`Imds::set_static_addresses`]).
    static_addresses: RwLock<VmAddresses>,
    /// Fault rules, throttle and decision log (`misim fault`, `misim log`).
    chaos: misim_chaos::Chaos,
    /// New identities (by client id) still settling (`set_identity_delay`).
    settling: misim_chaos::Settling,
}

/// The Instance Metadata Service (cheap to clone).
#[derive(Clone)]
pub struct Imds {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Imds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imds")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The key of a VM: its resource id, lower-case, without a trailing slash.
pub(crate) fn vm_key(resource_id: &str) -> String {
    resource_id.trim_end_matches('/').to_ascii_lowercase()
}

impl Imds {
    /// Opens IMDS on its store and, in per-VM-address mode, binds the VMs'
    /// listener (its previous port when free) and gives every VM an address.
    pub(crate) async fn build(config: Config, deps: Deps) -> Result<Self, ImdsError> {
        config.validate().map_err(ImdsError::Invalid)?;
        let table = deps.store.table::<VmRecord>("vms")?;
        let assertion_aud = config.assertion_audience();
        let chaos = misim_chaos::Chaos::new(misim_chaos::Service::Imds, deps.clock.clone());
        let by_address = match config.addressing {
            VmAddressing::PerVmAddress { port } => Some(VmListener::open(&deps.store, port).await?),
            VmAddressing::SourceAddress => None,
        };
        let imds = Imds {
            inner: Arc::new(Inner {
                config,
                table,
                clock: deps.clock,
                ids: deps.ids,
                entra: EntraClient::new(deps.directory),
                shutdown: deps.shutdown,
                by_address,
                vms: RwLock::new(HashMap::new()),
                cache: TokenCache::default(),
                write: tokio::sync::Mutex::new(()),
                assertion_aud,
                static_addresses: RwLock::new(VmAddresses::default()),
                chaos,
                settling: misim_chaos::Settling::default(),
            }),
        };
        imds.restore().await?;
        Ok(imds)
    }

    /// IMDS's fault rules, throttle and decision log. The throttle is off
    /// until the process turns it on (`misim up` and `misim-imds` do, with
    /// Azure's limit, unless told otherwise).
    pub fn chaos(&self) -> &misim_chaos::Chaos {
        &self.inner.chaos
    }

    /// Makes each identity pushed from now on answer "Identity not found"
    /// for `delay` (of the sandbox clock), as a new identity can on Azure;
    /// zero (the default) is at once.
    pub fn set_identity_delay(&self, delay: std::time::Duration) {
        self.inner.settling.set_delay(delay);
    }

    /// Seconds until `identity` is served, while it is still settling.
    pub(crate) fn settling(&self, identity: &LiveIdentity) -> Option<i64> {
        self.inner
            .settling
            .remaining(&identity.record.client_id, self.inner.clock.unix())
    }

    /// The VM with this key ([`vm_key`]).
    pub(crate) fn vm(&self, key: &str) -> Option<Arc<LiveVm>> {
        self.inner.vms.read().get(key).cloned()
    }

    /// Source-address mode: tells IMDS which address each VM calls from (the
    /// compose sandbox, where container addresses are fixed in the compose
    /// file and ARM reports only a virtual NIC address). The map names VMs by
    /// full resource id only, so a VM of the same name elsewhere is a stranger.
    pub fn set_static_addresses(&self, map: VmAddresses) {
        *self.inner.static_addresses.write() = map;
    }

    /// Source-address mode: the VM calling from `ip`, if exactly one does.
    pub(crate) fn vm_by_ip(&self, ip: IpAddr) -> Option<Arc<LiveVm>> {
        let vms = self.inner.vms.read();
        // The static map names the real address of a VM's container, so it
        // wins over the NIC address ARM reports (a virtual 10.0.0.x): a mapped
        // address serves that one VM or, while ARM has not created it, nobody.
        let statics = self.inner.static_addresses.read();
        if let Some(key) = statics.vm_at(ip) {
            return vms.get(key).cloned();
        }
        // A mapped VM answers only at its mapped address, never also at its
        // NIC address.
        unique(vms.iter().filter_map(|(k, v)| {
            (!statics.maps(k) && v.record.meta.private_ip.parse::<IpAddr>().ok() == Some(ip))
                .then_some(v)
        }))
    }

    /// At most `limit` VMs whose keys sort after `after`, in key order, and
    /// the key of the last one when more follow (the next page's `after`).
    /// Linear in the number of VMs, not `n log n`: only the page is sorted.
    pub(crate) fn list_page(
        &self,
        after: &str,
        limit: usize,
    ) -> (Vec<Arc<LiveVm>>, Option<String>) {
        let limit = limit.max(1);
        let vms = self.inner.vms.read();
        let mut page: Vec<(&String, &Arc<LiveVm>)> =
            vms.iter().filter(|(k, _)| k.as_str() > after).collect();
        let more = page.len() > limit;
        if more {
            page.select_nth_unstable_by(limit - 1, |a, b| a.0.cmp(b.0));
            page.truncate(limit);
        }
        page.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let next = more
            .then(|| page.last().map(|(k, _)| (*k).clone()))
            .flatten();
        (page.into_iter().map(|(_, v)| v.clone()).collect(), next)
    }

    /// The current time, Unix seconds (the injected clock).
    pub(crate) fn now(&self) -> i64 {
        self.inner.clock.unix()
    }

    /// A fresh id for an error answer's `correlationId`.
    pub(crate) fn correlation_id(&self) -> String {
        self.inner.ids.guid()
    }

    /// The tenant every identity of this IMDS belongs to.
    pub(crate) fn tenant_id(&self) -> &str {
        &self.inner.config.tenant_id
    }
}

/// The only VM of `candidates`. Two VMs claiming one address (e.g. 10.0.0.4 in
/// two VNets) identify neither:
/// serving either could hand a VM another VM's identity.
fn unique<'a>(mut candidates: impl Iterator<Item = &'a Arc<LiveVm>>) -> Option<Arc<LiveVm>> {
    match (candidates.next(), candidates.next()) {
        (Some(vm), None) => Some(vm.clone()),
        _ => None,
    }
}
