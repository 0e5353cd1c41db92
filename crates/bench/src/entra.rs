//! Benchmark 1: Entra token issuance against raw RSA-2048 signing.
//!
//! Issuing an access token is one RS256 signature with Entra's tenant key
//! (parsed once), plus, for `Directory.IssueToken`, one RSA verification of
//! the caller's client assertion. Issuance should therefore run close to the
//! raw signing rate; the tables show how close.

use std::time::Duration;

use anyhow::{Context, bail};
use misim_proto::entra::v1 as pb;
use misim_proto::entra::v1::directory_server::Directory as _;
use misim_types::Clock;
use ring::signature::{self, KeyPair, RsaKeyPair};
use serde::Serialize;

use crate::measure::{self, Run};
use crate::{ROUNDS, Settings, World};

/// The size of a typical access token's signing input (header.payload).
const SIGNING_INPUT_LEN: usize = 900;

const BENCH_TENANT: &str = "00000000-0000-4000-8000-00000000be01";
const BENCH_PUBLIC_URL: &str = "https://localhost:1";
const BENCH_MI: &str = "/subscriptions/00000000-0000-4000-8000-00000000be02/resourceGroups/bench/providers/Microsoft.ManagedIdentity/userAssignedIdentities/bench-mi";

#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: &'a str,
    nbf: i64,
    iat: i64,
    exp: i64,
}

/// Key material, an Entra opened in-process and a principal that can call it.
struct Fixture {
    key: RsaKeyPair,
    /// PKCS#1 RSAPublicKey of the identity certificate.
    public_key: Vec<u8>,
    assertion: String,
    client_id: String,
    entra: misim_entra::Entra,
    _dir: tempfile::TempDir,
}

async fn fixture() -> anyhow::Result<Fixture> {
    let clock = misim_types::SystemClock;
    let now = clock.now();
    let cert = tokio::task::spawn_blocking(move || {
        misim_token::cert::generate_rsa_cert(
            "misim-bench",
            now - Duration::from_secs(60),
            now + Duration::from_secs(86_400),
        )
    })
    .await??;
    let key = RsaKeyPair::from_pkcs8(&cert.private_key_der)
        .map_err(|e| anyhow::anyhow!("parsing the generated key: {e}"))?;
    let public_key = key.public_key().as_ref().to_vec();

    let dir = tempfile::tempdir()?;
    let store = misim_store::Store::open(dir.path())?;
    let entra = misim_entra::Entra::open(
        misim_entra::Config {
            tenant_id: BENCH_TENANT.into(),
            public_url: BENCH_PUBLIC_URL.into(),
            extra_resources: Vec::new(),
            admin: None,
            tokens: Default::default(),
        },
        misim_entra::Deps {
            store,
            clock: std::sync::Arc::new(misim_types::SystemClock),
            ids: std::sync::Arc::new(misim_types::RandomIds),
        },
    )
    .await?;
    let principal = entra
        .create_service_principal(tonic::Request::new(pb::CreateServicePrincipalRequest {
            request_id: "misim-bench".into(),
            display_name: "bench-mi".into(),
            r#type: pb::ServicePrincipalType::ManagedIdentity as i32,
            managed_identity_resource_id: BENCH_MI.into(),
        }))
        .await?
        .into_inner();
    entra
        .add_key_credential(tonic::Request::new(pb::AddKeyCredentialRequest {
            object_id: principal.object_id.clone(),
            certificate_der: cert.certificate_der.clone(),
        }))
        .await?;
    let signer = misim_token::RsaSigner::new(&cert.private_key_der, &cert.certificate_der)?;
    let unix = clock.unix();
    let aud = format!("{BENCH_PUBLIC_URL}/{BENCH_TENANT}/oauth2/v2.0/token");
    let assertion = signer.sign(&AssertionClaims {
        aud: &aud,
        iss: &principal.app_id,
        sub: &principal.app_id,
        jti: "6c7e0f0e-0000-4000-8000-00000000be03",
        nbf: unix,
        iat: unix,
        // The assertion is reused for every call of the run.
        exp: unix + 3600,
    })?;
    Ok(Fixture {
        key,
        public_key,
        assertion,
        client_id: principal.app_id,
        entra,
        _dir: dir,
    })
}

