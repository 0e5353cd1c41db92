//! `misim-crash`: the crash test driver (scripts/crash-test.sh), a package of its own so no
//! shipped package carries it.
//!
//! Runs misim-entra, misim-arm and misim-imds as separate processes on one data
//! directory, drives a random mix of create/assign/remove/delete operations
//! through ARM's public API from concurrent workers (each in its own resource
//! group, one request at a time) while SIGKILLing one service at random points
//! and restarting it, then checks: zero drift from ARM's doctor, every
//! acknowledged operation's effect present (per worker), every identity that
//! exists has exactly one service principal with one key credential, none
//! that was deleted still has one. Then every process restarts 46 days later
//! (the clock offset they read at start) and ARM, killed while it renews, must
//! renew every identity's certificate: zero drift again, and two key
//! credentials (old and new, both still valid) per principal.
//!
//! Environment: `MISIM_CRASH_KILLS` (default 30), `MISIM_CRASH_SEED`,
//! `MISIM_CRASH_BIN_DIR` (default: this executable's directory),
//! `MISIM_CRASH_TIMEOUT_SECS` (default 900).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use misim_sandbox::Bootstrap;
use misim_types::Clock;
use serde_json::{Value, json};

const SERVICES: [&str; 3] = ["entra", "arm", "imds"];
/// Concurrent workers, each in its own resource group.
const WORKERS: usize = 3;
/// VMs per worker.
const VMS: usize = 4;
/// User-assigned identities per worker.
const UAMIS: usize = 3;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Procs {
    bin_dir: PathBuf,
    data: PathBuf,
    env: Vec<(String, String)>,
    children: BTreeMap<&'static str, Child>,
    grpc_ports: BTreeMap<&'static str, u16>,
}

impl Procs {
    fn spawn(&mut self, svc: &'static str) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.join(format!("{svc}.log")))?;
        let child = Command::new(self.bin_dir.join(format!("misim-{svc}")))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting misim-{svc}"))?;
        self.children.insert(svc, child);
        Ok(())
    }

    async fn wait_ready(&self, svc: &str) -> anyhow::Result<()> {
        let port = self.grpc_ports[svc];
        for _ in 0..600 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("misim-{svc} did not come up (see {}.log)", svc)
    }

    fn kill(&mut self, svc: &str) -> anyhow::Result<()> {
        if let Some(mut c) = self.children.remove(svc) {
            c.kill()?; // SIGKILL
            c.wait()?;
        }
        Ok(())
    }
}

