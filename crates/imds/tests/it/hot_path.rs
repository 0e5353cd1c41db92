//! The token hot path (a cache hit) through the VMs' router, without sockets:
//! every answer is the same 200 as the first. `MISIM_HOT_PATH_REQUESTS` sets
//! how many (default 200); run it under callgrind with a larger count and
//! `--toggle-collect=*hot_path_requests*` to count the instructions of the
//! router alone (routing, VM binding, fault layer, checks, cache, rendering).

use tower::ServiceExt;

use super::*;

/// A cached-token request from `peer` (source-address mode names the VM by it).
fn token_request(peer: std::net::SocketAddr) -> http::Request<axum::body::Body> {
    http::Request::get(
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net",
    )
    .header("Metadata", "true")
    .extension(misim_runtime::serve::PeerAddr(peer))
    .body(axum::body::Body::empty())
    .unwrap()
}

/// Sends `n` token requests from `peer`, checking each answer against `first`.
#[inline(never)]
async fn hot_path_requests(
    router: &axum::Router,
    n: usize,
    peer: std::net::SocketAddr,
    first: &[u8],
) {
    use http_body_util::BodyExt;
    for _ in 0..n {
        let res = router.clone().oneshot(token_request(peer)).await.unwrap();
        assert_eq!(res.status(), 200);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], first);
    }
}

#[tokio::test]
async fn cached_token_answers_are_identical_and_stay_cached() {
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let (entra, url) = fake_entra(&clock).await;
    let (imds, shutdown) = open_source_address_mode(clock.clone(), &url, 3).await;
    put_vm_with_sami(&imds, &entra, (VM1, "10.1.0.4"), ("vm1", 0)).await;
    let router = imds.vm_router_for_source_address();
    let peer: std::net::SocketAddr = "10.1.0.4:50000".parse().unwrap();
    let first = {
        use http_body_util::BodyExt;
        let res = router.clone().oneshot(token_request(peer)).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()[http::header::CONTENT_TYPE],
            "application/json; charset=utf-8"
        );
        res.into_body().collect().await.unwrap().to_bytes()
    };
    let token: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(token["client_id"], "client-vm1");
    assert_eq!(token["expires_in"], "86400");
    let n = std::env::var("MISIM_HOT_PATH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    hot_path_requests(&router, n, peer, &first).await;
    assert_eq!(issued(&entra), 1, "every later answer came from the cache");
    shutdown.cancel();
}
