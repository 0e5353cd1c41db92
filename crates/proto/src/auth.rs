//! The control plane's credential: who may call misim's gRPC services.
//!
//! Every sandbox has one **control key** (32 random bytes, stored as 64
//! lowercase hex characters and a newline in a file only its owner can read).
//! Every gRPC call names its caller and proves it holds the key:
//!
//! ```text
//! authorization: MisimControl <caller>:<hex(HMAC-SHA256(key, "misim-control-v1:" + caller))>
//! ```
//!
//! Clients attach it with a [`Credential`] (an interceptor); servers check it
//! in `server::router_with` and then ask the service's table whether that
//! caller may call that method. All services of a sandbox share the one key,
//! so the caller name separates trusted services only as defence in depth;
//! the boundary is between holders of the key (the sandbox owner and the
//! service processes) and everyone else.

use std::fmt;
use std::io::Write;
use std::path::Path;

use ring::hmac;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// The environment variable naming a service binary's key file.
pub const ENV_CONTROL_KEY_FILE: &str = "MISIM_CONTROL_KEY_FILE";
/// The key file's name in a data directory.
pub const CONTROL_KEY_FILE: &str = "control.key";
/// The metadata key the credential travels in.
pub const HEADER: &str = "authorization";
/// The credential's scheme (the first word of the header value).
pub const SCHEME: &str = "MisimControl";
/// Domain separation: the key signs caller names for this purpose only.
const CONTEXT: &str = "misim-control-v1:";
const KEY_LEN: usize = 32;

/// Who is calling: one of misim's services, or the sandbox owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    /// Azure Resource Manager (also the managed-identity resource provider).
    Arm,
    /// Entra ID.
    Entra,
    /// The Instance Metadata Service.
    Imds,
    /// Key Vault.
    KeyVault,
    /// The sandbox owner: the `misim` CLI, tests, grpcurl. May call everything.
    Admin,
}

impl Caller {
    /// Every caller.
    pub const ALL: &'static [Caller] = &[
        Caller::Arm,
        Caller::Entra,
        Caller::Imds,
        Caller::KeyVault,
        Caller::Admin,
    ];

    /// The name in the credential.
    pub fn name(self) -> &'static str {
        match self {
            Caller::Arm => "arm",
            Caller::Entra => "entra",
            Caller::Imds => "imds",
            Caller::KeyVault => "keyvault",
            Caller::Admin => "admin",
        }
    }

    /// The caller called `name`, if any.
    pub fn from_name(name: &str) -> Option<Caller> {
        Self::ALL.iter().copied().find(|c| c.name() == name)
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("control key file {path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file does not hold 64 lowercase hex characters and a newline.
    #[error(
        "control key file {path} is malformed: expected 64 lowercase hex characters and a newline"
    )]
    Malformed {
        /// The key file.
        path: String,
    },
    /// The system's random source failed.
    #[error("cannot generate a control key: no system randomness")]
    Random,
}

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// No `authorization` metadata.
    #[error(
        "missing control-plane credential: send metadata 'authorization: MisimControl <caller>:<hmac>' (print one with `misim control-token`)"
    )]
    Missing,
    /// Present but not `MisimControl <known caller>:<64 hex>`.
    #[error(
        "malformed control-plane credential: expected 'MisimControl <caller>:<hmac>' with caller one of arm, entra, imds, keyvault, admin"
    )]
    Malformed,
    /// Well-formed, but not made with this sandbox's key.
    #[error(
        "invalid control-plane credential for caller {0}: not made with this sandbox's control key"
    )]
    BadMac(Caller),
}

/// A sandbox's control key.
#[derive(Clone)]
pub struct ControlKey {
    bytes: [u8; KEY_LEN],
    mac: hmac::Key,
}

impl fmt::Debug for ControlKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ControlKey(<redacted>)")
    }
}

