//! Serving on listeners the caller has already bound.
//!
//! The caller binds (binaries bind configured addresses; the sandbox and tests
//! bind `127.0.0.1:0` and read the port first), so nothing here picks a port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::Shutdown;

/// The peer address of an HTTP connection, inserted as a request extension.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The local address a connection was made to (the accepted socket's, which
/// on a wildcard listener is more specific than the listener's), inserted as
/// a request extension (IMDS tells VMs apart by it in per-VM-address mode).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);

/// How long a TLS client may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Decides at accept whether a connection is served normally: called once per
/// connection with (peer address, local address).
pub type AdmitFn = Arc<dyn Fn(SocketAddr, SocketAddr) -> bool + Send + Sync>;

/// A per-connection admission check and what refused connections get.
#[derive(Clone)]
pub struct Admit {
    /// True to serve the connection with the listener's router.
    pub check: AdmitFn,
    /// Serves refused connections instead (e.g. a service-shaped 403), so a
    /// refused client learns why rather than seeing a reset.
    pub refusal: Router,
}

impl std::fmt::Debug for Admit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admit").finish_non_exhaustive()
    }
}

/// What one listener allows its clients: timeouts, a connection cap and an
/// optional admission check. The defaults suit a sandbox on one machine.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// A client must send a whole request head within this time. hyper runs
    /// the same timer while an HTTP/1 connection waits for its next request,
    /// so it is also the HTTP/1 keep-alive idle timeout.
    pub header_read_timeout: Duration,
    /// A connection (HTTP/1 or HTTP/2) with no request in flight for this long
    /// is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 keep-alive: ping the client this often…
    pub h2_keep_alive_interval: Duration,
    /// …and close the connection when a ping goes unanswered this long.
    pub h2_keep_alive_timeout: Duration,
    /// Concurrent streams one HTTP/2 client may open.
    pub h2_max_concurrent_streams: u32,
    /// The longest wait for the next piece of a request body: a client that
    /// trickles its body keeps a request in flight, so the idle timeout
    /// never fires; this ends it (the handler sees a body error, answered
    /// as a bad request).
    pub body_frame_timeout: Duration,
    /// Connections served at once. Over the cap the listener stops accepting
    /// until one closes: waiting clients sit in the kernel's backlog, costing
    /// no descriptor, and are served late rather than refused.
    pub max_connections: usize,
    /// Checked once per connection at accept.
    pub admit: Option<Admit>,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            h2_keep_alive_interval: Duration::from_secs(30),
            h2_keep_alive_timeout: Duration::from_secs(20),
            h2_max_concurrent_streams: 256,
            body_frame_timeout: Duration::from_secs(30),
            max_connections: 512,
            admit: None,
        }
    }
}

/// How the accept loop reacts to an accept error.
///
/// Errors about one connection (the client reset it before we accepted) are
/// retried at once; anything else (EMFILE, ENFILE, ENOBUFS, ENOMEM) will not
/// clear by retrying in a tight loop, so the loop sleeps a growing delay,
/// letting connections close and free descriptors.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    delay: Option<Duration>,
}

impl AcceptBackoff {
    /// The first delay after a resource error.
    pub const FIRST: Duration = Duration::from_millis(5);
    /// The longest delay.
    pub const MAX: Duration = Duration::from_secs(1);

    /// The delay before the next accept after `e` (zero: retry at once).
    pub fn on_error(&mut self, e: &std::io::Error) -> Duration {
        use std::io::ErrorKind as K;
        if matches!(
            e.kind(),
            K::ConnectionAborted | K::ConnectionReset | K::ConnectionRefused | K::Interrupted
        ) {
            return Duration::ZERO;
        }
        let next = match self.delay {
            None => Self::FIRST,
            Some(d) => (d * 2).min(Self::MAX),
        };
        self.delay = Some(next);
        next
    }

    /// An accept succeeded: the next error starts from the first delay again.
    pub fn on_success(&mut self) {
        self.delay = None;
    }
}

