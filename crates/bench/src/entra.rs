//! Benchmark 1: Entra token issuance against raw RSA-2048 signing (issue #11, target 3).
//!
//! Issuing an access token is one RS256 signature with Entra's tenant key
//! (parsed once), plus, for a managed identity, one ES256 verification of its
//! client assertion (managed-identity certificates are P-256). Issuance should
//! therefore run close to the raw signing rate of the library misim signs with
//! (aws-lc-rs); the tables show how close, and how far that library is from
//! `openssl speed rsa2048`, the machine's limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use aws_lc_rs::encoding::AsDer as _;
use bytes::Bytes;
use misim_proto::entra::v1 as pb;
use misim_proto::entra::v1::directory_server::Directory as _;
use misim_types::Clock;
use serde::Serialize;

use crate::h1_tls;
use crate::measure::{self, Run};
use crate::targets::TargetRow;
use crate::{ROUNDS, Settings, World};

/// Target 3's goal: token issuance over HTTPS at this share of raw signing on all cores.
const T3_RATIO: f64 = 0.8;

/// The size of a typical access token's signing input (header.payload).
const SIGNING_INPUT_LEN: usize = 900;

const BENCH_TENANT: &str = "00000000-0000-4000-8000-00000000be01";
const BENCH_PUBLIC_URL: &str = "https://localhost:1";
const BENCH_MI: &str = "/subscriptions/00000000-0000-4000-8000-00000000be02/resourceGroups/bench/providers/Microsoft.ManagedIdentity/userAssignedIdentities/bench-mi";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

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

/// A managed identity as ARM makes one: a principal with a P-256 certificate,
/// and an assertion signed with its key, valid for the whole run.
struct Identity {
    client_id: String,
    assertion: String,
    /// The certificate's SEC1 point (what Entra verifies the assertion with).
    public_key: Vec<u8>,
}

/// Makes a P-256 credential for a managed identity, has `register` create the
/// principal and register the certificate (returning the app id), and signs an
/// assertion for `token_endpoint`.
async fn identity<F, Fut>(token_endpoint: &str, register: F) -> anyhow::Result<Identity>
where
    F: FnOnce(Vec<u8>) -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
{
    let clock = misim_types::SystemClock;
    let now = clock.now();
    let cert = misim_token::cert::generate_ec_cert(
        "misim-bench",
        now - Duration::from_secs(60),
        now + Duration::from_secs(86_400),
    )?;
    let public_key = misim_token::cert::parse_cert(&cert.certificate_der)?.public_key;
    let client_id = register(cert.certificate_der.clone()).await?;
    let signer = misim_token::CertSigner::new(&cert.private_key_der, &cert.certificate_der)?;
    let unix = clock.unix();
    let assertion = signer.sign(&AssertionClaims {
        aud: token_endpoint,
        iss: &client_id,
        sub: &client_id,
        jti: "6c7e0f0e-0000-4000-8000-00000000be03",
        nbf: unix,
        iat: unix,
        // The assertion is reused for every call of the run.
        exp: unix + 3600,
    })?;
    Ok(Identity {
        client_id,
        assertion,
        public_key,
    })
}

/// Key material, an Entra opened in-process and a managed identity that can call it.
struct Fixture {
    /// An RSA-2048 key in the library misim signs with...
    key: aws_lc_rs::signature::RsaKeyPair,
    /// ...and the same key in ring, for comparison.
    ring_key: ring::signature::RsaKeyPair,
    mi: Identity,
    entra: misim_entra::Entra,
    _dir: tempfile::TempDir,
}

