//! The server-side token cache (spec §1.5: Entra is called only on a miss).
//!
//! Keyed by client id, then by normalised resource, so a hit looks both up by
//! `&str` without allocating. Values are `Arc`s: readers hold the read lock
//! only for a clone.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

/// Minimum lifetime a served token keeps: 15 minutes. Clients refresh when
/// 5 minutes remain (Rust `TokenCache`, MSAL), so they must never be handed a
/// token that close to expiry, or they would ask again at once.
pub const MIN_REMAINING: i64 = 15 * 60;

/// Until when (Unix seconds) a token issued at `issued_at` and expiring at
/// `expires_on` may be served from the cache.
///
/// Policy: reuse while at least a quarter of the lifetime, and never less
/// than [`MIN_REMAINING`], is left. A 24 h managed-identity token is served
/// for 18 h and always has at least 6 h left; a 1 h token is served for 45 min.
/// A token shorter than the margin is never reused.
pub fn reuse_until(issued_at: i64, expires_on: i64) -> i64 {
    let lifetime = (expires_on - issued_at).max(0);
    let keep = (lifetime / 4).max(MIN_REMAINING);
    (expires_on - keep).max(issued_at)
}

/// A token as Entra issued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedToken {
    pub access_token: String,
    pub issued_at: i64,
    pub not_before: i64,
    pub expires_on: i64,
    /// Precomputed [`reuse_until`].
    pub reuse_until: i64,
}

impl CachedToken {
    /// Builds a cache entry, computing the reuse deadline.
    pub fn new(access_token: String, issued_at: i64, not_before: i64, expires_on: i64) -> Self {
        Self {
            access_token,
            issued_at,
            not_before,
            expires_on,
            reuse_until: reuse_until(issued_at, expires_on),
        }
    }
}

/// Held while one fetch of a (client id, resource) token is in progress.
type Flight = Arc<tokio::sync::Mutex<()>>;

/// Tokens by client id and resource, keyed by the resource string exactly as
/// requested: the token's `aud` echoes it, so `https://management.azure.com`
/// and `https://management.azure.com/` are different cache entries, as they
/// are different audiences.
#[derive(Debug, Default)]
pub struct TokenCache {
    map: RwLock<HashMap<String, HashMap<String, Arc<CachedToken>>>>,
    /// One lock per (client id, resource) being fetched, so concurrent misses
    /// for the same token make one Entra call (a VM's processes often start
    /// together and all ask at once).
    flights: parking_lot::Mutex<HashMap<(String, String), Flight>>,
}

impl TokenCache {
    /// A token still worth serving at `now`.
    pub fn get(&self, client_id: &str, resource: &str, now: i64) -> Option<Arc<CachedToken>> {
        let map = self.map.read();
        let t = map.get(client_id)?.get(resource)?;
        (now < t.reuse_until).then(|| t.clone())
    }

    /// Stores a freshly issued token.
    pub fn put(&self, client_id: &str, resource: &str, token: Arc<CachedToken>) {
        let r = resource.to_owned();
        self.map
            .write()
            .entry(client_id.to_owned())
            .or_default()
            .insert(r, token);
    }

    /// Forgets every token of an identity (removed from a VM, or replaced).
    pub fn purge(&self, client_id: &str) {
        self.map.write().remove(client_id);
        self.flights.lock().retain(|(c, _), _| c != client_id);
    }

    /// The token at `now` from the cache, else from `fetch` (stored on
    /// success). Concurrent misses for one key wait for the first fetch and
    /// share its token; a failed fetch is not shared, the next waiter tries.
    pub async fn get_or_fetch<E, F, Fut>(
        &self,
        client_id: &str,
        resource: &str,
        now: i64,
        fetch: F,
    ) -> Result<Arc<CachedToken>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<CachedToken, E>>,
    {
        if let Some(t) = self.get(client_id, resource, now) {
            return Ok(t);
        }
        let flight = self
            .flights
            .lock()
            .entry((client_id.to_owned(), resource.to_owned()))
            .or_default()
            .clone();
        let _turn = flight.lock().await;
        if let Some(t) = self.get(client_id, resource, now) {
            return Ok(t);
        }
        let token = Arc::new(fetch().await?);
        self.put(client_id, resource, token.clone());
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_identity_tokens_are_reused_for_three_quarters_of_their_life() {
        let iat = 1_000_000;
        assert_eq!(reuse_until(iat, iat + 86400), iat + 64800);
        assert_eq!(reuse_until(iat, iat + 3600), iat + 2700);
        // Short tokens keep at least 15 minutes.
        assert_eq!(reuse_until(iat, iat + 1800), iat + 900);
        // Tokens shorter than the margin are never reused.
        assert_eq!(reuse_until(iat, iat + 600), iat);
        assert_eq!(reuse_until(iat, iat - 5), iat);
    }

    #[test]
    fn a_served_token_never_triggers_a_client_refresh() {
        // Clients refresh at 5 minutes remaining: everything served has more.
        for lifetime in [300, 900, 1800, 3600, 7200, 86400] {
            let iat = 50;
            let until = reuse_until(iat, iat + lifetime);
            if until > iat {
                assert!(iat + lifetime - (until - 1) > 300, "lifetime {lifetime}");
            }
        }
    }

    #[test]
    fn cache_hits_misses_and_purges() {
        let c = TokenCache::default();
        c.put(
            "c1",
            "https://management.azure.com",
            Arc::new(CachedToken::new("t".into(), 0, 0, 3600)),
        );
        assert!(c.get("c1", "https://management.azure.com", 10).is_some());
        // Another spelling is another audience, so another entry.
        assert!(c.get("c1", "https://management.azure.com/", 10).is_none());
        assert!(c.get("c1", "https://management.azure.com", 2700).is_none());
        assert!(c.get("c2", "https://management.azure.com", 10).is_none());
        c.purge("c1");
        assert!(c.get("c1", "https://management.azure.com", 10).is_none());
    }

    /// Eight concurrent misses for one token while Entra is slow: one fetch,
    /// one token for all. A failed fetch is retried by the next caller.
    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_misses_make_one_fetch() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cache = Arc::new(TokenCache::default());
        let fetches = Arc::new(AtomicUsize::new(0));
        let arrived = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, fetches, arrived, gate) = (
                cache.clone(),
                fetches.clone(),
                arrived.clone(),
                gate.clone(),
            );
            tasks.push(tokio::spawn(async move {
                arrived.fetch_add(1, Ordering::SeqCst);
                cache
                    .get_or_fetch("c", "r", 0, || async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let _p = gate.acquire().await.unwrap();
                        Ok::<_, ()>(CachedToken::new("t".into(), 0, 0, 3600))
                    })
                    .await
            }));
        }
        // On this single-threaded runtime every task runs up to its first
        // wait (the fetch's gate, or the flight lock) before the gate opens.
        while arrived.load(Ordering::SeqCst) < 8 {
            tokio::task::yield_now().await;
        }
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(8);
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().access_token, "t");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        let failed: Result<Arc<CachedToken>, &str> = cache
            .get_or_fetch("c", "other", 0, || async { Err("down") })
            .await;
        assert_eq!(failed.unwrap_err(), "down");
        let ok: Result<_, &str> = cache
            .get_or_fetch("c", "other", 0, || async {
                Ok(CachedToken::new("u".into(), 0, 0, 3600))
            })
            .await;
        assert_eq!(ok.unwrap().access_token, "u");
    }
}
