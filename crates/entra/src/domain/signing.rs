//! The tenant's token-signing keys, a ring that rolls over as Entra's does
//! (docs/azure-protocol.md, "Entra: OIDC discovery and JWKS" [SIGNING-KEYS]):
//! the **next** key is published in JWKS before it signs anything, the
//! **current** key signs, and a **retired** key stays published until every
//! token it signed has expired (the longest token lifetime plus the clock skew
//! verifiers allow). A roll (`misim keys roll`, or on schedule once the
//! current key is older than the configured interval, judged by the sandbox
//! clock) promotes next to current, retires current and makes a new next.
//! The ring is kept in the store and parsed once into [`RsaSigner`]s.

use std::sync::Arc;
use std::time::Duration;

use misim_store::{Store, Table};
use misim_token::RsaSigner;
use misim_token::verify::KeySet;
use misim_types::{Clock, SharedClock};
use serde::{Deserialize, Serialize};

use crate::EntraError;

const TABLE: &str = "signing_keys";
/// The single key of stores written before key rollover: adopted as the current key.
const LEGACY_CURRENT: &str = "current";
const RING: &str = "ring";
/// Common name of the signing certificates.
const CN: &str = "misim entra signing";
/// Validity of a signing certificate: far beyond any roll interval, so a key
/// never expires while it is published.
const VALIDITY: Duration = Duration::from_secs(20 * 365 * 86400);

#[derive(Clone, Serialize, Deserialize)]
struct StoredKey {
    #[serde(with = "crate::domain::b64")]
    private_key_der: Vec<u8>,
    #[serde(with = "crate::domain::b64")]
    certificate_der: Vec<u8>,
    created_unix: i64,
    /// When it started signing (`None`: the next key, published only).
    #[serde(default)]
    active_from_unix: Option<i64>,
    /// When it stopped signing (a retired key).
    #[serde(default)]
    retired_unix: Option<i64>,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredRing {
    keys: Vec<StoredKey>,
}

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyState {
    /// Published, not signing yet.
    Next,
    /// Signing.
    Current,
    /// No longer signing; published until its tokens have expired.
    Retired,
}

impl KeyState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Current => "current",
            Self::Retired => "retired",
        }
    }
}

/// One key, ready to sign.
#[derive(Debug)]
pub(crate) struct SigningKey {
    pub(crate) signer: RsaSigner,
    pub(crate) certificate_der: Vec<u8>,
    pub(crate) modulus: Vec<u8>,
    pub(crate) exponent: Vec<u8>,
    pub(crate) created_unix: i64,
    pub(crate) active_from_unix: Option<i64>,
    pub(crate) retired_unix: Option<i64>,
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
            created_unix: k.created_unix,
            active_from_unix: k.active_from_unix,
            retired_unix: k.retired_unix,
        })
    }

    /// The key id (`kid` and `x5t` of every token).
    pub(crate) fn kid(&self) -> &str {
        self.signer.kid()
    }

    pub(crate) fn state(&self) -> KeyState {
        match (self.active_from_unix, self.retired_unix) {
            (_, Some(_)) => KeyState::Retired,
            (Some(_), None) => KeyState::Current,
            (None, None) => KeyState::Next,
        }
    }
}

/// The keys at one moment: what signs, what is published, and the public
/// half of every published key (for verifying Graph bearer tokens).
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) keys: Vec<Arc<SigningKey>>,
    pub(crate) current: Arc<SigningKey>,
    pub(crate) verify: KeySet,
}

/// The persisted ring of signing keys.
#[derive(Debug)]
pub(crate) struct KeyRing {
    table: Table<StoredRing>,
    snapshot: parking_lot::RwLock<Arc<Snapshot>>,
    rolling: tokio::sync::Mutex<()>,
    clock: SharedClock,
    /// Roll once the current key has signed this long (sandbox time); `None`: only when asked.
    roll_every_secs: Option<i64>,
    /// How long a retired key stays published: the longest token lifetime plus skew.
    retire_after_secs: i64,
    tenant_id: String,
}

impl std::fmt::Debug for StoredRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredRing")
            .field("keys", &self.keys.len())
            .finish()
    }
}

