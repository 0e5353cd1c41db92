//! `misim pod exec`: runs a command the way AKS's workload-identity webhook
//! prepares a pod (docs/workload-identity.md, "Pods"): the four `AZURE_*`
//! variables and a projected service-account token of the cluster's issuer in
//! a file, refreshed while the command runs, as the kubelet refreshes it.
//! `misim pod project`: only the kubelet's part, for a pod that is a container
//! of its own (the compose sandbox's `pod1`). Both refresh by the sandbox
//! clock, the one the token's `iat`/`exp` come from, so `misim clock advance`
//! gets the pod a new token within seconds.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use misim_proto::admin::v1 as clock_pb;
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

/// How often, in real time, the refresher reads the sandbox clock: a
/// `misim clock advance` past the refresh time is noticed within this long.
/// The clock's gRPC has no move notification, and one read every few seconds
/// is cheap.
const CHECK_EVERY: Duration = Duration::from_secs(2);

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
    /// The gRPC URL of the clock the issuers stamp tokens with, which the
    /// refresh follows (default: `MISIM_ADMIN_GRPC_URL` of misim.env; the
    /// compose sandbox: the `oidc` service's own clock).
    #[arg(long)]
    clock_url: Option<String>,
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

/// A token and its `iat`, Unix seconds on the issuer's (the sandbox's) clock.
#[derive(Debug)]
struct Minted {
    token: String,
    issued_at: i64,
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
    async fn mint(self) -> anyhow::Result<Minted> {
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
            .context("minting the service-account token (is `misim up` running?)")?
            .into_inner();
        Ok(Minted {
            token: minted.token,
            issued_at: minted.issued_at_unix,
        })
    }
}

/// Reads the sandbox clock the issuers stamp tokens with.
#[derive(Clone)]
struct SandboxClock(clock_pb::clock_client::ClockClient<misim_proto::auth::ControlChannel>);

impl SandboxClock {
    fn new(data_dir: &Path, url: &str) -> anyhow::Result<Self> {
        Ok(Self(clock_pb::clock_client::ClockClient::new(
            admin_channel(data_dir, url)?,
        )))
    }

    /// The sandbox's time, Unix seconds.
    async fn now(self) -> anyhow::Result<i64> {
        let state = self
            .0
            .clone()
            .show(clock_pb::ShowClockRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))
            .context("reading the sandbox clock")?;
        Ok(state.into_inner().now_unix_seconds)
    }
}

