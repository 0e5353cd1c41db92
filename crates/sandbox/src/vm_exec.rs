//! `misim vm exec --isolated`: a command in its own unprivileged user + network + mount namespace (Linux)
//! where `169.254.169.254:80` is its VM's IMDS and Azure's host names resolve to misim.
//!
//! Two halves, both in the `misim` binary:
//! - the host side ([`run_isolated`]) makes a private directory (owner-only) holding a Unix socket, a
//!   `resolv.conf`, a `hosts` file and a CA bundle (the system's plus the sandbox CA), relays each
//!   connection on that socket to the misim loopback listener its first byte names ([`Target`]), and
//!   starts the other half through `unshare --user --map-root-user --net --mount`;
//! - the namespace side ([`ns_init`], `misim vm ns-init`), root only inside its new user namespace,
//!   brings up loopback, puts the IMDS address on it, bind-mounts the three files over the system's
//!   (`/etc/resolv.conf`, `/etc/hosts`, the system CA bundle), serves misim-dns on `127.0.0.53:53`
//!   (Azure's names to loopback addresses of the namespace, NXDOMAIN for every other name, including
//!   any vault created later), listens where those names point and relays over the socket, then runs
//!   the command.
//!
//! The namespace has no route anywhere but its own loopback: the only way out is the socket, and the
//! host side connects only to misim's loopback listeners. The IMDS address exists only inside the
//! namespace; the host never contacts it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// Azure's IMDS address: bound only on the namespace's loopback.
const IMDS_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254); // const
/// Where misim-dns answers inside the namespace (systemd-resolved's stub address, a familiar sight).
const DNS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 53);
/// The system CA bundle on Debian, Ubuntu, Alpine and Arch (curl, OpenSSL and Python's `ssl` read it).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Connections relayed at once (each way): over it, new ones wait to be accepted.
const MAX_RELAYS: usize = 256;

/// Host names every server certificate of `misim up` also covers, so clients in the namespace
/// reach the services under Azure's names (Key Vault serves `{vault}.vault.azure.net` besides
/// `{vault}.vault.localhost`).
pub(crate) const AZURE_TLS_NAMES: &[&str] = &[
    "management.azure.com",
    "management.core.windows.net",
    "login.microsoftonline.com",
    "login.windows.net",
    "login.microsoft.com",
    "sts.windows.net",
    "graph.microsoft.com",
    "*.vault.azure.net",
];

/// A misim listener reachable from the namespace: the relay's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Imds = 0,
    Arm = 1,
    Entra = 2,
    KeyVault = 3,
}

impl Target {
    const ALL: [Target; 4] = [Target::Imds, Target::Arm, Target::Entra, Target::KeyVault];

    /// Where the namespace side listens for this target.
    fn ns_addr(self) -> SocketAddr {
        match self {
            Target::Imds => (IMDS_IP, 80).into(),
            Target::Arm => (Ipv4Addr::new(127, 0, 0, 2), 443).into(),
            Target::Entra => (Ipv4Addr::new(127, 0, 0, 3), 443).into(),
            Target::KeyVault => (Ipv4Addr::new(127, 0, 0, 4), 443).into(),
        }
    }

    /// The names misim-dns answers with [`Target::ns_addr`].
    fn names(self) -> &'static [&'static str] {
        match self {
            Target::Imds => &[],
            Target::Arm => &AZURE_TLS_NAMES[..2],
            Target::Entra => &AZURE_TLS_NAMES[2..7],
            Target::KeyVault => &AZURE_TLS_NAMES[7..],
        }
    }
}

