//! The whole misim control plane in one process.
//!
//! [`Sandbox::start`] boots Entra, IMDS, ARM and Key Vault on loopback, each
//! with its own sled database under the data directory, talking to each other
//! over real gRPC, with HTTPS from the sandbox CA. `misim up` runs it; the
//! end-to-end tests (and users' own tests) start one per test on port 0.

mod bootstrap;
pub mod cli;
mod clock_cmd;
mod fault_cmd;
mod identity_cmd;
mod keys_cmd;
mod log_cmd;
mod oidc_cmd;
mod pod_cmd;
mod scenario;
mod scenario_cmd;
pub mod secrets;
mod start;
mod vm_exec;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use misim_proto::auth::{Caller, ControlChannel, ControlKey};
use misim_proto::entra::v1::directory_client::DirectoryClient;
use misim_proto::faults::Faults;
use misim_proto::imds::v1::control_client::ControlClient;
use misim_runtime::Shutdown;
use misim_store::Store;
use misim_types::{SharedClock, SharedIds};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use bootstrap::{Bootstrap, admin_certificate, write_atomically};

/// Ports to bind; 0 picks a free one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ports {
    /// ARM HTTPS.
    pub arm: u16,
    /// Entra HTTPS.
    pub entra: u16,
    /// Key Vault HTTPS.
    pub keyvault: u16,
    /// Entra gRPC.
    pub entra_grpc: u16,
    /// ARM gRPC.
    pub arm_grpc: u16,
    /// IMDS gRPC.
    pub imds_grpc: u16,
    /// The sandbox's OIDC issuers (discovery and JWKS over HTTPS).
    pub oidc: u16,
    /// The issuers' gRPC (`Issuers.MintToken`).
    pub oidc_grpc: u16,
    /// The sandbox owner's gRPC (`misim.admin.v1`: the clock).
    pub admin_grpc: u16,
    /// Key Vault's gRPC (the owner's toolkit only: faults and the decision log).
    pub keyvault_grpc: u16,
}

impl Ports {
    /// The fixed ports `misim up` uses by default, so URLs stay the same across restarts.
    pub const DEFAULT: Ports = Ports {
        arm: 8443,
        entra: 8444,
        keyvault: 8445,
        entra_grpc: 50051,
        arm_grpc: 50052,
        imds_grpc: 50053,
        oidc: 8446,
        oidc_grpc: 50054,
        admin_grpc: 50055,
        keyvault_grpc: 50056,
    };
}

/// How to start a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where every service keeps its state (one sled directory each) and the CA.
    pub data_dir: PathBuf,
    /// Loopback address the services bind (IMDS serves VMs at their own
    /// addresses in 127.64.0.0/10, on the loopback device).
    pub bind_ip: IpAddr,
    /// Ports.
    pub ports: Ports,
    /// The base time source: every service reads it moved by the sandbox's persisted
    /// clock offset (`misim clock`), one [`misim_types::VirtualClock`] for all.
    pub clock: SharedClock,
    /// GUID source for every service.
    pub ids: SharedIds,
    /// Faults on ARM's calls to Entra and IMDS (tests make one step of a
    /// cross-service operation fail; none by default).
    pub arm_peer_faults: Faults,
    /// Entra's token lifetimes and signing-key rollover (`MISIM_TOKEN_LIFETIME_*`,
    /// `MISIM_ENTRA_KEY_ROLL_INTERVAL` for `misim up`).
    pub tokens: misim_entra::TokenPolicy,
    /// IMDS's per-VM rate and concurrency limits of the identity endpoint
    /// (Azure's by default).
    pub imds_throttle: misim_chaos::ThrottleConfig,
    /// How long a new role assignment takes to take effect (zero: at once).
    pub role_assignment_delay: std::time::Duration,
    /// How long IMDS answers "Identity not found" for a new identity (zero: at once).
    pub identity_delay: std::time::Duration,
}

