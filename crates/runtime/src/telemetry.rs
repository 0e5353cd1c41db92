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
    tower_http::trace::TraceLayer::new_for_http()
        .make_span_with(move |req: &http::Request<axum::body::Body>| request_span(service, req))
}

/// The span [`http_trace_layer`] opens for a request.
pub fn request_span<B>(service: &'static str, req: &http::Request<B>) -> tracing::Span {
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
}

/// What [`http_trace_layer`] logs when a response is ready, for a handler
/// that opens [`request_span`] itself rather than through the layer (one
/// layer fewer on a hot path): the status and latency at debug, and a
/// server error at error, in the layer's words.
pub fn log_response(status: http::StatusCode, latency: std::time::Duration) {
    let ms = latency.as_millis();
    if status.is_server_error() {
        tracing::error!(
            classification = %format_args!("Status code: {status}"),
            latency = %format_args!("{ms} ms"),
            "response failed"
        );
    }
    tracing::debug!(
        status = status.as_u16(),
        latency = %format_args!("{ms} ms"),
        "finished processing request"
    );
}
