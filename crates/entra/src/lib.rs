//! misim's Entra ID: one tenant.
//!
//! - Service principals (applications and managed identities) with their key
//!   credentials, kept in the store and served over `misim.entra.v1.Directory`.
//! - Token issuance: the OAuth2 client-credentials grant over HTTPS (v1 and v2 endpoints, secret or
//!   certificate assertion) and `Directory.IssueToken` for IMDS. Tokens are always v1 access tokens
//!   (docs/azure-protocol.md, Entra: managed-identity access tokens), signed by one RSA key
//!   generated on first open and parsed once.
//! - Workload identity federation: federated identity credentials on
//!   applications (Graph) and managed identities (gRPC, pushed by ARM), and
//!   the client-credentials grant with an external token as the assertion,
//!   verified through its issuer's discovery document and JWKS
//!   (docs/workload-identity.md).
//! - OIDC discovery, JWKS and MSAL instance discovery.
//! - The applications and service principals of Microsoft Graph v1.0
//!   (`/v1.0/applications`, `/v1.0/servicePrincipals`, `getByIds`), for
//!   bearer tokens Entra issued for `{public_url}/` or
//!   `https://graph.microsoft.com`. Applications own password and key
//!   credentials; their service principals authenticate with them.

#![recursion_limit = "256"]

mod config;
mod domain;
mod error;
mod federation;
mod grpc;
mod http;

use std::sync::Arc;

use anyhow::Context;
use misim_types::{SharedClock, SharedIds};
use tokio::net::TcpListener;

pub use config::{AdminBootstrap, Config, LIFETIME_BOUNDS_SECS, LaunchConfig, TokenPolicy};
pub use config::{
    ENV_ADMIN_APP_ID, ENV_ADMIN_DISPLAY_NAME, ENV_ADMIN_OBJECT_ID, ENV_ADMIN_SECRET,
    ENV_ADMIN_SECRET_FILE, ENV_DATA_DIR, ENV_EXTRA_RESOURCES, ENV_GRPC_ADDR, ENV_HTTP_ADDR,
    ENV_KEY_ROLL_INTERVAL, ENV_OIDC_ALLOWED_HOSTS, ENV_OIDC_ISSUER_KEYS, ENV_PUBLIC_URL,
    ENV_TENANT_ID, ENV_TOKEN_LIFETIME_APPLICATION, ENV_TOKEN_LIFETIME_MANAGED_IDENTITY,
};
pub use domain::federation::{MAX_PER_OWNER as MAX_FEDERATED_CREDENTIALS, TOKEN_EXCHANGE_AUDIENCE};
pub use domain::graph_permission::GraphPermission;
pub use domain::tokens::{APP_LIFETIME_SECS, MI_LIFETIME_SECS};
pub use error::EntraError;
pub use federation::{FederationConfig, RegisteredIssuer};

use domain::directory::{Directory, EnsureApp};
use domain::tokens::Issuer;

/// What Entra needs from its host.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The store (principals, signing key).
    pub store: misim_store::Store,
    /// Time source.
    pub clock: SharedClock,
    /// GUID source.
    pub ids: SharedIds,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    directory: Directory,
    issuer: Issuer,
    issuer_keys: federation::IssuerKeys,
    clock: SharedClock,
    ids: SharedIds,
    chaos: misim_chaos::Chaos,
}

/// The Entra service: a cheap, cloneable handle.
#[derive(Debug, Clone)]
pub struct Entra {
    inner: Arc<Inner>,
}

impl Entra {
    /// Opens the tenant: validates `config`, loads (or generates) the signing
    /// key and ensures the bootstrap administrator application.
    pub async fn open(config: Config, deps: Deps) -> Result<Self, EntraError> {
        Self::open_with(config, deps, FederationConfig::default()).await
    }

