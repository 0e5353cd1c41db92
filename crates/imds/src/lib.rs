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
//! One listener serves every VM; it tells them apart by the loopback address
//! a connection is made to, each VM having its own
//! ([`VmAddressing::PerVmAddress`], the embedded sandbox), or by the
//! connection's source address ([`VmAddressing::SourceAddress`], the compose
//! sandbox).
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
mod listener;
mod peer;
mod service;

use anyhow::Context;
use misim_proto::imds::v1::control_server::ControlServer;
use misim_runtime::Shutdown;
use tokio::net::TcpListener;

pub use config::{Config, VmAddressing};
pub use error::{ImdsError, IssueError};
pub use service::{Deps, Imds};

/// Connections the VMs' listener serves at once, all VMs together (per VM,
/// IMDS's rate and concurrency limits apply). Over it, new connections wait
/// in the kernel's backlog.
const VM_LISTENER_CONNECTIONS: usize = 4096;

impl Imds {
    /// Opens IMDS on its store and, in per-VM-address mode, binds the VMs'
    /// listener on the loopback device (the last run's port when free) and
    /// gives every VM its address; [`Imds::serve_vms`] serves it.
    pub async fn open(config: Config, deps: Deps) -> Result<Self, ImdsError> {
        Imds::build(config, deps).await
    }

    /// Per-VM-address mode: serves every VM's endpoint on the listener bound
    /// at open until the process shuts down (`Deps::shutdown`). Only the
    /// sandbox owner's processes are served (`peer`); a connection to an
    /// address no VM holds gets "Identity not found" as an unknown source
    /// address does in source-address mode.
    pub async fn serve_vms(&self) -> anyhow::Result<()> {
        let listener = self
            .take_vm_listener()
            .context("no imds vm listener to serve (source-address mode, or served already)")?;
        let limits = misim_runtime::serve::ServeLimits {
            max_connections: VM_LISTENER_CONNECTIONS,
            admit: peer::owner_only().map(|check| misim_runtime::serve::Admit {
                check,
                refusal: http::refusal_router(),
            }),
            ..Default::default()
        };
        let router = http::vm_router(self.clone(), http::By::LocalAddress);
        misim_runtime::serve::serve_http_with(
            listener,
            router,
            None,
            self.shutdown().clone(),
            limits,
        )
        .await
        .context("imds vm listener")
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
        http::vm_router(self.clone(), http::By::SourceAddress)
    }
}

/// Serves Control on `grpc` and, in source-address mode, the shared VM
/// endpoint on `shared_http`, until `shutdown`. In per-VM-address mode the
/// VMs' listener is served by [`Imds::serve_vms`], with the process: stopping
/// this (an outage of the control plane) leaves the VMs' endpoints up.
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
