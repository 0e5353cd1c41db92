//! Benchmark 3: provisioning (issue #11, targets 1 and 2), over HTTPS against
//! the running sandbox.
//!
//! - Target 1: VM PUTs with a system-assigned identity, and user-assigned
//!   identity PUTs, each creating a new resource. Two measurements, because
//!   with a fixed number in flight rate and latency are one number (Little's
//!   law: 64 in flight at 1,000/s is 64 ms on average, so "p99 < 20 ms with 64
//!   in flight" alone would mean 3,200/s): the sustainable rate, closed loop
//!   with 64 in flight, next to resource-group PUTs in alternating rounds; and
//!   the latency at the target rate, open loop (1,000 PUTs started a second,
//!   at most 64 in flight, latency counted from when each was due), next to
//!   resource-group PUTs paced the same way. An acknowledgement (any 2xx)
//!   means ARM, Entra and IMDS have the change on disk, or ARM has persisted
//!   an operation that will finish it.
//! - Target 2: from a VM PUT's acknowledgement to the first successful IMDS
//!   token on that VM (the lookup of the VM's IMDS endpoint included, so the
//!   number is an upper bound), one VM at a time; the baseline is a
//!   resource-group PUT's latency, one at a time, in the same rounds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::measure::{self, Run, fmt_latency};
use crate::targets::TargetRow;
use crate::{ROUNDS, Settings, World};

/// Target 1's goals.
const T1_RATE: f64 = 1000.0;
const T1_P99: Duration = Duration::from_millis(20);
/// Target 2's goal.
const T2_P99: Duration = Duration::from_millis(50);
/// How long target 2 waits for a VM's first token before counting a failure.
const FIRST_TOKEN_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between attempts while the first token is not there yet.
const TOKEN_POLL: Duration = Duration::from_millis(1);

const RG: &str = "misim-bench-prov";
const TOKEN_PATH: &str =
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net";

/// What one PUT needs, cheap to clone into every request task.
#[derive(Clone)]
struct Arm {
    http: reqwest::Client,
    base: String,
    token: Arc<str>,
    sub_path: String,
}

impl Arm {
    fn new(world: &World) -> Arm {
        Arm {
            http: world.https.clone(),
            base: world.sb.arm_url.clone(),
            token: world.admin_arm.as_str().into(),
            sub_path: format!("/subscriptions/{}", world.sb.bootstrap.subscription_id),
        }
    }

    /// PUTs `body` at `path`; true on any 2xx. The first few failures are printed.
    async fn put(&self, path: &str, body: &Value) -> bool {
        match self.try_put(path, body).await {
            Ok(()) => true,
            Err(e) => {
                static SHOWN: AtomicU64 = AtomicU64::new(0);
                if SHOWN.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("PUT {path}: {e:#}");
                }
                false
            }
        }
    }

    async fn try_put(&self, path: &str, body: &Value) -> anyhow::Result<()> {
        let url = format!("{}{path}?api-version=2024-11-01", self.base);
        let r = self
            .http
            .put(url)
            .bearer_auth(&*self.token)
            .json(body)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        if !status.is_success() {
            bail!("{status} {text}");
        }
        Ok(())
    }

    fn rg_path(&self, name: &str) -> String {
        format!("{}/resourceGroups/{name}", self.sub_path)
    }

    fn vm_path(&self, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.Compute/virtualMachines/{name}",
            self.rg_path(RG)
        )
    }

    fn uami_path(&self, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
            self.rg_path(RG)
        )
    }
}

fn vm_body(name: &str) -> Value {
    json!({"location": "eastus", "identity": {"type": "SystemAssigned"}, "properties": {
        "hardwareProfile": {"vmSize": "Standard_B1s"},
        "osProfile": {"computerName": name, "adminUsername": "azureuser"}}})
}

/// Which resource a concurrent run creates.
#[derive(Clone, Copy)]
enum Create {
    Group,
    Vm,
    Uami,
}

impl Create {
    fn label(self) -> &'static str {
        match self {
            Create::Group => "resource group PUT (new)",
            Create::Vm => "VM PUT SystemAssigned (new)",
            Create::Uami => "user-assigned identity PUT (new)",
        }
    }
}

/// How a run offers its PUTs.
#[derive(Clone, Copy)]
enum Load {
    /// This many in flight, each issued when the previous one returned.
    InFlight(usize),
    /// Started at this rate, at most `max` in flight.
    Paced { rate: f64, max: usize },
}

