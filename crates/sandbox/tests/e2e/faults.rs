//! Fault injection for users (issue #12): rules added through the `misim`
//! CLI and the admin-only `misim.admin.v1.Faults` gRPC service make each
//! service answer as Azure does when it fails, and bad input changes nothing.

use std::process::Output;

use misim_proto::admin::v1 as pb;
use misim_proto::auth::Caller;
use serde_json::{Value, json};

use crate::harness::{self, World};

/// Runs the `misim` binary against this world's data directory.
pub(crate) async fn misim(w: &World, args: &[&str]) -> Output {
    w.sb.write_env_file().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_misim"));
    cmd.args(args).arg("--data-dir").arg(w.dir.path());
    // Only the data directory says where this sandbox is.
    for var in [
        "MISIM_IMDS_GRPC_URL",
        "MISIM_ENTRA_GRPC_URL",
        "MISIM_ARM_GRPC_URL",
        "MISIM_KEYVAULT_GRPC_URL",
        misim_proto::auth::ENV_CONTROL_KEY_FILE,
    ] {
        cmd.env_remove(var);
    }
    cmd.output().await.unwrap()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn ok(w: &World, args: &[&str]) -> String {
    let o = misim(w, args).await;
    assert!(o.status.success(), "misim {args:?}: {}", stderr(&o));
    stdout(&o)
}

async fn vm_with_identity(w: &World, name: &str) -> String {
    w.create_rg("rg1").await;
    w.create_vm("rg1", name, json!({"type": "SystemAssigned"}))
        .await;
    w.imds_endpoint(&w.vm_id("rg1", name)).await
}

async fn imds_get(w: &World, endpoint: &str) -> reqwest::Response {
    w.http
        .get(format!("{endpoint}/metadata/identity/oauth2/token"))
        .query(&[
            ("api-version", "2018-02-01"),
            ("resource", "https://vault.azure.net"),
        ])
        .header("Metadata", "true")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn two_injected_imds_429s_then_tokens_flow_and_the_log_shows_them() {
    let w = harness::start().await;
    let ep = vm_with_identity(&w, "vm1").await;
    let id = ok(
        &w,
        &[
            "fault",
            "add",
            "--service",
            "imds",
            "--vm",
            "vm1",
            "--status",
            "429",
            "--retry-after",
            "3",
            "--count",
            "2",
        ],
    )
    .await;
    assert_eq!(id.trim(), "imds-1");
    for _ in 0..2 {
        let r = imds_get(&w, &ep).await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "3");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "too_many_requests", "{v}");
        assert!(v["error_description"].is_string());
    }
    let r = imds_get(&w, &ep).await;
    assert_eq!(r.status(), 200, "the rule retired after two answers");
    // Retired rules are gone from the list.
    let list: Value = serde_json::from_str(&ok(&w, &["fault", "list", "--json"]).await).unwrap();
    assert_eq!(list, json!([]));
    let log = ok(&w, &["log", "--service", "imds", "--json"]).await;
    let faults: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "fault")
        .collect();
    assert_eq!(faults.len(), 2, "{log}");
    assert_eq!(faults[0]["faultId"], "imds-1");
    assert_eq!(faults[0]["status"], 429);
    assert_eq!(faults[0]["principal"], "vm1");
}