/// At most one log line per interval; the rest are counted and the count is
/// reported with the next line, so a failing loop cannot flood the log.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    last: Option<tokio::time::Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// A limiter allowing one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be logged
    /// at `now`, else `None` (and the line is counted).
    pub fn allow(&mut self, now: tokio::time::Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Requests in flight on one connection and when the last one ended, for the
/// idle timeout. Two atomic writes per request and no wake-ups: the
/// watchdog re-reads them only when its deadline comes (the IMDS hot path
/// serves keep-alive connections).
#[derive(Debug)]
struct Activity {
    opened: tokio::time::Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the last request ended.
    last_end_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: tokio::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
        })
    }

    fn start(self: &Arc<Self>) -> ActivityGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        ActivityGuard(self.clone())
    }

    /// Completes once the connection has had no request in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.last_end_ms.load(Ordering::SeqCst));
            let deadline = last + idle;
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(idle).await;
            } else if tokio::time::Instant::now() >= deadline {
                return;
            } else {
                tokio::time::sleep_until(deadline).await;
            }
        }
    }
}

struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        // The end time first, so a watchdog that sees nothing in flight sees it.
        a.last_end_ms.store(ms, Ordering::SeqCst);
        a.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves `router` on `listener` until `shutdown` fires, over TLS when `tls`
/// is given, with the default [`ServeLimits`]. In-flight requests finish
/// before this returns.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    serve_http_with(listener, router, tls, shutdown, ServeLimits::default()).await
}

/// [`serve_http`] with explicit limits.
pub async fn serve_http_with(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: Shutdown,
    limits: ServeLimits,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let local = listener.local_addr()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut backoff = AcceptBackoff::default();
    let mut warn = LogLimiter::new(Duration::from_secs(10));
    let builder = connection_builder(&limits);
    loop {
        // Over the cap, stop accepting until a connection closes.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let Some((stream, peer)) =
            accept_next(&listener, local, &mut backoff, &mut warn, &shutdown).await
        else {
            break;
        };
        let _ = stream.set_nodelay(true);
        // The address the client connected to: on a listener bound to
        // 0.0.0.0 (IMDS's, on the loopback device) it is not the listener's.
        let local = stream.local_addr().unwrap_or(local);
        let (router, admitted) = admit(&limits, &router, peer, local);
        let activity = Activity::new();
        let busy = activity.clone();
        let body_timeout = limits.body_frame_timeout;
        let service =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let guard = busy.start();
                let mut router = router.clone();
                let req = request(req, body_timeout, peer, local);
                async move {
                    use tower::Service;
                    let response = router.call(req).await;
                    drop(guard);
                    response
                }
            });
        let builder = builder.clone();
        let idle = limits.idle_timeout;
        // A refused peer gets its answer, but neither a connection slot nor
        // time: it must not crowd out the peers the listener serves.
        let (permit, lifetime) = if admitted {
            (Some(permit), None)
        } else {
            drop(permit);
            (None, Some(REFUSED_CONNECTION_LIFETIME))
        };
        match &acceptor {
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _permit = permit;
                    let Some(tls) = handshake(&acceptor, stream, peer).await else {
                        return;
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    at_most(
                        lifetime,
                        until_idle(watcher.watch(conn.into_owned()), &activity, idle),
                    )
                    .await;
                });
            }
            None => {
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let fut = graceful.watch(conn);
                tokio::spawn(async move {
                    let _permit = permit;
                    at_most(lifetime, until_idle(fut, &activity, idle)).await;
                });
            }
        }
    }
    drop(listener);
    // Give in-flight requests a bounded time to finish.
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}

/// The hyper connection builder for both HTTP versions, with `limits`' timers.
fn connection_builder(
    limits: &ServeLimits,
) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.h2_keep_alive_interval)
        .keep_alive_timeout(limits.h2_keep_alive_timeout)
        .max_concurrent_streams(limits.h2_max_concurrent_streams);
    builder
}

