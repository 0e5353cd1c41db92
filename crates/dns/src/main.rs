//! `misim-dns`: the sandbox DNS server as a process, configured from the
//! environment (`MISIM_DNS_ADDR`, `MISIM_DNS_RECORDS`).

use std::sync::Arc;

use anyhow::Context;
use misim_dns::Config;
use misim_dns::serve::DnsLimits;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    misim_runtime::telemetry::init();
    let cfg = match Config::from_env(&misim_types::ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("bad configuration: {e}");
            std::process::exit(64);
        }
    };
    let udp = tokio::net::UdpSocket::bind(cfg.addr)
        .await
        .with_context(|| format!("binding udp {}", cfg.addr))?;
    let tcp = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .with_context(|| format!("binding tcp {}", cfg.addr))?;
    tracing::info!(udp = %udp.local_addr()?, tcp = %tcp.local_addr()?, records = %cfg.records, "misim-dns listening");
    let shutdown = misim_runtime::Shutdown::new();
    tokio::spawn(misim_runtime::cancel_on_signal(shutdown.clone()));
    misim_dns::serve::serve(
        Arc::new(cfg.records),
        udp,
        tcp,
        shutdown,
        DnsLimits::default(),
    )
    .await
    .context("serving dns")
}
