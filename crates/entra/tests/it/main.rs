//! Component tests for misim-entra: the HTTP router driven with `oneshot`
//! (no sockets) and the gRPC trait called directly.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use misim_entra::{AdminBootstrap, Config, Deps, Entra};
use misim_proto::entra::v1 as pb;
use misim_proto::entra::v1::directory_server::Directory;
use misim_proto::entra::v1::federation_server::Federation;
use misim_store::Store;
use misim_token::RsaSigner;
use misim_token::cert::{GeneratedCert, generate_rsa_cert};
use misim_token::verify::{AccessClaims, KeySet, verify_access_token};
use misim_types::{ManualClock, SeqIds, audiences};
use serde_json::{Value, json};
use tower::ServiceExt;

mod assertion_props;
mod create_with_certificate;
mod federation;
mod graph;
mod lifecycle;

const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const PUBLIC: &str = "https://localhost:40001";
const NOW: u64 = 1_767_139_199;
const ADMIN_APP: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const ADMIN_OID: &str = "aaaaaaaa-0000-4000-8000-000000000002";
const ADMIN_SECRET: &str = "admin-secret-value";
const VM_ID: &str =
    "/subscriptions/s1/resourceGroups/RG1/providers/Microsoft.Compute/virtualMachines/vm1";
const UAMI_ID: &str = "/subscriptions/s1/resourceGroups/RG1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1";
const FORM_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn config() -> Config {
    Config {
        tenant_id: TID.into(),
        public_url: PUBLIC.into(),
        extra_resources: vec!["https://vault.localhost:40003".into()],
        admin: Some(AdminBootstrap {
            app_id: ADMIN_APP.into(),
            object_id: ADMIN_OID.into(),
            display_name: "admin".into(),
            secret: ADMIN_SECRET.into(),
        }),
        tokens: Default::default(),
    }
}

struct Env {
    entra: Entra,
    clock: Arc<ManualClock>,
}

async fn open_with(store: Store, clock: Arc<ManualClock>) -> Entra {
    open_config(config(), store, clock).await.unwrap()
}

/// A tenant opened with `cfg`, or why it did not open.
async fn open_config(
    cfg: Config,
    store: Store,
    clock: Arc<ManualClock>,
) -> Result<Entra, misim_entra::EntraError> {
    Entra::open(
        cfg,
        Deps {
            store,
            clock,
            ids: Arc::new(SeqIds::new(1)),
        },
    )
    .await
}

async fn env() -> Env {
    let clock = Arc::new(ManualClock::at_unix(NOW));
    Env {
        entra: open_with(Store::memory().unwrap(), clock.clone()).await,
        clock,
    }
}

async fn send(entra: &Entra, req: Request<Body>) -> (StatusCode, http::HeaderMap, Value) {
    let resp = entra.http_router().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

async fn post_form(entra: &Entra, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let body = serde_urlencoded::to_string(form).unwrap();
    let req = Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("client-request-id", "corr-1")
        .body(Body::from(body))
        .unwrap();
    let (s, _, v) = send(entra, req).await;
    (s, v)
}

async fn get(entra: &Entra, path: &str) -> (StatusCode, http::HeaderMap, Value) {
    send(entra, Request::get(path).body(Body::empty()).unwrap()).await
}

async fn keyset_from_jwks(entra: &Entra) -> KeySet {
    let (s, _, jwks) = get(entra, &format!("/{TID}/discovery/keys")).await;
    assert_eq!(s, StatusCode::OK);
    let mut keys = KeySet::new(TID);
    for k in jwks["keys"].as_array().unwrap() {
        let n = misim_token::b64_lenient(k["n"].as_str().unwrap()).unwrap();
        let e = misim_token::b64_lenient(k["e"].as_str().unwrap()).unwrap();
        keys.add_rsa(k["kid"].as_str().unwrap(), &n, &e);
    }
    keys
}

fn raw_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&misim_token::b64_lenient(payload).unwrap()).unwrap()
}

async fn verify(env: &Env, token: &str) -> AccessClaims {
    let keys = keyset_from_jwks(&env.entra).await;
    let iss = format!("https://sts.windows.net/{TID}/");
    verify_access_token(token, &keys, &[iss.as_str()], env.clock.as_ref(), |_| true).unwrap()
}

fn secret_form<'a>(
    client: &'a str,
    secret: &'a str,
    target: (&'a str, &'a str),
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", client),
        ("client_secret", secret),
        target,
    ]
}

fn assert_aadsts(body: &Value, error: &str, code: u64) {
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    let d = body["error_description"].as_str().unwrap();
    assert!(d.starts_with(&format!("AADSTS{code}: ")), "{d}");
    assert!(
        d.contains("\r\nTrace ID: ")
            && d.contains("\r\nCorrelation ID: ")
            && d.contains("\r\nTimestamp: ")
    );
    for f in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(body[f].is_string(), "{f} missing in {body}");
    }
}

/// A managed identity with a registered certificate.
struct Identity {
    sp: pb::ServicePrincipal,
    cert: GeneratedCert,
    signer: RsaSigner,
}

fn new_cert(cn: &str) -> GeneratedCert {
    let nb = UNIX_EPOCH + Duration::from_secs(NOW - 60);
    generate_rsa_cert(cn, nb, nb + Duration::from_secs(90 * 86400)).unwrap()
}

