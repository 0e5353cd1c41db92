//! Workload identity federation through the whole sandbox: a token of the
//! sandbox's GitHub-shaped issuer, a federated credential on an application
//! (Graph), and Entra's exchange, which fetches the issuer's keys over HTTPS.

use misim_proto::auth::Caller;
use misim_proto::oidc::v1 as pb;
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
    let p = w.principal("ci-deployer", &[]).await;
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
            "name": "github-prod",
            "issuer": format!("{}/github", w.sb.oidc_url),
            "subject": SUBJECT,
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
    w.create_rg("rg1").await;
    let uami = w.uami_id("rg1", "payments-api");
    let (s, u) = w
        .admin("PUT", &uami, Some(json!({"location": "eastus"})))
        .await;
    assert_eq!(s, 201, "{u}");
    let client_id = u["properties"]["clientId"].as_str().unwrap().to_owned();
    let principal_id = u["properties"]["principalId"].as_str().unwrap().to_owned();
    let subject = "system:serviceaccount:payments:api";
    let (s, v) = w
        .admin(
            "PUT",
            &format!("{uami}/federatedIdentityCredentials/aks1-api"),
            Some(json!({"properties": {
                "issuer": format!("{}/kubernetes/aks1/", w.sb.oidc_url),
                "subject": subject,
                "audiences": ["api://AzureADTokenExchange"]}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");

    let pod_token = mint_as(&w, pb::IssuerKind::Kubernetes, "aks1", subject).await;
    let (s, v) = exchange(&w, &client_id, &pod_token).await;
    assert_eq!(s, 200, "{v}");
    let claims = w
        .verify_with_jwks(
            v["access_token"].as_str().unwrap(),
            "https://management.azure.com",
        )
        .await;
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
