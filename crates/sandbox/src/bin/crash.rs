//! `misim-crash`: the crash test driver (scripts/crash-test.sh).
//!
//! Runs misim-entra, misim-arm and misim-imds as separate processes on one data
//! directory, drives a random mix of create/assign/remove/delete operations
//! through ARM's public API while SIGKILLing one service at random points and
//! restarting it, then checks: zero drift from ARM's doctor, every
//! acknowledged operation's effect present, every identity that exists has
//! exactly one service principal with one key credential, none that was
//! deleted still has one.
//!
//! Environment: `MISIM_CRASH_KILLS` (default 30), `MISIM_CRASH_SEED`,
//! `MISIM_CRASH_BIN_DIR` (default: this executable's directory),
//! `MISIM_CRASH_TIMEOUT_SECS` (default 900).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use misim_sandbox::Bootstrap;
use misim_types::Clock;
use serde_json::{Value, json};

const SERVICES: [&str; 3] = ["entra", "arm", "imds"];
const VMS: usize = 6;
const UAMIS: usize = 4;

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

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.children.values_mut() {
            c.kill().ok();
            c.wait().ok();
        }
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

async fn run(
    data: &Path,
    bin_dir: &Path,
    kills: u32,
    seed: u64,
    budget: Duration,
) -> anyhow::Result<()> {
    let b = Bootstrap::load_or_create(data, &misim_types::RandomIds)?;
    let tls =
        misim_runtime::tls::load_or_create(&data.join("tls"), &[], misim_types::SystemClock.now())?;
    let (eh, eg, ah, ag, ig) = (
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
    );
    let entra_url = format!("https://localhost:{eh}");
    let arm_url = format!("https://localhost:{ah}");
    let arm_grpc = format!("http://127.0.0.1:{ag}");
    let env: Vec<(String, String)> = [
        ("MISIM_DATA_DIR", data.display().to_string()),
        ("MISIM_TENANT_ID", b.tenant_id.clone()),
        ("MISIM_SUBSCRIPTION_ID", b.subscription_id.clone()),
        ("MISIM_ENTRA_HTTP_ADDR", format!("127.0.0.1:{eh}")),
        ("MISIM_ENTRA_GRPC_ADDR", format!("127.0.0.1:{eg}")),
        ("MISIM_ENTRA_PUBLIC_URL", entra_url.clone()),
        ("MISIM_ENTRA_GRPC_URL", format!("http://127.0.0.1:{eg}")),
        ("MISIM_ARM_HTTP_ADDR", format!("127.0.0.1:{ah}")),
        ("MISIM_ARM_GRPC_ADDR", format!("127.0.0.1:{ag}")),
        ("MISIM_ARM_PUBLIC_URL", arm_url.clone()),
        ("MISIM_IMDS_GRPC_ADDR", format!("127.0.0.1:{ig}")),
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
    let mut procs = Procs {
        bin_dir: bin_dir.to_path_buf(),
        data: data.to_path_buf(),
        env,
        children: BTreeMap::new(),
        grpc_ports: [("entra", eg), ("arm", ag), ("imds", ig)]
            .into_iter()
            .collect(),
    };
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
    let token = {
        let mut tok = None;
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
                tok = v["access_token"].as_str().map(str::to_owned);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tok.context("admin token")?
    };
    let sub = b.subscription_id.clone();
    let rg = format!("/subscriptions/{sub}/resourceGroups/crash");
    let arm = |method: &str, path: String, body: Option<Value>| {
        let mut req = http
            .request(
                method.parse().expect("method"),
                format!("{arm_url}{path}?api-version=2024-11-01"),
            )
            .bearer_auth(&token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send()
    };
    // The resource group (retry until ARM answers).
    for i in 0.. {
        match arm("PUT", rg.clone(), Some(json!({"location": "eastus"}))).await {
            Ok(r) if r.status().is_success() => break,
            _ if i > 200 => bail!("cannot create the resource group"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let uami_id = |i: usize| {
        format!(
            "/subscriptions/{sub}/resourcegroups/crash/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u{i}"
        )
    };
    let vm_path = |i: usize| format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm{i}");

    // The killer: SIGKILL one service at random points, restart it.
    let procs = Arc::new(tokio::sync::Mutex::new(procs));
    let kill_counts = Arc::new(Mutex::new(BTreeMap::<&str, u32>::new()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let (procs, kill_counts, done) = (procs.clone(), kill_counts.clone(), done.clone());
        let mut rng = Rng(seed.rotate_left(17) | 1);
        tokio::spawn(async move {
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
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            anyhow::Ok(())
        })
    };

    // The workload.
    let mut rng = Rng(seed);
    let mut uamis: Vec<Known<String>> = vec![Known::Certain(None); UAMIS]; // principal id
    let mut vms: Vec<Known<VmState>> = vec![Known::Certain(None); VMS];
    let mut counts = Counts::default();
    let deadline = tokio::time::Instant::now() + budget;
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        if tokio::time::Instant::now() > deadline {
            bail!("time budget exhausted during the workload");
        }
        if killer.is_finished() {
            break;
        }
        counts.sent += 1;
        let pick = rng.below(10);
        // (request, on_ack) per kind
        if pick < 3 {
            let i = rng.below(UAMIS as u64) as usize;
            let del = matches!(uamis[i], Known::Certain(Some(_))) && rng.below(2) == 0;
            let (m, body) = if del {
                ("DELETE", None)
            } else {
                ("PUT", Some(json!({"location": "eastus"})))
            };
            match arm(m, uami_id(i), body).await {
                Ok(r) if r.status().is_success() => {
                    counts.acked += 1;
                    uamis[i] = if del {
                        Known::Certain(None)
                    } else {
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        match v.pointer("/properties/principalId").and_then(Value::as_str) {
                            Some(p) => Known::Certain(Some(p.to_owned())),
                            None => Known::Uncertain,
                        }
                    };
                }
                Ok(r) if r.status().is_client_error() => counts.rejected += 1,
                Err(e) if e.is_connect() => {
                    counts.unreachable += 1;
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                _ => {
                    counts.uncertain += 1;
                    uamis[i] = Known::Uncertain;
                }
            }
        } else {
            let i = rng.below(VMS as u64) as usize;
            let del = !matches!(vms[i], Known::Certain(None)) && rng.below(4) == 0;
            let state = VmState {
                sami: rng.below(2) == 0,
                uamis: (0..UAMIS).filter(|_| rng.below(3) == 0).collect(),
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
                    .map(|u| (uami_id(*u), json!({})))
                    .collect();
                let mut ident = json!({"type": kind});
                if !map.is_empty() {
                    ident["userAssignedIdentities"] = Value::Object(map);
                }
                Some(json!({"location": "eastus", "identity": ident,
                    "properties": {"hardwareProfile": {"vmSize": "Standard_B1s"}}}))
            };
            match arm(if del { "DELETE" } else { "PUT" }, vm_path(i), body).await {
                Ok(r) if r.status().is_success() => {
                    counts.acked += 1;
                    vms[i] = if del {
                        Known::Certain(None)
                    } else {
                        Known::Certain(Some(state))
                    };
                }
                Ok(r) if r.status().is_client_error() => counts.rejected += 1,
                Err(e) if e.is_connect() => {
                    counts.unreachable += 1;
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                _ => {
                    counts.uncertain += 1;
                    vms[i] = Known::Uncertain;
                }
            }
        }
    }
    killer.await??;
    let kc = kill_counts.lock().expect("counts").clone();
    println!(
        "crash test: kills={} ({}) operations sent={} acknowledged={} rejected={} unreachable={} uncertain={}",
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

    // Convergence.
    let mut report = None;
    while tokio::time::Instant::now() < deadline {
        match misim_sandbox::doctor(&arm_grpc).await {
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
            misim_sandbox::doctor(&arm_grpc).await
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

    // Every acknowledged effect present.
    let mut dir = misim_proto::entra::v1::directory_client::DirectoryClient::new(
        misim_runtime::lazy_channel(&format!("http://127.0.0.1:{eg}"))?,
    );
    let sps = dir
        .list_service_principals(misim_proto::entra::v1::ListServicePrincipalsRequest {})
        .await?
        .into_inner()
        .service_principals;
    let per_resource = |rid: &str| {
        sps.iter()
            .filter(|s| s.managed_identity_resource_id.eq_ignore_ascii_case(rid))
            .collect::<Vec<_>>()
    };
    let mut checked = 0;
    for (i, k) in uamis.iter().enumerate() {
        let r = arm("GET", uami_id(i), None).await?;
        let exists = r.status().is_success();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if let Known::Certain(want) = k {
            checked += 1;
            if want.is_some() != exists {
                bail!("uami u{i}: expected exists={} got {exists}", want.is_some());
            }
            if let Some(p) = want
                && v.pointer("/properties/principalId").and_then(Value::as_str) != Some(p)
            {
                bail!("uami u{i}: principal changed: {v}");
            }
        }
        let sp = per_resource(&uami_id(i));
        let want_sps = usize::from(exists);
        if sp.len() != want_sps || sp.iter().any(|s| s.key_credentials.len() != 1) {
            bail!(
                "uami u{i}: exists={exists} but {} principal(s): {sp:?}",
                sp.len()
            );
        }
    }
    for (i, k) in vms.iter().enumerate() {
        let r = arm("GET", vm_path(i), None).await?;
        let exists = r.status().is_success();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if exists && v["properties"]["provisioningState"] != "Succeeded" {
            bail!("vm{i} not settled: {v}");
        }
        let sami = v.pointer("/identity/principalId").is_some();
        if let Known::Certain(want) = k {
            checked += 1;
            match want {
                None if exists => bail!("vm{i}: deleted but exists: {v}"),
                Some(_) if !exists => bail!("vm{i}: acknowledged but missing"),
                Some(s) => {
                    let listed: BTreeSet<String> = v
                        .pointer("/identity/userAssignedIdentities")
                        .and_then(Value::as_object)
                        .map(|m| m.keys().map(|k| k.to_ascii_lowercase()).collect())
                        .unwrap_or_default();
                    let want_ids: BTreeSet<String> = s
                        .uamis
                        .iter()
                        .map(|u| uami_id(*u).to_ascii_lowercase())
                        .collect();
                    if s.sami != sami || listed != want_ids {
                        bail!("vm{i}: expected {s:?}, got {v}");
                    }
                }
                None => {}
            }
        }
        let id = format!("{}{}", "", vm_path(i));
        let sp = per_resource(&id);
        if sp.len() != usize::from(sami) || sp.iter().any(|s| s.key_credentials.len() != 1) {
            bail!("vm{i}: sami={sami} but {} principal(s): {sp:?}", sp.len());
        }
    }
    println!(
        "crash test: {checked} resources with a certain expected state verified; {} managed-identity principals, all owned",
        sps.iter()
            .filter(|s| !s.managed_identity_resource_id.is_empty())
            .count()
    );
    let total: u32 = kc.values().sum();
    if total < kills {
        bail!("only {total} kills");
    }
    procs.lock().await.children.clear_all();
    Ok(())
}

trait ClearAll {
    fn clear_all(&mut self);
}

impl ClearAll for BTreeMap<&'static str, Child> {
    fn clear_all(&mut self) {
        for c in self.values_mut() {
            c.kill().ok();
            c.wait().ok();
        }
        self.clear();
    }
}
