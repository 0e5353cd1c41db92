//! Key Vault configuration: plain data, read from the environment by the binary.

use std::net::SocketAddr;

use misim_types::EnvSource;

/// HTTPS listen address.
pub const ENV_HTTP_ADDR: &str = "MISIM_KEYVAULT_HTTP_ADDR";
/// Data directory (store in `<dir>/keyvault`, TLS material in `<dir>/tls`).
pub const ENV_DATA_DIR: &str = "MISIM_DATA_DIR";
/// The tenant the 401 challenge names: `authorization="{authority}/{tenant}"`.
pub const ENV_TENANT_ID: &str = "MISIM_TENANT_ID";
/// Entra's gRPC URL (signing keys).
pub const ENV_ENTRA_GRPC_URL: &str = "MISIM_ENTRA_GRPC_URL";
/// ARM's gRPC URL (`Authorization.CheckVaultAccess`).
pub const ENV_ARM_GRPC_URL: &str = "MISIM_ARM_GRPC_URL";
/// Entra's public URL: the challenge's `authorization` is `{url}/{tenant}`.
pub const ENV_ENTRA_PUBLIC_URL: &str = "MISIM_ENTRA_PUBLIC_URL";
/// DNS suffix of vault hosts (default `vault.localhost`).
pub const ENV_DNS_SUFFIX: &str = "MISIM_KEYVAULT_DNS_SUFFIX";
/// The challenge's `resource` (e.g. `https://vault.localhost:8445`).
pub const ENV_CHALLENGE_RESOURCE: &str = "MISIM_KEYVAULT_CHALLENGE_RESOURCE";

/// What Key Vault needs to know at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The tenant whose tokens are accepted.
    pub tenant_id: String,
    /// Entra's public URL (the authority host).
    pub authority: String,
    /// Vault hosts are `{vault}.{dns_suffix}`, e.g. `vault.localhost`.
    pub dns_suffix: String,
    /// The resource advertised in the challenge and accepted as `aud`
    /// besides `https://vault.azure.net`.
    pub challenge_resource: String,
}

impl Config {
    /// Checks the configuration before anything binds.
    pub fn validate(&self) -> Result<(), String> {
        if self.tenant_id.trim().is_empty() {
            return Err("tenant id is empty".into());
        }
        if self.dns_suffix.trim_matches('.').is_empty() {
            return Err("dns suffix is empty".into());
        }
        for (name, url) in [
            ("authority", &self.authority),
            ("challenge resource", &self.challenge_resource),
        ] {
            if !url.starts_with("https://") && !url.starts_with("http://") {
                return Err(format!("{name} {url:?} is not an http(s) url"));
            }
        }
        Ok(())
    }
}

/// Everything the binary reads from the environment.
#[derive(Debug, Clone)]
pub struct BinConfig {
    /// Service configuration.
    pub config: Config,
    /// HTTPS listen address.
    pub http_addr: SocketAddr,
    /// Data directory (store in `<dir>/keyvault`, TLS material in `<dir>/tls`).
    pub data_dir: std::path::PathBuf,
    /// Entra's gRPC URL (`Directory.GetSigningKeys`, to verify bearer tokens).
    pub entra_grpc_url: String,
    /// ARM's gRPC URL (`Authorization.CheckVaultAccess`, the data-action check).
    pub arm_grpc_url: String,
}

impl BinConfig {
    /// Reads and validates the binary's configuration.
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, String> {
        let req = |k: &str| env.get(k).ok_or_else(|| format!("{k} is required"));
        let http_addr = env
            .get(ENV_HTTP_ADDR)
            .unwrap_or_else(|| "127.0.0.1:8445".into())
            .parse::<SocketAddr>()
            .map_err(|e| format!("{ENV_HTTP_ADDR}: {e}"))?;
        let dns_suffix = env
            .get(ENV_DNS_SUFFIX)
            .unwrap_or_else(|| "vault.localhost".into());
        let challenge_resource = env
            .get(ENV_CHALLENGE_RESOURCE)
            .unwrap_or_else(|| format!("https://{dns_suffix}:{}", http_addr.port()));
        let config = Config {
            tenant_id: req(ENV_TENANT_ID)?,
            authority: req(ENV_ENTRA_PUBLIC_URL)?,
            dns_suffix,
            challenge_resource,
        };
        config.validate()?;
        Ok(Self {
            config,
            http_addr,
            data_dir: req(ENV_DATA_DIR)?.into(),
            entra_grpc_url: req(ENV_ENTRA_GRPC_URL)?,
            arm_grpc_url: req(ENV_ARM_GRPC_URL)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use misim_types::MapEnv;

    #[test]
    fn reads_env_with_defaults() {
        let env = MapEnv::from_pairs([
            (ENV_TENANT_ID, "t1"),
            (ENV_ENTRA_PUBLIC_URL, "https://localhost:1"),
            (ENV_DATA_DIR, "/tmp/x"),
            (ENV_ENTRA_GRPC_URL, "http://127.0.0.1:2"),
            (ENV_ARM_GRPC_URL, "http://127.0.0.1:3"),
        ]);
        let c = BinConfig::from_env(&env).unwrap();
        assert_eq!(c.config.challenge_resource, "https://vault.localhost:8445");
        assert!(BinConfig::from_env(&MapEnv::from_pairs([(ENV_TENANT_ID, "t1")])).is_err());
    }
}
