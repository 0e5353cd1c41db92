//! `misim`: run the whole sandbox, or act inside one of its VMs.

use std::process::ExitCode;

use clap::Parser;

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
