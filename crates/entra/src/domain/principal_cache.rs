//! [`PrincipalTable`]: the principals table with a bounded in-memory read cache.
//!
//! Every token request reads its client's principal; decoding it from the
//! store (JSON, with its certificates in base64) was the largest cost of
//! issuance besides the cryptography (callgrind: 28k of the 95k instructions
//! an assertion-authenticated token cost outside signing and verifying).
//! Writes go through this wrapper, which drops the cached copy, so a read
//! never returns a record older than the last write that returned.

use std::collections::HashMap;

use misim_store::{Durable, Result, Table};

use super::principal::Principal;

/// Principals kept in memory at most. Past it the cache starts over: a
/// sandbox with more identities than this asking for tokens in turn pays a
/// store read per request, as it did before the cache, and memory stays
/// bounded (a principal with a certificate is about 2 KiB).
const CAPACITY: usize = 4096;

/// The principals table, by lower-cased object id, with reads cached.
#[derive(Debug)]
pub(crate) struct PrincipalTable {
    table: Table<Principal>,
    cache: parking_lot::RwLock<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    /// Bumped by every write, so a record read from the store while a write
    /// was in flight is never cached.
    generation: u64,
    by_key: HashMap<String, Principal>,
}

impl PrincipalTable {
    pub(crate) fn new(table: Table<Principal>) -> Self {
        Self {
            table,
            cache: parking_lot::RwLock::new(Cache::default()),
        }
    }

    /// The principal at `key`, from memory when it was read before.
    pub(crate) fn get(&self, key: &str) -> Result<Option<Principal>> {
        let generation = {
            let c = self.cache.read();
            if let Some(p) = c.by_key.get(key) {
                return Ok(Some(p.clone()));
            }
            c.generation
        };
        let read = self.table.get(key)?;
        if let Some(p) = &read {
            let mut c = self.cache.write();
            if c.generation == generation {
                if c.by_key.len() >= CAPACITY {
                    c.by_key.clear();
                }
                c.by_key.insert(key.to_owned(), p.clone());
            }
        }
        Ok(read)
    }

    /// Every principal, from the store.
    pub(crate) fn all(&self) -> Result<Vec<(String, Principal)>> {
        self.table.all()
    }

    /// One page of principals, from the store (see [`Table::page_after`]).
    pub(crate) fn page_after(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<(String, Principal)>, bool)> {
        self.table.page_after(after, limit)
    }

    /// Every principal decoded as `W`, from the store (see [`Table::all_as`]).
    pub(crate) fn all_as<W: serde::de::DeserializeOwned>(&self) -> Result<Vec<(String, W)>> {
        self.table.all_as()
    }

    /// See [`Table::visible`].
    pub(crate) fn visible(&self) -> Durable {
        self.table.visible()
    }

    /// Writes a principal and waits until it is durable (see [`Table::put`]).
    pub(crate) async fn put(&self, key: &str, value: &Principal) -> Result<()> {
        self.put_deferred(key, value)?.await
    }

    /// Writes a principal, visible at once (see [`Table::put_deferred`]).
    pub(crate) fn put_deferred(&self, key: &str, value: &Principal) -> Result<Durable> {
        let written = self.table.put_deferred(key, value);
        // After the store write, so a reader that misses the cache from now
        // on reads the new record; the bump keeps a read that began before
        // it from caching the old one. Also on error: the write may have
        // happened.
        self.invalidate(key);
        written
    }

    /// Removes a principal, at once for readers (see [`Table::remove_deferred`]).
    pub(crate) fn remove_deferred(&self, key: &str) -> Result<(Option<Principal>, Durable)> {
        let removed = self.table.remove_deferred(key);
        // As in `put_deferred`, after the store write and also on error.
        self.invalidate(key);
        removed
    }

    fn invalidate(&self, key: &str) {
        let mut c = self.cache.write();
        c.generation = c.generation.wrapping_add(1);
        c.by_key.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::principal::PrincipalKind;
    use misim_store::Store;

    fn principal(name: &str) -> Principal {
        Principal {
            object_id: "o1".into(),
            app_id: "a1".into(),
            display_name: name.into(),
            kind: PrincipalKind::Application,
            alternative_names: Vec::new(),
            created_unix: 0,
            managed_identity_resource_id: None,
            request_id: None,
            secret_sha256: None,
            key_credentials: Vec::new(),
            application_object_id: None,
            federated_credentials: Vec::new(),
        }
    }

    fn name(t: &PrincipalTable) -> Option<String> {
        t.get("o1").unwrap().map(|p| p.display_name)
    }

    #[tokio::test]
    async fn reads_follow_every_write() {
        let store = Store::memory().unwrap();
        let t = PrincipalTable::new(store.table("principals").unwrap());
        assert_eq!(name(&t), None, "an absent record is not cached");
        t.put("o1", &principal("first")).await.unwrap();
        assert_eq!(name(&t), Some("first".into()));
        assert_eq!(name(&t), Some("first".into()), "served from memory");
        let durable = t.put_deferred("o1", &principal("second")).unwrap();
        assert_eq!(
            name(&t),
            Some("second".into()),
            "visible before it is durable"
        );
        durable.await.unwrap();
        t.put("o1", &principal("third")).await.unwrap();
        assert_eq!(name(&t), Some("third".into()));
        let (old, durable) = t.remove_deferred("o1").unwrap();
        assert_eq!(old.unwrap().display_name, "third");
        assert_eq!(name(&t), None, "gone before it is durable");
        durable.await.unwrap();
        assert_eq!(name(&t), None);
    }

    #[tokio::test]
    async fn a_read_that_raced_a_write_is_not_cached() {
        let store = Store::memory().unwrap();
        let t = PrincipalTable::new(store.table("principals").unwrap());
        t.put("o1", &principal("old")).await.unwrap();
        // A reader took the generation, then read the old record from the store ...
        let generation = t.cache.read().generation;
        let stale = t.table.get("o1").unwrap().unwrap();
        // ... while a write landed.
        t.put("o1", &principal("new")).await.unwrap();
        {
            let c = t.cache.read();
            assert_ne!(
                c.generation, generation,
                "the reader will not cache {stale:?}"
            );
        }
        assert_eq!(name(&t), Some("new".into()));
    }

    #[tokio::test]
    async fn the_cache_stays_bounded() {
        let store = Store::memory().unwrap();
        let t = PrincipalTable::new(store.table("principals").unwrap());
        for i in 0..=CAPACITY {
            let _not_awaited = t.put_deferred(&format!("k{i}"), &principal("p")).unwrap();
            assert!(t.get(&format!("k{i}")).unwrap().is_some());
        }
        assert!(t.cache.read().by_key.len() <= CAPACITY);
    }
}
