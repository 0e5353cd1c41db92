//! The gRPC server every misim service starts from: its own service plus
//! tonic-health (reporting it serving) and reflection over every misim proto,
//! so `grpcurl` and health probes work against all of them alike.
//!
//! Every service but health sits behind a [`Guarded`]: a call must carry a
//! control-plane credential made with the sandbox's key (`crate::auth`), and
//! the service's [`Policy`] must allow its caller to call the method. Health
//! stays open: it reveals only that a service is up, and container probes
//! call it without the key.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::server::NamedService;
use tonic::transport::server::Router;

use crate::auth::{Caller, ControlKey, HEADER};

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

/// Which callers (besides [`Caller::Admin`], who may call everything) may
/// call a method of one service, by method name (`CreateApplication`). Each
/// service keeps its table next to its handlers.
pub type Policy = fn(method: &str) -> &'static [Caller];

/// Reflection describes the API to any holder of the key.
fn any_caller(_method: &str) -> &'static [Caller] {
    Caller::ALL
}

/// A gRPC service that first authenticates the caller (its credential made
/// with `key`, checked in constant time) and then asks `policy` whether that
/// caller may call the method. Refusals are `UNAUTHENTICATED` (no or a bad
/// credential) and `PERMISSION_DENIED` (a caller the table does not list);
/// an accepted call carries its [`Caller`] in the request extensions.
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    key: ControlKey,
    policy: Policy,
}

impl<S> Guarded<S> {
    /// `inner` behind `key` and `policy`.
    pub fn new(inner: S, key: &ControlKey, policy: Policy) -> Self {
        Self {
            inner,
            key: key.clone(),
            policy,
        }
    }

    fn admit(&self, req: &http::Request<tonic::body::Body>) -> Result<Caller, tonic::Status> {
        let header = req
            .headers()
            .get(HEADER)
            .map(|v| v.to_str().unwrap_or_default());
        let caller = self
            .key
            .verify(header)
            .map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
        // The path is `/<package.Service>/<Method>`.
        let path = req.uri().path().trim_start_matches('/');
        let method = path.rsplit_once('/').map_or(path, |(_, m)| m);
        if caller == Caller::Admin || (self.policy)(method).contains(&caller) {
            Ok(caller)
        } else {
            tracing::warn!(%caller, path, "control-plane call refused");
            Err(tonic::Status::permission_denied(format!(
                "caller {caller} may not call {path}"
            )))
        }
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Guarded<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        match self.admit(&req) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Box::pin(self.inner.call(req))
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

/// `svc` as [`router_with`] serves it: [`Detached`] behind a [`Guarded`].
/// For a process's further services ([`Router::add_service`]).
pub fn guarded<S>(svc: S, key: &ControlKey, policy: Policy) -> Guarded<Detached<S>> {
    Guarded::new(Detached(svc), key, policy)
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
        // Without a grace period an endless stream (health `Watch` is open to
        // anyone) would keep its connection, and its slot, forever.
        .max_connection_age_grace(Duration::from_secs(30))
        .max_concurrent_streams(256)
        .concurrency_limit_per_connection(256)
}

/// A router serving `svc` (guarded by `key` and `policy`, detached), health
/// (open) and reflection (any caller with a valid credential). Add further
/// services of the same process with [`Router::add_service`] and [`guarded`].
pub fn router_with<S>(svc: S, key: &ControlKey, policy: Policy) -> Router
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
        .add_service(guarded(svc, key, policy));
    match tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .build_v1()
    {
        Ok(reflection) => router.add_service(Guarded::new(reflection, key, any_caller)),
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

    fn echo_caller() -> impl tower::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<http::Response<tonic::body::Body>, Infallible>>
                 + Send
                 + 'static,
    > + Clone {
        tower::service_fn(|req: http::Request<tonic::body::Body>| async move {
            let caller = req.extensions().get::<Caller>().copied();
            let mut r = http::Response::new(tonic::body::Body::empty());
            if let Some(c) = caller {
                r.headers_mut()
                    .insert("x-caller", http::HeaderValue::from_static(c.name()));
            }
            Ok::<_, Infallible>(r)
        })
    }

    fn only_imds(method: &str) -> &'static [Caller] {
        match method {
            "IssueToken" => &[Caller::Imds],
            _ => &[],
        }
    }

    async fn send(
        svc: &mut Guarded<
            impl tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = Infallible,
                Future = impl Future<Output = Result<http::Response<tonic::body::Body>, Infallible>>
                         + Send
                         + 'static,
            >,
        >,
        method: &str,
        credential: Option<&str>,
    ) -> (Option<String>, Option<String>) {
        let mut req = http::Request::new(tonic::body::Body::empty());
        *req.uri_mut() = format!("/misim.entra.v1.Directory/{method}")
            .parse()
            .unwrap();
        if let Some(c) = credential {
            req.headers_mut().insert(HEADER, c.parse().unwrap());
        }
        let r = svc.call(req).await.unwrap();
        let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
        (h("grpc-status"), h("x-caller"))
    }

    #[tokio::test]
    async fn the_guard_authenticates_then_checks_the_table() {
        let key = ControlKey::from_bytes([7; 32]);
        let mut svc = Guarded::new(echo_caller(), &key, only_imds);
        let imds = key.credential(Caller::Imds);
        let kv = key.credential(Caller::KeyVault);
        let admin = key.credential(Caller::Admin);
        let forged = ControlKey::from_bytes([8; 32]).credential(Caller::Imds);
        // UNAUTHENTICATED = 16, PERMISSION_DENIED = 7.
        assert_eq!(
            send(&mut svc, "IssueToken", None).await.0.as_deref(),
            Some("16")
        );
        assert_eq!(
            send(&mut svc, "IssueToken", Some(forged.header_value()))
                .await
                .0
                .as_deref(),
            Some("16")
        );
        assert_eq!(
            send(&mut svc, "IssueToken", Some(kv.header_value()))
                .await
                .0
                .as_deref(),
            Some("7")
        );
        assert_eq!(
            send(&mut svc, "CreateApplication", Some(imds.header_value()))
                .await
                .0
                .as_deref(),
            Some("7")
        );
        assert_eq!(
            send(&mut svc, "IssueToken", Some(imds.header_value())).await,
            (None, Some("imds".into()))
        );
        // The sandbox owner may call everything.
        assert_eq!(
            send(&mut svc, "CreateApplication", Some(admin.header_value())).await,
            (None, Some("admin".into()))
        );
    }
}