impl ControlKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self {
            bytes,
            mac: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        }
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, KeyError> {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; KEY_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Random)?;
        Ok(Self::from_bytes(bytes))
    }

    /// The key file's contents: 64 lowercase hex characters and a newline.
    pub fn to_file_contents(&self) -> String {
        let mut s = hex(&self.bytes);
        s.push('\n');
        s
    }

    /// Parses the key file's contents (the trailing newline may be missing).
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_suffix('\n').unwrap_or(text);
        let bytes: [u8; KEY_LEN] = unhex(hex)?.try_into().ok()?;
        Some(Self::from_bytes(bytes))
    }

    /// Reads the key file at `path`.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).ok_or_else(|| KeyError::Malformed {
            path: path.display().to_string(),
        })
    }

    /// Reads the key file at `path`, creating it (mode 0600, new random key)
    /// when there is none. Processes starting together agree on one key: the
    /// file appears whole or not at all, and the first to publish it wins.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        match Self::load(path) {
            Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let key = Self::generate()?;
        let tmp = path.with_extension(format!("key.{}.tmp", std::process::id()));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let written = opts.open(&tmp).and_then(|mut f| {
            f.write_all(key.to_file_contents().as_bytes())?;
            f.sync_all()
        });
        // A hard link never replaces an existing file: a concurrent creator's key wins.
        let published = written.and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        match published {
            Ok(()) => Ok(key),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(io(e)),
        }
    }

    /// A service binary's key: the file `MISIM_CONTROL_KEY_FILE` names
    /// (default `<data_dir>/control.key`), created when missing.
    pub fn for_service(
        env: &dyn misim_types::EnvSource,
        data_dir: &Path,
    ) -> Result<Self, KeyError> {
        let path = env
            .get(ENV_CONTROL_KEY_FILE)
            .map_or_else(|| data_dir.join(CONTROL_KEY_FILE), std::path::PathBuf::from);
        Self::load_or_create(&path)
    }

    fn tag(&self, caller: Caller) -> hmac::Tag {
        hmac::sign(&self.mac, format!("{CONTEXT}{}", caller.name()).as_bytes())
    }

    /// The credential `caller` sends.
    pub fn credential(&self, caller: Caller) -> Credential {
        let value = format!(
            "{SCHEME} {}:{}",
            caller.name(),
            hex(self.tag(caller).as_ref())
        );
        Credential {
            caller,
            value: value
                .parse()
                .unwrap_or_else(|_| unreachable!("the credential is ASCII")),
        }
    }

    /// Checks a header value (`MisimControl <caller>:<hex>`) in constant time
    /// and returns the caller it names.
    pub fn verify(&self, header: Option<&str>) -> Result<Caller, CredentialError> {
        let header = header.ok_or(CredentialError::Missing)?;
        let (scheme, rest) = header
            .trim()
            .split_once(' ')
            .ok_or(CredentialError::Malformed)?;
        if !scheme.eq_ignore_ascii_case(SCHEME) {
            return Err(CredentialError::Malformed);
        }
        let (name, mac) = rest
            .trim()
            .split_once(':')
            .ok_or(CredentialError::Malformed)?;
        let caller = Caller::from_name(name).ok_or(CredentialError::Malformed)?;
        let mac = unhex(mac).ok_or(CredentialError::Malformed)?;
        hmac::verify(
            &self.mac,
            format!("{CONTEXT}{}", caller.name()).as_bytes(),
            &mac,
        )
        .map_err(|_| CredentialError::BadMac(caller))?;
        Ok(caller)
    }
}

/// What one caller attaches to every call: an interceptor.
#[derive(Clone)]
pub struct Credential {
    caller: Caller,
    value: MetadataValue<Ascii>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("caller", &self.caller)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// Who this credential names.
    pub fn caller(&self) -> Caller {
        self.caller
    }

    /// The header value (`MisimControl <caller>:<hex>`), for grpcurl and scripts.
    pub fn header_value(&self) -> &str {
        self.value
            .to_str()
            .unwrap_or_else(|_| unreachable!("the credential is ASCII"))
    }

    /// `channel` with this credential on every call.
    pub fn wrap(self, channel: Channel) -> ControlChannel {
        InterceptedService::new(channel, self)
    }
}

impl Interceptor for Credential {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert(HEADER, self.value.clone());
        Ok(req)
    }
}

/// A channel whose every call carries a [`Credential`]: what every misim
/// gRPC client is built on.
pub type ControlChannel = InterceptedService<Channel, Credential>;

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

