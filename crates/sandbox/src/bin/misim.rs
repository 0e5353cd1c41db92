//! `misim`: run the whole sandbox, or act inside one of its VMs.

use std::process::ExitCode;

use clap::Parser;

/// jemalloc, not glibc's malloc: at 100,000 VMs glibc cost more CPU per request and 2-3
/// times the CPU of a restart's catch-up (docs/performance.md findings 12 and 13).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    misim_runtime::telemetry::init();
    let cli = misim_sandbox::cli::Cli::parse();
    match misim_sandbox::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("misim: {e:#}");
            ExitCode::FAILURE
        }
    }
}
