//! Benchmark 4: start-up (issue #11, target 6).
//!
//! What `misim up` does before it writes `misim.env` ([`misim_sandbox::Sandbox::start`], then
//! [`misim_sandbox::Sandbox::write_env_file`]), in this process: on a fresh data directory
//! (every key, certificate and store made anew) and, as the baseline, restarting on the
//! directory the fresh start left (nothing to generate). Each start is shut down, untimed,
//! before the next. A restart must reuse what the fresh start made: the bench fails if the
//! CA, the administrator's certificate or Entra's signing keys changed.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use misim_proto::entra::v1 as pb;
use tokio::time::Instant;

use crate::Settings;
use crate::measure::fmt_latency;
use crate::targets::TargetRow;

/// Target 6's goal.
const T6_FRESH: Duration = Duration::from_millis(300);

/// Fresh starts (and as many restarts) in the full form; `--quick` makes three.
const STARTS: usize = 10;
const QUICK_STARTS: usize = 3;

/// What a restart must not regenerate.
#[derive(Debug, PartialEq)]
struct Keys {
    ca_pem: String,
    admin_cert: String,
    signing_kids: Vec<String>,
}

async fn keys(sb: &misim_sandbox::Sandbox) -> anyhow::Result<Keys> {
    let ring = sb
        .directory()?
        .get_signing_keys(pb::GetSigningKeysRequest {})
        .await
        .context("reading Entra's signing keys")?
        .into_inner();
    Ok(Keys {
        ca_pem: sb.ca_pem.clone(),
        admin_cert: std::fs::read_to_string(&sb.admin_cert_path)?,
        signing_kids: ring.keys.into_iter().map(|k| k.kid).collect(),
    })
}

/// Starts a sandbox on `dir` until `misim.env` is written, returning the time it took.
async fn start(dir: &Path) -> anyhow::Result<(Duration, misim_sandbox::Sandbox)> {
    let t0 = Instant::now();
    let sb = misim_sandbox::Sandbox::start(misim_sandbox::SandboxConfig::new(dir)).await?;
    sb.write_env_file()?;
    Ok((t0.elapsed(), sb))
}

/// The median and the largest of `samples`.
fn median_max(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort_unstable();
    (
        samples[samples.len() / 2],
        samples.last().copied().unwrap_or_default(),
    )
}

/// Runs benchmark 4 and returns target 6's row.
pub(crate) async fn run(s: &Settings, quick: bool) -> anyhow::Result<TargetRow> {
    let n = if quick { QUICK_STARTS } else { STARTS };
    let (mut fresh, mut restart) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let dir = tempfile::tempdir()?;
        let (t, sb) = start(dir.path()).await.context("fresh start")?;
        fresh.push(t);
        let before = keys(&sb).await?;
        sb.shutdown().await?;
        let (t, sb) = start(dir.path()).await.context("restart")?;
        restart.push(t);
        let after = keys(&sb).await?;
        sb.shutdown().await?;
        if before != after {
            bail!("a restart regenerated keys: {before:?} became {after:?}");
        }
    }
    let (fresh_med, fresh_max) = median_max(&mut fresh);
    let (restart_med, restart_max) = median_max(&mut restart);
    println!();
    println!(
        "## 4. start-up until misim.env is written ({n} each, in-process Sandbox::start; {} threads)",
        s.threads
    );
    println!(
        "| {:<40} | {:>10} | {:>10} |",
        "measurement", "median", "max"
    );
    for (what, med, max) in [
        ("fresh data directory", fresh_med, fresh_max),
        (
            "restart on that directory (baseline)",
            restart_med,
            restart_max,
        ),
    ] {
        println!(
            "| {:<40} | {:>10} | {:>10} |",
            what,
            fmt_latency(Some(med)),
            fmt_latency(Some(max))
        );
    }
    Ok(TargetRow {
        target: "6. fresh start to misim.env: <300ms (median)".into(),
        measured: format!(
            "median {}, max {}",
            fmt_latency(Some(fresh_med)),
            fmt_latency(Some(fresh_max))
        ),
        baseline: format!("restart median {}", fmt_latency(Some(restart_med))),
        ratio: restart_med.as_secs_f64() / fresh_med.as_secs_f64().max(1e-9),
        pass: fresh_med < T6_FRESH,
    })
}
