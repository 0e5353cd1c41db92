//! Entra's configuration: plain data, validated before anything binds, and
//! the launcher's environment reading (through [`EnvSource`], never the
//! process environment directly, so tests stay hermetic).

use std::net::SocketAddr;
use std::path::PathBuf;

use misim_types::EnvSource;

use crate::EntraError;

/// Listen address of the HTTPS token/discovery endpoint.
pub const ENV_HTTP_ADDR: &str = "MISIM_ENTRA_HTTP_ADDR";
/// Listen address of the `misim.entra.v1.Directory` gRPC server.
pub const ENV_GRPC_ADDR: &str = "MISIM_ENTRA_GRPC_ADDR";
/// Data directory (the store lives in `<dir>/entra`, TLS material in `<dir>/tls`).
pub const ENV_DATA_DIR: &str = "MISIM_DATA_DIR";
/// The tenant id (GUID).
pub const ENV_TENANT_ID: &str = "MISIM_TENANT_ID";
/// The authority host as clients reach it, e.g. `https://localhost:40001`.
pub const ENV_PUBLIC_URL: &str = "MISIM_ENTRA_PUBLIC_URL";
/// Comma-separated extra resources (App ID URIs) Entra issues tokens for.
pub const ENV_EXTRA_RESOURCES: &str = "MISIM_ENTRA_EXTRA_RESOURCES";
/// Bootstrap administrator application: app (client) id.
pub const ENV_ADMIN_APP_ID: &str = "MISIM_ADMIN_APP_ID";
/// Bootstrap administrator application: object id.
pub const ENV_ADMIN_OBJECT_ID: &str = "MISIM_ADMIN_OBJECT_ID";
/// Bootstrap administrator application: display name (default `misim-admin`).
pub const ENV_ADMIN_DISPLAY_NAME: &str = "MISIM_ADMIN_DISPLAY_NAME";
/// Bootstrap administrator application: client secret.
pub const ENV_ADMIN_SECRET: &str = "MISIM_ADMIN_SECRET";
/// Bootstrap administrator application: a file holding the client secret
/// (instead of [`ENV_ADMIN_SECRET`]), so that a deployment commits no secret:
/// the compose sandbox generates it at first start (`misim secrets init`).
pub const ENV_ADMIN_SECRET_FILE: &str = "MISIM_ADMIN_SECRET_FILE";

/// Comma-separated hosts Entra may fetch external issuers' discovery
/// documents and keys from although they are not loopback (the
/// compose sandbox's service names).
pub const ENV_OIDC_ALLOWED_HOSTS: &str = "MISIM_ENTRA_OIDC_ALLOWED_HOSTS";
/// Comma-separated JWKS files of external issuers Entra cannot reach, each
/// with the issuer as a top-level member: `{"issuer": "https://...", "keys": [...]}`.
pub const ENV_OIDC_ISSUER_KEYS: &str = "MISIM_ENTRA_OIDC_ISSUER_KEYS";

/// Lifetime of managed identities' access tokens: a duration (`90m`, `24h`), 10 minutes to 24 hours.
pub const ENV_TOKEN_LIFETIME_MANAGED_IDENTITY: &str = "MISIM_TOKEN_LIFETIME_MANAGED_IDENTITY";
/// Lifetime of applications' access tokens: a duration, 10 minutes to 24 hours.
pub const ENV_TOKEN_LIFETIME_APPLICATION: &str = "MISIM_TOKEN_LIFETIME_APPLICATION";
/// How long a token-signing key signs before it rolls over (a duration; `off`: only `misim keys roll`).
pub const ENV_KEY_ROLL_INTERVAL: &str = "MISIM_ENTRA_KEY_ROLL_INTERVAL";

const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:40001";
const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:40002";

/// Entra's configuration (one tenant).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// The tenant id (GUID): the `tid` claim and the first path segment of every URL.
    pub tenant_id: String,
    /// The authority host as clients reach it, without a trailing slash
    /// (`https://localhost:40001`). Discovery documents are built from it.
    pub public_url: String,
    /// Resources beyond `misim_types::audiences::KNOWN` that tokens may be
    /// issued for (Key Vault's challenge resource `https://vault.localhost:{port}`).
    pub extra_resources: Vec<String>,
    /// An application principal ensured at every open (the sandbox administrator).
    pub admin: Option<AdminBootstrap>,
    /// Token lifetimes and signing-key rollover.
    pub tokens: TokenPolicy,
}

/// Token lifetimes and when the signing key rolls over (docs/toolkit.md, "Keys").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Lifetime of managed identities' access tokens, seconds (Azure: 24 hours).
    pub managed_identity_lifetime_secs: i64,
    /// Lifetime of applications' access tokens, seconds (Azure's default: 1 hour).
    pub application_lifetime_secs: i64,
    /// Roll the signing key once it has signed this long (sandbox time); `None`: only when asked.
    pub key_roll_every_secs: Option<i64>,
}

