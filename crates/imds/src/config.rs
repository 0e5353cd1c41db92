//! IMDS configuration: plain data, read from the environment by the binary.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use misim_types::EnvSource;

/// gRPC (Control) listen address.
pub const ENV_GRPC_ADDR: &str = "MISIM_IMDS_GRPC_ADDR";
/// Shared HTTP listen address (source-address mode only).
pub const ENV_HTTP_ADDR: &str = "MISIM_IMDS_HTTP_ADDR";
/// Data directory (the sled store lives in `<dir>/imds`).
pub const ENV_DATA_DIR: &str = "MISIM_DATA_DIR";
/// Tenant id.
pub const ENV_TENANT_ID: &str = "MISIM_TENANT_ID";
/// Entra's gRPC URL (`Directory`).
pub const ENV_ENTRA_GRPC_URL: &str = "MISIM_ENTRA_GRPC_URL";
/// Entra's public URL (the authority host, for the assertion `aud`).
pub const ENV_ENTRA_PUBLIC_URL: &str = "MISIM_ENTRA_PUBLIC_URL";
/// `per-vm` (default) or `source-address`.
pub const ENV_ADDRESSING: &str = "MISIM_IMDS_ADDRESSING";

/// The real IMDS address. Only ever named, never contacted: misim serves
/// loopback listeners instead.
pub const AZURE_IMDS_IP: &str = "169.254.169.254";

/// How IMDS tells VMs apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmAddressing {
    /// One plain-HTTP listener per VM on `bind_ip` (the embedded sandbox): the
    /// listener a request arrives on names the VM.
    PerVmListener {
        /// Address the per-VM listeners bind (port 0, or the VM's old port).
        bind_ip: IpAddr,
    },
    /// One shared listener; the caller's source IP is the VM's `private_ip`
    /// (the compose sandbox, where each VM container has its own address).
    SourceAddress,
}

/// What IMDS needs to know at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The tenant that issues the identities' tokens.
    pub tenant_id: String,
    /// Entra's authority URL (`https://localhost:P`); client assertions carry
    /// `aud = {entra_authority}/{tenant_id}/oauth2/v2.0/token`.
    pub entra_authority: String,
    /// How VMs are told apart.
    pub addressing: VmAddressing,
}

impl Config {
    /// Checks the configuration before anything binds.
    pub fn validate(&self) -> Result<(), String> {
        if self.tenant_id.trim().is_empty() {
            return Err("tenant id is empty".into());
        }
        if !(self.entra_authority.starts_with("https://")
            || self.entra_authority.starts_with("http://"))
        {
            return Err(format!(
                "entra authority {:?} is not an http(s) url",
                self.entra_authority
            ));
        }
        Ok(())
    }

    /// The `aud` of client assertions.
    pub fn assertion_audience(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.entra_authority.trim_end_matches('/'),
            self.tenant_id
        )
    }
}

/// Everything the binary reads from the environment.
#[derive(Debug, Clone)]
pub struct BinConfig {
    /// Service configuration.
    pub config: Config,
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// Shared HTTP listen address (source-address mode).
    pub http_addr: Option<SocketAddr>,
    /// Data directory.
    pub data_dir: std::path::PathBuf,
    /// Entra gRPC URL.
    pub entra_grpc_url: String,
}

impl BinConfig {
    /// Reads and validates the binary's configuration.
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, String> {
        let req = |k: &str| env.get(k).ok_or_else(|| format!("{k} is required"));
        let addr = |k: &str, v: String| v.parse::<SocketAddr>().map_err(|e| format!("{k}: {e}"));
        let addressing = match env.get(ENV_ADDRESSING).as_deref() {
            None | Some("per-vm") => VmAddressing::PerVmListener {
                bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            },
            Some("source-address") => VmAddressing::SourceAddress,
            Some(other) => return Err(format!("{ENV_ADDRESSING}: unknown mode {other:?}")),
        };
        let http_addr = match env.get(ENV_HTTP_ADDR) {
            Some(v) => Some(addr(ENV_HTTP_ADDR, v)?),
            None if addressing == VmAddressing::SourceAddress => {
                return Err(format!(
                    "{ENV_HTTP_ADDR} is required in source-address mode"
                ));
            }
            None => None,
        };
        let config = Config {
            tenant_id: req(ENV_TENANT_ID)?,
            entra_authority: req(ENV_ENTRA_PUBLIC_URL)?,
            addressing,
        };
        config.validate()?;
        Ok(Self {
            config,
            grpc_addr: addr(
                ENV_GRPC_ADDR,
                env.get(ENV_GRPC_ADDR)
                    .unwrap_or_else(|| "127.0.0.1:50053".into()),
            )?,
            http_addr,
            data_dir: req(ENV_DATA_DIR)?.into(),
            entra_grpc_url: req(ENV_ENTRA_GRPC_URL)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use misim_types::MapEnv;

    #[test]
    fn reads_env_and_rejects_bad_modes() {
        let base = [
            (ENV_TENANT_ID, "t1"),
            (ENV_ENTRA_PUBLIC_URL, "https://localhost:1"),
            (ENV_DATA_DIR, "/tmp/x"),
            (ENV_ENTRA_GRPC_URL, "http://127.0.0.1:2"),
        ];
        let c = BinConfig::from_env(&MapEnv::from_pairs(base)).unwrap();
        assert!(matches!(
            c.config.addressing,
            VmAddressing::PerVmListener { .. }
        ));
        assert_eq!(
            c.config.assertion_audience(),
            "https://localhost:1/t1/oauth2/v2.0/token"
        );
        let mut bad = base.to_vec();
        bad.push((ENV_ADDRESSING, "source-address"));
        assert!(BinConfig::from_env(&MapEnv::from_pairs(bad.clone())).is_err());
        bad.push((ENV_HTTP_ADDR, "127.0.0.1:80"));
        assert!(BinConfig::from_env(&MapEnv::from_pairs(bad)).is_ok());
        assert!(BinConfig::from_env(&MapEnv::from_pairs([(ENV_ADDRESSING, "nope")])).is_err());
    }
}
