//! The gRPC server every misim service starts from: its own service plus
//! tonic-health (reporting it serving) and reflection over every misim proto,
//! so `grpcurl` and health probes work against all of them alike.

use std::convert::Infallible;

use tonic::server::NamedService;
use tonic::transport::server::Router;

/// A router serving `svc`, health and reflection. Add further services of the
/// same process with [`Router::add_service`].
pub fn router_with<S>(svc: S) -> Router
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (reporter, health) = tonic_health::server::health_reporter();
    // Outside a runtime (a unit test building the router) there is nothing to report to.
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            reporter
                .set_service_status(S::NAME, tonic_health::ServingStatus::Serving)
                .await;
        });
    }
    let router = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(svc);
    match tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .build_v1()
    {
        Ok(reflection) => router.add_service(reflection),
        Err(e) => {
            tracing::error!(error = %e, "grpc reflection unavailable");
            router
        }
    }
}
