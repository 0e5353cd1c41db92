//! Token requests through Entra's HTTP router in-process, without sockets or TLS: what one
//! token costs Entra's own code (router, middleware, handler, signing), for callgrind.
//!
//! ```text
//! cargo build --release -p misim-entra --example token_cost
//! valgrind --tool=callgrind target/release/examples/token_cost mi 200
//! callgrind_annotate --inclusive=yes callgrind.out.<pid> | grep -E 'respond|authenticate|sign_for'
//! ```
//!
//! `mi` posts a managed identity's ES256 client assertion (the same one every time, as MSAL
//! reuses one), `secret` an application's client secret; the number is how many tokens. Each
//! function's inclusive count divided by that number is its cost per token. A third argument,
//! `log`, installs the log subscriber `misim up` installs (`RUST_LOG`, default `info`), whose
//! per-request span the bench, which runs the sandbox without one, does not pay.

use std::time::Duration;

use anyhow::{Context, bail};
use misim_proto::entra::v1 as pb;
use misim_proto::entra::v1::directory_server::Directory as _;
use misim_types::Clock;
use tower::ServiceExt as _;

const TENANT: &str = "00000000-0000-4000-8000-00000000c051";
const PUBLIC_URL: &str = "https://localhost:1";
const ADMIN_APP: &str = "00000000-0000-4000-8000-00000000c052";
const ADMIN_SECRET: &str = "c0st-secret-value-0123456789";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(serde::Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: &'a str,
    nbf: i64,
    iat: i64,
    exp: i64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "mi".into());
    let n: usize = args.next().unwrap_or_else(|| "100".into()).parse()?;
    if args.next().as_deref() == Some("log") {
        misim_runtime::telemetry::init();
    }
    let dir = tempfile::tempdir()?;
    let entra = misim_entra::Entra::open(
        misim_entra::Config {
            tenant_id: TENANT.into(),
            public_url: PUBLIC_URL.into(),
            extra_resources: Vec::new(),
            admin: Some(misim_entra::AdminBootstrap {
                app_id: ADMIN_APP.into(),
                object_id: "00000000-0000-4000-8000-00000000c053".into(),
                display_name: "token-cost admin".into(),
                secret: ADMIN_SECRET.into(),
            }),
            tokens: Default::default(),
        },
        misim_entra::Deps {
            store: misim_store::Store::open(dir.path())?,
            clock: std::sync::Arc::new(misim_types::SystemClock),
            ids: std::sync::Arc::new(misim_types::RandomIds),
        },
    )
    .await?;
    let endpoint = format!("{PUBLIC_URL}/{TENANT}/oauth2/v2.0/token");
    let form = match mode.as_str() {
        "secret" => serde_urlencoded::to_string([
            ("grant_type", "client_credentials"),
            ("client_id", ADMIN_APP),
            ("client_secret", ADMIN_SECRET),
            ("scope", "https://management.azure.com/.default"),
        ])?,
        "mi" => {
            let (client_id, assertion) = managed_identity(&entra, &endpoint).await?;
            serde_urlencoded::to_string([
                ("grant_type", "client_credentials"),
                ("client_id", client_id.as_str()),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", assertion.as_str()),
                ("scope", "https://vault.azure.net/.default"),
            ])?
        }
        other => bail!("mode is mi or secret, not {other}"),
    };
    let router = entra.http_router();
    let path = format!("/{TENANT}/oauth2/v2.0/token");
    for _ in 0..n {
        let req = http::Request::post(path.as_str())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(axum::body::Body::from(form.clone()))?;
        let resp = router.clone().oneshot(req).await?;
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await?
            .to_bytes();
        if status != http::StatusCode::OK {
            bail!("{status}: {}", String::from_utf8_lossy(&body));
        }
    }
    println!("{n} tokens ({mode})");
    Ok(())
}

/// A managed identity with a P-256 certificate, as ARM registers one, and an assertion
/// for `endpoint` valid for an hour.
async fn managed_identity(
    entra: &misim_entra::Entra,
    endpoint: &str,
) -> anyhow::Result<(String, String)> {
    let now = misim_types::SystemClock.now();
    let cert = misim_token::cert::generate_ec_cert(
        "token-cost",
        now - Duration::from_secs(60),
        now + Duration::from_secs(86_400),
    )?;
    let principal = entra
        .create_service_principal(tonic::Request::new(pb::CreateServicePrincipalRequest {
            request_id: "token-cost".into(),
            display_name: "token-cost-mi".into(),
            r#type: pb::ServicePrincipalType::ManagedIdentity as i32,
            managed_identity_resource_id: "/subscriptions/00000000-0000-4000-8000-00000000c054/resourceGroups/cost/providers/Microsoft.ManagedIdentity/userAssignedIdentities/cost".into(),
            ..Default::default()
        }))
        .await
        .context("creating the identity")?
        .into_inner();
    entra
        .add_key_credential(tonic::Request::new(pb::AddKeyCredentialRequest {
            object_id: principal.object_id.clone(),
            certificate_der: cert.certificate_der.clone(),
        }))
        .await
        .context("registering its certificate")?;
    let signer = misim_token::CertSigner::new(&cert.private_key_der, &cert.certificate_der)?;
    let unix = misim_types::SystemClock.unix();
    let id = principal.app_id.as_str();
    let assertion = signer.sign(&AssertionClaims {
        aud: endpoint,
        iss: id,
        sub: id,
        jti: "6c7e0f0e-0000-4000-8000-00000000c055",
        nbf: unix,
        iat: unix,
        exp: unix + 3600,
    })?;
    Ok((principal.app_id, assertion))
}
