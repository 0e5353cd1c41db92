//! The tenant's token-signing key: generated on first open, kept in the
//! store, parsed once into an [`RsaSigner`] that signs every token.

use std::time::Duration;

use misim_store::Store;
use misim_token::RsaSigner;
use misim_types::Clock;
use serde::{Deserialize, Serialize};

use crate::EntraError;

const TABLE: &str = "signing_keys";
const CURRENT: &str = "current";
/// Common name of the signing certificate.
const CN: &str = "misim entra signing";
/// Validity of the signing certificate (the simulator never rotates it).
const VALIDITY: Duration = Duration::from_secs(20 * 365 * 86400);

#[derive(Serialize, Deserialize)]
struct StoredKey {
    #[serde(with = "crate::domain::b64")]
    private_key_der: Vec<u8>,
    #[serde(with = "crate::domain::b64")]
    certificate_der: Vec<u8>,
    created_unix: i64,
}

/// The signing key, ready to sign.
#[derive(Debug)]
pub(crate) struct SigningKey {
    pub(crate) signer: RsaSigner,
    pub(crate) certificate_der: Vec<u8>,
    pub(crate) modulus: Vec<u8>,
    pub(crate) exponent: Vec<u8>,
}

impl SigningKey {
    fn from_stored(k: &StoredKey) -> Result<Self, EntraError> {
        let signer = RsaSigner::new(&k.private_key_der, &k.certificate_der)?;
        let (modulus, exponent) = signer.public_components();
        Ok(Self {
            signer,
            certificate_der: k.certificate_der.clone(),
            modulus,
            exponent,
        })
    }

    /// The key id (`kid` and `x5t` of every token).
    pub(crate) fn kid(&self) -> &str {
        self.signer.kid()
    }
}

/// Loads the signing key, generating and persisting it on first open.
pub(crate) async fn load_or_create(
    store: &Store,
    clock: &dyn Clock,
) -> Result<SigningKey, EntraError> {
    let table = store.table::<StoredKey>(TABLE)?;
    if let Some(k) = table.get(CURRENT)? {
        return SigningKey::from_stored(&k);
    }
    let now = clock.now();
    let not_before = now - Duration::from_secs(86400);
    let generated = tokio::task::spawn_blocking(move || {
        misim_token::cert::generate_rsa_cert(CN, not_before, now + VALIDITY)
    })
    .await
    .map_err(|e| EntraError::Signing(misim_token::TokenError::Key(e.to_string())))??;
    let stored = StoredKey {
        private_key_der: generated.private_key_der,
        certificate_der: generated.certificate_der,
        created_unix: clock.unix(),
    };
    if !table.insert_new(CURRENT, &stored).await? {
        // Another opener won the race: use its key.
        if let Some(k) = table.get(CURRENT)? {
            return SigningKey::from_stored(&k);
        }
    }
    tracing::info!("generated a new token-signing key");
    SigningKey::from_stored(&stored)
}
