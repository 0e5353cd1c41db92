//! The trusted token-signing keys of misim's Entra, fetched over gRPC.
//!
//! ARM and Key Vault verify every bearer token against these keys. The set is
//! fetched lazily and refreshed when a token names an unknown `kid` (key
//! rotation), at most once per [`MIN_REFRESH`], so a flood of forged tokens
//! cannot turn into a flood of calls to Entra.

use std::sync::Arc;
use std::time::Duration;

use misim_token::TokenError;
use misim_token::verify::{AccessClaims, KeySet, peek_kid, verify_access_token};
use misim_types::Clock;
use tokio::sync::Mutex;

use crate::entra::v1::{
    GetSigningKeysRequest, GetTenantRequest, directory_client::DirectoryClient,
};

/// Minimum time between two refreshes caused by unknown key ids.
pub const MIN_REFRESH: Duration = Duration::from_secs(10);

/// Keys and issuers trusted at one moment.
#[derive(Debug, Clone)]
pub struct Trusted {
    /// Signing keys by kid.
    pub keys: KeySet,
    /// Accepted `iss` values (v1 and v2 issuers of the tenant).
    pub issuers: Vec<String>,
}

/// Why a token could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The token itself is bad.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Entra could not be asked for its keys.
    #[error("cannot fetch signing keys from entra: {0}")]
    Unavailable(String),
}

/// A cache of Entra's signing keys.
///
/// Every ARM and Key Vault request reads it, so reads take a short
/// synchronous read lock; only a refresh takes the async `refresh` lock, held
/// across the fetch so concurrent misses make one call, not many.
#[derive(Debug, Clone)]
pub struct EntraKeys {
    client: DirectoryClient<crate::auth::ControlChannel>,
    current: Arc<parking_lot::RwLock<Option<Arc<Trusted>>>>,
    refresh: Arc<Mutex<Option<tokio::time::Instant>>>,
}

impl EntraKeys {
    /// A cache that fetches through `client`.
    pub fn new(client: DirectoryClient<crate::auth::ControlChannel>) -> Self {
        Self {
            client,
            current: Arc::new(parking_lot::RwLock::new(None)),
            refresh: Arc::new(Mutex::new(None)),
        }
    }

    async fn fetch(&self) -> Result<Arc<Trusted>, KeysError> {
        let mut c = self.client.clone();
        let unavailable = |s: tonic::Status| KeysError::Unavailable(s.message().to_owned());
        let tenant = c
            .get_tenant(GetTenantRequest {})
            .await
            .map_err(unavailable)?
            .into_inner();
        let keys = c
            .get_signing_keys(GetSigningKeysRequest {})
            .await
            .map_err(unavailable)?
            .into_inner();
        let mut set = KeySet::new(tenant.tenant_id.clone());
        for k in &keys.keys {
            set.add_rsa(&k.kid, &k.modulus, &k.exponent);
        }
        Ok(Arc::new(Trusted {
            keys: set,
            issuers: vec![tenant.issuer_v1, tenant.issuer_v2],
        }))
    }

    /// The current trusted set, fetching it if needed. With `want_kid`, refetch
    /// (at most once per [`MIN_REFRESH`], failures included) when the cached
    /// set lacks that key.
    pub async fn trusted(&self, want_kid: Option<&str>) -> Result<Arc<Trusted>, KeysError> {
        let fresh_enough = |t: &Option<Arc<Trusted>>| match (t, want_kid) {
            (Some(t), Some(kid)) if !t.keys.contains(kid) => None,
            (Some(t), _) => Some(t.clone()),
            (None, _) => None,
        };
        if let Some(t) = fresh_enough(&self.current.read()) {
            return Ok(t);
        }
        let mut last_attempt = self.refresh.lock().await;
        // Another task may have refreshed while this one waited.
        let cached = self.current.read().clone();
        if let Some(t) = fresh_enough(&cached) {
            return Ok(t);
        }
        if let (Some(t), Some(at)) = (&cached, *last_attempt)
            && at.elapsed() < MIN_REFRESH
        {
            // An unknown kid within the rate limit: answer with what we have;
            // verification then fails with "unknown signing key".
            return Ok(t.clone());
        }
        *last_attempt = Some(tokio::time::Instant::now());
        let fresh = self.fetch().await?;
        *self.current.write() = Some(fresh.clone());
        Ok(fresh)
    }

    /// Verifies a bearer token: signature, tenant, issuer, lifetime and an
    /// audience accepted by `accept_aud`.
    pub async fn verify(
        &self,
        token: &str,
        clock: &dyn Clock,
        accept_aud: impl Fn(&str) -> bool,
    ) -> Result<AccessClaims, KeysError> {
        let kid = peek_kid(token)?;
        let trusted = self.trusted(kid.as_deref()).await?;
        let issuers: Vec<&str> = trusted.issuers.iter().map(String::as_str).collect();
        Ok(verify_access_token(
            token,
            &trusted.keys,
            &issuers,
            clock,
            accept_aud,
        )?)
    }
}
