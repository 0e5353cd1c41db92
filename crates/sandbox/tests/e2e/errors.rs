//! Bad input across the flow (IMDS, Entra, ARM, Key Vault) answers in Azure's error shapes,
//! never a panic.

use serde_json::json;

use crate::harness::{VAULT_AUD, start};

/// Bad input anywhere in the flow answers in Azure's shape, never a panic.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_azure_shaped_errors() {
    let w = start().await;
    w.create_rg("rg1").await;
    let vm = w
        .create_vm("rg1", "vm1", json!({"type": "SystemAssigned"}))
        .await;
    assert!(vm["identity"]["principalId"].is_string());
    let ep = w.imds_endpoint(&w.vm_id("rg1", "vm1")).await;

    // IMDS without the Metadata header.
    let r = w
        .http
        .get(format!(
            "{ep}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={VAULT_AUD}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"error": "invalid_request", "error_description": "Required metadata header not specified"})
    );

    // IMDS with an unknown identity.
    let (s, v) = w
        .imds_token(
            &ep,
            VAULT_AUD,
            Some(("client_id", "00000000-0000-0000-0000-000000000000")),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["error_description"], "Identity not found");

    // ARM with bad JSON.
    let r = w
        .http
        .put(format!(
            "{}{}?api-version=2024-11-01",
            w.sb.arm_url,
            w.rg_id("rg2")
        ))
        .bearer_auth(&w.admin_arm)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]["code"].is_string() && v["error"]["message"].is_string(),
        "{v}"
    );

    // ARM with a bad token, and with none.
    let (s, v) = w.arm("GET", &w.rg_id("rg1"), "not-a-token", None).await;
    assert_eq!(s, 401, "{v}");
    assert!(v["error"]["code"].is_string());
    let r = w
        .http
        .get(format!(
            "{}{}?api-version=2024-11-01",
            w.sb.arm_url,
            w.rg_id("rg1")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "AuthenticationFailed");

    // Entra with a wrong secret.
    let r = w
        .http
        .post(format!("{}/{}/oauth2/v2.0/token", w.sb.entra_url, w.tid()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", w.sb.bootstrap.admin_client_id.as_str()),
            ("client_secret", "wrong"),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_client");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215")
    );

    // Key Vault without a token: the challenge.
    let r = w
        .http
        .get(format!(
            "{}secrets/x?api-version=7.4",
            w.sb.vault_url("kv1")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains(&format!("authorization=\"{}/{}\"", w.sb.entra_url, w.tid())),
        "{challenge}"
    );

    // State is intact after all that: the VM and its identity are still there.
    let (s, again) = w.admin("GET", &w.vm_id("rg1", "vm1"), None).await;
    assert_eq!(s, 200);
    assert_eq!(
        again["identity"]["principalId"],
        vm["identity"]["principalId"]
    );
    w.sb.shutdown().await.unwrap();
}

/// A resource Entra does not know: IMDS answers 400 `invalid_resource` with
/// Entra's AADSTS500011 text, as on Azure.
#[tokio::test(flavor = "multi_thread")]
async fn imds_unknown_resource_is_invalid_resource() {
    let w = start().await;
    w.create_rg("rg1").await;
    w.create_vm("rg1", "vm1", json!({"type": "SystemAssigned"}))
        .await;
    let ep = w.imds_endpoint(&w.vm_id("rg1", "vm1")).await;
    let (s, v) = w.imds_token(&ep, "https://unknown.example.com", None).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"], "invalid_resource");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS500011"),
        "{v}"
    );
    w.sb.shutdown().await.unwrap();
}