async fn fixture() -> anyhow::Result<Fixture> {
    let key = aws_lc_rs::signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|e| anyhow::anyhow!("generating an RSA key: {e}"))?;
    let pkcs8 = key
        .as_der()
        .map_err(|e| anyhow::anyhow!("encoding the RSA key: {e}"))?;
    let ring_key = ring::signature::RsaKeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| anyhow::anyhow!("ring parsing the RSA key: {e}"))?;

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
    let aud = format!("{BENCH_PUBLIC_URL}/{BENCH_TENANT}/oauth2/v2.0/token");
    let e = &entra;
    let mi = identity(&aud, |certificate_der| async move {
        let principal = e
            .create_service_principal(tonic::Request::new(pb::CreateServicePrincipalRequest {
                request_id: "misim-bench".into(),
                display_name: "bench-mi".into(),
                r#type: pb::ServicePrincipalType::ManagedIdentity as i32,
                managed_identity_resource_id: BENCH_MI.into(),
                ..Default::default()
            }))
            .await?
            .into_inner();
        e.add_key_credential(tonic::Request::new(pb::AddKeyCredentialRequest {
            object_id: principal.object_id.clone(),
            certificate_der,
        }))
        .await?;
        Ok(principal.app_id)
    })
    .await?;
    Ok(Fixture {
        key,
        ring_key,
        mi,
        entra,
        _dir: dir,
    })
}

fn issue_request(f: &Fixture) -> pb::IssueTokenRequest {
    pb::IssueTokenRequest {
        client_id: f.mi.client_id.clone(),
        client_assertion: f.mi.assertion.clone(),
        resource: misim_types::audiences::KEY_VAULT.into(),
    }
}

/// Raw RSA-2048 PKCS#1 SHA-256 signatures with aws-lc-rs, what misim signs tokens with.
fn sign_run(f: &Fixture, threads: usize, s: &Settings) -> Run {
    sign_run_counted(f, threads, s, &AtomicU64::new(0))
}

/// [`sign_run`], counting every signature (warm-up included) in `done`.
fn sign_run_counted(f: &Fixture, threads: usize, s: &Settings, done: &AtomicU64) -> Run {
    use aws_lc_rs::signature::RSA_PKCS1_SHA256;
    let msg = vec![b'e'; SIGNING_INPUT_LEN];
    measure::on_threads(
        format!("aws-lc-rs RSA-2048 PKCS#1 SHA-256 sign, {threads} thr"),
        threads,
        s.warmup,
        s.window,
        |_| {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let mut sig = vec![0u8; f.key.public_modulus_len()];
            let (key, msg) = (&f.key, &msg);
            move || {
                let ok = key.sign(&RSA_PKCS1_SHA256, &rng, msg, &mut sig).is_ok();
                done.fetch_add(u64::from(ok), Ordering::Relaxed);
                ok
            }
        },
    )
}

/// The CPU time (user and system, every thread of this process) spent per
/// operation over some windows. A rate also counts the time other processes take
/// the cores from this one; CPU time per operation is less sensitive to that, so it
/// compares the HTTPS path with raw signing on a shared machine too (not exactly:
/// caches are shared). Warm-ups are counted on both sides (operations and time).
#[derive(Default, Clone, Copy)]
struct CpuCost {
    cpu: Duration,
    ops: u64,
}

impl CpuCost {
    /// Runs `f`, adding the CPU time it takes and the operations it counts in `done`.
    async fn measure<T>(&mut self, f: impl Future<Output = T>, done: &AtomicU64) -> T {
        let before = (process_cpu(), done.load(Ordering::Relaxed));
        let out = f.await;
        if let (Some(b), Some(a)) = (before.0, process_cpu()) {
            self.cpu += a.saturating_sub(b);
            self.ops += done.load(Ordering::Relaxed) - before.1;
        }
        out
    }

    /// CPU microseconds per operation (NaN without `/proc`).
    fn us_per_op(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.ops as f64
    }
}

