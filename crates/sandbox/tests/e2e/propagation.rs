//! Propagation delays (issue #12): with a delay set, a new role assignment
//! takes effect only that many seconds (of the sandbox clock) after it was
//! created, and the refusal meanwhile says so in the decision log.

use std::sync::Arc;
use std::time::Duration;

use misim_proto::admin::v1 as pb;
use misim_proto::auth::Caller;
use misim_types::ManualClock;

use serde_json::json;

use crate::harness::{self, KV_SECRETS_USER, VAULT_AUD};

/// A sandbox on a stopped clock, configured by `tweak`.
async fn frozen(
    tweak: impl FnOnce(&mut misim_sandbox::SandboxConfig),
) -> (Arc<ManualClock>, harness::World) {
    let clock = Arc::new(ManualClock::at_unix(
        u64::try_from(harness::now_unix()).unwrap(),
    ));
    let shared: misim_types::SharedClock = clock.clone();
    let w = harness::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.clock = shared;
        tweak(c);
    })
    .await;
    (clock, w)
}

#[tokio::test]
async fn a_new_role_assignment_takes_effect_after_the_delay() {
    let (clock, w) = frozen(|c| c.role_assignment_delay = Duration::from_secs(30)).await;
    w.create_rg("rg1").await;
    w.create_vault("rg1", "kv1").await;
    w.set_secret("kv1", "s1", "v1").await;
    let p = w.principal("late", &[]).await;
    w.assign_role(&w.vault_id("rg1", "kv1"), &p.object_id, KV_SECRETS_USER)
        .await;
    let token = w
        .token_for(&p.client_id, &p.secret, &format!("{VAULT_AUD}/.default"))
        .await;
    assert_eq!(w.get_secret("kv1", "s1", &token).await.0, 403, "not yet");
    clock.advance(Duration::from_secs(29));
    assert_eq!(
        w.get_secret("kv1", "s1", &token).await.0,
        403,
        "one second short"
    );
    clock.advance(Duration::from_secs(1));
    let (s, v) = w.get_secret("kv1", "s1", &token).await;
    assert_eq!(s, 200, "{v}");
    let mut log = pb::log_client::LogClient::new(
        w.sb.channel_as(Caller::Admin, &w.sb.keyvault_grpc_url)
            .unwrap(),
    );
    let denied = log
        .list_decisions(pb::LogQuery {
            denied_only: true,
            principal: p.object_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .decisions;
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(
        denied[0].reason.contains("still propagating"),
        "{}",
        denied[0].reason
    );
    assert!(
        denied[0].reason.contains("in effect in 30 s"),
        "{}",
        denied[0].reason
    );
}

#[tokio::test]
async fn a_new_identity_is_not_found_at_imds_until_the_delay_has_passed() {
    let (clock, w) = frozen(|c| c.identity_delay = Duration::from_secs(20)).await;
    w.create_rg("rg1").await;
    w.create_vm("rg1", "vm1", json!({"type": "SystemAssigned"}))
        .await;
    let ep = w.imds_endpoint(&w.vm_id("rg1", "vm1")).await;
    let (s, v) = w.imds_token(&ep, VAULT_AUD, None).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"], "invalid_request");
    assert_eq!(v["error_description"], "Identity not found");
    clock.advance(Duration::from_secs(19));
    assert_eq!(w.imds_token(&ep, VAULT_AUD, None).await.0, 400);
    clock.advance(Duration::from_secs(1));
    let (s, v) = w.imds_token(&ep, VAULT_AUD, None).await;
    assert_eq!(s, 200, "{v}");
}
