//! IMDS configuration: plain data, read from the environment by the binary.

use std::net::{IpAddr, SocketAddr};

use misim_types::EnvSource;

/// gRPC (Control) listen address.
pub const ENV_GRPC_ADDR: &str = "MISIM_IMDS_GRPC_ADDR";
/// Shared HTTP listen address (source-address mode only; per-VM mode binds
/// its own listener, see [`VmAddressing::PerVmAddress`]).
pub const ENV_HTTP_ADDR: &str = "MISIM_IMDS_HTTP_ADDR";
/// Data directory (the sled store lives in `<dir>/imds`).
pub const ENV_DATA_DIR: &str = "MISIM_DATA_DIR";
/// The tenant `/metadata/identity/info` reports as `tenantId`.
pub const ENV_TENANT_ID: &str = "MISIM_TENANT_ID";
/// Entra's gRPC URL (`Directory`).
pub const ENV_ENTRA_GRPC_URL: &str = "MISIM_ENTRA_GRPC_URL";
/// Entra's public URL (the authority host, for the assertion `aud`).
pub const ENV_ENTRA_PUBLIC_URL: &str = "MISIM_ENTRA_PUBLIC_URL";
/// `per-vm` (default) or `source-address`.
pub const ENV_ADDRESSING: &str = "MISIM_IMDS_ADDRESSING";
/// Source-address mode: static `vm=ip` pairs, comma-separated
/// (`/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/vm1=169.254.169.11,...`):
/// the address each VM container calls from. The key is a full VM resource id
/// (case-insensitive), never a bare name: a VM of the same name in another
/// resource group must not be able to claim or unsettle the mapping.
pub const ENV_VM_ADDRESSES: &str = "MISIM_IMDS_VM_ADDRESSES";
/// The per-VM limits of the identity endpoint: `on` (Azure's 20 requests
/// per second and 5 in flight, the default), `off`, requests per second, or
/// `RATE,CONCURRENT` (docs/toolkit.md, Throttling).
pub const ENV_THROTTLE: &str = "MISIM_IMDS_THROTTLE";

/// How long IMDS answers "Identity not found" for a newly pushed identity (`30s`, `2m`;
/// unset or 0: at once), as `misim up --identity-delay` (docs/toolkit.md, Delays).
pub const ENV_IDENTITY_DELAY: &str = "MISIM_IDENTITY_DELAY";

/// The real IMDS address. Only ever named, never contacted: misim serves
/// loopback addresses instead.
pub const AZURE_IMDS_IP: &str = "169.254.169.254";

/// How IMDS tells VMs apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmAddressing {
    /// Each VM has its own loopback address (`127.64.0.0/10`), all served on
    /// one port by one listener bound to the loopback device (the embedded
    /// sandbox): the address a connection is made to names the VM
    /// (`crate::listener`, `crate::domain::addresses`).
    PerVmAddress {
        /// The listener's port; 0: the last run's when free, else one the
        /// kernel picks.
        port: u16,
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
    pub vm_addresses: VmAddresses,
    /// The identity endpoint's rate and concurrency limits ([`ENV_THROTTLE`]).
    pub throttle: misim_chaos::ThrottleConfig,
    /// How long a new identity is not found ([`ENV_IDENTITY_DELAY`]).
    pub identity_delay: std::time::Duration,
}

/// The static map of source-address mode: which VM (by full resource id)
/// calls from which address. Built only through [`VmAddresses::new`] or
/// [`VmAddresses::parse`], so every key is a VM resource id and neither an id
/// nor an address appears twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmAddresses {
    /// (lower-case VM resource id, address).
    pairs: Vec<(String, IpAddr)>,
}

impl VmAddresses {
    /// Checks `(resource id, address)` pairs; the error names the offending entry.
    pub fn new<K: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, IpAddr)>,
    ) -> Result<Self, String> {
        let mut out = Self::default();
        for (key, ip) in pairs {
            let key = key.as_ref().trim();
            let entry = format!("{key}={ip}");
            let id = vm_resource_id(key)
                .map_err(|why| format!("{ENV_VM_ADDRESSES}: entry {entry:?}: {why}"))?;
            if let Some((_, other)) = out.pairs.iter().find(|(k, _)| *k == id) {
                return Err(format!(
                    "{ENV_VM_ADDRESSES}: entry {entry:?}: VM {key} is already mapped to {other}"
                ));
            }
            if let Some((other, _)) = out.pairs.iter().find(|(_, a)| *a == ip) {
                return Err(format!(
                    "{ENV_VM_ADDRESSES}: entry {entry:?}: address {ip} is already mapped to {other}"
                ));
            }
            out.pairs.push((id, ip));
        }
        Ok(out)
    }

    /// Parses [`ENV_VM_ADDRESSES`]: `resource-id=ip` pairs, comma-separated.
    pub fn parse(v: &str) -> Result<Self, String> {
        let mut pairs = Vec::new();
        for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, ip)) = pair.rsplit_once('=') else {
                return Err(format!(
                    "{ENV_VM_ADDRESSES}: entry {pair:?} is not <vm resource id>=<ip>"
                ));
            };
            let ip: IpAddr = ip
                .trim()
                .parse()
                .map_err(|e| format!("{ENV_VM_ADDRESSES}: entry {pair:?}: {e}"))?;
            pairs.push((key, ip));
        }
        Self::new(pairs)
    }

    /// True when no VM is mapped.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The lower-case resource id of the VM mapped to `ip`.
    pub(crate) fn vm_at(&self, ip: IpAddr) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(_, a)| *a == ip)
            .map(|(k, _)| k.as_str())
    }

    /// True when the VM (lower-case resource id) has a static address.
    pub(crate) fn maps(&self, vm_key: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == vm_key)
    }
}

