//! ARM's configuration: plain data, read from the environment by the binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use misim_types::EnvSource;

use crate::rbac::roles;

/// HTTPS listener address.
pub const ENV_HTTP_ADDR: &str = "MISIM_ARM_HTTP_ADDR";
/// gRPC listener address.
pub const ENV_GRPC_ADDR: &str = "MISIM_ARM_GRPC_ADDR";
/// Data directory (sled store and TLS material).
pub const ENV_DATA_DIR: &str = "MISIM_DATA_DIR";
/// Tenant id trusted by the subscription.
pub const ENV_TENANT_ID: &str = "MISIM_TENANT_ID";
/// The one subscription ARM serves (a GUID); every other id is `SubscriptionNotFound`.
pub const ENV_SUBSCRIPTION_ID: &str = "MISIM_SUBSCRIPTION_ID";
/// ARM's public URL (`https://localhost:P`).
pub const ENV_PUBLIC_URL: &str = "MISIM_ARM_PUBLIC_URL";
/// Entra's public URL (the authority host).
pub const ENV_ENTRA_PUBLIC_URL: &str = "MISIM_ENTRA_PUBLIC_URL";
/// Entra's gRPC URL.
pub const ENV_ENTRA_GRPC_URL: &str = "MISIM_ENTRA_GRPC_URL";
/// IMDS's gRPC URL.
pub const ENV_IMDS_GRPC_URL: &str = "MISIM_IMDS_GRPC_URL";
/// Key Vault DNS suffix (default `vault.localhost`).
pub const ENV_KEYVAULT_DNS_SUFFIX: &str = "MISIM_KEYVAULT_DNS_SUFFIX";
/// Key Vault HTTPS port, if not 443.
pub const ENV_KEYVAULT_PORT: &str = "MISIM_KEYVAULT_PORT";
/// Object id of the sandbox administrator (granted Owner and Key Vault Secrets Officer).
pub const ENV_ADMIN_OBJECT_ID: &str = "MISIM_ADMIN_OBJECT_ID";
/// How long a new role assignment takes to take effect (`30s`, `2m`; unset or 0: at once),
/// as `misim up --role-assignment-delay` (docs/toolkit.md, Delays).
pub const ENV_ROLE_ASSIGNMENT_DELAY: &str = "MISIM_ROLE_ASSIGNMENT_DELAY";

/// What ARM serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The one subscription (GUID).
    pub subscription_id: String,
    /// `displayName` in `GET /subscriptions`, which `az account list` shows.
    pub subscription_display_name: String,
    /// Tenant trusted by the subscription.
    pub tenant_id: String,
    /// ARM's public URL, `https://localhost:P` (no trailing slash).
    pub public_url: String,
    /// Entra's authority host, `https://localhost:P2` (no trailing slash).
    pub entra_authority: String,
    /// DNS suffix of vault host names.
    pub keyvault_dns_suffix: String,
    /// Port of vault URIs, when not 443.
    pub keyvault_port: Option<u16>,
    /// (principal id, role definition GUID) granted at the subscription scope on open.
    pub bootstrap_assignments: Vec<(String, String)>,
    /// How long a write waits for the operation it started (a VM's or an
    /// identity's provisioning) before it answers with the operation still
    /// running, for the client to poll (`Azure-AsyncOperation`); zero
    /// answers every such write at once. The operation runs on either way.
    pub inline_budget: std::time::Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            subscription_id: String::new(),
            subscription_display_name: "Sim Subscription".into(),
            tenant_id: String::new(),
            public_url: "https://localhost:8443".into(),
            entra_authority: "https://localhost:8444".into(),
            keyvault_dns_suffix: "vault.localhost".into(),
            keyvault_port: None,
            bootstrap_assignments: Vec::new(),
            inline_budget: std::time::Duration::from_secs(10),
        }
    }
}

/// A configuration error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Checks the values before anything binds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let guid = |name: &str, v: &str| {
            if v.len() == 36 && v.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                Ok(())
            } else {
                Err(ConfigError(format!("{name} must be a GUID, got {v:?}")))
            }
        };
        guid("subscription_id", &self.subscription_id)?;
        guid("tenant_id", &self.tenant_id)?;
        for (name, url) in [
            ("public_url", &self.public_url),
            ("entra_authority", &self.entra_authority),
        ] {
            if !url.starts_with("https://") || url.ends_with('/') {
                return Err(ConfigError(format!(
                    "{name} must be https:// without a trailing slash, got {url:?}"
                )));
            }
        }
        if self.keyvault_dns_suffix.is_empty() || self.keyvault_dns_suffix.starts_with('.') {
            return Err(ConfigError(
                "keyvault_dns_suffix must be a DNS suffix such as vault.localhost".into(),
            ));
        }
        for (p, r) in &self.bootstrap_assignments {
            guid("bootstrap principal", p)?;
            if crate::rbac::role_by_guid(r).is_none() {
                return Err(ConfigError(format!(
                    "bootstrap role {r} is not a built-in role"
                )));
            }
        }
        Ok(())
    }

    /// The ARM id of a role definition in the subscription.
    pub fn role_definition_id(&self, guid: &str) -> String {
        format!(
            "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{guid}",
            self.subscription_id
        )
    }

    /// The vault URI of `name`: `https://{name}.{suffix}[:{port}]/`.
    pub fn vault_uri(&self, name: &str) -> String {
        match self.keyvault_port {
            Some(p) => format!("https://{name}.{}:{p}/", self.keyvault_dns_suffix),
            None => format!("https://{name}.{}/", self.keyvault_dns_suffix),
        }
    }
}

