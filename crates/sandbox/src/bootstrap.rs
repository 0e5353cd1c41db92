//! The sandbox's identity: tenant, subscription and administrator, generated on
//! first start and kept in `<data dir>/sandbox.json` so every later start (and
//! every service) sees the same ones.

use std::path::Path;

use anyhow::Context;
use misim_types::IdGen;

/// What the sandbox is: the tenant, the subscription that trusts it, and a
/// bootstrap administrator (Owner + Key Vault Secrets Officer of the subscription).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bootstrap {
    /// Entra tenant id.
    pub tenant_id: String,
    /// The subscription id.
    pub subscription_id: String,
    /// App (client) id of the administrator application.
    pub admin_client_id: String,
    /// Object id of the administrator's service principal.
    pub admin_object_id: String,
    /// The administrator's client secret.
    pub admin_client_secret: String,
}

impl Bootstrap {
    /// Loads `sandbox.json` from `dir`, creating it on first start.
    pub fn load_or_create(dir: &Path, ids: &dyn IdGen) -> anyhow::Result<Self> {
        let path = dir.join("sandbox.json");
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            return serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()));
        }
        let b = Bootstrap {
            tenant_id: ids.guid(),
            subscription_id: ids.guid(),
            admin_client_id: ids.guid(),
            admin_object_id: ids.guid(),
            // Two GUIDs make a secret with 244 random bits; Entra stores only its hash.
            admin_client_secret: format!("{}{}", ids.hex32(), ids.hex32()),
        };
        write_atomically(&path, &serde_json::to_string_pretty(&b)?)?;
        Ok(b)
    }
}

/// Writes `contents` to `path` (mode 0600) so that a crash leaves either the
/// old or the new file, never a torn one.
pub fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        // Owner-only: these files hold the administrator's secret and key.
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// The administrator's certificate credential: `admin-cert.pem` in the data dir
/// holds the private key and the certificate (the format `az login
/// --service-principal --certificate` and azure-identity's `CertificateCredential`
/// read). Generated on first start; Entra is told about it at every start.
pub fn admin_certificate(
    dir: &Path,
    now: std::time::SystemTime,
) -> anyhow::Result<(std::path::PathBuf, Vec<u8>)> {
    let path = dir.join("admin-cert.pem");
    if path.exists() {
        let pem = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let der =
            misim_token::cert::pem_to_der(&pem, "CERTIFICATE").context("admin certificate")?;
        return Ok((path, der));
    }
    let validity = std::time::Duration::from_secs(2 * 365 * 86400);
    let g = misim_token::cert::generate_rsa_cert("misim-admin", now, now + validity)?;
    write_atomically(
        &path,
        &format!("{}{}", g.private_key_pem, g.certificate_pem),
    )?;
    Ok((path, g.certificate_der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = Bootstrap::load_or_create(dir.path(), &misim_types::SeqIds::new(1)).unwrap();
        let b = Bootstrap::load_or_create(dir.path(), &misim_types::SeqIds::new(2)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.tenant_id, a.subscription_id);
    }
}
