//! Workload identity federation: federated identity credentials through Graph
//! and gRPC, and the token exchange with external tokens from misim-oidc's
//! issuers served over HTTPS on a loopback port (discovery and JWKS fetched
//! for real), from registered issuer keys, and from Entra itself (a managed
//! identity's token as an application's credential). One test per rule.

use std::time::Duration;

use misim_entra::{FederationConfig, GraphPermission, TOKEN_EXCHANGE_AUDIENCE};
use misim_oidc::{IssuerRef, MintRequest, Oidc};
use misim_token::jwks::{Jwk, Jwks};
use tokio::net::TcpListener;

use super::graph::{
    add_password, admin_graph_token, assert_graph_error, create_app_and_sp, graph, token_for,
};
use super::*;

const GH: &str = "https://token.actions.githubusercontent.com/";
/// An issuer misim may never fetch from: an IP literal outside loopback is
/// refused before any connection.
const UNREACHABLE_ISSUER: &str = "https://10.255.255.1/issuer";

struct Fed {
    env: Env,
    oidc: Oidc,
    shutdown: misim_runtime::Shutdown,
    _dir: tempfile::TempDir,
}

/// Entra trusting a test CA, and misim-oidc's issuers served over HTTPS with
/// a certificate from that CA on a loopback port.
async fn fed() -> Fed {
    use misim_types::Clock;
    let dir = tempfile::tempdir().unwrap();
    let tls = misim_runtime::tls::load_or_create(dir.path(), &[], misim_types::SystemClock.now())
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let oidc = Oidc::open(
        misim_oidc::Config {
            public_base: base,
            clusters: vec!["aks-1".into()],
        },
        misim_oidc::Deps {
            store: Store::memory().unwrap(),
            clock: clock.clone(),
            ids: Arc::new(SeqIds::new(5000)),
        },
    )
    .await
    .unwrap();
    let shutdown = misim_runtime::Shutdown::new();
    tokio::spawn(misim_runtime::serve::serve_http(
        listener,
        oidc.http_router(),
        Some(tls.server_config.clone()),
        shutdown.clone(),
    ));
    let entra = Entra::open_with(
        config(),
        Deps {
            store: Store::memory().unwrap(),
            clock: clock.clone(),
            ids: Arc::new(SeqIds::new(1)),
        },
        FederationConfig {
            trusted_ca_pem: vec![tls.ca_pem.clone()],
            ..FederationConfig::default()
        },
    )
    .await
    .unwrap();
    Fed {
        env: Env { entra, clock },
        oidc,
        shutdown,
        _dir: dir,
    }
}

async fn k8s_token(f: &Fed, subject: &str) -> String {
    f.oidc
        .mint(MintRequest {
            issuer: IssuerRef::kubernetes("aks-1").unwrap(),
            subject: subject.into(),
            audience: None,
            lifetime: None,
        })
        .await
        .unwrap()
        .token
}

async fn github_token(f: &Fed, subject: &str) -> String {
    f.oidc
        .mint(MintRequest {
            issuer: IssuerRef::github(),
            subject: subject.into(),
            audience: None,
            lifetime: None,
        })
        .await
        .unwrap()
        .token
}

fn issuer_of(token: &str) -> String {
    raw_claims(token)["iss"].as_str().unwrap().to_owned()
}

async fn exchange(entra: &Entra, client_id: &str, assertion: &str) -> (StatusCode, Value) {
    post_form(
        entra,
        &format!("/{TID}/oauth2/v2.0/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_assertion_type", FORM_ASSERTION_TYPE),
            ("client_assertion", assertion),
            ("scope", "https://vault.azure.net/.default"),
        ],
    )
    .await
}

