//! The `misim` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::{Ports, Sandbox, SandboxConfig};

#[path = "client.rs"]
mod client;

/// misim: Azure's managed-identity control plane (ARM, Entra ID, IMDS, Key Vault) on your machine.
#[derive(Debug, Parser)]
#[command(name = "misim", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in this process until Ctrl-C.
    Up {
        /// Where state lives (one sled database per service, the CA, misim.env).
        #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
        /// Bind every listener to a free port instead of the fixed defaults
        /// (ARM 8443, Entra 8444, Key Vault 8445, OIDC issuers 8446, gRPC 50051-50056).
        #[arg(long)]
        random_ports: bool,
        /// IMDS's per-VM limits of the identity endpoint: `on` (Azure's 20
        /// requests per second, 5 in flight), `off`, requests per second, or
        /// `RATE,CONCURRENT` (each a number or `off`).
        #[arg(long, env = "MISIM_IMDS_THROTTLE", default_value = "on", value_parser = misim_chaos::ThrottleConfig::parse)]
        imds_throttle: misim_chaos::ThrottleConfig,
        /// How long a new role assignment takes to take effect (`30s`, `2m`;
        /// 0, the default, is at once).
        #[arg(long, env = "MISIM_ROLE_ASSIGNMENT_DELAY", default_value = "0", value_parser = misim_types::time::parse_duration)]
        role_assignment_delay: std::time::Duration,
        /// How long IMDS answers "Identity not found" for a new identity
        /// (`30s`, `2m`; 0, the default, is at once).
        #[arg(long, env = "MISIM_IDENTITY_DELAY", default_value = "0", value_parser = misim_types::time::parse_duration)]
        identity_delay: std::time::Duration,
        /// A scenario to apply once every service answers, before `misim up` reports
        /// ready (docs/scenarios.md); if it fails, `misim up` stops with the error.
        #[arg(long, env = "MISIM_SCENARIO")]
        scenario: Option<PathBuf>,
    },
    /// Print the environment file of a running (or last) sandbox.
    Env {
        /// The sandbox's data directory.
        #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
    },
    /// VM commands.
    Vm {
        #[command(subcommand)]
        command: VmCommand,
    },
    /// Check that services answer (container healthchecks): exit 0 when all do.
    Probe {
        #[command(subcommand)]
        command: client::ProbeCommand,
    },
    /// Inside a VM: get a managed-identity access token from IMDS (169.254.169.254).
    Token(client::TokenArgs),
    /// Read or write a Key Vault secret (with an IMDS token unless --token is given).
    Secret {
        #[command(subcommand)]
        command: client::SecretCommand,
    },
    /// Compare ARM's identities and VMs with Entra's service principals and
    /// IMDS's VMs; print every drift; exit 1 when there is any.
    Doctor {
        /// The sandbox's data directory (for `MISIM_ARM_GRPC_URL` in misim.env, and its control.key).
        #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
        /// ARM's gRPC URL (instead of the data directory's misim.env).
        #[arg(long, env = "MISIM_ARM_GRPC_URL")]
        arm_grpc_url: Option<String>,
        /// Wait up to this many seconds for pending operations to finish and drift to clear.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Print the `authorization` metadata value for calling misim's gRPC
    /// control plane by hand. Keep it out of command lines (other users read
    /// argv): `export MISIM_AUTH=$(misim control-token)`, then
    /// `grpcurl -expand-headers -H 'authorization: ${MISIM_AUTH}' ...`.
    ControlToken {
        /// The sandbox's data directory (its control.key is read).
        #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
        /// Who to call as: admin (may call everything), arm, entra, imds or keyvault.
        #[arg(long, default_value = "admin")]
        caller: String,
    },
    /// Wait until SIGTERM or Ctrl-C (the main process of a compose VM container).
    Idle,
    /// The sandbox certificate authority.
    Ca {
        #[command(subcommand)]
        command: client::CaCommand,
    },
    /// Service principals to test with, created the Azure way (Graph + ARM).
    Principal {
        #[command(subcommand)]
        command: PrincipalCommand,
    },
    /// The compose sandbox's generated secrets (control key, admin secret).
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// The sandbox's OIDC issuers (Kubernetes service accounts, GitHub Actions):
    /// tokens to trade for Entra tokens through federated identity credentials.
    Oidc {
        #[command(subcommand)]
        command: crate::oidc_cmd::OidcCommand,
    },
    /// Pods of an AKS-like cluster with workload identity: `misim pod exec`.
    Pod {
        #[command(subcommand)]
        command: crate::pod_cmd::PodCommand,
    },
    /// The sandbox's virtual clock: `show`, `advance 25h`, `set 2027-01-01T00:00:00Z`.
    /// Every service reads it (token lifetimes, IMDS's cache, secret and certificate expiry).
    Clock {
        #[command(subcommand)]
        command: crate::clock_cmd::ClockCommand,
    },
    /// Entra's token-signing keys: `list`, `roll` (the next key signs, the old stays
    /// published until its tokens expire).
    Keys {
        #[command(subcommand)]
        command: crate::keys_cmd::KeysCommand,
    },
    /// Managed identities: `renew` their certificates now (`--all`, or by client id,
    /// object id or resource id) instead of 45 days into their 90.
    Identity {
        #[command(subcommand)]
        command: crate::identity_cmd::IdentityCommand,
    },
    /// Fault injection: make a service answer chosen requests as Azure does
    /// when it fails (429, 410, AADSTS errors, PrincipalNotFound...).
    Fault {
        #[command(subcommand)]
        command: crate::fault_cmd::FaultCommand,
    },
    /// The decision log: every refused request, injected fault and throttled
    /// request, with who asked, what, and why.
    Log(crate::log_cmd::LogArgs),
    /// Make the sandbox match a scenario file (groups, identities with pinned ids, VMs,
    /// vaults, secrets, role assignments, faults, clock); idempotent.
    Apply(crate::scenario_cmd::ApplyArgs),
    /// Write the sandbox's current state as a scenario file.
    Export(crate::scenario_cmd::ExportArgs),
}