impl SandboxConfig {
    /// Port-0 loopback sandbox in `data_dir` with the real clock and random ids.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: Ports::default(),
            clock: std::sync::Arc::new(misim_types::SystemClock),
            ids: std::sync::Arc::new(misim_types::RandomIds),
            arm_peer_faults: Faults::none(),
            tokens: misim_entra::TokenPolicy::default(),
            imds_throttle: misim_chaos::ThrottleConfig::AZURE,
            role_assignment_delay: std::time::Duration::ZERO,
            identity_delay: std::time::Duration::ZERO,
        }
    }
}

/// The vault DNS suffix in the embedded sandbox: `https://{vault}.vault.localhost:{port}/`.
pub const VAULT_DNS_SUFFIX: &str = "vault.localhost";

/// A running sandbox.
#[derive(Debug)]
pub struct Sandbox {
    /// Tenant, subscription and administrator.
    pub bootstrap: Bootstrap,
    /// ARM base URL (`https://localhost:{port}`).
    pub arm_url: String,
    /// Entra authority host (`https://localhost:{port}`).
    pub entra_url: String,
    /// Key Vault HTTPS address (vault URLs are `https://{name}.vault.localhost:{port}/`).
    pub keyvault_addr: SocketAddr,
    /// gRPC URL of Entra's Directory service.
    pub entra_grpc_url: String,
    /// gRPC URL of ARM's Authorization service.
    pub arm_grpc_url: String,
    /// gRPC URL of IMDS's Control service.
    pub imds_grpc_url: String,
    /// Base URL of the sandbox's OIDC issuers (`https://localhost:{port}`):
    /// GitHub's is `{oidc_url}/github`, a cluster's `{oidc_url}/kubernetes/{name}/`.
    pub oidc_url: String,
    /// gRPC URL of the issuers' `Issuers` service.
    pub oidc_grpc_url: String,
    /// gRPC URL of the sandbox owner's services (`misim.admin.v1.Clock`).
    pub admin_grpc_url: String,
    /// gRPC URL of Key Vault's toolkit (`misim.admin.v1.Faults` and `Log`).
    pub keyvault_grpc_url: String,
    /// Path of the sandbox CA certificate (PEM) that clients must trust.
    pub ca_path: PathBuf,
    /// PEM of the sandbox CA.
    pub ca_pem: String,
    /// PEM file with the administrator's private key and certificate.
    pub admin_cert_path: PathBuf,
    /// The control key file (`<data dir>/control.key`, 0600): every gRPC
    /// call carries a credential made with it (`misim_proto::auth`).
    pub control_key_path: PathBuf,
    control: ControlKey,
    clock: misim_proto::clock::ClockService,
    data_dir: PathBuf,
    shutdown: Shutdown,
    tasks: JoinSet<anyhow::Result<()>>,
    stores: Vec<Store>,
    controls: Vec<Control>,
}

/// A service of the sandbox that can be stopped and started again in
/// process (an outage as its peers see it: its listeners close and reopen on
/// the same ports, its state stays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Entra (HTTPS and gRPC).
    Entra,
    /// IMDS's control API (gRPC; the VMs' own listeners keep serving).
    Imds,
    /// ARM (HTTPS, gRPC and the reconciler).
    Arm,
}

#[derive(Debug)]
struct Control {
    service: Service,
    want_tx: tokio::sync::watch::Sender<bool>,
    state_tx: tokio::sync::watch::Sender<bool>,
}

impl Control {
    fn new(service: Service) -> (tokio::sync::watch::Receiver<bool>, Control) {
        let (want_tx, want_rx) = tokio::sync::watch::channel(true);
        let (state_tx, _) = tokio::sync::watch::channel(false);
        (
            want_rx,
            Control {
                service,
                want_tx,
                state_tx,
            },
        )
    }
}

async fn rebind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    // The port was ours a moment ago; give the kernel a little time.
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(anyhow::anyhow!("rebinding {addr}: {last:?}"))
}

