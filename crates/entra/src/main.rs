//! `misim-entra`: the launcher. Configuration comes from the environment (see
//! `misim_entra::LaunchConfig`); everything else lives in the library.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use misim_entra::{Deps, Entra, LaunchConfig};
use misim_runtime::Shutdown;
use misim_types::{Clock, ProcessEnv, RandomIds, SystemClock};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    misim_runtime::telemetry::init();
    let launch = match LaunchConfig::from_env(&ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "bad configuration");
            return ExitCode::from(64);
        }
    };
    match run(launch).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "misim-entra failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(launch: LaunchConfig) -> anyhow::Result<()> {
    misim_store::private_dir(&launch.data_dir).context("securing the data directory")?;
    // The sandbox clock of this process (moved by `misim clock`); TLS uses the real one.
    let (clock_svc, clock_addr) =
        misim_proto::clock::ClockService::for_process(&ProcessEnv, &launch.data_dir)
            .context("loading the clock")?;
    let clock = clock_svc.clock();
    let control = misim_proto::auth::ControlKey::for_service(&ProcessEnv, &launch.data_dir)
        .context("loading the control key")?;
    let tls = misim_runtime::tls::load_or_create(
        &launch.data_dir.join("tls"),
        &misim_runtime::tls::extra_names_from_env(&ProcessEnv),
        SystemClock.now(),
    )
    .context("loading sandbox TLS")?;
    let store =
        misim_store::Store::open(&launch.data_dir.join("entra")).context("opening the store")?;
    let deps = Deps {
        store: store.clone(),
        clock,
        ids: Arc::new(RandomIds),
    };
    // External issuers inside the sandbox serve certificates from its CA.
    let mut federation = launch.federation;
    federation.trusted_ca_pem.push(tls.ca_pem.clone());
    let entra = Entra::open_with(launch.config, deps, federation)
        .await
        .context("opening entra")?;
    let http = TcpListener::bind(launch.http_addr)
        .await
        .context("binding https")?;
    let grpc = TcpListener::bind(launch.grpc_addr)
        .await
        .context("binding grpc")?;
    tracing::info!(https = %http.local_addr()?, grpc = %grpc.local_addr()?, ca = %tls.ca_path.display(),
        public_url = %entra.config().public_url, "misim-entra listening");
    let shutdown = Shutdown::new();
    tokio::spawn(misim_runtime::cancel_on_signal(shutdown.clone()));
    misim_runtime::spawn_grpc_at(clock_addr.as_deref(), clock_svc.router(&control), &shutdown)
        .await?;

    misim_entra::serve(
        entra,
        http,
        grpc,
        Some(tls.server_config),
        control,
        shutdown,
    )
    .await?;
    store.flush().await.context("flushing the store")?;
    Ok(())
}
