//! `misim-keyvault`: the Key Vault secrets data plane as a process.

use std::sync::Arc;

use anyhow::Context;
use misim_keyvault::config::BinConfig;
use misim_keyvault::{Deps, KeyVault};
use misim_proto::arm::v1::authorization_client::AuthorizationClient;
use misim_proto::auth::{Caller, ControlKey};
use misim_proto::entra::v1::directory_client::DirectoryClient;
use misim_types::{Clock, EnvSource};
use tokio::net::TcpListener;

/// More HTTPS listen addresses, comma-separated: the compose sandbox serves
/// vaults on 443 (`{vault}.vault.azure.net`) and on 8445 (`{vault}.vault.sim:8445`).
const ENV_EXTRA_HTTP_ADDRS: &str = "MISIM_KEYVAULT_EXTRA_HTTP_ADDRS";
/// Where to serve the owner's toolkit over gRPC (`misim fault`, `misim log`);
/// none: not served (Key Vault needs no gRPC otherwise).
const ENV_GRPC_ADDR: &str = "MISIM_KEYVAULT_GRPC_ADDR";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    misim_runtime::telemetry::init();
    let cfg = match BinConfig::from_env(&misim_types::ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("bad configuration: {e}");
            std::process::exit(64);
        }
    };
    misim_store::private_dir(&cfg.data_dir).context("securing the data directory")?;
    // The sandbox clock of this process (moved by `misim clock`); TLS uses the real one.
    let (clock_svc, clock_addr) =
        misim_proto::clock::ClockService::for_process(&misim_types::ProcessEnv, &cfg.data_dir)
            .context("loading the clock")?;
    let control = ControlKey::for_service(&misim_types::ProcessEnv, &cfg.data_dir)
        .context("loading the control key")?;
    let as_keyvault = control.credential(Caller::KeyVault);
    let suffix = cfg.config.dns_suffix.trim_matches('.').to_owned();
    let mut names = vec![suffix.clone(), format!("*.{suffix}")];
    names.extend(misim_runtime::tls::extra_names_from_env(
        &misim_types::ProcessEnv,
    ));
    let tls = misim_runtime::tls::load_or_create(
        &cfg.data_dir.join("tls"),
        &names,
        misim_types::SystemClock.now(),
    )
    .context("loading TLS material")?;
    let store = misim_store::Store::open(&cfg.data_dir.join("keyvault"))
        .context("opening the key vault store")?;
    let directory = DirectoryClient::new(
        as_keyvault
            .clone()
            .wrap(misim_runtime::lazy_channel(&cfg.entra_grpc_url)?),
    );
    let deps = Deps {
        store: store.clone(),
        clock: clock_svc.clock(),
        ids: Arc::new(misim_types::RandomIds),
        keys: misim_proto::keys::EntraKeys::new(directory),
        authz: AuthorizationClient::new(
            as_keyvault.wrap(misim_runtime::lazy_channel(&cfg.arm_grpc_url)?),
        ),
    };
    let kv = KeyVault::open(cfg.config, deps)
        .await
        .context("opening key vault")?;
    let http = TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("binding {}", cfg.http_addr))?;
    tracing::info!(https = %http.local_addr()?, ca = %tls.ca_path.display(), "misim-keyvault listening");
    let shutdown = misim_runtime::Shutdown::new();
    tokio::spawn(misim_runtime::cancel_on_signal(shutdown.clone()));
    misim_runtime::spawn_grpc_at(clock_addr.as_deref(), clock_svc.router(&control), &shutdown)
        .await?;

    let mut extra = tokio::task::JoinSet::new();
    for addr in misim_types::ProcessEnv
        .get(ENV_EXTRA_HTTP_ADDRS)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {ENV_EXTRA_HTTP_ADDRS} {addr}"))?;
        tracing::info!(https = %l.local_addr()?, "misim-keyvault listening");
        let (kv, tls, shutdown) = (kv.clone(), tls.server_config.clone(), shutdown.clone());
        extra.spawn(misim_keyvault::serve(kv, l, Some(tls), shutdown));
    }
    if let Some(addr) = misim_types::ProcessEnv
        .get(ENV_GRPC_ADDR)
        .filter(|a| !a.trim().is_empty())
    {
        let l = TcpListener::bind(addr.trim())
            .await
            .with_context(|| format!("binding {ENV_GRPC_ADDR} {addr}"))?;
        tracing::info!(grpc = %l.local_addr()?, "misim-keyvault listening");
        extra.spawn(misim_keyvault::serve_grpc(
            kv.clone(),
            l,
            control.clone(),
            shutdown.clone(),
        ));
    }
    let result = misim_keyvault::serve(kv, http, Some(tls.server_config), shutdown.clone()).await;
    // A listener that failed stops the others.
    shutdown.cancel();
    for r in extra.join_all().await {
        r?;
    }
    store
        .flush()
        .await
        .context("flushing the key vault store")?;
    result
}