/// Creates new resources of one kind under `load`.
async fn create_run(arm: &Arm, what: Create, load: Load, s: &Settings) -> Run {
    let arm = arm.clone();
    match load {
        Load::InFlight(c) => {
            let label = format!("{}, {c} in flight", what.label());
            measure::in_flight(label, c, s.warmup, s.window, move || {
                create_one(arm.clone(), what)
            })
            .await
        }
        Load::Paced { rate, max } => {
            let label = format!("{}, {rate:.0}/s offered, ≤{max} in flight", what.label());
            measure::paced(label, rate, max, s.warmup, s.window, move || {
                create_one(arm.clone(), what)
            })
            .await
        }
    }
}

/// One PUT creating a new resource of kind `what`.
fn create_one(arm: Arm, what: Create) -> impl std::future::Future<Output = bool> + Send {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    async move {
        match what {
            Create::Group => {
                let name = format!("bench-rg-{n}");
                arm.put(&arm.rg_path(&name), &json!({"location": "eastus"}))
                    .await
            }
            Create::Vm => {
                let name = format!("bench-vm-{n}");
                arm.put(&arm.vm_path(&name), &vm_body(&name)).await
            }
            Create::Uami => {
                let name = format!("bench-mi-{n}");
                arm.put(&arm.uami_path(&name), &json!({"location": "eastus"}))
                    .await
            }
        }
    }
}

/// Target 2, one sample: a new VM, then its first token. The latency runs from the
/// PUT's acknowledgement to the token's 200.
async fn first_token(
    arm: &Arm,
    world: &World,
    imds: &reqwest::Client,
    n: u64,
) -> anyhow::Result<Duration> {
    let name = format!("bench-ft-{n}");
    let path = arm.vm_path(&name);
    if !arm.put(&path, &vm_body(&name)).await {
        bail!("PUT {path} failed");
    }
    let acked = Instant::now();
    let endpoint = world
        .sb
        .imds_control()?
        .get_vm(misim_proto::imds::v1::GetVmRequest {
            resource_id: path.clone(),
        })
        .await
        .context("asking IMDS for the VM")?
        .into_inner()
        .imds_endpoint;
    if !endpoint.starts_with("http://127.") {
        bail!("unexpected IMDS endpoint {endpoint:?}");
    }
    let url = format!("{endpoint}{TOKEN_PATH}");
    while acked.elapsed() < FIRST_TOKEN_DEADLINE {
        let r = imds.get(&url).header("Metadata", "true").send().await;
        if let Ok(r) = r
            && r.status() == reqwest::StatusCode::OK
            && r.bytes().await.is_ok()
        {
            return Ok(acked.elapsed());
        }
        tokio::time::sleep(TOKEN_POLL).await;
    }
    bail!("no token from {url} within {FIRST_TOKEN_DEADLINE:?} of the PUT's acknowledgement")
}

/// A run of one-at-a-time samples for `window` (at least one).
async fn sequential<F, Fut>(label: String, window: Duration, mut sample: F) -> Run
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Duration>>,
{
    let start = Instant::now();
    let (mut ops, mut errors, mut latencies_us) = (0, 0, Vec::new());
    loop {
        match sample().await {
            Ok(d) => {
                ops += 1;
                latencies_us.push(d.as_micros().min(u128::from(u32::MAX)) as u32);
            }
            Err(e) => {
                errors += 1;
                eprintln!("{label}: {e:#}");
            }
        }
        if start.elapsed() >= window {
            break;
        }
    }
    latencies_us.sort_unstable();
    Run {
        label,
        ops,
        errors,
        elapsed: start.elapsed(),
        latencies_us,
    }
}

/// Timed one-at-a-time resource-group PUTs (target 2's baseline).
async fn rg_latency(arm: &Arm, n: u64) -> anyhow::Result<Duration> {
    let path = arm.rg_path(&format!("bench-rg1-{n}"));
    let t0 = Instant::now();
    if !arm.put(&path, &json!({"location": "eastus"})).await {
        bail!("PUT {path} failed");
    }
    Ok(t0.elapsed())
}

/// The concurrent runs of target 1, alternating per round.
struct Target1 {
    rg: Run,
    vm: Run,
    uami: Run,
    /// The same kinds at target 1's rate (open loop).
    paced_rg: Run,
    paced_vm: Run,
    paced_uami: Run,
}

async fn target1(arm: &Arm, s: &Settings) -> Target1 {
    let r = s.round();
    let c = s.provision_concurrency;
    let kinds = [Create::Group, Create::Vm, Create::Uami];
    let mut acc: [Option<Run>; 3] = Default::default();
    let mut paced: [Option<Run>; 3] = Default::default();
    let at_target = Load::Paced {
        rate: T1_RATE,
        max: c,
    };
    for _ in 0..ROUNDS {
        for (what, acc) in kinds.iter().zip(&mut acc) {
            measure::accumulate(acc, create_run(arm, *what, Load::InFlight(c), &r).await);
        }
        for (what, acc) in kinds.iter().zip(&mut paced) {
            measure::accumulate(acc, create_run(arm, *what, at_target, &r).await);
        }
    }
    let done = |r: Option<Run>| r.unwrap_or_else(|| unreachable!("ROUNDS > 0"));
    let [rg, vm, uami] = acc.map(done);
    let [paced_rg, paced_vm, paced_uami] = paced.map(done);
    Target1 {
        rg,
        vm,
        uami,
        paced_rg,
        paced_vm,
        paced_uami,
    }
}