/// The records misim-dns serves inside the namespace.
fn dns_records() -> String {
    Target::ALL
        .iter()
        .flat_map(|t| {
            t.names()
                .iter()
                .map(move |n| format!("{n}={}", t.ns_addr().ip()))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The loopback address of a misim URL (`https://localhost:8443`, a VM's IMDS endpoint
/// `http://127.64.0.5:40123`): the host side relays only to loopback.
fn loopback_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let (host, port) = authority
        .rsplit_once(':')
        .with_context(|| format!("{url}: no port"))?;
    let ip: IpAddr = match host {
        "localhost" => Ipv4Addr::LOCALHOST.into(),
        h => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .with_context(|| format!("{url} is not a loopback listener"))?,
    };
    anyhow::ensure!(ip.is_loopback(), "{url} is not a loopback listener");
    let port = port.parse().with_context(|| format!("{url}: bad port"))?;
    Ok(SocketAddr::new(ip, port))
}

/// The host-side addresses, indexed by [`Target`]: the VM's IMDS at its own address and port.
fn host_targets(env: &[String], imds_endpoint: &str) -> anyhow::Result<[SocketAddr; 4]> {
    let get = |key: &str| crate::cli::env_value(env, key);
    let kv_port: u16 = get("MISIM_KEYVAULT_PORT")?
        .parse()
        .context("MISIM_KEYVAULT_PORT")?;
    Ok([
        loopback_addr(imds_endpoint)?,
        loopback_addr(&get("MISIM_ARM_URL")?)?,
        loopback_addr(&get("MISIM_ENTRA_URL")?)?,
        SocketAddr::from((Ipv4Addr::LOCALHOST, kv_port)),
    ])
}

/// Runs `command` in a new namespace whose IMDS is the VM's at `imds_endpoint`.
pub(crate) async fn run_isolated(
    env: &[String],
    imds_endpoint: &str,
    ca_path: &Path,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        cfg!(target_os = "linux"),
        "--isolated needs Linux namespaces; without it, `misim vm exec VM -- CMD` points the \
         clients at the VM's IMDS with AZURE_POD_IDENTITY_AUTHORITY_HOST (or use the compose sandbox)"
    );
    let targets = host_targets(env, imds_endpoint)?;
    check_namespaces().await?;
    let dir = PrivateDir::create()?;
    write_ns_files(dir.path(), ca_path)?;
    let listener =
        UnixListener::bind(dir.path().join("relay.sock")).context("binding the relay socket")?;
    let relay = tokio::spawn(relay_to_host(listener, targets));
    let exe = std::env::current_exe().context("locating the misim binary")?;
    let status = tokio::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "--mount", "--"])
        .arg(exe)
        .args(["vm", "ns-init", "--dir"])
        .arg(dir.path())
        .arg("--")
        .args(command)
        .status()
        .await
        .context("running unshare")?;
    relay.abort();
    Ok(exit_code(status))
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8)
}

/// Fails with the fallback when unprivileged user namespaces are refused (a sysctl, AppArmor, a
/// container's seccomp profile) or `unshare(1)` is missing.
async fn check_namespaces() -> anyhow::Result<()> {
    const FALLBACK: &str = "fallback: `misim vm exec VM -- CMD` without --isolated (clients reach the \
        VM's IMDS through AZURE_POD_IDENTITY_AUTHORITY_HOST, vaults at https://{vault}.vault.localhost:PORT), \
        or the docker compose sandbox (README)";
    let out = tokio::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "--mount", "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!("--isolated needs unshare(1) (util-linux) on PATH; {FALLBACK}")
        }
        Err(e) => Err(e).context("running unshare"),
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => anyhow::bail!(
            "this system refuses unprivileged user + network + mount namespaces ({}); on Debian and \
             Ubuntu see the sysctls kernel.unprivileged_userns_clone and \
             kernel.apparmor_restrict_unprivileged_userns; {FALLBACK}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
    }
}

/// An owner-only directory under the temp dir, removed on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create() -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!(
            "misim-vm-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `resolv.conf`, `hosts` and `ca-bundle.pem`, which the namespace side bind-mounts.
fn write_ns_files(dir: &Path, ca_path: &Path) -> anyhow::Result<()> {
    std::fs::write(dir.join("resolv.conf"), format!("nameserver {DNS_IP}\n"))?;
    // Azure's names come from DNS (any vault name, even one created later); hosts keeps localhost.
    std::fs::write(
        dir.join("hosts"),
        "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    )?;
    let ca = std::fs::read_to_string(ca_path)
        .with_context(|| format!("reading the sandbox CA {}", ca_path.display()))?;
    // The system's CAs stay trusted (a bundle with only the sandbox CA would break nothing in
    // here today, but would surprise code that pins public roots).
    let system = std::fs::read_to_string(SYSTEM_CA_BUNDLE).unwrap_or_default();
    std::fs::write(dir.join("ca-bundle.pem"), format!("{system}\n{ca}"))?;
    Ok(())
}

/// Host side: each connection on `listener` names its [`Target`] in its first byte and is
/// relayed to that loopback address.
async fn relay_to_host(listener: UnixListener, targets: [SocketAddr; 4]) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_RELAYS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((mut conn, _)) = listener.accept().await else {
            // Out of descriptors, most likely: give the open relays a moment to close.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let mut which = [0u8; 1];
            if conn.read_exact(&mut which).await.is_err() {
                return;
            }
            let Some(addr) = targets.get(usize::from(which[0])) else {
                return;
            };
            if let Ok(mut upstream) = TcpStream::connect(addr).await {
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
            }
        });
    }
}

