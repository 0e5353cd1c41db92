//! The steps of [`Sandbox::start`](crate::Sandbox::start): secure the data directory and load
//! its secrets, bind every listener, build each service's peer clients, then open and serve the
//! services in dependency order (Entra first: the others verify tokens against its keys).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use misim_proto::arm::v1::authorization_client::AuthorizationClient;
use misim_proto::auth::{Caller, ControlChannel, ControlKey};
use misim_proto::entra::v1::directory_client::DirectoryClient;
use misim_proto::entra::v1::federation_client::FederationClient;
use misim_proto::faults::{Faults, PeerChannel};
use misim_proto::imds::v1::control_client::ControlClient;
use misim_proto::keys::EntraKeys;
use misim_runtime::Shutdown;
use misim_runtime::tls::SandboxTls;
use misim_store::Store;
use misim_types::{SharedClock, SharedIds};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::{
    Bootstrap, Control, Ports, ROLE_KEY_VAULT_SECRETS_OFFICER, ROLE_OWNER, Service,
    VAULT_DNS_SUFFIX, admin_certificate, channel_as, rebind, spawn_http_grpc, supervise,
};

/// What the data directory holds before any service opens.
pub(crate) struct Secrets {
    pub(crate) control_key_path: PathBuf,
    pub(crate) control: ControlKey,
    pub(crate) bootstrap: Bootstrap,
    pub(crate) tls: SandboxTls,
}

/// Makes the data directory owner-only (before anything secret is written; refused if another
/// user owns it), then loads or creates the control key, the bootstrap identity and the CA.
pub(crate) fn prepare_data_dir(
    data_dir: &Path,
    clock: &SharedClock,
    ids: &SharedIds,
) -> anyhow::Result<Secrets> {
    misim_store::private_dir(data_dir)
        .with_context(|| format!("securing the data directory {}", data_dir.display()))?;
    let control_key_path = data_dir.join(misim_proto::auth::CONTROL_KEY_FILE);
    let control =
        ControlKey::load_or_create(&control_key_path).context("loading the control key")?;
    let bootstrap = Bootstrap::load_or_create(data_dir, ids.as_ref())?;
    // Azure's names too, for clients in `misim vm exec --isolated`'s namespace.
    let names: Vec<String> = crate::vm_exec::AZURE_TLS_NAMES
        .iter()
        .map(|n| n.to_string())
        .collect();
    // The base clock, not the sandbox's virtual one: clients check the CA and server
    // certificates against their own real clocks, which `misim clock` does not move.
    let tls = misim_runtime::tls::load_or_create(&data_dir.join("tls"), &names, clock.now())?;
    Ok(Secrets {
        control_key_path,
        control,
        bootstrap,
        tls,
    })
}

/// The administrator's certificate credential (path, DER), being loaded or made on a
/// blocking thread while the rest of the start goes on.
pub(crate) type AdminCert = tokio::task::JoinHandle<anyhow::Result<(PathBuf, Vec<u8>)>>;

/// Starts loading (or, on first start, generating: an RSA-2048 keygen, most of a fresh
/// start's time) the administrator's certificate, so that it overlaps with opening the
/// stores and Entra's own key generation (docs/performance.md, finding 7).
pub(crate) fn spawn_admin_certificate(data_dir: &Path, now: std::time::SystemTime) -> AdminCert {
    let data_dir = data_dir.to_owned();
    tokio::task::spawn_blocking(move || admin_certificate(&data_dir, now))
}

/// Every listener, bound before any service opens, so a taken port fails the start early.
pub(crate) struct Listeners {
    entra_http: TcpListener,
    entra_grpc: TcpListener,
    arm_http: TcpListener,
    arm_grpc: TcpListener,
    imds_grpc: TcpListener,
    kv_http: TcpListener,
    kv_grpc: TcpListener,
    oidc_http: TcpListener,
    oidc_grpc: TcpListener,
    admin_grpc: TcpListener,
}