/// Spawns a supervised service that serves an HTTP(S) and a gRPC listener.
/// After a stop it rebinds the same ports, so peers' lazy channels reconnect.
fn spawn_http_grpc<F, Fut>(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    service: Service,
    shutdown: &Shutdown,
    listeners: (TcpListener, TcpListener),
    serve: F,
) -> anyhow::Result<Control>
where
    F: Fn(TcpListener, TcpListener, Shutdown) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (want, ctl) = Control::new(service);
    let addrs = (listeners.0.local_addr()?, listeners.1.local_addr()?);
    let mut first = Some(listeners);
    tasks.spawn(supervise(
        want,
        ctl.state_tx.clone(),
        shutdown.clone(),
        move |tok| {
            let l = first.take();
            let serve = serve.clone();
            async move {
                let (h, g) = match l {
                    Some(l) => l,
                    None => (rebind(addrs.0).await?, rebind(addrs.1).await?),
                };
                serve(h, g, tok).await
            }
        },
    ));
    Ok(ctl)
}

/// Runs a service, stopping and restarting it as `want` says, until `main` fires.
async fn supervise<F, Fut>(
    mut want: tokio::sync::watch::Receiver<bool>,
    state: tokio::sync::watch::Sender<bool>,
    main: Shutdown,
    mut run: F,
) -> anyhow::Result<()>
where
    F: FnMut(Shutdown) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    loop {
        let token = main.child_token();
        let fut = run(token.clone());
        tokio::pin!(fut);
        state.send_replace(true);
        loop {
            tokio::select! {
                r = &mut fut => {
                    state.send_replace(false);
                    return r;
                }
                c = want.changed() => {
                    if c.is_err() || !*want.borrow() {
                        token.cancel();
                        (&mut fut).await?;
                        break;
                    }
                }
            }
        }
        state.send_replace(false);
        loop {
            if *want.borrow() {
                break;
            }
            tokio::select! {
                _ = main.cancelled() => return Ok(()),
                c = want.changed() => if c.is_err() { return Ok(()) },
            }
        }
    }
}

/// A gRPC client channel to `url` that calls as `caller`.
fn channel_as(control: &ControlKey, caller: Caller, url: &str) -> anyhow::Result<ControlChannel> {
    Ok(control
        .credential(caller)
        .wrap(misim_runtime::lazy_channel(url)?))
}

impl Sandbox {
    /// Boots every service. Returns once all of them accept requests.
    pub async fn start(config: SandboxConfig) -> anyhow::Result<Sandbox> {
        let SandboxConfig {
            data_dir,
            bind_ip,
            ports,
            clock,
            ids,
            arm_peer_faults,
            tokens,
            imds_throttle,
            role_assignment_delay,
            identity_delay,
        } = config;
        let started = tokio::time::Instant::now();
        let secrets = start::prepare_data_dir(&data_dir, &clock, &ids)?;
        start::phase(started, "data dir, control key and CA");
        let clock_svc = misim_proto::clock::ClockService::open(clock, &data_dir)
            .context("loading the sandbox clock")?;
        let clock = clock_svc.clock();
        let admin_cert = start::spawn_admin_certificate(&data_dir, clock.now());
        let listeners = start::Listeners::bind(bind_ip, ports).await?;
        let urls = start::Urls::of(&listeners)?;
        let clients = start::PeerClients::new(&secrets.control, &urls, arm_peer_faults)?;
        let mut run = start::Running::new();
        let cx = start::Boot {
            data_dir: &data_dir,
            clock,
            ids,
            tokens,
            secrets: &secrets,
            urls: &urls,
            imds_throttle,
            role_assignment_delay,
            identity_delay,
            started,
        };
        cx.phase("listeners and peer channels");
        let admin_cert_path =
            start::start_services(&cx, (listeners, admin_cert), clients, &clock_svc, &mut run)
                .await?;
        let start::Secrets {
            control_key_path,
            control,
            bootstrap,
            tls,
        } = secrets;
        let start::Running {
            shutdown,
            tasks,
            stores,
            controls,
            ..
        } = run;
        Ok(Sandbox {
            bootstrap,
            arm_url: urls.arm_url,
            entra_url: urls.entra_url,
            keyvault_addr: urls.keyvault_addr,
            entra_grpc_url: urls.entra_grpc_url,
            arm_grpc_url: urls.arm_grpc_url,
            imds_grpc_url: urls.imds_grpc_url,
            oidc_url: urls.oidc_url,
            oidc_grpc_url: urls.oidc_grpc_url,
            admin_grpc_url: urls.admin_grpc_url,
            keyvault_grpc_url: urls.keyvault_grpc_url,
            ca_path: tls.ca_path,
            ca_pem: tls.ca_pem,
            admin_cert_path,
            control_key_path,
            control,
            clock: clock_svc,
            data_dir,
            shutdown,
            tasks,
            stores,
            controls,
        })
    }

