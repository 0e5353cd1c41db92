//! The compose sandbox's generated secrets: nothing secret is committed to
//! `deploy/`. The one-shot `secrets-init` container runs `misim secrets init`
//! once, into a volume that only the service containers mount (never a VM):
//!
//! - `control.key`: the per-sandbox key every gRPC call's credential is made
//!   with ([`misim_proto::auth::ControlKey`]; services read it from
//!   `MISIM_CONTROL_KEY_FILE`);
//! - `admin-secret`: the bootstrap administrator's client secret (Entra reads
//!   it from `MISIM_ADMIN_SECRET_FILE`; the owner prints it on the host with
//!   `misim secrets admin-env` run in the entra container).
//!
//! Both files are mode 0600 in a 0700 directory, created only when missing,
//! so restarts and `down`/`up` keep them.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::write_atomically;

/// The control key's file name in the secrets directory.
pub const CONTROL_KEY_FILE: &str = misim_proto::auth::CONTROL_KEY_FILE;
/// The admin secret's file name in the secrets directory.
pub const ADMIN_SECRET_FILE: &str = "admin-secret";

/// What [`init`] left in the secrets directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    /// The control key file.
    pub control_key: PathBuf,
    /// The admin secret file.
    pub admin_secret: PathBuf,
    /// The files this call created (the others already existed).
    pub created: Vec<PathBuf>,
}

/// 32 random bytes as 64 lower-case hex digits.
fn random_hex32() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates `dir` (0700) and each secret that is missing. An existing control
/// key in another format is an error, never silently replaced: the services
/// already running with it would stop trusting each other.
pub fn init(dir: &Path) -> anyhow::Result<Secrets> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    let control_key = dir.join(CONTROL_KEY_FILE);
    let admin_secret = dir.join(ADMIN_SECRET_FILE);
    let mut created = Vec::new();
    let existed = control_key.exists();
    misim_proto::auth::ControlKey::load_or_create(&control_key)?;
    if !existed {
        created.push(control_key.clone());
    }
    if !admin_secret.exists() {
        write_atomically(&admin_secret, &format!("{}\n", random_hex32()))?;
        created.push(admin_secret.clone());
    }
    Ok(Secrets {
        control_key,
        admin_secret,
        created,
    })
}

/// The bootstrap administrator as a host-side client needs it, in the
/// variable names of `misim.env` (`misim up`'s environment file).
#[derive(Debug, Clone)]
pub struct AdminEnv {
    /// `MISIM_TENANT_ID`.
    pub tenant_id: String,
    /// `MISIM_SUBSCRIPTION_ID`.
    pub subscription_id: String,
    /// `MISIM_ADMIN_CLIENT_ID` (the admin application's app id).
    pub client_id: String,
    /// `MISIM_ADMIN_OBJECT_ID`.
    pub object_id: String,
}