impl Listeners {
    pub(crate) async fn bind(ip: IpAddr, ports: Ports) -> anyhow::Result<Self> {
        Ok(Self {
            entra_http: bind(ip, ports.entra, "entra https").await?,
            entra_grpc: bind(ip, ports.entra_grpc, "entra grpc").await?,
            arm_http: bind(ip, ports.arm, "arm https").await?,
            arm_grpc: bind(ip, ports.arm_grpc, "arm grpc").await?,
            imds_grpc: bind(ip, ports.imds_grpc, "imds grpc").await?,
            kv_http: bind(ip, ports.keyvault, "key vault https").await?,
            kv_grpc: bind(ip, ports.keyvault_grpc, "key vault grpc").await?,
            oidc_http: bind(ip, ports.oidc, "oidc issuers https").await?,
            oidc_grpc: bind(ip, ports.oidc_grpc, "oidc issuers grpc").await?,
            admin_grpc: bind(ip, ports.admin_grpc, "admin grpc").await?,
        })
    }
}

async fn bind(ip: IpAddr, port: u16, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind((ip, port))
        .await
        .with_context(|| format!("binding {what} on {ip}:{port}"))
}

/// Where each service answers, from its bound listener.
pub(crate) struct Urls {
    pub(crate) entra_url: String,
    pub(crate) arm_url: String,
    pub(crate) keyvault_addr: SocketAddr,
    pub(crate) entra_grpc_url: String,
    pub(crate) arm_grpc_url: String,
    pub(crate) imds_grpc_url: String,
    pub(crate) oidc_url: String,
    pub(crate) oidc_grpc_url: String,
    pub(crate) admin_grpc_url: String,
    pub(crate) keyvault_grpc_url: String,
    /// The resource Key Vault's 401 challenge names (Entra must issue tokens for it).
    pub(crate) vault_challenge_resource: String,
}

impl Urls {
    pub(crate) fn of(l: &Listeners) -> anyhow::Result<Self> {
        let grpc_url = |l: &TcpListener| -> anyhow::Result<String> {
            Ok(format!("http://{}", l.local_addr()?))
        };
        let keyvault_addr = l.kv_http.local_addr()?;
        Ok(Self {
            entra_url: format!("https://localhost:{}", l.entra_http.local_addr()?.port()),
            arm_url: format!("https://localhost:{}", l.arm_http.local_addr()?.port()),
            keyvault_addr,
            entra_grpc_url: grpc_url(&l.entra_grpc)?,
            arm_grpc_url: grpc_url(&l.arm_grpc)?,
            imds_grpc_url: grpc_url(&l.imds_grpc)?,
            oidc_url: format!("https://localhost:{}", l.oidc_http.local_addr()?.port()),
            oidc_grpc_url: grpc_url(&l.oidc_grpc)?,
            admin_grpc_url: grpc_url(&l.admin_grpc)?,
            keyvault_grpc_url: grpc_url(&l.kv_grpc)?,
            vault_challenge_resource: format!(
                "https://{VAULT_DNS_SUFFIX}:{}",
                keyvault_addr.port()
            ),
        })
    }
}

/// Each service's clients of its peers; each calls as its own service.
pub(crate) struct PeerClients {
    imds_directory: DirectoryClient<ControlChannel>,
    arm_keys: EntraKeys,
    kv_keys: EntraKeys,
    /// ARM's own clients, behind the test's fault hook (if any).
    arm_directory: DirectoryClient<PeerChannel>,
    arm_imds: ControlClient<PeerChannel>,
    arm_federation: FederationClient<PeerChannel>,
    kv_authz: AuthorizationClient<ControlChannel>,
}

