//! Component tests of misim-keyvault: `http_router()` driven with `oneshot`,
//! against a fake Entra (tenant + signing keys) and a fake ARM (RBAC).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use misim_keyvault::{Config, Deps, KeyVault};
use misim_proto::arm::v1 as arm;
use misim_proto::entra::v1 as entra;
use misim_testkit::fakes::{FakeAuthorization, FakeDirectory, FakeTenant, shared_state};
use misim_testkit::serve;
use misim_token::RsaSigner;
use misim_types::ManualClock;
use serde_json::{Value, json};
use tonic::service::Routes;
use tower::ServiceExt;

const TENANT: &str = "72f988bf-0000-4000-8000-000000000001";
const AUTHORITY: &str = "https://localhost:9443";
const CHALLENGE: &str = "https://vault.localhost:8445";
const HOST: &str = "kv1.vault.localhost:8445";
const NOW: u64 = 1_767_139_199;
const VAULT_ID: &str =
    "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1";
/// Allowed everything.
const OFFICER: &str = "oid-officer";
/// Allowed nothing.
const NOBODY: &str = "oid-nobody";

fn signer() -> &'static RsaSigner {
    static S: OnceLock<RsaSigner> = OnceLock::new();
    S.get_or_init(|| {
        let nb = std::time::UNIX_EPOCH + Duration::from_secs(NOW - 3600);
        let g = misim_token::cert::generate_rsa_cert(
            "entra",
            nb,
            nb + Duration::from_secs(365 * 86400),
        )
        .unwrap();
        RsaSigner::new(&g.private_key_der, &g.certificate_der).unwrap()
    })
}

fn token(aud: &str, oid: &str, iat: u64) -> String {
    signer()
        .sign(&json!({
            "aud": aud, "iss": format!("https://sts.windows.net/{TENANT}/"), "iat": iat, "nbf": iat,
            "exp": iat + 3600, "appid": "app-1", "appidacr": "2", "oid": oid, "sub": oid, "tid": TENANT,
            "ver": "1.0", "idtyp": "app",
        }))
        .unwrap()
}

// ------------------------------------------------------------------ fakes

/// ARM's decision: vault `kv1` exists, and only [`OFFICER`] may do anything in it.
fn fake_arm() -> FakeAuthorization {
    FakeAuthorization::new(|r| {
        let exists = r.vault_name == "kv1";
        arm::VaultAccessDecision {
            vault_exists: exists,
            vault_resource_id: if exists {
                VAULT_ID.into()
            } else {
                String::new()
            },
            location: "westeurope".into(),
            allowed: exists && r.principal_id == OFFICER,
            reason: "fake".into(),
            vault_uid: String::new(),
        }
    })
}

struct Harness {
    kv: KeyVault,
    clock: Arc<ManualClock>,
    arm: FakeAuthorization,
}

async fn harness_with(arm_url: Option<String>) -> Harness {
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let arm = fake_arm();
    let entra = FakeDirectory::new(shared_state())
        .with_tenant(FakeTenant {
            tenant_id: TENANT.into(),
            authority: AUTHORITY.into(),
        })
        .with_signing_key(signer());
    let entra_url = serve(Routes::new(entra.into_server())).await;
    let arm_url = match arm_url {
        Some(u) => u,
        None => serve(Routes::new(arm.clone().into_server())).await,
    };
    // The fakes do not check credentials; Key Vault sends one anyway.
    let as_keyvault = misim_testkit::control_key().credential(misim_proto::auth::Caller::KeyVault);
    let kv = KeyVault::open(
        Config {
            tenant_id: TENANT.into(),
            authority: AUTHORITY.into(),
            dns_suffix: "vault.localhost".into(),
            challenge_resource: CHALLENGE.into(),
        },
        Deps {
            store: misim_store::Store::memory().unwrap(),
            clock: clock.clone(),
            ids: Arc::new(misim_types::SeqIds::new(9)),
            keys: misim_proto::keys::EntraKeys::new(entra::directory_client::DirectoryClient::new(
                as_keyvault
                    .clone()
                    .wrap(misim_runtime::lazy_channel(&entra_url).unwrap()),
            )),
            authz: arm::authorization_client::AuthorizationClient::new(
                as_keyvault.wrap(misim_runtime::lazy_channel(&arm_url).unwrap()),
            ),
        },
    )
    .await
    .unwrap();
    Harness { kv, clock, arm }
}

async fn harness() -> Harness {
    harness_with(None).await
}

struct Reply {
    status: StatusCode,
    challenge: Option<String>,
    body: Value,
}

impl Harness {
    async fn call(
        &self,
        method: &str,
        host: &str,
        pq: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut b = Request::builder()
            .method(method)
            .uri(pq)
            .header("host", host);
        if let Some(t) = bearer {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let resp = self.kv.http_router().oneshot(req).await.unwrap();
        let status = resp.status();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            challenge,
            body,
        }
    }

    fn officer(&self) -> String {
        token("https://vault.azure.net", OFFICER, NOW)
    }
}

