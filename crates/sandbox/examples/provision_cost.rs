//! Instructions per provisioning PUT, for callgrind (issue #11 target 1).
//!
//! Starts the in-process sandbox, then makes `N` new resources of one kind
//! over HTTPS with 64 PUTs in flight, as `misim-bench --bench provision` does.
//! Run it twice under callgrind, with `N` = 0 and `N` = 200, and divide the
//! difference of the totals (or of one function's inclusive cost) by 200;
//! the start-up (RSA keygens: a random prime search) is what the `0` run
//! measures, so compare per-function costs, not only totals:
//!
//! ```sh
//! cargo build --release -p misim-sandbox --example provision_cost
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/vm.out \
//!     target/release/examples/provision_cost vm 200
//! callgrind_annotate --inclusive=yes /tmp/vm.out | grep misim_
//! ```
//!
//! Kinds: `vm` (a VM with `SystemAssigned`), `uami`, `rg` (resource groups).

use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};

const IN_FLIGHT: usize = 64;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "vm".into());
    let n: usize = args.next().unwrap_or_else(|| "200".into()).parse()?;
    if !matches!(kind.as_str(), "vm" | "uami" | "rg") {
        bail!("usage: provision_cost vm|uami|rg N");
    }
    let dir = tempfile::tempdir()?;
    let sb = misim_sandbox::Sandbox::start(misim_sandbox::SandboxConfig::new(dir.path()))
        .await
        .context("starting the sandbox")?;
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(sb.ca_pem.as_bytes())?)
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(IN_FLIGHT)
        .timeout(Duration::from_secs(60))
        .build()?;
    let b = &sb.bootstrap;
    let token: Value = https
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            sb.entra_url, b.tenant_id
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", b.admin_client_id.as_str()),
            ("client_secret", b.admin_client_secret.as_str()),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"]
        .as_str()
        .context("no admin token")?
        .to_owned();
    let sub = format!("{}/subscriptions/{}", sb.arm_url, b.subscription_id);
    let put = |path: String, body: Value| {
        let (https, token) = (https.clone(), token.clone());
        async move {
            let r = https
                .put(format!("{path}?api-version=2024-11-01"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("PUT {path}: {} {}", r.status(), r.text().await?);
            }
            anyhow::Ok(())
        }
    };
    let rg = format!("{sub}/resourceGroups/cost");
    put(rg.clone(), json!({"location": "eastus"})).await?;
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|i| match kind.as_str() {
            "vm" => put(
                format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm-{i}"),
                json!({"location": "eastus", "identity": {"type": "SystemAssigned"},
                    "properties": {"hardwareProfile": {"vmSize": "Standard_B1s"},
                    "osProfile": {"computerName": format!("vm-{i}"), "adminUsername": "azureuser"}}}),
            ),
            "uami" => put(
                format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi-{i}"),
                json!({"location": "eastus"}),
            ),
            _ => put(format!("{sub}/resourceGroups/rg-{i}"), json!({"location": "eastus"})),
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!("{failed} of {n} failed; first: {e:#}");
    }
    println!("{kind}: {} of {n} succeeded", n - failed);
    sb.shutdown().await?;
    Ok(())
}
