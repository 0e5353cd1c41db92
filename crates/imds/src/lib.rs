//! misim's Instance Metadata Service (IMDS).
//!
//! ARM configures VMs and their managed identities over the `Control` gRPC
//! service; each VM then fetches tokens over plain HTTP exactly as on Azure
//! (`/metadata/identity/oauth2/token`, plus `/metadata/instance`,
//! `/metadata/identity/info`, `/metadata/versions`) and through an App
//! Service-style endpoint (`/msi/token`) for SDKs that hard-code the
//! real IMDS address ([`config::AZURE_IMDS_IP`], which misim never contacts).
//!
//! A token is obtained by signing a client assertion with the identity's key
//! (parsed once per identity) and calling Entra's `Directory.IssueToken`; the
//! result is cached per identity and resource under the policy of
//! [`domain::cache::reuse_until`].
//!
//! VMs are told apart by the listener they call ([`VmAddressing::PerVmListener`])
//! or by their source address ([`VmAddressing::SourceAddress`]).
//!
//! Layering: the edges (`http`, `grpc`) call the service's narrow API
//! (`service`), which uses the pure `domain`, the store and Entra
//! (`entra`, the one module that decodes Entra's statuses). This file wires
//! them together.

pub mod config;
pub mod domain;
mod entra;
mod error;
mod grpc;
mod http;
mod peer;
mod service;

use anyhow::Context;
use misim_proto::imds::v1::control_server::ControlServer;
use misim_runtime::Shutdown;
use tokio::net::TcpListener;

pub use config::{Config, VmAddressing};
pub use error::{ImdsError, IssueError};
pub use service::{Deps, Imds};

impl Imds {
    /// Opens IMDS on its store and, in per-VM mode, re-binds every persisted
    /// VM's listener (its previous port when free).
    pub async fn open(config: Config, deps: Deps) -> Result<Self, ImdsError> {
        let routers = service::VmRouters {
            vm: http::vm_router,
            refusal: http::refusal_router,
        };
        Imds::build(config, deps, routers).await
    }

    /// The Control gRPC service with tonic-health and reflection; every
    /// call but health needs a credential made with `control`.
    pub fn grpc_router(
        &self,
        control: &misim_proto::auth::ControlKey,
    ) -> tonic::transport::server::Router {
        let router = misim_proto::server::router_with(
            ControlServer::new(self.clone()),
            control,
            grpc::allowed,
        );
        self.chaos().add_grpc(router, control)
    }

    /// The shared HTTP router of source-address mode: the caller's IP
    /// (`PeerAddr`) must be some VM's `private_ip`.
    pub fn vm_router_for_source_address(&self) -> axum::Router {
        http::source_address_router(self.clone())
    }
}

/// Serves Control on `grpc` and, in source-address mode, the shared VM
/// endpoint on `shared_http`, until `shutdown`. Per-VM listeners are already
/// running (started by [`Imds::open`] and `PutVm`).
pub async fn serve(
    imds: Imds,
    shared_http: Option<TcpListener>,
    grpc: TcpListener,
    control: misim_proto::auth::ControlKey,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let grpc_fut =
        misim_runtime::serve::serve_grpc(grpc, imds.grpc_router(&control), shutdown.clone());
    let http_fut = async {
        match shared_http {
            Some(l) => misim_runtime::serve::serve_http(
                l,
                imds.vm_router_for_source_address(),
                None,
                shutdown.clone(),
            )
            .await
            .context("imds shared http listener"),
            None => Ok(()),
        }
    };
    let (g, h) = tokio::join!(grpc_fut, http_fut);
    g.context("imds grpc listener")?;
    h
}
