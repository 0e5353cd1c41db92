//! `misim oidc`: tokens of the sandbox's OIDC issuers (a Kubernetes cluster's
//! service-account issuer, GitHub Actions'), for workload identity federation.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use misim_proto::oidc::v1 as pb;

use crate::cli::{admin_channel, default_data_dir, env_value, read_env_file};

#[derive(Debug, Subcommand)]
pub(crate) enum OidcCommand {
    /// Print a signed token of one issuer (the external token a pod or CI job
    /// trades for an Entra token).
    Token {
        /// Which issuer: `kubernetes` or `github`.
        #[arg(long)]
        issuer: String,
        /// The cluster (Kubernetes only): its issuer is created with its first token.
        #[arg(long, default_value = "default")]
        cluster: String,
        /// The `sub` claim: `system:serviceaccount:NS:SA` for Kubernetes,
        /// `repo:OWNER/REPO:ref:refs/heads/main` (or `:environment:NAME`, ...) for GitHub.
        #[arg(long)]
        subject: String,
        /// The `aud` claim (default `api://AzureADTokenExchange`).
        #[arg(long)]
        audience: Option<String>,
        /// Lifetime: seconds, or with a unit (`90s`, `30m`, `1h`, `1d`); at most 24h.
        #[arg(long, default_value = "1h", value_parser = misim_types::time::parse_duration)]
        lifetime: std::time::Duration,
        /// The sandbox's data directory (its misim.env and control.key are read).
        #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
    },
    /// List the issuers: URL, discovery document, JWKS and key id.
    Issuers {
        /// The sandbox's data directory.
        #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
    },
}

async fn client(
    data_dir: &std::path::Path,
) -> anyhow::Result<pb::issuers_client::IssuersClient<misim_proto::auth::ControlChannel>> {
    let env = read_env_file(data_dir)?;
    let url = env_value(&env, "MISIM_OIDC_GRPC_URL")?;
    Ok(pb::issuers_client::IssuersClient::new(admin_channel(
        data_dir, &url,
    )?))
}

pub(crate) async fn run(command: OidcCommand) -> anyhow::Result<ExitCode> {
    match command {
        OidcCommand::Token {
            issuer,
            cluster,
            subject,
            audience,
            lifetime,
            data_dir,
        } => {
            let (kind, cluster) = match issuer.to_ascii_lowercase().as_str() {
                "kubernetes" | "k8s" | "aks" => (pb::IssuerKind::Kubernetes, cluster),
                "github" => (pb::IssuerKind::Github, String::new()),
                other => anyhow::bail!("unknown issuer {other}: kubernetes or github"),
            };
            let minted = client(&data_dir)
                .await?
                .mint_token(pb::MintTokenRequest {
                    kind: kind.into(),
                    cluster,
                    subject,
                    audience: audience.unwrap_or_default(),
                    lifetime_seconds: i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX),
                })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))
                .context("minting the token")?
                .into_inner();
            println!("{}", minted.token);
        }
        OidcCommand::Issuers { data_dir } => {
            let issuers = client(&data_dir)
                .await?
                .list_issuers(pb::ListIssuersRequest {})
                .await
                .context("listing the issuers (is `misim up` running?)")?
                .into_inner()
                .issuers;
            for i in issuers {
                let kind = match pb::IssuerKind::try_from(i.kind) {
                    Ok(pb::IssuerKind::Github) => "github".to_owned(),
                    _ => format!("kubernetes/{}", i.cluster),
                };
                println!("{kind}\t{}\tjwks {}\tkid {}", i.url, i.jwks_uri, i.kid);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