/// This process's CPU time so far (user + system), from `/proc/self/stat`
/// (`None` where there is none).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; the fields after it are fixed.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    // Fields 14 and 15 of proc(5) (the first after the name is field 3).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // In USER_HZ, 100 on every Linux that misim runs on.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// The same signatures with ring (the library misim signed with before).
fn ring_sign_run(f: &Fixture, threads: usize, s: &Settings) -> Run {
    use ring::signature::RSA_PKCS1_SHA256;
    let msg = vec![b'e'; SIGNING_INPUT_LEN];
    measure::on_threads(
        format!("ring RSA-2048 PKCS#1 SHA-256 sign, {threads} thr"),
        threads,
        s.warmup,
        s.window,
        |_| {
            let rng = ring::rand::SystemRandom::new();
            let mut sig = vec![0u8; f.ring_key.public().modulus_len()];
            let (key, msg) = (&f.ring_key, &msg);
            move || key.sign(&RSA_PKCS1_SHA256, &rng, msg, &mut sig).is_ok()
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

/// Raw P-256 verification of the bench assertion's signature (ring, which
/// jsonwebtoken verifies with): the floor under [`jwt_verify_run`].
fn raw_verify_run(f: &Fixture, s: &Settings) -> Run {
    let (input, sig) = split_jwt(&f.mi.assertion);
    measure::on_threads(
        "ring ECDSA P-256 SHA-256 verify, 1 thr",
        1,
        s.warmup,
        s.window,
        |_| {
            let key = ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                f.mi.public_key.clone(),
            );
            let (input, sig) = (input.to_owned(), sig.clone());
            move || key.verify(input.as_bytes(), &sig).is_ok()
        },
    )
}

/// Client-assertion verification as `Directory.IssueToken` does it on every call (header
/// parsed once here, as the caller's cost is the signature and claim checks).
fn jwt_verify_run(f: &Fixture, s: &Settings) -> Run {
    let header = misim_token::verify::assertion_header(&f.mi.assertion);
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
                    &f.mi.assertion,
                    h,
                    &f.mi.public_key,
                    &f.mi.client_id,
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
    ring_sign_n: Run,
    raw_verify: Run,
    jwt_verify: Run,
}

/// Measures 1a–1c, interleaving the runs round by round so that a slow spell of the
/// machine hits a baseline and what is compared with it alike.
fn in_process(f: &Fixture, r: &Settings) -> InProcess {
    let mut acc: [Option<Run>; 7] = Default::default();
    tokio::task::block_in_place(|| {
        for _ in 0..ROUNDS {
            measure::accumulate(&mut acc[0], sign_run(f, 1, r));
            measure::accumulate(&mut acc[1], issue_run(f, 1, r));
            measure::accumulate(&mut acc[2], sign_run(f, r.threads, r));
            measure::accumulate(&mut acc[3], issue_run(f, r.threads, r));
            measure::accumulate(&mut acc[4], ring_sign_run(f, r.threads, r));
            measure::accumulate(&mut acc[5], raw_verify_run(f, r));
            measure::accumulate(&mut acc[6], jwt_verify_run(f, r));
        }
    });
    // Fields are evaluated in the order written: the order of `acc` above.
    let mut runs = acc
        .into_iter()
        .map(|r| r.unwrap_or_else(|| unreachable!("ROUNDS > 0")));
    let mut next = || runs.next().unwrap_or_else(|| unreachable!("seven runs"));
    InProcess {
        sign1: next(),
        issue1: next(),
        sign_n: next(),
        issue_n: next(),
        ring_sign_n: next(),
        raw_verify: next(),
        jwt_verify: next(),
    }
}

/// 1d's measurements: all-core signing and the two HTTPS token flows, each over
/// HTTP/1.1 keep-alive connections (what the target is read from) and over one
/// HTTP/2 connection.
struct OverHttps {
    sign: Run,
    secret: Run,
    assertion: Run,
    secret_h2: Run,
    assertion_h2: Run,
    /// CPU per operation of each, in the order above.
    cpu: [CpuCost; 5],
}

/// The client the target is measured with: HTTP/1.1 over `token_concurrency`
/// keep-alive TLS connections, one request in flight on each. That is how the
/// Azure CLI and the Python SDKs (MSAL Python and azure-identity, through
/// `requests`/urllib3, which speak HTTP/1.1 only) call Entra: a pool of
/// keep-alive connections, one request at a time on each. The load generator
/// itself is lean ([`h1_tls`]), since its CPU is taken from the server's.
/// (`World::https` negotiates HTTP/2 by ALPN, as Go's `net/http` and reqwest
/// do, and then multiplexes every request over one connection, one task per
/// side: measured too, as the h2 rows, through reqwest.)
async fn http1_client(world: &World, connections: usize) -> anyhow::Result<Client> {
    Ok(Client::Http1(
        h1_tls::connect(&world.sb.entra_url, &world.sb.ca_pem, connections).await?,
    ))
}

/// Measures 1d: all-core signing and the HTTPS token endpoint with a client
/// secret and with a managed identity's assertion, alternating per round.
async fn over_https(f: &Fixture, r: &Settings, world: &World) -> anyhow::Result<OverHttps> {
    let secret = secret_form(world)?;
    let mi = sandbox_identity(world).await?;
    let assertion = serde_urlencoded::to_string([
        ("grant_type", "client_credentials"),
        ("client_id", mi.client_id.as_str()),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", mi.assertion.as_str()),
        ("scope", "https://vault.azure.net/.default"),
    ])?;
    let h1 = http1_client(world, r.token_concurrency).await?;
    let h2 = Client::H2(world.https.clone());
    let mut acc: [Option<Run>; 5] = Default::default();
    let mut cpu = [CpuCost::default(); 5];
    let done: [Arc<AtomicU64>; 5] = Default::default();
    for _ in 0..ROUNDS {
        let b = cpu[0]
            .measure(
                async {
                    tokio::task::block_in_place(|| sign_run_counted(f, r.threads, r, &done[0]))
                },
                &done[0],
            )
            .await;
        measure::accumulate(&mut acc[0], b);
        let runs = [
            (&h1, "client secret", &secret),
            (&h1, "MI assertion", &assertion),
            (&h2, "client secret", &secret),
            (&h2, "MI assertion", &assertion),
        ];
        for (i, (client, what, form)) in runs.into_iter().enumerate() {
            let d = &done[i + 1];
            let run = cpu[i + 1]
                .measure(https_token_run(r, world, client, what, form, d.clone()), d)
                .await?;
            measure::accumulate(&mut acc[i + 1], run);
        }
    }
    let [
        Some(sign),
        Some(secret),
        Some(assertion),
        Some(secret_h2),
        Some(assertion_h2),
    ] = acc
    else {
        unreachable!("ROUNDS > 0")
    };
    Ok(OverHttps {
        sign,
        secret,
        assertion,
        secret_h2,
        assertion_h2,
        cpu,
    })
}

/// An HTTPS client: the lean HTTP/1.1 load generator, or reqwest speaking h2.
enum Client {
    Http1(Arc<h1_tls::Pool>),
    H2(reqwest::Client),
}

impl Client {
    /// The protocol, for the labels.
    fn what(&self) -> &'static str {
        match self {
            Client::Http1(_) => "HTTP/1.1",
            Client::H2(_) => "h2",
        }
    }

    /// POSTs `form` to `url` (whose path is `path`); fails with the answer unless it is 200.
    async fn post_form(&self, url: &str, path: &str, form: &str) -> anyhow::Result<()> {
        let (status, body) = match self {
            Client::Http1(pool) => {
                let (status, body) = pool.post_form(path, Bytes::from(form.to_owned())).await?;
                (status, String::from_utf8_lossy(&body).into_owned())
            }
            Client::H2(http) => {
                let r = http
                    .post(url)
                    .header(
                        http::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(form.to_owned())
                    .send()
                    .await?;
                (r.status(), r.text().await.unwrap_or_default())
            }
        };
        if status == http::StatusCode::OK {
            return Ok(());
        }
        bail!("token endpoint answered {status}: {body}")
    }
}

/// The administrator's client-credentials form (client secret).
fn secret_form(world: &World) -> anyhow::Result<String> {
    let b = &world.sb.bootstrap;
    Ok(serde_urlencoded::to_string([
        ("grant_type", "client_credentials"),
        ("client_id", b.admin_client_id.as_str()),
        ("client_secret", b.admin_client_secret.as_str()),
        ("scope", "https://management.azure.com/.default"),
    ])?)
}

/// A managed identity registered in the sandbox's Entra (through its directory API,
/// as ARM registers one), with an assertion for the sandbox's token endpoint.
async fn sandbox_identity(world: &World) -> anyhow::Result<Identity> {
    let sb = &world.sb;
    let aud = format!(
        "{}/{}/oauth2/v2.0/token",
        sb.entra_url, sb.bootstrap.tenant_id
    );
    let mut directory = sb.directory()?;
    identity(&aud, |certificate_der| async move {
        let principal = directory
            .create_service_principal(pb::CreateServicePrincipalRequest {
                request_id: "misim-bench-https".into(),
                display_name: "bench-mi-https".into(),
                r#type: pb::ServicePrincipalType::ManagedIdentity as i32,
                managed_identity_resource_id: format!(
                    "/subscriptions/{}/resourceGroups/bench/providers/Microsoft.ManagedIdentity/userAssignedIdentities/bench-https",
                    sb.bootstrap.subscription_id
                ),
                ..Default::default()
            })
            .await?
            .into_inner();
        directory
            .add_key_credential(pb::AddKeyCredentialRequest {
                object_id: principal.object_id,
                certificate_der,
            })
            .await?;
        Ok(principal.app_id)
    })
    .await
}

/// Runs benchmark 1; `world` provides the HTTPS endpoint of a running sandbox.
/// Returns target 3's rows.
pub(crate) async fn run(s: &Settings, world: &World) -> anyhow::Result<Vec<TargetRow>> {
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
    let h = over_https(&f, &r, world).await?;
    // The machine's limit, measured after the rest so that it does not share the CPU with them.
    let openssl = tokio::task::block_in_place(|| openssl_speed(s.threads));

    measure::report(
        "1a. Entra issuance in-process (Directory.IssueToken, assertion verified per call) vs raw signing, 1 thread",
        &m.sign1,
        &[&m.issue1],
    );
    measure::report(
        &format!(
            "1b. the same on all cores ({} threads); ring's raw signing for comparison",
            s.threads
        ),
        &m.sign_n,
        &[&m.issue_n, &m.ring_sign_n],
    );
    measure::report(
        "1c. client-assertion verification, which every IssueToken call pays, vs raw P-256 verify",
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
    report_https(s, &h);
    let vs_openssl = |r: &Run| match openssl {
        Some(o) => format!("{:.3}", r.rate() / o),
        None => "n/a".into(),
    };
    println!(
        "openssl speed -seconds 1 -multi {} rsa2048 (the machine's limit): {}; aws-lc-rs raw signing {}, \
         client secret {}, managed-identity assertion {} of it",
        s.threads,
        openssl.map_or("n/a (no openssl)".into(), |o| format!("{o:.1} signs/s")),
        vs_openssl(&h.sign),
        vs_openssl(&h.secret),
        vs_openssl(&h.assertion),
    );
    let row = |what: &str, subject: &Run| {
        let ratio = subject.rate() / h.sign.rate().max(1e-9);
        TargetRow {
            target: format!("3. Entra tokens over HTTPS, {what}: ≥0.8x raw sign"),
            measured: format!("{:.0}/s ({} openssl)", subject.rate(), vs_openssl(subject)),
            baseline: format!("aws-lc-rs sign {:.0}/s", h.sign.rate()),
            ratio,
            pass: subject.errors == 0 && ratio >= T3_RATIO,
        }
    };
    Ok(vec![
        row("client secret, HTTP/1.1", &h.secret),
        row("MI assertion, HTTP/1.1", &h.assertion),
    ])
}

/// Table 1d and the CPU time per token beside it.
fn report_https(s: &Settings, h: &OverHttps) {
    measure::report(
        &format!(
            "1d. Entra issuance over HTTPS (POST /{{tenant}}/oauth2/v2.0/token, {} in flight) vs raw signing on all cores",
            s.token_concurrency
        ),
        &h.sign,
        &[&h.secret, &h.assertion, &h.secret_h2, &h.assertion_h2],
    );
    let runs = [
        &h.sign,
        &h.secret,
        &h.assertion,
        &h.secret_h2,
        &h.assertion_h2,
    ];
    println!(
        "CPU time of this process per operation (clients, servers and kernel; warm-ups included):"
    );
    for (run, cost) in runs.iter().zip(&h.cpu) {
        println!(
            "  {:<52} {:>8.1} µs ({} ops), raw signing's share {:.3}",
            run.label,
            cost.us_per_op(),
            cost.ops,
            h.cpu[0].us_per_op() / cost.us_per_op()
        );
    }
    println!(
        "The target is read from the HTTP/1.1 rows ({} keep-alive connections, one request in flight \
         on each: how the Azure CLI and the Python SDKs call Entra); the h2 rows \
         multiplex the same requests over one connection.",
        s.token_concurrency
    );
}

/// RSA-2048 signatures per second of `openssl speed` on `threads` processes, or
/// `None` when there is no `openssl` (or its output is not understood).
fn openssl_speed(threads: usize) -> Option<f64> {
    let out = std::process::Command::new("openssl")
        .args([
            "speed",
            "-seconds",
            "1",
            "-multi",
            &threads.to_string(),
            "rsa2048",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_openssl_speed(&String::from_utf8_lossy(&out.stdout))
}

/// The sign/s column of `openssl speed`'s `rsa 2048 bits` line: the first
/// number after `bits` that is not a time (times end in `s`).
fn parse_openssl_speed(text: &str) -> Option<f64> {
    let line = text
        .lines()
        .find(|l| l.starts_with("rsa") && l.contains("2048 bits"))?;
    let (_, rest) = line.split_once("bits")?;
    rest.split_whitespace()
        .find(|t| !t.ends_with('s'))?
        .parse()
        .ok()
}

/// Splits a compact JWT into its signing input and decoded signature.
fn split_jwt(jwt: &str) -> (&str, Vec<u8>) {
    match jwt.rsplit_once('.') {
        Some((input, sig)) => (input, misim_token::b64_lenient(sig).unwrap_or_default()),
        None => (jwt, Vec::new()),
    }
}

/// POSTs `form` to the sandbox's v2 token endpoint, `token_concurrency` in flight.
async fn https_token_run(
    s: &Settings,
    world: &World,
    client: &Client,
    what: &str,
    form: &str,
    done: Arc<AtomicU64>,
) -> anyhow::Result<Run> {
    let sb = &world.sb;
    let path = format!("/{}/oauth2/v2.0/token", sb.bootstrap.tenant_id);
    let url = format!("{}{path}", sb.entra_url);
    client
        .post_form(&url, &path, form)
        .await
        .with_context(|| format!("the {what} probe"))?;
    let label = format!(
        "HTTPS token, {what}, {}, {} in flight",
        client.what(),
        s.token_concurrency
    );
    let (n, warmup, window) = (s.token_concurrency, s.warmup, s.window);
    let body = Bytes::from(form.to_owned());
    Ok(match client {
        Client::Http1(pool) => {
            let (pool, path) = (pool.clone(), Arc::new(path));
            measure::in_flight(label, n, warmup, window, move || {
                let (pool, path, body, done) =
                    (pool.clone(), path.clone(), body.clone(), done.clone());
                async move {
                    let ok = matches!(
                        pool.post_form(&path, body).await,
                        Ok((status, _)) if status == http::StatusCode::OK
                    );
                    done.fetch_add(u64::from(ok), Ordering::Relaxed);
                    ok
                }
            })
            .await
        }
        Client::H2(http) => {
            let http = http.clone();
            measure::in_flight(label, n, warmup, window, move || {
                let req = http
                    .post(&url)
                    .header(
                        http::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body.clone());
                let done = done.clone();
                async move {
                    let ok = match req.send().await {
                        Ok(r) => r.status() == reqwest::StatusCode::OK && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    done.fetch_add(u64::from(ok), Ordering::Relaxed);
                    ok
                }
            })
            .await
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sign_rate_of_openssl_speed() {
        let v30 = "version: 3.0.19\n                  sign    verify    sign/s verify/s\n\
                   rsa 2048 bits 0.001507s 0.000043s    663.6  23016.0\n";
        assert_eq!(parse_openssl_speed(v30), Some(663.6));
        assert_eq!(parse_openssl_speed("rsa 2048 bits 0.1s 0.2s\n"), None);
        assert_eq!(parse_openssl_speed("no such line"), None);
    }
}
