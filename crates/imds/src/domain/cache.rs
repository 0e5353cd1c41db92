//! The server-side token cache: Entra is called only on a miss (docs/azure-protocol.md, IMDS: token
//! cache).
//!
//! Keyed by client id, then by [`cache_key`] of the resource, so a hit looks
//! both up by `&str` without allocating (for a resource already in key form). Values are `Arc`s: readers hold the read lock
//! only for a clone.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::error::IssueError;

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
    /// `access_token` as a JSON string (quoted, escaped), made once at issue:
    /// every cache hit copies it into the answer instead of escaping a
    /// kilobyte-long token again.
    pub access_token_json: String,
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
            access_token_json: serde_json::Value::String(access_token.clone()).to_string(),
            access_token,
            issued_at,
            not_before,
            expires_on,
            reuse_until: reuse_until(issued_at, expires_on),
        }
    }
}

/// The callers of one (client id, resource) token that missed the cache.
#[derive(Default)]
struct Flight {
    /// Held by the caller whose turn it is to fetch.
    gate: tokio::sync::Mutex<()>,
    /// Fetches completed, so a queued caller knows whether one ended while it waited.
    finished: AtomicU64,
    /// The error of the last fetch, if it failed.
    failure: parking_lot::Mutex<Option<IssueError>>,
}

impl std::fmt::Debug for Flight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flight")
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// The cache key of a requested resource: Entra treats spellings that differ
/// in case or in trailing slashes as one resource (`audiences::normalize`),
/// so those share an entry instead of each costing a signing and a slot. One
/// trailing slash stays significant: Azure echoes the requested spelling in
/// the token's `aud`, and real clients send both (the Azure CLI
/// `https://management.core.windows.net/`, the SDKs `https://management.azure.com`),
/// so each of those keeps its own token with the `aud` it asked for.
pub fn cache_key(resource: &str) -> std::borrow::Cow<'_, str> {
    let trimmed = resource.trim_end_matches('/');
    let slash = trimmed.len() < resource.len();
    let plain = resource.len() - trimmed.len() <= 1;
    if plain && !trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        return std::borrow::Cow::Borrowed(resource);
    }
    let mut key = trimmed.to_ascii_lowercase();
    if slash {
        key.push('/');
    }
    std::borrow::Cow::Owned(key)
}

/// How many tokens the cache keeps. Past a bound, tokens past their reuse
/// point go first, then the least recently served.
#[derive(Debug, Clone, Copy)]
pub struct CacheBounds {
    /// Tokens per identity (distinct resources one identity asked for).
    pub per_identity: usize,
    /// Tokens in all.
    pub total: usize,
}

impl Default for CacheBounds {
    fn default() -> Self {
        // Far above what a sandbox's clients ask for (a handful of resources
        // per identity), low enough that a VM looping over made-up resources
        // cannot grow IMDS's memory without bound.
        Self {
            per_identity: 64,
            total: 4096,
        }
    }
}

#[derive(Debug)]
struct Entry {
    token: Arc<CachedToken>,
    /// The cache's use counter when this entry was last served.
    last_used: AtomicU64,
}

/// Tokens by client id and [`cache_key`] of the resource, bounded by
/// [`CacheBounds`].
#[derive(Debug, Default)]
pub struct TokenCache {
    map: RwLock<HashMap<String, HashMap<String, Entry>>>,
    /// One lock per (client id, resource) being fetched, so concurrent misses
    /// for the same token make one Entra call (a VM's processes often start
    /// together and all ask at once).
    flights: parking_lot::Mutex<HashMap<(String, String), Arc<Flight>>>,
    bounds: CacheBounds,
    /// Bumped on every hit and store: the recency order for eviction.
    uses: AtomicU64,
}

impl TokenCache {
    /// An empty cache with the given bounds.
    pub fn with_bounds(bounds: CacheBounds) -> Self {
        Self {
            bounds,
            ..Self::default()
        }
    }

