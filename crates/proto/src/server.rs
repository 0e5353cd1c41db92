//! The gRPC server every misim service starts from: its own service plus
//! tonic-health (reporting it serving) and reflection over every misim proto,
//! so `grpcurl` and health probes work against all of them alike.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::server::NamedService;
use tonic::transport::server::Router;

/// A gRPC service whose calls run to completion even when the caller goes
/// away: each call runs in its own task. Without this, a client timing out
/// or disconnecting drops the handler mid-way, between two writes of one
/// change (a principal written, its request-id index not yet), and the
/// client's retry then finds a half-made state no crash recovery ran on.
#[derive(Debug, Clone)]
pub struct Detached<S>(pub S);

impl<S: NamedService> NamedService for Detached<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Detached<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let call = tokio::spawn(self.0.call(req));
        Box::pin(async move {
            match call.await {
                Ok(answer) => answer,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Only a runtime shutting down cancels the task.
                Err(_) => {
                    Ok(tonic::Status::unavailable("the service is shutting down").into_http())
                }
            }
        })
    }
}

/// The settings of every misim gRPC server. gRPC is the trusted control
/// plane on loopback, but a stuck or misbehaving peer must still not hold
/// resources forever: calls have a deadline (a [`Detached`] call goes on
/// running after it, only its caller stops waiting), dead peers are found
/// by HTTP/2 pings, connections are recycled (channels reconnect on their
/// own), and one connection cannot open unbounded streams. The connection
/// cap is on the listener (`misim_runtime::serve::serve_grpc`).
fn limited_builder() -> tonic::transport::Server {
    use std::time::Duration;
    tonic::transport::Server::builder()
        .timeout(Duration::from_secs(120))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_connection_age(Duration::from_secs(30 * 60))
        .max_concurrent_streams(256)
        .concurrency_limit_per_connection(256)
}

/// A router serving `svc` (as [`Detached`]), health and reflection. Add
/// further services of the same process with [`Router::add_service`], wrapped
/// in [`Detached`] too.
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
    let router = limited_builder()
        .add_service(health)
        .add_service(Detached(svc));
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tower::Service;

    use super::*;

    /// A call whose caller goes away still finishes its work.
    #[tokio::test]
    async fn a_dropped_call_runs_to_completion() {
        let started = Arc::new(tokio::sync::Notify::new());
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (s, g, d) = (started.clone(), gate.clone(), done.clone());
        let inner = tower::service_fn(move |_req: http::Request<tonic::body::Body>| {
            let (s, g, d) = (s.clone(), g.clone(), d.clone());
            async move {
                s.notify_one();
                let _p = g.acquire().await.unwrap();
                d.store(true, Ordering::SeqCst);
                Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty()))
            }
        });
        let mut svc = Detached(inner);
        let call = svc.call(http::Request::new(tonic::body::Body::empty()));
        // Detached calls start without being polled; bounded so a regression fails, not hangs.
        tokio::time::timeout(std::time::Duration::from_secs(10), started.notified())
            .await
            .expect("the call started");
        drop(call);
        gate.add_permits(1);
        // The detached task finishes on its own (this runtime runs it
        // whenever the test yields).
        for _ in 0..1000 {
            if done.load(Ordering::SeqCst) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the dropped call never finished");
    }
}
