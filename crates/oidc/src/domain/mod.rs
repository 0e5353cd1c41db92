//! The issuers: one signing key each, generated on first use and kept in the
//! store, parsed once into an [`RsaSigner`]. No axum or tonic types here.

pub(crate) mod claims;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use misim_store::{Store, Table};
use misim_token::RsaSigner;
use misim_token::jwks::Jwk;
use misim_types::{SharedClock, SharedIds};
use serde::{Deserialize, Serialize};

use crate::OidcError;

/// The default `aud`: what Entra expects in tokens it exchanges.
pub const DEFAULT_AUDIENCE: &str = "api://AzureADTokenExchange";
/// Lifetime of a token when none is asked for.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// The longest lifetime a token may be minted with (Entra accepts 25 h at most).
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Validity of each issuer's signing certificate (misim never rotates it).
const KEY_VALIDITY: Duration = Duration::from_secs(20 * 365 * 86400);

/// Which kind of issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IssuerKind {
    /// A Kubernetes cluster's service-account token issuer.
    Kubernetes,
    /// GitHub Actions' token issuer.
    GitHub,
}

/// One issuer: a kind and, for Kubernetes, a cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IssuerRef {
    pub kind: IssuerKind,
    /// The cluster name (Kubernetes only; empty otherwise).
    pub cluster: String,
}

impl IssuerRef {
    /// The GitHub Actions issuer.
    pub fn github() -> Self {
        Self {
            kind: IssuerKind::GitHub,
            cluster: String::new(),
        }
    }

    /// A cluster's issuer; the name must be a DNS label.
    pub fn kubernetes(cluster: &str) -> Result<Self, OidcError> {
        if !claims::is_dns_label(cluster) {
            return Err(OidcError::InvalidArgument(format!(
                "cluster name {cluster:?} must be a DNS label (lower-case letters, digits and hyphens, at most 63)"
            )));
        }
        Ok(Self {
            kind: IssuerKind::Kubernetes,
            cluster: cluster.to_owned(),
        })
    }

    /// The issuer's key in the store: `github`, or `kubernetes/{cluster}`.
    fn store_key(&self) -> String {
        match self.kind {
            IssuerKind::GitHub => "github".into(),
            IssuerKind::Kubernetes => format!("kubernetes/{}", self.cluster),
        }
    }

    fn from_store_key(key: &str) -> Option<Self> {
        match key.split_once('/') {
            None if key == "github" => Some(Self::github()),
            Some(("kubernetes", c)) => Self::kubernetes(c).ok(),
            _ => None,
        }
    }

    /// The issuer URL under `base`. A cluster's ends with a slash, as AKS's
    /// do (`https://{region}.oic.prod-aks.azure.com/{tenant}/{guid}/`);
    /// GitHub's does not (`https://token.actions.githubusercontent.com`).
    pub fn url(&self, base: &str) -> String {
        match self.kind {
            IssuerKind::GitHub => format!("{base}/github"),
            IssuerKind::Kubernetes => format!("{base}/kubernetes/{}/", self.cluster),
        }
    }

    /// Where the discovery document is: `{issuer without trailing slash}/.well-known/openid-configuration`.
    pub fn discovery_url(&self, base: &str) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.url(base).trim_end_matches('/')
        )
    }

    /// Where the keys are: `/openid/v1/jwks` as a Kubernetes API server
    /// serves them, `/.well-known/jwks` as GitHub does.
    pub fn jwks_uri(&self, base: &str) -> String {
        let url = self.url(base);
        match self.kind {
            IssuerKind::GitHub => format!("{url}/.well-known/jwks"),
            IssuerKind::Kubernetes => format!("{url}openid/v1/jwks"),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    #[serde(with = "b64")]
    private_key_der: Vec<u8>,
    #[serde(with = "b64")]
    certificate_der: Vec<u8>,
    created_unix: i64,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print private keys.
        f.debug_struct("StoredKey")
            .field("created_unix", &self.created_unix)
            .finish_non_exhaustive()
    }
}

mod b64 {
    //! serde helper: bytes as base64url text.
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&misim_token::b64url(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        misim_token::b64_lenient(&s).ok_or_else(|| serde::de::Error::custom("invalid base64"))
    }
}

/// An issuer ready to sign.
#[derive(Debug)]
pub(crate) struct LoadedIssuer {
    pub(crate) signer: RsaSigner,
    pub(crate) jwk: Jwk,
}

impl LoadedIssuer {
    fn from_stored(k: &StoredKey) -> Result<Self, OidcError> {
        let signer = RsaSigner::new(&k.private_key_der, &k.certificate_der)?;
        let (n, e) = signer.public_components();
        let jwk = Jwk::rsa(signer.kid(), &n, &e, &k.certificate_der, None);
        Ok(Self { signer, jwk })
    }
}

/// A request for a token.
#[derive(Debug, Clone)]
pub struct MintRequest {
    /// Which issuer.
    pub issuer: IssuerRef,
    /// The `sub` claim.
    pub subject: String,
    /// The `aud` claim ([`DEFAULT_AUDIENCE`] when `None`).
    pub audience: Option<String>,
    /// The lifetime ([`DEFAULT_LIFETIME`] when `None`, at most [`MAX_LIFETIME`]).
    pub lifetime: Option<Duration>,
}

