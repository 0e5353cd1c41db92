//! `misim pod exec`: runs a command the way AKS's workload-identity webhook
//! prepares a pod (docs/workload-identity.md, "Pods"): the four `AZURE_*`
//! variables and a projected service-account token of the cluster's issuer in
//! a file, refreshed while the command runs, as the kubelet refreshes it.
//! `misim pod project`: only the kubelet's part, for a pod that is a container
//! of its own (the compose sandbox's `pod1`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use misim_proto::oidc::v1 as pb;

use crate::cli::{admin_channel, default_data_dir, env_value, read_env_file};
use crate::write_atomically;
use misim_types::time::parse_duration;

/// The token file's name: the webhook projects it to
/// `/var/run/secrets/azure/tokens/azure-identity-token`.
pub(crate) const TOKEN_FILE_NAME: &str = "azure-identity-token";

/// The audience the webhook projects (the FIC's audience).
const TOKEN_AUDIENCE: &str = "api://AzureADTokenExchange";

/// The webhook's accepted range for the projected token's `expirationSeconds`
/// (annotation `azure.workload.identity/service-account-token-expiration`).
const MIN_EXPIRATION: Duration = Duration::from_secs(3600);
const MAX_EXPIRATION: Duration = Duration::from_secs(86_400);

/// How soon a failed refresh is tried again (the token still has a fifth of
/// its lifetime left when the first try fails).
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Variables that would make a credential chain pick something other than
/// workload identity. A pod's environment has none of them; the caller's
/// shell might, so they are removed from what the command inherits.
const OTHER_CREDENTIALS: &[&str] = &[
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
];

#[derive(Debug, Subcommand)]
pub(crate) enum PodCommand {
    /// Run a command as a pod whose service account is federated with an
    /// application or user-assigned identity (AKS workload identity).
    Exec(ExecArgs),
    /// Keep a pod's projected service-account token fresh in a file, as the
    /// kubelet does, until stopped (the compose sandbox's `pod1-token`).
    Project(ProjectArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ProjectArgs {
    /// The cluster whose service-account issuer signs the token.
    #[arg(long, default_value = "default")]
    cluster: String,
    /// The pod's service account, `NAMESPACE/NAME`.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    service_account: String,
    /// The token's lifetime: 1h to 24h; rewritten after 80% of it.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    token_expiration: Duration,
    /// The file to keep the token in (the pod's `AZURE_FEDERATED_TOKEN_FILE`,
    /// on a volume the pod mounts read-only).
    #[arg(long)]
    out: PathBuf,
    /// The issuers' gRPC URL (default: `MISIM_OIDC_GRPC_URL` of misim.env).
    #[arg(long, env = "MISIM_OIDC_GRPC_URL")]
    url: Option<String>,
    /// The sandbox's data directory (its control.key, or `MISIM_CONTROL_KEY_FILE`).
    #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// The cluster whose service-account issuer signs the token.
    #[arg(long, default_value = "default")]
    cluster: String,
    /// The pod's service account, `NAMESPACE/NAME`: the token's subject is
    /// `system:serviceaccount:NAMESPACE:NAME`.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    service_account: String,
    /// `AZURE_CLIENT_ID`: the application's or user-assigned identity's
    /// client id (the service account's `azure.workload.identity/client-id`).
    #[arg(long)]
    client_id: String,
    /// `AZURE_TENANT_ID` (default: the sandbox's tenant).
    #[arg(long)]
    tenant_id: Option<String>,
    /// The projected token's lifetime (`expirationSeconds`): 1h to 24h as the
    /// webhook accepts; refreshed after 80% of it, as the kubelet does.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    token_expiration: Duration,
    /// The sandbox's data directory (its misim.env and control.key are read).
    #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// `NAMESPACE/NAME` → `(namespace, name)`, each as Kubernetes allows it: the
/// namespace a DNS label, the name a DNS subdomain.
pub(crate) fn parse_service_account(text: &str) -> anyhow::Result<(&str, &str)> {
    let (ns, name) = text
        .split_once('/')
        .with_context(|| format!("--service-account {text:?}: give NAMESPACE/NAME"))?;
    let label = |s: &str, dots: bool, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.')
            })
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    anyhow::ensure!(
        label(ns, false, 63),
        "namespace {ns:?}: lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit"
    );
    anyhow::ensure!(
        label(name, true, 253),
        "service account {name:?}: lower-case letters, digits, '-' and '.', at most 253, starting and ending with a letter or digit"
    );
    Ok((ns, name))
}

/// When the kubelet refreshes a projected token: once it is older than 80%
/// of its lifetime or than 24 hours.
pub(crate) fn refresh_after(lifetime: Duration) -> Duration {
    (lifetime * 4 / 5).min(Duration::from_secs(86_400))
}

/// What the webhook injects, with misim's Entra as the authority.
pub(crate) fn webhook_env(
    entra_url: &str,
    tenant_id: &str,
    client_id: &str,
    token_file: &Path,
    ca_bundle: &str,
) -> Vec<(&'static str, String)> {
    vec![
        // The webhook's value ends with a slash (`https://login.microsoftonline.com/`).
        (
            "AZURE_AUTHORITY_HOST",
            format!("{}/", entra_url.trim_end_matches('/')),
        ),
        ("AZURE_CLIENT_ID", client_id.to_owned()),
        ("AZURE_TENANT_ID", tenant_id.to_owned()),
        (
            "AZURE_FEDERATED_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        // The sandbox CA, the documented way for requests-based clients and OpenSSL.
        ("REQUESTS_CA_BUNDLE", ca_bundle.to_owned()),
        ("SSL_CERT_FILE", ca_bundle.to_owned()),
        ("CURL_CA_BUNDLE", ca_bundle.to_owned()),
    ]
}

/// A shell's exit code for a finished command: its own, or 128 + the signal
/// that ended it.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    #[cfg(unix)]
    if let Some(sig) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return u8::try_from(128 + sig).unwrap_or(255);
    }
    status
        .code()
        .map_or(1, |c| u8::try_from(c.clamp(0, 255)).unwrap_or(255))
}