/// Azure's bounds of a configurable access-token lifetime: 10 minutes to 1 day
/// (docs/azure-protocol.md, "Entra: token lifetimes").
pub const LIFETIME_BOUNDS_SECS: (i64, i64) = (600, 86_400);

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            managed_identity_lifetime_secs: crate::MI_LIFETIME_SECS,
            application_lifetime_secs: crate::APP_LIFETIME_SECS,
            // Entra rolls "periodically" without a published period; six weeks is
            // what a test's `misim clock advance 46d` crosses.
            key_roll_every_secs: Some(42 * 86_400),
        }
    }
}

impl TokenPolicy {
    /// The longest lifetime of any token: how long a retired key stays published.
    pub fn longest_lifetime_secs(&self) -> i64 {
        self.managed_identity_lifetime_secs
            .max(self.application_lifetime_secs)
    }

    /// Reads [`ENV_TOKEN_LIFETIME_MANAGED_IDENTITY`], [`ENV_TOKEN_LIFETIME_APPLICATION`] and
    /// [`ENV_KEY_ROLL_INTERVAL`] (each optional) over the defaults.
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, EntraError> {
        let secs = |key: &str| -> Result<Option<i64>, EntraError> {
            env.get(key)
                .map(|v| {
                    misim_types::time::parse_duration(&v)
                        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                        .map_err(|e| EntraError::Config(format!("{key}: {e}")))
                })
                .transpose()
        };
        let mut p = Self::default();
        if let Some(s) = secs(ENV_TOKEN_LIFETIME_MANAGED_IDENTITY)? {
            p.managed_identity_lifetime_secs = s;
        }
        if let Some(s) = secs(ENV_TOKEN_LIFETIME_APPLICATION)? {
            p.application_lifetime_secs = s;
        }
        match env.get(ENV_KEY_ROLL_INTERVAL).as_deref().map(str::trim) {
            Some("off" | "never") => p.key_roll_every_secs = None,
            Some(_) => p.key_roll_every_secs = secs(ENV_KEY_ROLL_INTERVAL)?,
            None => {}
        }
        p.validate()?;
        Ok(p)
    }

    /// Lifetimes within Azure's bounds; a roll interval of at least a minute.
    pub fn validate(&self) -> Result<(), EntraError> {
        let (lo, hi) = LIFETIME_BOUNDS_SECS;
        for (what, v) in [
            (
                ENV_TOKEN_LIFETIME_MANAGED_IDENTITY,
                self.managed_identity_lifetime_secs,
            ),
            (
                ENV_TOKEN_LIFETIME_APPLICATION,
                self.application_lifetime_secs,
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(EntraError::Config(format!(
                    "{what}: a token lifetime is 10m to 24h (Azure's bounds), not {v} seconds"
                )));
            }
        }
        if self.key_roll_every_secs.is_some_and(|s| s < 60) {
            return Err(EntraError::Config(format!(
                "{ENV_KEY_ROLL_INTERVAL}: at least 1m, or off"
            )));
        }
        Ok(())
    }
}

/// The bootstrap administrator application.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminBootstrap {
    /// App (client) id.
    pub app_id: String,
    /// Object id of its service principal.
    pub object_id: String,
    /// Display name.
    pub display_name: String,
    /// The client secret (stored hashed, never logged).
    pub secret: String,
}

impl std::fmt::Debug for AdminBootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminBootstrap")
            .field("app_id", &self.app_id)
            .field("object_id", &self.object_id)
            .field("display_name", &self.display_name)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// True for a hyphenated GUID (any case).
pub(crate) fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl Config {
    /// Checks the configuration before anything binds.
    pub fn validate(&self) -> Result<(), EntraError> {
        let bad = |m: String| Err(EntraError::Config(m));
        if !is_guid(&self.tenant_id) {
            return bad(format!("tenant id {:?} is not a GUID", self.tenant_id));
        }
        let rest = self
            .public_url
            .strip_prefix("https://")
            .or_else(|| self.public_url.strip_prefix("http://"));
        match rest {
            Some(host) if !host.is_empty() && !host.contains('/') => {}
            _ => {
                return bad(format!(
                    "public url {:?} must be http(s)://host[:port] without a path or trailing slash",
                    self.public_url
                ));
            }
        }
        if self.extra_resources.iter().any(|r| r.trim().is_empty()) {
            return bad("extra resources must not be empty".into());
        }
        if let Some(a) = &self.admin
            && (a.app_id.is_empty() || a.object_id.is_empty() || a.secret.is_empty())
        {
            return bad("admin application needs an app id, an object id and a secret".into());
        }
        self.tokens.validate()
    }

    /// The v1 issuer, `https://sts.windows.net/{tid}/`: every access token carries it.
    pub fn issuer_v1(&self) -> String {
        format!("https://sts.windows.net/{}/", self.tenant_id)
    }

    /// The v2 issuer, `{public_url}/{tid}/v2.0`.
    pub fn issuer_v2(&self) -> String {
        format!("{}/{}/v2.0", self.public_url, self.tenant_id)
    }
}

