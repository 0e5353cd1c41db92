//! Entra's signing-key rollover through `misim keys` and `misim.admin.v1.SigningKeys`: the
//! next key is in JWKS before it signs, tokens of the old key stay valid until they expire,
//! then the old key leaves JWKS; a moved clock rolls the keys on schedule.

use std::path::Path;

use misim_proto::admin::v1::{AdvanceClockRequest, ListSigningKeysRequest};
use serde_json::Value;

use crate::harness::{World, start};

async fn misim(data_dir: &Path, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_misim"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("MISIM_ENTRA_GRPC_URL")
        .env_remove("MISIM_CONTROL_KEY_FILE")
        .output()
        .await
        .expect("misim runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let h: Value = serde_json::from_slice(&misim_token::b64_lenient(header).unwrap()).unwrap();
    h["kid"].as_str().unwrap().to_owned()
}

async fn jwks_kids(w: &World) -> Vec<String> {
    let url = format!("{}/{}/discovery/v2.0/keys", w.sb.entra_url, w.tid());
    let doc: Value = w.http.get(url).send().await.unwrap().json().await.unwrap();
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn next_kid(w: &World) -> String {
    let mut keys = misim_proto::admin::v1::signing_keys_client::SigningKeysClient::new(
        w.sb.channel_as(misim_proto::auth::Caller::Admin, &w.sb.entra_grpc_url)
            .unwrap(),
    );
    let ring = keys
        .list(ListSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    ring.keys
        .iter()
        .find(|k| k.state == "next")
        .map(|k| k.kid.clone())
        .expect("a next key")
}

#[tokio::test(flavor = "multi_thread")]
async fn key_roll_publishes_ahead_keeps_old_tokens_then_drops_the_old_key() {
    let w = start().await;
    w.sb.write_env_file().unwrap();
    let old_token = w.admin_arm.clone();
    let old_kid = kid_of(&old_token);
    let next = next_kid(&w).await;
    assert_ne!(next, old_kid);
    let published = jwks_kids(&w).await;
    assert!(
        published.contains(&old_kid) && published.contains(&next),
        "{published:?}"
    );

    let (ok, out) = misim(w.dir.path(), &["keys", "roll"]).await;
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{next}\tcurrent")), "{out}");
    assert!(out.contains(&format!("{old_kid}\tretired")), "{out}");

    // New tokens are signed by the key that was published ahead; old ones stay valid.
    let new_token = w.admin_token("https://management.azure.com/.default").await;
    assert_eq!(kid_of(&new_token), next);
    let sub = format!("/subscriptions/{}", w.sub());
    for t in [&old_token, &new_token] {
        let (s, body) = w.arm("GET", &sub, t, None).await;
        assert_eq!(s, 200, "{body}");
    }
    w.verify_with_jwks(&old_token, "https://management.azure.com/")
        .await;
    w.verify_with_jwks(&new_token, "https://management.azure.com/")
        .await;
    let published = jwks_kids(&w).await;
    assert_eq!(
        published.len(),
        3,
        "retired, current and a new next: {published:?}"
    );

    // Once every token of the old key has expired (24 h for managed identities, plus
    // the 5 min skew), the old key leaves JWKS.
    let mut clock = w.sb.clock_client().unwrap();
    clock
        .advance(AdvanceClockRequest {
            seconds: 24 * 3600 + 301,
        })
        .await
        .unwrap();
    let published = jwks_kids(&w).await;
    assert!(!published.contains(&old_kid), "{published:?}");
    assert!(published.contains(&next), "{published:?}");
    w.sb.shutdown().await.unwrap();
}

/// The schedule (six weeks by default) follows the sandbox clock: `advance 46d` and the next
/// token is signed by the key that was published ahead.
#[tokio::test(flavor = "multi_thread")]
async fn keys_roll_on_schedule_when_the_clock_moves() {
    let w = start().await;
    let before = kid_of(&w.admin_arm);
    let next = next_kid(&w).await;
    let mut clock = w.sb.clock_client().unwrap();
    clock
        .advance(AdvanceClockRequest {
            seconds: 46 * 86_400,
        })
        .await
        .unwrap();
    let token = w.admin_token("https://management.azure.com/.default").await;
    assert_eq!(kid_of(&token), next);
    assert_ne!(kid_of(&token), before);
    let (s, body) = w
        .arm("GET", &format!("/subscriptions/{}", w.sub()), &token, None)
        .await;
    assert_eq!(s, 200, "{body}");
    w.sb.shutdown().await.unwrap();
}
