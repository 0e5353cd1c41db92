//! The keys of external token issuers, for workload identity federation
//! (docs/workload-identity.md): registered ahead of time (configuration or
//! `Federation.PutIssuerKeys`) or fetched through the issuer's OIDC discovery
//! document and JWKS over HTTPS, then cached.
//!
//! Fetching is confined: only issuers whose host is a loopback IP literal or a
//! `localhost` name (never looked up in DNS), or a host the configuration
//! names (compose service names), are contacted; the connection goes to the
//! address checked, trusts
//! only the configured CAs (the sandbox CA), follows no redirects and no
//! proxy, and every request is bounded in time and size. Entra fetches only
//! for an issuer one of the principal's federated credentials names, so a
//! caller cannot make it fetch arbitrary URLs.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use misim_store::{Store, Table};
use misim_types::SharedClock;
use serde::{Deserialize, Serialize};

use crate::EntraError;
use crate::domain::tokens::{Authenticated, ClientCredential, Issued, PendingFederation};

/// Discovery documents are small; anything bigger is refused.
const MAX_DISCOVERY_BYTES: usize = 64 * 1024;
/// JWKS documents hold a handful of keys.
const MAX_JWKS_BYTES: usize = 256 * 1024;
const MAX_KEYS: usize = 64;
/// Issuers cached at once; the oldest entry goes first.
const MAX_CACHED_ISSUERS: usize = 64;
/// A cached key set is fetched again for an unknown `kid` (key rotation), but
/// not more often than this.
const MIN_REFETCH_SECS: i64 = 10;

/// How Entra reaches external issuers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationConfig {
    /// PEM certificates trusted when fetching (the sandbox CA). No public roots.
    pub trusted_ca_pem: Vec<String>,
    /// Hosts fetched from whatever they resolve to (compose service names);
    /// every other host must be a loopback literal or a `localhost` name.
    pub allowed_hosts: Vec<String>,
    /// Issuers whose keys are given, never fetched.
    pub issuer_keys: Vec<RegisteredIssuer>,
    /// How long fetched keys are reused.
    pub cache_ttl: Duration,
    /// Bound of each fetch (connect and the whole response).
    pub fetch_timeout: Duration,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            trusted_ca_pem: Vec::new(),
            allowed_hosts: Vec::new(),
            issuer_keys: Vec::new(),
            cache_ttl: Duration::from_secs(300),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// An external issuer's keys given ahead of time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredIssuer {
    /// The issuer exactly as its tokens carry it.
    pub issuer: String,
    /// Its JWKS document (`{"keys": [...]}`).
    pub jwks_json: String,
}

impl RegisteredIssuer {
    /// Reads a JWKS file with the issuer added as a top-level member:
    /// `{"issuer": "https://...", "keys": [...]}`.
    pub fn from_file(path: &Path) -> Result<Self, EntraError> {
        let bad =
            |m: String| EntraError::Config(format!("issuer keys file {}: {m}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let issuer = v
            .get("issuer")
            .and_then(|i| i.as_str())
            .ok_or_else(|| bad("no \"issuer\" member".into()))?
            .to_owned();
        ExternalKeys::parse(&text).map_err(bad)?;
        Ok(Self {
            issuer,
            jwks_json: text,
        })
    }
}

/// One verification key of an external issuer.
struct ExternalKey {
    kid: Option<String>,
    key: DecodingKey,
}

/// An external issuer's verification keys (RSA; other key types are skipped).
pub(crate) struct ExternalKeys {
    keys: Vec<ExternalKey>,
}

impl std::fmt::Debug for ExternalKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.kid))
            .finish()
    }
}

