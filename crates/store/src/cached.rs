//! [`CachedTable`]: a small table that is read whole far more often than it
//! is written (ARM's role assignments are read on every authorized request).

use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Result, Table};

/// Every entry of a table, in key order, shared between readers.
pub type Snapshot<V> = Arc<Vec<(String, V)>>;

/// A [`Table`] whose full contents are kept in memory as an immutable
/// snapshot, rebuilt on the first read after a write. All writes must go
/// through this handle so the snapshot never outlives a change.
#[derive(Debug)]
pub struct CachedTable<V> {
    table: Table<V>,
    cache: Mutex<Cache<V>>,
}

#[derive(Debug)]
struct Cache<V> {
    /// Bumped by every write, so a snapshot loaded while a write was in
    /// flight is never kept.
    generation: u64,
    snapshot: Option<Snapshot<V>>,
}

impl<V: Serialize + DeserializeOwned> CachedTable<V> {
    /// Wraps `table`; the first read loads the snapshot. Every write must go through this
    /// wrapper, or readers keep seeing the snapshot from before it.
    pub fn new(table: Table<V>) -> Self {
        Self {
            table,
            cache: Mutex::new(Cache {
                generation: 0,
                snapshot: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cache<V>> {
        // A panic while holding this lock cannot leave the cache wrong (it
        // holds either a whole snapshot or none), so poisoning is ignored.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn invalidate(&self) {
        let mut c = self.lock();
        c.generation = c.generation.wrapping_add(1);
        c.snapshot = None;
    }

    /// Reads one value (from the store, not the snapshot).
    pub fn get(&self, key: &str) -> Result<Option<V>> {
        self.table.get(key)
    }

    /// Every value, in key order: the shared snapshot.
    pub fn all(&self) -> Result<Snapshot<V>> {
        let generation = {
            let c = self.lock();
            if let Some(s) = &c.snapshot {
                return Ok(Arc::clone(s));
            }
            c.generation
        };
        let loaded = Arc::new(self.table.all()?);
        let mut c = self.lock();
        if c.generation == generation {
            c.snapshot = Some(Arc::clone(&loaded));
        }
        Ok(loaded)
    }

    /// Writes one value durably (see [`Table::put`]).
    pub async fn put(&self, key: &str, value: &V) -> Result<()> {
        let _invalidate = Invalidate(self);
        self.table.put(key, value).await
    }

    /// Removes one value durably (see [`Table::remove`]).
    pub async fn remove(&self, key: &str) -> Result<Option<V>> {
        let _invalidate = Invalidate(self);
        self.table.remove(key).await
    }
}

/// Drops the snapshot when a write ends however it ends: the tree changes on
/// the write future's first poll, so a write cancelled while it flushes (its
/// request dropped) must invalidate too.
struct Invalidate<'a, V: Serialize + DeserializeOwned>(&'a CachedTable<V>);

impl<V: Serialize + DeserializeOwned> Drop for Invalidate<'_, V> {
    fn drop(&mut self) {
        self.0.invalidate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[tokio::test]
    async fn snapshots_follow_writes() {
        let s = Store::memory().unwrap();
        let t = CachedTable::new(s.table::<u32>("n").unwrap());
        assert!(t.all().unwrap().is_empty());
        t.put("a", &1).await.unwrap();
        let first = t.all().unwrap();
        assert_eq!(*first, vec![("a".to_owned(), 1)]);
        assert!(Arc::ptr_eq(&first, &t.all().unwrap()), "served from memory");
        t.put("b", &2).await.unwrap();
        assert_eq!(t.all().unwrap().len(), 2);
        assert_eq!(t.remove("a").await.unwrap(), Some(1));
        assert_eq!(*t.all().unwrap(), vec![("b".to_owned(), 2)]);
        assert_eq!(t.get("b").unwrap(), Some(2));
        // The first snapshot is immutable: readers holding it are unaffected.
        assert_eq!(first.len(), 1);
    }

    #[tokio::test]
    async fn a_write_cancelled_while_it_flushes_still_invalidates() {
        use std::future::Future;
        use std::pin::pin;
        use std::task::{Context, Poll, Waker};
        let s = Store::memory().unwrap();
        let t = CachedTable::new(s.table::<u32>("n").unwrap());
        t.put("a", &1).await.unwrap();
        assert_eq!(t.all().unwrap().len(), 1);
        {
            // One poll writes the tree; dropping the future then abandons the flush.
            let mut remove = pin!(t.remove("a"));
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(r) = remove.as_mut().poll(&mut cx) {
                r.unwrap();
            }
        }
        assert!(t.all().unwrap().is_empty(), "no stale snapshot");
    }
}