    /// [`Entra::open`] with the ways to reach external token issuers
    /// (workload identity federation): trusted CAs, hosts that may be fetched
    /// from, issuer keys given ahead of time.
    pub async fn open_with(
        config: Config,
        deps: Deps,
        federation: FederationConfig,
    ) -> Result<Self, EntraError> {
        config.validate()?;
        let issuer_keys =
            federation::IssuerKeys::open(federation, &deps.store, deps.clock.clone())?;
        // A retired key stays published until every token it signed has expired
        // (plus the skew verifiers allow).
        let keys = domain::signing::KeyRing::open(
            &deps.store,
            deps.clock.clone(),
            config.tokens.key_roll_every_secs,
            config.tokens.longest_lifetime_secs() + misim_token::verify::SKEW_SECS,
            &config.tenant_id,
        )
        .await?;
        let directory = Directory::open(&deps.store, deps.clock.clone(), deps.ids.clone())?;
        // A directory the last process closed clean has every index entry;
        // the repair reads every principal (about 1 s at 100,000 identities,
        // docs/performance.md finding 13).
        if !deps.store.take_closed_clean() {
            directory.repair_indexes().await?;
        }
        if let Some(admin) = &config.admin {
            directory
                .ensure_application(EnsureApp {
                    app_id: &admin.app_id,
                    object_id: &admin.object_id,
                    display_name: &admin.display_name,
                    secret: &admin.secret,
                })
                .await?;
        }
        let issuer = Issuer::new(&config, keys, deps.clock.clone(), deps.ids.clone());
        tracing::info!(tenant = %config.tenant_id, kid = issuer.keys.snapshot().current.kid(), "entra tenant open");
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                directory,
                issuer,
                issuer_keys,
                chaos: misim_chaos::Chaos::new(misim_chaos::Service::Entra, deps.clock.clone()),
                clock: deps.clock,
                ids: deps.ids,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The key id of the key that signs tokens now.
    pub fn signing_kid(&self) -> String {
        self.inner.issuer.keys.snapshot().current.kid().to_owned()
    }

    /// The HTTP surface (token endpoints, discovery, JWKS), without TLS.
    pub fn http_router(&self) -> axum::Router {
        self.inner.chaos.wrap(http::router(self.clone()))
    }

    /// Entra's fault rules and decision log (`misim fault`, `misim log`).
    pub fn chaos(&self) -> &misim_chaos::Chaos {
        &self.inner.chaos
    }

    /// The gRPC surface: `Directory`, `Federation`, gRPC health and
    /// reflection; every call but health needs a credential made with `control`.
    pub fn grpc_router(
        &self,
        control: &misim_proto::auth::ControlKey,
    ) -> tonic::transport::server::Router {
        use misim_proto::entra::v1::directory_server::DirectoryServer;
        use misim_proto::entra::v1::federation_server::FederationServer;
        let router = misim_proto::server::router_with(
            DirectoryServer::new(self.clone()),
            control,
            grpc::allowed,
        )
        .add_service(misim_proto::server::guarded(
            FederationServer::new(self.clone()),
            control,
            grpc::federation_allowed,
        ))
        .add_service(misim_proto::server::guarded(
            misim_proto::admin::v1::signing_keys_server::SigningKeysServer::new(self.clone()),
            control,
            grpc::owner_only,
        ));
        self.inner.chaos.add_grpc(router, control)
    }
}

/// Serves `svc` on already-bound listeners (HTTPS when `tls` is given) until
/// `shutdown` fires.
pub async fn serve(
    svc: Entra,
    http: TcpListener,
    grpc: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    control: misim_proto::auth::ControlKey,
    shutdown: misim_runtime::Shutdown,
) -> anyhow::Result<()> {
    let http_fut = misim_runtime::serve::serve_http(http, svc.http_router(), tls, shutdown.clone());
    let grpc_fut =
        misim_runtime::serve::serve_grpc(grpc, svc.grpc_router(&control), shutdown.clone());
    let result = tokio::try_join!(
        async { http_fut.await.context("entra https server") },
        async { grpc_fut.await.context("entra grpc server") },
    );
    if result.is_err() {
        shutdown.cancel();
    }
    result.map(|_| ())
}