#[tokio::test]
async fn rules_filter_by_vm_path_and_identity_and_clear_by_id() {
    let w = harness::start().await;
    let ep1 = vm_with_identity(&w, "vm1").await;
    w.create_vm("rg1", "vm2", json!({"type": "SystemAssigned"}))
        .await;
    let ep2 = w.imds_endpoint(&w.vm_id("rg1", "vm2")).await;
    let gone = ok(
        &w,
        &[
            "fault",
            "add",
            "--service",
            "imds",
            "--vm",
            "vm1",
            "--path",
            "/metadata/identity/*",
            "--status",
            "410",
        ],
    )
    .await;
    let other = ok(
        &w,
        &[
            "fault",
            "add",
            "--service",
            "imds",
            "--identity",
            "00000000-0000-0000-0000-00000000abcd",
            "--status",
            "500",
        ],
    )
    .await;
    let r = imds_get(&w, &ep1).await;
    assert_eq!(r.status(), 410);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("70 seconds"),
        "{v}"
    );
    assert_eq!(imds_get(&w, &ep2).await.status(), 200, "vm2 is not matched");
    // The instance endpoint does not match the path glob.
    let r = w
        .http
        .get(format!("{ep1}/metadata/instance?api-version=2021-02-01"))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let table = ok(&w, &["fault", "list"]).await;
    assert!(
        table.contains(gone.trim()) && table.contains("path=/metadata/identity/*"),
        "{table}"
    );
    assert!(
        table.contains("identity=00000000-0000-0000-0000-00000000abcd"),
        "{table}"
    );
    assert_eq!(
        ok(&w, &["fault", "clear", gone.trim()]).await.trim(),
        "removed 1"
    );
    assert_eq!(imds_get(&w, &ep1).await.status(), 200);
    let o = misim(&w, &["fault", "clear", gone.trim()]).await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!("no fault rule {}", gone.trim())),
        "{}",
        stderr(&o)
    );
    assert_eq!(ok(&w, &["fault", "clear"]).await.trim(), "removed 1");
    assert!(other.starts_with("imds-"));
}

