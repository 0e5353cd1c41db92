//! The IMDS handle: VMs in memory (backed by the store), per-VM listeners,
//! and the token path (cache, client assertion, `Directory.IssueToken`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use misim_proto::auth::ControlChannel;
use misim_proto::entra::v1::{IssueTokenRequest, directory_client::DirectoryClient};
use misim_runtime::Shutdown;
use misim_store::{Store, Table};
use misim_types::{SharedClock, SharedIds};
use parking_lot::RwLock;
use tokio::net::TcpListener;

use crate::config::{Config, VmAddresses, VmAddressing};
use crate::domain::cache::{CachedToken, TokenCache};
use crate::domain::{
    ASSERTION_LIFETIME, AssertionClaims, IdentityRecord, Kind, LiveIdentity, VmMeta, VmRecord,
};
use crate::error::ImdsError;

/// What IMDS is built from.
#[derive(Debug, Clone)]
pub struct Deps {
    /// IMDS's own store (holds identity private keys).
    pub store: Store,
    /// Time.
    pub clock: SharedClock,
    /// GUIDs (assertion `jti`).
    pub ids: SharedIds,
    /// Entra's directory, for `IssueToken`.
    pub directory: DirectoryClient<ControlChannel>,
    /// Process shutdown; per-VM listeners stop with it.
    pub shutdown: Shutdown,
}

/// A VM as served: its record and ready-to-sign identities.
#[derive(Debug)]
pub(crate) struct LiveVm {
    pub(crate) record: VmRecord,
    pub(crate) identities: Vec<Arc<LiveIdentity>>,
    /// Stops this VM's listener (a child of the process shutdown).
    cancel: Option<Shutdown>,
}

/// Why a token could not be obtained from Entra.
#[derive(Debug, Clone)]
pub(crate) enum IssueError {
    /// Entra rejected the resource (AADSTS500011); Entra's text.
    InvalidResource(String),
    /// Entra refused for another client-side reason.
    Rejected(String),
    /// Entra is unreachable or overloaded.
    Unavailable(String),
    /// Anything else.
    Internal(String),
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    table: Table<VmRecord>,
    pub(crate) clock: SharedClock,
    pub(crate) ids: SharedIds,
    directory: DirectoryClient<ControlChannel>,
    shutdown: Shutdown,
    /// VMs by lower-case resource id.
    vms: RwLock<HashMap<String, Arc<LiveVm>>>,
    pub(crate) cache: TokenCache,
    /// Serialises control-plane writes (reads never take it).
    write: tokio::sync::Mutex<()>,
    assertion_aud: String,
    /// The static address map of source-address mode (see
    /// [`Imds::set_static_addresses`]).
    static_addresses: RwLock<VmAddresses>,
    /// Per-VM listeners admit only the owner's processes (`crate::peer`).
    admit: Option<misim_runtime::serve::AdmitFn>,
}

/// Connections one VM's listener serves at once: a VM's processes need a
/// few; a client that opens hundreds must not exhaust the process's
/// descriptors for every other listener.
const VM_LISTENER_CONNECTIONS: usize = 64;

/// The Instance Metadata Service (cheap to clone).
#[derive(Clone)]
pub struct Imds {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Imds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imds")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(crate) fn vm_key(resource_id: &str) -> String {
    resource_id.trim_end_matches('/').to_ascii_lowercase()
}