/// Mints the pod's tokens through the issuers' gRPC service.
#[derive(Clone)]
struct Minter {
    client: pb::issuers_client::IssuersClient<misim_proto::auth::ControlChannel>,
    cluster: String,
    subject: String,
    lifetime: Duration,
}

impl Minter {
    async fn mint(self) -> anyhow::Result<String> {
        let minted = self
            .client
            .clone()
            .mint_token(pb::MintTokenRequest {
                kind: pb::IssuerKind::Kubernetes.into(),
                cluster: self.cluster,
                subject: self.subject,
                audience: TOKEN_AUDIENCE.into(),
                lifetime_seconds: i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX),
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))
            .context("minting the service-account token (is `misim up` running?)")?;
        Ok(minted.into_inner().token)
    }
}

/// Rewrites `file` with a fresh token every `every`, forever (the caller
/// aborts it when the command ends). A failed mint is logged and tried again
/// after [`RETRY_AFTER`]; the old token stays in place meanwhile. The file is
/// replaced by a rename, so a reader never sees half a token (the kubelet's
/// atomic writer swaps a symlink for the same reason).
async fn keep_fresh<M, MF, W, WF>(file: PathBuf, every: Duration, mut mint: M, mut wait: W)
where
    M: FnMut() -> MF,
    MF: Future<Output = anyhow::Result<String>>,
    W: FnMut(Duration) -> WF,
    WF: Future<Output = ()>,
{
    let mut pause = every;
    loop {
        wait(pause).await;
        pause = match mint().await.and_then(|t| write_atomically(&file, &t)) {
            Ok(()) => every,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "refreshing the pod's token failed; retrying");
                RETRY_AFTER.min(every)
            }
        };
    }
}

/// The pod's private directory for its token (0700 under the data
/// directory), removed when the command ends.
struct TokenDir(PathBuf);

