//! IMDS's per-VM rate limit (issue #12): on by default at Azure's documented
//! 20 identity requests per second per VM, answered 429 in IMDS's shape and
//! logged; counted in seconds of the sandbox clock, so a stopped clock makes
//! the test exact.

use std::sync::Arc;
use std::time::Duration;

use misim_proto::admin::v1 as pb;
use misim_proto::auth::Caller;
use misim_types::ManualClock;
use serde_json::json;

use crate::harness;

#[tokio::test]
async fn imds_throttles_each_vm_at_azures_limit_until_the_next_second() {
    let clock = Arc::new(ManualClock::at_unix(
        u64::try_from(harness::now_unix()).unwrap(),
    ));
    let w = harness::start_with_clock(tempfile::tempdir().unwrap(), Some(clock.clone())).await;
    w.create_rg("rg1").await;
    w.create_vm("rg1", "vm1", json!({"type": "SystemAssigned"}))
        .await;
    w.create_vm("rg1", "vm2", json!({"type": "SystemAssigned"}))
        .await;
    let vm1 = w.imds_endpoint(&w.vm_id("rg1", "vm1")).await;
    let vm2 = w.imds_endpoint(&w.vm_id("rg1", "vm2")).await;
    let resource = "https://vault.azure.net";
    for i in 0..misim_chaos::AZURE_IDENTITY_RATE {
        let (s, v) = w.imds_token(&vm1, resource, None).await;
        assert_eq!(s, 200, "request {i}: {v}");
    }
    let r = w
        .http
        .get(format!("{vm1}/metadata/identity/oauth2/token"))
        .query(&[("api-version", "2018-02-01"), ("resource", resource)])
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "too_many_requests", "{v}");
    assert_eq!(
        w.imds_token(&vm2, resource, None).await.0,
        200,
        "vm2 has its own budget"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        w.imds_token(&vm1, resource, None).await.0,
        200,
        "a new second"
    );
    let mut log = pb::log_client::LogClient::new(
        w.sb.channel_as(Caller::Admin, &w.sb.imds_grpc_url).unwrap(),
    );
    let entries = log
        .list_decisions(pb::LogQuery::default())
        .await
        .unwrap()
        .into_inner()
        .decisions;
    let throttled: Vec<_> = entries.iter().filter(|d| d.kind == "throttled").collect();
    assert_eq!(throttled.len(), 1, "{entries:?}");
    assert_eq!(throttled[0].principal, "vm1");
    assert!(
        throttled[0]
            .reason
            .contains("20 identity requests per second")
    );
}
