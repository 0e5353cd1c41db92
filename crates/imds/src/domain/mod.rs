//! Pure IMDS logic: stored records, identity selection (docs/azure-protocol.md, IMDS: identity
//! selection) and the token-reuse policy. No axum, no tonic, no IO.

pub mod addresses;
pub mod cache;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use misim_token::CertSigner;
use serde::{Deserialize, Serialize};

/// Instance metadata as stored (mirrors `VmMetadata`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VmMeta {
    pub resource_id: String,
    pub vm_id: String,
    pub name: String,
    pub resource_group: String,
    pub subscription_id: String,
    pub location: String,
    pub vm_size: String,
    pub os_type: String,
    pub tags: BTreeMap<String, String>,
    pub publisher: String,
    pub offer: String,
    pub sku: String,
    pub version: String,
    pub admin_username: String,
    pub computer_name: String,
    pub private_ip: String,
}

/// System- or user-assigned.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Kind {
    /// The VM's own identity.
    System,
    /// A user-assigned identity.
    User,
}

/// A managed identity as stored, with its private key (IMDS's store only).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct IdentityRecord {
    pub kind: Kind,
    pub client_id: String,
    pub object_id: String,
    pub resource_id: String,
    pub tenant_id: String,
    /// Shared (not copied) between a VM's record and its ready-to-sign
    /// identity: the PEMs are most of what each VM costs IMDS in memory.
    #[serde(with = "shared_str")]
    pub certificate_pem: Arc<str>,
    #[serde(with = "shared_str")]
    pub private_key_pem: Arc<str>,
}

/// Serde for `Arc<str>` fields, as plain strings (serde's `rc` feature would
/// do the same for the whole workspace).
mod shared_str {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(d).map(Arc::from)
    }
}

impl std::fmt::Debug for IdentityRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("IdentityRecord")
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .field("object_id", &self.object_id)
            .field("resource_id", &self.resource_id)
            .finish_non_exhaustive()
    }
}

/// A VM as stored: metadata, endpoint address, secret and identities.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VmRecord {
    pub meta: VmMeta,
    /// Per-VM-address mode: the VM's own loopback address ([`addresses`]),
    /// allocated once. Its endpoint is `http://{address}:{IMDS's port}`.
    /// Absent in source-address mode, and in records written before VMs had
    /// addresses (they had a port each; the address is allocated at restore).
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
    /// The App Service-style `X-IDENTITY-HEADER` secret.
    pub identity_header: String,
    pub identities: Vec<IdentityRecord>,
}

/// An identity ready to sign. Its key is parsed once: when ARM configures
/// it (so a bad key is refused then), or, for identities restored from disk,
/// on its first token request, so a restart with many VMs does no
/// elliptic-curve work per identity before it is ready (docs/performance.md
/// finding 9).
pub struct LiveIdentity {
    pub record: IdentityRecord,
    signer: OnceLock<Result<CertSigner, String>>,
}

impl std::fmt::Debug for LiveIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.record.fmt(f)
    }
}

impl LiveIdentity {
    /// Parses the identity's key and certificate into a signer now.
    pub fn new(record: IdentityRecord) -> Result<Self, String> {
        let signer = Self::parse(&record)?;
        Ok(Self {
            record,
            signer: OnceLock::from(Ok(signer)),
        })
    }

    /// An identity read back from the store: its key was checked when it was
    /// configured, and is parsed on first use.
    pub fn restored(record: IdentityRecord) -> Self {
        Self {
            record,
            signer: OnceLock::new(),
        }
    }

    /// The identity's signer (parsed on the first call for a restored one).
    pub fn signer(&self) -> Result<&CertSigner, &str> {
        self.signer
            .get_or_init(|| Self::parse(&self.record))
            .as_ref()
            .map_err(String::as_str)
    }

    fn parse(record: &IdentityRecord) -> Result<CertSigner, String> {
        let key = misim_token::cert::pem_to_der(&record.private_key_pem, "PRIVATE KEY")
            .map_err(|e| e.to_string())?;
        let cert = misim_token::cert::pem_to_der(&record.certificate_pem, "CERTIFICATE")
            .map_err(|e| e.to_string())?;
        CertSigner::new(&key, &cert).map_err(|e| e.to_string())
    }
}

/// Which identity a token request names: at most one selector (docs/azure-protocol.md, IMDS: token
/// request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector<'a> {
    /// No selector: the default identity.
    None,
    /// `client_id`, compared case-insensitively (clients send GUIDs in either case).
    ClientId(&'a str),
    /// `object_id` (App Service: also `principal_id`).
    ObjectId(&'a str),
    /// `msi_res_id` / `mi_res_id`.
    ResourceId(&'a str),
}

/// Why no identity was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectError {
    /// Nothing matches (or the VM has no identity).
    NotFound,
    /// Several user-assigned identities and no system-assigned one, no selector.
    Ambiguous,
}

/// Picks the identity for a request (docs/azure-protocol.md, IMDS: identity selection): a selector
/// must match an identity of this VM; without one the system-assigned identity is the default, else
/// the only user-assigned identity.
pub fn select<'v>(
    ids: &'v [Arc<LiveIdentity>],
    sel: Selector<'_>,
) -> Result<&'v Arc<LiveIdentity>, SelectError> {
    let found = match sel {
        Selector::None => {
            if let Some(s) = ids.iter().find(|i| i.record.kind == Kind::System) {
                return Ok(s);
            }
            let mut users = ids.iter().filter(|i| i.record.kind == Kind::User);
            return match (users.next(), users.next()) {
                (Some(u), None) => Ok(u),
                (Some(_), Some(_)) => Err(SelectError::Ambiguous),
                (None, _) => Err(SelectError::NotFound),
            };
        }
        Selector::ClientId(c) => ids
            .iter()
            .find(|i| i.record.client_id.eq_ignore_ascii_case(c)),
        Selector::ObjectId(o) => ids
            .iter()
            .find(|i| i.record.object_id.eq_ignore_ascii_case(o)),
        Selector::ResourceId(r) => {
            let r = r.trim_end_matches('/');
            ids.iter().find(|i| {
                i.record
                    .resource_id
                    .trim_end_matches('/')
                    .eq_ignore_ascii_case(r)
            })
        }
    };
    found.ok_or(SelectError::NotFound)
}

