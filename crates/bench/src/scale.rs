//! Benchmark 4: scale (issue #11, target 5). One `misim up` process (the
//! real binary, a child of the bench, so its memory is its own) is filled
//! with `--scale-vms` VMs, each with a system-assigned identity, over ARM's
//! HTTPS API; then it is stopped and restarted on the same data directory.
//!
//! Measured, each next to a baseline from the same run:
//! - resident memory (`VmRSS`) with N VMs, against the same process with one VM;
//! - restart on the filled data directory until `misim.env` is written (it is
//!   written only once every service answers), against the fresh start;
//! - the IMDS cached-token rate and Entra's client-credentials token rate
//!   with N VMs after the restart, against the same rates with one VM, twice:
//!   right after the restart, and again once the process has settled (its own
//!   CPU use idle), so a restart's catch-up work (ARM's first scans of every
//!   record) is told apart from a per-request cost that grows with N.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::measure::{self, Run, fmt_latency};
use crate::targets::TargetRow;
use crate::{ROUNDS, Settings};

/// Target 5's goals.
const T5_VMS: usize = 100_000;
const T5_RSS_BYTES: u64 = 1 << 30;
const T5_RESTART: Duration = Duration::from_secs(3);
/// "Unchanged" rates: within this fraction of the one-VM rate (run-to-run
/// noise on a shared 2-core machine is about this size).
const T5_RATE_KEPT: f64 = 0.9;
/// How long a start may take before the bench gives up on it.
const START_DEADLINE: Duration = Duration::from_secs(120);
/// "Settled": the idle process uses less than this share of one core over a step
/// (its timers and the reconciler's 100 ms ticks use about 1%).
const SETTLED_CPU: f64 = 0.05;
const SETTLE_STEP: Duration = Duration::from_millis(500);
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);
const RG: &str = "misim-bench-scale";
const TOKEN_PATH: &str =
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net";

/// A running `misim up` child on a data directory.
struct Misim {
    child: Child,
    data_dir: PathBuf,
}

