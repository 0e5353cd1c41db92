//! `misim-bench`: throughput of misim's hot paths as ratios to baselines
//! measured in the same run (absolute rates depend on the machine; ratios
//! much less so).
//!
//! 1. Entra token issuance (in-process `Directory.IssueToken` and the HTTPS
//!    token endpoint) against raw RSA-2048 signing with a pre-parsed key.
//! 2. The IMDS token endpoint (cache hits) against a bare hyper server that
//!    returns the same bytes.
//! 3. Provisioning over HTTPS (issue #11 targets 1 and 2): VM and
//!    user-assigned identity PUTs against resource-group PUTs, and a VM PUT's
//!    acknowledgement to its first IMDS token.
//! 4. Start-up (issue #11 target 6): a fresh data directory until `misim.env`
//!    is written, against a restart on that directory.
//! 5. Scale (issue #11, target 5): one `misim up` child process filled with
//!    `--scale-vms` VMs: its memory, its restart time, and its token rates
//!    against the same process with one VM.
//!
//! Every server listens on loopback (IMDS at each VM's own 127.64.x.y) and every request goes there.

mod entra;
mod h1_tls;
mod imds;
mod measure;
mod provision;
mod scale;
mod startup;
mod targets;

use std::time::Duration;

/// The allocator the `misim` binary runs with, so in-process rows measure the same code.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    /// Every benchmark.
    All,
    /// 1: Entra token issuance vs raw RSA signing.
    Entra,
    /// 2: IMDS hot path vs a bare hyper server.
    Imds,
    /// 3: VM / user-assigned identity PUTs vs resource-group PUTs, and a PUT to its first token.
    Provision,
    /// 4: fresh start-up vs a restart.
    Startup,
    /// 5: one `misim up` with `--scale-vms` VMs: memory, restart, token rates.
    Scale,
}

/// misim benchmarks, reported as subject/baseline ratios.
#[derive(Debug, Parser)]
#[command(name = "misim-bench")]
struct Args {
    /// Short windows (0.3 s): checks that the benchmarks still run (CI).
    #[arg(long)]
    quick: bool,
    /// Length of each measurement window, seconds (default 3, or 0.3 with --quick).
    #[arg(long)]
    duration_secs: Option<f64>,
    /// HTTP/1.1 connections (one request in flight each) for the IMDS benchmark.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Requests in flight against the HTTPS token endpoint.
    #[arg(long, default_value_t = 16)]
    token_concurrency: usize,
    /// PUTs in flight in the provisioning benchmark.
    #[arg(long, default_value_t = 64)]
    provision_concurrency: usize,
    /// VMs in the scale benchmark (default 100000, or 200 with --quick).
    #[arg(long)]
    scale_vms: Option<usize>,
    /// Keep the scale benchmark's filled data directory (its path is printed), to profile a
    /// restart on it: `misim up --data-dir <path>`.
    #[arg(long)]
    scale_keep_data_dir: bool,
    /// Restart on this data directory, filled by an earlier `--scale-keep-data-dir` run with the
    /// same `--scale-vms`, instead of filling a new one (the 1-VM baseline is still measured in a
    /// fresh directory). The directory is used in place: restarts change its files.
    #[arg(long)]
    scale_data_dir: Option<std::path::PathBuf>,
    /// Threads for the "all cores" runs (default: available parallelism).
    #[arg(long)]
    threads: Option<usize>,
    /// Which benchmark to run.
    #[arg(long, value_enum, default_value_t = Which::All)]
    bench: Which,
}

/// Measurement settings shared by the benchmarks.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Length of each measured window.
    pub window: Duration,
    /// Unmeasured run before each window (connections, caches).
    pub warmup: Duration,
    /// IMDS connections.
    pub concurrency: usize,
    /// Token endpoint requests in flight.
    pub token_concurrency: usize,
    /// Threads for the all-cores runs.
    pub threads: usize,
    /// PUTs in flight in the provisioning benchmark.
    pub provision_concurrency: usize,
}

/// Baseline and subject alternate in this many rounds (each a share of the
/// window), so a change in machine load hits both sides alike.
pub const ROUNDS: u32 = 3;

impl Settings {
    /// The settings of one of [`ROUNDS`] interleaved rounds.
    pub fn round(&self) -> Settings {
        Settings {
            window: self.window / ROUNDS,
            warmup: self.warmup / ROUNDS,
            ..self.clone()
        }
    }
}

/// A running sandbox and an HTTPS client that trusts its CA.
pub struct World {
    /// The sandbox.
    pub sb: misim_sandbox::Sandbox,
    /// HTTPS client (sandbox CA, no proxy).
    pub https: reqwest::Client,
    admin_arm: String,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(pool: usize) -> anyhow::Result<World> {
        let dir = tempfile::tempdir()?;
        let mut config = misim_sandbox::SandboxConfig::new(dir.path());
        // The benchmark measures IMDS's own speed, far above Azure's 20
        // requests per second per VM: the rate limit would measure itself.
        config.imds_throttle = misim_chaos::ThrottleConfig::OFF;
        let sb = misim_sandbox::Sandbox::start(config)
            .await
            .context("starting the sandbox")?;
        let ca = reqwest::Certificate::from_pem(sb.ca_pem.as_bytes())?;
        let https = reqwest::Client::builder()
            .add_root_certificate(ca)
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(pool)
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut w = World {
            sb,
            https,
            admin_arm: String::new(),
            _dir: dir,
        };
        w.admin_arm = w
            .admin_token("https://management.azure.com/.default")
            .await?;
        Ok(w)
    }