fn issue_request(f: &Fixture) -> pb::IssueTokenRequest {
    pb::IssueTokenRequest {
        client_id: f.client_id.clone(),
        client_assertion: f.assertion.clone(),
        resource: misim_types::audiences::KEY_VAULT.into(),
    }
}

fn sign_run(f: &Fixture, threads: usize, s: &Settings) -> Run {
    let msg = vec![b'e'; SIGNING_INPUT_LEN];
    measure::on_threads(
        format!("ring RSA-2048 PKCS#1 SHA-256 sign, {threads} thr"),
        threads,
        s.warmup,
        s.window,
        |_| {
            let rng = ring::rand::SystemRandom::new();
            let mut sig = vec![0u8; f.key.public().modulus_len()];
            let (key, msg) = (&f.key, &msg);
            move || {
                key.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .is_ok()
            }
        },
    )
}

fn issue_run(f: &Fixture, threads: usize, s: &Settings) -> Run {
    measure::on_threads(
        format!("Directory.IssueToken in-process, {threads} thr"),
        threads,
        s.warmup,
        s.window,
        |_| {
            let req = issue_request(f);
            let entra = &f.entra;
            move || {
                futures::executor::block_on(entra.issue_token(tonic::Request::new(req.clone())))
                    .is_ok()
            }
        },
    )
}

/// Raw RSA-2048 verification of the bench assertion's signature: the floor under
/// [`jwt_verify_run`].
fn raw_verify_run(f: &Fixture, s: &Settings) -> Run {
    let (input, sig) = split_jwt(&f.assertion);
    measure::on_threads(
        "ring RSA-2048 PKCS#1 SHA-256 verify, 1 thr",
        1,
        s.warmup,
        s.window,
        |_| {
            let key = signature::UnparsedPublicKey::new(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                f.public_key.clone(),
            );
            let (input, sig) = (input.to_owned(), sig.clone());
            move || key.verify(input.as_bytes(), &sig).is_ok()
        },
    )
}

/// Client-assertion verification as `Directory.IssueToken` does it on every call (header
/// parsed once here, as the caller's cost is the signature and claim checks).
fn jwt_verify_run(f: &Fixture, s: &Settings) -> Run {
    let header = misim_token::verify::assertion_header(&f.assertion);
    let now = misim_types::SystemClock.unix();
    let aud_path = format!("/{BENCH_TENANT}/oauth2/v2.0/token");
    measure::on_threads(
        "verify_client_assertion (what each call pays), 1 thr",
        1,
        s.warmup,
        s.window,
        |_| {
            let (header, aud_path) = (&header, &aud_path);
            move || {
                let Ok(h) = header else { return false };
                misim_token::verify::verify_client_assertion(
                    &f.assertion,
                    h,
                    &f.public_key,
                    &f.client_id,
                    now,
                    |aud| aud.ends_with(aud_path.as_str()),
                )
                .is_ok()
            }
        },
    )
}

/// The in-process measurements of 1a–1c, each accumulated over [`ROUNDS`] rounds.
struct InProcess {
    sign1: Run,
    issue1: Run,
    sign_n: Run,
    issue_n: Run,
    raw_verify: Run,
    jwt_verify: Run,
}

/// Measures 1a–1c, interleaving the runs round by round so that a slow spell of the
/// machine hits a baseline and what is compared with it alike.
fn in_process(f: &Fixture, r: &Settings) -> InProcess {
    let mut acc: [Option<Run>; 6] = Default::default();
    tokio::task::block_in_place(|| {
        for _ in 0..ROUNDS {
            measure::accumulate(&mut acc[0], sign_run(f, 1, r));
            measure::accumulate(&mut acc[1], issue_run(f, 1, r));
            measure::accumulate(&mut acc[2], sign_run(f, r.threads, r));
            measure::accumulate(&mut acc[3], issue_run(f, r.threads, r));
            measure::accumulate(&mut acc[4], raw_verify_run(f, r));
            measure::accumulate(&mut acc[5], jwt_verify_run(f, r));
        }
    });
    let [sign1, issue1, sign_n, issue_n, raw_verify, jwt_verify] =
        acc.map(|r| r.unwrap_or_else(|| unreachable!("ROUNDS > 0")));
    InProcess {
        sign1,
        issue1,
        sign_n,
        issue_n,
        raw_verify,
        jwt_verify,
    }
}