/// The next connection on `listener`, or `None` once `shutdown` fires. A failed
/// accept (EMFILE, ENFILE, a connection reset in the backlog) is retried after
/// `backoff`'s delay and logged at most as often as `warn` allows, so a full
/// descriptor table neither spins the loop nor floods the log.
async fn accept_next(
    listener: &TcpListener,
    local: SocketAddr,
    backoff: &mut AcceptBackoff,
    warn: &mut LogLimiter,
    shutdown: &Shutdown,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => return None,
        };
        let e = match accepted {
            Ok(x) => {
                backoff.on_success();
                return Some(x);
            }
            Err(e) => e,
        };
        let delay = backoff.on_error(&e);
        if let Some(suppressed) = warn.allow(tokio::time::Instant::now()) {
            tracing::warn!(%local, error = %e, suppressed, ?delay, "accept failed");
        }
        if !delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return None,
            }
        }
    }
}

/// A request as the router gets it: its body under the frame timeout, its
/// path's slashes collapsed, the connection's addresses in its extensions
/// (inserted here rather than by `Extension` layers on the router: a layer
/// wraps every route, and each request would be cloned through and polled
/// through two more services; docs/performance.md finding 14).
fn request(
    req: http::Request<hyper::body::Incoming>,
    body_timeout: Duration,
    peer: SocketAddr,
    local: SocketAddr,
) -> axum::extract::Request {
    let mut req =
        req.map(|b| axum::body::Body::new(tower_http::timeout::TimeoutBody::new(body_timeout, b)));
    req.extensions_mut().insert(PeerAddr(peer));
    req.extensions_mut().insert(LocalAddr(local));
    collapse_slashes(req)
}

/// The router one connection is served with and whether it was admitted: the
/// listener's own, or the admission check's refusal (either way its requests
/// carry the [`PeerAddr`] and [`LocalAddr`] extensions).
fn admit(
    limits: &ServeLimits,
    router: &Router,
    peer: SocketAddr,
    local: SocketAddr,
) -> (Router, bool) {
    let admitted = limits.admit.as_ref().is_none_or(|a| (a.check)(peer, local));
    let router = match (&limits.admit, admitted) {
        (Some(a), false) => {
            tracing::debug!(%peer, %local, "connection refused by admission check");
            a.refusal.clone()
        }
        _ => router.clone(),
    };
    (router, admitted)
}

/// The TLS handshake of one connection, bounded by [`HANDSHAKE_TIMEOUT`]: a
/// client that never finishes it must not hold a task and a socket forever.
/// `None` (logged at debug) when it fails or times out.
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "tls handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "tls handshake timed out");
            None
        }
    }
}

/// How long a connection refused by the admission check may stay open: long
/// enough to read one request and write the refusal.
const REFUSED_CONNECTION_LIFETIME: Duration = Duration::from_secs(2);

/// Runs `fut` to completion, or drops it after `limit` when one is given.
async fn at_most(limit: Option<Duration>, fut: impl std::future::Future<Output = ()>) {
    match limit {
        Some(limit) => {
            let _ = tokio::time::timeout(limit, fut).await;
        }
        None => fut.await,
    }
}

/// Runs a connection until it ends or has been idle (no request in flight)
/// for `idle`; an idle connection is dropped, which closes its socket. No
/// request is lost: none is in flight.
async fn until_idle<F: std::future::Future>(conn: F, activity: &Activity, idle: Duration) {
    tokio::select! {
        _ = conn => {}
        _ = activity.idle_for(idle) => {
            tracing::debug!("closing idle connection");
        }
    }
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

/// Serves a tonic router (with health and reflection already added by the
/// caller) on `listener` until `shutdown` fires, with the default connection
/// cap. Timeouts and HTTP/2 keep-alive are the router's own settings
/// (`misim_proto::server::router_with`).
pub async fn serve_grpc(
    listener: TcpListener,
    router: tonic::transport::server::Router,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    serve_grpc_with(listener, router, shutdown, ServeLimits::default()).await
}

/// [`serve_grpc`] with an explicit connection cap (`limits.max_connections`;
/// the other limits belong to the tonic router).
pub async fn serve_grpc_with(
    listener: TcpListener,
    router: tonic::transport::server::Router,
    shutdown: Shutdown,
    limits: ServeLimits,
) -> Result<(), tonic::transport::Error> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<CappedStream>>(1);
    let stop = shutdown.clone();
    tokio::spawn(accept_capped(listener, limits.max_connections, tx, stop));
    let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
    router
        .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
        .await
}