impl AdminEnv {
    /// `KEY=VALUE` lines with the secret read from `secret_file`.
    pub fn render(&self, secret_file: &Path) -> anyhow::Result<String> {
        let secret = read_admin_secret(secret_file)?;
        let secret = secret.as_str();
        Ok([
            ("MISIM_TENANT_ID", self.tenant_id.as_str()),
            ("MISIM_SUBSCRIPTION_ID", &self.subscription_id),
            ("MISIM_ADMIN_CLIENT_ID", &self.client_id),
            ("MISIM_ADMIN_OBJECT_ID", &self.object_id),
            ("MISIM_ADMIN_CLIENT_SECRET", secret),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect())
    }
}

/// The admin secret in `secret_file` (its first line; `MISIM_ADMIN_SECRET_FILE`).
pub fn read_admin_secret(secret_file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(secret_file)
        .with_context(|| format!("reading {}", secret_file.display()))?;
    let secret = text.lines().next().unwrap_or("").trim();
    anyhow::ensure!(!secret.is_empty(), "{} is empty", secret_file.display());
    Ok(secret.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn init_generates_each_secret_once_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("secrets");
        let first = init(&dir).unwrap();
        assert_eq!(first.created.len(), 2);
        let key = std::fs::read_to_string(&first.control_key).unwrap();
        assert!(
            key.len() == 65
                && key.ends_with('\n')
                && key[..64]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{key:?}"
        );
        misim_proto::auth::ControlKey::load(&first.control_key).unwrap();
        let secret = std::fs::read_to_string(&first.admin_secret).unwrap();
        assert_eq!(secret.trim().len(), 64);
        assert_ne!(key, secret, "two independent random values");
        #[cfg(unix)]
        {
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&first.control_key), 0o600);
            assert_eq!(mode(&first.admin_secret), 0o600);
        }
        // A second run (every `docker compose up`) keeps both.
        let again = init(&dir).unwrap();
        assert!(again.created.is_empty());
        assert_eq!(std::fs::read_to_string(&again.control_key).unwrap(), key);
        assert_eq!(
            std::fs::read_to_string(&again.admin_secret).unwrap(),
            secret
        );
        // Another sandbox gets other secrets.
        let other = init(&tmp.path().join("other")).unwrap();
        assert_ne!(std::fs::read_to_string(&other.control_key).unwrap(), key);
        assert_ne!(
            std::fs::read_to_string(&other.admin_secret).unwrap(),
            secret
        );
    }

    #[test]
    fn init_refuses_a_malformed_control_key() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(CONTROL_KEY_FILE), "not-a-key\n").unwrap();
        let e = init(tmp.path()).unwrap_err();
        assert!(format!("{e:#}").contains("is malformed"), "{e:#}");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join(CONTROL_KEY_FILE)).unwrap(),
            "not-a-key\n",
            "never silently replaced"
        );
    }

    #[test]
    fn admin_env_prints_misim_env_names() {
        let tmp = tempfile::tempdir().unwrap();
        let s = init(tmp.path()).unwrap();
        let secret = std::fs::read_to_string(&s.admin_secret).unwrap();
        let env = AdminEnv {
            tenant_id: "t".into(),
            subscription_id: "s".into(),
            client_id: "c".into(),
            object_id: "o".into(),
        };
        let text = env.render(&s.admin_secret).unwrap();
        assert_eq!(
            text,
            format!(
                "MISIM_TENANT_ID=t\nMISIM_SUBSCRIPTION_ID=s\nMISIM_ADMIN_CLIENT_ID=c\n\
                 MISIM_ADMIN_OBJECT_ID=o\nMISIM_ADMIN_CLIENT_SECRET={}\n",
                secret.trim()
            )
        );
        assert!(env.render(&tmp.path().join("missing")).is_err());
    }

    /// The compose deployment commits no admin secret: Entra reads the one
    /// `misim secrets init` generated.
    #[test]
    fn the_compose_deployment_commits_no_admin_secret() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        let env = std::fs::read_to_string(deploy.join("sandbox.env")).unwrap();
        let vars: Vec<(&str, &str)> = env
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .collect();
        assert!(
            !vars.iter().any(|(k, _)| k.trim() == "MISIM_ADMIN_SECRET"),
            "deploy/sandbox.env sets MISIM_ADMIN_SECRET"
        );
        assert!(
            vars.contains(&("MISIM_ADMIN_SECRET_FILE", "/secrets/admin-secret")),
            "deploy/sandbox.env must point Entra at the generated secret"
        );
        let compose = std::fs::read_to_string(deploy.join("compose.yaml")).unwrap();
        assert!(
            !compose.contains("not-a-real-secret"),
            "deploy/compose.yaml names a secret"
        );
        // The VM template, the VMs and the pod mount no secrets volume and name no
        // secret file (the pod's `/var/run/secrets/azure/tokens` holds only its token).
        for (start, indent) in [("x-vm:", 0), ("vm1:", 2), ("vm2:", 2), ("pod1:", 2)] {
            let block = yaml_block(&compose, start, indent);
            assert!(!block.is_empty(), "no {start} in compose.yaml");
            for secret in [
                "sandbox-secrets",
                "sandbox.env",
                "/secrets:",
                "control.key",
                "admin-secret",
            ] {
                assert!(
                    !block.contains(secret),
                    "{start} sees the secrets ({secret}):\n{block}"
                );
            }
        }
    }

    /// The lines (without comments) of the YAML mapping entry `key` at
    /// `indent` spaces, up to the next entry at that indentation or less.
    fn yaml_block(text: &str, key: &str, indent: usize) -> String {
        let mut out = String::new();
        let mut inside = false;
        for line in text.lines() {
            let depth = line.len() - line.trim_start().len();
            let content = !line.trim().is_empty() && !line.trim_start().starts_with('#');
            if inside && content && depth <= indent {
                break;
            }
            if !inside && depth == indent && line.trim_start().starts_with(key) {
                inside = true;
            }
            if inside && content {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}
