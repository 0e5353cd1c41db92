//! misim's OIDC token issuers, for workload identity federation
//! (docs/workload-identity.md): what a pod or a CI job holds before it asks
//! Entra for a token.
//!
//! - One issuer per Kubernetes cluster, shaped like an AKS cluster's
//!   service-account issuer (`{public_base}/kubernetes/{cluster}/`, projected
//!   service-account tokens), and one shaped like GitHub Actions'
//!   (`{public_base}/github`).
//! - Each has its own RSA key, generated on first use and kept in the store,
//!   and serves its OIDC discovery document and JWKS over HTTPS
//!   ([`Oidc::http_router`], mounted by the host on a TLS listener whose
//!   public URL is `public_base`), so Entra verifies their tokens as it
//!   verifies any issuer's.
//! - Tokens are minted for the sandbox owner only, through the
//!   `misim.oidc.v1.Issuers` gRPC service ([`Oidc::grpc_router`]) or
//!   [`Oidc::mint`] in process.

pub mod config;
mod domain;
mod error;
mod grpc;
mod http;

use std::sync::Arc;

use misim_types::{SharedClock, SharedIds};

pub use domain::{
    DEFAULT_AUDIENCE, DEFAULT_LIFETIME, IssuerKind, IssuerRef, MAX_LIFETIME, MintRequest, Minted,
};
pub use error::OidcError;

/// The issuers' configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// The URL the issuers are served under, without a trailing slash
    /// (`https://localhost:{port}`): the prefix of every issuer URL.
    pub public_base: String,
    /// Clusters whose issuers exist from the start (others appear with their
    /// first token).
    pub clusters: Vec<String>,
}

impl Config {
    /// Checks the configuration before anything binds.
    pub fn validate(&self) -> Result<(), OidcError> {
        let ok = self
            .public_base
            .strip_prefix("https://")
            .is_some_and(|host| !host.is_empty() && !host.contains('/'));
        if !ok {
            return Err(OidcError::Config(format!(
                "public base {:?} must be https://host[:port] without a path or trailing slash (Entra fetches only over https)",
                self.public_base
            )));
        }
        for c in &self.clusters {
            IssuerRef::kubernetes(c)?;
        }
        Ok(())
    }
}

/// What the issuers need from their host.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The store (one signing key per issuer).
    pub store: misim_store::Store,
    /// Time source (`iat`, `exp`).
    pub clock: SharedClock,
    /// GUID source (`jti`).
    pub ids: SharedIds,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    issuers: domain::Issuers,
}

/// An issuer as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerInfo {
    /// Which issuer.
    pub issuer: IssuerRef,
    /// Its URL (`iss`).
    pub url: String,
    /// Its discovery document.
    pub discovery_url: String,
    /// Its JWKS URL, as the discovery document's `jwks_uri` names it.
    pub jwks_uri: String,
    /// Its key id.
    pub kid: String,
}

/// The issuers: a cheap, cloneable handle.
#[derive(Debug, Clone)]
pub struct Oidc {
    inner: Arc<Inner>,
}

impl Oidc {
    /// Opens the issuers: loads their keys and creates GitHub's and the
    /// configured clusters' on first open.
    pub async fn open(config: Config, deps: Deps) -> Result<Self, OidcError> {
        config.validate()?;
        let issuers = domain::Issuers::open(&deps.store, deps.clock, deps.ids)?;
        issuers.ensure(&IssuerRef::github()).await?;
        for c in &config.clusters {
            issuers.ensure(&IssuerRef::kubernetes(c)?).await?;
        }
        Ok(Self {
            inner: Arc::new(Inner { config, issuers }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Signs a token with the issuer's key, creating issuer and key on first use; a bad
    /// subject or lifetime (1 s to 24 h) is refused before any key is made.
    pub async fn mint(&self, req: MintRequest) -> Result<Minted, OidcError> {
        self.inner
            .issuers
            .mint(&self.inner.config.public_base, req)
            .await
    }

    /// Every issuer: GitHub's first, then clusters by name.
    pub async fn issuers(&self) -> Vec<IssuerInfo> {
        let base = &self.inner.config.public_base;
        let mut all: Vec<IssuerInfo> = self
            .inner
            .issuers
            .list()
            .await
            .into_iter()
            .map(|(r, kid)| IssuerInfo {
                url: r.url(base),
                discovery_url: r.discovery_url(base),
                jwks_uri: r.jwks_uri(base),
                issuer: r,
                kid,
            })
            .collect();
        all.sort_by(|a, b| {
            (a.issuer.kind != IssuerKind::GitHub, &a.issuer.cluster)
                .cmp(&(b.issuer.kind != IssuerKind::GitHub, &b.issuer.cluster))
        });
        all
    }

    /// The discovery documents and JWKS, without TLS: the host serves them
    /// over HTTPS at `public_base`.
    pub fn http_router(&self) -> axum::Router {
        http::router(self.clone())
    }

    /// The gRPC surface: `Issuers` (the sandbox owner only), health and
    /// reflection; every call but health needs a credential made with `control`.
    pub fn grpc_router(
        &self,
        control: &misim_proto::auth::ControlKey,
    ) -> tonic::transport::server::Router {
        use misim_proto::oidc::v1::issuers_server::IssuersServer;
        misim_proto::server::router_with(IssuersServer::new(self.clone()), control, grpc::allowed)
    }
}

/// Serves the issuers' documents over HTTPS on `http` and their gRPC surface
/// on `grpc` until `shutdown`; a failure of either stops both.
pub async fn serve(
    svc: Oidc,
    http: tokio::net::TcpListener,
    grpc: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    control: misim_proto::auth::ControlKey,
    shutdown: misim_runtime::Shutdown,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let http_fut = misim_runtime::serve::serve_http(http, svc.http_router(), tls, shutdown.clone());
    let grpc_fut =
        misim_runtime::serve::serve_grpc(grpc, svc.grpc_router(&control), shutdown.clone());
    let result = tokio::try_join!(
        async { http_fut.await.context("oidc https server") },
        async { grpc_fut.await.context("oidc grpc server") },
    );
    if result.is_err() {
        shutdown.cancel();
    }
    result.map(|_| ())
}