/// What the `misim-entra` binary needs: addresses, data directory and [`Config`].
#[derive(Debug, Clone)]
pub struct LaunchConfig {
    /// HTTPS listen address.
    pub http_addr: SocketAddr,
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// The service configuration (validated).
    pub config: Config,
    /// How external token issuers are reached; the launcher adds the sandbox CA.
    pub federation: crate::FederationConfig,
}

impl LaunchConfig {
    /// Reads and validates the launcher configuration from `env`.
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, EntraError> {
        let addr = |key: &str, default: &str| -> Result<SocketAddr, EntraError> {
            let v = env.get(key).unwrap_or_else(|| default.to_owned());
            v.parse()
                .map_err(|_| EntraError::Config(format!("{key}={v:?} is not a socket address")))
        };
        let http_addr = addr(ENV_HTTP_ADDR, DEFAULT_HTTP_ADDR)?;
        let grpc_addr = addr(ENV_GRPC_ADDR, DEFAULT_GRPC_ADDR)?;
        let data_dir = PathBuf::from(env.get(ENV_DATA_DIR).unwrap_or_else(|| "./data".into()));
        let tenant_id = env
            .get(ENV_TENANT_ID)
            .ok_or_else(|| EntraError::Config(format!("{ENV_TENANT_ID} is required")))?;
        let public_url = env
            .get(ENV_PUBLIC_URL)
            .unwrap_or_else(|| format!("https://localhost:{}", http_addr.port()));
        let extra_resources = env
            .get(ENV_EXTRA_RESOURCES)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let admin = match (
            env.get(ENV_ADMIN_APP_ID),
            env.get(ENV_ADMIN_OBJECT_ID),
            admin_secret(env)?,
        ) {
            (None, None, None) => None,
            (Some(app_id), Some(object_id), Some(secret)) => Some(AdminBootstrap {
                app_id,
                object_id,
                display_name: env
                    .get(ENV_ADMIN_DISPLAY_NAME)
                    .unwrap_or_else(|| "misim-admin".into()),
                secret,
            }),
            _ => {
                return Err(EntraError::Config(format!(
                    "{ENV_ADMIN_APP_ID}, {ENV_ADMIN_OBJECT_ID} and {ENV_ADMIN_SECRET} (or {ENV_ADMIN_SECRET_FILE}) go together"
                )));
            }
        };
        let config = Config {
            tenant_id,
            public_url: public_url.trim_end_matches('/').to_owned(),
            extra_resources,
            admin,
            tokens: TokenPolicy::from_env(env)?,
        };
        config.validate()?;
        let list = |key: &str| -> Vec<String> {
            env.get(key)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let issuer_keys = list(ENV_OIDC_ISSUER_KEYS)
            .iter()
            .map(|path| crate::RegisteredIssuer::from_file(std::path::Path::new(path)))
            .collect::<Result<_, _>>()?;
        let federation = crate::FederationConfig {
            allowed_hosts: list(ENV_OIDC_ALLOWED_HOSTS),
            issuer_keys,
            ..crate::FederationConfig::default()
        };
        Ok(Self {
            http_addr,
            grpc_addr,
            data_dir,
            config,
            federation,
        })
    }
}

/// The admin secret from [`ENV_ADMIN_SECRET`] or the file [`ENV_ADMIN_SECRET_FILE`]
/// names (its first line; surrounding whitespace is not part of the secret).
fn admin_secret(env: &dyn EnvSource) -> Result<Option<String>, EntraError> {
    match (env.get(ENV_ADMIN_SECRET), env.get(ENV_ADMIN_SECRET_FILE)) {
        (None, None) => Ok(None),
        (Some(s), None) => Ok(Some(s)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                EntraError::Config(format!("{ENV_ADMIN_SECRET_FILE}={path:?}: {e}"))
            })?;
            let secret = text.lines().next().unwrap_or("").trim();
            if secret.is_empty() {
                return Err(EntraError::Config(format!(
                    "{ENV_ADMIN_SECRET_FILE}={path:?} is empty"
                )));
            }
            Ok(Some(secret.to_owned()))
        }
        (Some(_), Some(_)) => Err(EntraError::Config(format!(
            "set {ENV_ADMIN_SECRET} or {ENV_ADMIN_SECRET_FILE}, not both"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use misim_types::MapEnv;

    const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    #[test]
    fn env_defaults_and_admin() {
        let env = MapEnv::from_pairs([
            (ENV_TENANT_ID, TID),
            (ENV_ADMIN_APP_ID, "a"),
            (ENV_ADMIN_OBJECT_ID, "o"),
            (ENV_ADMIN_SECRET, "s3cret"),
            (ENV_EXTRA_RESOURCES, "https://vault.localhost:1, ,https://x"),
        ]);
        let c = LaunchConfig::from_env(&env).unwrap();
        assert_eq!(c.config.public_url, "https://localhost:40001");
        assert_eq!(c.config.extra_resources.len(), 2);
        assert!(!format!("{:?}", c.config.admin).contains("s3cret"));
    }

    #[test]
    fn reads_the_admin_secret_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin-secret");
        std::fs::write(&file, "generated-secret\n").unwrap();
        let path = file.to_str().unwrap();
        let base = [
            (ENV_TENANT_ID, TID),
            (ENV_ADMIN_APP_ID, "a"),
            (ENV_ADMIN_OBJECT_ID, "o"),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            LaunchConfig::from_env(&MapEnv::from_pairs(pairs))
        };
        let c = with(&[(ENV_ADMIN_SECRET_FILE, path)]).unwrap();
        assert_eq!(c.config.admin.unwrap().secret, "generated-secret");
        let both = with(&[(ENV_ADMIN_SECRET_FILE, path), (ENV_ADMIN_SECRET, "s")]).unwrap_err();
        assert!(both.to_string().contains("not both"), "{both}");
        let missing = dir.path().join("nope");
        let e = with(&[(ENV_ADMIN_SECRET_FILE, missing.to_str().unwrap())]).unwrap_err();
        assert!(e.to_string().contains(ENV_ADMIN_SECRET_FILE), "{e}");
        std::fs::write(&file, "\n").unwrap();
        let e = with(&[(ENV_ADMIN_SECRET_FILE, path)]).unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
    }

    #[test]
    fn federation_hosts_and_issuer_key_files_come_from_the_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("issuer.json");
        let jwks = r#"{"issuer": "https://idp.example", "keys": [{"kty": "RSA", "kid": "k1", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"}]}"#;
        std::fs::write(&file, jwks).unwrap();
        let env = MapEnv::from_pairs([
            (ENV_TENANT_ID, TID),
            (ENV_OIDC_ALLOWED_HOSTS, "oidc, idp.internal"),
            (ENV_OIDC_ISSUER_KEYS, file.to_str().unwrap()),
        ]);
        let c = LaunchConfig::from_env(&env).unwrap();
        assert_eq!(c.federation.allowed_hosts, ["oidc", "idp.internal"]);
        assert_eq!(c.federation.issuer_keys[0].issuer, "https://idp.example");
        std::fs::write(&file, r#"{"keys": []}"#).unwrap();
        assert!(LaunchConfig::from_env(&env).is_err());
    }

    #[test]
    fn rejects_bad_config() {
        assert!(LaunchConfig::from_env(&MapEnv::default()).is_err());
        let env = MapEnv::from_pairs([(ENV_TENANT_ID, TID), (ENV_ADMIN_APP_ID, "a")]);
        assert!(LaunchConfig::from_env(&env).is_err());
        let env = MapEnv::from_pairs([(ENV_TENANT_ID, "contoso"), (ENV_PUBLIC_URL, "https://h")]);
        assert!(LaunchConfig::from_env(&env).is_err());
        let c = Config {
            tenant_id: TID.into(),
            public_url: "https://localhost:1/".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn token_policy_reads_durations_and_refuses_what_azure_would() {
        let p = TokenPolicy::from_env(&MapEnv::from_pairs([
            (ENV_TOKEN_LIFETIME_MANAGED_IDENTITY, "2h"),
            (ENV_TOKEN_LIFETIME_APPLICATION, "10m"),
            (ENV_KEY_ROLL_INTERVAL, "off"),
        ]))
        .unwrap();
        assert_eq!(
            (
                p.managed_identity_lifetime_secs,
                p.application_lifetime_secs
            ),
            (7200, 600)
        );
        assert_eq!(p.key_roll_every_secs, None);
        assert_eq!(
            TokenPolicy::from_env(&MapEnv::default()).unwrap(),
            TokenPolicy::default()
        );
        for (k, v, says) in [
            (ENV_TOKEN_LIFETIME_APPLICATION, "5m", "10m to 24h"),
            (ENV_TOKEN_LIFETIME_MANAGED_IDENTITY, "2d", "10m to 24h"),
            (ENV_TOKEN_LIFETIME_APPLICATION, "soon", "not a duration"),
            (ENV_KEY_ROLL_INTERVAL, "30s", "at least 1m"),
        ] {
            let e = TokenPolicy::from_env(&MapEnv::from_pairs([(k, v)])).unwrap_err();
            assert!(
                e.to_string().contains(k) && e.to_string().contains(says),
                "{e}"
            );
        }
    }
}