/// Accepts connections while fewer than `cap` are open, with the same
/// back-off and log limiting as [`serve_http_with`].
async fn accept_capped(
    listener: TcpListener,
    cap: usize,
    tx: tokio::sync::mpsc::Sender<std::io::Result<CappedStream>>,
    shutdown: Shutdown,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(cap.max(1)));
    let mut backoff = AcceptBackoff::default();
    let mut warn = LogLimiter::new(Duration::from_secs(10));
    let local = listener.local_addr().ok();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let stream = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => return,
        };
        match stream {
            Ok((stream, _)) => {
                backoff.on_success();
                let _ = stream.set_nodelay(true);
                let capped = CappedStream {
                    stream,
                    _permit: permit,
                };
                if tx.send(Ok(capped)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let delay = backoff.on_error(&e);
                if let Some(suppressed) = warn.allow(tokio::time::Instant::now()) {
                    tracing::warn!(?local, error = %e, suppressed, ?delay, "grpc accept failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// An accepted gRPC connection holding its slot under the cap until dropped.
#[derive(Debug)]
pub struct CappedStream {
    stream: tokio::net::TcpStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for CappedStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::Connected::connect_info(&self.stream)
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Bounds every wait of these tests: a regression fails, it does not hang.
    const BOUND: Duration = Duration::from_secs(20);

    async fn start(limits: ServeLimits) -> (SocketAddr, Shutdown) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let router = Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route(
                "/echo",
                axum::routing::post(|body: String| async move { body.len().to_string() }),
            );
        tokio::spawn(serve_http_with(
            listener,
            router,
            None,
            shutdown.clone(),
            limits,
        ));
        (addr, shutdown)
    }

    /// A connection that sent half a request head.
    async fn slow_client(addr: SocketAddr) -> tokio::net::TcpStream {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        s
    }

    /// Reads until the server closes the connection (bounded).
    async fn wait_closed(s: &mut tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let r = tokio::time::timeout(BOUND, s.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "the server never closed the connection");
    }

    async fn get(addr: SocketAddr) -> reqwest::Result<String> {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://{addr}/"))
            .send()
            .await?
            .text()
            .await
    }

    /// Issue #10: a client that never finishes its request head is closed
    /// after the header-read timeout, and its slot serves a new client.
    #[tokio::test]
    async fn a_slow_header_is_closed_and_frees_its_slot() {
        let (addr, _stop) = start(ServeLimits {
            header_read_timeout: Duration::from_millis(200),
            max_connections: 2,
            ..ServeLimits::default()
        })
        .await;
        let mut a = slow_client(addr).await;
        let mut b = slow_client(addr).await;
        wait_closed(&mut a).await;
        wait_closed(&mut b).await;
        let got = tokio::time::timeout(BOUND, get(addr)).await;
        assert_eq!(got.expect("served").unwrap(), "ok");
    }

    /// A client that sends its head and then trickles (here: stops) its body
    /// keeps a request in flight, so no idle timer fires; the body timeout
    /// ends the request with a 400 and the connection frees.
    #[tokio::test]
    async fn a_stalled_body_is_a_bad_request() {
        let (addr, _stop) = start(ServeLimits {
            body_frame_timeout: Duration::from_millis(200),
            ..ServeLimits::default()
        })
        .await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(BOUND, s.read(&mut buf))
            .await
            .expect("an answer before the bound")
            .unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    }

    /// Refused connections get their answer but hold no slot and are closed
    /// soon: a refused client cannot crowd out the clients the listener is for.
    #[tokio::test]
    async fn refused_connections_hold_no_slot() {
        let refusal = Router::new().fallback(|| async { (http::StatusCode::FORBIDDEN, "no") });
        let (addr, _stop) = start(ServeLimits {
            max_connections: 1,
            admit: Some(Admit {
                check: Arc::new(|_, _| false),
                refusal,
            }),
            ..ServeLimits::default()
        })
        .await;
        // Two refused clients at once, with a cap of one: both are answered.
        let mut held = tokio::net::TcpStream::connect(addr).await.unwrap();
        held.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 32];
        let n = tokio::time::timeout(BOUND, held.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 403"));
        let second = tokio::time::timeout(
            BOUND,
            reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .get(format!("http://{addr}/"))
                .send(),
        )
        .await
        .expect("a refused client is answered while another refused one holds its connection")
        .unwrap();
        assert_eq!(second.status(), 403);
        // And the kept-alive refused connection is closed by the server.
        wait_closed(&mut held).await;
    }

    /// Over the cap, a new connection waits for a slot rather than being
    /// served; it is served once a slot frees.
    #[tokio::test]
    async fn the_connection_cap_holds_and_a_freed_slot_serves_the_next_client() {
        let (addr, _stop) = start(ServeLimits {
            max_connections: 1,
            ..ServeLimits::default()
        })
        .await;
        let hog = slow_client(addr).await;
        let mut next = tokio::spawn(get(addr));
        // The waiting client is not served while the slot is held. (A bounded
        // wait for something that must not happen; nothing synchronises on it.)
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut next)
                .await
                .is_err(),
            "a connection over the cap was served"
        );
        drop(hog);
        let got = tokio::time::timeout(BOUND, next).await;
        assert_eq!(got.expect("served").unwrap().unwrap(), "ok");
    }

    /// An HTTP/2 connection with nothing in flight is closed after the idle
    /// timeout (HTTP/2 has no header-read timer to do it).
    #[tokio::test]
    async fn an_idle_http2_connection_is_closed() {
        let (addr, _stop) = start(ServeLimits {
            idle_timeout: Duration::from_millis(200),
            ..ServeLimits::default()
        })
        .await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The client preface and an empty SETTINGS frame.
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        wait_closed(&mut s).await;
    }

    /// The gRPC listener hands tonic at most `cap` connections at once.
    #[tokio::test]
    async fn the_grpc_connection_cap_holds() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let stop = Shutdown::new();
        tokio::spawn(accept_capped(listener, 1, tx, stop.clone()));
        let _a = tokio::net::TcpStream::connect(addr).await.unwrap();
        let first = tokio::time::timeout(BOUND, rx.recv()).await.unwrap();
        let _b = tokio::net::TcpStream::connect(addr).await.unwrap();
        // A bounded wait for something that must not happen.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.recv())
                .await
                .is_err(),
            "a connection over the cap was handed on"
        );
        drop(first);
        let second = tokio::time::timeout(BOUND, rx.recv()).await.unwrap();
        assert!(matches!(second, Some(Ok(_))));
        stop.cancel();
    }

    #[test]
    fn resource_errors_back_off_and_connection_errors_do_not() {
        use std::io::{Error, ErrorKind};
        let mut b = AcceptBackoff::default();
        let emfile = Error::from_raw_os_error(24);
        assert_eq!(b.on_error(&emfile), AcceptBackoff::FIRST);
        assert_eq!(b.on_error(&emfile), AcceptBackoff::FIRST * 2);
        assert_eq!(b.on_error(&emfile), AcceptBackoff::FIRST * 4);
        for _ in 0..20 {
            b.on_error(&emfile);
        }
        assert_eq!(b.on_error(&emfile), AcceptBackoff::MAX);
        // A client that reset before accept says nothing about our resources.
        let aborted = Error::from(ErrorKind::ConnectionAborted);
        assert_eq!(b.on_error(&aborted), Duration::ZERO);
        b.on_success();
        assert_eq!(b.on_error(&emfile), AcceptBackoff::FIRST);
    }

    #[test]
    fn the_log_limiter_allows_one_line_per_interval_and_counts_the_rest() {
        let mut l = LogLimiter::new(Duration::from_secs(10));
        let t0 = tokio::time::Instant::now();
        assert_eq!(l.allow(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(l.allow(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(l.allow(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(l.allow(t0 + Duration::from_secs(11)), None);
    }

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