impl Misim {
    /// Starts `misim up` on `data_dir` and waits for its `misim.env`; returns
    /// the process and how long it took to be ready.
    async fn start(data_dir: &Path) -> anyhow::Result<(Misim, Duration)> {
        let env_file = data_dir.join("misim.env");
        // A previous run's file would look like readiness.
        let _ = std::fs::remove_file(&env_file);
        let bin = std::env::current_exe()?.with_file_name("misim");
        ensure!(
            bin.exists(),
            "{} not found: build it with `cargo build --release -p misim-sandbox` (scripts/bench.sh does)",
            bin.display()
        );
        let log = std::fs::File::create(data_dir.with_extension("log"))?;
        let t0 = Instant::now();
        let mut child = Command::new(&bin)
            .args(["up", "--random-ports", "--data-dir"])
            .arg(data_dir)
            // IMDS's per-VM rate limit would measure itself.
            .env("MISIM_IMDS_THROTTLE", "off")
            .env_remove("MISIM_SCENARIO")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        while !env_file.exists() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "misim up exited with {status} before it was ready (log: {})",
                    data_dir.with_extension("log").display()
                );
            }
            ensure!(
                t0.elapsed() < START_DEADLINE,
                "misim up not ready after {START_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ready = t0.elapsed();
        Ok((
            Misim {
                child,
                data_dir: data_dir.to_owned(),
            },
            ready,
        ))
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("misim up has exited")
    }

    /// CPU time the process has used (user and system), from `/proc/<pid>/stat`.
    fn cpu(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?))?;
        // The command name (field 2) may hold spaces: count fields after its ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| -> anyhow::Result<u64> {
            Ok(fields
                .get(i)
                .context("short /proc/<pid>/stat")?
                .parse::<u64>()?)
        };
        // utime and stime are fields 14 and 15; the kernel reports them in USER_HZ,
        // which is 100 on every Linux ABI.
        Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
    }

    /// Waits until the process's own CPU use, with no requests sent, is below
    /// [`SETTLED_CPU`] of one core over [`SETTLE_STEP`] (its background work after
    /// a start is done), or [`SETTLE_DEADLINE`] has passed; returns how long it waited.
    /// Measured on the process itself, so other load on the machine does not count.
    async fn settle(&self) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let mut before = self.cpu()?;
        while t0.elapsed() < SETTLE_DEADLINE {
            tokio::time::sleep(SETTLE_STEP).await;
            let now = self.cpu()?;
            if now.saturating_sub(before).as_secs_f64() < SETTLED_CPU * SETTLE_STEP.as_secs_f64() {
                return Ok(t0.elapsed());
            }
            before = now;
        }
        eprintln!("scale: misim up still busy after {SETTLE_DEADLINE:?}; measuring anyway");
        Ok(t0.elapsed())
    }

    /// Resident memory of the process, bytes.
    fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .context("no VmRSS in /proc/<pid>/status")?;
        Ok(kb * 1024)
    }

    /// Stops the process as the owner's Ctrl-C would (SIGTERM), and waits.
    async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.pid()?.to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().await?;
        ensure!(sent.success(), "kill -TERM {pid} failed");
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("misim up did not stop within 60 s of SIGTERM");
            }
        }
        Ok(())
    }

    /// The values of its `misim.env`.
    fn env(&self) -> anyhow::Result<Env> {
        let text = std::fs::read_to_string(self.data_dir.join("misim.env"))?;
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .map(str::to_owned)
                .with_context(|| format!("{key} missing from misim.env"))
        };
        Ok(Env {
            arm_url: get("MISIM_ARM_URL")?,
            entra_url: get("MISIM_ENTRA_URL")?,
            ca_bundle: get("MISIM_CA_BUNDLE")?,
            tenant_id: get("MISIM_TENANT_ID")?,
            subscription_id: get("MISIM_SUBSCRIPTION_ID")?,
            admin_client_id: get("MISIM_ADMIN_CLIENT_ID")?,
            admin_client_secret: get("MISIM_ADMIN_CLIENT_SECRET")?,
            imds_grpc_url: get("MISIM_IMDS_GRPC_URL")?,
        })
    }
}

/// What the bench reads from `misim.env`.
struct Env {
    arm_url: String,
    entra_url: String,
    ca_bundle: String,
    tenant_id: String,
    subscription_id: String,
    admin_client_id: String,
    admin_client_secret: String,
    imds_grpc_url: String,
}

/// Clients of one running `misim up`.
#[derive(Clone)]
struct Clients {
    https: reqwest::Client,
    imds: reqwest::Client,
    env: Arc<Env>,
    arm_token: Arc<str>,
    data_dir: PathBuf,
}

