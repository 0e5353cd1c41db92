//! Test-only helpers shared by misim's component and system tests (never a normal dependency).
//!
//! - [`serve`], [`serve_router`]: run gRPC services (usually fakes) on a loopback port-0
//!   listener.
//! - [`fakes`]: fake peers: Entra's `Directory` and `Federation`, IMDS's `Control`, ARM's
//!   `Authorization`.
//! - [`eventually`]: polls a check until it passes or a deadline expires, instead of a
//!   hand-written loop with a fixed sleep.

pub mod fakes;
mod poll;

pub use poll::{eventually, eventually_within, patience};

use misim_proto::auth::{Caller, ControlChannel, ControlKey};
use tokio::net::TcpListener;
use tonic::service::Routes;

/// Serves `routes` on `127.0.0.1:0` for the rest of the test runtime and returns the
/// `http://` URL to call it at. The listener is bound before this returns, so a client may
/// connect at once.
pub async fn serve(routes: Routes) -> String {
    serve_router(tonic::transport::Server::builder().add_routes(routes)).await
}

/// [`serve`] for a router already built, such as a service's own gRPC API with its
/// credential check (`Arm::grpc_router`).
pub async fn serve_router(router: tonic::transport::server::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a loopback port");
    let url = format!(
        "http://{}",
        listener
            .local_addr()
            .expect("a bound listener has an address")
    );
    tokio::spawn(async move {
        router
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .expect("gRPC server in a test");
    });
    url
}

/// The control key of tests whose gRPC peers are fakes (the fakes check no credential, but
/// clients built for production send one).
pub fn control_key() -> ControlKey {
    ControlKey::from_bytes([1; 32])
}

/// A lazy gRPC channel to `url` carrying [`control_key`]'s credential for `caller`.
pub fn channel_as(caller: Caller, url: &str) -> ControlChannel {
    control_key().credential(caller).wrap(
        tonic::transport::Endpoint::from_shared(url.to_owned())
            .expect("a valid gRPC URL")
            .connect_lazy(),
    )
}
