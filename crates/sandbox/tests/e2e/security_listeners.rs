//! Issue #10: the embedded sandbox's listeners against other local users and
//! misbehaving clients.

use serde_json::{Value, json};

use crate::harness::{VAULT_AUD, start};

/// Runs `curl` against `url` as uid `uid` (with `Metadata: true`); returns the
/// status and the JSON body, or `None` (with the reason printed) when the test
/// cannot switch users.
async fn curl_as(uid: u32, url: &str) -> Option<(u16, Value)> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
        println!("SKIPPED: running as another uid needs root");
        return None;
    }
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "30",
            "-H",
            "Metadata: true",
        ])
        .args(["-w", "\n%{http_code}", url])
        .current_dir("/")
        .uid(uid)
        .gid(uid)
        .output()
        .await;
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            println!("SKIPPED: cannot run curl: {e}");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, status) = text.rsplit_once('\n').expect("curl printed a status");
    Some((
        status.trim().parse().expect("an HTTP status"),
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    ))
}

/// Another local user who finds a VM's IMDS port (it is listed in
/// `/proc/net/tcp`) gets a 403, not the VM's token; the sandbox owner still
/// gets the token.
#[tokio::test(flavor = "multi_thread")]
async fn another_local_user_cannot_take_a_vms_token() {
    let w = start().await;
    w.create_rg("rg1").await;
    w.create_vm("rg1", "vm1", json!({"type": "SystemAssigned"}))
        .await;
    let ep = w.imds_endpoint(&w.vm_id("rg1", "vm1")).await;
    let url =
        format!("{ep}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={VAULT_AUD}");
    // `nobody`.
    let Some((status, body)) = curl_as(65534, &url).await else {
        return;
    };
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "forbidden", "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    assert!(body.get("access_token").is_none());
    // The owner (this process) is served.
    let (s, v) = w.imds_token(&ep, VAULT_AUD, None).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["access_token"].is_string());
    // And so is the owner through curl, so the refusal above is about the uid.
    let (s, v) = curl_as(0, &url).await.expect("root runs curl");
    assert_eq!(s, 200, "{v}");
}
