//! Workload identity federation through the whole sandbox: a token of the
//! sandbox's GitHub-shaped issuer, a federated credential on an application
//! (Graph), and Entra's exchange, which fetches the issuer's keys over HTTPS.

use misim_proto::auth::Caller;
use misim_proto::oidc::v1 as pb;
use misim_token::verify::AccessClaims;
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::harness::{World, start};

const SUBJECT: &str = "repo:contoso/payments:environment:prod";

async fn mint(w: &World, subject: &str) -> String {
    mint_as(w, pb::IssuerKind::Github, "", subject).await
}

async fn mint_as(w: &World, kind: pb::IssuerKind, cluster: &str, subject: &str) -> String {
    let channel = w.sb.channel_as(Caller::Admin, &w.sb.oidc_grpc_url).unwrap();
    pb::issuers_client::IssuersClient::new(channel)
        .mint_token(pb::MintTokenRequest {
            kind: kind.into(),
            cluster: cluster.into(),
            subject: subject.into(),
            audience: String::new(),
            lifetime_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .token
}

/// An application with a federated credential trusting the sandbox's GitHub issuer.
async fn federated_app(w: &World) -> String {
    let issuer = format!("{}/github", w.sb.oidc_url);
    app_trusting(w, "ci-deployer", &issuer, SUBJECT).await
}

/// An application (through Graph) whose one federated credential names `issuer` and `subject`.
async fn app_trusting(w: &World, name: &str, issuer: &str, subject: &str) -> String {
    let p = w.principal(name, &[]).await;
    let graph = w.admin_token("https://graph.microsoft.com/.default").await;
    let apps: Value = w
        .http
        .get(format!(
            "{}/v1.0/applications?$filter=appId eq '{}'",
            w.sb.entra_url, p.client_id
        ))
        .bearer_auth(&graph)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let app_object = apps["value"][0]["id"].as_str().expect("the app").to_owned();
    let r = w
        .http
        .post(format!(
            "{}/v1.0/applications/{app_object}/federatedIdentityCredentials",
            w.sb.entra_url
        ))
        .bearer_auth(&graph)
        .json(&json!({
            "name": "trusted",
            "issuer": issuer,
            "subject": subject,
            "audiences": ["api://AzureADTokenExchange"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    p.client_id
}

async fn exchange(w: &World, client_id: &str, assertion: &str) -> (u16, Value) {
    let r = w
        .http
        .post(format!("{}/{}/oauth2/v2.0/token", w.sb.entra_url, w.tid()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The access token Entra gives `client_id` for `assertion`, verified.
async fn exchanged(w: &World, client_id: &str, assertion: &str) -> AccessClaims {
    let (s, v) = exchange(w, client_id, assertion).await;
    assert_eq!(s, 200, "{v}");
    w.verify_with_jwks(
        v["access_token"].as_str().unwrap(),
        "https://management.azure.com",
    )
    .await
}

#[tokio::test]
async fn a_github_token_is_traded_for_the_apps_token() {
    let w = start().await;
    let client_id = federated_app(&w).await;
    let (s, v) = exchange(&w, &client_id, &mint(&w, SUBJECT).await).await;
    assert_eq!(s, 200, "{v}");
    let claims = w
        .verify_with_jwks(
            v["access_token"].as_str().unwrap(),
            "https://management.azure.com",
        )
        .await;
    assert_eq!(claims.client_id(), client_id);
}

#[tokio::test]
async fn subjects_match_exactly() {
    let w = start().await;
    let client_id = federated_app(&w).await;
    let (s, v) = exchange(&w, &client_id, &mint(&w, &SUBJECT.to_uppercase()).await).await;
    // Entra answers invalid_client with 401; a subject differing only in case
    // has its own code (7002138), as Azure/login#515 shows.
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["error"], "invalid_client", "{v}");
    assert_eq!(v["error_codes"], json!([7002138]), "{v}");
}

/// The AKS workload-identity path: a user-assigned identity trusts a cluster's
/// service account through ARM, and the pod's projected token is traded for
/// the identity's token.
#[tokio::test]
async fn a_pods_token_is_traded_for_a_user_assigned_identitys_token() {
    let w = start().await;
    let subject = "system:serviceaccount:payments:api";
    let (client_id, principal_id) = identity_trusting(&w, "payments-api", "aks1", subject).await;

    let pod_token = mint_as(&w, pb::IssuerKind::Kubernetes, "aks1", subject).await;
    let claims = exchanged(&w, &client_id, &pod_token).await;
    assert_eq!(claims.client_id(), client_id);
    assert_eq!(claims.oid, principal_id);

    // Another service account of the same cluster is refused.
    let other_token = mint_as(
        &w,
        pb::IssuerKind::Kubernetes,
        "aks1",
        "system:serviceaccount:payments:worker",
    )
    .await;
    let (s, v) = exchange(&w, &client_id, &other_token).await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["error_codes"], json!([700213]), "{v}");
}

/// A user-assigned identity in `rg1` trusting `subject` of the sandbox's
/// cluster `cluster`; returns its client id and principal id.
async fn identity_trusting(
    w: &World,
    name: &str,
    cluster: &str,
    subject: &str,
) -> (String, String) {
    w.create_rg("rg1").await;
    let uami = w.uami_id("rg1", name);
    let (s, u) = w
        .admin("PUT", &uami, Some(json!({"location": "eastus"})))
        .await;
    assert_eq!(s, 201, "{u}");
    let (s, v) = w
        .admin(
            "PUT",
            &format!("{uami}/federatedIdentityCredentials/{cluster}"),
            Some(json!({"properties": {
                "issuer": format!("{}/kubernetes/{cluster}/", w.sb.oidc_url),
                "subject": subject,
                "audiences": ["api://AzureADTokenExchange"]}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let p = &u["properties"];
    (
        p["clientId"].as_str().unwrap().to_owned(),
        p["principalId"].as_str().unwrap().to_owned(),
    )
}

/// `misim pod exec --cluster aks1 --service-account SA --client-id ID -- sh -c
/// SCRIPT sh OUT`, as typed on the command line, against this sandbox.
async fn pod_exec(
    w: &World,
    service_account: &str,
    client_id: &str,
    script: &str,
    out: &std::path::Path,
) -> ExitCode {
    let args = [
        "--cluster",
        "aks1",
        "--service-account",
        service_account,
        "--client-id",
        client_id,
    ];
    use clap::Parser as _;
    w.sb.write_env_file().unwrap();
    let data_dir = w.dir.path().display().to_string();
    let out = out.display().to_string();
    let mut argv = vec!["misim", "pod", "exec", "--data-dir", &data_dir];
    argv.extend_from_slice(&args);
    argv.extend_from_slice(&["--", "sh", "-c", script, "sh", &out]);
    let cli = misim_sandbox::cli::Cli::try_parse_from(argv).unwrap();
    misim_sandbox::cli::run(cli).await.unwrap()
}

/// The webhook's contract end to end: the command sees the four variables and
/// a token file whose token Entra trades for the identity's token; its exit
/// code passes through; the token's directory is gone afterwards.
#[tokio::test]
async fn a_pod_gets_the_webhooks_environment_and_a_token_entra_accepts() {
    let w = start().await;
    let subject = "system:serviceaccount:payments:api";
    let (client_id, principal_id) = identity_trusting(&w, "payments-api", "aks1", subject).await;
    let out = tempfile::tempdir().unwrap();
    let code = pod_exec(
        &w,
        "payments/api",
        &client_id,
        r#"cp "$AZURE_FEDERATED_TOKEN_FILE" "$1/token" && env > "$1/env" && exit 7"#,
        out.path(),
    )
    .await;
    assert_eq!(
        code,
        ExitCode::from(7),
        "the command's exit code passes through"
    );

    let env = std::fs::read_to_string(out.path().join("env")).unwrap();
    let var = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .unwrap_or_else(|| panic!("{k} missing from the pod's environment"))
            .to_owned()
    };
    assert_eq!(var("AZURE_CLIENT_ID"), client_id);
    assert_eq!(var("AZURE_TENANT_ID"), w.tid());
    assert_eq!(var("AZURE_AUTHORITY_HOST"), format!("{}/", w.sb.entra_url));
    assert_eq!(var("SSL_CERT_FILE"), w.sb.ca_path.display().to_string());
    let token_file = var("AZURE_FEDERATED_TOKEN_FILE");
    assert!(
        token_file.ends_with("/azure-identity-token"),
        "{token_file}"
    );
    assert!(
        !std::path::Path::new(&token_file).exists(),
        "the pod's token is removed when the command ends"
    );

    let token = std::fs::read_to_string(out.path().join("token")).unwrap();
    let claims = exchanged(&w, &client_id, token.trim()).await;
    assert_eq!(claims.oid, principal_id);
}

/// A pod of another service account gets a token, but not the identity's:
/// Entra refuses its subject (AADSTS700213), exactly as on AKS.
#[tokio::test]
async fn a_pod_of_another_service_account_is_refused() {
    let w = start().await;
    let (client_id, _) = identity_trusting(
        &w,
        "payments-api",
        "aks1",
        "system:serviceaccount:payments:api",
    )
    .await;
    let out = tempfile::tempdir().unwrap();
    let code = pod_exec(
        &w,
        "payments/worker",
        &client_id,
        r#"cp "$AZURE_FEDERATED_TOKEN_FILE" "$1/token""#,
        out.path(),
    )
    .await;
    assert_eq!(code, ExitCode::SUCCESS);
    let token = std::fs::read_to_string(out.path().join("token")).unwrap();
    let (s, v) = exchange(&w, &client_id, token.trim()).await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["error_codes"], json!([700213]), "{v}");
}

/// A managed identity as an application's credential: IMDS issues the VM's
/// identity a token for `api://AzureADTokenExchange`, and an application whose
/// FIC names Entra's v2 issuer and that identity accepts it as its client
/// assertion. An application trusting another identity refuses it.
#[tokio::test]
async fn an_imds_token_for_the_exchange_audience_is_an_apps_credential() {
    let w = start().await;
    w.create_rg("rg1").await;
    let vm = w
        .create_vm("rg1", "vm1", json!({"type": "SystemAssigned"}))
        .await;
    let principal = vm["identity"]["principalId"].as_str().unwrap().to_owned();
    let endpoint = w.imds_endpoint(&w.vm_id("rg1", "vm1")).await;
    let (s, t) = w
        .imds_token(&endpoint, "api://AzureADTokenExchange", None)
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["resource"], "api://AzureADTokenExchange", "{t}");
    let assertion = t["access_token"].as_str().unwrap().to_owned();

    let issuer = format!("{}/{}/v2.0", w.sb.entra_url, w.tid());
    let app = app_trusting(&w, "mi-trusting-app", &issuer, &principal).await;
    let claims = exchanged(&w, &app, &assertion).await;
    assert_eq!(claims.client_id(), app);

    let other = app_trusting(
        &w,
        "other-app",
        &issuer,
        "00000000-0000-4000-8000-000000000001",
    )
    .await;
    let (s, v) = exchange(&w, &other, &assertion).await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["error_codes"], json!([700213]), "{v}");
}

/// `misim pod project` for `payments/api` of cluster `aks1`, running, whose identity trusts it.
struct Projector {
    client_id: String,
    principal_id: String,
    file: std::path::PathBuf,
    task: tokio::task::JoinHandle<anyhow::Result<std::process::ExitCode>>,
    _out: tempfile::TempDir,
}

async fn projector(w: &World) -> Projector {
    use clap::Parser as _;
    let subject = "system:serviceaccount:payments:api";
    let (client_id, principal_id) = identity_trusting(w, "payments-api", "aks1", subject).await;
    w.sb.write_env_file().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("azure-identity-token");
    let (data_dir, file_arg) = (
        w.dir.path().display().to_string(),
        file.display().to_string(),
    );
    let cli = misim_sandbox::cli::Cli::try_parse_from([
        "misim",
        "pod",
        "project",
        "--cluster",
        "aks1",
        "--service-account",
        "payments/api",
        "--out",
        &file_arg,
        "--data-dir",
        &data_dir,
    ])
    .unwrap();
    Projector {
        client_id,
        principal_id,
        file,
        task: tokio::spawn(misim_sandbox::cli::run(cli)),
        _out: out,
    }
}

/// `misim pod project` (the compose sandbox's `pod1-token`): the pod's token, written to a
/// file before anything else and kept there while the command runs, is one Entra trades
/// for the identity's token.
#[tokio::test]
async fn pod_project_keeps_a_token_entra_accepts_in_a_file() {
    let w = start().await;
    let Projector {
        client_id,
        principal_id,
        file,
        task,
        _out,
    } = projector(&w).await;
    let token = misim_testkit::eventually("the projected token", || {
        let file = file.clone();
        async move { std::fs::read_to_string(&file).map_err(|e| e.to_string()) }
    })
    .await;
    assert!(
        !task.is_finished(),
        "it keeps running, to refresh the token"
    );
    let claims = exchanged(&w, &client_id, token.trim()).await;
    assert_eq!(claims.oid, principal_id);
    task.abort();
}

/// A JWT's claims, unverified.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&misim_token::b64_lenient(payload).unwrap()).unwrap()
}

fn iat_of(token: &str) -> i64 {
    claims_of(token)["iat"].as_i64().unwrap()
}

/// Issue #13: `misim pod project` refreshes by the sandbox clock. After `misim clock advance
/// 2h` (past the 1 h token's life) the file holds a new token, issued at the moved time,
/// that Entra accepts while it refuses the old one; no restart of the projector.
#[tokio::test]
async fn pod_project_rewrites_the_token_after_a_clock_advance() {
    let w = start().await;
    let Projector {
        client_id,
        principal_id,
        file,
        task,
        _out,
    } = projector(&w).await;
    let data_dir = w.dir.path().display().to_string();
    use clap::Parser as _;
    let read = || {
        let file = file.clone();
        async move { std::fs::read_to_string(&file).map_err(|e| e.to_string()) }
    };
    let old = misim_testkit::eventually("the projected token", read).await;

    let advance = misim_sandbox::cli::Cli::try_parse_from([
        "misim",
        "clock",
        "advance",
        "2h",
        "--url",
        &w.sb.admin_grpc_url,
        "--data-dir",
        &data_dir,
    ])
    .unwrap();
    misim_sandbox::cli::run(advance).await.unwrap();

    let new = misim_testkit::eventually("a token rewritten after the clock moved", || async {
        let t = read().await?;
        if t == old {
            Err("still the old token".to_owned())
        } else {
            Ok(t)
        }
    })
    .await;
    assert!(
        iat_of(&new) >= iat_of(&old) + 7200,
        "the new token is issued at the moved time"
    );
    let (s, v) = exchange(&w, &client_id, old.trim()).await;
    assert_eq!(s, 401, "the old token is expired on the sandbox clock: {v}");
    let (s, v) = exchange(&w, &client_id, new.trim()).await;
    assert_eq!(s, 200, "Entra accepts the new token: {v}");
    // Issued 2 h ahead: `exchanged` would check it against the real clock.
    assert_eq!(
        claims_of(v["access_token"].as_str().unwrap())["oid"],
        principal_id
    );
    assert!(!task.is_finished(), "it keeps running");
    task.abort();
}