impl PeerClients {
    pub(crate) fn new(
        control: &ControlKey,
        urls: &Urls,
        arm_peer_faults: Faults,
    ) -> anyhow::Result<Self> {
        let as_ = |caller, url: &str| channel_as(control, caller, url);
        Ok(Self {
            imds_directory: DirectoryClient::new(as_(Caller::Imds, &urls.entra_grpc_url)?),
            arm_keys: EntraKeys::new(DirectoryClient::new(as_(
                Caller::Arm,
                &urls.entra_grpc_url,
            )?)),
            kv_keys: EntraKeys::new(DirectoryClient::new(as_(
                Caller::KeyVault,
                &urls.entra_grpc_url,
            )?)),
            arm_directory: DirectoryClient::new(
                arm_peer_faults
                    .clone()
                    .wrap(as_(Caller::Arm, &urls.entra_grpc_url)?),
            ),
            arm_imds: ControlClient::new(
                arm_peer_faults
                    .clone()
                    .wrap(as_(Caller::Arm, &urls.imds_grpc_url)?),
            ),
            arm_federation: FederationClient::new(
                arm_peer_faults.wrap(as_(Caller::Arm, &urls.entra_grpc_url)?),
            ),
            kv_authz: AuthorizationClient::new(as_(Caller::KeyVault, &urls.arm_grpc_url)?),
        })
    }
}

/// What every service is opened with (the boot context).
pub(crate) struct Boot<'a> {
    pub(crate) data_dir: &'a Path,
    pub(crate) clock: SharedClock,
    pub(crate) ids: SharedIds,
    pub(crate) tokens: misim_entra::TokenPolicy,
    pub(crate) secrets: &'a Secrets,
    pub(crate) urls: &'a Urls,
    pub(crate) imds_throttle: misim_chaos::ThrottleConfig,
    pub(crate) role_assignment_delay: std::time::Duration,
    pub(crate) identity_delay: std::time::Duration,
    /// When the start began (the phases' timings are logged from it).
    pub(crate) started: tokio::time::Instant,
}

impl Boot<'_> {
    /// Logs how long the start has taken when `phase` ended ([`phase`]).
    pub(crate) fn phase(&self, phase: &str) {
        self::phase(self.started, phase);
    }
}

/// Logs (at debug) how long the start begun at `started` has taken when `phase` ended:
/// where start-up goes (`RUST_LOG=misim_sandbox=debug misim up`).
pub(crate) fn phase(started: tokio::time::Instant, phase: &str) {
    let ms = started.elapsed().as_secs_f64() * 1e3;
    tracing::debug!(phase, elapsed_ms = format!("{ms:.1}"), "start-up");
}

/// The running services: their tasks, stores and stop/start controls, filled in as each starts.
pub(crate) struct Running {
    pub(crate) shutdown: Shutdown,
    pub(crate) tasks: JoinSet<anyhow::Result<()>>,
    pub(crate) stores: Vec<Store>,
    pub(crate) controls: Vec<Control>,
    /// Stores being opened on the blocking pool ([`Running::begin_opening`]).
    opening: HashMap<&'static str, tokio::task::JoinHandle<anyhow::Result<Store>>>,
}

/// Every service's store directory under the data dir, in start order.
const STORES: [&str; 5] = ["oidc", "entra", "imds", "arm", "keyvault"];

impl Running {
    pub(crate) fn new() -> Self {
        Self {
            shutdown: Shutdown::new(),
            tasks: JoinSet::new(),
            stores: Vec::new(),
            controls: Vec::new(),
            opening: HashMap::new(),
        }
    }

    /// Starts opening every service's store at once, each on the blocking
    /// pool: sled replays its log at open (after a long run, about a second
    /// for ARM's at 100,000 VMs), and one store's replay overlaps another's
    /// and the services that start before it (docs/performance.md finding 13).
    fn begin_opening(&mut self, data_dir: &Path) {
        for name in STORES {
            self.opening.insert(name, spawn_open(data_dir, name));
        }
    }

    /// `<data dir>/<name>`, opened (see [`Running::begin_opening`]; opened now
    /// if it was not begun), kept to flush at shutdown.
    async fn open_store(&mut self, data_dir: &Path, name: &'static str) -> anyhow::Result<Store> {
        let opening = self
            .opening
            .remove(name)
            .unwrap_or_else(|| spawn_open(data_dir, name));
        let store = opening.await.context("opening a store")??;
        self.stores.push(store.clone());
        Ok(store)
    }
}