/// Everything the binary reads from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The service configuration.
    pub config: Config,
    /// HTTPS listener.
    pub http_addr: SocketAddr,
    /// gRPC listener.
    pub grpc_addr: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Entra gRPC URL.
    pub entra_grpc_url: String,
    /// IMDS gRPC URL.
    pub imds_grpc_url: String,
    /// The delay before a new role assignment takes effect ([`ENV_ROLE_ASSIGNMENT_DELAY`]).
    pub role_assignment_delay: std::time::Duration,
}

impl Settings {
    /// Reads and validates the settings.
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let req = |k: &str| {
            env.get(k)
                .ok_or_else(|| ConfigError(format!("{k} is required")))
        };
        let addr = |k: &str, default: &str| {
            let v = env.get(k).unwrap_or_else(|| default.to_owned());
            v.parse::<SocketAddr>()
                .map_err(|e| ConfigError(format!("{k}={v:?}: {e}")))
        };
        let keyvault_port = match env.get(ENV_KEYVAULT_PORT) {
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|e| ConfigError(format!("{ENV_KEYVAULT_PORT}={p:?}: {e}")))?,
            ),
            None => None,
        };
        let role_assignment_delay = match env.get(ENV_ROLE_ASSIGNMENT_DELAY) {
            Some(v) => misim_types::time::parse_duration(&v)
                .map_err(|e| ConfigError(format!("{ENV_ROLE_ASSIGNMENT_DELAY}: {e}")))?,
            None => std::time::Duration::ZERO,
        };
        let bootstrap_assignments = match env.get(ENV_ADMIN_OBJECT_ID) {
            Some(admin) => vec![
                (admin.clone(), roles::OWNER.to_owned()),
                (admin, roles::KEY_VAULT_SECRETS_OFFICER.to_owned()),
            ],
            None => Vec::new(),
        };
        let config = Config {
            subscription_id: req(ENV_SUBSCRIPTION_ID)?,
            tenant_id: req(ENV_TENANT_ID)?,
            public_url: req(ENV_PUBLIC_URL)?.trim_end_matches('/').to_owned(),
            entra_authority: req(ENV_ENTRA_PUBLIC_URL)?.trim_end_matches('/').to_owned(),
            keyvault_dns_suffix: env
                .get(ENV_KEYVAULT_DNS_SUFFIX)
                .unwrap_or_else(|| "vault.localhost".into()),
            keyvault_port,
            bootstrap_assignments,
            ..Config::default()
        };
        config.validate()?;
        Ok(Self {
            config,
            http_addr: addr(ENV_HTTP_ADDR, "127.0.0.1:8443")?,
            grpc_addr: addr(ENV_GRPC_ADDR, "127.0.0.1:50052")?,
            data_dir: PathBuf::from(env.get(ENV_DATA_DIR).unwrap_or_else(|| "./data/arm".into())),
            entra_grpc_url: req(ENV_ENTRA_GRPC_URL)?,
            imds_grpc_url: req(ENV_IMDS_GRPC_URL)?,
            role_assignment_delay,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use misim_types::MapEnv;

    const G: &str = "11111111-1111-4111-8111-111111111111";

    #[test]
    fn reads_env_and_grants_the_admin() {
        let env = MapEnv::from_pairs([
            (ENV_SUBSCRIPTION_ID, G),
            (ENV_TENANT_ID, G),
            (ENV_PUBLIC_URL, "https://localhost:8443/"),
            (ENV_ENTRA_PUBLIC_URL, "https://localhost:8444"),
            (ENV_ENTRA_GRPC_URL, "http://127.0.0.1:1"),
            (ENV_IMDS_GRPC_URL, "http://127.0.0.1:2"),
            (ENV_KEYVAULT_PORT, "8445"),
            (ENV_ADMIN_OBJECT_ID, G),
        ]);
        let s = Settings::from_env(&env).unwrap();
        assert_eq!(s.config.public_url, "https://localhost:8443");
        assert_eq!(s.config.bootstrap_assignments.len(), 2);
        assert_eq!(
            s.config.vault_uri("kv1"),
            "https://kv1.vault.localhost:8445/"
        );
        assert_eq!(s.role_assignment_delay, std::time::Duration::ZERO, "off");
    }

    #[test]
    fn reads_the_role_assignment_delay_as_misim_up_does() {
        let with = |v: &'static str| {
            Settings::from_env(&MapEnv::from_pairs([
                (ENV_SUBSCRIPTION_ID, G),
                (ENV_TENANT_ID, G),
                (ENV_PUBLIC_URL, "https://localhost:8443"),
                (ENV_ENTRA_PUBLIC_URL, "https://localhost:8444"),
                (ENV_ENTRA_GRPC_URL, "http://127.0.0.1:1"),
                (ENV_IMDS_GRPC_URL, "http://127.0.0.1:2"),
                (ENV_ROLE_ASSIGNMENT_DELAY, v),
            ]))
        };
        assert_eq!(
            with("30s").unwrap().role_assignment_delay,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(
            with("2m").unwrap().role_assignment_delay,
            std::time::Duration::from_secs(120)
        );
        assert_eq!(
            with("0").unwrap().role_assignment_delay,
            std::time::Duration::ZERO
        );
        let e = with("soon").unwrap_err().to_string();
        assert!(
            e.contains(ENV_ROLE_ASSIGNMENT_DELAY) && e.contains("soon"),
            "{e}"
        );
    }

    #[test]
    fn rejects_bad_values() {
        let env = MapEnv::from_pairs([(ENV_SUBSCRIPTION_ID, "nope")]);
        assert!(Settings::from_env(&env).is_err());
        let bad = Config {
            subscription_id: G.into(),
            tenant_id: G.into(),
            public_url: "http://x".into(),
            ..Config::default()
        };
        assert!(bad.validate().is_err());
    }
}