async fn create_mi(entra: &Entra, request_id: &str, resource_id: &str) -> Identity {
    let sp = entra
        .create_service_principal(tonic::Request::new(pb::CreateServicePrincipalRequest {
            request_id: request_id.into(),
            display_name: "vm1".into(),
            r#type: pb::ServicePrincipalType::ManagedIdentity as i32,
            managed_identity_resource_id: resource_id.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let cert = new_cert(&sp.app_id);
    entra
        .add_key_credential(tonic::Request::new(pb::AddKeyCredentialRequest {
            object_id: sp.object_id.clone(),
            certificate_der: cert.certificate_der.clone(),
        }))
        .await
        .unwrap();
    let signer = RsaSigner::new(&cert.private_key_der, &cert.certificate_der).unwrap();
    Identity { sp, cert, signer }
}

fn assertion(signer: &RsaSigner, client_id: &str, aud: &str, now: u64) -> String {
    signer
        .sign(
            &json!({"aud": aud, "iss": client_id, "sub": client_id, "jti": "j-1",
            "nbf": now, "iat": now, "exp": now + 600}),
        )
        .unwrap()
}

fn v2_aud() -> String {
    format!("{PUBLIC}/{TID}/oauth2/v2.0/token")
}

async fn issue(
    entra: &Entra,
    client_id: &str,
    assertion: String,
    resource: &str,
) -> Result<pb::IssuedToken, tonic::Status> {
    entra
        .issue_token(tonic::Request::new(pb::IssueTokenRequest {
            client_id: client_id.into(),
            client_assertion: assertion,
            resource: resource.into(),
        }))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn secret_flow_v1_answers_numbers_as_strings() {
    let env = env().await;
    let form = secret_form(ADMIN_APP, ADMIN_SECRET, ("resource", audiences::ARM));
    let (s, body) = post_form(&env.entra, &format!("/{TID}/oauth2/token"), &form).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    for f in ["expires_in", "ext_expires_in", "expires_on", "not_before"] {
        assert!(body[f].is_string(), "{f} must be a string: {body}");
    }
    assert_eq!(body["expires_in"], "3600");
    assert_eq!(body["expires_on"], (NOW + 3600).to_string());
    assert_eq!(body["not_before"], NOW.to_string());
    assert_eq!(body["resource"], audiences::ARM);
    let c = verify(&env, body["access_token"].as_str().unwrap()).await;
    assert_eq!(c.aud, audiences::ARM);
}

#[tokio::test]
async fn secret_flow_v2_answers_integers_and_claims_verify_against_jwks() {
    let env = env().await;
    let mut form = secret_form(
        ADMIN_APP,
        ADMIN_SECRET,
        ("scope", "https://vault.azure.net/.default"),
    );
    form.push(("client_info", "1"));
    // The tenant segment is case-insensitive.
    let (s, body) = post_form(
        &env.entra,
        &format!("/{}/oauth2/v2.0/token", TID.to_uppercase()),
        &form,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], json!(3600));
    assert_eq!(body["ext_expires_in"], json!(3600));
    assert!(body.get("resource").is_none());
    let token = body["access_token"].as_str().unwrap();
    let c = verify(&env, token).await;
    assert_eq!(c.aud, "https://vault.azure.net");
    assert_eq!(c.iss, format!("https://sts.windows.net/{TID}/"));
    assert_eq!(c.appid.as_deref(), Some(ADMIN_APP));
    assert_eq!(
        (c.oid.as_str(), c.sub.as_str(), c.tid.as_str()),
        (ADMIN_OID, ADMIN_OID, TID)
    );
    assert_eq!(c.exp - c.iat, 3600);
    assert_eq!(c.ver.as_deref(), Some("1.0"));
    let raw = raw_claims(token);
    assert_eq!(raw["appidacr"], "1");
    assert_eq!(raw["idtyp"], "app");
    assert_eq!(raw["idp"], raw["iss"]);
    for f in ["aio", "uti", "rh"] {
        assert!(raw[f].is_string(), "{f}");
    }
    assert!(raw.get("xms_mirid").is_none());
    let header: Value = serde_json::from_slice(
        &misim_token::b64_lenient(token.split('.').next().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], env.entra.signing_kid());
    assert_eq!(header["x5t"], env.entra.signing_kid());

    // Extra resources are accepted too.
    let form = secret_form(
        ADMIN_APP,
        ADMIN_SECRET,
        ("scope", "https://vault.localhost:40003/.default"),
    );
    let (s, _) = post_form(&env.entra, &format!("/{TID}/oauth2/v2.0/token"), &form).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn bad_secret_unknown_client_and_bad_requests() {
    let env = env().await;
    let v2 = format!("/{TID}/oauth2/v2.0/token");
    let scope = ("scope", "https://management.azure.com//.default");
    let (s, b) = post_form(&env.entra, &v2, &secret_form(ADMIN_APP, "wrong", scope)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_aadsts(&b, "invalid_client", 7000215);
    assert_eq!(b["correlation_id"], "corr-1");
    assert!(
        !b.to_string().contains("wrong\""),
        "secrets never echo: {b}"
    );

    let unknown = "bbbbbbbb-0000-4000-8000-000000000001";
    let (s, b) = post_form(&env.entra, &v2, &secret_form(unknown, "x", scope)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_aadsts(&b, "unauthorized_client", 700016);

    let (s, b) = post_form(
        &env.entra,
        &v2,
        &[("grant_type", "password"), ("client_id", ADMIN_APP)],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_aadsts(&b, "unsupported_grant_type", 70003);

    let (s, b) = post_form(
        &env.entra,
        &v2,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", ADMIN_APP),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_aadsts(&b, "invalid_request", 900144);

    let (s, b) = post_form(
        &env.entra,
        &v2,
        &secret_form(
            ADMIN_APP,
            ADMIN_SECRET,
            ("scope", "https://vault.azure.net"),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_aadsts(&b, "invalid_scope", 70011);
}

#[tokio::test]
async fn unknown_resource_is_invalid_resource() {
    let env = env().await;
    let form = secret_form(
        ADMIN_APP,
        ADMIN_SECRET,
        ("resource", "https://storage.azure.com/"),
    );
    let (s, b) = post_form(&env.entra, &format!("/{TID}/oauth2/token"), &form).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_aadsts(&b, "invalid_resource", 500011);

    let mi = create_mi(&env.entra, "op-1", VM_ID).await;
    let a = assertion(&mi.signer, &mi.sp.app_id, &v2_aud(), NOW);
    let err = issue(&env.entra, &mi.sp.app_id, a, "https://storage.azure.com/")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn unknown_tenant_is_rejected_everywhere() {
    let env = env().await;
    let form = secret_form(ADMIN_APP, ADMIN_SECRET, ("resource", audiences::ARM));
    for path in [
        "/contoso.onmicrosoft.com/oauth2/token",
        "/common/oauth2/v2.0/token",
    ] {
        let (s, b) = post_form(&env.entra, path, &form).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}");
        assert_aadsts(&b, "invalid_request", 90002);
    }
    let (s, _, b) = get(&env.entra, "/other/v2.0/.well-known/openid-configuration").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_aadsts(&b, "invalid_request", 90002);
}

#[tokio::test]
async fn managed_identity_token_via_grpc_certificate_assertion() {
    let env = env().await;
    let mi = create_mi(&env.entra, "op-1", VM_ID).await;
    assert_eq!(
        mi.sp.alternative_names,
        vec!["isExplicit=False".to_string(), VM_ID.to_string()]
    );
    assert_eq!(mi.sp.managed_identity_resource_id, VM_ID);
    let a = assertion(&mi.signer, &mi.sp.app_id, &v2_aud(), NOW);
    let t = issue(&env.entra, &mi.sp.app_id, a, audiences::ARM)
        .await
        .unwrap();
    assert_eq!(t.resource, audiences::ARM);
    assert_eq!(
        (t.issued_at_unix, t.not_before_unix),
        (NOW as i64, NOW as i64)
    );
    assert_eq!(t.expires_on_unix - t.issued_at_unix, 86400);

    // Verify against the gRPC key set as ARM would.
    let keys = env
        .entra
        .get_signing_keys(tonic::Request::new(pb::GetSigningKeysRequest {}))
        .await
        .unwrap()
        .into_inner();
    let mut set = KeySet::new(keys.tenant_id.clone());
    for k in &keys.keys {
        set.add_rsa(&k.kid, &k.modulus, &k.exponent);
    }
    let tenant = env
        .entra
        .get_tenant(tonic::Request::new(pb::GetTenantRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tenant.issuer_v1, format!("https://sts.windows.net/{TID}/"));
    assert_eq!(tenant.issuer_v2, format!("{PUBLIC}/{TID}/v2.0"));
    let c = verify_access_token(
        &t.access_token,
        &set,
        &[tenant.issuer_v1.as_str()],
        env.clock.as_ref(),
        audiences::is_arm,
    )
    .unwrap();
    assert_eq!(c.oid, mi.sp.object_id);
    assert_eq!(c.client_id(), mi.sp.app_id);
    assert_eq!(
        c.xms_mirid.as_deref(),
        Some(
            "/subscriptions/s1/resourcegroups/RG1/providers/Microsoft.Compute/virtualMachines/vm1"
        )
    );
    assert_eq!(raw_claims(&t.access_token)["appidacr"], "2");

    // The v1 token URL is an accepted audience too.
    let a = assertion(
        &mi.signer,
        &mi.sp.app_id,
        &format!("https://localhost:40001/{TID}/oauth2/token"),
        NOW,
    );
    assert!(
        issue(&env.entra, &mi.sp.app_id, a, audiences::KEY_VAULT)
            .await
            .is_ok()
    );
}

/// A managed identity with a registered P-256 certificate (as ARM makes them), valid from a
/// minute before `NOW` for a day, and a signer for its assertions.
async fn p256_mi(env: &Env, request_id: &str) -> (pb::ServicePrincipal, misim_token::CertSigner) {
    let sp = create_mi(&env.entra, request_id, VM_ID).await.sp;
    let nb = UNIX_EPOCH + Duration::from_secs(NOW - 60);
    let cert = misim_token::cert::generate_ec_cert(&sp.app_id, nb, nb + Duration::from_secs(86400))
        .unwrap();
    env.entra
        .add_key_credential(tonic::Request::new(pb::AddKeyCredentialRequest {
            object_id: sp.object_id.clone(),
            certificate_der: cert.certificate_der.clone(),
        }))
        .await
        .unwrap();
    let signer =
        misim_token::CertSigner::new(&cert.private_key_der, &cert.certificate_der).unwrap();
    (sp, signer)
}

/// Managed identities' certificates are P-256 (ARM makes them): Entra takes
/// their ES256 assertions, and only with the registered key.
#[tokio::test]
async fn managed_identity_with_p256_certificate_gets_tokens_by_es256_assertion() {
    let env = env().await;
    let (sp, signer) = p256_mi(&env, "op-ec").await;
    let nb = UNIX_EPOCH + Duration::from_secs(NOW - 60);
    let claims = json!({"aud": v2_aud(), "iss": sp.app_id, "sub": sp.app_id, "jti": "j-1",
        "nbf": NOW, "iat": NOW, "exp": NOW + 600});
    let a = signer.sign(&claims).unwrap();
    assert_eq!(raw_header(&a)["alg"], "ES256");
    let t = issue(&env.entra, &sp.app_id, a.clone(), audiences::ARM)
        .await
        .unwrap();
    assert_eq!(raw_claims(&t.access_token)["oid"], sp.object_id.as_str());
    // Another P-256 key signing as this certificate is refused.
    let other =
        misim_token::cert::generate_ec_cert(&sp.app_id, nb, nb + Duration::from_secs(86400))
            .unwrap();
    let mut parts: Vec<String> = a.split('.').map(str::to_owned).collect();
    let other_signer =
        misim_token::EcSigner::new(&other.private_key_der, &other.certificate_der).unwrap();
    let resigned = other_signer.sign(&claims).unwrap();
    parts[2] = resigned.rsplit('.').next().unwrap().to_owned();
    assert!(
        issue(&env.entra, &sp.app_id, parts.join("."), audiences::ARM)
            .await
            .is_err()
    );
}

/// A client may send one assertion more than once (MSAL reuses one for minutes): Entra
/// accepts it again, checks its claims each time (lifetime at the current time), and a
/// verified signature does not carry over to other bytes or another certificate.
#[tokio::test]
async fn a_reused_assertion_is_accepted_again_until_it_expires() {
    let env = env().await;
    let (sp, signer) = p256_mi(&env, "op-reuse").await;
    let nb = UNIX_EPOCH + Duration::from_secs(NOW - 60);
    let claims = json!({"aud": v2_aud(), "iss": sp.app_id, "sub": sp.app_id, "jti": "j-reuse",
        "nbf": NOW, "iat": NOW, "exp": NOW + 600});
    let a = signer.sign(&claims).unwrap();
    for _ in 0..3 {
        let t = issue(&env.entra, &sp.app_id, a.clone(), audiences::ARM).await;
        assert!(t.is_ok(), "{t:?}");
    }
    // After a verified use, the same header and claims with another signature are refused.
    let mut parts: Vec<String> = a.split('.').map(str::to_owned).collect();
    let other =
        misim_token::cert::generate_ec_cert(&sp.app_id, nb, nb + Duration::from_secs(86400))
            .unwrap();
    let other_signer =
        misim_token::EcSigner::new(&other.private_key_der, &other.certificate_der).unwrap();
    parts[2] = other_signer
        .sign(&claims)
        .unwrap()
        .rsplit('.')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        issue(&env.entra, &sp.app_id, parts.join("."), audiences::ARM)
            .await
            .is_err()
    );
    // Its lifetime is checked at every use.
    env.clock.advance(Duration::from_secs(3600));
    let late = issue(&env.entra, &sp.app_id, a, audiences::ARM).await;
    assert!(late.is_err(), "an expired assertion was accepted again");
}

fn raw_header(token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&misim_token::b64_lenient(header).unwrap()).unwrap()
}

#[tokio::test]
async fn managed_identity_token_via_http_assertion_and_never_by_secret() {
    let env = env().await;
    let mi = create_mi(&env.entra, "op-1", UAMI_ID).await;
    assert_eq!(mi.sp.alternative_names[0], "isExplicit=True");
    let a = assertion(
        &mi.signer,
        &mi.sp.app_id,
        &format!("{PUBLIC}/{TID}/oauth2/v2.0/token"),
        NOW,
    );
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", mi.sp.app_id.as_str()),
        ("scope", "https://vault.azure.net/.default"),
        ("client_assertion_type", FORM_ASSERTION_TYPE),
        ("client_assertion", a.as_str()),
    ];
    let (s, b) = post_form(&env.entra, &format!("/{TID}/oauth2/v2.0/token"), &form).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["expires_in"], json!(86400));

    let form = secret_form(&mi.sp.app_id, "anything", ("resource", audiences::ARM));
    let (s, b) = post_form(&env.entra, &format!("/{TID}/oauth2/token"), &form).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_aadsts(&b, "invalid_client", 7000215);
}

#[tokio::test]
async fn bad_assertions_are_refused() {
    let env = env().await;
    let mi = create_mi(&env.entra, "op-1", VM_ID).await;
    let id = mi.sp.app_id.as_str();

    // Signed with a key whose certificate is not registered.
    let other = new_cert("other");
    let other_signer = RsaSigner::new(&other.private_key_der, &other.certificate_der).unwrap();
    let err = issue(
        &env.entra,
        id,
        assertion(&other_signer, id, &v2_aud(), NOW),
        audiences::ARM,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // Registered thumbprint, wrong key: header names our cert, signature by another key.
    let forged = {
        let mut parts: Vec<String> = assertion(&mi.signer, id, &v2_aud(), NOW)
            .split('.')
            .map(str::to_owned)
            .collect();
        let other_sig = assertion(&other_signer, id, &v2_aud(), NOW);
        parts[2] = other_sig.rsplit('.').next().unwrap().to_owned();
        parts.join(".")
    };
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", id),
        ("scope", "https://vault.azure.net/.default"),
        ("client_assertion_type", FORM_ASSERTION_TYPE),
        ("client_assertion", forged.as_str()),
    ];
    let (s, b) = post_form(&env.entra, &format!("/{TID}/oauth2/v2.0/token"), &form).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_aadsts(&b, "invalid_client", 700027);

    // Wrong audience: another tenant's token endpoint, and a non-token path.
    for aud in [
        "https://localhost:40001/00000000-0000-0000-0000-000000000000/oauth2/v2.0/token"
            .to_string(),
        format!("https://localhost:40001/{TID}/oauth2/v2.0/authorize"),
    ] {
        let err = issue(
            &env.entra,
            id,
            assertion(&mi.signer, id, &aud, NOW),
            audiences::ARM,
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{aud}");
    }

    // iss/sub of another client.
    let err = issue(
        &env.entra,
        id,
        assertion(&mi.signer, "someone-else", &v2_aud(), NOW),
        audiences::ARM,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // Expired: the assertion was made long ago.
    let a = assertion(&mi.signer, id, &v2_aud(), NOW);
    env.clock.advance(Duration::from_secs(3600));
    let err = issue(&env.entra, id, a, audiences::ARM).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(
        err.message().contains("valid time range"),
        "{}",
        err.message()
    );

    // Expired certificate, even with a fresh assertion.
    env.clock.advance(Duration::from_secs(91 * 86400));
    let now = NOW + 3600 + 91 * 86400;
    let err = issue(
        &env.entra,
        id,
        assertion(&mi.signer, id, &v2_aud(), now),
        audiences::ARM,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let _ = &mi.cert;
}

/// An assertion with exactly `claims`, signed by `signer`.
fn assertion_with(signer: &RsaSigner, claims: Value) -> String {
    signer.sign(&claims).unwrap()
}

/// `POST /{tid}/oauth2/v2.0/token` with a client assertion.
async fn post_assertion(entra: &Entra, client_id: &str, assertion: &str) -> (StatusCode, Value) {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", "https://vault.azure.net/.default"),
        ("client_assertion_type", FORM_ASSERTION_TYPE),
        ("client_assertion", assertion),
    ];
    post_form(entra, &format!("/{TID}/oauth2/v2.0/token"), &form).await
}

#[tokio::test]
async fn assertion_claims_get_entras_codes() {
    let env = env().await;
    let mi = create_mi(&env.entra, "op-1", VM_ID).await;
    let id = mi.sp.app_id.as_str();
    let claims = |aud: &str, iss: &str, nbf: u64, exp: u64| json!({"aud": aud, "iss": iss, "sub": iss, "jti": "j-1", "nbf": nbf, "iat": nbf, "exp": exp});
    let refused = async |a: String, error: &str, code: u64| {
        let (s, b) = post_assertion(&env.entra, id, &a).await;
        let want = if error == "invalid_client" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(s, want, "{b}");
        assert_aadsts(&b, error, code);
    };

    // `aud` must be this tenant's token endpoint at misim's public URL: another
    // host, another tenant and another path are refused (AADSTS700023).
    for aud in [
        format!("https://entra.internal:8443/{TID}/oauth2/v2.0/token"),
        format!("https://login.microsoftonline.com/{TID}/oauth2/v2.0/token"),
        format!("{PUBLIC}/00000000-0000-0000-0000-000000000000/oauth2/v2.0/token"),
        format!("{PUBLIC}/{TID}/oauth2/v2.0/authorize"),
        format!("{PUBLIC}/{TID}/oauth2/v2.0/token/extra"),
        format!("http://localhost:40001/{TID}/oauth2/v2.0/token"),
        format!("https://localhost.example.com/{TID}/oauth2/v2.0/token"),
        format!("https://127.0.0.1:8444/{TID}/oauth2/v2.0/authorize"),
        String::new(),
    ] {
        let a = assertion_with(&mi.signer, claims(&aud, id, NOW, NOW + 600));
        refused(a, "invalid_client", 700023).await;
    }
    // The v1 endpoint, a case-changed URL and a trailing slash are the same
    // audience; so is the endpoint under another loopback name (compose's host
    // side reaches the Entra whose public URL is `https://entra:8444` as
    // `https://localhost:{port}`).
    for aud in [
        format!("{PUBLIC}/{TID}/oauth2/token"),
        format!("https://localhost:8444/{TID}/oauth2/v2.0/token"),
        format!("https://127.0.0.1/{TID}/oauth2/token"),
        format!(
            "{}/{}/OAuth2/v2.0/token/",
            PUBLIC.to_uppercase(),
            TID.to_uppercase()
        ),
    ] {
        let a = assertion_with(&mi.signer, claims(&aud, id, NOW, NOW + 600));
        let (s, b) = post_assertion(&env.entra, id, &a).await;
        assert_eq!(s, StatusCode::OK, "{aud}: {b}");
    }

    // iss/sub of another client: AADSTS700021.
    let a = assertion_with(
        &mi.signer,
        claims(&v2_aud(), "someone-else", NOW, NOW + 600),
    );
    refused(a, "invalid_client", 700021).await;

    // Lifetime: at most an hour from the earliest of nbf, iat and now (AADSTS700024).
    let a = assertion_with(&mi.signer, claims(&v2_aud(), id, NOW, NOW + 3601));
    refused(a, "invalid_client", 700024).await;
    let a = assertion_with(&mi.signer, claims(&v2_aud(), id, NOW - 3000, NOW + 601));
    refused(a, "invalid_client", 700024).await;
    let a = assertion_with(
        &mi.signer,
        json!({"aud": v2_aud(), "iss": id, "sub": id, "jti": "j", "exp": NOW as i64 + 86_400 * 365}),
    );
    refused(a, "invalid_client", 700024).await;
    let a = assertion_with(&mi.signer, claims(&v2_aud(), id, NOW, NOW + 3600));
    assert_eq!(post_assertion(&env.entra, id, &a).await.0, StatusCode::OK);

    // No exp, or not a JWT at all: AADSTS50027.
    let a = assertion_with(
        &mi.signer,
        json!({"aud": v2_aud(), "iss": id, "sub": id, "jti": "j"}),
    );
    refused(a, "invalid_request", 50027).await;
    refused("not-a-jwt".into(), "invalid_request", 50027).await;

    // Entra does not refuse a reused jti (MSAL.NET reused assertions for 5
    // minutes), so neither does misim: the same assertion works twice.
    let a = assertion(&mi.signer, id, &v2_aud(), NOW);
    for _ in 0..2 {
        let (s, b) = post_assertion(&env.entra, id, &a).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
}

#[tokio::test]
async fn create_is_idempotent_on_request_id_and_delete_revokes() {
    let env = env().await;
    let a = create_mi(&env.entra, "op-1", VM_ID).await;
    let again = env
        .entra
        .create_service_principal(tonic::Request::new(pb::CreateServicePrincipalRequest {
            request_id: "op-1".into(),
            display_name: "ignored".into(),
            r#type: pb::ServicePrincipalType::ManagedIdentity as i32,
            managed_identity_resource_id: VM_ID.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.object_id, a.sp.object_id);
    assert_eq!(again.app_id, a.sp.app_id);
    assert_eq!(
        again.key_credentials.len(),
        1,
        "the credential added since is visible"
    );

    // AddKeyCredential is idempotent on the thumbprint.
    let k1 = env
        .entra
        .add_key_credential(tonic::Request::new(pb::AddKeyCredentialRequest {
            object_id: a.sp.object_id.clone(),
            certificate_der: a.cert.certificate_der.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(k1.key_id, again.key_credentials[0].key_id);
    assert_eq!(
        k1.thumbprint_sha1,
        misim_token::hex_upper(&misim_token::sha1(&a.cert.certificate_der))
    );

    let list = env
        .entra
        .list_service_principals(tonic::Request::new(
            pb::ListServicePrincipalsRequest::default(),
        ))
        .await
        .unwrap();
    assert_eq!(
        list.into_inner().service_principals.len(),
        2,
        "admin + identity"
    );
    // The same two, a page of one at a time, in object-id order.
    let page = |page_size: i32, page_token: String| {
        let entra = env.entra.clone();
        async move {
            entra
                .list_service_principals(tonic::Request::new(pb::ListServicePrincipalsRequest {
                    page_size,
                    page_token,
                }))
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let first = page(1, String::new()).await.unwrap();
    assert_eq!(first.service_principals.len(), 1);
    assert!(!first.next_page_token.is_empty(), "one more follows");
    let second = page(1, first.next_page_token).await.unwrap();
    assert_eq!(second.service_principals.len(), 1);
    assert!(second.next_page_token.is_empty(), "the last page says so");
    assert!(first.service_principals[0].object_id < second.service_principals[0].object_id);
    let negative = page(-1, String::new()).await.unwrap_err();
    assert_eq!(negative.code(), tonic::Code::InvalidArgument);
    let by_app = env
        .entra
        .get_service_principal(tonic::Request::new(pb::GetServicePrincipalRequest {
            object_id: String::new(),
            app_id: a.sp.app_id.to_uppercase(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_app.object_id, a.sp.object_id);

    let del = |oid: String| {
        let entra = env.entra.clone();
        async move {
            entra
                .delete_service_principal(tonic::Request::new(pb::DeleteServicePrincipalRequest {
                    object_id: oid,
                }))
                .await
                .unwrap()
                .into_inner()
                .existed
        }
    };
    assert!(del(a.sp.object_id.clone()).await);
    assert!(
        !del(a.sp.object_id.clone()).await,
        "deleting again succeeds with existed=false"
    );

    let err = issue(
        &env.entra,
        &a.sp.app_id,
        assertion(&a.signer, &a.sp.app_id, &v2_aud(), NOW),
        audiences::ARM,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = env
        .entra
        .get_service_principal(tonic::Request::new(pb::GetServicePrincipalRequest {
            object_id: a.sp.object_id.clone(),
            app_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // The same request id after deletion makes a new principal.
    let b = create_mi(&env.entra, "op-1", VM_ID).await;
    assert_ne!(b.sp.object_id, a.sp.object_id);
}

#[tokio::test]
async fn grpc_validates_requests() {
    let env = env().await;
    let err = env
        .entra
        .create_service_principal(tonic::Request::new(pb::CreateServicePrincipalRequest {
            request_id: "op".into(),
            display_name: "x".into(),
            r#type: pb::ServicePrincipalType::ManagedIdentity as i32,
            managed_identity_resource_id: String::new(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = env
        .entra
        .add_key_credential(tonic::Request::new(pb::AddKeyCredentialRequest {
            object_id: ADMIN_OID.into(),
            certificate_der: b"not a cert".to_vec(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = env
        .entra
        .add_key_credential(tonic::Request::new(pb::AddKeyCredentialRequest {
            object_id: "missing".into(),
            certificate_der: new_cert("x").certificate_der,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // EnsureApplication never replaces an existing principal's secret over
    // the network (that would hand the bootstrap administrator to any caller).
    let err = env
        .entra
        .ensure_application(tonic::Request::new(pb::EnsureApplicationRequest {
            app_id: ADMIN_APP.into(),
            object_id: ADMIN_OID.into(),
            display_name: "admin".into(),
            client_secret: "rotated".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let v1 = format!("/{TID}/oauth2/token");
    let (s, _) = post_form(
        &env.entra,
        &v1,
        &secret_form(ADMIN_APP, "rotated", ("resource", audiences::ARM)),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = post_form(
        &env.entra,
        &v1,
        &secret_form(ADMIN_APP, ADMIN_SECRET, ("resource", audiences::ARM)),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // Repeating it with the same secret is fine (idempotent bootstrap).
    env.entra
        .ensure_application(tonic::Request::new(pb::EnsureApplicationRequest {
            app_id: ADMIN_APP.into(),
            object_id: ADMIN_OID.into(),
            display_name: "admin".into(),
            client_secret: ADMIN_SECRET.into(),
        }))
        .await
        .unwrap();

    // The gRPC router (health + reflection) builds.
    let _router = env
        .entra
        .grpc_router(&misim_proto::auth::ControlKey::from_bytes([1; 32]));
}

#[tokio::test]
async fn signing_key_and_principals_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let (kid, oid) = {
        let entra = open_with(Store::open(dir.path()).unwrap(), clock.clone()).await;
        let mi = create_mi(&entra, "op-1", VM_ID).await;
        (entra.signing_kid().to_owned(), mi.sp.object_id)
    };
    let entra = open_with(Store::open(dir.path()).unwrap(), clock.clone()).await;
    assert_eq!(entra.signing_kid(), kid);
    let sp = entra
        .get_service_principal(tonic::Request::new(pb::GetServicePrincipalRequest {
            object_id: oid,
            app_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sp.key_credentials.len(), 1);
}

#[tokio::test]
async fn discovery_documents_and_jwks() {
    let env = env().await;
    let (s, h, v2) = get(
        &env.entra,
        &format!("/{TID}/v2.0/.well-known/openid-configuration"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["cache-control"], "max-age=86400, private");
    assert_eq!(v2["issuer"], format!("{PUBLIC}/{TID}/v2.0"));
    assert_eq!(
        v2["token_endpoint"],
        format!("{PUBLIC}/{TID}/oauth2/v2.0/token")
    );
    assert_eq!(
        v2["authorization_endpoint"],
        format!("{PUBLIC}/{TID}/oauth2/v2.0/authorize")
    );
    assert_eq!(
        v2["jwks_uri"],
        format!("{PUBLIC}/{TID}/discovery/v2.0/keys")
    );
    assert_eq!(
        v2["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    assert_eq!(v2["cloud_instance_name"], "microsoftonline.com");
    for f in [
        "device_authorization_endpoint",
        "end_session_endpoint",
        "tenant_region_scope",
    ] {
        assert!(v2[f].is_string(), "{f}");
    }

    let (s, _, v1) = get(
        &env.entra,
        &format!("/{TID}/.well-known/openid-configuration"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v1["issuer"], format!("https://sts.windows.net/{TID}/"));
    assert_eq!(v1["jwks_uri"], format!("{PUBLIC}/{TID}/discovery/keys"));
    assert_eq!(v1["token_endpoint"], format!("{PUBLIC}/{TID}/oauth2/token"));

    let kid = env.entra.signing_kid().to_owned();
    for path in [
        format!("/{TID}/discovery/v2.0/keys"),
        format!("/{TID}/discovery/keys"),
        "/common/discovery/keys".into(),
        "/common/discovery/v2.0/keys".into(),
    ] {
        let (s, h, k) = get(&env.entra, &path).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert_eq!(h["cache-control"], "max-age=86400, private");
        assert_eq!(k["keys"][0]["kid"], kid, "{path}");
        assert_eq!(k["keys"][0]["kty"], "RSA");
        assert_eq!(k["keys"][0]["e"], "AQAB");
    }
    let (_, _, k) = get(&env.entra, &format!("/{TID}/discovery/v2.0/keys")).await;
    assert_eq!(k["keys"][0]["issuer"], v2["issuer"]);
    let (_, _, k) = get(&env.entra, &format!("/{TID}/discovery/keys")).await;
    assert!(k["keys"][0].get("issuer").is_none());

    let q = format!(
        "/common/discovery/instance?authorization_endpoint={PUBLIC}/{TID}/oauth2/v2.0/authorize&api-version=1.1"
    );
    let (s, _, inst) = get(&env.entra, &q).await;
    assert_eq!(s, StatusCode::OK, "{inst}");
    assert_eq!(
        inst["tenant_discovery_endpoint"],
        format!("{PUBLIC}/{TID}/v2.0/.well-known/openid-configuration")
    );
    assert_eq!(inst["metadata"][0]["aliases"], json!(["localhost:40001"]));
    let (s, _, inst) =
        get(&env.entra, "/common/discovery/instance?authorization_endpoint=https://evil.example/t/oauth2/v2.0/authorize").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(inst["error"], "invalid_instance");
}

#[tokio::test]
async fn open_rejects_bad_config() {
    let mut c = config();
    c.tenant_id = "not-a-guid".into();
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let err = open_config(c, Store::memory().unwrap(), clock)
        .await
        .unwrap_err();
    assert_eq!(err.code(), misim_types::ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn serve_answers_grpc_with_health() {
    use misim_proto::entra::v1::directory_client::DirectoryClient;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let env = env().await;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", grpc.local_addr().unwrap());
    let shutdown = misim_runtime::Shutdown::new();
    let key = misim_proto::auth::ControlKey::from_bytes([1; 32]);
    let server = tokio::spawn(misim_entra::serve(
        env.entra.clone(),
        http,
        grpc,
        None,
        key.clone(),
        shutdown.clone(),
    ));
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    // Without a credential: refused; as Key Vault: the tenant.
    let refused = DirectoryClient::new(channel.clone())
        .get_tenant(pb::GetTenantRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let tenant = DirectoryClient::new(
        key.credential(misim_proto::auth::Caller::KeyVault)
            .wrap(channel.clone()),
    )
    .get_tenant(pb::GetTenantRequest {})
    .await
    .unwrap()
    .into_inner();
    assert_eq!(tenant.tenant_id, TID);
    // Health stays open: container probes have no key.
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// MSAL loads `{authority}/organizations/...` (az logout does): the
/// multi-tenant aliases get discovery documents with the `{tenantid}` issuer
/// placeholder, and unknown tenants still get AADSTS90002.
#[tokio::test]
async fn multi_tenant_alias_discovery() {
    let env = env().await;
    for alias in ["organizations", "common", "Consumers"] {
        let (s, _, doc) = get(
            &env.entra,
            &format!("/{alias}/v2.0/.well-known/openid-configuration"),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{alias}");
        assert_eq!(doc["issuer"], format!("{PUBLIC}/{{tenantid}}/v2.0"));
        assert_eq!(
            doc["token_endpoint"],
            format!("{PUBLIC}/{}/oauth2/v2.0/token", alias.to_ascii_lowercase())
        );
        let (s, _, doc) = get(
            &env.entra,
            &format!("/{alias}/.well-known/openid-configuration"),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{alias} v1");
        assert_eq!(doc["issuer"], "https://sts.windows.net/{tenantid}/");
    }
    let (s, _, _) = get(&env.entra, "/contoso/v2.0/.well-known/openid-configuration").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// `client_secret_basic`, which the discovery document advertises: the
/// credentials in an `Authorization: Basic` header instead of the form.
#[tokio::test]
async fn client_secret_basic_is_accepted() {
    use base64::Engine;
    let env = env().await;
    let basic = |id: &str, secret: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    };
    let send_basic = |auth: String, form: Vec<(&'static str, String)>| {
        let entra = env.entra.clone();
        async move {
            let body = serde_urlencoded::to_string(&form).unwrap();
            let req = Request::post(format!("/{TID}/oauth2/v2.0/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", auth)
                .body(Body::from(body))
                .unwrap();
            let (s, _, v) = send(&entra, req).await;
            (s, v)
        }
    };
    let scope = ("scope", format!("{}.default", audiences::ARM));
    let grant = ("grant_type", "client_credentials".to_owned());
    let (s, v) = send_basic(
        basic(ADMIN_APP, ADMIN_SECRET),
        vec![grant.clone(), scope.clone()],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["access_token"].is_string());
    let (s, v) = send_basic(
        basic(ADMIN_APP, "wrong"),
        vec![grant.clone(), scope.clone()],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"], "invalid_client");
    let (s, v) = send_basic("Basic %%%".into(), vec![grant, scope]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "invalid_request");
}

/// `ReserveManagedIdentityIds` (the owner's pinned ids, docs/scenarios.md): the identity's
/// principal is created with them (the ARM resource id matched case-insensitively); reserving them again says
/// `existing`; malformed ids and ids another principal holds are refused, reserving nothing.
#[tokio::test]
async fn reserved_ids_become_the_managed_identitys_ids() {
    const APP: &str = "6A1F3C2E-0B7D-4C55-9E2A-1D3F5B7C9E01";
    const OBJ: &str = "0f9e8d7c-6b5a-4938-8271-605f4e3d2c1b";
    let env = env().await;
    let reserve = |rid: &str, app: &str, obj: &str| pb::ReserveManagedIdentityIdsRequest {
        managed_identity_resource_id: rid.into(),
        app_id: app.into(),
        object_id: obj.into(),
    };
    let e = env
        .entra
        .reserve_managed_identity_ids(tonic::Request::new(reserve(UAMI_ID, "nope", OBJ)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("app_id \"nope\" is not a GUID"), "{e}");
    let e = env
        .entra
        .reserve_managed_identity_ids(tonic::Request::new(reserve(UAMI_ID, APP, ADMIN_OID)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");

    let r = env
        .entra
        .reserve_managed_identity_ids(tonic::Request::new(reserve(UAMI_ID, APP, OBJ)))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.existing);
    let sp = env
        .entra
        .create_service_principal(tonic::Request::new(pb::CreateServicePrincipalRequest {
            request_id: "op-pinned".into(),
            display_name: "id1".into(),
            r#type: pb::ServicePrincipalType::ManagedIdentity as i32,
            managed_identity_resource_id: UAMI_ID.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (sp.app_id.as_str(), sp.object_id.as_str()),
        (APP.to_ascii_lowercase().as_str(), OBJ)
    );
    let r = env
        .entra
        .reserve_managed_identity_ids(tonic::Request::new(reserve(
            &UAMI_ID.to_ascii_lowercase(),
            APP,
            OBJ,
        )))
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.existing,
        "ids of an identity that has them: nothing to reserve"
    );
}
