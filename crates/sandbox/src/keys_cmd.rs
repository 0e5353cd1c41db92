//! `misim keys`: Entra's token-signing keys (`misim.admin.v1.SigningKeys`): list the ring, roll it
//! over.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use misim_proto::admin::v1 as pb;
use misim_types::time::format_rfc3339;

use crate::cli::{admin_channel, default_data_dir, env_value, read_env_file};

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// List the keys: current (signing), next (published, not signing yet), retired
    /// (published until the tokens they signed have expired).
    List {
        /// The sandbox's data directory.
        #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
        /// Entra's gRPC URL (default: `MISIM_ENTRA_GRPC_URL` of misim.env).
        #[arg(long, env = "MISIM_ENTRA_GRPC_URL")]
        url: Option<String>,
    },
    /// Roll over now: the next key starts signing, the current one retires.
    Roll {
        /// The sandbox's data directory.
        #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
        /// Entra's gRPC URL (default: `MISIM_ENTRA_GRPC_URL` of misim.env).
        #[arg(long, env = "MISIM_ENTRA_GRPC_URL")]
        url: Option<String>,
    },
}

fn print(ring: &pb::SigningKeyRing) {
    let when = |t: i64| {
        if t == 0 {
            "-".to_owned()
        } else {
            format_rfc3339(t)
        }
    };
    for k in &ring.keys {
        println!(
            "{}\t{:8}\tsigning from {}\tretired {}\t{}",
            k.kid,
            k.state,
            when(k.active_from_unix),
            when(k.retired_unix),
            if k.published {
                "published"
            } else {
                "unpublished"
            }
        );
    }
}

pub(crate) async fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    let (data_dir, url, roll) = match command {
        KeysCommand::List { data_dir, url } => (data_dir, url, false),
        KeysCommand::Roll { data_dir, url } => (data_dir, url, true),
    };
    let url = match url {
        Some(u) => u,
        None => env_value(&read_env_file(&data_dir)?, "MISIM_ENTRA_GRPC_URL")?,
    };
    let mut client =
        pb::signing_keys_client::SigningKeysClient::new(admin_channel(&data_dir, &url)?);
    let ring = if roll {
        client.roll(pb::RollSigningKeysRequest {}).await
    } else {
        client.list(pb::ListSigningKeysRequest {}).await
    }
    .map_err(|s| anyhow::anyhow!("{}", s.message()))
    .with_context(|| format!("asking Entra at {url} (is the sandbox running?)"))?
    .into_inner();
    print(&ring);
    Ok(ExitCode::SUCCESS)
}