#[tokio::test]
async fn bad_fault_input_is_a_clear_error_that_changes_nothing() {
    let w = harness::start().await;
    let cases: &[(&[&str], &str)] = &[
        (
            &["--service", "storage", "--status", "429"],
            "unknown service 'storage'",
        ),
        (
            &["--service", "imds", "--status", "418"],
            "status 418 is not one misim can answer for imds",
        ),
        (
            &["--service", "keyvault", "--status", "400"],
            "401, 403, 429, 500, 503",
        ),
        (
            &["--service", "imds", "--status", "429", "--latency", "2h"],
            "the unit must be ms, s or m",
        ),
        (
            &["--service", "imds", "--status", "429", "--latency", "999s"],
            "--latency is at most 300 seconds",
        ),
        (&["--service", "imds"], "a rule needs --status"),
        (
            &["--service", "arm", "--status", "429", "--aadsts", "7000215"],
            "--aadsts applies to entra rules only",
        ),
        (
            &["--service", "arm", "--vm", "vm1", "--status", "429"],
            "--vm applies to imds rules only",
        ),
        (
            &["--service", "imds", "--status", "503", "--probability", "2"],
            "not in (0, 1]",
        ),
        (
            &[
                "--service",
                "imds",
                "--status",
                "503",
                "--count",
                "1",
                "--probability",
                "0.5",
            ],
            "cannot be used with",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["fault", "add"];
        all.extend_from_slice(args);
        let o = misim(&w, &all).await;
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    let o = misim(&w, &["fault", "clear", "nonsense"]).await;
    assert!(stderr(&o).contains("not a fault rule id"), "{}", stderr(&o));
    let list: Value = serde_json::from_str(&ok(&w, &["fault", "list", "--json"]).await).unwrap();
    assert_eq!(list, json!([]), "nothing was added");
}

async fn faults_client(
    w: &World,
    caller: Caller,
    url: &str,
) -> pb::faults_client::FaultsClient<misim_proto::auth::ControlChannel> {
    pb::faults_client::FaultsClient::new(w.sb.channel_as(caller, url).unwrap())
}

fn spec(service: &str, status: u32) -> pb::FaultSpec {
    pb::FaultSpec {
        service: service.into(),
        status,
        ..Default::default()
    }
}

#[tokio::test]
async fn entra_answers_an_injected_aadsts_error_to_the_named_client_only() {
    let w = harness::start().await;
    let p = w.principal("other", &[]).await;
    let mut c = faults_client(&w, Caller::Admin, &w.sb.entra_grpc_url).await;
    let f = c
        .add_fault(pb::AddFaultRequest {
            spec: Some(pb::FaultSpec {
                identity: w.sb.bootstrap.admin_client_id.clone(),
                path: "*/oauth2/*token".into(),
                aadsts: 7000222,
                ..spec("entra", 401)
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(f.id, "entra-1");
    let url = format!("{}/{}/oauth2/v2.0/token", w.sb.entra_url, w.tid());
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", w.sb.bootstrap.admin_client_id.as_str()),
        ("client_secret", w.sb.bootstrap.admin_client_secret.as_str()),
        ("scope", "https://management.azure.com/.default"),
    ];
    let r = w.http.post(&url).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_client");
    assert_eq!(v["error_codes"], json!([7000222]));
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000222: "),
        "{v}"
    );
    assert!(
        v["trace_id"].is_string() && v["correlation_id"].is_string() && v["timestamp"].is_string()
    );
    // Another client is not matched.
    w.token_for(
        &p.client_id,
        &p.secret,
        "https://management.azure.com/.default",
    )
    .await;
    let listed = c
        .list_faults(pb::ListFaultsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.faults[0].hits, 1);
    c.clear_faults(pb::ClearFaultsRequest::default())
        .await
        .unwrap();
    let r = w.http.post(&url).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn arm_throttles_and_refuses_principals_as_azure_does() {
    let w = harness::start().await;
    w.create_rg("rg1").await;
    let mut c = faults_client(&w, Caller::Admin, &w.sb.arm_grpc_url).await;
    let rg = w.rg_id("rg1");
    c.add_fault(pb::AddFaultRequest {
        spec: Some(pb::FaultSpec {
            path: rg.clone(),
            retry_after_secs: Some(7),
            count: Some(1),
            ..spec("arm", 429)
        }),
    })
    .await
    .unwrap();
    let r = w
        .http
        .get(format!("{}{rg}?api-version=2021-04-01", w.sb.arm_url))
        .bearer_auth(&w.admin_arm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "SubscriptionRequestsThrottled", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("after '7' seconds")
    );
    assert_eq!(w.admin("GET", &rg, None).await.0, 200);
    c.add_fault(pb::AddFaultRequest {
        spec: Some(pb::FaultSpec {
            path: "*/roleAssignments/*".into(),
            count: Some(1),
            ..spec("arm", 400)
        }),
    })
    .await
    .unwrap();
    let principal = "11111111-2222-3333-4444-555555555555";
    let (s, v) = w
        .grant_as(&w.admin_arm, &rg, principal, harness::KV_SECRETS_USER)
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "PrincipalNotFound", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("replication delay")
    );
}

#[tokio::test]
async fn key_vault_answers_injected_refusals_in_its_shape() {
    let w = harness::start().await;
    w.create_rg("rg1").await;
    w.create_vault("rg1", "kv1").await;
    w.set_secret("kv1", "s1", "v1").await;
    let token = w.admin_token("https://vault.azure.net/.default").await;
    let mut c = faults_client(&w, Caller::Admin, &w.sb.keyvault_grpc_url).await;
    for (status, code) in [
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (429, "Throttled"),
    ] {
        c.clear_faults(pb::ClearFaultsRequest::default())
            .await
            .unwrap();
        c.add_fault(pb::AddFaultRequest {
            spec: Some(spec("keyvault", status)),
        })
        .await
        .unwrap();
        let url = format!("{}secrets/s1/?api-version=7.4", w.sb.vault_url("kv1"));
        let r = w.http.get(url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status().as_u16(), u16::try_from(status).unwrap());
        if status == 401 {
            let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
            assert!(
                challenge.starts_with("Bearer authorization=\""),
                "{challenge}"
            );
        }
        if status == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
    }
    c.clear_faults(pb::ClearFaultsRequest::default())
        .await
        .unwrap();
    assert_eq!(w.get_secret("kv1", "s1", &token).await.0, 200);
}

#[tokio::test]
async fn a_latency_rule_delays_and_passes_the_request_on() {
    let w = harness::start().await;
    let ep = vm_with_identity(&w, "vm1").await;
    ok(
        &w,
        &[
            "fault",
            "add",
            "--service",
            "imds",
            "--latency",
            "400ms",
            "--count",
            "1",
        ],
    )
    .await;
    let started = tokio::time::Instant::now();
    let r = imds_get(&w, &ep).await;
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(400));
}

#[tokio::test]
async fn the_toolkit_is_the_owners_alone() {
    let w = harness::start().await;
    for (url, service) in [
        (&w.sb.imds_grpc_url, "imds"),
        (&w.sb.entra_grpc_url, "entra"),
        (&w.sb.arm_grpc_url, "arm"),
        (&w.sb.keyvault_grpc_url, "keyvault"),
    ] {
        for caller in [Caller::Arm, Caller::Imds, Caller::Entra, Caller::KeyVault] {
            let e = faults_client(&w, caller, url)
                .await
                .add_fault(pb::AddFaultRequest {
                    spec: Some(spec(service, 500)),
                })
                .await
                .unwrap_err();
            assert_eq!(
                e.code(),
                tonic::Code::PermissionDenied,
                "{caller} at {service}"
            );
            let mut log = pb::log_client::LogClient::new(w.sb.channel_as(caller, url).unwrap());
            let e = log
                .list_decisions(pb::LogQuery::default())
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied);
        }
        // A rule for another service is refused by this one.
        let other = if service == "arm" { "imds" } else { "arm" };
        let e = faults_client(&w, Caller::Admin, url)
            .await
            .add_fault(pb::AddFaultRequest {
                spec: Some(spec(other, 500)),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message()
                .contains(&format!("a rule for {other} goes to {other}'s gRPC"))
        );
    }
}

/// The compose sandbox's way: the CLI runs in a service container that has no misim.env,
/// only `MISIM_<SERVICE>_GRPC_URL` and `MISIM_CONTROL_KEY_FILE` in its environment
/// (deploy/sandbox.env). `fault` and `log` reach every service from those alone.
#[tokio::test]
async fn fault_and_log_reach_the_services_the_environment_names_without_misim_env() {
    let w = harness::start().await;
    let ep = vm_with_identity(&w, "vm1").await;
    let bare = tempfile::tempdir().unwrap();
    let key_file = w.dir.path().join(misim_proto::auth::CONTROL_KEY_FILE);
    let run = |args: &'static [&'static str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_misim"));
        cmd.args(args)
            .arg("--data-dir")
            .arg(bare.path())
            .env("MISIM_IMDS_GRPC_URL", &w.sb.imds_grpc_url)
            .env("MISIM_ENTRA_GRPC_URL", &w.sb.entra_grpc_url)
            .env("MISIM_ARM_GRPC_URL", &w.sb.arm_grpc_url)
            .env("MISIM_KEYVAULT_GRPC_URL", &w.sb.keyvault_grpc_url)
            .env(misim_proto::auth::ENV_CONTROL_KEY_FILE, &key_file);
        async move {
            let o = cmd.output().await.unwrap();
            assert!(o.status.success(), "misim {args:?}: {}", stderr(&o));
            stdout(&o)
        }
    };
    let id = run(&[
        "fault",
        "add",
        "--service",
        "imds",
        "--vm",
        "vm1",
        "--status",
        "429",
        "--count",
        "1",
    ])
    .await;
    assert_eq!(id.trim(), "imds-1");
    assert!(run(&["fault", "list"]).await.contains("imds-1"));
    assert_eq!(imds_get(&w, &ep).await.status(), 429);
    assert_eq!(imds_get(&w, &ep).await.status(), 200, "once, then tokens");
    let log = run(&["log", "--json"]).await;
    assert!(
        log.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .any(|e| e["kind"] == "fault" && e["faultId"] == "imds-1"),
        "{log}"
    );
    assert_eq!(run(&["fault", "clear"]).await.trim(), "removed 0");
    assert!(
        !bare.path().join("misim.env").exists(),
        "nothing was read or written there"
    );
    // Without the variables the CLI says what it was looking for.
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_misim"))
        .args(["fault", "list", "--data-dir"])
        .arg(bare.path())
        .env_remove("MISIM_IMDS_GRPC_URL")
        .env_remove("MISIM_ENTRA_GRPC_URL")
        .env_remove("MISIM_ARM_GRPC_URL")
        .env_remove("MISIM_KEYVAULT_GRPC_URL")
        .output()
        .await
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("misim.env"), "{}", stderr(&o));
}
