//! The `misim-oidc` binary's settings (the compose sandbox's standalone issuers), read
//! from the environment: plain data, checked before anything binds.

use std::net::SocketAddr;
use std::path::PathBuf;

use misim_types::EnvSource;

use crate::{Config, OidcError};

/// HTTPS listener of the discovery documents and JWKS.
pub const ENV_HTTP_ADDR: &str = "MISIM_OIDC_HTTP_ADDR";
/// gRPC listener of `misim.oidc.v1.Issuers` (the sandbox owner's minting).
pub const ENV_GRPC_ADDR: &str = "MISIM_OIDC_GRPC_ADDR";
/// The URL the HTTPS listener is reached at (`https://oidc`): the prefix of every issuer URL,
/// so the `iss` of every token and what federated credentials name.
pub const ENV_PUBLIC_URL: &str = "MISIM_OIDC_PUBLIC_URL";
/// Comma-separated clusters whose issuers exist from the first start.
pub const ENV_CLUSTERS: &str = "MISIM_OIDC_CLUSTERS";
/// Data directory (the store lives in `<dir>/oidc`, TLS material in `<dir>/tls`).
pub const ENV_DATA_DIR: &str = "MISIM_DATA_DIR";

/// Everything the binary reads from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinConfig {
    /// The issuers' configuration.
    pub config: Config,
    /// HTTPS listen address (default `127.0.0.1:8446`, as `misim up`).
    pub http_addr: SocketAddr,
    /// gRPC listen address (default `127.0.0.1:50054`, as `misim up`).
    pub grpc_addr: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
}

impl BinConfig {
    /// Reads and validates the settings; the error names the variable.
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, OidcError> {
        let addr = |k: &str, default: &str| {
            let v = env.get(k).unwrap_or_else(|| default.to_owned());
            v.trim()
                .parse::<SocketAddr>()
                .map_err(|e| OidcError::Config(format!("{k}={v:?}: {e}")))
        };
        let public_base = env
            .get(ENV_PUBLIC_URL)
            .ok_or_else(|| OidcError::Config(format!("{ENV_PUBLIC_URL} is required")))?
            .trim()
            .trim_end_matches('/')
            .to_owned();
        let clusters = env
            .get(ENV_CLUSTERS)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        let config = Config {
            public_base,
            clusters,
        };
        config
            .validate()
            .map_err(|e| OidcError::Config(format!("{ENV_PUBLIC_URL} or {ENV_CLUSTERS}: {e}")))?;
        let data_dir = env
            .get(ENV_DATA_DIR)
            .ok_or_else(|| OidcError::Config(format!("{ENV_DATA_DIR} is required")))?;
        Ok(Self {
            config,
            http_addr: addr(ENV_HTTP_ADDR, "127.0.0.1:8446")?,
            grpc_addr: addr(ENV_GRPC_ADDR, "127.0.0.1:50054")?,
            data_dir: data_dir.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use misim_types::MapEnv;

    fn with(extra: &[(&'static str, &'static str)]) -> Result<BinConfig, OidcError> {
        let mut env = vec![(ENV_PUBLIC_URL, "https://oidc/"), (ENV_DATA_DIR, "/data")];
        env.extend_from_slice(extra);
        BinConfig::from_env(&MapEnv::from_pairs(env))
    }

    #[test]
    fn reads_the_compose_settings() {
        let c = with(&[
            (ENV_HTTP_ADDR, "169.254.100.14:443"),
            (ENV_GRPC_ADDR, "169.254.100.14:50054"),
            (ENV_CLUSTERS, " aks1, ,dev "),
        ])
        .unwrap();
        assert_eq!(c.config.public_base, "https://oidc", "no trailing slash");
        assert_eq!(c.config.clusters, ["aks1", "dev"]);
        assert_eq!(c.http_addr, "169.254.100.14:443".parse().unwrap());
        assert_eq!(c.grpc_addr.port(), 50054);
        assert_eq!(c.data_dir, PathBuf::from("/data"));
        let d = with(&[]).unwrap();
        assert_eq!(d.http_addr, "127.0.0.1:8446".parse().unwrap(), "misim up's");
        assert!(d.config.clusters.is_empty());
    }

    #[test]
    fn bad_settings_name_their_variable() {
        let e = |r: Result<BinConfig, OidcError>| r.unwrap_err().to_string();
        assert!(
            e(BinConfig::from_env(&MapEnv::from_pairs([(
                ENV_DATA_DIR,
                "/d"
            )])))
            .contains(ENV_PUBLIC_URL)
        );
        assert!(e(with(&[(ENV_PUBLIC_URL, "http://oidc")])).contains(ENV_PUBLIC_URL));
        assert!(e(with(&[(ENV_PUBLIC_URL, "https://oidc/x")])).contains(ENV_PUBLIC_URL));
        assert!(e(with(&[(ENV_CLUSTERS, "Bad Name")])).contains(ENV_CLUSTERS));
        assert!(e(with(&[(ENV_GRPC_ADDR, "oidc:50054")])).contains(ENV_GRPC_ADDR));
        assert!(
            e(BinConfig::from_env(&MapEnv::from_pairs([(
                ENV_PUBLIC_URL,
                "https://oidc"
            )])))
            .contains(ENV_DATA_DIR)
        );
    }
}