fn random_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Imds {
    /// Opens IMDS on its store and, in per-VM mode, re-binds every persisted
    /// VM's listener (its previous port when free).
    pub async fn open(config: Config, deps: Deps) -> Result<Self, ImdsError> {
        config.validate().map_err(ImdsError::Invalid)?;
        let table = deps.store.table::<VmRecord>("vms")?;
        let assertion_aud = config.assertion_audience();
        let imds = Imds {
            inner: Arc::new(Inner {
                config,
                table,
                clock: deps.clock,
                ids: deps.ids,
                directory: deps.directory,
                shutdown: deps.shutdown,
                vms: RwLock::new(HashMap::new()),
                cache: TokenCache::default(),
                write: tokio::sync::Mutex::new(()),
                assertion_aud,
                static_addresses: RwLock::new(VmAddresses::default()),
                admit: crate::peer::owner_only(),
            }),
        };
        for (key, mut record) in imds.inner.table.all()? {
            let identities = record
                .identities
                .iter()
                .filter_map(|r| match LiveIdentity::new(r.clone()) {
                    Ok(l) => Some(Arc::new(l)),
                    Err(e) => {
                        tracing::error!(client_id = %r.client_id, error = %e, "skipping identity with unusable key");
                        None
                    }
                })
                .collect();
            let cancel = imds.start_listener(&key, &mut record, true).await?;
            imds.inner.table.put(&key, &record).await?;
            imds.inner.vms.write().insert(
                key,
                Arc::new(LiveVm {
                    record,
                    identities,
                    cancel,
                }),
            );
        }
        Ok(imds)
    }

    /// In per-VM mode binds and serves the VM's listener, recording its port.
    async fn start_listener(
        &self,
        key: &str,
        record: &mut VmRecord,
        reuse_port: bool,
    ) -> Result<Option<Shutdown>, ImdsError> {
        let VmAddressing::PerVmListener { bind_ip } = self.inner.config.addressing else {
            record.imds_endpoint.clear();
            return Ok(None);
        };
        let mut listener = None;
        if reuse_port && record.port != 0 {
            listener = TcpListener::bind(SocketAddr::new(bind_ip, record.port))
                .await
                .ok();
        }
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind(SocketAddr::new(bind_ip, 0)).await?,
        };
        let local = listener.local_addr()?;
        record.port = local.port();
        record.imds_endpoint = match local.ip() {
            IpAddr::V6(ip) => format!("http://[{ip}]:{}", local.port()),
            IpAddr::V4(ip) => format!("http://{ip}:{}", local.port()),
        };
        let cancel = self.inner.shutdown.child_token();
        let router = crate::http::vm_router(self.clone(), Arc::from(key));
        let stop = cancel.clone();
        let vm = key.to_owned();
        let limits = misim_runtime::serve::ServeLimits {
            max_connections: VM_LISTENER_CONNECTIONS,
            admit: self
                .inner
                .admit
                .clone()
                .map(|check| misim_runtime::serve::Admit {
                    check,
                    refusal: crate::http::refusal_router(),
                }),
            ..Default::default()
        };
        tokio::spawn(async move {
            if let Err(e) =
                misim_runtime::serve::serve_http_with(listener, router, None, stop, limits).await
            {
                tracing::error!(vm, error = %e, "vm listener failed");
            }
        });
        tracing::info!(vm = key, endpoint = %record.imds_endpoint, "vm imds listener started");
        Ok(Some(cancel))
    }

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

    /// All VMs, ordered by resource id.
    pub(crate) fn list(&self) -> Vec<Arc<LiveVm>> {
        let mut v: Vec<(String, Arc<LiveVm>)> = self
            .inner
            .vms
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|(_, v)| v).collect()
    }

    /// Creates or updates a VM (idempotent).
    pub(crate) async fn put_vm(&self, meta: VmMeta) -> Result<Arc<LiveVm>, ImdsError> {
        misim_types::ResourceId::parse(&meta.resource_id)
            .map_err(|e| ImdsError::Invalid(e.to_string()))?;
        let key = vm_key(&meta.resource_id);
        let _w = self.inner.write.lock().await;
        let existing = self.vm(&key);
        let live = match existing {
            Some(old) => {
                let mut record = old.record.clone();
                record.meta = meta;
                if record == old.record {
                    return Ok(old);
                }
                self.inner.table.put(&key, &record).await?;
                Arc::new(LiveVm {
                    record,
                    identities: old.identities.clone(),
                    cancel: old.cancel.clone(),
                })
            }
            None => {
                let mut record = VmRecord {
                    meta,
                    imds_endpoint: String::new(),
                    port: 0,
                    identity_header: random_secret(),
                    identities: Vec::new(),
                };
                let cancel = self.start_listener(&key, &mut record, false).await?;
                if let Err(e) = self.inner.table.put(&key, &record).await {
                    if let Some(c) = cancel {
                        c.cancel();
                    }
                    return Err(e.into());
                }
                Arc::new(LiveVm {
                    record,
                    identities: Vec::new(),
                    cancel,
                })
            }
        };
        self.inner.vms.write().insert(key, live.clone());
        Ok(live)
    }

    /// Deletes a VM, stops its listener, forgets its tokens.
    pub(crate) async fn delete_vm(&self, resource_id: &str) -> Result<bool, ImdsError> {
        let key = vm_key(resource_id);
        let _w = self.inner.write.lock().await;
        self.inner.table.remove(&key).await?;
        let old = self.inner.vms.write().remove(&key);
        match old {
            Some(vm) => {
                if let Some(c) = &vm.cancel {
                    c.cancel();
                }
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
        let _w = self.inner.write.lock().await;
        let old = self
            .vm(&key)
            .ok_or_else(|| ImdsError::VmNotFound(vm_resource_id.to_owned()))?;
        let replaced = |r: &IdentityRecord| {
            r.client_id.eq_ignore_ascii_case(&record.client_id)
                || (record.kind == Kind::System && r.kind == Kind::System)
        };
        if old.record.identities.contains(&record) {
            return Ok(());
        }
        let mut vm = old.record.clone();
        let mut identities = old.identities.clone();
        for r in vm.identities.iter().filter(|r| replaced(r)) {
            self.inner.cache.purge(&r.client_id);
        }
        vm.identities.retain(|r| !replaced(r));
        identities.retain(|i| !replaced(&i.record));
        vm.identities.push(record);
        identities.push(Arc::new(live));
        self.inner.table.put(&key, &vm).await?;
        self.inner
            .cache
            .purge(&vm.identities[vm.identities.len() - 1].client_id);
        self.inner.vms.write().insert(
            key,
            Arc::new(LiveVm {
                record: vm,
                identities,
                cancel: old.cancel.clone(),
            }),
        );
        Ok(())
    }

    /// Removes an identity from a VM; false when it was not there.
    pub(crate) async fn remove_identity(
        &self,
        vm_resource_id: &str,
        client_id: &str,
    ) -> Result<bool, ImdsError> {
        let key = vm_key(vm_resource_id);
        let _w = self.inner.write.lock().await;
        let Some(old) = self.vm(&key) else {
            return Ok(false);
        };
        if !old
            .record
            .identities
            .iter()
            .any(|r| r.client_id.eq_ignore_ascii_case(client_id))
        {
            return Ok(false);
        }
        let mut vm = old.record.clone();
        vm.identities
            .retain(|r| !r.client_id.eq_ignore_ascii_case(client_id));
        let identities = old
            .identities
            .iter()
            .filter(|i| !i.record.client_id.eq_ignore_ascii_case(client_id))
            .cloned()
            .collect();
        self.inner.table.put(&key, &vm).await?;
        self.inner.cache.purge(client_id);
        self.inner.vms.write().insert(
            key,
            Arc::new(LiveVm {
                record: vm,
                identities,
                cancel: old.cancel.clone(),
            }),
        );
        Ok(true)
    }

    /// A token for `identity` and `resource`: from the cache while the reuse
    /// policy allows, else from Entra with a fresh client assertion.
    pub(crate) async fn token(
        &self,
        identity: &LiveIdentity,
        resource: &str,
    ) -> Result<Arc<CachedToken>, IssueError> {
        let client_id = identity.record.client_id.as_str();
        self.inner
            .cache
            .get_or_fetch(
                client_id,
                resource,
                || self.inner.clock.unix(),
                |now| self.fetch_token(identity, resource, now),
            )
            .await
    }

    /// Asks Entra for a token with a fresh client assertion.
    async fn fetch_token(
        &self,
        identity: &LiveIdentity,
        resource: &str,
        now: i64,
    ) -> Result<CachedToken, IssueError> {
        let client_id = identity.record.client_id.as_str();
        let claims = AssertionClaims {
            aud: &self.inner.assertion_aud,
            iss: client_id,
            sub: client_id,
            jti: self.inner.ids.guid(),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME,
        };
        let assertion = identity
            .signer
            .sign(&claims)
            .map_err(|e| IssueError::Internal(e.to_string()))?;
        let mut dir = self.inner.directory.clone();
        let issued = dir
            .issue_token(IssueTokenRequest {
                client_id: client_id.to_owned(),
                client_assertion: assertion,
                resource: resource.to_owned(),
            })
            .await
            .map_err(|s| {
                let msg = s.message().to_owned();
                match s.code() {
                    tonic::Code::InvalidArgument | tonic::Code::NotFound
                        if msg.contains("AADSTS500011") =>
                    {
                        IssueError::InvalidResource(msg)
                    }
                    tonic::Code::InvalidArgument
                    | tonic::Code::NotFound
                    | tonic::Code::Unauthenticated
                    | tonic::Code::PermissionDenied
                    | tonic::Code::FailedPrecondition => IssueError::Rejected(msg),
                    tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::ResourceExhausted => IssueError::Unavailable(msg),
                    _ => IssueError::Internal(msg),
                }
            })?
            .into_inner();
        Ok(CachedToken::new(
            issued.access_token,
            issued.issued_at_unix,
            issued.not_before_unix,
            issued.expires_on_unix,
        ))
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