/// An application registration (with its principal) trusting `issuer`/`subject`.
async fn app_trusting(entra: &Entra, issuer: &str, subject: &str) -> (Value, Value) {
    let admin = admin_graph_token(entra).await;
    let (app, sp) = create_app_and_sp(entra, &admin, "federated-app").await;
    let (s, _, c) = graph(
        entra,
        Some(&admin),
        "POST",
        &format!(
            "/v1.0/applications/{}/federatedIdentityCredentials",
            app["id"].as_str().unwrap()
        ),
        Some(
            json!({"name": "trust", "issuer": issuer, "subject": subject,
            "audiences": [TOKEN_EXCHANGE_AUDIENCE]}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    (app, sp)
}

fn app_id(app: &Value) -> &str {
    app["appId"].as_str().unwrap()
}

#[tokio::test]
async fn graph_manages_federated_credentials_as_the_cli_sends_them() {
    let env = env().await;
    let admin = admin_graph_token(&env.entra).await;
    let (app, _) = create_app_and_sp(&env.entra, &admin, "cli-app").await;
    let oid = app["id"].as_str().unwrap();
    let coll = format!("/v1.0/applications/{oid}/federatedIdentityCredentials");
    // The body `az ad app federated-credential create --parameters` sends.
    let body = json!({"name": "Testing", "issuer": GH,
        "subject": "repo:octo-org/octo-repo:environment:Production", "description": "Testing",
        "audiences": ["api://AzureADTokenExchange"]});
    let (s, _, c) = graph(&env.entra, Some(&admin), "POST", &coll, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(
        c["@odata.context"],
        format!(
            "{PUBLIC}/v1.0/$metadata#applications('{oid}')/federatedIdentityCredentials/$entity"
        )
    );
    for (k, v) in [
        ("name", "Testing"),
        ("issuer", GH),
        ("description", "Testing"),
    ] {
        assert_eq!(c[k], v, "{c}");
    }
    assert_eq!(c["audiences"], json!(["api://AzureADTokenExchange"]));
    let id = c["id"].as_str().unwrap();

    // List under v1.0 and beta (older CLIs), get by id and by name.
    for list in [coll.clone(), coll.replace("/v1.0/", "/beta/")] {
        let (s, _, l) = graph(&env.entra, Some(&admin), "GET", &list, None).await;
        assert_eq!(s, StatusCode::OK, "{l}");
        assert_eq!(l["value"].as_array().unwrap().len(), 1);
        assert_eq!(l["value"][0]["id"], id);
    }
    for key in [id, "Testing"] {
        let (s, _, one) = graph(
            &env.entra,
            Some(&admin),
            "GET",
            &format!("{coll}/{key}"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{one}");
        assert_eq!(
            one["subject"],
            "repo:octo-org/octo-repo:environment:Production"
        );
    }

    // PATCH changes properties but never the name.
    let (s, _, _) = graph(
        &env.entra,
        Some(&admin),
        "PATCH",
        &format!("{coll}/{id}"),
        Some(json!({"subject": "repo:octo-org/octo-repo:ref:refs/heads/main"})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, _, one) = graph(
        &env.entra,
        Some(&admin),
        "GET",
        &format!("{coll}/{id}"),
        None,
    )
    .await;
    assert_eq!(
        one["subject"],
        "repo:octo-org/octo-repo:ref:refs/heads/main"
    );
    let (s, _, e) = graph(
        &env.entra,
        Some(&admin),
        "PATCH",
        &format!("{coll}/{id}"),
        Some(json!({"name": "renamed"})),
    )
    .await;
    assert_graph_error(s, &e, StatusCode::BAD_REQUEST, "Request_BadRequest");

    let (s, _, _) = graph(
        &env.entra,
        Some(&admin),
        "DELETE",
        &format!("{coll}/Testing"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, e) = graph(
        &env.entra,
        Some(&admin),
        "GET",
        &format!("{coll}/{id}"),
        None,
    )
    .await;
    assert_graph_error(s, &e, StatusCode::NOT_FOUND, "Request_ResourceNotFound");
    let (s, _, e) = graph(
        &env.entra,
        Some(&admin),
        "DELETE",
        &format!("{coll}/{id}"),
        None,
    )
    .await;
    assert_graph_error(s, &e, StatusCode::NOT_FOUND, "Request_ResourceNotFound");
    let missing =
        "/v1.0/applications/00000000-0000-4000-8000-00000000dead/federatedIdentityCredentials";
    let (s, _, e) = graph(&env.entra, Some(&admin), "GET", missing, None).await;
    assert_graph_error(s, &e, StatusCode::NOT_FOUND, "Request_ResourceNotFound");
}

#[tokio::test]
async fn graph_validates_federated_credentials_and_allows_twenty() {
    let env = env().await;
    let admin = admin_graph_token(&env.entra).await;
    let (app, _) = create_app_and_sp(&env.entra, &admin, "limits").await;
    let coll = format!(
        "/v1.0/applications/{}/federatedIdentityCredentials",
        app["id"].as_str().unwrap()
    );
    let post = |body: Value| {
        let (entra, admin, coll) = (env.entra.clone(), admin.clone(), coll.clone());
        async move { graph(&entra, Some(&admin), "POST", &coll, Some(body)).await }
    };
    let bad = [
        json!({"name": "plain-http", "issuer": "http://issuer.example", "subject": "s"}),
        json!({"name": "no-subject", "issuer": GH}),
        json!({"name": "x", "issuer": GH, "subject": "s"}),
        json!({"name": "two-audiences", "issuer": GH, "subject": "s", "audiences": ["a", "b"]}),
        json!({"name": "unknown-prop", "issuer": GH, "subject": "s", "claimsMatchingExpression": {}}),
    ];
    for body in bad {
        let (s, _, e) = post(body.clone()).await;
        assert_graph_error(s, &e, StatusCode::BAD_REQUEST, "Request_BadRequest");
    }
    // Audiences default to api://AzureADTokenExchange.
    let (s, _, c) = post(json!({"name": "cred-0", "issuer": GH, "subject": "s-0"})).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(c["audiences"], json!([TOKEN_EXCHANGE_AUDIENCE]));
    for dup in [
        json!({"name": "CRED-0", "issuer": GH, "subject": "other"}),
        json!({"name": "other", "issuer": GH, "subject": "s-0"}),
    ] {
        let (s, _, e) = post(dup).await;
        assert_graph_error(
            s,
            &e,
            StatusCode::CONFLICT,
            "Request_MultipleObjectsWithSameKeyValue",
        );
    }
    for i in 1..20 {
        let (s, _, c) =
            post(json!({"name": format!("cred-{i}"), "issuer": GH, "subject": format!("s-{i}")}))
                .await;
        assert_eq!(s, StatusCode::CREATED, "{c}");
    }
    let (s, _, e) = post(json!({"name": "cred-20", "issuer": GH, "subject": "s-20"})).await;
    assert_graph_error(s, &e, StatusCode::BAD_REQUEST, "Request_BadRequest");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("(20)"),
        "{e}"
    );
}

#[tokio::test]
async fn federated_credential_writes_need_application_readwrite() {
    let env = env().await;
    let admin = admin_graph_token(&env.entra).await;
    let (app, sp) = create_app_and_sp(&env.entra, &admin, "reader").await;
    let secret = add_password(&env.entra, &admin, app["id"].as_str().unwrap()).await;
    env.entra
        .set_graph_permission(
            sp["id"].as_str().unwrap(),
            Some(GraphPermission::ApplicationReadAll),
        )
        .await
        .unwrap();
    let (s, b) = token_for(
        &env.entra,
        app_id(&app),
        secret["secretText"].as_str().unwrap(),
        &format!("{PUBLIC}//.default"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let reader = b["access_token"].as_str().unwrap();
    let coll = format!(
        "/v1.0/applications/{}/federatedIdentityCredentials",
        app["id"].as_str().unwrap()
    );
    let (s, _, _) = graph(&env.entra, Some(reader), "GET", &coll, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, e) = graph(
        &env.entra,
        Some(reader),
        "POST",
        &coll,
        Some(json!({"name": "nope", "issuer": GH, "subject": "s"})),
    )
    .await;
    assert_graph_error(s, &e, StatusCode::FORBIDDEN, "Authorization_RequestDenied");
}

#[tokio::test]
async fn a_kubernetes_token_is_exchanged_after_fetching_discovery_and_jwks_over_https() {
    let f = fed().await;
    let sub = "system:serviceaccount:prod:api";
    let token = k8s_token(&f, sub).await;
    let (app, sp) = app_trusting(&f.env.entra, &issuer_of(&token), sub).await;
    let (s, b) = exchange(&f.env.entra, app_id(&app), &token).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let access = b["access_token"].as_str().unwrap();
    let c = verify(&f.env, access).await;
    assert_eq!(c.appid.as_deref(), Some(app_id(&app)));
    assert_eq!(c.oid, sp["id"].as_str().unwrap());
    assert_eq!(c.aud, "https://vault.azure.net");
    assert_eq!(raw_claims(access)["appidacr"], "2");

    // The keys are cached: with the issuer gone, a second token still verifies.
    let again = k8s_token(&f, sub).await;
    f.shutdown.cancel();
    let (s, b) = exchange(&f.env.entra, app_id(&app), &again).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn subjects_match_exactly_and_case_differences_are_named() {
    let f = fed().await;
    let token = github_token(&f, "repo:Octo-Org/App:ref:refs/heads/main").await;
    let (app, _) = app_trusting(
        &f.env.entra,
        &issuer_of(&token),
        "repo:octo-org/app:ref:refs/heads/main",
    )
    .await;
    let (s, b) = exchange(&f.env.entra, app_id(&app), &token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_aadsts(&b, "invalid_client", 7002138);
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains("case-insensitive comparison")
    );

    let other = github_token(&f, "repo:octo-org/app:pull_request").await;
    let (s, b) = exchange(&f.env.entra, app_id(&app), &other).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_aadsts(&b, "invalid_client", 700213);
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains("presented assertion subject 'repo:octo-org/app:pull_request'")
    );
}

#[tokio::test]
async fn issuer_and_audience_must_match_and_a_principal_needs_a_credential() {
    let f = fed().await;
    let sub = "system:serviceaccount:prod:api";
    let token = k8s_token(&f, sub).await;
    let iss = issuer_of(&token);
    // AKS issuers end with a slash; a credential without it does not match.
    let (app, _) = app_trusting(&f.env.entra, iss.trim_end_matches('/'), sub).await;
    let (s, b) = exchange(&f.env.entra, app_id(&app), &token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_aadsts(&b, "invalid_client", 700211);

    let (app, _) = app_trusting(&f.env.entra, &iss, sub).await;
    let wrong_aud = f
        .oidc
        .mint(MintRequest {
            issuer: IssuerRef::kubernetes("aks-1").unwrap(),
            subject: sub.into(),
            audience: Some("api://azureadtokenexchange".into()),
            lifetime: None,
        })
        .await
        .unwrap()
        .token;
    let (s, b) = exchange(&f.env.entra, app_id(&app), &wrong_aud).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_aadsts(&b, "invalid_client", 700212);

    // The admin application has no federated credential at all.
    let (s, b) = exchange(&f.env.entra, ADMIN_APP, &token).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_aadsts(&b, "invalid_request", 70021);
}

/// A signer and the JWKS document of its key, for registered issuers.
fn registered_signer(cn: &str) -> (RsaSigner, String) {
    let cert = new_cert(cn);
    let signer = RsaSigner::new(&cert.private_key_der, &cert.certificate_der).unwrap();
    let (n, e) = signer.public_components();
    let jwks = Jwks {
        keys: vec![Jwk::rsa(signer.kid(), &n, &e, &cert.certificate_der, None)],
    };
    (signer, serde_json::to_string(&jwks).unwrap())
}

fn external(signer: &RsaSigner, iss: &str, sub: &str, iat: i64, exp: Option<i64>) -> String {
    let mut c =
        json!({"iss": iss, "sub": sub, "aud": TOKEN_EXCHANGE_AUDIENCE, "iat": iat, "nbf": iat});
    if let Some(exp) = exp {
        c["exp"] = json!(exp);
    }
    signer.sign(&c).unwrap()
}

async fn put_issuer_keys(entra: &Entra, issuer: &str, jwks: &str) {
    entra
        .put_issuer_keys(tonic::Request::new(pb::PutIssuerKeysRequest {
            issuer: issuer.into(),
            jwks_json: jwks.into(),
        }))
        .await
        .unwrap();
}

#[tokio::test]
async fn registered_issuer_keys_verify_without_fetching() {
    let env = env().await;
    let (signer, jwks) = registered_signer("external issuer");
    put_issuer_keys(&env.entra, UNREACHABLE_ISSUER, &jwks).await;
    let (app, _) = app_trusting(&env.entra, UNREACHABLE_ISSUER, "workload-1").await;
    let now = NOW as i64;
    let ok = external(
        &signer,
        UNREACHABLE_ISSUER,
        "workload-1",
        now,
        Some(now + 600),
    );
    let (s, b) = exchange(&env.entra, app_id(&app), &ok).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // A key the issuer does not publish.
    let (stranger, _) = registered_signer("someone else");
    let forged = external(
        &stranger,
        UNREACHABLE_ISSUER,
        "workload-1",
        now,
        Some(now + 600),
    );
    let (s, b) = exchange(&env.entra, app_id(&app), &forged).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_aadsts(&b, "invalid_client", 7000272);

    // The published key's id, but another key's signature.
    let mut parts: Vec<String> = ok.split('.').map(str::to_owned).collect();
    parts[2] = forged.split('.').nth(2).unwrap().to_owned();
    let (s, b) = exchange(&env.entra, app_id(&app), &parts.join(".")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_aadsts(&b, "invalid_client", 700027);

    let listed = env
        .entra
        .list_issuer_keys(tonic::Request::new(pb::ListIssuerKeysRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.issuers.len(), 1);
    assert_eq!(listed.issuers[0].kids, [signer.kid()]);

    // Forgotten keys mean a fetch, which an issuer off loopback never gets.
    let gone = env
        .entra
        .delete_issuer_keys(tonic::Request::new(pb::DeleteIssuerKeysRequest {
            issuer: UNREACHABLE_ISSUER.into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(gone.existed);
    let (s, b) = exchange(&env.entra, app_id(&app), &ok).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_aadsts(&b, "invalid_request", 50166);
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains("is not a loopback address or a localhost name"),
        "{b}"
    );
}

#[tokio::test]
async fn expired_and_too_long_lived_tokens_are_refused() {
    let f = fed().await;
    let sub = "system:serviceaccount:prod:api";
    let token = k8s_token(&f, sub).await;
    let (app, _) = app_trusting(&f.env.entra, &issuer_of(&token), sub).await;
    f.env.clock.advance(Duration::from_secs(3600 + 301));
    let (s, b) = exchange(&f.env.entra, app_id(&app), &token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_aadsts(&b, "invalid_client", 700024);
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .contains(".0000000Z"),
        "{b}"
    );

    let env = env().await;
    let (signer, jwks) = registered_signer("long-lived issuer");
    put_issuer_keys(&env.entra, UNREACHABLE_ISSUER, &jwks).await;
    let (app, _) = app_trusting(&env.entra, UNREACHABLE_ISSUER, "w").await;
    let now = NOW as i64;
    for too_long in [
        external(&signer, UNREACHABLE_ISSUER, "w", now, Some(now + 25 * 3600 + 1)),
        external(&signer, UNREACHABLE_ISSUER, "w", now, None),
        signer
            .sign(&json!({"iss": UNREACHABLE_ISSUER, "sub": "w", "aud": TOKEN_EXCHANGE_AUDIENCE, "exp": now + 60}))
            .unwrap(),
    ] {
        let (s, b) = exchange(&env.entra, app_id(&app), &too_long).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_aadsts(&b, "invalid_request", 70023);
    }
    let day = external(&signer, UNREACHABLE_ISSUER, "w", now, Some(now + 25 * 3600));
    let (s, b) = exchange(&env.entra, app_id(&app), &day).await;
    assert_eq!(s, StatusCode::OK, "25 hours is the limit: {b}");
}

#[tokio::test]
async fn an_issuer_that_does_not_answer_is_50166() {
    let env = env().await;
    // Loopback, so misim tries; nothing listens on port 1.
    let issuer = "https://127.0.0.1:1/issuer";
    let (signer, _) = registered_signer("nobody");
    let (app, _) = app_trusting(&env.entra, issuer, "w").await;
    let now = NOW as i64;
    let token = external(&signer, issuer, "w", now, Some(now + 600));
    let (s, b) = exchange(&env.entra, app_id(&app), &token).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_aadsts(&b, "invalid_request", 50166);
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS50166: Request to External OIDC endpoint failed.")
    );
}

#[tokio::test]
async fn managed_identity_credentials_come_over_grpc_and_exchange_github_tokens() {
    let f = fed().await;
    let mi = create_mi(&f.env.entra, "op-uami", UAMI_ID).await;
    let sub = "repo:octo-org/deploy:environment:prod";
    let token = github_token(&f, sub).await;
    let put = |name: &str, subject: &str| pb::PutFederatedCredentialRequest {
        app_id: mi.sp.app_id.clone(),
        credential: Some(pb::FederatedCredential {
            name: name.into(),
            issuer: issuer_of(&token),
            subject: subject.into(),
            ..Default::default()
        }),
    };
    let first = f
        .env
        .entra
        .put_federated_credential(tonic::Request::new(put("github-main", sub)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.audiences, [TOKEN_EXCHANGE_AUDIENCE]);
    let again = f
        .env
        .entra
        .put_federated_credential(tonic::Request::new(put("github-main", sub)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.id, first.id, "a repeated PUT replaces, by name");

    let (s, b) = exchange(&f.env.entra, &mi.sp.app_id, &token).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let raw = raw_claims(b["access_token"].as_str().unwrap());
    assert_eq!(raw["oid"], mi.sp.object_id.as_str());
    assert!(
        raw["xms_mirid"]
            .as_str()
            .unwrap()
            .ends_with("/userAssignedIdentities/id1")
    );
    assert_eq!(
        raw["exp"].as_i64().unwrap() - raw["iat"].as_i64().unwrap(),
        86400
    );

    for i in 1..20 {
        f.env
            .entra
            .put_federated_credential(tonic::Request::new(put(
                &format!("gh-{i}"),
                &format!("s-{i}"),
            )))
            .await
            .unwrap();
    }
    let e = f
        .env
        .entra
        .put_federated_credential(tonic::Request::new(put("gh-20", "s-20")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    let list = f
        .env
        .entra
        .list_federated_credentials(tonic::Request::new(pb::ListFederatedCredentialsRequest {
            app_id: mi.sp.app_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.credentials.len(), 20);

    let del = |name: &str| pb::DeleteFederatedCredentialRequest {
        app_id: mi.sp.app_id.clone(),
        name: name.into(),
    };
    assert!(
        f.env
            .entra
            .delete_federated_credential(tonic::Request::new(del("github-main")))
            .await
            .unwrap()
            .into_inner()
            .existed
    );
    assert!(
        !f.env
            .entra
            .delete_federated_credential(tonic::Request::new(del("github-main")))
            .await
            .unwrap()
            .into_inner()
            .existed
    );
    let (s, b) = exchange(&f.env.entra, &mi.sp.app_id, &token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_aadsts(&b, "invalid_client", 700213);
}

#[tokio::test]
async fn a_managed_identitys_token_is_an_applications_credential() {
    let env = env().await;
    let mi = create_mi(&env.entra, "op-mi", UAMI_ID).await;
    let assertion = assertion(&mi.signer, &mi.sp.app_id, &v2_aud(), NOW);
    let mi_token = issue(
        &env.entra,
        &mi.sp.app_id,
        assertion,
        TOKEN_EXCHANGE_AUDIENCE,
    )
    .await
    .unwrap()
    .access_token;
    let c = raw_claims(&mi_token);
    let issuer_v2 = format!("{PUBLIC}/{TID}/v2.0");
    assert_eq!(c["iss"], issuer_v2.as_str());
    assert_eq!(c["aud"], TOKEN_EXCHANGE_AUDIENCE);
    assert_eq!(c["sub"], mi.sp.object_id.as_str());
    assert_eq!(c["ver"], "2.0");

    let (app, sp) = app_trusting(&env.entra, &issuer_v2, &mi.sp.object_id).await;
    let (s, b) = exchange(&env.entra, app_id(&app), &mi_token).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        raw_claims(b["access_token"].as_str().unwrap())["oid"],
        sp["id"]
    );

    // Another principal's Entra token is not a federated credential.
    let (s, b) = token_for(
        &env.entra,
        ADMIN_APP,
        ADMIN_SECRET,
        "api://AzureADTokenExchange/.default",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let admin_token = b["access_token"].as_str().unwrap().to_owned();
    let (app2, _) = app_trusting(&env.entra, &issuer_v2, ADMIN_OID).await;
    let (s, b) = exchange(&env.entra, app_id(&app2), &admin_token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_aadsts(&b, "invalid_client", 700222);
}