    /// A token still worth serving at `now`.
    pub fn get(&self, client_id: &str, resource: &str, now: i64) -> Option<Arc<CachedToken>> {
        let key = cache_key(resource);
        let map = self.map.read();
        let e = map.get(client_id)?.get(key.as_ref())?;
        (now < e.token.reuse_until).then(|| {
            e.last_used
                .store(self.uses.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
            e.token.clone()
        })
    }

    /// Stores a freshly issued token, then evicts down to the bounds.
    pub fn put(&self, client_id: &str, resource: &str, token: Arc<CachedToken>, now: i64) {
        let entry = Entry {
            token,
            last_used: AtomicU64::new(self.uses.fetch_add(1, Ordering::Relaxed)),
        };
        let mut map = self.map.write();
        let tokens = map.entry(client_id.to_owned()).or_default();
        tokens.insert(cache_key(resource).into_owned(), entry);
        if tokens.len() > self.bounds.per_identity {
            tokens.retain(|_, e| now < e.token.reuse_until);
            while tokens.len() > self.bounds.per_identity {
                let Some(oldest) = least_recent(tokens.iter().map(|(k, e)| ((), k, e))) else {
                    break;
                };
                tokens.remove(&oldest.1);
            }
        }
        if map.values().map(HashMap::len).sum::<usize>() > self.bounds.total {
            for tokens in map.values_mut() {
                tokens.retain(|_, e| now < e.token.reuse_until);
            }
            map.retain(|_, t| !t.is_empty());
            while map.values().map(HashMap::len).sum::<usize>() > self.bounds.total {
                let oldest = least_recent(
                    map.iter()
                        .flat_map(|(c, t)| t.iter().map(move |(k, e)| (c, k, e))),
                )
                .map(|(c, k)| (c.clone(), k));
                let Some((c, k)) = oldest else { break };
                if let Some(t) = map.get_mut(&c) {
                    t.remove(&k);
                    if t.is_empty() {
                        map.remove(&c);
                    }
                }
            }
        }
    }

    /// Tokens held, for tests and diagnostics.
    pub fn len(&self) -> usize {
        self.map.read().values().map(HashMap::len).sum()
    }

    /// True when no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every token of an identity (removed from a VM, or replaced).
    pub fn purge(&self, client_id: &str) {
        self.map.write().remove(client_id);
        self.flights.lock().retain(|(c, _), _| c != client_id);
    }

    /// The token from the cache, else from `fetch` (stored on success).
    /// Concurrent misses for one key queue behind the first fetch and share
    /// its outcome: its token, or its error, so a hung or failing Entra is
    /// asked once per wave of callers, not once per caller in turn. `now` is
    /// read when a caller's turn comes (it may have waited) and handed to
    /// `fetch` for the client assertion's lifetime.
    pub async fn get_or_fetch<F, Fut>(
        &self,
        client_id: &str,
        resource: &str,
        now: impl Fn() -> i64,
        fetch: F,
    ) -> Result<Arc<CachedToken>, IssueError>
    where
        F: FnOnce(i64) -> Fut,
        Fut: std::future::Future<Output = Result<CachedToken, IssueError>>,
    {
        if let Some(t) = self.get(client_id, resource, now()) {
            return Ok(t);
        }
        let key = (client_id.to_owned(), cache_key(resource).into_owned());
        let flight = self.flights.lock().entry(key.clone()).or_default().clone();
        let seen = flight.finished.load(Ordering::SeqCst);
        let outcome = {
            let _turn = flight.gate.lock().await;
            let now = now();
            if let Some(t) = self.get(client_id, resource, now) {
                Ok(t)
            } else if let Some(e) = (flight.finished.load(Ordering::SeqCst) != seen)
                .then(|| flight.failure.lock().clone())
                .flatten()
            {
                // A fetch finished while this caller queued, and failed.
                Err(e)
            } else {
                let fetched = fetch(now).await.map(Arc::new);
                *flight.failure.lock() = match &fetched {
                    Ok(token) => {
                        self.put(client_id, resource, token.clone(), now);
                        None
                    }
                    Err(e) => Some(e.clone()),
                };
                flight.finished.fetch_add(1, Ordering::SeqCst);
                fetched
            }
        };
        // The last caller of a flight removes it, so failing resources
        // cannot grow the map.
        let mut flights = self.flights.lock();
        if Arc::strong_count(&flight) == 2 {
            flights.remove(&key);
        }
        outcome
    }
}

/// The (group, key) of the least recently used entry.
fn least_recent<'a, G: Clone + 'a>(
    entries: impl Iterator<Item = (G, &'a String, &'a Entry)>,
) -> Option<(G, String)> {
    entries
        .min_by_key(|(_, _, e)| e.last_used.load(Ordering::Relaxed))
        .map(|(g, k, _)| (g, k.clone()))
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
            0,
        );
        assert!(c.get("c1", "https://management.azure.com", 10).is_some());
        // The trailing slash is another audience (`aud` echoes it), so another entry.
        assert!(c.get("c1", "https://management.azure.com/", 10).is_none());
        assert!(c.get("c1", "https://management.azure.com", 2700).is_none());
        assert!(c.get("c2", "https://management.azure.com", 10).is_none());
        c.purge("c1");
        assert!(c.get("c1", "https://management.azure.com", 10).is_none());
    }

    #[test]
    fn spellings_entra_treats_as_one_resource_share_a_key() {
        let k = |r: &str| cache_key(r).into_owned();
        assert_eq!(k("https://vault.azure.net"), "https://vault.azure.net");
        assert_eq!(k("HTTPS://Vault.Azure.NET"), "https://vault.azure.net");
        assert_eq!(k("https://vault.azure.net/"), "https://vault.azure.net/");
        assert_eq!(k("https://VAULT.azure.net///"), "https://vault.azure.net/");
        assert!(matches!(
            cache_key("https://vault.azure.net/"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    fn token(name: &str, expires_on: i64) -> Arc<CachedToken> {
        Arc::new(CachedToken::new(name.into(), 0, 0, expires_on))
    }

    /// Issue #10: the cache stays within its bounds however many distinct
    /// resources are asked for, evicting the least recently served.
    #[test]
    fn the_cache_is_bounded_per_identity_and_in_total() {
        let c = TokenCache::with_bounds(CacheBounds {
            per_identity: 4,
            total: 10,
        });
        for i in 0..100 {
            c.put("c1", &format!("https://r{i}"), token("t", 86400), 1);
        }
        assert_eq!(c.len(), 4);
        // The most recent survive.
        assert!(c.get("c1", "https://r99", 1).is_some());
        assert!(c.get("c1", "https://r0", 1).is_none());
        for id in 0..10 {
            for i in 0..10 {
                c.put(
                    &format!("id{id}"),
                    &format!("https://r{i}"),
                    token("t", 86400),
                    1,
                );
            }
        }
        assert!(c.len() <= 10, "{} tokens", c.len());
        // A token served recently outlives one that was not.
        let c = TokenCache::with_bounds(CacheBounds {
            per_identity: 2,
            total: 10,
        });
        c.put("c", "https://a", token("a", 86400), 1);
        c.put("c", "https://b", token("b", 86400), 1);
        assert!(c.get("c", "https://a", 1).is_some());
        c.put("c", "https://new", token("n", 86400), 1);
        assert!(c.get("c", "https://a", 1).is_some());
        assert!(c.get("c", "https://b", 1).is_none());
    }

    /// Tokens past their reuse point are evicted before live ones.
    #[test]
    fn expired_tokens_go_first() {
        let c = TokenCache::with_bounds(CacheBounds {
            per_identity: 2,
            total: 10,
        });
        c.put("c", "https://live", token("l", 86400), 1);
        c.put("c", "https://old", token("o", 1800), 1);
        // At 1000 `old` (reuse until 900) is past its reuse point.
        assert!(c.get("c", "https://live", 1000).is_some());
        assert!(c.get("c", "https://old", 10).is_some());
        c.put("c", "https://new", token("n", 86400), 1000);
        assert!(c.get("c", "https://live", 1000).is_some());
        assert!(c.get("c", "https://new", 1000).is_some());
        assert_eq!(c.len(), 2);
    }

    /// Runs `n` callers of one token concurrently on this single-threaded
    /// runtime, releasing the first fetch only once every caller queued behind
    /// it; returns their results and the number of fetches made.
    async fn wave(
        cache: &Arc<TokenCache>,
        n: usize,
        outcome: Result<&'static str, &'static str>,
    ) -> (Vec<Result<String, IssueError>>, usize) {
        use std::sync::atomic::AtomicUsize;
        let fetches = Arc::new(AtomicUsize::new(0));
        let arrived = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (cache, fetches, arrived, gate) = (
                cache.clone(),
                fetches.clone(),
                arrived.clone(),
                gate.clone(),
            );
            tasks.push(tokio::spawn(async move {
                arrived.fetch_add(1, Ordering::SeqCst);
                cache
                    .get_or_fetch(
                        "c",
                        "r",
                        || 0,
                        |_| async move {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            let _p = gate.acquire().await.unwrap();
                            outcome
                                .map(|t| CachedToken::new(t.into(), 0, 0, 3600))
                                .map_err(|e| IssueError::Unavailable(e.into()))
                        },
                    )
                    .await
                    .map(|t| t.access_token.clone())
            }));
        }
        // Every task runs up to its first wait (the fetch's gate, or the
        // flight's) before the gate opens.
        while arrived.load(Ordering::SeqCst) < n {
            tokio::task::yield_now().await;
        }
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
        gate.add_permits(n);
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        (results, fetches.load(Ordering::SeqCst))
    }

    /// Concurrent misses for one token make one fetch and share its outcome:
    /// the error while Entra fails (each caller is not made to wait for its
    /// own failing call in turn), the token once it answers.
    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_misses_share_one_fetch() {
        let cache = Arc::new(TokenCache::default());
        let (results, fetches) = wave(&cache, 8, Err("down")).await;
        assert_eq!(fetches, 1);
        let down = Err(IssueError::Unavailable("down".into()));
        assert!(results.iter().all(|r| *r == down), "{results:?}");
        let (results, fetches) = wave(&cache, 8, Ok("t")).await;
        assert_eq!(fetches, 1);
        assert!(
            results.iter().all(|r| r.as_deref() == Ok("t")),
            "{results:?}"
        );
        assert!(
            cache.flights.lock().is_empty(),
            "finished flights are dropped"
        );
        // Later callers are cache hits.
        let (results, fetches) = wave(&cache, 2, Err("unused")).await;
        assert_eq!((fetches, results[0].as_deref()), (0, Ok("t")));
    }
}