/// Opens `<data dir>/<name>` on the blocking pool.
fn spawn_open(
    data_dir: &Path,
    name: &'static str,
) -> tokio::task::JoinHandle<anyhow::Result<Store>> {
    let dir = data_dir.join(name);
    tokio::task::spawn_blocking(move || {
        let t0 = tokio::time::Instant::now();
        let store = Store::open(&dir)
            .with_context(|| format!("opening {name} store in {}", dir.display()))?;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        tracing::debug!(store = name, elapsed_ms = format!("{ms:.1}"), "store open");
        Ok(store)
    })
}

/// Opens and serves every service; returns the administrator's certificate path.
pub(crate) async fn start_services(
    cx: &Boot<'_>,
    (listeners, admin_cert): (Listeners, AdminCert),
    clients: PeerClients,
    clock: &misim_proto::clock::ClockService,
    run: &mut Running,
) -> anyhow::Result<PathBuf> {
    let Listeners {
        entra_http,
        entra_grpc,
        arm_http,
        arm_grpc,
        imds_grpc,
        kv_http,
        kv_grpc,
        oidc_http,
        oidc_grpc,
        admin_grpc,
    } = listeners;
    // The clock first: one object every service reads, moved over this listener.
    let admin = misim_runtime::serve::serve_grpc(
        admin_grpc,
        clock.router(&cx.secrets.control),
        run.shutdown.clone(),
    );
    run.tasks
        .spawn(async move { admin.await.context("admin grpc server") });
    run.begin_opening(cx.data_dir);
    start_oidc(cx, (oidc_http, oidc_grpc), run).await?;
    cx.phase("oidc open");
    let admin_cert_path = start_entra(cx, (entra_http, entra_grpc), admin_cert, run).await?;
    cx.phase("entra open");
    start_imds(cx, imds_grpc, clients.imds_directory, run).await?;
    cx.phase("imds open");
    let arm_clients = ArmClients {
        keys: clients.arm_keys,
        directory: clients.arm_directory,
        federation: clients.arm_federation,
        imds: clients.arm_imds,
    };
    start_arm(
        cx,
        (arm_http, arm_grpc),
        arm_clients,
        clock.subscribe(),
        run,
    )
    .await?;
    cx.phase("arm open");
    start_keyvault(
        cx,
        (kv_http, kv_grpc),
        (clients.kv_keys, clients.kv_authz),
        run,
    )
    .await?;
    cx.phase("key vault open");
    Ok(admin_cert_path)
}

/// The sandbox's OIDC issuers (GitHub Actions- and Kubernetes-shaped), first:
/// Entra fetches their keys when it verifies their tokens.
async fn start_oidc(
    cx: &Boot<'_>,
    (http, grpc): (TcpListener, TcpListener),
    run: &mut Running,
) -> anyhow::Result<()> {
    let store = run.open_store(cx.data_dir, "oidc").await?;
    let oidc = misim_oidc::Oidc::open(
        misim_oidc::Config {
            public_base: cx.urls.oidc_url.clone(),
            clusters: Vec::new(),
        },
        misim_oidc::Deps {
            store,
            clock: cx.clock.clone(),
            ids: cx.ids.clone(),
        },
    )
    .await
    .context("opening the oidc issuers")?;
    let tls = Some(cx.secrets.tls.server_config.clone());
    let key = cx.secrets.control.clone();
    let shutdown = run.shutdown.clone();
    run.tasks
        .spawn(misim_oidc::serve(oidc, http, grpc, tls, key, shutdown));
    Ok(())
}

