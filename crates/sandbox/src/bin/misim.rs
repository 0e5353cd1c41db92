//! `misim`: run the whole sandbox, or act inside one of its VMs.

use std::process::ExitCode;

use clap::Parser;

/// jemalloc, not glibc's malloc: with 100,000 VMs glibc's arenas kept the memory of a
/// restart's first scans and took 2-3 times the CPU catching up (docs/performance.md
/// finding 13).
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