async fn generate(clock: &dyn Clock) -> Result<StoredKey, EntraError> {
    let now = clock.now();
    let not_before = now - Duration::from_secs(86400);
    let generated = tokio::task::spawn_blocking(move || {
        misim_token::cert::generate_rsa_cert(CN, not_before, now + VALIDITY)
    })
    .await
    .map_err(|e| EntraError::Signing(misim_token::TokenError::Key(e.to_string())))??;
    Ok(StoredKey {
        private_key_der: generated.private_key_der,
        certificate_der: generated.certificate_der,
        created_unix: clock.unix(),
        active_from_unix: None,
        retired_unix: None,
    })
}

impl KeyRing {
    /// Loads the ring, creating it on first open (a current and a next key) or
    /// from a store's single pre-rollover key (kept as the current one).
    pub(crate) async fn open(
        store: &Store,
        clock: SharedClock,
        roll_every_secs: Option<i64>,
        retire_after_secs: i64,
        tenant_id: &str,
    ) -> Result<Self, EntraError> {
        let table = store.table::<StoredRing>(TABLE)?;
        let ring = match table.get(RING)? {
            Some(r) => r,
            None => {
                let legacy = store.table::<StoredKey>(TABLE)?.get(LEGACY_CURRENT)?;
                let (mut current, next) = match legacy {
                    Some(k) => (k, generate(clock.as_ref()).await?),
                    // Both at once, one blocking thread each: an RSA keygen is most of
                    // a fresh start's time (docs/performance.md, finding 7).
                    None => tokio::try_join!(generate(clock.as_ref()), generate(clock.as_ref()))?,
                };
                current.active_from_unix.get_or_insert(current.created_unix);
                let ring = StoredRing {
                    keys: vec![current, next],
                };
                if !table.insert_new(RING, &ring).await? {
                    // Another opener won the race: use its ring.
                    table.get(RING)?.unwrap_or(ring)
                } else {
                    tracing::info!("created the token-signing key ring");
                    ring
                }
            }
        };
        let snapshot = snapshot_of(&ring, tenant_id)?;
        Ok(Self {
            table,
            snapshot: parking_lot::RwLock::new(Arc::new(snapshot)),
            rolling: tokio::sync::Mutex::new(()),
            clock,
            roll_every_secs,
            retire_after_secs,
            tenant_id: tenant_id.to_owned(),
        })
    }

    /// The keys now: what signs and what is published.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().clone()
    }

    /// True when the schedule says the current key has signed long enough.
    fn roll_due(&self, now: i64) -> bool {
        let current = &self.snapshot().current;
        match (self.roll_every_secs, current.active_from_unix) {
            (Some(every), Some(from)) => now.saturating_sub(from) >= every,
            _ => false,
        }
    }

    /// Rolls if the schedule says so (called before signing and publishing,
    /// so a moved clock rolls the keys without any timer).
    pub(crate) async fn roll_if_due(&self) -> Result<(), EntraError> {
        if self.roll_due(self.clock.unix()) {
            let _one = self.rolling.lock().await;
            // Another caller may have rolled while this one waited.
            if self.roll_due(self.clock.unix()) {
                self.roll_locked().await?;
            }
        }
        Ok(())
    }

    /// Rolls now: next signs, current retires, a new next is published.
    pub(crate) async fn roll(&self) -> Result<Arc<Snapshot>, EntraError> {
        let _one = self.rolling.lock().await;
        self.roll_locked().await
    }

    async fn roll_locked(&self) -> Result<Arc<Snapshot>, EntraError> {
        let mut ring = self
            .table
            .get(RING)?
            .ok_or_else(|| broken("the signing key ring is missing"))?;
        let fresh = generate(self.clock.as_ref()).await?;
        let now = self.clock.unix();
        let retire_after = self.retire_after_secs;
        // Drop retired keys whose tokens have all expired, then move every key on one state.
        ring.keys.retain(|k| {
            k.retired_unix
                .is_none_or(|r| r.saturating_add(retire_after) > now)
        });
        for k in &mut ring.keys {
            match (k.active_from_unix, k.retired_unix) {
                (Some(_), None) => k.retired_unix = Some(now),
                (None, None) => k.active_from_unix = Some(now),
                _ => {}
            }
        }
        ring.keys.push(fresh);
        self.table.put(RING, &ring).await?;
        let snapshot = Arc::new(snapshot_of(&ring, &self.tenant_id)?);
        *self.snapshot.write() = snapshot.clone();
        tracing::info!(kid = snapshot.current.kid(), "rolled the token-signing key");
        Ok(snapshot)
    }

    /// The published keys at `now`: next, current, and retired keys whose tokens may still be live.
    pub(crate) fn published(&self) -> Vec<Arc<SigningKey>> {
        let now = self.clock.unix();
        self.snapshot()
            .keys
            .iter()
            .filter(|k| {
                k.retired_unix
                    .is_none_or(|r| r.saturating_add(self.retire_after_secs) > now)
            })
            .cloned()
            .collect()
    }
}

