//! Issue #10, authorization gaps: one test per attack, each asserting the
//! exact refusal Azure gives.
//!
//! - 7a: a VM's managed identity reads the directory through Microsoft Graph.
//! - 7b: a principal polls another principal's operation-status URL.
//! - 8b: client assertions with a foreign `aud`, an unbounded lifetime, or
//!   reused.

use serde_json::{Value, json};

use crate::harness::{World, now_unix, start};

const CREATE_SP: &str = "misim.entra.v1.Directory/CreateServicePrincipal";

/// `GET {entra}/v1.0/{path}` with a bearer token: status and body.
async fn graph_get(w: &World, path: &str, token: &str) -> (u16, Value) {
    let r = w
        .http
        .get(format!("{}/v1.0/{path}", w.sb.entra_url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_vms_managed_identity_cannot_read_the_directory_through_graph() {
    let w = start().await;
    w.create_rg("rg1").await;
    let vm_id = w.vm_id("rg1", "vm1");
    w.create_vm("rg1", "vm1", json!({"type": "SystemAssigned"}))
        .await;
    let endpoint = w.imds_endpoint(&vm_id).await;

    // Code in the VM gets a Graph token from its own IMDS, under either
    // Graph audience (Microsoft Graph's, and Entra's own URL as the cloud
    // metadata names it).
    for resource in [
        "https://graph.microsoft.com",
        &format!("{}/", w.sb.entra_url),
    ] {
        let (s, t) = w.imds_token(&endpoint, resource, None).await;
        assert_eq!(s, 200, "{t}");
        let token = t["access_token"].as_str().unwrap();
        for path in [
            "servicePrincipals",
            "applications",
            &format!("servicePrincipals/{}", w.sb.bootstrap.admin_object_id),
        ] {
            let (s, b) = graph_get(&w, path, token).await;
            assert_eq!(s, 403, "{path}: {b}");
            assert_eq!(b["error"]["code"], "Authorization_RequestDenied", "{b}");
            assert_eq!(
                b["error"]["message"], "Insufficient privileges to complete the operation.",
                "{b}"
            );
        }
    }
    // The administrator still reads (az ad sp list/show run as it).
    let admin = w.admin_token("https://graph.microsoft.com/.default").await;
    let (s, b) = graph_get(&w, "servicePrincipals", &admin).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn another_principal_cannot_poll_a_vms_operation_status() {
    let w = start().await;
    w.create_rg("rg1").await;
    w.create_rg("rg2").await;
    let owner = w
        .principal("owner", &[("Virtual Machine Contributor", &w.rg_id("rg1"))])
        .await;
    let other = w.principal("other", &[("Reader", &w.rg_id("rg2"))]).await;

    // Entra is briefly unavailable, so the VM's identity stays in progress
    // and ARM hands out the operation's status URL.
    w.faults
        .fail(CREATE_SP, tonic::Code::Unavailable, "entra down (injected)");
    let vm_id = w.vm_id("rg1", "vm1");
    let body = json!({"location": "eastus", "identity": {"type": "SystemAssigned"}, "properties": {
        "hardwareProfile": {"vmSize": "Standard_B1s"},
        "osProfile": {"computerName": "vm1", "adminUsername": "azureuser"}}});
    let r = w
        .http
        .put(format!("{}{vm_id}?api-version=2024-11-01", w.sb.arm_url))
        .bearer_auth(&owner.arm_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let status_url = r.headers()["azure-asyncoperation"]
        .to_str()
        .unwrap()
        .to_owned();

    let poll = async |token: &str| {
        let r = w
            .http
            .get(&status_url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let (s, v) = poll(&owner.arm_token).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "InProgress", "{v}");

    let (s, v) = poll(&other.arm_token).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "AuthorizationFailed", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&other.object_id)
            && msg.contains("'Microsoft.Compute/virtualMachines/read'")
            && msg.to_lowercase().contains(&vm_id.to_lowercase()),
        "{msg}"
    );
    w.faults.clear();
}

/// The administrator's certificate (`admin-cert.pem`) as a signer.
fn admin_signer(w: &World) -> misim_token::RsaSigner {
    let pem = std::fs::read_to_string(&w.sb.admin_cert_path).unwrap();
    let key = misim_token::cert::pem_to_der(&pem, "PRIVATE KEY").unwrap();
    let cert = misim_token::cert::pem_to_der(&pem, "CERTIFICATE").unwrap();
    misim_token::RsaSigner::new(&key, &cert).unwrap()
}

/// Posts a certificate assertion to the v2 token endpoint: status and body.
async fn with_assertion(w: &World, assertion: &str) -> (u16, Value) {
    let r = w
        .http
        .post(format!("{}/{}/oauth2/v2.0/token", w.sb.entra_url, w.tid()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", w.sb.bootstrap.admin_client_id.as_str()),
            ("scope", "https://management.azure.com/.default"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn assert_aadsts(status: u16, b: &Value, code: u64) {
    assert_eq!(status, 401, "{b}");
    assert_eq!(b["error"], "invalid_client", "{b}");
    assert_eq!(b["error_codes"], json!([code]), "{b}");
    let d = b["error_description"].as_str().unwrap();
    assert!(d.starts_with(&format!("AADSTS{code}: ")), "{d}");
}

#[tokio::test]
async fn client_assertions_are_bound_to_this_token_endpoint_and_an_hour() {
    let w = start().await;
    let signer = admin_signer(&w);
    let id = w.sb.bootstrap.admin_client_id.clone();
    let aud = format!("{}/{}/oauth2/v2.0/token", w.sb.entra_url, w.tid());
    let now = now_unix();
    let sign = |aud: &str, jti: &str, exp: i64| {
        signer
            .sign(&json!({"aud": aud, "iss": id, "sub": id, "jti": jti,
                "nbf": now, "iat": now, "exp": exp}))
            .unwrap()
    };

    // An assertion made for another token endpoint (Azure's, or another
    // host's) cannot be replayed here: AADSTS700023.
    for foreign in [
        format!(
            "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
            w.tid()
        ),
        format!("https://attacker.example/{}/oauth2/v2.0/token", w.tid()),
    ] {
        let (s, b) = with_assertion(&w, &sign(&foreign, "j-aud", now + 600)).await;
        assert_aadsts(s, &b, 700023);
    }

    // An assertion valid for a year: AADSTS700024.
    let (s, b) = with_assertion(&w, &sign(&aud, "j-long", now + 365 * 86_400)).await;
    assert_aadsts(s, &b, 700024);

    // Entra accepts an assertion again within its (short) lifetime, as MSAL
    // clients that cache one rely on; so does misim.
    let a = sign(&aud, "j-reused", now + 600);
    for _ in 0..2 {
        let (s, b) = with_assertion(&w, &a).await;
        assert_eq!(s, 200, "{b}");
    }
}