impl Clients {
    async fn new(m: &Misim, pool: usize) -> anyhow::Result<Clients> {
        let env = m.env()?;
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&env.ca_bundle)?)?;
        let https = reqwest::Client::builder()
            .add_root_certificate(ca)
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(pool)
            .timeout(Duration::from_secs(60))
            .build()?;
        let imds = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(pool)
            .build()?;
        let mut c = Clients {
            https,
            imds,
            env: Arc::new(env),
            arm_token: "".into(),
            data_dir: m.data_dir.clone(),
        };
        c.arm_token = c
            .client_credentials("https://management.azure.com/.default")
            .await?
            .into();
        Ok(c)
    }

    /// An admin token through Entra's HTTPS token endpoint.
    async fn client_credentials(&self, scope: &str) -> anyhow::Result<String> {
        let e = &self.env;
        let admin = crate::Secret {
            tenant_id: &e.tenant_id,
            client_id: &e.admin_client_id,
            client_secret: &e.admin_client_secret,
        };
        crate::client_credentials(&self.https, &e.entra_url, admin, scope).await
    }

    fn vm_id(&self, n: usize) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/scale-vm-{n}",
            self.env.subscription_id
        )
    }

    /// The resource group every VM of the run is in.
    fn rg_path(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{RG}",
            self.env.subscription_id
        )
    }

    async fn put(&self, path: &str, body: &Value) -> anyhow::Result<()> {
        let r = self
            .https
            .put(format!("{}{path}?api-version=2024-11-01", self.env.arm_url))
            .bearer_auth(&*self.arm_token)
            .json(body)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        ensure!(status.is_success(), "PUT {path}: {status} {text}");
        Ok(())
    }

    async fn put_vm(&self, n: usize) -> anyhow::Result<()> {
        let name = format!("scale-vm-{n}");
        let body = json!({"location": "eastus", "identity": {"type": "SystemAssigned"}, "properties": {
            "hardwareProfile": {"vmSize": "Standard_B1s"},
            "osProfile": {"computerName": name, "adminUsername": "azureuser"}}});
        self.put(&self.vm_id(n), &body).await
    }

    /// The VM's IMDS token URL, from IMDS's control API (as `misim vm exec` finds it).
    async fn imds_token_url(&self, n: usize) -> anyhow::Result<String> {
        let channel = misim_sandbox::cli::admin_channel(&self.data_dir, &self.env.imds_grpc_url)?;
        let vm = misim_proto::imds::v1::control_client::ControlClient::new(channel)
            .get_vm(misim_proto::imds::v1::GetVmRequest {
                resource_id: self.vm_id(n),
            })
            .await
            .context("asking IMDS for the VM")?
            .into_inner();
        Ok(format!("{}{TOKEN_PATH}", vm.imds_endpoint))
    }

    /// One IMDS token; true on 200.
    async fn imds_token(&self, url: &str) -> bool {
        match self.imds.get(url).header("Metadata", "true").send().await {
            Ok(r) => r.status() == reqwest::StatusCode::OK && r.bytes().await.is_ok(),
            Err(_) => false,
        }
    }
}

/// Creates VMs `from..to` with `concurrency` PUTs in flight; returns the run.
async fn fill(c: &Clients, from: usize, to: usize, concurrency: usize) -> anyhow::Result<Run> {
    let next = Arc::new(AtomicU64::new(from as u64));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (c, next) = (c.clone(), next.clone());
        tasks.spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                if n >= to {
                    break;
                }
                if n > from && (n - from).is_multiple_of(10_000) {
                    eprintln!("scale: {} VMs created", n - from);
                }
                let t = Instant::now();
                match c.put_vm(n).await {
                    Ok(()) => lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32),
                    Err(e) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("scale: VM {n}: {e:#}");
                        }
                    }
                }
            }
            (lat, errors)
        });
    }
    let (mut latencies_us, mut errors) = (Vec::new(), 0);
    while let Some(r) = tasks.join_next().await {
        let (l, e) = r?;
        latencies_us.extend(l);
        errors += e;
    }
    latencies_us.sort_unstable();
    Ok(Run {
        label: format!("VM PUT SystemAssigned, {concurrency} in flight, filling"),
        ops: latencies_us.len() as u64,
        errors,
        elapsed: t0.elapsed(),
        latencies_us,
    })
}

/// One process measured by [`paired_rates`]: its IMDS token URL (cache warm) and a label.
struct Measured1<'a> {
    m: &'a Misim,
    c: &'a Clients,
    url: String,
    tag: String,
}

