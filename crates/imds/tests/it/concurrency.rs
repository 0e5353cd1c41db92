//! IMDS's per-VM concurrency limit (Azure: 5 identity requests in flight per VM), with a
//! slow Entra: the fake `Directory` holds `IssueToken` at a gate, so requests stay in
//! flight exactly as long as the test says, without sleeping.

use std::sync::Arc;

use misim_chaos::{AZURE_IDENTITY_CONCURRENCY, ThrottleConfig};
use tokio::sync::Semaphore;

use super::*;

/// A harness whose fake Entra issues tokens only through `gate`'s permits.
async fn slow_entra_harness() -> (Harness, FakeDirectory) {
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let entra = shared_state();
    let directory = FakeDirectory::new(entra.clone())
        .with_issue_token(issue_token(entra.clone(), Some(clock.clone())));
    let url = misim_testkit::serve(Routes::new(directory.clone().into_server())).await;
    let h = open(misim_store::Store::memory().unwrap(), &url, entra, clock).await;
    (h, directory)
}

/// Waits until `n` identity requests of `vm` are in flight.
async fn in_flight(h: &Harness, vm: &str, n: u32) {
    let key = vm.to_ascii_lowercase();
    eventually(&format!("{n} requests of {vm} in flight"), || {
        let now = h.imds.chaos().in_flight(&key);
        async move { if now == n { Ok(()) } else { Err(now) } }
    })
    .await;
}

#[tokio::test]
async fn a_sixth_request_in_flight_is_429_until_one_finishes() {
    let (h, directory) = slow_entra_harness().await;
    h.imds.chaos().set_throttle(ThrottleConfig::AZURE);
    let vm1 = h.put_vm(VM1).await;
    h.put_identity(VM1, identity(SAMI, "vm1", 0)).await;
    let vm2 = h.put_vm(VM2).await;
    let gate = Arc::new(Semaphore::new(0));
    directory.gate_issue_token(Some(gate.clone()));

    // Five token requests: one Entra call (a cache miss shared by all), held at the gate.
    let url = format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={ARM}",
        vm1.imds_endpoint
    );
    let held: Vec<_> = (0..AZURE_IDENTITY_CONCURRENCY)
        .map(|_| {
            let r = h.http.get(&url).header("Metadata", "true").send();
            tokio::spawn(async move {
                let r = r.await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    directory.issue_arrived().await;
    in_flight(&h, VM1, AZURE_IDENTITY_CONCURRENCY).await;

    // The sixth: IMDS's 429 with Retry-After, whatever endpoint of the identity category.
    for pq in [
        format!("/metadata/identity/oauth2/token?api-version=2018-02-01&resource={ARM}"),
        "/metadata/identity/info?api-version=2018-02-01".to_owned(),
    ] {
        let r = h
            .http
            .get(format!("{}{pq}", vm1.imds_endpoint))
            .header("Metadata", "true")
            // Without the limit it would wait on the held Entra call: fail, not hang.
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429, "{pq}");
        assert_eq!(r.headers()["retry-after"], "1");
        let body: Value = r.json().await.unwrap();
        error_is(&body, "too_many_requests", "");
    }
    assert_eq!(
        h.get(&vm1, "/metadata/instance?api-version=2021-02-01")
            .await
            .0,
        200,
        "the limit is the identity category's: instance metadata still answers"
    );
    let (status, body) = h
        .get(&vm2, "/metadata/identity/info?api-version=2018-02-01")
        .await;
    assert_eq!(status, 200, "vm2 has its own slots: {body}");
    in_flight(&h, VM1, AZURE_IDENTITY_CONCURRENCY).await;

    // Entra answers: all five get the one token, and vm1's slots are free again.
    gate.add_permits(1);
    for task in held {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(client_of(&body), "client-vm1");
    }
    in_flight(&h, VM1, 0).await;
    let (status, body) = h.token(&vm1, "").await;
    assert_eq!(status, 200, "a slot is free again: {body}");
    assert_eq!(issued(&h.entra), 1, "the five shared one Entra call");

    let throttled: Vec<_> = h
        .imds
        .chaos()
        .log()
        .list(&misim_chaos::Query::default())
        .into_iter()
        .filter(|d| d.kind == misim_chaos::Kind::Throttled)
        .collect();
    assert_eq!(throttled.len(), 2, "{throttled:?}");
    assert!(
        throttled
            .iter()
            .all(|d| d.reason.contains("5 concurrent identity requests") && d.principal == "vm1"),
        "{throttled:?}"
    );
}
