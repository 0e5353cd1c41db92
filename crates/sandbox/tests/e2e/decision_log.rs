//! The decision log (issue #12): every refusal on every service, every
//! injected fault, with who asked, what and why, through `misim log` and
//! `misim.admin.v1.Log` (list and follow).

use std::process::Stdio;
use std::time::Duration;

use misim_proto::admin::v1 as pb;
use misim_proto::auth::Caller;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

use crate::faults::{misim, stdout};
use crate::harness::{self, World};

async fn log_json(w: &World, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["log", "--json"];
    all.extend_from_slice(args);
    let o = misim(w, &all).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn refusals_on_every_service_are_logged_with_who_what_and_why() {
    let w = harness::start().await;
    w.create_rg("rg1").await;
    w.create_vault("rg1", "kv1").await;
    w.set_secret("kv1", "s1", "v1").await;
    let reader = w.principal("reader", &[("Reader", &w.rg_id("rg1"))]).await;
    // ARM: a Reader's write, refused with RBAC's reasoning.
    let uami = w.uami_id("rg1", "id1");
    let (s, _) = w
        .arm(
            "PUT",
            &uami,
            &reader.arm_token,
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(s, 403);
    // Key Vault: no data role.
    let kv_token = w
        .token_for(
            &reader.client_id,
            &reader.secret,
            "https://vault.azure.net/.default",
        )
        .await;
    assert_eq!(w.get_secret("kv1", "s1", &kv_token).await.0, 403);
    // Entra: a wrong secret.
    let r = w
        .http
        .post(format!("{}/{}/oauth2/v2.0/token", w.sb.entra_url, w.tid()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", reader.client_id.as_str()),
            ("client_secret", "wrong"),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let entries = log_json(&w, &["--denied", "--principal", &reader.object_id]).await;
    let arm = entries
        .iter()
        .find(|e| e["service"] == "arm")
        .expect("arm refusal");
    assert_eq!(arm["kind"], "denied");
    assert_eq!(arm["status"], 403);
    assert_eq!(arm["method"], "PUT");
    assert_eq!(arm["code"], "AuthorizationFailed");
    assert_eq!(arm["clientId"], reader.client_id.as_str());
    let why = arm["reason"].as_str().unwrap();
    assert!(
        why.contains("'Reader'") && why.contains("assignments considered"),
        "{why}"
    );
    let kv = entries
        .iter()
        .find(|e| e["service"] == "keyvault")
        .expect("kv refusal");
    assert_eq!(kv["code"], "Forbidden");
    assert!(
        kv["reason"]
            .as_str()
            .unwrap()
            .contains("assignments considered"),
        "{kv}"
    );
    // The token endpoint knows the caller by client id only.
    let entra = log_json(
        &w,
        &["--service", "entra", "--principal", &reader.client_id],
    )
    .await;
    let e = entra
        .iter()
        .find(|e| e["status"] == 401)
        .expect("entra refusal");
    assert_eq!(e["code"], "invalid_client");
    assert!(
        e["reason"].as_str().unwrap().starts_with("AADSTS7000215"),
        "{e}"
    );
    // Filters: another principal sees none of these.
    assert!(log_json(&w, &["--principal", "nobody"]).await.is_empty());
}

#[tokio::test]
async fn graph_and_imds_refusals_are_logged_and_denied_leaves_out_faults() {
    let w = harness::start().await;
    w.create_rg("rg1").await;
    w.create_vm("rg1", "vm1", json!({"type": "SystemAssigned"}))
        .await;
    let ep = w.imds_endpoint(&w.vm_id("rg1", "vm1")).await;
    let p = w.principal("nobody", &[]).await;
    let graph_token = w
        .token_for(
            &p.client_id,
            &p.secret,
            "https://graph.microsoft.com/.default",
        )
        .await;
    let r = w
        .http
        .get(format!("{}/v1.0/applications", w.sb.entra_url))
        .bearer_auth(&graph_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // IMDS without the Metadata header.
    let r = w
        .http
        .get(format!("{ep}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let o = misim(
        &w,
        &[
            "fault",
            "add",
            "--service",
            "imds",
            "--status",
            "503",
            "--count",
            "1",
        ],
    )
    .await;
    assert!(o.status.success());
    let (s, _) = w.imds_token(&ep, "https://vault.azure.net", None).await;
    assert_eq!(s, 503);
    let graph = log_json(&w, &["--service", "graph"]).await;
    assert_eq!(graph.len(), 1, "{graph:?}");
    assert_eq!(graph[0]["principal"], p.object_id.as_str());
    let imds = log_json(&w, &["--service", "imds"]).await;
    assert_eq!(imds.len(), 2, "{imds:?}");
    assert_eq!(imds[0]["kind"], "denied");
    assert_eq!(imds[0]["principal"], "vm1");
    assert_eq!(imds[1]["kind"], "fault");
    assert_eq!(imds[1]["faultId"], "imds-1");
    let denied = log_json(&w, &["--service", "imds", "--denied"]).await;
    assert_eq!(denied.len(), 1, "faults are not the service's own refusals");
    // The text form names who and why on one line.
    let o = misim(&w, &["log", "--service", "imds"]).await;
    let text = stdout(&o);
    assert!(
        text.contains(
            "imds fault 503 GET /metadata/identity/oauth2/token service_unavailable who=vm1"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn following_the_log_streams_new_refusals_over_grpc_and_the_cli() {
    let w = harness::start().await;
    w.create_rg("rg1").await;
    let p = w.principal("nobody", &[]).await;
    let mut log =
        pb::log_client::LogClient::new(w.sb.channel_as(Caller::Admin, &w.sb.arm_grpc_url).unwrap());
    let mut stream = log
        .follow_decisions(pb::LogQuery {
            principal: p.object_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    w.sb.write_env_file().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_misim"))
        .args([
            "log",
            "--follow",
            "--json",
            "--service",
            "arm",
            "--principal",
            &p.object_id,
        ])
        .arg("--data-dir")
        .arg(w.dir.path())
        .env_remove("MISIM_ARM_GRPC_URL")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // Whether the CLI has subscribed yet or not, it shows the refusal once
    // (from its first list, or from the stream).
    let rg = w.rg_id("rg1");
    let patience = Duration::from_secs(60);
    let (s, _) = w.arm("GET", &rg, &p.arm_token, None).await;
    assert_eq!(s, 403);
    let first = tokio::time::timeout(patience, stream.message())
        .await
        .expect("a followed entry")
        .unwrap()
        .unwrap();
    assert_eq!(first.service, "arm");
    assert_eq!(first.code, "AuthorizationFailed");
    let line = tokio::time::timeout(patience, lines.next_line())
        .await
        .expect("the CLI shows the refusal")
        .unwrap()
        .expect("a line");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["principal"], p.object_id.as_str());
    assert_eq!(v["status"], 403);
    // The next refusal arrives on the stream.
    let (s, _) = w.arm("DELETE", &rg, &p.arm_token, None).await;
    assert_eq!(s, 403);
    let line = tokio::time::timeout(patience, lines.next_line())
        .await
        .expect("the CLI follows")
        .unwrap()
        .expect("a line");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["method"], "DELETE");
    child.kill().await.unwrap();
}