/// A signed token.
#[derive(Debug, Clone)]
pub struct Minted {
    /// The compact JWT.
    pub token: String,
    /// Its `iss`.
    pub issuer: String,
    /// `iat`, Unix seconds.
    pub issued_at_unix: i64,
    /// `exp`, Unix seconds.
    pub expires_on_unix: i64,
}

/// Every issuer, by reference.
#[derive(Debug)]
pub(crate) struct Issuers {
    keys: Table<StoredKey>,
    loaded: tokio::sync::Mutex<BTreeMap<IssuerRef, Arc<LoadedIssuer>>>,
    clock: SharedClock,
    ids: SharedIds,
}

impl Issuers {
    /// Loads the stored issuers.
    pub(crate) fn open(
        store: &Store,
        clock: SharedClock,
        ids: SharedIds,
    ) -> Result<Self, OidcError> {
        let keys: Table<StoredKey> = store.table("issuer_keys")?;
        let mut loaded = BTreeMap::new();
        for (k, v) in keys.all()? {
            match IssuerRef::from_store_key(&k) {
                Some(r) => {
                    loaded.insert(r, Arc::new(LoadedIssuer::from_stored(&v)?));
                }
                None => tracing::warn!(key = %k, "ignoring an unknown stored issuer"),
            }
        }
        Ok(Self {
            keys,
            loaded: tokio::sync::Mutex::new(loaded),
            clock,
            ids,
        })
    }

    /// The issuer, if it exists.
    pub(crate) async fn get(&self, r: &IssuerRef) -> Option<Arc<LoadedIssuer>> {
        self.loaded.lock().await.get(r).cloned()
    }

    /// The issuer, generating and persisting its key first if it has none.
    pub(crate) async fn ensure(&self, r: &IssuerRef) -> Result<Arc<LoadedIssuer>, OidcError> {
        let mut loaded = self.loaded.lock().await;
        if let Some(i) = loaded.get(r) {
            return Ok(i.clone());
        }
        let now = self.clock.now();
        let cn = format!("misim oidc {}", r.store_key());
        let g = tokio::task::spawn_blocking(move || {
            misim_token::cert::generate_rsa_cert(
                &cn,
                now - Duration::from_secs(86400),
                now + KEY_VALIDITY,
            )
        })
        .await
        .map_err(|e| OidcError::Signing(misim_token::TokenError::Key(e.to_string())))??;
        let stored = StoredKey {
            private_key_der: g.private_key_der,
            certificate_der: g.certificate_der,
            created_unix: self.clock.unix(),
        };
        self.keys.put(&r.store_key(), &stored).await?;
        let issuer = Arc::new(LoadedIssuer::from_stored(&stored)?);
        loaded.insert(r.clone(), issuer.clone());
        tracing::info!(issuer = %r.store_key(), kid = issuer.signer.kid(), "oidc issuer created");
        Ok(issuer)
    }

    /// Every issuer with its key id.
    pub(crate) async fn list(&self) -> Vec<(IssuerRef, String)> {
        self.loaded
            .lock()
            .await
            .iter()
            .map(|(r, i)| (r.clone(), i.signer.kid().to_owned()))
            .collect()
    }

    /// Signs a token (creating a cluster's issuer on its first token).
    pub(crate) async fn mint(&self, base: &str, req: MintRequest) -> Result<Minted, OidcError> {
        let lifetime = req.lifetime.unwrap_or(DEFAULT_LIFETIME);
        if lifetime.is_zero() || lifetime > MAX_LIFETIME {
            return Err(OidcError::InvalidArgument(format!(
                "lifetime must be between 1 second and {} hours",
                MAX_LIFETIME.as_secs() / 3600
            )));
        }
        if req.subject.is_empty() {
            return Err(OidcError::InvalidArgument("a subject is required".into()));
        }
        let audience = req
            .audience
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned());
        let iss = req.issuer.url(base);
        let iat = self.clock.unix();
        let exp = iat + i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        let jti = self.ids.guid();
        let common = claims::Common {
            iss: &iss,
            sub: &req.subject,
            aud: &audience,
            iat,
            exp,
            jti: &jti,
        };
        // Checked before the issuer is created, so a bad subject makes no key.
        let claims = match req.issuer.kind {
            IssuerKind::Kubernetes => claims::kubernetes(&common, &req.issuer.cluster)?,
            IssuerKind::GitHub => claims::github(&common),
        };
        let issuer = self.ensure(&req.issuer).await?;
        let token = issuer.signer.sign(&claims)?;
        Ok(Minted {
            token,
            issuer: iss,
            issued_at_unix: iat,
            expires_on_unix: exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shaped_like_aks_and_github() {
        let base = "https://localhost:4443";
        let k = IssuerRef::kubernetes("aks-1").unwrap();
        assert_eq!(k.url(base), "https://localhost:4443/kubernetes/aks-1/");
        assert_eq!(
            k.discovery_url(base),
            "https://localhost:4443/kubernetes/aks-1/.well-known/openid-configuration"
        );
        assert_eq!(
            k.jwks_uri(base),
            "https://localhost:4443/kubernetes/aks-1/openid/v1/jwks"
        );
        let g = IssuerRef::github();
        assert_eq!(g.url(base), "https://localhost:4443/github");
        assert_eq!(
            g.discovery_url(base),
            "https://localhost:4443/github/.well-known/openid-configuration"
        );
        assert_eq!(
            IssuerRef::from_store_key(&k.store_key()),
            Some(k),
            "store keys round-trip"
        );
        assert!(IssuerRef::kubernetes("Bad_Name").is_err());
    }
}
