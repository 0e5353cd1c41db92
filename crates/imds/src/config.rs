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
/// Source-address mode: static `vm=ip` pairs, comma-separated
/// (`myVM=169.254.169.11,/subscriptions/.../virtualMachines/vm2=169.254.169.12`),
/// used for VMs whose `VmMetadata.private_ip` ARM left empty. The key is a
/// VM name or a full resource id, both case-insensitive.
pub const ENV_VM_ADDRESSES: &str = "MISIM_IMDS_VM_ADDRESSES";

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
    /// Static VM addresses ([`ENV_VM_ADDRESSES`]), source-address mode only.
    pub vm_addresses: Vec<(String, IpAddr)>,
}

/// Parses [`ENV_VM_ADDRESSES`]: `key=ip` pairs, comma-separated; an address
/// may name only one VM.
pub fn parse_vm_addresses(v: &str) -> Result<Vec<(String, IpAddr)>, String> {
    let mut out: Vec<(String, IpAddr)> = Vec::new();
    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, ip)) = pair.rsplit_once('=') else {
            return Err(format!("{ENV_VM_ADDRESSES}: {pair:?} is not vm=ip"));
        };
        let key = key.trim();
        let ip: IpAddr = ip
            .trim()
            .parse()
            .map_err(|e| format!("{ENV_VM_ADDRESSES}: {pair:?}: {e}"))?;
        if key.is_empty() {
            return Err(format!("{ENV_VM_ADDRESSES}: {pair:?} has no VM"));
        }
        if out.iter().any(|(_, other)| *other == ip) {
            return Err(format!("{ENV_VM_ADDRESSES}: {ip} is given twice"));
        }
        out.push((key.to_owned(), ip));
    }
    Ok(out)
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
        let vm_addresses = match env.get(ENV_VM_ADDRESSES) {
            Some(v) if addressing == VmAddressing::SourceAddress => parse_vm_addresses(&v)?,
            Some(_) => {
                return Err(format!(
                    "{ENV_VM_ADDRESSES} applies to source-address mode only"
                ));
            }
            None => Vec::new(),
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
            vm_addresses,
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

    #[test]
    fn parses_static_vm_addresses() {
        let mut env = vec![
            (ENV_TENANT_ID, "t1"),
            (ENV_ENTRA_PUBLIC_URL, "https://localhost:1"),
            (ENV_DATA_DIR, "/tmp/x"),
            (ENV_ENTRA_GRPC_URL, "http://127.0.0.1:2"),
            (
                ENV_VM_ADDRESSES,
                "myVM=169.254.169.11, /subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm2=169.254.169.12",
            ),
        ];
        // Only meaningful in source-address mode.
        assert!(BinConfig::from_env(&MapEnv::from_pairs(env.clone())).is_err());
        env.push((ENV_ADDRESSING, "source-address"));
        let imds_addr = format!("{AZURE_IMDS_IP}:80");
        env.push((ENV_HTTP_ADDR, imds_addr.as_str()));
        let c = BinConfig::from_env(&MapEnv::from_pairs(env)).unwrap();
        assert_eq!(c.vm_addresses.len(), 2);
        assert_eq!(c.vm_addresses[0].0, "myVM");
        assert_eq!(c.vm_addresses[1].1.to_string(), "169.254.169.12");
        assert!(parse_vm_addresses("a=1.2.3.4,b=1.2.3.4").is_err());
        assert!(parse_vm_addresses("a=not-an-ip").is_err());
        assert!(parse_vm_addresses("=1.2.3.4").is_err());
        assert!(parse_vm_addresses("1.2.3.4").is_err());
        assert!(parse_vm_addresses("").unwrap().is_empty());
    }
}