impl ExternalKeys {
    /// Parses a JWKS document.
    pub(crate) fn parse(json: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc =
            serde_json::from_str(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        if doc.keys.len() > MAX_KEYS {
            return Err(format!("more than {MAX_KEYS} keys"));
        }
        let mut keys = Vec::new();
        for k in &doc.keys {
            let s = |n: &str| k.get(n).and_then(|v| v.as_str());
            if s("kty") != Some("RSA") || s("use").is_some_and(|u| u != "sig") {
                continue;
            }
            let (Some(n), Some(e)) = (s("n"), s("e")) else {
                return Err("an RSA key without n or e".into());
            };
            let key = DecodingKey::from_rsa_components(n, e)
                .map_err(|err| format!("bad RSA key: {err}"))?;
            keys.push(ExternalKey {
                kid: s("kid").map(str::to_owned),
                key,
            });
        }
        if keys.is_empty() {
            return Err("no RSA signing key".into());
        }
        Ok(Self { keys })
    }

    /// The key with `kid`; without a `kid`, the only key.
    fn find(&self, kid: Option<&str>) -> Option<&DecodingKey> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .map(|k| &k.key),
            None if self.keys.len() == 1 => self.keys.first().map(|k| &k.key),
            None => None,
        }
    }

    fn kids(&self) -> Vec<String> {
        self.keys.iter().filter_map(|k| k.kid.clone()).collect()
    }
}

/// Issuer keys registered through gRPC, persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredIssuerKeys {
    issuer: String,
    jwks_json: String,
    created_unix: i64,
}

struct Cached {
    fetched_unix: i64,
    keys: Arc<ExternalKeys>,
}

/// A registered issuer as `ListIssuerKeys` shows it.
#[derive(Debug, Clone)]
pub(crate) struct IssuerSummary {
    pub(crate) issuer: String,
    pub(crate) kids: Vec<String>,
    pub(crate) from_config: bool,
}

/// Where external issuers' keys come from.
pub(crate) struct IssuerKeys {
    config: FederationConfig,
    configured: HashMap<String, Arc<ExternalKeys>>,
    registered: Table<StoredIssuerKeys>,
    cache: parking_lot::Mutex<HashMap<String, Cached>>,
    roots: Vec<reqwest::Certificate>,
    clock: SharedClock,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys")
            .field("allowed_hosts", &self.config.allowed_hosts)
            .field("configured", &self.configured.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn unreachable(reason: impl Into<String>) -> EntraError {
    EntraError::IssuerUnreachable {
        reason: reason.into(),
    }
}

impl IssuerKeys {
    pub(crate) fn open(
        config: FederationConfig,
        store: &Store,
        clock: SharedClock,
    ) -> Result<Self, EntraError> {
        let mut configured = HashMap::new();
        for r in &config.issuer_keys {
            let keys = ExternalKeys::parse(&r.jwks_json)
                .map_err(|e| EntraError::Config(format!("keys of issuer {}: {e}", r.issuer)))?;
            configured.insert(r.issuer.clone(), Arc::new(keys));
        }
        let mut roots = Vec::new();
        for pem in &config.trusted_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| EntraError::Config(format!("trusted CA for issuers: {e}")))?;
            roots.extend(certs);
        }
        Ok(Self {
            config,
            configured,
            registered: store.table("issuer_keys")?,
            cache: parking_lot::Mutex::new(HashMap::new()),
            roots,
            clock,
        })
    }

    /// Registers (or replaces) an issuer's keys.
    pub(crate) async fn put(
        &self,
        issuer: &str,
        jwks_json: &str,
    ) -> Result<IssuerSummary, EntraError> {
        if issuer.trim().is_empty() {
            return Err(EntraError::InvalidRequest("issuer is required".into()));
        }
        let keys = ExternalKeys::parse(jwks_json).map_err(EntraError::InvalidRequest)?;
        self.registered
            .put(
                issuer,
                &StoredIssuerKeys {
                    issuer: issuer.to_owned(),
                    jwks_json: jwks_json.to_owned(),
                    created_unix: self.clock.unix(),
                },
            )
            .await?;
        self.cache.lock().remove(issuer);
        Ok(IssuerSummary {
            issuer: issuer.to_owned(),
            kids: keys.kids(),
            from_config: false,
        })
    }

    /// Forgets an issuer's registered keys. False when there were none.
    pub(crate) async fn delete(&self, issuer: &str) -> Result<bool, EntraError> {
        if self.registered.get(issuer)?.is_none() {
            return Ok(false);
        }
        self.registered.remove(issuer).await?;
        self.cache.lock().remove(issuer);
        Ok(true)
    }