    async fn admin_token(&self, scope: &str) -> anyhow::Result<String> {
        let b = &self.sb.bootstrap;
        let admin = Secret {
            tenant_id: &b.tenant_id,
            client_id: &b.admin_client_id,
            client_secret: &b.admin_client_secret,
        };
        client_credentials(&self.https, &self.sb.entra_url, admin, scope).await
    }

    /// `PUT {arm}{path}` as the administrator; fails unless 200/201.
    pub async fn arm_put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}?api-version=2024-11-01", self.sb.arm_url);
        let r = self
            .https
            .put(url)
            .bearer_auth(&self.admin_arm)
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        if !status.is_success() {
            bail!("PUT {path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// An application's client secret, as the token endpoint takes it.
#[derive(Clone, Copy)]
pub(crate) struct Secret<'a> {
    pub tenant_id: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
}

/// A client-credentials token for `scope` from Entra's HTTPS token endpoint at `entra_url`.
pub(crate) async fn client_credentials(
    https: &reqwest::Client,
    entra_url: &str,
    app: Secret<'_>,
    scope: &str,
) -> anyhow::Result<String> {
    let r = https
        .post(format!("{entra_url}/{}/oauth2/v2.0/token", app.tenant_id))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", app.client_id),
            ("client_secret", app.client_secret),
            ("scope", scope),
        ])
        .send()
        .await?;
    let status = r.status();
    let v: Value = r.json().await?;
    match v["access_token"].as_str() {
        Some(t) if status.is_success() => Ok(t.to_owned()),
        _ => bail!("token for {scope}: {status} {v}"),
    }
}

/// The run's settings from the command line (validated), announced on stdout.
fn settings(args: &Args) -> anyhow::Result<Settings> {
    let window = match (args.duration_secs, args.quick) {
        (Some(d), _) if d.is_finite() && d > 0.0 => Duration::from_secs_f64(d),
        (Some(d), _) => bail!("--duration-secs must be positive, got {d}"),
        (None, true) => Duration::from_millis(300),
        (None, false) => Duration::from_secs(3),
    };
    if args.concurrency == 0
        || args.token_concurrency == 0
        || args.provision_concurrency == 0
        || args.threads == Some(0)
    {
        bail!("concurrency and threads must be at least 1");
    }
    let settings = Settings {
        window,
        warmup: (window / 5).min(Duration::from_millis(500)),
        concurrency: args.concurrency,
        token_concurrency: args.token_concurrency,
        threads: args.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }),
        provision_concurrency: args.provision_concurrency,
    };
    println!(
        "misim-bench: window {:.2} s (+{:.2} s warm-up) per measurement, {} threads for all-core runs, \
         IMDS {} connections, token endpoint {} in flight{}",
        settings.window.as_secs_f64(),
        settings.warmup.as_secs_f64(),
        settings.threads,
        settings.concurrency,
        settings.token_concurrency,
        if cfg!(debug_assertions) {
            " (DEBUG BUILD: use --release, e.g. scripts/bench.sh)"
        } else {
            ""
        }
    );
    println!(
        "Ratios compare a subject with a baseline measured in this process, alternating in {ROUNDS} rounds; clients and servers share the machine."
    );
    Ok(settings)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Quiet unless asked: logging on the hot paths would be measured too.
    if std::env::var_os("RUST_LOG").is_some() {
        misim_runtime::telemetry::init();
    }
    let settings = settings(&args)?;

    let pool = settings
        .token_concurrency
        .max(settings.concurrency)
        .max(settings.provision_concurrency);
    let world = World::start(pool).await?;
    let result = async {
        let mut rows = Vec::new();
        // First, while the world's sandbox is still idle and small.
        if matches!(args.bench, Which::All | Which::Startup) {
            rows.push(
                startup::run(&settings, args.quick)
                    .await
                    .context("benchmark 4 (start-up)")?,
            );
        }
        if matches!(args.bench, Which::All | Which::Entra) {
            rows.extend(
                entra::run(&settings, &world)
                    .await
                    .context("benchmark 1 (Entra)")?,
            );
        }
        if matches!(args.bench, Which::All | Which::Imds) {
            rows.extend(
                imds::run(&settings, &world)
                    .await
                    .context("benchmark 2 (IMDS)")?,
            );
        }
        if matches!(args.bench, Which::All | Which::Provision) {
            rows.extend(
                provision::run(&settings, &world)
                    .await
                    .context("benchmark 3 (provisioning)")?,
            );
        }
        if matches!(args.bench, Which::All | Which::Scale) {
            let vms = args
                .scale_vms
                .unwrap_or(if args.quick { 200 } else { 100_000 });
            rows.extend(
                scale::run(
                    &settings,
                    vms,
                    args.scale_keep_data_dir,
                    args.scale_data_dir.as_deref(),
                )
                .await
                .context("benchmark 5 (scale)")?,
            );
        }
        targets::print(&rows);
        anyhow::Ok(())
    }
    .await;
    let World { sb, _dir, .. } = world;
    sb.shutdown().await?;
    result
}
