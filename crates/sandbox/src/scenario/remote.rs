//! The sandbox as `misim apply` and `misim export` reach it: ARM's REST API and Key Vault's data
//! plane with the bootstrap admin's credentials, and the owner's gRPC (faults, clock, Entra's
//! id reservations) with the control key. Each URL and credential comes from the environment
//! first (the compose sandbox's service containers), else from the data directory's `misim.env`
//! (`misim up`), as for `misim fault`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use misim_chaos::Service;
use misim_proto::admin::v1 as admin;
use misim_proto::auth::ControlChannel;
use misim_proto::entra::v1 as entra;
use reqwest::Method;
use serde_json::Value;

use crate::cli::admin_channel;
use crate::fault_cmd::{grpc_url, setting};

const API: &str = "api-version=2024-11-01";
const KV_API: &str = "api-version=7.4";

/// A refused or failed call, with the service's own words.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// One connection to a running sandbox.
pub(crate) struct Remote {
    data_dir: PathBuf,
    http: reqwest::Client,
    ca_pem: String,
    arm_url: String,
    entra_url: String,
    pub(crate) tenant_id: String,
    pub(crate) subscription_id: String,
    /// Where every vault's host name is pinned to (Key Vault's listener).
    keyvault: SocketAddr,
    /// Vault `name` is `https://{name}.{suffix}`.
    vault_suffix: String,
    client_id: String,
    secret: String,
    arm_token: Option<String>,
    kv_token: Option<String>,
}

impl Remote {
    /// Finds the sandbox: the environment's settings, else `misim.env` in `data_dir`.
    pub(crate) async fn connect(data_dir: &Path) -> anyhow::Result<Remote> {
        let v = |keys: &[&str]| setting(data_dir, keys);
        let ca_path = v(&["MISIM_CA_BUNDLE"])?;
        let ca_pem =
            std::fs::read_to_string(&ca_path).with_context(|| format!("reading {ca_path}"))?;
        Ok(Remote {
            http: http_client(&ca_pem, &[])?,
            ca_pem,
            arm_url: v(&["MISIM_ARM_URL"])?,
            entra_url: v(&["MISIM_ENTRA_URL"])?,
            tenant_id: v(&["MISIM_TENANT_ID"])?,
            subscription_id: v(&["MISIM_SUBSCRIPTION_ID"])?,
            keyvault: keyvault_addr(data_dir).await?,
            vault_suffix: v(&["MISIM_KEYVAULT_DNS_SUFFIX"])?,
            // The service containers name the admin's app id and secret file, as
            // `misim secrets admin-env` reads them.
            client_id: v(&["MISIM_ADMIN_CLIENT_ID", "MISIM_ADMIN_APP_ID"])?,
            secret: admin_secret(data_dir)?,
            data_dir: data_dir.to_owned(),
            arm_token: None,
            kv_token: None,
        })
    }

    /// Fetches the admin's tokens (after the clock moved: tokens follow it).
    pub(crate) async fn sign_in(&mut self) -> anyhow::Result<()> {
        self.arm_token = Some(self.token("https://management.azure.com/.default").await?);
        self.kv_token = Some(self.token("https://vault.azure.net/.default").await?);
        Ok(())
    }

