//! Serving on listeners the caller has already bound.
//!
//! The caller binds (binaries bind configured addresses; the sandbox and tests
//! bind `127.0.0.1:0` and read the port first), so nothing here picks a port.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::Shutdown;

/// The peer address of an HTTP connection, inserted as a request extension.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The local address a connection was accepted on, inserted as a request
/// extension (IMDS tells VMs apart by the listener they call in per-VM mode).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);

/// How long a TLS client may take to complete its handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` fires, over TLS when `tls`
/// is given. In-flight requests finish before this returns.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let local = listener.local_addr()?;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Accept errors (e.g. EMFILE) are transient; keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router
            .clone()
            .layer(axum::Extension(PeerAddr(peer)))
            .layer(axum::Extension(LocalAddr(local)));
        let service =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let mut router = router.clone();
                async move {
                    use tower::Service;
                    router
                        .call(collapse_slashes(req.map(axum::body::Body::new)))
                        .await
                }
            });
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        match &acceptor {
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    // A client that never finishes its handshake must not hold a
                    // task and a socket forever.
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "tls handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "tls handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                });
            }
            None => {
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let fut = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = fut.await;
                });
            }
        }
    }
    drop(listener);
    // Give in-flight requests a bounded time to finish.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}

/// Collapses runs of `/` in the request path, as Azure's front ends do: the
/// Azure CLI joins a base URL ending in `/` with a path starting with `/`
/// (`https://host//metadata/endpoints`).
pub fn collapse_slashes<B>(mut req: http::Request<B>) -> http::Request<B> {
    let path = req.uri().path();
    if !path.contains("//") {
        return req;
    }
    let mut collapsed = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && collapsed.ends_with('/')) {
            collapsed.push(c);
        }
    }
    let pq = match req.uri().query() {
        Some(q) => format!("{collapsed}?{q}"),
        None => collapsed,
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(p) = pq.parse() {
        parts.path_and_query = Some(p);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// Serves a tonic router (with health and reflection already added by the
/// caller) on `listener` until `shutdown` fires.
/// Axum middleware (`axum::middleware::from_fn(run_to_completion)`): the
/// request's handler runs in its own task, so a client that times out or
/// disconnects cannot stop it between two writes of one change. The services
/// whose handlers make several dependent writes (ARM, Entra) use it.
pub async fn run_to_completion(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::spawn(next.run(req)).await {
        Ok(response) => response,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels the task.
        Err(_) => http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

pub async fn serve_grpc(
    listener: TcpListener,
    router: tonic::transport::server::Router,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    router
        .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::collapse_slashes;

    #[test]
    fn double_slashes_collapse_and_query_survives() {
        let req = http::Request::get("https://h:1//metadata//endpoints?api-version=1")
            .body(())
            .unwrap();
        assert_eq!(
            collapse_slashes(req).uri().to_string(),
            "https://h:1/metadata/endpoints?api-version=1"
        );
        let req = http::Request::get("/a/b?x=//").body(()).unwrap();
        assert_eq!(collapse_slashes(req).uri().to_string(), "/a/b?x=//");
    }
}