/// Namespace side (`misim vm ns-init`): sets the namespace up, serves, runs `command`.
pub(crate) async fn ns_init(dir: &Path, command: &[String]) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!command.is_empty(), "no command to run");
    run_tool("ip", &["link", "set", "lo", "up"]).await?;
    run_tool(
        "ip",
        &["addr", "add", &format!("{IMDS_IP}/32"), "dev", "lo"],
    )
    .await?;
    let bundle = dir.join("ca-bundle.pem");
    bind_mount(&dir.join("resolv.conf"), Path::new("/etc/resolv.conf")).await?;
    bind_mount(&dir.join("hosts"), Path::new("/etc/hosts")).await?;
    if Path::new(SYSTEM_CA_BUNDLE).exists() {
        bind_mount(&bundle, Path::new(SYSTEM_CA_BUNDLE)).await?;
    }

    let shutdown = misim_runtime::Shutdown::new();
    let records = misim_dns::Records::parse(&dns_records()).context("misim-dns records")?;
    let dns_addr = SocketAddr::from((DNS_IP, 53));
    let udp = tokio::net::UdpSocket::bind(dns_addr)
        .await
        .context("binding DNS (UDP)")?;
    let tcp = TcpListener::bind(dns_addr)
        .await
        .context("binding DNS (TCP)")?;
    tokio::spawn(misim_dns::serve::serve(
        Arc::new(records),
        udp,
        tcp,
        shutdown.clone(),
        misim_dns::serve::DnsLimits::default(),
    ));
    let sock = dir.join("relay.sock");
    for target in Target::ALL {
        let addr = target.ns_addr();
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr} in the namespace"))?;
        tokio::spawn(relay_to_socket(listener, sock.clone(), target));
    }

    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..])
        // Clients that read certifi's bundle (requests: azure-identity, the Azure CLI) or
        // OpenSSL's variable rather than the system store.
        .env("REQUESTS_CA_BUNDLE", &bundle)
        .env("SSL_CERT_FILE", &bundle);
    // A proxy on the host is unreachable from here (the namespace has only its loopback).
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"] {
        cmd.env_remove(var).env_remove(var.to_ascii_lowercase());
    }
    crate::cli::without_owner_credentials(cmd.as_std_mut());
    let status = cmd
        .status()
        .await
        .with_context(|| format!("running {}", command[0]))?;
    shutdown.cancel();
    Ok(exit_code(status))
}

/// Namespace side: every connection to `listener` goes over the Unix socket, tagged `target`.
async fn relay_to_socket(listener: TcpListener, sock: PathBuf, target: Target) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_RELAYS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((mut conn, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let sock = sock.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(mut up) = UnixStream::connect(&sock).await else {
                return;
            };
            if up.write_all(&[target as u8]).await.is_ok() {
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
            }
        });
    }
}

async fn run_tool(tool: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(tool)
        .args(args)
        .output()
        .await
        .with_context(|| {
            format!("running {tool} (iproute2 and util-linux are needed for --isolated)")
        })?;
    anyhow::ensure!(
        out.status.success(),
        "{tool} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

async fn bind_mount(src: &Path, dst: &Path) -> anyhow::Result<()> {
    let (src, dst) = (src.to_string_lossy(), dst.to_string_lossy());
    run_tool("mount", &["--bind", &src, &dst]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_records_send_azure_names_to_the_namespace_listeners() {
        let records = misim_dns::Records::parse(&dns_records()).unwrap();
        let ip = |name: &str| records.lookup(name.split('.').map(str::as_bytes));
        assert_eq!(
            ip("management.azure.com"),
            Some(Ipv4Addr::new(127, 0, 0, 2))
        );
        assert_eq!(
            ip("login.microsoftonline.com"),
            Some(Ipv4Addr::new(127, 0, 0, 3))
        );
        assert_eq!(ip("graph.microsoft.com"), Some(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(
            ip("made-later.vault.azure.net"),
            Some(Ipv4Addr::new(127, 0, 0, 4))
        );
        assert_eq!(ip("example.com"), None);
    }

    #[test]
    fn relays_only_to_loopback_listeners() {
        let addr = |url| loopback_addr(url).unwrap();
        assert_eq!(
            addr("https://localhost:8443"),
            "127.0.0.1:8443".parse().unwrap()
        );
        assert_eq!(
            addr("http://127.0.0.1:40123/"),
            "127.0.0.1:40123".parse().unwrap()
        );
        // A VM's IMDS endpoint: its own address, on IMDS's one port.
        assert_eq!(
            addr("http://127.64.0.5:40123"),
            "127.64.0.5:40123".parse().unwrap()
        );
        assert_eq!(addr("http://[::1]:80"), "[::1]:80".parse().unwrap());
        assert!(loopback_addr("https://management.azure.com:443").is_err());
        assert!(loopback_addr("http://10.0.0.1:80").is_err());
        assert!(loopback_addr("https://localhost").is_err());
    }
}
