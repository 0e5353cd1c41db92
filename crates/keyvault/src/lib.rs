//! misim's Key Vault: the secrets data plane (docs/azure-protocol.md, Key Vault).
//!
//! Vaults are told apart by the first label of the `Host` header
//! (`https://{vault}.{dns_suffix}:{port}/`). Requests carry an Entra access
//! token (`aud` = `https://vault.azure.net` or the challenge resource); a
//! request without one gets the 401 bearer challenge that Key Vault clients
//! use to discover the tenant. Access is decided by ARM
//! (`Authorization.CheckVaultAccess`) on every request; vaults themselves
//! (existence, region, RBAC mode) are ARM's resources, secrets are ours.

pub mod config;
pub mod domain;
mod error;
mod http;

use std::sync::Arc;

use misim_proto::arm::v1::authorization_client::AuthorizationClient;
use misim_proto::auth::ControlChannel;
use misim_proto::keys::EntraKeys;
use misim_runtime::Shutdown;
use misim_store::Store;
use misim_types::{SharedClock, SharedIds};
use tokio::net::TcpListener;

pub use config::Config;
pub use error::KvError;

/// What Key Vault is built from.
#[derive(Debug, Clone)]
pub struct Deps {
    /// Key Vault's own store.
    pub store: Store,
    /// Time (token lifetimes, attributes).
    pub clock: SharedClock,
    /// Secret version ids (32 hex digits each, `hex32`).
    pub ids: SharedIds,
    /// Entra's signing keys, for bearer tokens.
    pub keys: EntraKeys,
    /// ARM's RBAC.
    pub authz: AuthorizationClient<ControlChannel>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) secrets: domain::Secrets,
    pub(crate) clock: SharedClock,
    pub(crate) ids: SharedIds,
    pub(crate) keys: EntraKeys,
    pub(crate) authz: AuthorizationClient<ControlChannel>,
    pub(crate) chaos: misim_chaos::Chaos,
}

/// The Key Vault service (cheap to clone).
#[derive(Clone)]
pub struct KeyVault {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVault")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl KeyVault {
    /// Opens Key Vault on its store.
    pub async fn open(config: Config, deps: Deps) -> Result<Self, KvError> {
        config.validate().map_err(KvError::BadParameter)?;
        let secrets = domain::Secrets::open(&deps.store)?;
        let chaos = misim_chaos::Chaos::new(misim_chaos::Service::KeyVault, deps.clock.clone());
        chaos.set_challenge(http::challenge_header(&config));
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                secrets,
                clock: deps.clock,
                ids: deps.ids,
                keys: deps.keys,
                authz: deps.authz,
                chaos,
            }),
        })
    }

    /// The HTTP surface (TLS is added by [`serve`]).
    pub fn http_router(&self) -> axum::Router {
        self.inner.chaos.wrap(http::router(self.clone()))
    }

    /// Key Vault's fault rules and decision log (`misim fault`, `misim log`).
    pub fn chaos(&self) -> &misim_chaos::Chaos {
        &self.inner.chaos
    }

    /// Key Vault's gRPC: only the owner's toolkit (`misim.admin.v1.Faults`
    /// and `Log`), since no service calls Key Vault.
    pub fn grpc_router(
        &self,
        control: &misim_proto::auth::ControlKey,
    ) -> tonic::transport::server::Router {
        self.inner.chaos.grpc_router(control)
    }
}

/// Serves Key Vault's gRPC (the toolkit) on `grpc` until `shutdown`.
pub async fn serve_grpc(
    kv: KeyVault,
    grpc: TcpListener,
    control: misim_proto::auth::ControlKey,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    use anyhow::Context;
    misim_runtime::serve::serve_grpc(grpc, kv.grpc_router(&control), shutdown)
        .await
        .context("key vault grpc listener")
}

/// Serves Key Vault on `http` (over TLS when given) until `shutdown`.
pub async fn serve(
    kv: KeyVault,
    http: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    use anyhow::Context;
    misim_runtime::serve::serve_http(http, kv.http_router(), tls, shutdown)
        .await
        .context("key vault listener")
}