impl<'a> Measured1<'a> {
    /// Warms IMDS's cache for VM `vm` of `m` (the first request for an identity goes to Entra).
    async fn warm(m: &'a Misim, c: &'a Clients, vm: usize, tag: String) -> anyhow::Result<Self> {
        let url = c.imds_token_url(vm).await?;
        let warm = Instant::now();
        while !c.imds_token(&url).await {
            ensure!(
                warm.elapsed() < Duration::from_secs(30),
                "no IMDS token from {url}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Self { m, c, url, tag })
    }
}

/// What [`paired_rates`] accumulates for one process.
#[derive(Default)]
struct Acc {
    imds: Option<Run>,
    entra: Option<Run>,
    imds_cpu: Duration,
    entra_cpu: Duration,
}

impl Acc {
    /// One round: the IMDS cached-token rate, then Entra's token rate, with the CPU time the
    /// process used during each.
    async fn round(&mut self, t: &Measured1<'_>, s: &Settings) -> anyhow::Result<()> {
        let r = s.round();
        let cpu0 = t.m.cpu()?;
        let (cc, u) = (t.c.clone(), t.url.clone());
        let i = measure::in_flight(
            format!(
                "IMDS GET token (cache hit), {} conns, {}",
                s.concurrency, t.tag
            ),
            s.concurrency,
            r.warmup,
            r.window,
            move || {
                let (cc, u) = (cc.clone(), u.clone());
                async move { cc.imds_token(&u).await }
            },
        )
        .await;
        measure::accumulate(&mut self.imds, i);
        let cpu1 = t.m.cpu()?;
        self.imds_cpu += cpu1.saturating_sub(cpu0);
        let cc = t.c.clone();
        let e = measure::in_flight(
            format!(
                "Entra client credentials, {} in flight, {}",
                s.token_concurrency, t.tag
            ),
            s.token_concurrency,
            r.warmup,
            r.window,
            move || {
                let cc = cc.clone();
                async move {
                    cc.client_credentials("https://vault.azure.net/.default")
                        .await
                        .is_ok()
                }
            },
        )
        .await;
        measure::accumulate(&mut self.entra, e);
        self.entra_cpu += t.m.cpu()?.saturating_sub(cpu1);
        Ok(())
    }

    fn rates(self, s: &Settings) -> Rates {
        // The CPU time covers the warm-ups too, which the runs do not count:
        // spread it over the requests of window and warm-up alike.
        let per = |cpu: Duration, run: &Run| {
            let requests = run.rate() * (s.window + s.warmup).as_secs_f64();
            Duration::from_secs_f64(cpu.as_secs_f64() / requests.max(1.0))
        };
        match (self.imds, self.entra) {
            (Some(imds), Some(entra)) => Rates {
                imds_cpu: per(self.imds_cpu, &imds),
                entra_cpu: per(self.entra_cpu, &entra),
                imds,
                entra,
            },
            _ => unreachable!("ROUNDS > 0"),
        }
    }
}

/// Both token rates of `subject` (N VMs) and of `one` (a process with one VM), in
/// alternating rounds: this machine's speed moves by half within minutes, so a baseline
/// measured before a fill of several minutes is no baseline for the rates after it.
async fn paired_rates(
    subject: &Measured1<'_>,
    one: &Measured1<'_>,
    s: &Settings,
) -> anyhow::Result<(Rates, Rates)> {
    let (mut a, mut b) = (Acc::default(), Acc::default());
    for _ in 0..ROUNDS {
        a.round(subject, s).await?;
        b.round(one, s).await?;
    }
    Ok((a.rates(s), b.rates(s)))
}

/// One interleaved measurement of both token rates.
struct Rates {
    imds: Run,
    entra: Run,
    /// The `misim up` process's CPU time (user and system, every thread) per
    /// request: unlike the rates, not shared with the client or with other load
    /// on the machine, so a per-request cost that grows with N shows here.
    imds_cpu: Duration,
    entra_cpu: Duration,
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / f64::from(1 << 20))
}

/// A rate with N VMs that should be the rate with one VM; only judged at full scale.
fn kept_row(target: String, at_n: &Run, at_one: &Run, full: bool) -> TargetRow {
    let ratio = at_n.rate() / at_one.rate().max(1e-9);
    TargetRow {
        target,
        measured: format!(
            "{:.0}/s, p99 {}",
            at_n.rate(),
            fmt_latency(at_n.quantile(0.99))
        ),
        baseline: format!("1 VM: {:.0}/s", at_one.rate()),
        ratio,
        pass: full && at_n.errors == 0 && ratio >= T5_RATE_KEPT,
    }
}

/// Runs benchmark 4 with `vms` VMs; returns its target rows. With `reuse`, the
/// restart is on that directory (filled earlier with `vms` VMs) instead of one
/// filled now.
pub(crate) async fn run(
    s: &Settings,
    vms: usize,
    keep: bool,
    reuse: Option<&Path>,
) -> anyhow::Result<Vec<TargetRow>> {
    ensure!(vms >= 2, "--scale-vms must be at least 2");
    let mut dir = tempfile::tempdir()?;
    if keep && reuse.is_none() {
        dir.disable_cleanup(true);
        println!(
            "scale: data directory {} is kept",
            dir.path().join("data").display()
        );
    }
    let base_dir = dir.path().join("data");
    let data_dir = reuse.map_or_else(|| base_dir.clone(), Path::to_owned);
    let pool = s
        .concurrency
        .max(s.provision_concurrency)
        .max(s.token_concurrency);

    let (misim, fresh) = Misim::start(&base_dir).await?;
    let c = Clients::new(&misim, pool).await?;
    c.put(&c.rg_path(), &json!({"location": "eastus"})).await?;
    c.put_vm(0).await?;
    let rss_one = misim.rss()?;

    let (filled, rss_n) = if reuse.is_none() {
        let filled = fill(&c, 1, vms, s.provision_concurrency).await?;
        ensure!(
            filled.errors == 0,
            "{} VM PUTs failed while filling",
            filled.errors
        );
        (Some(filled), Some(misim.rss()?))
    } else {
        (None, None)
    };
    misim.stop().await?;

    // The baseline: another `misim up` with one VM, settled before the restart
    // so that the restarted process is measured from its first seconds.
    let (one, _) = Misim::start(&dir.path().join("one")).await?;
    let one_c = Clients::new(&one, pool).await?;
    one_c
        .put(&one_c.rg_path(), &json!({"location": "eastus"}))
        .await?;
    one_c.put_vm(0).await?;
    one.settle().await?;
    let one_t = Measured1::warm(&one, &one_c, 0, "1 VM".into()).await?;

    let (misim, restart) = Misim::start(&data_dir).await?;
    eprintln!("scale: restarted misim up has pid {}", misim.pid()?);
    let rss_restarted = misim.rss()?;
    let c = Clients::new(&misim, pool).await?;
    let n_t = Measured1::warm(&misim, &c, vms - 1, format!("{vms} VMs, restarted")).await?;
    let (restarted, one_restarted) = paired_rates(&n_t, &one_t, s)
        .await
        .context("rates after the restart")?;
    let settle = misim.settle().await?;
    let rss_settled = misim.rss()?;
    let n_t = Measured1 {
        tag: format!("{vms} VMs, settled"),
        ..n_t
    };
    let (settled, one_settled) = paired_rates(&n_t, &one_t, s)
        .await
        .context("rates once settled")?;
    // The first VM's endpoint still serves it after the restart.
    ensure!(
        c.imds_token(&c.imds_token_url(0).await?).await,
        "VM 0 has no token after the restart"
    );
    misim.stop().await?;
    one.stop().await?;

    Ok(Measured {
        vms,
        filled,
        one_restarted,
        restarted,
        one_settled,
        settled,
        fresh,
        restart,
        settle,
        rss_one,
        rss_n,
        rss_restarted,
        rss_settled,
    }
    .report())
}

/// What one scale run measured.
struct Measured {
    vms: usize,
    /// None when the run restarted on a directory filled earlier.
    filled: Option<Run>,
    /// N VMs, right after the restart, and one VM in the same minutes.
    restarted: Rates,
    one_restarted: Rates,
    /// N VMs, once the restarted process settled, and one VM in the same minutes.
    settled: Rates,
    one_settled: Rates,
    fresh: Duration,
    restart: Duration,
    /// How long the process took to settle after the first windows.
    settle: Duration,
    rss_one: u64,
    /// None when the run restarted on a directory filled earlier.
    rss_n: Option<u64>,
    rss_restarted: u64,
    rss_settled: u64,
}

impl Measured {
    /// Tables 4b and 4c: each rate with N VMs beside the one-VM process's in the same rounds.
    fn print_rates(&self) {
        let tables = [
            (
                "4b. IMDS cached token: N VMs right after a restart vs 1 VM (another misim up), alternating",
                &self.one_restarted.imds,
                &self.restarted.imds,
            ),
            (
                "4b'. the same once the restarted process settled",
                &self.one_settled.imds,
                &self.settled.imds,
            ),
            (
                "4c. Entra client-credentials tokens: N VMs right after a restart vs 1 VM, alternating",
                &self.one_restarted.entra,
                &self.restarted.entra,
            ),
            (
                "4c'. the same once the restarted process settled",
                &self.one_settled.entra,
                &self.settled.entra,
            ),
        ];
        for (title, one, n) in tables {
            measure::report(title, one, &[n]);
        }
    }

