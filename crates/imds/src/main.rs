//! `misim-imds`: the Instance Metadata Service as a process.

use std::sync::Arc;

use anyhow::Context;
use misim_imds::config::BinConfig;
use misim_imds::{Deps, Imds};
use misim_proto::auth::{Caller, ControlKey};
use misim_proto::entra::v1::directory_client::DirectoryClient;
use tokio::net::TcpListener;

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
    let store =
        misim_store::Store::open(&cfg.data_dir.join("imds")).context("opening the imds store")?;
    let shutdown = misim_runtime::Shutdown::new();
    let deps = Deps {
        store: store.clone(),
        clock: clock_svc.clock(),
        ids: Arc::new(misim_types::RandomIds),
        directory: DirectoryClient::new(
            control
                .credential(Caller::Imds)
                .wrap(misim_runtime::lazy_channel(&cfg.entra_grpc_url)?),
        ),
        shutdown: shutdown.clone(),
    };
    let grpc = TcpListener::bind(cfg.grpc_addr)
        .await
        .with_context(|| format!("binding {}", cfg.grpc_addr))?;
    let http = match cfg.http_addr {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding {a}"))?,
        ),
        None => None,
    };
    tracing::info!(grpc = %grpc.local_addr()?, http = ?http.as_ref().and_then(|l| l.local_addr().ok()), "misim-imds listening");
    let per_vm_address = matches!(
        cfg.config.addressing,
        misim_imds::VmAddressing::PerVmAddress { .. }
    );
    let imds = Imds::open(cfg.config, deps).await.context("opening imds")?;
    imds.chaos().set_throttle(cfg.throttle);
    imds.set_identity_delay(cfg.identity_delay);
    if !cfg.vm_addresses.is_empty() {
        tracing::info!(vms = ?cfg.vm_addresses, "static vm addresses");
        imds.set_static_addresses(cfg.vm_addresses);
    }
    tokio::spawn(misim_runtime::cancel_on_signal(shutdown.clone()));
    misim_runtime::spawn_grpc_at(clock_addr.as_deref(), clock_svc.router(&control), &shutdown)
        .await?;
    let vms = async {
        match per_vm_address {
            true => imds.serve_vms().await,
            false => Ok(()),
        }
    };
    let (result, vms) = tokio::join!(
        misim_imds::serve(imds.clone(), http, grpc, control, shutdown),
        vms
    );
    let result = result.and(vms);
    store.flush().await.context("flushing the imds store")?;
    result
}
