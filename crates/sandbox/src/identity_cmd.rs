//! `misim identity renew`: renew managed-identity certificates now, whatever their age
//! (`misim.arm.v1.Operations/RenewCredentials`, owner only), the way ARM renews them 45
//! days into their 90: the new certificate goes to Entra first, then to IMDS, and the old
//! one stays accepted until it expires. Works with `misim up` (its misim.env) and in the
//! compose sandbox's service containers (`MISIM_ARM_GRPC_URL` from the environment).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use misim_proto::arm::v1 as pb;

use crate::cli::{admin_channel, default_data_dir};
use crate::fault_cmd::setting;

#[derive(Debug, Subcommand)]
pub(crate) enum IdentityCommand {
    /// Renew the certificates of the named managed identities (or of every one) now.
    Renew {
        /// Client ids, object ids, user-assigned identities' resource ids or VMs' resource
        /// ids (a VM's system-assigned identity). An unknown one renews nothing.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        identities: Vec<String>,
        /// Every managed identity of the sandbox.
        #[arg(long)]
        all: bool,
        /// One JSON object per identity instead of a table.
        #[arg(long)]
        json: bool,
        /// The sandbox's data directory (its misim.env and control.key).
        #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
    },
}

pub(crate) async fn run(command: IdentityCommand) -> anyhow::Result<ExitCode> {
    let IdentityCommand::Renew {
        identities,
        all,
        json,
        data_dir,
    } = command;
    let url = setting(&data_dir, &["MISIM_ARM_GRPC_URL"])?;
    let mut client = pb::operations_client::OperationsClient::new(admin_channel(&data_dir, &url)?);
    let report = client
        .renew_credentials(pb::RenewCredentialsRequest { all, identities })
        .await
        .map_err(|s| match s.code() {
            // ARM's own refusal names the problem (an unknown identity).
            tonic::Code::NotFound | tonic::Code::InvalidArgument => {
                anyhow::anyhow!("{}", s.message())
            }
            _ => anyhow::anyhow!("{url}: {} (is the sandbox running?)", s.message()),
        })
        .context("renewing managed-identity certificates")?
        .into_inner();
    for r in &report.renewed {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "resourceId": r.resource_id,
                    "principalId": r.principal_id,
                    "clientId": r.client_id,
                    "previousThumbprint": r.previous_thumbprint,
                    "thumbprint": r.thumbprint,
                    "done": r.done,
                })
            );
        } else {
            println!(
                "{}\t{}\t{} -> {}\t{}",
                r.client_id,
                r.resource_id,
                r.previous_thumbprint,
                r.thumbprint,
                if r.done {
                    "renewed"
                } else {
                    "pending (ARM's reconciler completes it)"
                }
            );
        }
    }
    if report.renewed.is_empty() {
        eprintln!("no managed identity to renew");
    }
    Ok(ExitCode::SUCCESS)
}
