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
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                secrets,
                clock: deps.clock,
                ids: deps.ids,
                keys: deps.keys,
                authz: deps.authz,
            }),
        })
    }

    /// The HTTP surface (TLS is added by [`serve`]).
    pub fn http_router(&self) -> axum::Router {
        http::router(self.clone())
    }
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