/// Entra, with the bootstrap administrator (secret and certificate).
async fn start_entra(
    cx: &Boot<'_>,
    listeners: (TcpListener, TcpListener),
    admin_cert: AdminCert,
    run: &mut Running,
) -> anyhow::Result<PathBuf> {
    let b = &cx.secrets.bootstrap;
    let store = run.open_store(cx.data_dir, "entra").await?;
    let entra = misim_entra::Entra::open_with(
        misim_entra::Config {
            tenant_id: b.tenant_id.clone(),
            public_url: cx.urls.entra_url.clone(),
            extra_resources: vec![cx.urls.vault_challenge_resource.clone()],
            admin: Some(misim_entra::AdminBootstrap {
                app_id: b.admin_client_id.clone(),
                object_id: b.admin_object_id.clone(),
                display_name: "misim-admin".into(),
                secret: b.admin_client_secret.clone(),
            }),
            tokens: cx.tokens,
        },
        misim_entra::Deps {
            store,
            clock: cx.clock.clone(),
            ids: cx.ids.clone(),
        },
        // External tokens' issuers are fetched over HTTPS trusting the sandbox
        // CA only (the sandbox's own issuers present its certificates).
        misim_entra::FederationConfig {
            trusted_ca_pem: vec![cx.secrets.tls.ca_pem.clone()],
            ..Default::default()
        },
    )
    .await
    .context("opening entra")?;
    let admin_cert_path = register_admin_certificate(cx, &entra, admin_cert).await?;
    let tls = Some(cx.secrets.tls.server_config.clone());
    let key = cx.secrets.control.clone();
    let ctl = spawn_http_grpc(
        &mut run.tasks,
        Service::Entra,
        &run.shutdown,
        listeners,
        move |h, g, tok| misim_entra::serve(entra.clone(), h, g, tls.clone(), key.clone(), tok),
    )?;
    run.controls.push(ctl);
    Ok(admin_cert_path)
}

/// Registers the administrator's certificate (created on first start) as its key credential.
async fn register_admin_certificate(
    cx: &Boot<'_>,
    entra: &misim_entra::Entra,
    admin_cert: AdminCert,
) -> anyhow::Result<PathBuf> {
    use misim_proto::entra::v1::directory_server::Directory as _;
    let (admin_cert_path, admin_cert_der) =
        admin_cert.await.context("making the admin certificate")??;
    entra
        .add_key_credential(tonic::Request::new(
            misim_proto::entra::v1::AddKeyCredentialRequest {
                object_id: cx.secrets.bootstrap.admin_object_id.clone(),
                certificate_der: admin_cert_der,
            },
        ))
        .await
        .context("registering the admin certificate")?;
    Ok(admin_cert_path)
}

/// IMDS: its control API on `grpc`; every VM's endpoint (its own loopback
/// address) on the one listener IMDS binds on the loopback device.
async fn start_imds(
    cx: &Boot<'_>,
    grpc: TcpListener,
    directory: DirectoryClient<ControlChannel>,
    run: &mut Running,
) -> anyhow::Result<()> {
    let store = run.open_store(cx.data_dir, "imds").await?;
    let imds = misim_imds::Imds::open(
        misim_imds::Config {
            tenant_id: cx.secrets.bootstrap.tenant_id.clone(),
            entra_authority: cx.urls.entra_url.clone(),
            addressing: misim_imds::VmAddressing::PerVmAddress { port: 0 },
        },
        misim_imds::Deps {
            store,
            clock: cx.clock.clone(),
            ids: cx.ids.clone(),
            directory,
            shutdown: run.shutdown.clone(),
        },
    )
    .await
    .context("opening imds")?;
    imds.chaos().set_throttle(cx.imds_throttle);
    imds.set_identity_delay(cx.identity_delay);
    // The VMs' endpoints live with the process, not with IMDS's control API
    // (`misim stop imds` is an outage of the control plane).
    let vms = imds.clone();
    run.tasks.spawn(async move { vms.serve_vms().await });
    let (want, ctl) = Control::new(Service::Imds);
    let addr = grpc.local_addr()?;
    let mut first = Some(grpc);
    let key = cx.secrets.control.clone();
    run.tasks.spawn(supervise(
        want,
        ctl.state_tx.clone(),
        run.shutdown.clone(),
        move |tok| {
            let l = first.take();
            let (imds, key) = (imds.clone(), key.clone());
            async move {
                let g = match l {
                    Some(l) => l,
                    None => rebind(addr).await?,
                };
                misim_imds::serve(imds, None, g, key, tok).await
            }
        },
    ));
    run.controls.push(ctl);
    Ok(())
}