fn snapshot_of(ring: &StoredRing, tenant_id: &str) -> Result<Snapshot, EntraError> {
    let keys = ring
        .keys
        .iter()
        .map(|k| SigningKey::from_stored(k).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let current = keys
        .iter()
        .find(|k| k.state() == KeyState::Current)
        .cloned()
        .ok_or_else(|| broken("the signing key ring has no current key"))?;
    let mut verify = KeySet::new(tenant_id.to_owned());
    for k in &keys {
        verify.add_rsa(k.kid(), &k.modulus, &k.exponent);
    }
    Ok(Snapshot {
        keys,
        current,
        verify,
    })
}

fn broken(why: &str) -> EntraError {
    EntraError::Signing(misim_token::TokenError::Key(why.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use misim_types::ManualClock;

    const T0: u64 = 1_800_000_000;

    async fn ring(store: &Store, clock: Arc<ManualClock>, every: Option<i64>) -> KeyRing {
        KeyRing::open(store, clock, every, 3600, "t").await.unwrap()
    }

    fn states(r: &KeyRing) -> Vec<(String, KeyState)> {
        r.snapshot()
            .keys
            .iter()
            .map(|k| (k.kid().to_owned(), k.state()))
            .collect()
    }

    #[tokio::test]
    async fn a_roll_moves_every_key_on_and_prunes_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let clock = Arc::new(ManualClock::at_unix(T0));
        let r = ring(&store, clock.clone(), None).await;
        let first = states(&r);
        assert_eq!(
            first.iter().map(|s| s.1).collect::<Vec<_>>(),
            [KeyState::Current, KeyState::Next]
        );
        r.roll().await.unwrap();
        let second = states(&r);
        assert_eq!(second[0], (first[0].0.clone(), KeyState::Retired));
        assert_eq!(second[1], (first[1].0.clone(), KeyState::Current));
        assert_eq!(second[2].1, KeyState::Next);
        assert_eq!(r.published().len(), 3);
        // Past the window the retired key is unpublished at once, and dropped at the next roll.
        clock.advance(Duration::from_secs(3601));
        assert_eq!(r.published().len(), 2);
        r.roll().await.unwrap();
        assert!(!states(&r).iter().any(|(kid, _)| *kid == first[0].0));
        // The ring survives reopening.
        let again = ring(&store, clock, None).await;
        assert_eq!(states(&again), states(&r));
    }

    #[tokio::test]
    async fn the_schedule_rolls_once_the_current_key_is_old_enough() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let clock = Arc::new(ManualClock::at_unix(T0));
        let r = ring(&store, clock.clone(), Some(86_400)).await;
        let before = r.snapshot().current.kid().to_owned();
        clock.advance(Duration::from_secs(86_399));
        r.roll_if_due().await.unwrap();
        assert_eq!(r.snapshot().current.kid(), before);
        clock.advance(Duration::from_secs(1));
        r.roll_if_due().await.unwrap();
        assert_ne!(r.snapshot().current.kid(), before);
    }

    #[tokio::test]
    async fn a_pre_rollover_store_keeps_its_key_as_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let clock = Arc::new(ManualClock::at_unix(T0));
        let legacy = generate(clock.as_ref()).await.unwrap();
        store
            .table::<StoredKey>(TABLE)
            .unwrap()
            .put(LEGACY_CURRENT, &legacy)
            .await
            .unwrap();
        let kid = SigningKey::from_stored(&legacy).unwrap().kid().to_owned();
        let r = ring(&store, clock, None).await;
        assert_eq!(r.snapshot().current.kid(), kid);
        assert_eq!(r.published().len(), 2);
    }
}
