//! The sandbox certificate authority and server TLS.
//!
//! ARM, Entra and Key Vault must be HTTPS: the Azure SDKs refuse to send bearer
//! tokens over plain HTTP. On first start misim generates a CA and keeps it in
//! `<data dir>/tls/`; clients trust `ca.pem` (`REQUESTS_CA_BUNDLE`,
//! `SSL_CERT_FILE`, `curl --cacert`). The server certificate is re-issued from
//! that CA on every start, so new host names never need a new CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;

/// Host names every server certificate covers. `*.vault.localhost` lets each
/// vault have its own host name (`https://kv1.vault.localhost:PORT/`), as the
/// Key Vault SDK's challenge check requires.
pub const DEFAULT_NAMES: &[&str] = &["localhost", "*.vault.localhost", "127.0.0.1", "::1"];

/// Comma-separated host names (or IPs) a service binary adds to its server
/// certificate, e.g. `arm,arm.misim` in the compose sandbox, where clients
/// reach services by their compose service names.
pub const ENV_EXTRA_NAMES: &str = "MISIM_TLS_EXTRA_NAMES";

/// The names of [`ENV_EXTRA_NAMES`] (empty when unset).
pub fn extra_names_from_env(env: &dyn misim_types::EnvSource) -> Vec<String> {
    env.get(ENV_EXTRA_NAMES)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The sandbox's TLS material.
#[derive(Clone)]
pub struct SandboxTls {
    /// PEM of the CA certificate (what clients trust).
    pub ca_pem: String,
    /// Where `ca_pem` is written.
    pub ca_path: PathBuf,
    /// The server configuration (h2 and http/1.1 via ALPN).
    pub server_config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for SandboxTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxTls")
            .field("ca_path", &self.ca_path)
            .finish_non_exhaustive()
    }
}

fn ca_params(now: SystemTime) -> anyhow::Result<rcgen::CertificateParams> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "misim sandbox CA");
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "misim");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = time::OffsetDateTime::from(now - Duration::from_secs(86400));
    p.not_after = time::OffsetDateTime::from(now + Duration::from_secs(10 * 365 * 86400));
    Ok(p)
}

/// Loads the CA from `dir` (creating it on first start) and issues a server
/// certificate for [`DEFAULT_NAMES`] plus `extra_names`.
pub fn load_or_create(
    dir: &Path,
    extra_names: &[String],
    now: SystemTime,
) -> anyhow::Result<SandboxTls> {
    // Owner-only: the CA key lives here (data directories are owner-only too).
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let ca_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca-key.pem");
    let (ca_pem, ca_key) = if ca_path.exists() && ca_key_path.exists() {
        let key_pem = std::fs::read_to_string(&ca_key_path).context("reading CA key")?;
        let key = rcgen::KeyPair::from_pem(&key_pem).context("parsing CA key")?;
        (
            std::fs::read_to_string(&ca_path).context("reading CA cert")?,
            key,
        )
    } else {
        let key = rcgen::KeyPair::generate().context("generating CA key")?;
        let cert = ca_params(now)?
            .self_signed(&key)
            .context("self-signing CA")?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        // Write the key first: a crash between the two writes leaves no
        // certificate, so the next start regenerates both.
        // Public, but it lives in an owner-only data directory like the rest.
        write_private(&ca_path, &cert.pem()).context("writing CA cert")?;
        (cert.pem(), key)
    };
    // The issuer is rebuilt from the same distinguished name and key; that is
    // all a child certificate records of its CA.
    let issuer = rcgen::Issuer::new(ca_params(now)?, ca_key);

    let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
    names.extend(extra_names.iter().cloned());
    names.dedup();
    let mut params = rcgen::CertificateParams::new(names).context("server certificate names")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "misim");
    params.not_before = time::OffsetDateTime::from(now - Duration::from_secs(86400));
    params.not_after = time::OffsetDateTime::from(now + Duration::from_secs(365 * 86400));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = rcgen::KeyPair::generate().context("generating server key")?;
    let server_cert = params
        .signed_by(&server_key, &issuer)
        .context("signing server cert")?;

    let chain = vec![rustls::pki_types::CertificateDer::from(
        server_cert.der().to_vec(),
    )];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into());
    // aws-lc-rs, explicitly: the build also has rustls's ring provider (reqwest's
    // clients use it), so there is no single process default to fall back on.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("tls versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("server tls config")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(SandboxTls {
        ca_pem,
        ca_path,
        server_config: Arc::new(config),
    })
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use misim_types::Clock;

    #[test]
    fn extra_names_come_from_the_env() {
        let env = misim_types::MapEnv::from_pairs([(ENV_EXTRA_NAMES, "arm, ,entra,*.vault.sim")]);
        assert_eq!(extra_names_from_env(&env), ["arm", "entra", "*.vault.sim"]);
        assert!(extra_names_from_env(&misim_types::MapEnv::default()).is_empty());
    }

    #[test]
    fn ca_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let now = misim_types::SystemClock.now();
        let a = load_or_create(dir.path(), &[], now).unwrap();
        let b = load_or_create(dir.path(), &["arm".into()], now).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        assert!(a.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
