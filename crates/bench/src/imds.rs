//! Benchmark 2: the IMDS token hot path (a cache hit) against a bare hyper
//! server that answers every request with the very bytes IMDS returned.
//!
//! Both are driven by the same HTTP/1.1 keep-alive client with the same
//! number of connections for the same time, so the ratio is what IMDS's
//! routing, VM binding, parameter checks and cache lookup cost on top of
//! hyper itself.

use std::convert::Infallible;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::measure;
use crate::targets::TargetRow;
use crate::{ROUNDS, Settings, World};

/// Target 4's goals.
const T4_RATIO: f64 = 0.8;
const T4_P99_SLACK: std::time::Duration = std::time::Duration::from_millis(1);

const TOKEN_PATH: &str =
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net";

/// A captured response: status, content type, body.
#[derive(Debug, Clone)]
struct Canned {
    status: http::StatusCode,
    content_type: Option<http::HeaderValue>,
    body: Bytes,
}

/// Serves `canned` for any request on 127.0.0.1:0; returns the base URL.
async fn bare_hyper(canned: Canned) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let canned = Arc::new(canned);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let canned = canned.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let canned = canned.clone();
                    async move {
                        let mut resp = hyper::Response::new(Full::new(canned.body.clone()));
                        *resp.status_mut() = canned.status;
                        if let Some(ct) = &canned.content_type {
                            resp.headers_mut()
                                .insert(http::header::CONTENT_TYPE, ct.clone());
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(format!("http://{addr}"))
}

/// Creates a resource group and a VM with a system-assigned identity; returns
/// the VM's IMDS endpoint.
async fn provision_vm(world: &World) -> anyhow::Result<String> {
    let sub = &world.sb.bootstrap.subscription_id;
    let rg = format!("/subscriptions/{sub}/resourceGroups/misim-bench");
    world
        .arm_put(&rg, json!({"location": "eastus"}))
        .await
        .context("creating the resource group")?;
    let vm = format!("{rg}/providers/Microsoft.Compute/virtualMachines/bench-vm");
    let body = json!({"location": "eastus", "identity": {"type": "SystemAssigned"}, "properties": {
        "hardwareProfile": {"vmSize": "Standard_B1s"},
        "osProfile": {"computerName": "bench-vm", "adminUsername": "azureuser"}}});
    world.arm_put(&vm, body).await.context("creating the VM")?;
    let got = world
        .sb
        .imds_control()?
        .get_vm(misim_proto::imds::v1::GetVmRequest {
            resource_id: vm.clone(),
        })
        .await
        .context("asking IMDS for the VM")?
        .into_inner();
    if !got.imds_endpoint.starts_with("http://127.") {
        bail!("unexpected IMDS endpoint {:?}", got.imds_endpoint);
    }
    Ok(got.imds_endpoint)
}

/// Runs benchmark 2 against `world`'s sandbox.
pub(crate) async fn run(s: &Settings, world: &World) -> anyhow::Result<Vec<TargetRow>> {
    let endpoint = provision_vm(world).await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(s.concurrency)
        .build()?;
    let imds_url = format!("{endpoint}{TOKEN_PATH}");

    // Warm the token cache (the first request goes to Entra) and capture the answer.
    let mut canned = None;
    for _ in 0..50 {
        let r = client
            .get(&imds_url)
            .header("Metadata", "true")
            .send()
            .await?;
        let status = r.status();
        let content_type = r.headers().get(http::header::CONTENT_TYPE).cloned();
        let body = r.bytes().await?;
        if status == reqwest::StatusCode::OK {
            canned = Some(Canned {
                status,
                content_type,
                body,
            });
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let Some(canned) = canned else {
        bail!("IMDS never answered 200 on {imds_url}");
    };
    let token: Value = serde_json::from_slice(&canned.body)?;
    if token["access_token"].as_str().is_none() {
        bail!("IMDS answered without an access_token");
    }
    let body_len = canned.body.len();
    let base_url = format!("{}{TOKEN_PATH}", bare_hyper(canned).await?);

    let get = |url: String| {
        let client = client.clone();
        move || {
            let req = client.get(&url).header("Metadata", "true");
            async move {
                match req.send().await {
                    Ok(r) => r.status() == reqwest::StatusCode::OK && r.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        }
    };
    let c = s.concurrency;
    let (base_fn, imds_fn) = (get(base_url), get(imds_url));
    let (mut baseline, mut subject) = (None, None);
    let r = s.round();
    for _ in 0..ROUNDS {
        let b = measure::in_flight(
            format!("bare hyper, canned IMDS answer, {c} conns"),
            c,
            r.warmup,
            r.window,
            base_fn.clone(),
        )
        .await;
        measure::accumulate(&mut baseline, b);
        let i = measure::in_flight(
            format!("IMDS GET token (cache hit), {c} conns"),
            c,
            r.warmup,
            r.window,
            imds_fn.clone(),
        )
        .await;
        measure::accumulate(&mut subject, i);
    }
    let (Some(baseline), Some(subject)) = (baseline, subject) else {
        unreachable!("ROUNDS > 0")
    };
    measure::report(
        &format!(
            "2. IMDS token endpoint (cache hits) vs bare hyper serving the same {body_len}-byte answer, HTTP/1.1 keep-alive"
        ),
        &baseline,
        &[&subject],
    );
    Ok(vec![t4_row(&subject, &baseline)])
}

/// Target 4: at least [`T4_RATIO`] of the bare server's rate, p99 within [`T4_P99_SLACK`] of its p99.
fn t4_row(subject: &measure::Run, baseline: &measure::Run) -> TargetRow {
    let ratio = subject.rate() / baseline.rate().max(1e-9);
    let (p99, base_p99) = (subject.quantile(0.99), baseline.quantile(0.99));
    let p99_ok = match (p99, base_p99) {
        (Some(p), Some(b)) => p <= b + T4_P99_SLACK,
        _ => false,
    };
    TargetRow {
        target: "4. IMDS cached token: ≥0.8x bare hyper, p99 within 1ms".into(),
        measured: format!("{:.0}/s, p99 {}", subject.rate(), measure::fmt_latency(p99)),
        baseline: format!(
            "bare hyper {:.0}/s, p99 {}",
            baseline.rate(),
            measure::fmt_latency(base_p99)
        ),
        ratio,
        pass: subject.errors == 0 && ratio >= T4_RATIO && p99_ok,
    }
}