/// Rewrites `file` with a fresh token once `every` has passed on the sandbox
/// clock (`now`) since the current token's `iat`, forever (the caller aborts
/// it when the command ends). The clock is read at least every
/// [`CHECK_EVERY`] of real time (`wait`), so a clock move is noticed within
/// that; between moves the sandbox clock ticks with real time, so a wait never
/// overshoots the refresh. A failed mint is logged and tried again after
/// [`RETRY_AFTER`]; the old token stays in place meanwhile. The file is
/// replaced by a rename, so a reader never sees half a token (the kubelet's
/// atomic writer swaps a symlink for the same reason).
async fn keep_fresh<M, MF, N, NF, W, WF>(
    file: PathBuf,
    mut issued_at: i64,
    every: Duration,
    mut mint: M,
    mut now: N,
    mut wait: W,
) where
    M: FnMut() -> MF,
    MF: Future<Output = anyhow::Result<Minted>>,
    N: FnMut() -> NF,
    NF: Future<Output = anyhow::Result<i64>>,
    W: FnMut(Duration) -> WF,
    WF: Future<Output = ()>,
{
    let every = i64::try_from(every.as_secs()).unwrap_or(i64::MAX);
    loop {
        let due = issued_at.saturating_add(every);
        let pause = match now().await {
            Ok(t) if t < due => CHECK_EVERY.min(Duration::from_secs(due.abs_diff(t))),
            Ok(_) => match mint().await.and_then(|m| {
                write_atomically(&file, &m.token)?;
                Ok(m.issued_at)
            }) {
                Ok(iat) => {
                    // What `docker logs` of the compose sandbox's pod1-token shows.
                    tracing::info!(file = %file.display(), issued_at = iat, "projected service-account token rewritten");
                    issued_at = iat;
                    // Not straight back to the clock: were it another clock
                    // than the issuer's, far ahead, this would mint in a loop.
                    CHECK_EVERY
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "refreshing the pod's token failed; retrying");
                    RETRY_AFTER
                }
            },
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "the sandbox clock could not be read; retrying");
                CHECK_EVERY
            }
        };
        wait(pause).await;
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
    let clock_url = match a.clock_url {
        Some(u) => u,
        None => env_value(&read_env_file(&a.data_dir)?, "MISIM_ADMIN_GRPC_URL")?,
    };
    let clock = SandboxClock::new(&a.data_dir, &clock_url)?;
    let minter = Minter {
        client: pb::issuers_client::IssuersClient::new(admin_channel(&a.data_dir, &url)?),
        cluster: a.cluster,
        subject: format!("system:serviceaccount:{ns}:{sa}"),
        lifetime: a.token_expiration,
    };
    let first = minter.clone().mint().await?;
    write_atomically(&a.out, &first.token)?;
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
        () = keep_fresh(
            a.out,
            first.issued_at,
            every,
            move || minter.clone().mint(),
            move || clock.clone().now(),
            tokio::time::sleep,
        ) => {}
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
    let clock = SandboxClock::new(&a.data_dir, &env_value(&env, "MISIM_ADMIN_GRPC_URL")?)?;
    let dir = TokenDir::create(&a.data_dir, ns, sa)?;
    let file = dir.0.join(TOKEN_FILE_NAME);
    let first = minter.clone().mint().await?;
    write_atomically(&file, &first.token)?;
    let refresher = tokio::spawn(keep_fresh(
        file.clone(),
        first.issued_at,
        refresh_after(a.token_expiration),
        move || minter.clone().mint(),
        move || clock.clone().now(),
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

    /// The refresher follows the sandbox clock, not real time: it rewrites
    /// the token once 80% of its life has passed on that clock (a clock jump
    /// included), re-reads the clock at least every [`CHECK_EVERY`], and keeps
    /// the old token when a mint fails. Ticks and the clock come from the
    /// test, not from time.
    #[tokio::test]
    async fn the_token_is_refreshed_by_the_sandbox_clock_and_kept_on_failure() {
        use std::sync::atomic::AtomicI64;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(TOKEN_FILE_NAME);
        std::fs::write(&file, "t0").unwrap();
        let tick = Arc::new(tokio::sync::Notify::new());
        let waits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let now = Arc::new(AtomicI64::new(1_000));
        let task = tokio::spawn(keep_fresh(
            file.clone(),
            1_000,
            Duration::from_secs(2880),
            {
                let (calls, now) = (calls.clone(), now.clone());
                move || {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    let issued_at = now.load(Ordering::SeqCst);
                    async move {
                        if n == 2 {
                            anyhow::bail!("issuer down")
                        }
                        Ok(Minted {
                            token: format!("t{n}"),
                            issued_at,
                        })
                    }
                }
            },
            {
                let now = now.clone();
                move || {
                    let t = now.load(Ordering::SeqCst);
                    async move { Ok(t) }
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
        // Wait for the refresher's `round`th pause: it has finished the
        // round before (read the clock, minted, written or failed).
        let paused = |round: usize| {
            let waits = waits.clone();
            async move {
                misim_testkit::eventually("the refresher to pause", || async {
                    let w = waits.lock().unwrap().clone();
                    w.get(round - 1).copied().ok_or(w.len())
                })
                .await
            }
        };
        // Fresh: a check after CHECK_EVERY, no mint.
        assert_eq!(paused(1).await, CHECK_EVERY);
        // One second of sandbox time before the refresh: a one-second pause.
        now.store(1_000 + 2879, Ordering::SeqCst);
        tick.notify_one();
        assert_eq!(paused(2).await, Duration::from_secs(1));
        assert_eq!((read(), calls.load(Ordering::SeqCst)), ("t0".into(), 0));
        // The clock jumps past the token's life: the next check mints.
        now.store(1_000 + 7200, Ordering::SeqCst);
        tick.notify_one();
        assert_eq!(paused(3).await, CHECK_EVERY);
        assert_eq!(read(), "t1");
        // The new token's iat counts now: no mint until 80% of its life.
        tick.notify_one();
        assert_eq!(paused(4).await, CHECK_EVERY);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Due again; the issuer fails: the old token stays, retry later.
        now.store(1_000 + 7200 + 2880, Ordering::SeqCst);
        tick.notify_one();
        assert_eq!(paused(5).await, RETRY_AFTER);
        assert_eq!(read(), "t1", "a failed refresh keeps the old token");
        tick.notify_one();
        paused(6).await;
        assert_eq!(read(), "t3");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        task.abort();
    }

    /// An unreadable clock is retried, with nothing minted meanwhile.
    #[tokio::test]
    async fn an_unreadable_clock_is_read_again_after_a_pause() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(TOKEN_FILE_NAME);
        let waits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn(keep_fresh(
            file.clone(),
            0,
            Duration::from_secs(2880),
            || async { anyhow::bail!("never called") },
            || async { anyhow::bail!("clock down") },
            {
                let waits = waits.clone();
                move |d| {
                    waits.lock().unwrap().push(d);
                    std::future::pending::<()>()
                }
            },
        ));
        misim_testkit::eventually("the refresher to pause", || async {
            let w = waits.lock().unwrap().clone();
            if w.is_empty() { Err(0) } else { Ok(()) }
        })
        .await;
        assert_eq!(waits.lock().unwrap()[..], [CHECK_EVERY]);
        assert!(!file.exists());
        task.abort();
    }
}