    /// The URL of vault `name`, as ARM reports it in `properties.vaultUri`.
    pub fn vault_url(&self, name: &str) -> String {
        format!(
            "https://{name}.{VAULT_DNS_SUFFIX}:{}/",
            self.keyvault_addr.port()
        )
    }

    /// The sandbox's control key (what the `admin` and the services' credentials are made with).
    pub fn control_key(&self) -> &ControlKey {
        &self.control
    }

    /// A gRPC channel to `url` calling as `caller` (tests of the control plane's table).
    pub fn channel_as(&self, caller: Caller, url: &str) -> anyhow::Result<ControlChannel> {
        channel_as(&self.control, caller, url)
    }

    /// The clock every service reads (the base clock moved by the persisted offset).
    pub fn clock(&self) -> SharedClock {
        self.clock.clock()
    }

    /// A client of the sandbox clock (`misim.admin.v1.Clock`), as `admin`.
    pub fn clock_client(
        &self,
    ) -> anyhow::Result<misim_proto::admin::v1::clock_client::ClockClient<ControlChannel>> {
        Ok(misim_proto::admin::v1::clock_client::ClockClient::new(
            self.channel_as(Caller::Admin, &self.admin_grpc_url)?,
        ))
    }

    /// A client of IMDS's control API (VM endpoints, configured identities), as `admin`.
    pub fn imds_control(&self) -> anyhow::Result<ControlClient<ControlChannel>> {
        Ok(ControlClient::new(
            self.channel_as(Caller::Admin, &self.imds_grpc_url)?,
        ))
    }

    /// A client of Entra's directory API (service principals, keys), as `admin`.
    pub fn directory(&self) -> anyhow::Result<DirectoryClient<ControlChannel>> {
        Ok(DirectoryClient::new(
            self.channel_as(Caller::Admin, &self.entra_grpc_url)?,
        ))
    }

    /// A client of ARM's Authorization API (role grants for test clients), as `admin`.
    pub fn authorization(
        &self,
    ) -> anyhow::Result<
        misim_proto::arm::v1::authorization_client::AuthorizationClient<ControlChannel>,
    > {
        Ok(
            misim_proto::arm::v1::authorization_client::AuthorizationClient::new(
                self.channel_as(Caller::Admin, &self.arm_grpc_url)?,
            ),
        )
    }