fn expected_challenge() -> String {
    format!("Bearer authorization=\"{AUTHORITY}/{TENANT}\", resource=\"{CHALLENGE}\"")
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn requests_without_a_token_get_the_bearer_challenge() {
    let h = harness().await;
    for (m, pq) in [
        ("GET", "/secrets/pw/?api-version=7.4"),
        ("PUT", "/secrets/pw?api-version=2026-04-01"),
    ] {
        let r = h.call(m, HOST, pq, None, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.challenge.as_deref(), Some(expected_challenge().as_str()));
        assert_eq!(
            r.body,
            json!({"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}})
        );
    }
    assert!(h.arm.vault_checks().is_empty());
}

#[tokio::test]
async fn vaults_answer_under_azures_own_host_names_too() {
    let h = harness().await;
    // No token: the challenge names Azure's resource, as on Azure, for a
    // vault reached as {vault}.vault.azure.net (what the SDKs verify).
    let r = h
        .call(
            "GET",
            "KV1.Vault.Azure.Net",
            "/secrets/pw?api-version=7.4",
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.challenge.as_deref(),
        Some(format!("Bearer authorization=\"{AUTHORITY}/{TENANT}\", resource=\"https://vault.azure.net\"").as_str())
    );
    let t = h.officer();
    let r = h
        .call(
            "PUT",
            "kv1.vault.azure.net",
            "/secrets/pw?api-version=7.4",
            Some(&t),
            Some(json!({"value": "v"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let id = r.body["id"].as_str().unwrap();
    assert!(
        id.starts_with("https://kv1.vault.azure.net/secrets/pw/"),
        "{id}"
    );
    // The same vault under the configured suffix, with its own challenge.
    let r = h
        .call("GET", HOST, "/secrets/pw?api-version=7.4", Some(&t), None)
        .await;
    assert_eq!(
        (r.status, r.body["value"].as_str()),
        (StatusCode::OK, Some("v"))
    );
    let r = h
        .call("GET", HOST, "/secrets/pw?api-version=7.4", None, None)
        .await;
    assert_eq!(r.challenge.as_deref(), Some(expected_challenge().as_str()));
    // Only one label before the suffix names a vault; other hosts are refused.
    for host in ["vault.azure.net", "azure.net", "kv1.vault.azure.com"] {
        let r = h
            .call("GET", host, "/secrets/pw?api-version=7.4", Some(&t), None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{host}");
    }
}

#[tokio::test]
async fn set_then_get_by_name_trailing_slash_and_version() {
    let h = harness().await;
    let t = h.officer();
    let r = h
        .call(
            "PUT",
            HOST,
            "/secrets/db-pw?api-version=7.4",
            Some(&t),
            Some(json!({"value": "s3cret", "contentType": "text/plain", "tags": {"a": "b"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        h.arm.last_data_action(),
        "Microsoft.KeyVault/vaults/secrets/setSecret/action"
    );
    let id = r.body["id"].as_str().unwrap().to_owned();
    let version = id.rsplit('/').next().unwrap().to_owned();
    assert_eq!(
        id,
        format!("https://kv1.vault.localhost:8445/secrets/db-pw/{version}")
    );
    assert_eq!(version.len(), 32);
    assert!(version.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(r.body["value"], "s3cret");
    assert_eq!(r.body["contentType"], "text/plain");
    assert_eq!(r.body["tags"], json!({"a": "b"}));
    assert_eq!(
        r.body["attributes"],
        json!({"enabled": true, "created": NOW, "updated": NOW, "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90})
    );

    for api in [
        "7.4",
        "7.6",
        "2025-07-01",
        "2026-04-01",
        "2026-03-01-preview",
    ] {
        for path in ["/secrets/db-pw", "/secrets/db-pw/", "/secrets/DB-PW/"] {
            let r = h
                .call(
                    "GET",
                    HOST,
                    &format!("{path}?api-version={api}"),
                    Some(&t),
                    None,
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{path} {api}: {}", r.body);
            assert_eq!(r.body["value"], "s3cret");
            assert_eq!(r.body["id"], id);
        }
    }
    assert_eq!(
        h.arm.last_data_action(),
        "Microsoft.KeyVault/vaults/secrets/getSecret/action"
    );

    h.clock.advance(Duration::from_secs(60));
    let r2 = h
        .call(
            "PUT",
            HOST,
            "/secrets/db-pw?api-version=7.4",
            Some(&t),
            Some(json!({"value": "v2"})),
        )
        .await;
    assert_eq!(r2.status, StatusCode::OK);
    assert_ne!(r2.body["id"], id);
    let latest = h
        .call(
            "GET",
            HOST,
            "/secrets/db-pw/?api-version=7.4",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(latest.body["value"], "v2");
    let old = h
        .call(
            "GET",
            HOST,
            &format!("/secrets/db-pw/{version}?api-version=7.4"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(old.status, StatusCode::OK);
    assert_eq!(old.body["value"], "s3cret");

    let list = h
        .call("GET", HOST, "/secrets?api-version=7.4", Some(&t), None)
        .await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["nextLink"], Value::Null);
    assert_eq!(
        list.body["value"][0]["id"],
        "https://kv1.vault.localhost:8445/secrets/db-pw"
    );
    assert!(
        list.body["value"][0].get("value").is_none(),
        "lists never carry values"
    );
    assert_eq!(
        h.arm.last_data_action(),
        "Microsoft.KeyVault/vaults/secrets/readMetadata/action"
    );

    let del = h
        .call(
            "DELETE",
            HOST,
            "/secrets/db-pw?api-version=7.4",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(del.status, StatusCode::OK);
    assert_eq!(
        h.arm.last_data_action(),
        "Microsoft.KeyVault/vaults/secrets/delete"
    );
    let gone = h
        .call(
            "GET",
            HOST,
            "/secrets/db-pw/?api-version=7.4",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.body["error"]["code"], "SecretNotFound");
    let missing = h
        .call(
            "GET",
            HOST,
            "/secrets/never?api-version=7.4",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body["error"]["code"], "SecretNotFound");
}

#[tokio::test]
async fn rbac_denial_has_the_azure_shape() {
    let h = harness().await;
    let t = token("https://vault.azure.net", NOBODY, NOW);
    let r = h
        .call("GET", HOST, "/secrets/pw/?api-version=7.4", Some(&t), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["error"]["code"], "Forbidden");
    assert_eq!(
        r.body["error"]["innererror"],
        json!({"code": "ForbiddenByRbac"})
    );
    let msg = r.body["error"]["message"].as_str().unwrap();
    let expected = format!(
        "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid=app-1;oid={NOBODY};iss=https://sts.windows.net/{TENANT}/\r\nAction: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\nResource: '{}/secrets/pw'\r\nAssignment: (not found)\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: kv1;location=westeurope\r\n",
        VAULT_ID.to_lowercase()
    );
    assert_eq!(msg, expected);
}

#[tokio::test]
async fn wrong_audience_and_expired_tokens_are_challenged() {
    let h = harness().await;
    let arm_token = token("https://management.azure.com/", OFFICER, NOW);
    let r = h
        .call(
            "GET",
            HOST,
            "/secrets/pw?api-version=7.4",
            Some(&arm_token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.challenge.as_deref(), Some(expected_challenge().as_str()));
    assert_eq!(r.body["error"]["code"], "Unauthorized");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("audience"),
        "{}",
        r.body
    );

    // The challenge resource is accepted as an audience too (trailing slash ignored).
    let t = token(&format!("{CHALLENGE}/"), OFFICER, NOW);
    let r = h
        .call("GET", HOST, "/secrets/pw?api-version=7.4", Some(&t), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);

    let ok = h.officer();
    h.clock.advance(Duration::from_secs(3600 + 301));
    let r = h
        .call("GET", HOST, "/secrets/pw?api-version=7.4", Some(&ok), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.challenge.as_deref(), Some(expected_challenge().as_str()));
    // Key Vault's own words for an expired token.
    assert_eq!(
        r.body["error"]["message"], "[TokenExpired] Error validating token: 'S2S12086'.",
        "{}",
        r.body
    );

    let r = h
        .call(
            "GET",
            HOST,
            "/secrets/pw?api-version=7.4",
            Some("garbage"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.challenge.is_some());
}

#[tokio::test]
async fn unknown_vaults_missing_api_versions_and_bad_input() {
    let h = harness().await;
    let t = h.officer();
    let r = h
        .call(
            "GET",
            "nope.vault.localhost:8445",
            "/secrets/pw?api-version=7.4",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["error"]["code"], "VaultNotFound");

    let r = h.call("GET", HOST, "/secrets/pw", Some(&t), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["code"], "BadParameter");
    assert!(r.body["error"]["message"].is_string());

    // Host matching is case-insensitive and ignores the port.
    let r = h
        .call(
            "PUT",
            "KV1.Vault.Localhost",
            "/secrets/x?api-version=7.4",
            Some(&t),
            Some(json!({"value": "1"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body["id"].as_str().unwrap().rsplit_once('/').unwrap().0,
        "https://kv1.vault.localhost/secrets/x"
    );

    let r = h
        .call(
            "PUT",
            HOST,
            "/secrets/x?api-version=7.4",
            Some(&t),
            Some(json!({"nope": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .call(
            "PUT",
            HOST,
            "/secrets/bad_name?api-version=7.4",
            Some(&t),
            Some(json!({"value": "1"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .call(
            "GET",
            "example.com",
            "/secrets/x?api-version=7.4",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn arm_unreachable_is_503() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let h = harness_with(Some(closed)).await;
    let t = h.officer();
    let r = h
        .call("GET", HOST, "/secrets/pw?api-version=7.4", Some(&t), None)
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.body["error"]["code"].is_string() && r.body["error"]["message"].is_string());
}