/// The lower-case key of `s` when it is exactly
/// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}`.
fn vm_resource_id(s: &str) -> Result<String, String> {
    let not_vm = || {
        "is not a full VM resource id (/subscriptions/{id}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name})"
            .to_owned()
    };
    let id = misim_types::ResourceId::parse(s).map_err(|_| not_vm())?;
    let segs: Vec<&str> = id.as_str()[1..].split('/').collect();
    match segs.as_slice() {
        [subs, _, rgs, _, providers, ns, ty, _]
            if subs.eq_ignore_ascii_case("subscriptions")
                && rgs.eq_ignore_ascii_case("resourceGroups")
                && providers.eq_ignore_ascii_case("providers")
                && ns.eq_ignore_ascii_case("Microsoft.Compute")
                && ty.eq_ignore_ascii_case("virtualMachines") =>
        {
            Ok(id.key())
        }
        _ => Err(not_vm()),
    }
}

impl BinConfig {
    /// Reads and validates the binary's configuration.
    pub fn from_env(env: &dyn EnvSource) -> Result<Self, String> {
        let req = |k: &str| env.get(k).ok_or_else(|| format!("{k} is required"));
        let addr = |k: &str, v: String| v.parse::<SocketAddr>().map_err(|e| format!("{k}: {e}"));
        let addressing = match env.get(ENV_ADDRESSING).as_deref() {
            None | Some("per-vm") => VmAddressing::PerVmAddress { port: 0 },
            Some("source-address") => VmAddressing::SourceAddress,
            Some(other) => return Err(format!("{ENV_ADDRESSING}: unknown mode {other:?}")),
        };
        let http_addr = match env.get(ENV_HTTP_ADDR) {
            Some(_) if addressing != VmAddressing::SourceAddress => {
                return Err(format!(
                    "{ENV_HTTP_ADDR} applies to source-address mode only: per-vm mode serves every VM \
                     at its own loopback address on one port of its own"
                ));
            }
            Some(v) => Some(addr(ENV_HTTP_ADDR, v)?),
            None if addressing == VmAddressing::SourceAddress => {
                return Err(format!(
                    "{ENV_HTTP_ADDR} is required in source-address mode"
                ));
            }
            None => None,
        };
        let vm_addresses = match env.get(ENV_VM_ADDRESSES) {
            Some(v) if addressing == VmAddressing::SourceAddress => VmAddresses::parse(&v)?,
            Some(_) => {
                return Err(format!(
                    "{ENV_VM_ADDRESSES} applies to source-address mode only"
                ));
            }
            None => VmAddresses::default(),
        };
        let throttle = match env.get(ENV_THROTTLE) {
            None => misim_chaos::ThrottleConfig::AZURE,
            Some(v) => misim_chaos::ThrottleConfig::parse(&v)
                .map_err(|e| format!("{ENV_THROTTLE}: {e}"))?,
        };
        let identity_delay = match env.get(ENV_IDENTITY_DELAY) {
            None => std::time::Duration::ZERO,
            Some(v) => misim_types::time::parse_duration(&v)
                .map_err(|e| format!("{ENV_IDENTITY_DELAY}: {e}"))?,
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
            throttle,
            identity_delay,
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
        assert_eq!(c.config.addressing, VmAddressing::PerVmAddress { port: 0 });
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

    /// The binary's view of the minimal environment plus `var=v` when given.
    fn with_var(var: &'static str, v: Option<&'static str>) -> Result<BinConfig, String> {
        let mut env = vec![
            (ENV_TENANT_ID, "t1"),
            (ENV_ENTRA_PUBLIC_URL, "https://localhost:1"),
            (ENV_DATA_DIR, "/tmp/x"),
            (ENV_ENTRA_GRPC_URL, "http://127.0.0.1:2"),
        ];
        env.extend(v.map(|v| (var, v)));
        BinConfig::from_env(&MapEnv::from_pairs(env))
    }

    #[test]
    fn the_throttle_is_azures_unless_switched() {
        let with = |v| with_var(ENV_THROTTLE, v);
        assert_eq!(
            with(None).unwrap().throttle,
            misim_chaos::ThrottleConfig::AZURE
        );
        assert_eq!(
            with(Some("off")).unwrap().throttle,
            misim_chaos::ThrottleConfig::OFF
        );
        assert_eq!(with(Some("50")).unwrap().throttle.per_second, Some(50));
        assert_eq!(
            with(None).unwrap().throttle.concurrent,
            Some(misim_chaos::AZURE_IDENTITY_CONCURRENCY)
        );
        assert_eq!(with(Some("50,off")).unwrap().throttle.concurrent, None);
        assert!(with(Some("lots")).unwrap_err().contains(ENV_THROTTLE));
    }

    #[test]
    fn reads_the_identity_delay_as_misim_up_does() {
        let with = |v| with_var(ENV_IDENTITY_DELAY, v);
        use std::time::Duration;
        assert_eq!(with(None).unwrap().identity_delay, Duration::ZERO, "off");
        assert_eq!(
            with(Some("45s")).unwrap().identity_delay,
            Duration::from_secs(45)
        );
        assert_eq!(
            with(Some("1h")).unwrap().identity_delay,
            Duration::from_secs(3600)
        );
        let e = with(Some("5 minutes")).unwrap_err();
        assert!(
            e.contains(ENV_IDENTITY_DELAY) && e.contains("5 minutes"),
            "{e}"
        );
    }

    const VM1: &str =
        "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1";
    const VM2: &str =
        "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm2";

    /// The binary's view of `MISIM_IMDS_VM_ADDRESSES=v` in source-address mode.
    fn from_env_with_addresses(v: &str) -> Result<BinConfig, String> {
        let imds_addr = format!("{AZURE_IMDS_IP}:80");
        BinConfig::from_env(&MapEnv::from_pairs([
            (ENV_TENANT_ID, "t1"),
            (ENV_ENTRA_PUBLIC_URL, "https://localhost:1"),
            (ENV_DATA_DIR, "/tmp/x"),
            (ENV_ENTRA_GRPC_URL, "http://127.0.0.1:2"),
            (ENV_ADDRESSING, "source-address"),
            (ENV_HTTP_ADDR, imds_addr.as_str()),
            (ENV_VM_ADDRESSES, v),
        ]))
    }

    #[test]
    fn parses_static_vm_addresses() {
        let env = [
            (ENV_TENANT_ID, "t1"),
            (ENV_ENTRA_PUBLIC_URL, "https://localhost:1"),
            (ENV_DATA_DIR, "/tmp/x"),
            (ENV_ENTRA_GRPC_URL, "http://127.0.0.1:2"),
            (ENV_VM_ADDRESSES, VM1),
        ];
        // Only meaningful in source-address mode.
        assert!(BinConfig::from_env(&MapEnv::from_pairs(env)).is_err());
        let c = from_env_with_addresses(&format!(
            " {VM1}=169.254.169.11, {}/=169.254.169.12,",
            VM2.to_uppercase()
        ))
        .unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            c.vm_addresses.vm_at(ip("169.254.169.11")),
            Some(VM1.to_ascii_lowercase().as_str())
        );
        assert_eq!(
            c.vm_addresses.vm_at(ip("169.254.169.12")),
            Some(VM2.to_ascii_lowercase().as_str()),
            "ids are case-insensitive, a trailing slash is dropped"
        );
        assert!(c.vm_addresses.maps(&VM2.to_ascii_lowercase()));
        assert_eq!(c.vm_addresses.vm_at(ip("169.254.169.13")), None);
        assert!(VmAddresses::parse("").unwrap().is_empty());
    }

    /// Each refusal names the entry, so the operator sees which one to fix.
    #[test]
    fn refuses_ambiguous_static_vm_addresses() {
        let refused = |v: String, why: &str| {
            let e = from_env_with_addresses(&v).expect_err(&v);
            assert!(e.contains(ENV_VM_ADDRESSES), "{e}");
            assert!(e.contains(why), "{v}: {e}");
        };
        // A bare name would also match a VM of that name in any other resource group.
        refused(
            "vm1=169.254.169.11".into(),
            "entry \"vm1=169.254.169.11\": is not a full VM resource id",
        );
        refused(
            format!("{VM1}=169.254.169.11,/subscriptions/s/resourceGroups/rg1=169.254.169.12"),
            "is not a full VM resource id",
        );
        refused(
            format!("{VM1}/extensions/x=169.254.169.11"),
            "is not a full VM resource id",
        );
        refused(
            "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.Web/sites/vm1=169.254.169.11"
                .into(),
            "is not a full VM resource id",
        );
        // The same VM twice (case and trailing slash do not make another VM).
        refused(
            format!(
                "{VM1}=169.254.169.11,{}/=169.254.169.12",
                VM1.to_uppercase()
            ),
            "is already mapped to 169.254.169.11",
        );
        // The same address for two VMs.
        refused(
            format!("{VM1}=169.254.169.11,{VM2}=169.254.169.11"),
            "address 169.254.169.11 is already mapped to",
        );
        refused(format!("{VM1}=not-an-ip"), "entry");
        refused(
            format!("=169.254.169.11,{VM1}=169.254.169.12"),
            "entry \"=169.254.169.11\"",
        );
        refused("169.254.169.11".into(), "is not <vm resource id>=<ip>");
    }
}