impl Procs {
    /// Kills and reaps every service.
    fn stop_all(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.children) {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// What the driver knows a resource's state to be.
#[derive(Debug, Clone, PartialEq)]
enum Known<T> {
    Certain(Option<T>),
    Uncertain,
}

#[derive(Debug, Clone, PartialEq)]
struct VmState {
    sami: bool,
    uamis: BTreeSet<usize>,
}

#[derive(Default, Debug)]
struct Counts {
    sent: u64,
    acked: u64,
    rejected: u64,
    unreachable: u64,
    uncertain: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.acked += o.acked;
        self.rejected += o.rejected;
        self.unreachable += o.unreachable;
        self.uncertain += o.uncertain;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let kills: u32 = std::env::var("MISIM_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let budget = Duration::from_secs(
        std::env::var("MISIM_CRASH_TIMEOUT_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(900),
    );
    let seed: u64 = std::env::var("MISIM_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            misim_types::SystemClock
                .now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        | 1;
    let bin_dir = match std::env::var("MISIM_CRASH_BIN_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .to_path_buf(),
    };
    let tmp = std::env::temp_dir().join(format!("misim-crash-{seed}"));
    std::fs::create_dir_all(&tmp)?;
    println!(
        "crash test: seed={seed} kills={kills} data={}",
        tmp.display()
    );
    let started = tokio::time::Instant::now();
    let result = run(&tmp, &bin_dir, kills, seed, budget).await;
    println!("crash test: {:.1}s", started.elapsed().as_secs_f64());
    match &result {
        Ok(()) => {
            std::fs::remove_dir_all(&tmp).ok();
            println!("crash test: PASS");
        }
        Err(e) => println!("crash test: FAIL: {e:#} (logs in {})", tmp.display()),
    }
    result
}

/// The services' addresses, as the driver calls them.
struct Endpoints {
    entra_url: String,
    arm_url: String,
    arm_grpc: String,
    entra_grpc: String,
}

async fn run(
    data: &Path,
    bin_dir: &Path,
    kills: u32,
    seed: u64,
    budget: Duration,
) -> anyhow::Result<()> {
    misim_store::private_dir(data)?;
    // One key for every service process (they share the data directory) and this driver.
    let control = misim_proto::auth::ControlKey::load_or_create(
        &data.join(misim_proto::auth::CONTROL_KEY_FILE),
    )?;
    let b = Bootstrap::load_or_create(data, &misim_types::RandomIds)?;
    let tls =
        misim_runtime::tls::load_or_create(&data.join("tls"), &[], misim_types::SystemClock.now())?;
    let (mut procs, at) = configure(data, bin_dir, &b)?;
    for s in SERVICES {
        procs.spawn(s)?;
    }
    for s in SERVICES {
        procs.wait_ready(s).await?;
    }
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(tls.ca_pem.as_bytes())?)
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()?;
    let token = admin_token(&http, &at.entra_url, &b).await?;
    let api = Arc::new(Api {
        http,
        arm_url: at.arm_url.clone(),
        token,
        sub: b.subscription_id.clone(),
    });

    // The workers' resource groups, before anything is killed.
    let mut workers = Vec::new();
    for n in 0..WORKERS {
        let w = Worker::new(n, seed);
        w.create_rg(&api).await?;
        workers.push(w);
    }

    let procs = Arc::new(tokio::sync::Mutex::new(procs));
    let kill_counts = Arc::new(Mutex::new(BTreeMap::<&str, u32>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let killer = spawn_killer(
        procs.clone(),
        kill_counts.clone(),
        done.clone(),
        kills,
        seed,
    );

    // The workload: concurrent workers, each alone in its resource group.
    let deadline = tokio::time::Instant::now() + budget;
    let running: Vec<_> = workers
        .into_iter()
        .map(|w| tokio::spawn(w.run(api.clone(), done.clone(), deadline)))
        .collect();
    let mut finished = Vec::new();
    for w in running {
        finished.push(w.await??);
    }
    killer.await??;
    let kc = kill_counts.lock().expect("counts").clone();
    print_workload(&kc, &finished);

    converge(&at.arm_grpc, &control, deadline).await?;
    verify_effects(&api, &at.entra_grpc, &control, &finished).await?;
    renew_through_kills(data, &procs, &at, &control, seed, deadline).await?;
    let total: u32 = kc.values().sum();
    if total < kills {
        bail!("only {total} kills");
    }
    procs.lock().await.stop_all();
    Ok(())
}

/// Picks the services' ports and the environment every service process starts with.
fn configure(data: &Path, bin_dir: &Path, b: &Bootstrap) -> anyhow::Result<(Procs, Endpoints)> {
    let (eh, eg, ah, ag, ig) = (
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
    );
    let at = Endpoints {
        entra_url: format!("https://localhost:{eh}"),
        arm_url: format!("https://localhost:{ah}"),
        arm_grpc: format!("http://127.0.0.1:{ag}"),
        entra_grpc: format!("http://127.0.0.1:{eg}"),
    };
    let env: Vec<(String, String)> = [
        ("MISIM_DATA_DIR", data.display().to_string()),
        ("MISIM_TENANT_ID", b.tenant_id.clone()),
        ("MISIM_SUBSCRIPTION_ID", b.subscription_id.clone()),
        ("MISIM_ENTRA_HTTP_ADDR", format!("127.0.0.1:{eh}")),
        ("MISIM_ENTRA_GRPC_ADDR", format!("127.0.0.1:{eg}")),
        ("MISIM_ENTRA_PUBLIC_URL", at.entra_url.clone()),
        ("MISIM_ENTRA_GRPC_URL", at.entra_grpc.clone()),
        ("MISIM_ARM_HTTP_ADDR", format!("127.0.0.1:{ah}")),
        ("MISIM_ARM_GRPC_ADDR", format!("127.0.0.1:{ag}")),
        ("MISIM_ARM_PUBLIC_URL", at.arm_url.clone()),
        ("MISIM_IMDS_GRPC_ADDR", format!("127.0.0.1:{ig}")),
        // The workers hammer IMDS far above Azure's per-VM limit on purpose.
        ("MISIM_IMDS_THROTTLE", "off".to_owned()),
        ("MISIM_IMDS_GRPC_URL", format!("http://127.0.0.1:{ig}")),
        ("MISIM_ADMIN_APP_ID", b.admin_client_id.clone()),
        ("MISIM_ADMIN_OBJECT_ID", b.admin_object_id.clone()),
        ("MISIM_ADMIN_SECRET", b.admin_client_secret.clone()),
        ("MISIM_ADMIN_DISPLAY_NAME", "misim-admin".into()),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let procs = Procs {
        bin_dir: bin_dir.to_path_buf(),
        data: data.to_path_buf(),
        env,
        children: BTreeMap::new(),
        grpc_ports: [("entra", eg), ("arm", ag), ("imds", ig)]
            .into_iter()
            .collect(),
    };
    Ok((procs, at))
}

/// An ARM token for the bootstrap administrator (retried while Entra comes up).
async fn admin_token(
    http: &reqwest::Client,
    entra_url: &str,
    b: &Bootstrap,
) -> anyhow::Result<String> {
    for _ in 0..100 {
        let r = http
            .post(format!("{entra_url}/{}/oauth2/v2.0/token", b.tenant_id))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", b.admin_client_id.as_str()),
                ("client_secret", b.admin_client_secret.as_str()),
                ("scope", "https://management.azure.com/.default"),
            ])
            .send()
            .await;
        if let Ok(r) = r
            && r.status().is_success()
        {
            let v: Value = r.json().await?;
            return v["access_token"]
                .as_str()
                .map(str::to_owned)
                .context("admin token");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("admin token")
}

/// The killer: SIGKILLs one service at random points and restarts it. It raises `done`
/// however it ends, so the workers stop.
fn spawn_killer(
    procs: Arc<tokio::sync::Mutex<Procs>>,
    kill_counts: Arc<Mutex<BTreeMap<&'static str, u32>>>,
    done: Arc<AtomicBool>,
    kills: u32,
    seed: u64,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let mut rng = Rng(seed.rotate_left(17) | 1);
    tokio::spawn(async move {
        let r = async {
            for k in 0..kills {
                tokio::time::sleep(Duration::from_millis(100 + rng.below(500))).await;
                // Round-robin: each service is killed kills/3 times.
                let svc = SERVICES[(k % 3) as usize];
                let mut p = procs.lock().await;
                p.kill(svc)?;
                *kill_counts.lock().expect("counts").entry(svc).or_default() += 1;
                drop(p);
                tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
                let mut p = procs.lock().await;
                p.spawn(svc)?;
                p.wait_ready(svc).await?;
            }
            anyhow::Ok(())
        }
        .await;
        done.store(true, Ordering::SeqCst);
        r
    })
}

fn print_workload(kc: &BTreeMap<&str, u32>, finished: &[Worker]) {
    let mut counts = Counts::default();
    for w in finished {
        counts.add(&w.counts);
    }
    println!(
        "crash test: kills={} ({}) workers={WORKERS} operations sent={} acknowledged={} rejected={} unreachable={} uncertain={}",
        kc.values().sum::<u32>(),
        kc.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        counts.sent,
        counts.acked,
        counts.rejected,
        counts.unreachable,
        counts.uncertain
    );
}

/// Waits (until `deadline`) for ARM's doctor to report nothing pending and no drift.
async fn converge(
    arm_grpc: &str,
    control: &misim_proto::auth::ControlKey,
    deadline: tokio::time::Instant,
) -> anyhow::Result<()> {
    let mut report = None;
    while tokio::time::Instant::now() < deadline {
        match misim_sandbox::doctor(arm_grpc, control).await {
            Ok(r) if r.pending_operations == 0 && r.drifts.is_empty() => {
                report = Some(r);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let report = match report {
        Some(r) => r,
        None => bail!(
            "no convergence: {:?}",
            misim_sandbox::doctor(arm_grpc, control).await
        ),
    };
    println!(
        "crash test: doctor drifts=0 identities={} service_principals={} vms={} imds_vms={} failed_operations={}",
        report.identities,
        report.service_principals,
        report.vms,
        report.imds_vms,
        report.failed_operations
    );
    Ok(())
}

/// Restarts every service 46 days later by the sandbox clock, so ARM renews every
/// certificate at start, and kills ARM while it does; then zero drift and, per
/// managed-identity principal, two key credentials (the old one is still valid).
async fn renew_through_kills(
    data: &Path,
    procs: &tokio::sync::Mutex<Procs>,
    at: &Endpoints,
    control: &misim_proto::auth::ControlKey,
    seed: u64,
    deadline: tokio::time::Instant,
) -> anyhow::Result<()> {
    const ARM_KILLS: u32 = 3;
    let mut p = procs.lock().await;
    p.stop_all();
    std::fs::write(
        data.join(misim_proto::clock::OFFSET_FILE),
        format!("{}\n", 46 * 86400),
    )?;
    for s in SERVICES {
        p.spawn(s)?;
    }
    for s in SERVICES {
        p.wait_ready(s).await?;
    }
    let mut rng = Rng(seed.rotate_left(29) | 1);
    for _ in 0..ARM_KILLS {
        tokio::time::sleep(Duration::from_millis(rng.below(200))).await;
        p.kill("arm")?;
        p.spawn("arm")?;
        p.wait_ready("arm").await?;
    }
    drop(p);
    converge(&at.arm_grpc, control, deadline).await?;
    let dir = misim_proto::entra::v1::directory_client::DirectoryClient::new(
        control
            .credential(misim_proto::auth::Caller::Admin)
            .wrap(misim_runtime::lazy_channel(&at.entra_grpc)?),
    );
    let mi: Vec<_> = misim_proto::all_principals(&dir)
        .await?
        .into_iter()
        .filter(|s| !s.managed_identity_resource_id.is_empty())
        .collect();
    if let Some(s) = mi.iter().find(|s| s.key_credentials.len() != 2) {
        bail!("principal not renewed (old and new expected): {s:?}");
    }
    println!(
        "crash test: {} certificates renewed 46 days later through {ARM_KILLS} kills of arm",
        mi.len()
    );
    Ok(())
}

/// Every acknowledged effect present, per worker, and every principal owned.
async fn verify_effects(
    api: &Api,
    entra_grpc: &str,
    control: &misim_proto::auth::ControlKey,
    finished: &[Worker],
) -> anyhow::Result<()> {
    let dir = misim_proto::entra::v1::directory_client::DirectoryClient::new(
        control
            .credential(misim_proto::auth::Caller::Admin)
            .wrap(misim_runtime::lazy_channel(entra_grpc)?),
    );
    let sps = misim_proto::all_principals(&dir).await?;
    let mut checked = 0;
    for w in finished {
        checked += w.verify(api, &sps).await?;
    }
    println!(
        "crash test: {checked} resources with a certain expected state verified; {} managed-identity principals, all owned",
        sps.iter()
            .filter(|s| !s.managed_identity_resource_id.is_empty())
            .count()
    );
    Ok(())
}

/// ARM's public API as the admin.
struct Api {
    http: reqwest::Client,
    arm_url: String,
    token: String,
    sub: String,
}

impl Api {
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Result<reqwest::Response> {
        let mut req = self
            .http
            .request(
                method.parse().expect("method"),
                format!("{}{path}?api-version=2024-11-01", self.arm_url),
            )
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await
    }
}

/// One worker: its own resource group, VMs and identities (its VMs attach
/// only its identities), driven one request at a time, so what it knows of
/// its resources is exact whatever the other workers do.
struct Worker {
    rg: String,
    rng: Rng,
    uamis: Vec<Known<String>>, // principal id
    vms: Vec<Known<VmState>>,
    counts: Counts,
}

impl Worker {
    fn new(n: usize, seed: u64) -> Self {
        Self {
            rg: format!("crash{n}"),
            rng: Rng(seed.wrapping_add(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(n as u64 + 1)) | 1),
            uamis: vec![Known::Certain(None); UAMIS],
            vms: vec![Known::Certain(None); VMS],
            counts: Counts::default(),
        }
    }

    fn rg_path(&self, api: &Api) -> String {
        format!("/subscriptions/{}/resourceGroups/{}", api.sub, self.rg)
    }

    fn uami_id(&self, api: &Api, i: usize) -> String {
        format!(
            "/subscriptions/{}/resourcegroups/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u{i}",
            api.sub, self.rg
        )
    }

    fn vm_path(&self, api: &Api, i: usize) -> String {
        format!(
            "{}/providers/Microsoft.Compute/virtualMachines/vm{i}",
            self.rg_path(api)
        )
    }

    /// Creates the worker's resource group (retrying until ARM answers).
    async fn create_rg(&self, api: &Api) -> anyhow::Result<()> {
        for _ in 0..200 {
            let body = Some(json!({"location": "eastus"}));
            match api.send("PUT", &self.rg_path(api), body).await {
                Ok(r) if r.status().is_success() => return Ok(()),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        bail!("{}: cannot create the resource group", self.rg)
    }

    /// Sends requests until `done` (or the deadline, an error).
    async fn run(
        mut self,
        api: Arc<Api>,
        done: Arc<AtomicBool>,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<Self> {
        while !done.load(Ordering::SeqCst) {
            if tokio::time::Instant::now() > deadline {
                bail!("{}: time budget exhausted during the workload", self.rg);
            }
            self.step(&api).await;
        }
        Ok(self)
    }

    /// One request, and what its answer tells about the resource.
    async fn step(&mut self, api: &Api) {
        self.counts.sent += 1;
        if self.rng.below(10) < 3 {
            let i = self.rng.below(UAMIS as u64) as usize;
            let del = matches!(self.uamis[i], Known::Certain(Some(_))) && self.rng.below(2) == 0;
            let (m, body) = if del {
                ("DELETE", None)
            } else {
                ("PUT", Some(json!({"location": "eastus"})))
            };
            match api.send(m, &self.uami_id(api, i), body).await {
                Ok(r) if r.status().is_success() => {
                    self.counts.acked += 1;
                    self.uamis[i] = if del {
                        Known::Certain(None)
                    } else {
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        match v.pointer("/properties/principalId").and_then(Value::as_str) {
                            Some(p) => Known::Certain(Some(p.to_owned())),
                            None => Known::Uncertain,
                        }
                    };
                }
                r => {
                    self.unacknowledged(r, |w| w.uamis[i] = Known::Uncertain)
                        .await
                }
            }
        } else {
            let i = self.rng.below(VMS as u64) as usize;
            let del = !matches!(self.vms[i], Known::Certain(None)) && self.rng.below(4) == 0;
            let state = VmState {
                sami: self.rng.below(2) == 0,
                uamis: (0..UAMIS).filter(|_| self.rng.below(3) == 0).collect(),
            };
            let body = if del {
                None
            } else {
                let kind = match (state.sami, !state.uamis.is_empty()) {
                    (true, true) => "SystemAssigned, UserAssigned",
                    (true, false) => "SystemAssigned",
                    (false, true) => "UserAssigned",
                    (false, false) => "None",
                };
                let map: serde_json::Map<String, Value> = state
                    .uamis
                    .iter()
                    .map(|u| (self.uami_id(api, *u), json!({})))
                    .collect();
                let mut ident = json!({"type": kind});
                if !map.is_empty() {
                    ident["userAssignedIdentities"] = Value::Object(map);
                }
                Some(json!({"location": "eastus", "identity": ident,
                    "properties": {"hardwareProfile": {"vmSize": "Standard_B1s"}}}))
            };
            let method = if del { "DELETE" } else { "PUT" };
            match api.send(method, &self.vm_path(api, i), body).await {
                Ok(r) if r.status().is_success() => {
                    self.counts.acked += 1;
                    self.vms[i] = if del {
                        Known::Certain(None)
                    } else {
                        Known::Certain(Some(state))
                    };
                }
                r => {
                    self.unacknowledged(r, |w| w.vms[i] = Known::Uncertain)
                        .await
                }
            }
        }
    }

    /// A request that was not acknowledged: refused (nothing changed),
    /// never delivered (nothing changed), or of unknown outcome.
    async fn unacknowledged(
        &mut self,
        r: reqwest::Result<reqwest::Response>,
        uncertain: impl FnOnce(&mut Self),
    ) {
        match r {
            Ok(r) if r.status().is_client_error() => self.counts.rejected += 1,
            Err(e) if e.is_connect() => {
                self.counts.unreachable += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            _ => {
                self.counts.uncertain += 1;
                uncertain(self);
            }
        }
    }

    /// Checks this worker's resources against what it knows and against
    /// Entra's principals; returns how many had a certain expected state.
    async fn verify(
        &self,
        api: &Api,
        sps: &[misim_proto::entra::v1::ServicePrincipal],
    ) -> anyhow::Result<usize> {
        let rg = &self.rg;
        let per_resource = |rid: &str| {
            sps.iter()
                .filter(|s| s.managed_identity_resource_id.eq_ignore_ascii_case(rid))
                .collect::<Vec<_>>()
        };
        let mut checked = 0;
        for (i, k) in self.uamis.iter().enumerate() {
            let r = api.send("GET", &self.uami_id(api, i), None).await?;
            let exists = r.status().is_success();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            if let Known::Certain(want) = k {
                checked += 1;
                if want.is_some() != exists {
                    bail!("{rg}/u{i}: expected exists={} got {exists}", want.is_some());
                }
                if let Some(p) = want
                    && v.pointer("/properties/principalId").and_then(Value::as_str) != Some(p)
                {
                    bail!("{rg}/u{i}: principal changed: {v}");
                }
            }
            let sp = per_resource(&self.uami_id(api, i));
            if sp.len() != usize::from(exists) || sp.iter().any(|s| s.key_credentials.len() != 1) {
                bail!(
                    "{rg}/u{i}: exists={exists} but {} principal(s): {sp:?}",
                    sp.len()
                );
            }
        }
        for (i, k) in self.vms.iter().enumerate() {
            let r = api.send("GET", &self.vm_path(api, i), None).await?;
            let exists = r.status().is_success();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            if exists && v["properties"]["provisioningState"] != "Succeeded" {
                bail!("{rg}/vm{i} not settled: {v}");
            }
            let sami = v.pointer("/identity/principalId").is_some();
            if let Known::Certain(want) = k {
                checked += 1;
                match want {
                    None if exists => bail!("{rg}/vm{i}: deleted but exists: {v}"),
                    Some(_) if !exists => bail!("{rg}/vm{i}: acknowledged but missing"),
                    Some(s) => {
                        let listed: BTreeSet<String> = v
                            .pointer("/identity/userAssignedIdentities")
                            .and_then(Value::as_object)
                            .map(|m| m.keys().map(|k| k.to_ascii_lowercase()).collect())
                            .unwrap_or_default();
                        let want_ids: BTreeSet<String> = s
                            .uamis
                            .iter()
                            .map(|u| self.uami_id(api, *u).to_ascii_lowercase())
                            .collect();
                        if s.sami != sami || listed != want_ids {
                            bail!("{rg}/vm{i}: expected {s:?}, got {v}");
                        }
                    }
                    None => {}
                }
            }
            let sp = per_resource(&self.vm_path(api, i));
            if sp.len() != usize::from(sami) || sp.iter().any(|s| s.key_credentials.len() != 1) {
                bail!(
                    "{rg}/vm{i}: sami={sami} but {} principal(s): {sp:?}",
                    sp.len()
                );
            }
        }
        Ok(checked)
    }
}