    /// Every registered issuer, by issuer.
    pub(crate) fn list(&self) -> Result<Vec<IssuerSummary>, EntraError> {
        let mut out: Vec<IssuerSummary> = self
            .configured
            .iter()
            .map(|(issuer, k)| IssuerSummary {
                issuer: issuer.clone(),
                kids: k.kids(),
                from_config: true,
            })
            .collect();
        for (_, s) in self.registered.all()? {
            let kids = ExternalKeys::parse(&s.jwks_json)
                .map(|k| k.kids())
                .unwrap_or_default();
            out.push(IssuerSummary {
                issuer: s.issuer,
                kids,
                from_config: false,
            });
        }
        out.sort_by(|a, b| a.issuer.cmp(&b.issuer));
        Ok(out)
    }

    /// The keys of `issuer` that may hold `kid`: registered ones, or fetched
    /// ones (from the cache while fresh and holding `kid`).
    async fn keys_for(
        &self,
        issuer: &str,
        kid: Option<&str>,
    ) -> Result<Arc<ExternalKeys>, EntraError> {
        if let Some(k) = self.configured.get(issuer) {
            return Ok(k.clone());
        }
        if let Some(s) = self.registered.get(issuer)? {
            return ExternalKeys::parse(&s.jwks_json)
                .map(Arc::new)
                .map_err(|e| unreachable(format!("registered keys of {issuer}: {e}")));
        }
        let now = self.clock.unix();
        let ttl = i64::try_from(self.config.cache_ttl.as_secs()).unwrap_or(i64::MAX);
        if let Some(c) = self.cache.lock().get(issuer) {
            let fresh = now.saturating_sub(c.fetched_unix) < ttl;
            let has_kid = c.keys.find(kid).is_some();
            if fresh && (has_kid || now.saturating_sub(c.fetched_unix) < MIN_REFETCH_SECS) {
                return Ok(c.keys.clone());
            }
        }
        let keys = Arc::new(self.fetch(issuer).await.map_err(|reason| {
            tracing::info!(issuer, %reason, "external issuer keys unavailable");
            unreachable(reason)
        })?);
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED_ISSUERS
            && !cache.contains_key(issuer)
            && let Some(oldest) = cache
                .iter()
                .min_by_key(|(_, c)| c.fetched_unix)
                .map(|(k, _)| k.clone())
        {
            cache.remove(&oldest);
        }
        cache.insert(
            issuer.to_owned(),
            Cached {
                fetched_unix: now,
                keys: keys.clone(),
            },
        );
        Ok(keys)
    }