/// ARM's clients of its peers.
struct ArmClients {
    keys: EntraKeys,
    directory: DirectoryClient<PeerChannel>,
    federation: FederationClient<PeerChannel>,
    imds: ControlClient<PeerChannel>,
}

/// ARM, with the administrator as Owner and Key Vault Secrets Officer of the subscription,
/// following the sandbox clock's moves.
async fn start_arm(
    cx: &Boot<'_>,
    listeners: (TcpListener, TcpListener),
    ArmClients {
        keys,
        directory,
        federation,
        imds,
    }: ArmClients,
    clock_moves: tokio::sync::watch::Receiver<i64>,
    run: &mut Running,
) -> anyhow::Result<()> {
    let b = &cx.secrets.bootstrap;
    let store = run.open_store(cx.data_dir, "arm").await?;
    let arm = misim_arm::Arm::open(
        misim_arm::Config {
            subscription_id: b.subscription_id.clone(),
            subscription_display_name: "misim subscription".into(),
            tenant_id: b.tenant_id.clone(),
            public_url: cx.urls.arm_url.clone(),
            entra_authority: cx.urls.entra_url.clone(),
            keyvault_dns_suffix: VAULT_DNS_SUFFIX.into(),
            keyvault_port: Some(cx.urls.keyvault_addr.port()),
            bootstrap_assignments: vec![
                (b.admin_object_id.clone(), ROLE_OWNER.into()),
                (
                    b.admin_object_id.clone(),
                    ROLE_KEY_VAULT_SECRETS_OFFICER.into(),
                ),
            ],
            ..misim_arm::Config::default()
        },
        misim_arm::Deps {
            store,
            clock: cx.clock.clone(),
            ids: cx.ids.clone(),
            keys,
            directory,
            federation,
            imds,
        },
    )
    .await
    .context("opening arm")?;
    arm.set_role_assignment_delay(cx.role_assignment_delay);
    // Certificates due for renewal are looked for as soon as the clock moves.
    arm.follow_clock(clock_moves);
    let tls = Some(cx.secrets.tls.server_config.clone());
    let key = cx.secrets.control.clone();
    let ctl = spawn_http_grpc(
        &mut run.tasks,
        Service::Arm,
        &run.shutdown,
        listeners,
        move |h, g, tok| misim_arm::serve(arm.clone(), h, g, tls.clone(), key.clone(), tok),
    )?;
    run.controls.push(ctl);
    Ok(())
}

/// Key Vault (not stoppable: only the owner's toolkit calls it over gRPC).
async fn start_keyvault(
    cx: &Boot<'_>,
    (http, grpc): (TcpListener, TcpListener),
    (keys, authz): (EntraKeys, AuthorizationClient<ControlChannel>),
    run: &mut Running,
) -> anyhow::Result<()> {
    let store = run.open_store(cx.data_dir, "keyvault").await?;
    let kv = misim_keyvault::KeyVault::open(
        misim_keyvault::Config {
            tenant_id: cx.secrets.bootstrap.tenant_id.clone(),
            authority: cx.urls.entra_url.clone(),
            dns_suffix: VAULT_DNS_SUFFIX.into(),
            challenge_resource: cx.urls.vault_challenge_resource.clone(),
        },
        misim_keyvault::Deps {
            store,
            clock: cx.clock.clone(),
            ids: cx.ids.clone(),
            keys,
            authz,
        },
    )
    .await
    .context("opening key vault")?;
    let tls = Some(cx.secrets.tls.server_config.clone());
    let key = cx.secrets.control.clone();
    run.tasks.spawn(misim_keyvault::serve_grpc(
        kv.clone(),
        grpc,
        key,
        run.shutdown.clone(),
    ));
    run.tasks
        .spawn(misim_keyvault::serve(kv, http, tls, run.shutdown.clone()));
    Ok(())
}
