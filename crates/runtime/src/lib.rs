//! What every misim service process shares.
//!
//! - [`telemetry`]: tracing with `RUST_LOG`-style filtering.
//! - [`tls`]: the sandbox CA (generated on first start, kept in the data dir)
//!   and the rustls server configuration for ARM, Entra and Key Vault.
//! - [`serve`]: HTTP(S) and gRPC serving on pre-bound listeners with graceful
//!   shutdown, so callers (binaries, the sandbox, tests) choose the ports.
//! - [`Shutdown`]: one cancellation signal for a whole process.

pub mod serve;
pub mod telemetry;
pub mod tls;

pub use tokio_util::sync::CancellationToken as Shutdown;

use misim_types::ErrorCode;

/// The HTTP status for an error class.
pub fn http_status(code: ErrorCode) -> http::StatusCode {
    use http::StatusCode as S;
    match code {
        ErrorCode::InvalidArgument => S::BAD_REQUEST,
        ErrorCode::Unauthenticated => S::UNAUTHORIZED,
        ErrorCode::PermissionDenied => S::FORBIDDEN,
        ErrorCode::NotFound => S::NOT_FOUND,
        ErrorCode::AlreadyExists | ErrorCode::FailedPrecondition => S::CONFLICT,
        ErrorCode::TooManyRequests => S::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => S::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => S::INTERNAL_SERVER_ERROR,
    }
}

/// Waits for Ctrl-C or SIGTERM, then cancels `shutdown`.
pub async fn cancel_on_signal(shutdown: Shutdown) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
    shutdown.cancel();
}

/// A lazily connecting gRPC channel to `url` (`http://host:port`): start order
/// of the services never matters, and a peer that is down only fails the calls
/// that need it.
pub fn lazy_channel(url: &str) -> anyhow::Result<tonic::transport::Channel> {
    use anyhow::Context;
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("bad gRPC peer url {url}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .connect_lazy())
}

/// Serves `router` on `addr` in the background when an address is given (a process's optional
/// gRPC listener, such as the compose sandbox's per-service clock); nothing when `None`.
pub async fn spawn_grpc_at(
    addr: Option<&str>,
    router: tonic::transport::server::Router,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(addr) = addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding gRPC on {addr}"))?;
        tokio::spawn(serve::serve_grpc(listener, router, shutdown.clone()));
    }
    Ok(())
}