    /// Discovery document, then JWKS.
    async fn fetch(&self, issuer: &str) -> Result<ExternalKeys, String> {
        let base = issuer.trim_end_matches('/');
        let discovery_url = format!("{base}/.well-known/openid-configuration");
        let body = self.get(&discovery_url, MAX_DISCOVERY_BYTES).await?;
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("{discovery_url}: not a JSON document: {e}"))?;
        let doc_issuer = doc
            .get("issuer")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        if doc_issuer.trim_end_matches('/') != base {
            return Err(format!(
                "{discovery_url}: the document's issuer {doc_issuer:?} is not {issuer:?}"
            ));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("{discovery_url}: no jwks_uri"))?;
        let body = self.get(jwks_uri, MAX_JWKS_BYTES).await?;
        let text = String::from_utf8(body).map_err(|_| format!("{jwks_uri}: not UTF-8"))?;
        ExternalKeys::parse(&text).map_err(|e| format!("{jwks_uri}: {e}"))
    }

    /// GET `url` (https, a permitted host), at most `limit` bytes.
    async fn get(&self, url: &str, limit: usize) -> Result<Vec<u8>, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        if parsed.scheme() != "https" {
            return Err(format!("{url}: only https is fetched"));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("{url}: no host"))?
            .to_owned();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .https_only(true)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.config.fetch_timeout)
            .timeout(self.config.fetch_timeout);
        for root in &self.roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let allowed = self
            .config
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&host));
        if !allowed {
            let addrs = loopback_addrs(&host, port)?;
            builder = builder.resolve_to_addrs(&host, &addrs);
        }
        let client = builder.build().map_err(|e| format!("http client: {e}"))?;
        let mut resp = client
            .get(parsed)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            if body.len() + chunk.len() > limit {
                return Err(format!("{url}: larger than {limit} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// The loopback addresses of `host`: a loopback IP literal, or `localhost` /
/// `*.localhost` (loopback by definition, RFC 6761). Any other name is refused
/// without a lookup, so no issuer URL can make misim send a DNS query (or a
/// request) outside the machine; issuers elsewhere are configured hosts or
/// registered keys.
fn loopback_addrs(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let lower = bare.to_ascii_lowercase();
    let ips: Vec<IpAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) if lower == "localhost" || lower.ends_with(".localhost") => vec![
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ],
        Err(_) => Vec::new(),
    };
    if ips.is_empty() || !ips.iter().all(IpAddr::is_loopback) {
        return Err(format!(
            "{host} is not a loopback address or a localhost name; misim fetches only from loopback issuers and configured hosts (register the issuer's keys instead)"
        ));
    }
    Ok(ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// Verifies `pending`'s signature with `keys`.
fn verify_external(pending: &PendingFederation, keys: &ExternalKeys) -> Result<(), EntraError> {
    let key = keys
        .find(pending.kid.as_deref())
        .ok_or_else(|| EntraError::IssuerKeyNotFound {
            kid: pending.kid.clone().unwrap_or_default(),
            issuer: pending.claims.iss.clone(),
        })?;
    let header = jsonwebtoken::decode_header(&pending.token).map_err(|e| {
        EntraError::MalformedAssertion {
            reason: e.to_string(),
        }
    })?;
    if !matches!(
        header.alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
    ) {
        return Err(EntraError::InvalidAssertion {
            reason: format!("unsupported signature algorithm {:?}", header.alg),
        });
    }
    let mut v = Validation::new(header.alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<serde_json::Value>(&pending.token, key, &v)
        .map(|_| ())
        .map_err(|e| EntraError::InvalidAssertion {
            reason: format!("the external token's signature does not verify: {e}"),
        })
}

impl crate::Entra {
    /// Authenticates the client, checks the resource and signs an access
    /// token; an external token (a federated credential) is verified with its
    /// issuer's keys first, which may mean fetching them.
    pub(crate) async fn issue_access_token(
        &self,
        client_id: &str,
        credential: ClientCredential<'_>,
        resource: &str,
    ) -> Result<Issued, EntraError> {
        let issuer = &self.inner.issuer;
        let dir = &self.inner.directory;
        let (principal, appidacr) = match issuer.authenticate(dir, client_id, credential)? {
            Authenticated::Done(p, acr) => (*p, acr),
            Authenticated::Federated(pending) => {
                if issuer.is_own_issuer(&pending.claims.iss) {
                    issuer.verify_own_token(dir, &pending)?;
                } else {
                    let keys = self
                        .inner
                        .issuer_keys
                        .keys_for(&pending.claims.iss, pending.kid.as_deref())
                        .await?;
                    verify_external(&pending, &keys)?;
                }
                tracing::info!(client_id, iss = %pending.claims.iss, sub = %pending.claims.sub,
                    "federated credential accepted");
                (pending.principal, "2")
            }
        };
        issuer.check_resource(resource)?;
        issuer.keys.roll_if_due().await?;
        issuer.sign_for(&principal, appidacr, resource)
    }
}

#[cfg(test)]
mod tests {
    use super::loopback_addrs;

    #[test]
    fn only_loopback_literals_and_localhost_names_are_fetched_from() {
        assert_eq!(loopback_addrs("127.0.0.1", 8446).unwrap().len(), 1);
        assert_eq!(loopback_addrs("[::1]", 8446).unwrap().len(), 1);
        assert_eq!(loopback_addrs("localhost", 8446).unwrap().len(), 2);
        assert_eq!(loopback_addrs("oidc.LocalHost", 8446).unwrap().len(), 2);
        // Refused without any lookup: a real issuer's name, a private or
        // link-local address, a name that merely contains "localhost".
        for host in [
            "token.actions.githubusercontent.com",
            "10.0.0.1",
            "169.254.0.1",
            "[fe80::1]",
            "localhost.example.com",
        ] {
            assert!(loopback_addrs(host, 443).is_err(), "{host}");
        }
    }
}
