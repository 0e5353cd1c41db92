//! misim's Azure Resource Manager.
//!
//! Serves the ARM REST surface that the Azure CLI and SDKs use for managed
//! identities (docs/azure-protocol.md, ARM): subscriptions, resource groups, user-assigned
//! identities, VMs with their `identity` block, key vaults, role definitions
//! and assignments, the `Microsoft.Network` resources a VM needs, resource-group
//! template deployments (how `az vm create` works, see [`template`]), the
//! image/size/provider catalog, and `/metadata/endpoints`. It acts as the managed-identity
//! resource provider (creating service principals in Entra and pushing
//! credentials to IMDS, docs/contracts.md) and as the RBAC authority that Key
//! Vault asks over gRPC (`misim.arm.v1.Authorization`).
//!
//! Writes that span Entra and IMDS (VMs, user-assigned identities) are
//! persisted operations (`domain::orchestrate`): a VM write answers
//! `Succeeded` when its operation completes within the request, else
//! `Updating` with an `Azure-AsyncOperation` status URL that ends `Succeeded`
//! or `Failed`. A user-assigned identity is created synchronously: Entra
//! unavailable answers 503 and keeps nothing. A deployment runs inside its
//! PUT and hands out an `Azure-AsyncOperation` status that is already terminal.

pub mod config;
pub mod domain;
pub mod error;
mod grpc;
mod grpc_ops;
pub mod http;
mod peers;
pub mod rbac;
pub mod records;
pub mod resource;
pub mod template;

use std::sync::Arc;

use misim_proto::entra::v1::directory_client::DirectoryClient;
use misim_proto::entra::v1::federation_client::FederationClient;
use misim_proto::faults::PeerChannel;
use misim_proto::imds::v1::control_client::ControlClient;
use misim_runtime::Shutdown;
use misim_types::{SharedClock, SharedIds};
use tokio::net::TcpListener;

pub use config::{Config, ConfigError, Settings};
pub use error::ArmError;

/// What ARM needs from its environment.
#[derive(Debug, Clone)]
pub struct Deps {
    /// ARM's own store.
    pub store: misim_store::Store,
    /// What ARM calls now: token lifetimes, operation timestamps, the reconciler's pruning.
    pub clock: SharedClock,
    /// Every GUID ARM mints (operation ids, `vmId`s, the request ids that key principal
    /// creation, assignment names, deployment correlation ids); tests inject `SeqIds`.
    pub ids: SharedIds,
    /// Entra's signing keys (bearer-token verification).
    pub keys: misim_proto::keys::EntraKeys,
    /// Entra's directory (service principals). A [`PeerChannel`] so tests
    /// can fail single calls (`misim_proto::faults`).
    pub directory: DirectoryClient<PeerChannel>,
    /// Entra's federation service (user-assigned identities' federated
    /// identity credentials).
    pub federation: FederationClient<PeerChannel>,
    /// IMDS's control plane.
    pub imds: ControlClient<PeerChannel>,
}

/// A cheap handle on the running ARM.
#[derive(Debug, Clone)]
pub struct Arm {
    core: Arc<domain::Core>,
    chaos: misim_chaos::Chaos,
}

impl Arm {
    /// Opens ARM's tables and ensures the bootstrap role assignments.
    pub async fn open(config: Config, deps: Deps) -> Result<Self, ArmError> {
        let peers = peers::Peers::new(deps.keys, deps.directory, deps.federation, deps.imds);
        let chaos = misim_chaos::Chaos::new(misim_chaos::Service::Arm, deps.clock.clone());
        let core = domain::Core::new(config, &deps.store, deps.clock, deps.ids, peers)?;
        core.bootstrap().await?;
        Ok(Self {
            core: Arc::new(core),
            chaos,
        })
    }

    /// The HTTP surface (no TLS).
    pub fn http_router(&self) -> axum::Router {
        self.chaos.wrap(http::router(self.core.clone()))
    }

    /// Makes each new role assignment take effect only `delay` (of the
    /// sandbox clock) after it is created, as Azure's can; zero (the
    /// default) is at once.
    pub fn set_role_assignment_delay(&self, delay: std::time::Duration) {
        self.core.propagation.set_delay(delay);
    }

    /// Looks for managed-identity certificates due for renewal whenever the
    /// sandbox clock moves (`ClockService::subscribe`), besides the
    /// reconciler's own looks. Call before [`serve`].
    pub fn follow_clock(&self, moves: tokio::sync::watch::Receiver<i64>) {
        *self
            .core
            .renewal
            .clock_moves
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(moves);
    }

    /// Renews every managed-identity certificate due by the sandbox clock now,
    /// inline (the reconciler does the same in the background, in batches);
    /// returns how many renewals were scheduled. One an outage holds up stays
    /// pending and is retried by the reconciler.
    pub async fn renew_due_credentials(&self) -> Result<usize, ArmError> {
        self.core.renew_due_credentials().await
    }

    /// Renews the chosen managed identities' certificates now, whatever their
    /// age (`misim identity renew`, `Operations/RenewCredentials`); an unknown
    /// name fails the call before anything is renewed.
    pub async fn renew_credentials(
        &self,
        which: &domain::renew_now::RenewWhich,
    ) -> Result<Vec<domain::renew_now::Renewed>, ArmError> {
        self.core.renew_now(which).await
    }

    /// ARM's fault rules and decision log (`misim fault`, `misim log`).
    pub fn chaos(&self) -> &misim_chaos::Chaos {
        &self.chaos
    }

    /// The gRPC surface, with health and reflection; every call but health
    /// needs a credential made with `control`.
    pub fn grpc_router(
        &self,
        control: &misim_proto::auth::ControlKey,
    ) -> tonic::transport::server::Router {
        let authz = misim_proto::arm::v1::authorization_server::AuthorizationServer::new(
            grpc::AuthorizationService {
                core: self.core.clone(),
            },
        );
        let ops = misim_proto::arm::v1::operations_server::OperationsServer::new(
            grpc_ops::OperationsService {
                core: self.core.clone(),
            },
        );
        let router = misim_proto::server::router_with(authz, control, grpc::allowed).add_service(
            misim_proto::server::guarded(ops, control, grpc_ops::allowed),
        );
        self.chaos.add_grpc(router, control)
    }
}

/// Serves ARM's HTTP(S) and gRPC listeners until `shutdown` fires.
pub async fn serve(
    arm: Arm,
    http: TcpListener,
    grpc: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    control: misim_proto::auth::ControlKey,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let http_task =
        misim_runtime::serve::serve_http(http, arm.http_router(), tls, shutdown.clone());
    let grpc_task =
        misim_runtime::serve::serve_grpc(grpc, arm.grpc_router(&control), shutdown.clone());
    // The reconciler resumes pending cross-service operations (after a restart too).
    let reconciler = arm.core.clone().reconcile(shutdown.clone());
    let (h, g, ()) = tokio::join!(http_task, grpc_task, reconciler);
    h.context("arm http server")?;
    g.context("arm grpc server")?;
    Ok(())
}