    /// Prints the runs and returns the target rows.
    fn report(&self) -> Vec<TargetRow> {
        let vms = self.vms;
        if let Some(filled) = &self.filled {
            measure::report(
                &format!("4a. filling one misim up with {vms} VMs (SystemAssigned) over HTTPS"),
                filled,
                &[],
            );
        }
        self.print_rates();
        let filled_rss = self
            .rss_n
            .map_or_else(|| "not filled in this run".to_owned(), mib);
        println!();
        println!(
            "## 4d. misim up: fresh start to ready {} ms; restart with {vms} VMs to ready {} ms, settled {} ms after the first windows; RSS {} (1 VM), {filled_rss} ({vms} VMs), {} (restarted), {} (settled)",
            self.fresh.as_millis(),
            self.restart.as_millis(),
            self.settle.as_millis(),
            mib(self.rss_one),
            mib(self.rss_restarted),
            mib(self.rss_settled)
        );

        let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
        println!(
            "## 4e. misim up CPU per request (every thread), N VMs vs 1 VM beside it: IMDS {} vs {} (restarted), {} vs {} (settled); Entra {} vs {} (restarted), {} vs {} (settled)",
            us(self.restarted.imds_cpu),
            us(self.one_restarted.imds_cpu),
            us(self.settled.imds_cpu),
            us(self.one_settled.imds_cpu),
            us(self.restarted.entra_cpu),
            us(self.one_restarted.entra_cpu),
            us(self.settled.entra_cpu),
            us(self.one_settled.entra_cpu),
        );

        let full = vms >= T5_VMS;
        // Below 100,000 VMs the rows are shown but not judged (pass is false).
        let at = |goal: &str| {
            let judged = if full { "" } else { " (judged at 100k)" };
            format!("5. {vms} VMs{judged}: {goal}")
        };
        let peak = self
            .rss_n
            .unwrap_or(0)
            .max(self.rss_restarted)
            .max(self.rss_settled);
        vec![
            TargetRow {
                target: at("RSS < 1 GiB"),
                measured: format!(
                    "{filled_rss} (restarted {}, settled {})",
                    mib(self.rss_restarted),
                    mib(self.rss_settled)
                ),
                baseline: format!("1 VM: {}", mib(self.rss_one)),
                ratio: self.rss_one as f64 / peak.max(1) as f64,
                pass: full && peak < T5_RSS_BYTES,
            },
            TargetRow {
                target: at("restart to ready < 3 s"),
                measured: format!("{} ms", self.restart.as_millis()),
                baseline: format!("fresh start {} ms", self.fresh.as_millis()),
                ratio: self.fresh.as_secs_f64() / self.restart.as_secs_f64().max(1e-9),
                pass: full && self.restart < T5_RESTART,
            },
            kept_row(
                at("IMDS cached token rate unchanged, restarted"),
                &self.restarted.imds,
                &self.one_restarted.imds,
                full,
            ),
            kept_row(
                at("IMDS cached token rate unchanged, settled"),
                &self.settled.imds,
                &self.one_settled.imds,
                full,
            ),
            kept_row(
                at("Entra token rate unchanged, restarted"),
                &self.restarted.entra,
                &self.one_restarted.entra,
                full,
            ),
            kept_row(
                at("Entra token rate unchanged, settled"),
                &self.settled.entra,
                &self.one_settled.entra,
                full,
            ),
        ]
    }
}
