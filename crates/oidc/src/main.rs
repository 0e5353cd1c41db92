//! `misim-oidc`: the sandbox's OIDC issuers as a process (the compose sandbox's
//! `oidc` service; `misim up` runs them in process).

use std::sync::Arc;

use anyhow::Context;
use misim_oidc::config::BinConfig;
use misim_oidc::{Deps, Oidc};
use misim_proto::auth::ControlKey;
use misim_types::{Clock, ProcessEnv};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    misim_runtime::telemetry::init();
    let cfg = match BinConfig::from_env(&ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("bad configuration: {e}");
            std::process::exit(64);
        }
    };
    misim_store::private_dir(&cfg.data_dir).context("securing the data directory")?;
    // The sandbox clock of this process (moved by `misim clock`), so tokens'
    // iat/exp agree with Entra's clock; TLS uses the real one.
    let (clock_svc, clock_addr) =
        misim_proto::clock::ClockService::for_process(&ProcessEnv, &cfg.data_dir)
            .context("loading the clock")?;
    let control =
        ControlKey::for_service(&ProcessEnv, &cfg.data_dir).context("loading the control key")?;
    let tls = misim_runtime::tls::load_or_create(
        &cfg.data_dir.join("tls"),
        &misim_runtime::tls::extra_names_from_env(&ProcessEnv),
        misim_types::SystemClock.now(),
    )
    .context("loading TLS material")?;
    let store =
        misim_store::Store::open(&cfg.data_dir.join("oidc")).context("opening the oidc store")?;
    let oidc = Oidc::open(
        cfg.config,
        Deps {
            store: store.clone(),
            clock: clock_svc.clock(),
            ids: Arc::new(misim_types::RandomIds),
        },
    )
    .await
    .context("opening the issuers")?;
    let http = TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("binding {}", cfg.http_addr))?;
    let grpc = TcpListener::bind(cfg.grpc_addr)
        .await
        .with_context(|| format!("binding {}", cfg.grpc_addr))?;
    tracing::info!(https = %http.local_addr()?, grpc = %grpc.local_addr()?, base = %oidc.config().public_base, "misim-oidc listening");
    let shutdown = misim_runtime::Shutdown::new();
    tokio::spawn(misim_runtime::cancel_on_signal(shutdown.clone()));
    misim_runtime::spawn_grpc_at(clock_addr.as_deref(), clock_svc.router(&control), &shutdown)
        .await?;
    let result =
        misim_oidc::serve(oidc, http, grpc, Some(tls.server_config), control, shutdown).await;
    store.flush().await.context("flushing the oidc store")?;
    result
}