impl TokenDir {
    fn create(data_dir: &Path, ns: &str, sa: &str) -> anyhow::Result<Self> {
        let parent = data_dir.join("pods");
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let dir = parent.join(format!("{ns}.{sa}.{:016x}", rand::random::<u64>()));
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TokenDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory holds only an expiring token.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check_expiration(lifetime: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(
        (MIN_EXPIRATION..=MAX_EXPIRATION).contains(&lifetime),
        "--token-expiration must be between 1h and 24h (the webhook's range)"
    );
    Ok(())
}

pub(crate) async fn run(command: PodCommand) -> anyhow::Result<ExitCode> {
    match command {
        PodCommand::Exec(a) => exec(a).await,
        PodCommand::Project(a) => project(a).await,
    }
}

/// `misim pod project`: the first token is written before anything else
/// (failing if the issuer cannot mint it, so a supervisor restarts the
/// command), then rewritten after 80% of its lifetime until SIGTERM/SIGINT.
async fn project(a: ProjectArgs) -> anyhow::Result<ExitCode> {
    let (ns, sa) = parse_service_account(&a.service_account)?;
    check_expiration(a.token_expiration)?;
    let url = match a.url {
        Some(u) => u,
        None => env_value(&read_env_file(&a.data_dir)?, "MISIM_OIDC_GRPC_URL")?,
    };
    let minter = Minter {
        client: pb::issuers_client::IssuersClient::new(admin_channel(&a.data_dir, &url)?),
        cluster: a.cluster,
        subject: format!("system:serviceaccount:{ns}:{sa}"),
        lifetime: a.token_expiration,
    };
    write_atomically(&a.out, &minter.clone().mint().await?)?;
    let every = refresh_after(a.token_expiration);
    tracing::info!(
        file = %a.out.display(),
        subject = %minter.subject,
        refresh_secs = every.as_secs(),
        "projected service-account token written"
    );
    let shutdown = misim_runtime::Shutdown::new();
    tokio::spawn(misim_runtime::cancel_on_signal(shutdown.clone()));
    tokio::select! {
        () = keep_fresh(a.out, every, move || minter.clone().mint(), tokio::time::sleep) => {}
        () = shutdown.cancelled() => {}
    }
    Ok(ExitCode::SUCCESS)
}

async fn exec(a: ExecArgs) -> anyhow::Result<ExitCode> {
    let (ns, sa) = parse_service_account(&a.service_account)?;
    check_expiration(a.token_expiration)?;
    let env = read_env_file(&a.data_dir)?;
    let entra_url = env_value(&env, "MISIM_ENTRA_URL")?;
    let tenant_id = match a.tenant_id {
        Some(t) => t,
        None => env_value(&env, "MISIM_TENANT_ID")?,
    };
    let ca = env_value(&env, "MISIM_CA_BUNDLE")?;
    let minter = Minter {
        client: pb::issuers_client::IssuersClient::new(admin_channel(
            &a.data_dir,
            &env_value(&env, "MISIM_OIDC_GRPC_URL")?,
        )?),
        cluster: a.cluster,
        subject: format!("system:serviceaccount:{ns}:{sa}"),
        lifetime: a.token_expiration,
    };
    let dir = TokenDir::create(&a.data_dir, ns, sa)?;
    let file = dir.0.join(TOKEN_FILE_NAME);
    write_atomically(&file, &minter.clone().mint().await?)?;
    let refresher = tokio::spawn(keep_fresh(
        file.clone(),
        refresh_after(a.token_expiration),
        move || minter.clone().mint(),
        tokio::time::sleep,
    ));

    let mut cmd = tokio::process::Command::new(&a.command[0]);
    cmd.args(&a.command[1..]);
    for k in OTHER_CREDENTIALS {
        cmd.env_remove(k);
    }
    crate::cli::without_owner_credentials(cmd.as_std_mut());
    cmd.envs(webhook_env(
        &entra_url,
        &tenant_id,
        &a.client_id,
        &file,
        &ca,
    ));
    let status = cmd.status().await;
    refresher.abort();
    drop(dir);
    let status = status.with_context(|| format!("running {}", a.command[0]))?;
    Ok(ExitCode::from(exit_code(status)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn service_accounts_are_namespace_slash_name() {
        assert_eq!(
            parse_service_account("payments/api").unwrap(),
            ("payments", "api")
        );
        assert_eq!(
            parse_service_account("kube-system/a.b-c").unwrap(),
            ("kube-system", "a.b-c")
        );
        for bad in [
            "api",
            "/api",
            "payments/",
            "Payments/api",
            "pay.ments/api",
            "payments/-api",
            "payments/api/x",
        ] {
            assert!(parse_service_account(bad).is_err(), "{bad}");
        }
        assert!(parse_service_account(&format!("{}/a", "n".repeat(64))).is_err());
    }

    #[test]
    fn tokens_are_refreshed_at_80_percent_of_their_lifetime() {
        assert_eq!(
            refresh_after(Duration::from_secs(3600)),
            Duration::from_secs(2880)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(86_400)),
            Duration::from_secs(69_120)
        );
    }

    #[test]
    fn the_environment_is_the_webhooks() {
        let env = webhook_env(
            "https://127.0.0.1:8444",
            "t1",
            "c1",
            Path::new("/d/azure-identity-token"),
            "/d/ca.pem",
        );
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("AZURE_AUTHORITY_HOST"), Some("https://127.0.0.1:8444/"));
        assert_eq!(get("AZURE_CLIENT_ID"), Some("c1"));
        assert_eq!(get("AZURE_TENANT_ID"), Some("t1"));
        assert_eq!(
            get("AZURE_FEDERATED_TOKEN_FILE"),
            Some("/d/azure-identity-token")
        );
        assert_eq!(get("REQUESTS_CA_BUNDLE"), Some("/d/ca.pem"));
        assert_eq!(get("SSL_CERT_FILE"), Some("/d/ca.pem"));
    }

    #[cfg(unix)]
    #[test]
    fn exit_codes_pass_through_and_signals_read_as_a_shells() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(0)), 0);
        // Killed by SIGKILL (9).
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(9)), 137);
    }

    /// The refresher replaces the token at each tick and keeps the old one
    /// when a mint fails. Ticks come from the test, not from time.
    #[tokio::test]
    async fn the_token_file_is_replaced_at_each_refresh_and_kept_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(TOKEN_FILE_NAME);
        std::fs::write(&file, "t0").unwrap();
        let tick = Arc::new(tokio::sync::Notify::new());
        let waits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(keep_fresh(
            file.clone(),
            Duration::from_secs(2880),
            {
                let calls = calls.clone();
                move || {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        if n == 2 {
                            anyhow::bail!("issuer down")
                        }
                        Ok(format!("t{n}"))
                    }
                }
            },
            {
                let (tick, waits) = (tick.clone(), waits.clone());
                move |d| {
                    waits.lock().unwrap().push(d);
                    let tick = tick.clone();
                    async move { tick.notified().await }
                }
            },
        ));
        let read = || std::fs::read_to_string(&file).unwrap();
        // One tick; the refresher has finished that round (minted, written or
        // failed) once it waits again.
        let refresh = |round: usize| {
            let (tick, waits) = (tick.clone(), waits.clone());
            async move {
                tick.notify_one();
                misim_testkit::eventually("the refresher to wait again", || async {
                    let n = waits.lock().unwrap().len();
                    if n > round { Ok(()) } else { Err(n) }
                })
                .await;
            }
        };
        assert_eq!(read(), "t0");
        refresh(1).await;
        assert_eq!(read(), "t1");
        refresh(2).await;
        assert_eq!(read(), "t1", "a failed refresh keeps the old token");
        refresh(3).await;
        assert_eq!(read(), "t3");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        task.abort();
        let waits = waits.lock().unwrap().clone();
        // After the failure (the second mint) the pause is the retry's.
        assert_eq!(
            &waits[..3],
            &[
                Duration::from_secs(2880),
                Duration::from_secs(2880),
                RETRY_AFTER
            ]
        );
    }
}
