//! Small clients for containers (the compose sandbox's images have no shell,
//! curl or openssl): `misim probe` (healthchecks), `misim token` (a VM asks
//! IMDS for a token), `misim secret` (read or write a Key Vault secret) and
//! `misim ca init` (generate the sandbox CA once, before the services start).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use misim_types::Clock;

/// Where a VM finds IMDS: the real address, only ever reached from inside a
/// compose VM container (whose network is the only place it exists).
/// `AZURE_POD_IDENTITY_AUTHORITY_HOST` overrides it, as for azure-identity.
pub(super) const DEFAULT_IMDS_URL: &str = "http://169.254.169.254";

/// The environment variable that overrides [`DEFAULT_IMDS_URL`].
pub(super) const ENV_IMDS_URL: &str = "AZURE_POD_IDENTITY_AUTHORITY_HOST";

/// Key Vault's token audience.
const VAULT_RESOURCE: &str = "https://vault.azure.net";

/// `misim probe`: exit 0 when every target answers.
#[derive(Debug, Subcommand)]
pub(super) enum ProbeCommand {
    /// Connect over TCP to each `host:port`.
    Tcp {
        /// `host:port` targets.
        #[arg(required = true)]
        targets: Vec<String>,
        /// Give up on a target after this many milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// GET each URL; any HTTP answer below 500 counts (HTTPS verified against the CA).
    Http {
        /// `http(s)://` URLs.
        #[arg(required = true)]
        urls: Vec<String>,
        #[command(flatten)]
        ca: CaArg,
        /// Give up on a URL after this many milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
    /// Resolve each host name through the system resolver (as any program
    /// in the container would) and print its addresses.
    Dns {
        /// Host names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Give up on a name after this many milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
}

/// The CA bundle HTTPS clients trust.
#[derive(Debug, Args)]
pub(super) struct CaArg {
    /// PEM file of the CA to trust (default: `MISIM_CA_BUNDLE`, else `SSL_CERT_FILE`).
    #[arg(long = "ca", env = "MISIM_CA_BUNDLE")]
    ca: Option<PathBuf>,
}

impl CaArg {
    fn path(&self) -> Option<PathBuf> {
        self.ca.clone().or_else(|| {
            std::env::var_os("SSL_CERT_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }
}

/// Which identity to ask IMDS for, and how.
#[derive(Debug, Args)]
pub(super) struct ImdsArgs {
    /// IMDS base URL.
    #[arg(long, env = ENV_IMDS_URL, default_value = DEFAULT_IMDS_URL)]
    imds_url: String,
    /// A user-assigned identity by client id.
    #[arg(long, group = "selector")]
    client_id: Option<String>,
    /// A user-assigned identity by object (principal) id.
    #[arg(long, group = "selector")]
    object_id: Option<String>,
    /// A user-assigned identity by ARM resource id.
    #[arg(long, group = "selector")]
    msi_res_id: Option<String>,
    /// Extra request header `Name: value` (repeatable; for tests that forge headers).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
}

/// `misim token`.
#[derive(Debug, Args)]
pub(super) struct TokenArgs {
    /// The resource (audience) to ask for, e.g. `https://vault.azure.net`.
    #[arg(long)]
    resource: String,
    #[command(flatten)]
    imds: ImdsArgs,
    /// Print IMDS's whole JSON answer instead of the access token.
    #[arg(long)]
    json: bool,
}

/// `misim secret`.
#[derive(Debug, Subcommand)]
pub(super) enum SecretCommand {
    /// Print a secret's value.
    Get {
        #[command(flatten)]
        target: SecretTarget,
    },
    /// Set a secret's value.
    Set {
        #[command(flatten)]
        target: SecretTarget,
        /// The value.
        #[arg(long)]
        value: String,
    },
}

/// A secret, and the credentials to reach it.
#[derive(Debug, Args)]
pub(super) struct SecretTarget {
    /// The vault URL, e.g. `https://kv1.vault.sim:8445`.
    #[arg(long)]
    vault_url: String,
    /// The secret's name.
    #[arg(long)]
    name: String,
    /// A bearer token (default: ask IMDS for a Key Vault token).
    #[arg(long, env = "MISIM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    ca: CaArg,
    #[command(flatten)]
    imds: ImdsArgs,
}

/// `misim ca`.
#[derive(Debug, Subcommand)]
pub(super) enum CaCommand {
    /// Create the sandbox CA in DIR (`ca.pem`, `ca-key.pem`) unless it exists.
    Init {
        /// Directory of the CA (each service reads it as `<data dir>/tls`).
        #[arg(long)]
        dir: PathBuf,
        /// Also copy the CA certificate (never the key) to this directory.
        #[arg(long)]
        public_dir: Option<PathBuf>,
        /// Print the CA certificate (PEM) afterwards.
        #[arg(long)]
        print: bool,
    },
}

fn http_client(ca: Option<&Path>, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .no_proxy();
    if let Some(path) = ca {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("parsing {}", path.display()))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().context("building the HTTP client")
}

/// Runs `misim probe`.
pub(super) async fn probe(cmd: ProbeCommand) -> anyhow::Result<ExitCode> {
    let mut ok = true;
    match cmd {
        ProbeCommand::Tcp {
            targets,
            timeout_ms,
        } => {
            for t in targets {
                let r = tokio::time::timeout(
                    Duration::from_millis(timeout_ms),
                    tokio::net::TcpStream::connect(t.as_str()),
                )
                .await;
                match r {
                    Ok(Ok(_)) => println!("{t}: open"),
                    Ok(Err(e)) => {
                        ok = false;
                        eprintln!("{t}: {e}");
                    }
                    Err(_) => {
                        ok = false;
                        eprintln!("{t}: timed out");
                    }
                }
            }
        }
        ProbeCommand::Http {
            urls,
            ca,
            timeout_ms,
        } => {
            let client = http_client(ca.path().as_deref(), Duration::from_millis(timeout_ms))?;
            for u in urls {
                match client.get(&u).send().await {
                    Ok(r) if r.status().as_u16() < 500 => println!("{u}: {}", r.status()),
                    Ok(r) => {
                        ok = false;
                        eprintln!("{u}: {}", r.status());
                    }
                    Err(e) => {
                        ok = false;
                        eprintln!("{u}: {e:#}");
                    }
                }
            }
        }
        ProbeCommand::Dns { names, timeout_ms } => {
            for name in names {
                let r = tokio::time::timeout(
                    Duration::from_millis(timeout_ms),
                    tokio::net::lookup_host((name.as_str(), 0)),
                )
                .await;
                match r {
                    Ok(Ok(addrs)) => {
                        let ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                        println!("{name}: {}", ips.join(" "));
                    }
                    Ok(Err(e)) => {
                        ok = false;
                        eprintln!("{name}: {e}");
                    }
                    Err(_) => {
                        ok = false;
                        eprintln!("{name}: timed out");
                    }
                }
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Asks IMDS for a token; `Err` carries IMDS's answer when it refused.
async fn imds_token(args: &ImdsArgs, resource: &str) -> anyhow::Result<serde_json::Value> {
    let client = http_client(None, Duration::from_secs(30))?;
    let url = format!(
        "{}/metadata/identity/oauth2/token",
        args.imds_url.trim_end_matches('/')
    );
    let mut query = vec![("api-version", "2018-02-01"), ("resource", resource)];
    if let Some(v) = &args.client_id {
        query.push(("client_id", v));
    }
    if let Some(v) = &args.object_id {
        query.push(("object_id", v));
    }
    if let Some(v) = &args.msi_res_id {
        query.push(("msi_res_id", v));
    }
    let mut req = client.get(&url).query(&query).header("Metadata", "true");
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("--header {h:?} is not `Name: value`"))?;
        req = req.header(name.trim(), value.trim());
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("calling IMDS at {url}"))?;
    let status = resp.status();
    let body = resp.text().await.context("reading IMDS's answer")?;
    anyhow::ensure!(status.is_success(), "IMDS answered {status}: {body}");
    serde_json::from_str(&body).with_context(|| format!("IMDS's answer is not JSON: {body}"))
}

/// Runs `misim token`.
pub(super) async fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let t = imds_token(&args.imds, &args.resource).await?;
    if args.json {
        println!("{t}");
    } else {
        let token = t["access_token"]
            .as_str()
            .context("IMDS's answer has no access_token")?;
        println!("{token}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `misim secret`.
pub(super) async fn secret(cmd: SecretCommand) -> anyhow::Result<ExitCode> {
    let (target, value) = match cmd {
        SecretCommand::Get { target } => (target, None),
        SecretCommand::Set { target, value } => (target, Some(value)),
    };
    let token = match &target.token {
        Some(t) => t.clone(),
        None => imds_token(&target.imds, VAULT_RESOURCE).await?["access_token"]
            .as_str()
            .context("IMDS's answer has no access_token")?
            .to_owned(),
    };
    let client = http_client(target.ca.path().as_deref(), Duration::from_secs(30))?;
    let url = format!(
        "{}/secrets/{}?api-version=7.4",
        target.vault_url.trim_end_matches('/'),
        target.name
    );
    let req = match &value {
        Some(v) => client.put(&url).json(&serde_json::json!({ "value": v })),
        None => client.get(&url),
    };
    let resp = req
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("calling Key Vault at {url}"))?;
    let status = resp.status();
    let body = resp.text().await.context("reading Key Vault's answer")?;
    anyhow::ensure!(status.is_success(), "Key Vault answered {status}: {body}");
    let json: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("Key Vault's answer is not JSON: {body}"))?;
    match json["value"].as_str() {
        Some(v) if value.is_none() => println!("{v}"),
        _ => println!("{}", json["id"].as_str().unwrap_or("ok")),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `misim ca`.
pub(super) fn ca(cmd: CaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CaCommand::Init {
            dir,
            public_dir,
            print,
        } => {
            let tls = misim_runtime::tls::load_or_create(&dir, &[], misim_types::SystemClock.now())
                .with_context(|| format!("creating the CA in {}", dir.display()))?;
            // Owner-only now, while it is writable: the services mount it
            // read-only as `<data dir>/tls` and refuse a data directory they
            // cannot make owner-only (a compose volume starts 0755).
            misim_store::private_dir(&dir)
                .with_context(|| format!("making {} owner-only", dir.display()))?;
            if let Some(p) = public_dir {
                std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
                std::fs::write(p.join("ca.pem"), &tls.ca_pem)
                    .with_context(|| format!("writing {}", p.join("ca.pem").display()))?;
            }
            if print {
                print!("{}", tls.ca_pem);
            } else {
                eprintln!("sandbox CA: {}", tls.ca_path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_imds_url_is_the_named_address() {
        assert_eq!(
            DEFAULT_IMDS_URL,
            format!("http://{}", misim_imds::config::AZURE_IMDS_IP)
        );
    }

    #[tokio::test]
    async fn dns_probes_resolve_through_the_system_resolver() {
        // /etc/hosts only: nothing leaves the host.
        let ok = probe(ProbeCommand::Dns {
            names: vec!["localhost".into()],
            timeout_ms: 5000,
        })
        .await
        .unwrap();
        assert_eq!(ok, ExitCode::SUCCESS);
        // Refused before any lookup: a NUL is no host name.
        let bad = probe(ProbeCommand::Dns {
            names: vec!["localhost".into(), "no\0name".into()],
            timeout_ms: 5000,
        })
        .await
        .unwrap();
        assert_eq!(bad, ExitCode::FAILURE);
    }

    #[tokio::test]
    async fn probes_report_closed_ports_and_bad_urls() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = l.local_addr().unwrap().to_string();
        let ok = probe(ProbeCommand::Tcp {
            targets: vec![open.clone()],
            timeout_ms: 1000,
        })
        .await
        .unwrap();
        assert_eq!(ok, ExitCode::SUCCESS);
        drop(l);
        let closed = probe(ProbeCommand::Tcp {
            targets: vec![open],
            timeout_ms: 1000,
        })
        .await
        .unwrap();
        assert_eq!(closed, ExitCode::FAILURE);
        let bad = imds_token(
            &ImdsArgs {
                imds_url: "http://127.0.0.1:1".into(),
                client_id: None,
                object_id: None,
                msi_res_id: None,
                headers: vec!["no-colon".into()],
            },
            "https://vault.azure.net",
        )
        .await
        .unwrap_err();
        assert!(format!("{bad:#}").contains("--header"), "{bad:#}");
    }

    #[tokio::test]
    async fn ca_init_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let run = || {
            ca(CaCommand::Init {
                dir: dir.path().join("ca"),
                public_dir: Some(dir.path().join("public")),
                print: false,
            })
            .unwrap()
        };
        run();
        let first = std::fs::read_to_string(dir.path().join("ca/ca.pem")).unwrap();
        run();
        assert_eq!(
            first,
            std::fs::read_to_string(dir.path().join("ca/ca.pem")).unwrap()
        );
        assert_eq!(
            first,
            std::fs::read_to_string(dir.path().join("public/ca.pem")).unwrap()
        );
        assert!(!dir.path().join("public/ca-key.pem").exists());
    }

    /// The CA directory is made owner-only even when it already existed with
    /// looser modes (a fresh compose volume is 0755): the services mount it
    /// read-only inside their data directory and could not tighten it there.
    #[cfg(unix)]
    #[test]
    fn ca_init_makes_an_existing_loose_directory_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let ca_dir = tmp.path().join("ca");
        std::fs::create_dir(&ca_dir).unwrap();
        std::fs::set_permissions(&ca_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ca(CaCommand::Init {
            dir: ca_dir.clone(),
            public_dir: None,
            print: false,
        })
        .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ca_dir), 0o700);
        for f in ["ca.pem", "ca-key.pem"] {
            assert_eq!(mode(&ca_dir.join(f)) & 0o077, 0, "{f}");
        }
    }
}
