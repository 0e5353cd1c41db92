//! misim's sandbox DNS server: Azure's public host names
//! (`management.azure.com`, `login.microsoftonline.com`, `{vault}.vault.azure.net`, …)
//! answered with the addresses of misim's services, NXDOMAIN for every other
//! name, so code in a compose VM reaches misim under Azure's own URLs.
//!
//! - [`Records`]: the configured name → IPv4 map (exact names and one-label
//!   wildcards).
//! - [`answer::answer`]: one query in, one answer out, no IO.
//! - [`serve::serve`]: UDP and TCP on sockets the caller bound, with bounded
//!   connections and timeouts.
//!
//! Authoritative-only: nothing is recursed or forwarded, so no query ever
//! leaves the sandbox's networks. Depends on no service crate.

pub mod answer;
mod records;
pub mod serve;

use std::net::SocketAddr;

pub use records::Records;

/// Where the server listens, UDP and TCP (compose: `169.254.169.53:53`).
pub const ENV_ADDR: &str = "MISIM_DNS_ADDR";
/// The map, `name=ipv4,*.suffix=ipv4,…`.
pub const ENV_RECORDS: &str = "MISIM_DNS_RECORDS";
/// The listen address when [`ENV_ADDR`] is unset: loopback, unprivileged.
pub const DEFAULT_ADDR: &str = "127.0.0.1:5353";

/// misim-dns's errors.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The record map is malformed.
    #[error("{ENV_RECORDS}: {0}")]
    Records(String),
    /// Another setting is malformed or missing.
    #[error("{0}")]
    Config(String),
}

/// What the binary reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// UDP and TCP listen address.
    pub addr: SocketAddr,
    /// The names answered (exact, or one-label wildcards) and their IPv4 addresses; any other
    /// name is NXDOMAIN.
    pub records: Records,
}

impl Config {
    /// Reads and validates the settings.
    pub fn from_env(env: &dyn misim_types::EnvSource) -> Result<Self, DnsError> {
        let addr = env.get(ENV_ADDR).unwrap_or_else(|| DEFAULT_ADDR.into());
        let addr = addr
            .parse()
            .map_err(|e| DnsError::Config(format!("{ENV_ADDR}={addr:?}: {e}")))?;
        let records = Records::parse(&env.get(ENV_RECORDS).unwrap_or_default())?;
        if records.is_empty() {
            return Err(DnsError::Config(format!(
                "{ENV_RECORDS} is required (name=ipv4,*.suffix=ipv4,…)"
            )));
        }
        Ok(Self { addr, records })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use misim_types::MapEnv;

    #[test]
    fn reads_the_environment() {
        let env = MapEnv::from_pairs([
            (ENV_ADDR, "0.0.0.0:53"),
            (ENV_RECORDS, "management.azure.com=169.254.169.2"),
        ]);
        let c = Config::from_env(&env).unwrap();
        assert_eq!(c.addr, "0.0.0.0:53".parse().unwrap());
        let c = Config::from_env(&MapEnv::from_pairs([(ENV_RECORDS, "a.b=1.2.3.4")])).unwrap();
        assert_eq!(c.addr.to_string(), DEFAULT_ADDR);
        assert!(Config::from_env(&MapEnv::from_pairs([(ENV_ADDR, "0.0.0.0:53")])).is_err());
        assert!(
            Config::from_env(&MapEnv::from_pairs([
                (ENV_ADDR, "x"),
                (ENV_RECORDS, "a.b=1.2.3.4")
            ]))
            .is_err()
        );
    }
}