    /// The `misim.env` file: what clients need to reach this sandbox.
    pub fn env_file(&self) -> String {
        let b = &self.bootstrap;
        let vars = [
            ("MISIM_ARM_URL", self.arm_url.clone()),
            ("MISIM_ENTRA_URL", self.entra_url.clone()),
            ("MISIM_CA_BUNDLE", self.ca_path.display().to_string()),
            ("MISIM_TENANT_ID", b.tenant_id.clone()),
            ("MISIM_SUBSCRIPTION_ID", b.subscription_id.clone()),
            ("MISIM_ADMIN_CLIENT_ID", b.admin_client_id.clone()),
            ("MISIM_ADMIN_OBJECT_ID", b.admin_object_id.clone()),
            ("MISIM_ADMIN_CLIENT_SECRET", b.admin_client_secret.clone()),
            (
                "MISIM_ADMIN_CERT_PATH",
                self.admin_cert_path.display().to_string(),
            ),
            ("MISIM_KEYVAULT_DNS_SUFFIX", VAULT_DNS_SUFFIX.into()),
            ("MISIM_KEYVAULT_PORT", self.keyvault_addr.port().to_string()),
            ("MISIM_ENTRA_GRPC_URL", self.entra_grpc_url.clone()),
            ("MISIM_ARM_GRPC_URL", self.arm_grpc_url.clone()),
            ("MISIM_IMDS_GRPC_URL", self.imds_grpc_url.clone()),
            ("MISIM_OIDC_URL", self.oidc_url.clone()),
            ("MISIM_OIDC_GRPC_URL", self.oidc_grpc_url.clone()),
            ("MISIM_ADMIN_GRPC_URL", self.admin_grpc_url.clone()),
            ("MISIM_KEYVAULT_GRPC_URL", self.keyvault_grpc_url.clone()),
            (
                misim_proto::auth::ENV_CONTROL_KEY_FILE,
                self.control_key_path.display().to_string(),
            ),
        ];
        vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }

    /// Writes [`Sandbox::env_file`] to `<data dir>/misim.env` and returns its path.
    pub fn write_env_file(&self) -> anyhow::Result<PathBuf> {
        let path = self.data_dir.join("misim.env");
        write_atomically(&path, &self.env_file())?;
        Ok(path)
    }

    /// Stops one service (its listeners close; peers see it down). Returns
    /// once it no longer serves.
    pub async fn stop_service(&self, service: Service) -> anyhow::Result<()> {
        self.set_running(service, false).await
    }

    /// Starts a stopped service again on the same ports.
    pub async fn start_service(&self, service: Service) -> anyhow::Result<()> {
        self.set_running(service, true).await
    }

    async fn set_running(&self, service: Service, run: bool) -> anyhow::Result<()> {
        let c = self
            .controls
            .iter()
            .find(|c| c.service == service)
            .context("no such service")?;
        let mut state = c.state_tx.subscribe();
        c.want_tx.send_replace(run);
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            state.wait_for(|s| *s == run),
        )
        .await
        .context("waiting for the service")?
        .map_err(|_| anyhow::anyhow!("the service task ended"))?;
        Ok(())
    }

    /// ARM's convergence report (`misim doctor`).
    pub async fn doctor(&self) -> anyhow::Result<misim_proto::arm::v1::DoctorReport> {
        doctor(&self.arm_grpc_url, &self.control).await
    }

    /// Stops every service, waits for in-flight requests and flushes all stores.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let mut first_err = None;
        while let Some(r) = self.tasks.join_next().await {
            let r = r.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        for s in &self.stores {
            // Every service has stopped: the next start may trust the
            // directory without crash repairs, unless one of them failed.
            if first_err.is_none() {
                s.close_clean().await?;
            } else {
                s.flush().await?;
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Resolves when a service task ends on its own (a crash), with its error.
    pub async fn wait_for_failure(&mut self) -> anyhow::Result<()> {
        match self.tasks.join_next().await {
            Some(r) => r
                .map_err(anyhow::Error::from)
                .and_then(|r| r)
                .and(Err(anyhow::anyhow!("a service stopped"))),
            None => Ok(()),
        }
    }
}

/// Asks ARM (at its gRPC URL, as `admin` with `control`) to compare the services' states.
pub async fn doctor(
    arm_grpc_url: &str,
    control: &ControlKey,
) -> anyhow::Result<misim_proto::arm::v1::DoctorReport> {
    let mut c = misim_proto::arm::v1::operations_client::OperationsClient::new(channel_as(
        control,
        Caller::Admin,
        arm_grpc_url,
    )?);
    Ok(c.doctor(misim_proto::arm::v1::DoctorRequest {})
        .await
        .context("asking ARM for its convergence report")?
        .into_inner())
}

/// Owner.
pub const ROLE_OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
/// Key Vault Secrets Officer.
pub const ROLE_KEY_VAULT_SECRETS_OFFICER: &str = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7";
