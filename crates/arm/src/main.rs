//! `misim-arm`: runs misim's Azure Resource Manager.

use std::sync::Arc;

use anyhow::Context;
use misim_arm::{Arm, Deps, Settings};
use misim_proto::auth::{Caller, ControlKey};
use misim_proto::entra::v1::directory_client::DirectoryClient;
use misim_proto::entra::v1::federation_client::FederationClient;
use misim_proto::faults::Faults;
use misim_proto::imds::v1::control_client::ControlClient;
use misim_types::{Clock, ProcessEnv, RandomIds, SystemClock};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    misim_runtime::telemetry::init();
    let settings = match Settings::from_env(&ProcessEnv) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("misim-arm: {e}");
            std::process::exit(64);
        }
    };
    misim_store::private_dir(&settings.data_dir).context("securing the data directory")?;
    // The sandbox clock of this process (moved by `misim clock`); TLS uses the real one.
    let (clock_svc, clock_addr) =
        misim_proto::clock::ClockService::for_process(&misim_types::ProcessEnv, &settings.data_dir)
            .context("loading the clock")?;
    let control = ControlKey::for_service(&ProcessEnv, &settings.data_dir)
        .context("loading the control key")?;
    let store =
        misim_store::Store::open(&settings.data_dir.join("arm")).context("opening the store")?;
    let as_arm = control.credential(Caller::Arm);
    let entra = as_arm
        .clone()
        .wrap(misim_runtime::lazy_channel(&settings.entra_grpc_url)?);
    let imds = as_arm.wrap(misim_runtime::lazy_channel(&settings.imds_grpc_url)?);
    let deps = Deps {
        store: store.clone(),
        clock: clock_svc.clock(),
        ids: Arc::new(RandomIds),
        keys: misim_proto::keys::EntraKeys::new(DirectoryClient::new(entra.clone())),
        directory: DirectoryClient::new(Faults::none().wrap(entra.clone())),
        federation: FederationClient::new(Faults::none().wrap(entra)),
        imds: ControlClient::new(Faults::none().wrap(imds)),
    };
    let tls = misim_runtime::tls::load_or_create(
        &settings.data_dir.join("tls"),
        &misim_runtime::tls::extra_names_from_env(&ProcessEnv),
        SystemClock.now(),
    )?;
    let arm = Arm::open(settings.config, deps)
        .await
        .context("opening arm")?;
    arm.follow_clock(clock_svc.subscribe());
    arm.set_role_assignment_delay(settings.role_assignment_delay);
    let http = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .context("binding http")?;
    let grpc = tokio::net::TcpListener::bind(settings.grpc_addr)
        .await
        .context("binding grpc")?;
    tracing::info!(https = %http.local_addr()?, grpc = %grpc.local_addr()?, "misim-arm listening");
    let shutdown = misim_runtime::Shutdown::new();
    tokio::spawn(misim_runtime::cancel_on_signal(shutdown.clone()));
    misim_runtime::spawn_grpc_at(clock_addr.as_deref(), clock_svc.router(&control), &shutdown)
        .await?;
    misim_arm::serve(arm, http, grpc, Some(tls.server_config), control, shutdown).await?;
    store.flush().await.context("flushing the store")?;
    Ok(())
}