    async fn token(&self, scope: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                self.entra_url, self.tenant_id
            ))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &self.client_id),
                ("client_secret", &self.secret),
                ("scope", scope),
            ])
            .send()
            .await
            .context("asking Entra for an admin token (is `misim up` running?)")?;
        let status = r.status();
        let v: Value = r.json().await.context("Entra's token response")?;
        anyhow::ensure!(status.is_success(), "admin token for {scope}: {status} {v}");
        v["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("no access_token in Entra's answer")
    }

    /// `GET` an ARM path: `None` on 404.
    pub(crate) async fn arm_get(&self, path: &str) -> anyhow::Result<Option<Value>> {
        match self.arm(Method::GET, path, None).await? {
            Ok(v) => Ok(Some(v)),
            Err(r) if r.status == 404 => Ok(None),
            Err(r) => anyhow::bail!("GET {path}: {} {}", r.status, r.body),
        }
    }

    /// Every `value` of an ARM list (following `nextLink`).
    pub(crate) async fn arm_list(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let Some(mut page) = self.arm_get(path).await? else {
            return Ok(Vec::new());
        };
        let mut all = Vec::new();
        loop {
            if let Some(v) = page["value"].as_array() {
                all.extend(v.iter().cloned());
            }
            let Some(next) = page["nextLink"].as_str().map(str::to_owned) else {
                return Ok(all);
            };
            let r = self
                .send(Method::GET, &next, self.arm_token()?, None)
                .await?;
            page = r.map_err(|r| anyhow::anyhow!("GET {next}: {} {}", r.status, r.body))?;
        }
    }

    /// `PUT` an ARM resource.
    pub(crate) async fn arm_put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.arm(Method::PUT, path, Some(body))
            .await?
            .map_err(|r| anyhow::anyhow!("PUT {path}: {} {}", r.status, r.body))
    }

    async fn arm(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Result<Value, Refused>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{sep}{API}", self.arm_url);
        self.send(method, &url, self.arm_token()?, body).await
    }

    fn arm_token(&self) -> anyhow::Result<&str> {
        self.arm_token.as_deref().context("not signed in")
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Result<Value, Refused>> {
        self.send_with(&self.http, method, url, token, body).await
    }

    async fn send_with(
        &self,
        http: &reqwest::Client,
        method: Method,
        url: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Result<Value, Refused>> {
        Ok(crate::cli::send(http, method, url, token, body)
            .await?
            .map_err(|(status, body)| Refused { status, body }))
    }

    /// A client that reaches vault `name` at Key Vault's listener, and the vault's base URL.
    fn vault(&self, name: &str) -> anyhow::Result<(reqwest::Client, String)> {
        let host = format!("{name}.{}", self.vault_suffix);
        let http = http_client(&self.ca_pem, &[(&host, self.keyvault)])?;
        Ok((http, format!("https://{host}:{}", self.keyvault.port())))
    }

    /// A secret's current value, `None` when it does not exist.
    pub(crate) async fn secret_get(
        &self,
        vault: &str,
        name: &str,
    ) -> anyhow::Result<Option<String>> {
        let (http, base) = self.vault(vault)?;
        let url = format!("{base}/secrets/{name}?{KV_API}");
        match self
            .send_with(&http, Method::GET, &url, self.kv_token()?, None)
            .await?
        {
            Ok(v) => Ok(Some(v["value"].as_str().unwrap_or_default().to_owned())),
            Err(r) if r.status == 404 => Ok(None),
            Err(r) => anyhow::bail!("GET {url}: {} {}", r.status, r.body),
        }
    }

    /// Sets a secret (a new version).
    pub(crate) async fn secret_set(
        &self,
        vault: &str,
        name: &str,
        value: &str,
    ) -> anyhow::Result<()> {
        let (http, base) = self.vault(vault)?;
        let url = format!("{base}/secrets/{name}?{KV_API}");
        let body = serde_json::json!({ "value": value });
        self.send_with(&http, Method::PUT, &url, self.kv_token()?, Some(body))
            .await?
            .map_err(|r| anyhow::anyhow!("PUT {url}: {} {}", r.status, r.body))?;
        Ok(())
    }

    /// The names of a vault's secrets.
    pub(crate) async fn secret_names(&self, vault: &str) -> anyhow::Result<Vec<String>> {
        let (http, base) = self.vault(vault)?;
        let mut url = format!("{base}/secrets?{KV_API}");
        let mut names = Vec::new();
        loop {
            let page = self
                .send_with(&http, Method::GET, &url, self.kv_token()?, None)
                .await?
                .map_err(|r| anyhow::anyhow!("GET {url}: {} {}", r.status, r.body))?;
            for s in page["value"].as_array().into_iter().flatten() {
                if let Some(id) = s["id"].as_str() {
                    names.push(
                        id.trim_end_matches('/')
                            .rsplit('/')
                            .next()
                            .unwrap_or(id)
                            .to_owned(),
                    );
                }
            }
            match page["nextLink"].as_str() {
                Some(n) => url = n.to_owned(),
                None => return Ok(names),
            }
        }
    }

    fn kv_token(&self) -> anyhow::Result<&str> {
        self.kv_token.as_deref().context("not signed in")
    }

    /// The owner's client of one service's fault rules.
    pub(crate) fn faults(
        &self,
        service: Service,
    ) -> anyhow::Result<admin::faults_client::FaultsClient<ControlChannel>> {
        let url = grpc_url(&self.data_dir, service)?;
        Ok(admin::faults_client::FaultsClient::new(admin_channel(
            &self.data_dir,
            &url,
        )?))
    }

    /// The sandbox clock's time, Unix seconds.
    pub(crate) async fn now(&self) -> anyhow::Result<i64> {
        Ok(self
            .clock()?
            .show(admin::ShowClockRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("reading the clock: {}", s.message()))?
            .into_inner()
            .now_unix_seconds)
    }

    /// The active fault rules of `service`.
    pub(crate) async fn list_faults(&self, service: Service) -> anyhow::Result<Vec<admin::Fault>> {
        Ok(self
            .faults(service)?
            .list_faults(admin::ListFaultsRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("listing {service}'s faults: {}", s.message()))?
            .into_inner()
            .faults)
    }

    /// The owner's client of the sandbox clock.
    pub(crate) fn clock(&self) -> anyhow::Result<admin::clock_client::ClockClient<ControlChannel>> {
        // The compose sandbox: every service's clock, moved together; the first tells the time.
        let urls = setting(
            &self.data_dir,
            &["MISIM_ADMIN_GRPC_URL", "MISIM_CLOCK_GRPC_URLS"],
        )?;
        let url = urls.split(',').next().unwrap_or_default().trim().to_owned();
        Ok(admin::clock_client::ClockClient::new(admin_channel(
            &self.data_dir,
            &url,
        )?))
    }

    /// The owner's client of Entra's directory (id reservations, principal look-ups).
    pub(crate) fn directory(
        &self,
    ) -> anyhow::Result<entra::directory_client::DirectoryClient<ControlChannel>> {
        let url = grpc_url(&self.data_dir, Service::Entra)?;
        Ok(entra::directory_client::DirectoryClient::new(
            admin_channel(&self.data_dir, &url)?,
        ))
    }
}

/// Key Vault's listener: `MISIM_KEYVAULT_URL`'s host and port (the compose sandbox:
/// `https://keyvault`, a service name), else `MISIM_KEYVAULT_PORT` on loopback (`misim up`).
async fn keyvault_addr(data_dir: &Path) -> anyhow::Result<SocketAddr> {
    if let Some(url) = std::env::var("MISIM_KEYVAULT_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        let u = reqwest::Url::parse(&url).with_context(|| format!("MISIM_KEYVAULT_URL={url}"))?;
        let host = u.host_str().context("MISIM_KEYVAULT_URL names no host")?;
        let port = u.port_or_known_default().unwrap_or(443);
        return tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("resolving {host} (MISIM_KEYVAULT_URL)"))?
            .next()
            .with_context(|| format!("{host} (MISIM_KEYVAULT_URL) has no address"));
    }
    let port = setting(data_dir, &["MISIM_KEYVAULT_PORT"])?;
    let port: u16 = port.parse().context("MISIM_KEYVAULT_PORT")?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// `MISIM_ADMIN_CLIENT_SECRET` from the environment, else the file `MISIM_ADMIN_SECRET_FILE`
/// names (the compose sandbox's service containers), else from misim.env.
fn admin_secret(data_dir: &Path) -> anyhow::Result<String> {
    let set = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        set("MISIM_ADMIN_CLIENT_SECRET"),
        set("MISIM_ADMIN_SECRET_FILE"),
    ) {
        (None, Some(file)) => crate::secrets::read_admin_secret(Path::new(&file)),
        _ => setting(data_dir, &["MISIM_ADMIN_CLIENT_SECRET"]),
    }
}

/// An HTTPS client trusting only the sandbox CA, with host names pinned to `resolve`'s addresses.
pub(crate) fn http_client(
    ca_pem: &str,
    resolve: &[(&str, SocketAddr)],
) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(60));
    for cert in
        reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).context("parsing the CA bundle")?
    {
        b = b.add_root_certificate(cert);
    }
    for (host, addr) in resolve {
        b = b.resolve(host, *addr);
    }
    Ok(b.build()?)
}