/// Measures 1d: all-core signing and the HTTPS token endpoint, alternating per round.
async fn over_https(f: &Fixture, r: &Settings, world: &World) -> anyhow::Result<(Run, Run)> {
    let (mut sign_d, mut https) = (None, None);
    for _ in 0..ROUNDS {
        let b = tokio::task::block_in_place(|| sign_run(f, r.threads, r));
        measure::accumulate(&mut sign_d, b);
        measure::accumulate(&mut https, https_token_run(r, world).await?);
    }
    let (Some(sign_d), Some(https)) = (sign_d, https) else {
        unreachable!("ROUNDS > 0")
    };
    Ok((sign_d, https))
}

/// Runs benchmark 1; `world` provides the HTTPS endpoint of a running sandbox.
pub(crate) async fn run(s: &Settings, world: &World) -> anyhow::Result<()> {
    let f = fixture().await.context("setting up the in-process Entra")?;
    // Fail fast (with the reason) if the in-process path does not work.
    if let Err(e) = f
        .entra
        .issue_token(tonic::Request::new(issue_request(&f)))
        .await
    {
        bail!("Directory.IssueToken refused the bench assertion: {e}");
    }
    let r = s.round();
    let m = in_process(&f, &r);
    let (sign_d, https) = over_https(&f, &r, world).await?;

    measure::report(
        "1a. Entra issuance in-process (Directory.IssueToken, assertion verified per call) vs raw signing, 1 thread",
        &m.sign1,
        &[&m.issue1],
    );
    measure::report(
        &format!("1b. the same on all cores ({} threads)", s.threads),
        &m.sign_n,
        &[&m.issue_n],
    );
    measure::report(
        "1c. client-assertion verification, which every IssueToken call pays, vs raw RSA verify",
        &m.raw_verify,
        &[&m.jwt_verify],
    );
    // One signature plus one verification per token: the best IssueToken can do.
    let ceiling = 1.0 / (1.0 / m.sign1.rate() + 1.0 / m.jwt_verify.rate().max(1e-9));
    println!(
        "ceiling for 1a (1 sign + 1 assertion verify per token): {ceiling:.1}/s = {:.3} of raw signing; \
         IssueToken reaches {:.3} of that ceiling",
        ceiling / m.sign1.rate().max(1e-9),
        m.issue1.rate() / ceiling.max(1e-9)
    );
    measure::report(
        &format!(
            "1d. Entra issuance over HTTPS (POST /{{tenant}}/oauth2/v2.0/token, client secret, {} in flight) vs raw signing on all cores",
            s.token_concurrency
        ),
        &sign_d,
        &[&https],
    );
    Ok(())
}

/// Splits a compact JWT into its signing input and decoded signature.
fn split_jwt(jwt: &str) -> (&str, Vec<u8>) {
    match jwt.rsplit_once('.') {
        Some((input, sig)) => (input, misim_token::b64_lenient(sig).unwrap_or_default()),
        None => (jwt, Vec::new()),
    }
}

async fn https_token_run(s: &Settings, world: &World) -> anyhow::Result<Run> {
    let sb = &world.sb;
    let url = format!(
        "{}/{}/oauth2/v2.0/token",
        sb.entra_url, sb.bootstrap.tenant_id
    );
    let body = serde_urlencoded::to_string([
        ("grant_type", "client_credentials"),
        ("client_id", sb.bootstrap.admin_client_id.as_str()),
        ("client_secret", sb.bootstrap.admin_client_secret.as_str()),
        ("scope", "https://management.azure.com/.default"),
    ])?;
    let http = world.https.clone();
    let probe = http
        .post(&url)
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body.clone())
        .send()
        .await?;
    if probe.status() != reqwest::StatusCode::OK {
        bail!(
            "token endpoint answered {}: {}",
            probe.status(),
            probe.text().await.unwrap_or_default()
        );
    }
    Ok(measure::in_flight(
        format!("HTTPS token endpoint, {} in flight", s.token_concurrency),
        s.token_concurrency,
        s.warmup,
        s.window,
        move || {
            let req = http
                .post(&url)
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body.clone());
            async move {
                match req.send().await {
                    Ok(r) => r.status() == reqwest::StatusCode::OK && r.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        },
    )
    .await)
}
