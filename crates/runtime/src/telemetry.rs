//! Logging: one span per request, filtered with `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call more than once (later calls
/// do nothing), so tests and the sandbox can both call it.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

/// A tower layer that opens one span per HTTP request with its method, path
/// and request id, and logs each response's status and latency.
pub fn http_trace_layer(
    service: &'static str,
) -> tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    impl Fn(&http::Request<axum::body::Body>) -> tracing::Span + Clone,
> {
    tower_http::trace::TraceLayer::new_for_http().make_span_with(
        move |req: &http::Request<axum::body::Body>| {
            let request_id = req
                .headers()
                .get("x-ms-client-request-id")
                .or_else(|| req.headers().get("client-request-id"))
                .and_then(|v| v.to_str().ok())
                // Borrowed: the span records it only when enabled, and an
                // owned copy would cost an allocation on every request.
                .unwrap_or("-");
            tracing::info_span!(
                "request",
                service,
                method = %req.method(),
                path = %req.uri().path(),
                request_id,
                principal = tracing::field::Empty,
            )
        },
    )
}