async fn target2(arm: &Arm, world: &World, s: &Settings) -> anyhow::Result<(Run, Run)> {
    let imds = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .build()?;
    let window = s.round().window;
    let counter = AtomicU64::new(0);
    let next = || counter.fetch_add(1, Ordering::Relaxed);
    let (mut base, mut subject) = (None, None);
    for _ in 0..ROUNDS {
        let b = sequential("resource group PUT, one at a time".into(), window, || {
            rg_latency(arm, next())
        })
        .await;
        measure::accumulate(&mut base, b);
        let t = sequential(
            "VM PUT acknowledged → first IMDS token, one at a time".into(),
            window,
            || first_token(arm, world, &imds, next()),
        )
        .await;
        measure::accumulate(&mut subject, t);
    }
    let (Some(base), Some(subject)) = (base, subject) else {
        unreachable!("ROUNDS > 0")
    };
    Ok((base, subject))
}

/// Target 1's row: the closed-loop rate (`subject` against `base`) and the
/// p99 at the target rate (`paced`).
fn t1_row(target: &str, subject: &Run, base: &Run, paced: &Run) -> TargetRow {
    let p99 = paced.quantile(0.99);
    TargetRow {
        target: target.into(),
        measured: format!(
            "{:.1}/s; at 1000/s p99 {}",
            subject.rate(),
            fmt_latency(p99)
        ),
        baseline: format!("RG PUT {:.1}/s", base.rate()),
        ratio: subject.rate() / base.rate().max(1e-9),
        pass: subject.errors == 0
            && paced.errors == 0
            && subject.rate() >= T1_RATE
            // The paced run kept up: it completed what it was offered.
            && paced.rate() >= 0.95 * T1_RATE
            && p99.is_some_and(|p| p < T1_P99),
    }
}

/// Runs benchmark 3 against `world`'s sandbox; returns its target rows.
pub(crate) async fn run(s: &Settings, world: &World) -> anyhow::Result<Vec<TargetRow>> {
    let arm = Arm::new(world);
    if !arm
        .put(&arm.rg_path(RG), &json!({"location": "eastus"}))
        .await
    {
        bail!("creating the resource group {RG} failed");
    }
    let t1 = target1(&arm, s).await;
    let (t2_base, t2) = target2(&arm, world, s).await?;

    measure::report(
        "3a. VM PUT with a SystemAssigned identity vs resource-group PUT, new resources, HTTPS",
        &t1.rg,
        &[&t1.vm],
    );
    measure::report(
        "3b. user-assigned identity PUT vs resource-group PUT, new resources, HTTPS",
        &t1.rg,
        &[&t1.uami],
    );
    measure::report(
        "3c. VM PUT acknowledged → first IMDS token (rate = samples/s, one at a time) vs resource-group PUT",
        &t2_base,
        &[&t2],
    );
    measure::report(
        "3d. the same at target 1's rate: 1000 PUTs started a second (open loop, latency from when each was due)",
        &t1.paced_rg,
        &[&t1.paced_vm, &t1.paced_uami],
    );
    let c = s.provision_concurrency;
    let p99 = |r: &Run| r.quantile(0.99);
    Ok(vec![
        t1_row(
            &format!("1. VM PUT SystemAssigned, {c} in flight: ≥1000/s, p99<20ms at 1000/s"),
            &t1.vm,
            &t1.rg,
            &t1.paced_vm,
        ),
        t1_row(
            &format!("1. user-assigned identity PUT, {c} in flight: ≥1000/s, p99<20ms at 1000/s"),
            &t1.uami,
            &t1.rg,
            &t1.paced_uami,
        ),
        TargetRow {
            target: "2. VM PUT ack → first IMDS token: p99<50ms".into(),
            measured: format!("p99 {}", fmt_latency(p99(&t2))),
            baseline: format!("RG PUT p99 {}", fmt_latency(p99(&t2_base))),
            ratio: match (p99(&t2), p99(&t2_base)) {
                (Some(t), Some(b)) => b.as_secs_f64() / t.as_secs_f64().max(1e-9),
                _ => 0.0,
            },
            pass: t2.errors == 0 && p99(&t2).is_some_and(|p| p < T2_P99),
        },
    ])
}