/// Lowercase hex only: one spelling per key, so files compare byte for byte.
fn unhex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> ControlKey {
        ControlKey::from_bytes([b; KEY_LEN])
    }

    #[test]
    fn the_file_format_is_64_lowercase_hex_and_a_newline() {
        let k = ControlKey::from_bytes(std::array::from_fn(|i| i as u8 * 8));
        let text = k.to_file_contents();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        assert_eq!(&text[..8], "00081018");
        assert!(
            text[..64]
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        let back = ControlKey::parse(&text).unwrap();
        assert_eq!(back.bytes, k.bytes);
        assert!(ControlKey::parse(&text[..64]).is_some(), "newline optional");
    }

    #[test]
    fn malformed_key_files_are_refused() {
        let good = key(0xab).to_file_contents();
        for bad in [
            String::new(),
            "\n".into(),
            good[..62].to_owned() + "\n",
            good[..64].to_owned() + "00\n",
            good.to_uppercase(),
            good.replace('a', "g"),
            format!(" {good}"),
            format!("{good}\n"),
        ] {
            assert!(ControlKey::parse(&bad).is_none(), "accepted {bad:?}");
        }
    }

    #[test]
    fn the_credential_is_hmac_sha256_of_the_caller_name() {
        // HMAC-SHA256(key = 32 x 0x0b, "misim-control-v1:admin"), computed independently:
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"\x0b"*32,b"misim-control-v1:admin",hashlib.sha256).hexdigest())'
        let c = key(0x0b).credential(Caller::Admin);
        assert_eq!(
            c.header_value(),
            "MisimControl admin:b55900043e499e1e4b9b28f6bc374eeefd201e63d50382016d34fd4aa470ee44"
        );
    }

    #[test]
    fn every_caller_verifies_with_its_own_key_only() {
        let (k, other) = (key(1), key(2));
        for &caller in Caller::ALL {
            let h = k.credential(caller);
            assert_eq!(k.verify(Some(h.header_value())), Ok(caller));
            assert_eq!(
                other.verify(Some(h.header_value())),
                Err(CredentialError::BadMac(caller))
            );
        }
    }

    #[test]
    fn a_credential_cannot_be_renamed_to_another_caller() {
        let k = key(3);
        let imds = k.credential(Caller::Imds);
        let mac = imds.header_value().rsplit_once(':').unwrap().1;
        assert_eq!(
            k.verify(Some(&format!("MisimControl admin:{mac}"))),
            Err(CredentialError::BadMac(Caller::Admin))
        );
    }

    #[test]
    fn missing_and_malformed_credentials_are_refused() {
        let k = key(4);
        let mac = hex(k.tag(Caller::Arm).as_ref());
        assert_eq!(k.verify(None), Err(CredentialError::Missing));
        for bad in [
            "",
            "Bearer abc",
            "MisimControl",
            "MisimControl arm",
            "MisimControl root:00",
            &format!("Bearer arm:{mac}"),
            &format!("MisimControl arm:{}", &mac[..63]),
            &format!("MisimControl arm:{}", mac.to_uppercase()),
        ] {
            assert_eq!(
                k.verify(Some(bad)),
                Err(CredentialError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            k.verify(Some(&format!("MisimControl arm:{}00", &mac[..62]))),
            Err(CredentialError::BadMac(Caller::Arm))
        );
    }

    #[test]
    fn load_or_create_makes_an_owner_only_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONTROL_KEY_FILE);
        let first = ControlKey::load_or_create(&path).unwrap();
        let again = ControlKey::load_or_create(&path).unwrap();
        assert_eq!(first.bytes, again.bytes);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, first.to_file_contents());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Only the key file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_service_reads_the_key_file_the_environment_names() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared.key");
        std::fs::write(&shared, key(9).to_file_contents()).unwrap();
        let env =
            misim_types::MapEnv::from_pairs([(ENV_CONTROL_KEY_FILE, shared.to_str().unwrap())]);
        let k = ControlKey::for_service(&env, &dir.path().join("data")).unwrap();
        assert_eq!(k.bytes, key(9).bytes);
        // Without the variable: <data dir>/control.key, created.
        let k = ControlKey::for_service(&misim_types::MapEnv::default(), dir.path()).unwrap();
        assert_eq!(
            ControlKey::load(&dir.path().join(CONTROL_KEY_FILE))
                .unwrap()
                .bytes,
            k.bytes
        );
    }

    #[test]
    fn a_malformed_key_file_is_an_error_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONTROL_KEY_FILE);
        std::fs::write(&path, "not a key\n").unwrap();
        assert!(matches!(
            ControlKey::load_or_create(&path),
            Err(KeyError::Malformed { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key\n");
    }

    #[test]
    fn the_interceptor_sets_the_authorization_metadata() {
        let mut c = key(5).credential(Caller::KeyVault);
        let req = c.call(Request::new(())).unwrap();
        let v = req.metadata().get(HEADER).unwrap().to_str().unwrap();
        assert!(v.starts_with("MisimControl keyvault:"));
        assert_eq!(key(5).verify(Some(v)), Ok(Caller::KeyVault));
    }
}