/// Claims of the client assertion IMDS signs for Entra (docs/contracts.md).
#[derive(Debug, Serialize)]
pub struct AssertionClaims<'a> {
    pub aud: &'a str,
    pub iss: &'a str,
    pub sub: &'a str,
    pub jti: String,
    pub nbf: i64,
    pub iat: i64,
    pub exp: i64,
}

/// Lifetime of a client assertion, seconds.
pub const ASSERTION_LIFETIME: i64 = 600;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn cert() -> &'static misim_token::cert::GeneratedCert {
        static C: OnceLock<misim_token::cert::GeneratedCert> = OnceLock::new();
        C.get_or_init(|| {
            let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
            misim_token::cert::generate_rsa_cert(
                "x",
                now,
                now + std::time::Duration::from_secs(86400),
            )
            .unwrap()
        })
    }

    fn id(kind: Kind, n: &str) -> Arc<LiveIdentity> {
        let c = cert();
        Arc::new(
            LiveIdentity::new(IdentityRecord {
                kind,
                client_id: format!("c-{n}"),
                object_id: format!("o-{n}"),
                resource_id: format!("/subscriptions/s/resourceGroups/rg/providers/X/y/{n}"),
                tenant_id: "t".into(),
                certificate_pem: c.certificate_pem.as_str().into(),
                private_key_pem: c.private_key_pem.as_str().into(),
            })
            .unwrap(),
        )
    }

    /// A restored identity parses its key on first use: a good key signs, a
    /// damaged one fails that request (and the next) instead of the restart.
    #[test]
    fn restored_identities_parse_their_key_on_first_use() {
        let good = id(Kind::System, "s").record.clone();
        let restored = LiveIdentity::restored(good.clone());
        assert!(restored.signer.get().is_none(), "parsed before use");
        assert!(restored.signer().is_ok());
        assert!(restored.signer.get().is_some());

        let damaged = IdentityRecord {
            private_key_pem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
                .into(),
            ..good
        };
        assert!(LiveIdentity::new(damaged.clone()).is_err());
        let restored = LiveIdentity::restored(damaged);
        assert!(restored.signer().is_err());
        assert!(restored.signer().is_err());
    }

    fn pick(ids: &[Arc<LiveIdentity>], sel: Selector<'_>) -> Result<String, SelectError> {
        select(ids, sel).map(|i| i.record.client_id.clone())
    }

    #[test]
    fn selection_follows_the_spec_table() {
        let none: Vec<Arc<LiveIdentity>> = vec![];
        assert_eq!(pick(&none, Selector::None), Err(SelectError::NotFound));
        assert_eq!(
            pick(&none, Selector::ClientId("c-s")),
            Err(SelectError::NotFound)
        );

        let sami = vec![id(Kind::System, "s")];
        assert_eq!(pick(&sami, Selector::None).unwrap(), "c-s");
        assert_eq!(
            pick(&sami, Selector::ClientId("c-x")),
            Err(SelectError::NotFound)
        );

        let both = vec![id(Kind::User, "u1"), id(Kind::System, "s")];
        assert_eq!(pick(&both, Selector::None).unwrap(), "c-s");
        assert_eq!(pick(&both, Selector::ObjectId("O-U1")).unwrap(), "c-u1");
        assert_eq!(
            pick(&both, Selector::ClientId("nope")),
            Err(SelectError::NotFound)
        );

        let one = vec![id(Kind::User, "u1")];
        assert_eq!(pick(&one, Selector::None).unwrap(), "c-u1");
        assert_eq!(
            pick(
                &one,
                Selector::ResourceId("/SUBSCRIPTIONS/s/resourcegroups/rg/providers/X/y/u1/")
            )
            .unwrap(),
            "c-u1"
        );
        assert_eq!(
            pick(&one, Selector::ObjectId("o-zz")),
            Err(SelectError::NotFound)
        );

        let two = vec![id(Kind::User, "u1"), id(Kind::User, "u2")];
        assert_eq!(pick(&two, Selector::None), Err(SelectError::Ambiguous));
        assert_eq!(pick(&two, Selector::ClientId("c-u2")).unwrap(), "c-u2");
        assert_eq!(
            pick(&two, Selector::ClientId("c-u3")),
            Err(SelectError::NotFound)
        );
    }
}