#[derive(Debug, Subcommand)]
enum SecretsCommand {
    /// Generate the control key (`control.key`) and the admin secret
    /// (`admin-secret`) in DIR unless they exist (the one-shot `secrets-init`).
    Init {
        /// The secrets directory (a volume only service containers mount).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print the bootstrap administrator's credentials as `misim.env` lines
    /// (run in the entra container: `docker compose exec -T entra misim secrets admin-env`).
    AdminEnv {
        /// The admin secret file.
        #[arg(long, env = "MISIM_ADMIN_SECRET_FILE")]
        secret_file: PathBuf,
        /// The tenant id.
        #[arg(long, env = "MISIM_TENANT_ID")]
        tenant_id: String,
        /// The subscription id.
        #[arg(long, env = "MISIM_SUBSCRIPTION_ID")]
        subscription_id: String,
        /// The admin application's app (client) id.
        #[arg(long, env = "MISIM_ADMIN_APP_ID")]
        app_id: String,
        /// The admin service principal's object id.
        #[arg(long, env = "MISIM_ADMIN_OBJECT_ID")]
        object_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum PrincipalCommand {
    /// Create an application, its service principal and a client secret through
    /// Microsoft Graph (as the bootstrap admin), then grant each `--role` at the
    /// `--scope` given with it through ARM; prints the credentials as JSON.
    Create {
        /// Display name of the application.
        #[arg(long)]
        name: String,
        /// A role (display name or GUID) to grant; pair each with a `--scope`.
        #[arg(long)]
        role: Vec<String>,
        /// The scope of the `--role` in the same position.
        #[arg(long)]
        scope: Vec<String>,
        /// The sandbox's data directory (its misim.env is read).
        #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum VmCommand {
    /// Run a command "inside" a VM: its managed-identity clients reach that VM's own IMDS.
    Exec {
        /// VM name (or full resource id).
        vm: String,
        /// Use the VM's App Service-style endpoint (IDENTITY_ENDPOINT + IDENTITY_HEADER)
        /// instead of IMDS (AZURE_POD_IDENTITY_AUTHORITY_HOST). The Rust SDK needs this.
        #[arg(long, conflicts_with = "isolated")]
        app_service: bool,
        /// Linux: run in its own user + network + mount namespace where 169.254.169.254 is
        /// the VM's IMDS and Azure's host names resolve to misim (no override variable).
        #[arg(long)]
        isolated: bool,
        /// The sandbox's data directory.
        #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Internal: the namespace side of `exec --isolated` (run by unshare).
    #[command(hide = true)]
    NsInit {
        /// The host side's private directory (relay socket, resolv.conf, hosts, CA bundle).
        #[arg(long)]
        dir: PathBuf,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// List VMs with their IMDS endpoints and identities.
    List {
        /// The sandbox's data directory.
        #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
    },
}

/// `$XDG_DATA_HOME/misim`, else `~/.local/share/misim`, else `./misim-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("misim");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/share/misim");
    }
    PathBuf::from("misim-data")
}

/// Runs the command line; the binary's `main` only calls this.
// long: one match arm per subcommand, each a call into its module.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up {
            data_dir,
            random_ports,
            imds_throttle,
            role_assignment_delay,
            identity_delay,
            scenario,
        } => {
            let mut config = SandboxConfig::new(&data_dir);
            config.imds_throttle = imds_throttle;
            config.role_assignment_delay = role_assignment_delay;
            config.identity_delay = identity_delay;
            up(config, random_ports, scenario).await
        }
        Command::Env { data_dir } => {
            print!("{}", read_env_file(&data_dir)?.join("\n"));
            println!();
            Ok(ExitCode::SUCCESS)
        }
        Command::Vm { command } => match command {
            VmCommand::Exec {
                vm,
                app_service,
                isolated,
                data_dir,
                command,
            } => {
                if isolated {
                    vm_exec_isolated(&data_dir, &vm, &command).await
                } else {
                    vm_exec(&data_dir, &vm, app_service, &command).await
                }
            }
            VmCommand::NsInit { dir, command } => crate::vm_exec::ns_init(&dir, &command).await,
            VmCommand::List { data_dir } => vm_list(&data_dir).await,
        },
        Command::Probe { command } => client::probe(command).await,
        Command::Token(args) => client::token(args).await,
        Command::Secret { command } => client::secret(command).await,
        Command::Ca { command } => client::ca(command),
        Command::Secrets { command } => secrets(command),
        Command::Principal {
            command:
                PrincipalCommand::Create {
                    name,
                    role,
                    scope,
                    data_dir,
                },
        } => {
            anyhow::ensure!(
                role.len() == scope.len(),
                "give one --scope for each --role"
            );
            let env = read_env_file(&data_dir)?;
            let ca_path = env_value(&env, "MISIM_CA_BUNDLE")?;
            let target = PublicApis {
                arm_url: env_value(&env, "MISIM_ARM_URL")?,
                entra_url: env_value(&env, "MISIM_ENTRA_URL")?,
                tenant_id: env_value(&env, "MISIM_TENANT_ID")?,
                subscription_id: env_value(&env, "MISIM_SUBSCRIPTION_ID")?,
                admin_client_id: env_value(&env, "MISIM_ADMIN_CLIENT_ID")?,
                admin_client_secret: env_value(&env, "MISIM_ADMIN_CLIENT_SECRET")?,
                ca_pem: std::fs::read_to_string(&ca_path)
                    .with_context(|| format!("reading {ca_path}"))?,
            };
            let grants: Vec<(String, String)> = role.into_iter().zip(scope).collect();
            let out = create_principal(&target, &name, &grants).await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor {
            data_dir,
            arm_grpc_url,
            wait,
        } => doctor(&data_dir, arm_grpc_url, wait).await,
        Command::ControlToken { data_dir, caller } => {
            let caller = misim_proto::auth::Caller::from_name(&caller).with_context(|| {
                format!("unknown caller {caller}: one of arm, entra, imds, keyvault, admin")
            })?;
            println!(
                "{}",
                control_key(&data_dir)?.credential(caller).header_value()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Oidc { command } => crate::oidc_cmd::run(command).await,
        Command::Pod { command } => crate::pod_cmd::run(command).await,
        Command::Clock { command } => crate::clock_cmd::run(command).await,
        Command::Keys { command } => crate::keys_cmd::run(command).await,
        Command::Fault { command } => crate::fault_cmd::run(command).await,
        Command::Identity { command } => crate::identity_cmd::run(command).await,
        Command::Log(args) => crate::log_cmd::run(args).await,
        Command::Apply(args) => crate::scenario_cmd::run_apply(args).await,
        Command::Export(args) => crate::scenario_cmd::run_export(args).await,
        Command::Idle => {
            let stop = misim_runtime::Shutdown::new();
            misim_runtime::cancel_on_signal(stop).await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn secrets(command: SecretsCommand) -> anyhow::Result<ExitCode> {
    match command {
        SecretsCommand::Init { dir } => {
            let s = crate::secrets::init(&dir)?;
            for p in [&s.control_key, &s.admin_secret] {
                let state = if s.created.contains(p) {
                    "created"
                } else {
                    "kept"
                };
                eprintln!("{state} {}", p.display());
            }
        }
        SecretsCommand::AdminEnv {
            secret_file,
            tenant_id,
            subscription_id,
            app_id,
            object_id,
        } => {
            let env = crate::secrets::AdminEnv {
                tenant_id,
                subscription_id,
                client_id: app_id,
                object_id,
            };
            print!("{}", env.render(&secret_file)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn up(
    mut config: SandboxConfig,
    random_ports: bool,
    scenario: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let data_dir = config.data_dir.clone();
    if !random_ports {
        config.ports = Ports::DEFAULT;
    }
    config.tokens = misim_entra::TokenPolicy::from_env(&misim_types::ProcessEnv)?;
    let mut sandbox = Sandbox::start(config).await?;
    let env_path = sandbox.write_env_file()?;
    if let Some(file) = scenario
        && let Err(e) = crate::scenario_cmd::apply_file(&data_dir, &file, false).await
    {
        sandbox.shutdown().await?;
        return Err(e);
    }
    println!("misim is up (data in {})", data_dir.display());
    println!("  ARM          {}", sandbox.arm_url);
    println!(
        "  Entra        {}/{}",
        sandbox.entra_url, sandbox.bootstrap.tenant_id
    );
    println!("  Key Vault    {}", sandbox.vault_url("<vault>"));
    println!(
        "  OIDC issuers {0}/github, {0}/kubernetes/<cluster>/",
        sandbox.oidc_url
    );
    println!("  CA bundle    {}", sandbox.ca_path.display());
    println!(
        "  environment  {}  (source it: set -a; . {0}; set +a)",
        env_path.display()
    );
    let stop = misim_runtime::Shutdown::new();
    let signal = tokio::spawn(misim_runtime::cancel_on_signal(stop.clone()));
    let failed = tokio::select! {
        _ = stop.cancelled() => None,
        r = sandbox.wait_for_failure() => Some(r),
    };
    signal.abort();
    sandbox.shutdown().await?;
    match failed {
        Some(Err(e)) => Err(e.context("a service failed")),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Reads `KEY=VALUE` lines of `<data dir>/misim.env`.
pub(crate) fn read_env_file(data_dir: &Path) -> anyhow::Result<Vec<String>> {
    let path = data_dir.join("misim.env");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is `misim up` running with this --data-dir?)",
            path.display()
        )
    })?;
    Ok(text
        .lines()
        .filter(|l| l.contains('='))
        .map(str::to_owned)
        .collect())
}

/// The control key the CLI calls gRPC with (as `admin`): the file
/// `MISIM_CONTROL_KEY_FILE` names, else `<data dir>/control.key`.
fn control_key(data_dir: &Path) -> anyhow::Result<misim_proto::auth::ControlKey> {
    use misim_types::EnvSource;
    let path = misim_types::ProcessEnv
        .get(misim_proto::auth::ENV_CONTROL_KEY_FILE)
        .map_or_else(
            || data_dir.join(misim_proto::auth::CONTROL_KEY_FILE),
            PathBuf::from,
        );
    misim_proto::auth::ControlKey::load(&path)
        .with_context(|| "reading the control key (is `misim up` running with this --data-dir?)")
}

/// An `admin` client channel to a gRPC URL of the sandbox in `data_dir`.
pub fn admin_channel(
    data_dir: &Path,
    url: &str,
) -> anyhow::Result<misim_proto::auth::ControlChannel> {
    Ok(control_key(data_dir)?
        .credential(misim_proto::auth::Caller::Admin)
        .wrap(misim_runtime::lazy_channel(url)?))
}

pub(crate) fn env_value(lines: &[String], key: &str) -> anyhow::Result<String> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .map(str::to_owned)
        .with_context(|| format!("{key} missing from misim.env"))
}

/// Every VM the sandbox's IMDS serves, page by page.
async fn imds_vms(data_dir: &Path, url: &str) -> anyhow::Result<Vec<misim_proto::imds::v1::Vm>> {
    let control =
        misim_proto::imds::v1::control_client::ControlClient::new(admin_channel(data_dir, url)?);
    misim_proto::all_vms(&control)
        .await
        .context("asking IMDS for its VMs (is `misim up` running?)")
}

async fn find_vm(
    data_dir: &Path,
    vm: &str,
) -> anyhow::Result<(Vec<String>, misim_proto::imds::v1::Vm)> {
    let env = read_env_file(data_dir)?;
    let url = env_value(&env, "MISIM_IMDS_GRPC_URL")?;
    let vms = imds_vms(data_dir, &url).await?;
    let mut matches: Vec<_> = vms
        .into_iter()
        .filter(|v| {
            v.metadata.as_ref().is_some_and(|m| {
                m.name.eq_ignore_ascii_case(vm) || m.resource_id.eq_ignore_ascii_case(vm)
            })
        })
        .collect();
    match matches.len() {
        0 => anyhow::bail!("no VM named {vm}"),
        1 => Ok((env, matches.remove(0))),
        n => anyhow::bail!("{n} VMs are named {vm}: pass the full resource id"),
    }
}

/// The variables of `misim.env` that only the sandbox owner may hold: the
/// admin application's credentials and the control key's path. Code in a VM
/// is not trusted with them (docs/security.md), so `misim vm exec` neither
/// passes them from `misim.env` nor lets the caller's environment leak them.
const OWNER_ONLY_VARS: &[&str] = &[
    "MISIM_ADMIN_CLIENT_ID",
    "MISIM_ADMIN_OBJECT_ID",
    "MISIM_ADMIN_CLIENT_SECRET",
    "MISIM_ADMIN_CERT_PATH",
    "MISIM_ADMIN_SECRET_FILE",
    "MISIM_ADMIN_APP_ID",
    misim_proto::auth::ENV_CONTROL_KEY_FILE,
];

/// The `misim.env` lines a VM's command sees, as `(name, value)`.
fn vm_visible(env: &[String]) -> impl Iterator<Item = (&str, &str)> {
    env.iter()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !OWNER_ONLY_VARS.contains(k))
}

/// Removes the owner's credentials from what a VM's or pod's command inherits.
pub(crate) fn without_owner_credentials(cmd: &mut std::process::Command) {
    for var in OWNER_ONLY_VARS {
        cmd.env_remove(var);
    }
}

async fn vm_exec_isolated(
    data_dir: &Path,
    vm: &str,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    let (env, vm) = find_vm(data_dir, vm).await?;
    anyhow::ensure!(
        !vm.imds_endpoint.is_empty(),
        "this VM's IMDS is not on a loopback listener"
    );
    let ca = PathBuf::from(env_value(&env, "MISIM_CA_BUNDLE")?);
    crate::vm_exec::run_isolated(&env, &vm.imds_endpoint, &ca, command).await
}

async fn vm_exec(
    data_dir: &Path,
    vm: &str,
    app_service: bool,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    let (env, vm) = find_vm(data_dir, vm).await?;
    anyhow::ensure!(
        !vm.imds_endpoint.is_empty(),
        "this VM's IMDS is not on a loopback listener"
    );
    let ca = env_value(&env, "MISIM_CA_BUNDLE")?;
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    for (k, v) in vm_visible(&env) {
        cmd.env(k, v);
    }
    without_owner_credentials(cmd.as_std_mut());
    cmd.env("REQUESTS_CA_BUNDLE", &ca)
        .env("SSL_CERT_FILE", &ca)
        .env("CURL_CA_BUNDLE", &ca)
        .env("AZURE_CORE_INSTANCE_DISCOVERY", "false")
        .env("MISIM_VM_IMDS_ENDPOINT", &vm.imds_endpoint);
    if app_service {
        cmd.env(
            "IDENTITY_ENDPOINT",
            format!("{}/msi/token", vm.imds_endpoint),
        )
        .env("IDENTITY_HEADER", &vm.identity_header);
    } else {
        cmd.env("AZURE_POD_IDENTITY_AUTHORITY_HOST", &vm.imds_endpoint);
    }
    let status = cmd
        .status()
        .await
        .with_context(|| format!("running {}", command[0]))?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

async fn doctor(data_dir: &Path, url: Option<String>, wait: u64) -> anyhow::Result<ExitCode> {
    let url = match url {
        Some(u) => u,
        None => env_value(&read_env_file(data_dir)?, "MISIM_ARM_GRPC_URL")?,
    };
    let key = control_key(data_dir)?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
    let report = loop {
        let r = crate::doctor(&url, &key).await;
        let settled = r
            .as_ref()
            .is_ok_and(|r| r.drifts.is_empty() && r.pending_operations == 0);
        if settled || tokio::time::Instant::now() >= deadline {
            break r?;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    for d in &report.drifts {
        println!("drift\t{}\t{}\t{}", d.kind, d.subject, d.detail);
    }
    println!(
        "identities={} service_principals={} vms={} imds_vms={} pending_operations={} failed_operations={} drifts={}",
        report.identities,
        report.service_principals,
        report.vms,
        report.imds_vms,
        report.pending_operations,
        report.failed_operations,
        report.drifts.len()
    );
    Ok(if report.drifts.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn vm_list(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let env = read_env_file(data_dir)?;
    let url = env_value(&env, "MISIM_IMDS_GRPC_URL")?;
    let vms = imds_vms(data_dir, &url).await?;
    for vm in vms {
        let m = vm.metadata.unwrap_or_default();
        println!("{}\t{}\t{}", m.name, vm.imds_endpoint, m.resource_id);
        for i in vm.identities {
            println!(
                "\t{:?}\tclient_id={}\tobject_id={}\t{}",
                i.kind(),
                i.client_id,
                i.object_id,
                i.resource_id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where misim's public APIs are and the admin credentials to call them with
/// (the values of `misim.env`).
#[derive(Debug, Clone)]
pub struct PublicApis {
    /// `MISIM_ARM_URL`.
    pub arm_url: String,
    /// `MISIM_ENTRA_URL` (authority host; Graph is served there under `/v1.0`).
    pub entra_url: String,
    /// `MISIM_TENANT_ID`.
    pub tenant_id: String,
    /// `MISIM_SUBSCRIPTION_ID`.
    pub subscription_id: String,
    /// `MISIM_ADMIN_CLIENT_ID`.
    pub admin_client_id: String,
    /// `MISIM_ADMIN_CLIENT_SECRET`.
    pub admin_client_secret: String,
    /// The sandbox CA (PEM) that the HTTPS endpoints chain to.
    pub ca_pem: String,
}

const ARM_API: &str = "api-version=2022-04-01";

async fn admin_token(
    http: &reqwest::Client,
    t: &PublicApis,
    scope: &str,
) -> anyhow::Result<String> {
    let r = http
        .post(format!("{}/{}/oauth2/v2.0/token", t.entra_url, t.tenant_id))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", t.admin_client_id.as_str()),
            ("client_secret", t.admin_client_secret.as_str()),
            ("scope", scope),
        ])
        .send()
        .await
        .context("asking Entra for an admin token")?;
    let status = r.status();
    let v: serde_json::Value = r.json().await.context("token response")?;
    anyhow::ensure!(status.is_success(), "admin token for {scope}: {status} {v}");
    v["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access_token in the token response")
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    match send(http, method.clone(), url, token, body).await? {
        Ok(v) => Ok(v),
        Err((status, text)) => anyhow::bail!("{method} {url}: {status} {text}"),
    }
}

/// One authorized JSON request: the parsed body of a 2xx (`Null` when
/// empty), or the status and body of any other answer, for the caller to
/// word; transport failures and non-JSON 2xx bodies are errors.
pub(crate) async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<Result<serde_json::Value, (u16, String)>> {
    let mut req = http.request(method.clone(), url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    if !(200..300).contains(&status) {
        return Ok(Err((status, text)));
    }
    if text.is_empty() {
        return Ok(Ok(serde_json::Value::Null));
    }
    Ok(Ok(
        serde_json::from_str(&text).with_context(|| format!("{method} {url}: not JSON"))?
    ))
}

/// The role definition id of `role`: a GUID as is, else the role of that name visible at `scope`.
async fn role_definition_id(
    http: &reqwest::Client,
    t: &PublicApis,
    arm_token: &str,
    role: &str,
    scope: &str,
) -> anyhow::Result<String> {
    if role.len() == 36 && role.matches('-').count() == 4 {
        return Ok(format!(
            "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{role}",
            t.subscription_id
        ));
    }
    let mut url = reqwest::Url::parse(&format!(
        "{}{scope}/providers/Microsoft.Authorization/roleDefinitions?{ARM_API}",
        t.arm_url
    ))?;
    url.query_pairs_mut()
        .append_pair("$filter", &format!("roleName eq '{role}'"));
    let found = call(http, reqwest::Method::GET, url.as_str(), arm_token, None).await?;
    Ok(found["value"][0]["id"]
        .as_str()
        .with_context(|| format!("no role named '{role}'"))?
        .to_owned())
}

/// `misim principal create`: what `az ad sp create-for-rbac` does, against
/// misim's public APIs only. Graph (`POST /v1.0/applications`, `addPassword`,
/// `POST /v1.0/servicePrincipals`) with an admin token for
/// `https://graph.microsoft.com`, then for each `(role, scope)` a role
/// assignment `PUT` on ARM (the role found by GUID or by
/// `$filter=roleName eq '…'`). Returns `{appId, clientId, clientSecret,
/// password, objectId, tenant, displayName, roleAssignments}`.
pub async fn create_principal(
    t: &PublicApis,
    name: &str,
    grants: &[(String, String)],
) -> anyhow::Result<serde_json::Value> {
    use misim_types::IdGen;
    use serde_json::json;
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30));
    for cert in reqwest::Certificate::from_pem_bundle(t.ca_pem.as_bytes())
        .context("parsing the CA bundle")?
    {
        b = b.add_root_certificate(cert);
    }
    let http = b.build()?;
    let graph = admin_token(&http, t, "https://graph.microsoft.com/.default").await?;
    let g = |p: &str| format!("{}/v1.0/{p}", t.entra_url);
    let app = call(
        &http,
        reqwest::Method::POST,
        &g("applications"),
        &graph,
        Some(json!({"displayName": name})),
    )
    .await?;
    let app_object = app["id"].as_str().context("application id")?.to_owned();
    let app_id = app["appId"]
        .as_str()
        .context("application appId")?
        .to_owned();
    let pw = call(
        &http,
        reqwest::Method::POST,
        &g(&format!("applications/{app_object}/addPassword")),
        &graph,
        Some(json!({"passwordCredential": {"displayName": "misim principal create"}})),
    )
    .await?;
    let secret = pw["secretText"].as_str().context("secretText")?.to_owned();
    let sp = call(
        &http,
        reqwest::Method::POST,
        &g("servicePrincipals"),
        &graph,
        Some(json!({"appId": app_id})),
    )
    .await?;
    let object_id = sp["id"]
        .as_str()
        .context("service principal id")?
        .to_owned();

    let mut assignments = Vec::new();
    if !grants.is_empty() {
        let arm = admin_token(&http, t, "https://management.azure.com/.default").await?;
        for (role, scope) in grants {
            let scope = scope.trim_end_matches('/');
            let role_id = role_definition_id(&http, t, &arm, role, scope).await?;
            let name = misim_types::RandomIds.guid();
            let a = call(
                &http,
                reqwest::Method::PUT,
                &format!(
                    "{}{scope}/providers/Microsoft.Authorization/roleAssignments/{name}?{ARM_API}",
                    t.arm_url
                ),
                &arm,
                Some(json!({"properties": {"roleDefinitionId": role_id,
                    "principalId": object_id, "principalType": "ServicePrincipal"}})),
            )
            .await?;
            assignments.push(a);
        }
    }
    Ok(json!({
        "appId": app_id,
        "clientId": app_id,
        "clientSecret": secret,
        "password": secret,
        "objectId": object_id,
        "applicationObjectId": app_object,
        "tenant": t.tenant_id,
        "displayName": name,
        "roleAssignments": assignments,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_sees_misim_env_without_the_owners_credentials() {
        let env: Vec<String> = [
            "MISIM_ARM_URL=https://127.0.0.1:1",
            "MISIM_ADMIN_CLIENT_ID=a",
            "MISIM_ADMIN_CLIENT_SECRET=s",
            "MISIM_ADMIN_CERT_PATH=/x",
            "MISIM_CONTROL_KEY_FILE=/k",
            "MISIM_CA_BUNDLE=/ca.pem",
        ]
        .map(str::to_owned)
        .into();
        let seen: Vec<_> = vm_visible(&env).map(|(k, _)| k).collect();
        assert_eq!(seen, ["MISIM_ARM_URL", "MISIM_CA_BUNDLE"]);
    }

    #[test]
    fn inherited_owner_credentials_are_removed() {
        let mut cmd = std::process::Command::new("true");
        cmd.env("MISIM_ADMIN_CLIENT_SECRET", "s").env("KEEP", "1");
        without_owner_credentials(&mut cmd);
        let envs: Vec<_> = cmd.get_envs().collect();
        assert!(envs.contains(&(std::ffi::OsStr::new("MISIM_ADMIN_CLIENT_SECRET"), None)));
        assert!(envs.contains(&(
            std::ffi::OsStr::new("KEEP"),
            Some(std::ffi::OsStr::new("1"))
        )));
    }
}
