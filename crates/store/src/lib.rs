//! Persistence for the misim services.
//!
//! This is the only crate that depends on `sled`: services see named
//! [`Table`]s of serde values, so the engine can be swapped in one place.
//!
//! Durability rule: every write method returns only after the write is flushed
//! to disk, so a reply that acknowledges a change never outlives the change.
//! Concurrent writers share flushes (group commit, [`commit`]): each waits for
//! the first flush that began after its write.
//!
//! Deferred acknowledgement: the `*_deferred` methods apply a write (readers
//! see it at once) and return a [`Durable`] ticket instead of waiting, so a
//! writer can release its locks before it waits for the disk and the next
//! writer's change joins the same flush. The rule becomes: nothing is
//! acknowledged before its ticket resolves, and an acknowledgement based on
//! something read rather than written (an idempotent retry that finds its work
//! done) awaits [`Table::visible`] first, since what it read may not be on disk
//! yet. A later write in one store never survives a crash without the earlier
//! ones: sled recovers its log up to the first torn message, and a write's log
//! position is reserved when it is applied. So a writer that applies several
//! writes in order under its lock and awaits only the last ticket leaves after
//! a crash exactly the states that awaiting each write would have left.
//! Values are stored as one version byte followed by JSON, so a record type can
//! evolve with a migration instead of a wipe.

mod cached;
mod commit;
mod private;

pub use cached::{CachedTable, Snapshot};
pub use private::{PrivateDirError, private_dir};

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use misim_types::ErrorCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Version byte written in front of every value.
const FORMAT_V1: u8 = 1;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine failed (disk full, corruption, IO).
    #[error("storage engine error: {0}")]
    Engine(#[from] sled::Error),
    /// A stored value could not be decoded.
    #[error("corrupt record in table {table} under key {key:?}: {reason}")]
    Corrupt {
        /// Table name.
        table: String,
        /// Key, lossily decoded.
        key: String,
        /// What went wrong.
        reason: String,
    },
    /// A value could not be encoded.
    #[error("cannot encode record: {0}")]
    Encode(#[from] serde_json::Error),
    /// The directory cannot be made owner-only (or belongs to another user).
    #[error(transparent)]
    Private(#[from] PrivateDirError),
    /// Another open database (in this or another process) still holds the
    /// directory's lock.
    #[error("the data directory {0} is in use by another misim process")]
    InUse(String),
}

impl StoreError {
    /// Storage failures are never the caller's fault.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::Internal
    }
}

/// Result alias for this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How long [`Store::open`] waits for a lock held by a closing database, in
/// [`LOCK_RETRY`] steps. Counted in attempts rather than against a clock:
/// opening is synchronous, and `std::time::Instant` is banned (paused tokio
/// time would not govern it).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

/// The most memory sled's page cache of one store may hold. sled's default
/// (1 GiB a database) let a sandbox of 100,000 VMs keep every page it had
/// written or scanned (four stores: well over a gigabyte; docs/performance.md
/// finding 9). Pages beyond it are read again from the file (the kernel's
/// page cache) when needed; the services keep what their hot paths read in
/// their own memory.
const CACHE_CAPACITY_BYTES: u64 = 64 << 20;

/// sled reports a held directory lock only as an IO error whose text names
/// the lock (it wraps `WouldBlock` from `flock` in a custom error).
fn is_lock_contention(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// The mark a clean close leaves, in sled's default tree (no [`Table`] uses it).
const CLEAN_CLOSE_MARK: &[u8] = b"misim.closed_clean";

/// An open database: one per service process.
#[derive(Clone, Debug)]
pub struct Store {
    db: sled::Db,
    commit: Arc<commit::Committer>,
    /// Whether the last process to use the directory closed it with
    /// [`Store::close_clean`]; taken once ([`Store::take_closed_clean`]).
    closed_clean: Arc<std::sync::atomic::AtomicBool>,
}

impl Store {
    /// Opens (or creates) the database in `dir`, owner-only (see
    /// [`private_dir`]): the directory is created 0700 and refused when
    /// another user owns it, and sled's files (created with the umask) are
    /// tightened once sled has opened them.
    ///
    /// sled releases its directory lock only when the last of its background
    /// threads lets go of the database, which can be a moment after the
    /// previous `Store` was dropped; a restart in the same process (or a quick
    /// one after another process exited) therefore waits a bounded
    /// [`LOCK_WAIT`] for the lock before answering [`StoreError::InUse`].
    pub fn open(dir: &Path) -> Result<Self> {
        private_dir(dir)?;
        let mut retries = LOCK_WAIT.as_millis() / LOCK_RETRY.as_millis();
        let db = loop {
            match sled::Config::new()
                .path(dir)
                .mode(sled::Mode::HighThroughput)
                .cache_capacity(CACHE_CAPACITY_BYTES)
                .open()
            {
                Ok(db) => break db,
                Err(e) if is_lock_contention(&e) => {
                    if retries == 0 {
                        return Err(StoreError::InUse(dir.display().to_string()));
                    }
                    retries -= 1;
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(e) => return Err(e.into()),
            }
        };
        private_dir(dir)?;
        // The mark goes, on disk, before anything else is written: a crash of
        // this process must not pass for a clean close.
        let closed_clean = db.remove(CLEAN_CLOSE_MARK)?.is_some();
        if closed_clean {
            db.flush()?;
        }
        Self::with_committer(db, closed_clean)
    }

    fn with_committer(db: sled::Db, closed_clean: bool) -> Result<Self> {
        let commit = commit::Committer::start(db.clone()).map_err(sled::Error::Io)?;
        Ok(Self {
            db,
            commit: Arc::new(commit),
            closed_clean: Arc::new(closed_clean.into()),
        })
    }

    /// True, once, when the process that used the directory last closed it
    /// with [`Store::close_clean`]: every write it made was complete, so a
    /// service may skip the checks that repair what a crash between two
    /// related writes leaves (an index entry without its record). Any later
    /// call is false, so a service reopened on the same store in-process (its
    /// tasks aborted, perhaps between two writes) repairs as after a crash.
    pub fn take_closed_clean(&self) -> bool {
        self.closed_clean
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// Flushes everything and marks the directory closed clean. Call it only
    /// once every task that writes to the store has ended.
    pub async fn close_clean(&self) -> Result<()> {
        self.db.flush_async().await?;
        self.db.insert(CLEAN_CLOSE_MARK, &[])?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// A database that lives in memory and vanishes on drop (component tests).
    pub fn memory() -> Result<Self> {
        let db = sled::Config::new().temporary(true).open()?;
        Self::with_committer(db, false)
    }

    /// Opens the named table, creating it if new. Every handle to one name shares the data, so
    /// each name must be used with one value type `V` only.
    pub fn table<V>(&self, name: &str) -> Result<Table<V>> {
        Ok(Table {
            name: name.to_owned(),
            tree: self.db.open_tree(name)?,
            commit: Arc::clone(&self.commit),
            _v: PhantomData,
        })
    }

    /// Flushes everything (on shutdown).
    pub async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }
}

/// A write applied but perhaps not yet on disk: it resolves once a flush that
/// began after the write has ended. Await it before acknowledging the write to
/// anyone. A later ticket of the same [`Store`] covers every earlier one, so a
/// writer that makes several writes awaits only the last ticket.
#[derive(Debug)]
#[must_use = "a write is not durable, and must not be acknowledged, until its ticket resolves"]
pub struct Durable {
    commit: Arc<commit::Committer>,
    flush: u64,
}

impl Durable {
    /// Waits until the write is durable; an error means nothing is known about it.
    pub async fn wait(self) -> Result<()> {
        self.commit.wait(self.flush).await?;
        Ok(())
    }

    /// Whichever of two tickets of one store resolves later (covering both).
    pub fn and(self, other: Durable) -> Durable {
        if other.flush > self.flush {
            other
        } else {
            self
        }
    }
}

impl IntoFuture for Durable {
    type Output = Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}

/// A named table of `V` values under string keys.
///
/// Keys are caller-built; resource ids should be lower-cased first (ARM ids are
/// case-insensitive) and laid out so that listing is a prefix scan.
#[derive(Debug)]
pub struct Table<V> {
    name: String,
    tree: sled::Tree,
    commit: Arc<commit::Committer>,
    _v: PhantomData<fn() -> V>,
}

impl<V> Clone for Table<V> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            tree: self.tree.clone(),
            commit: Arc::clone(&self.commit),
            _v: PhantomData,
        }
    }
}

impl<V: Serialize + DeserializeOwned> Table<V> {
    fn decode(&self, key: &[u8], bytes: &[u8]) -> Result<V> {
        self.decode_as(key, bytes)
    }

    fn decode_as<W: DeserializeOwned>(&self, key: &[u8], bytes: &[u8]) -> Result<W> {
        let corrupt = |reason: String| StoreError::Corrupt {
            table: self.name.clone(),
            key: String::from_utf8_lossy(key).into_owned(),
            reason,
        };
        match bytes.split_first() {
            Some((&FORMAT_V1, json)) => {
                serde_json::from_slice(json).map_err(|e| corrupt(e.to_string()))
            }
            Some((v, _)) => Err(corrupt(format!("unknown format version {v}"))),
            None => Err(corrupt("empty value".into())),
        }
    }

    fn encode(value: &V) -> Result<Vec<u8>> {
        let mut out = vec![FORMAT_V1];
        serde_json::to_writer(&mut out, value)?;
        Ok(out)
    }

    /// The value at `key`, `None` if absent; a stored value that does not decode (unknown
    /// format version, JSON that no longer fits `V`) is `StoreError::Corrupt`, never `None`.
    pub fn get(&self, key: &str) -> Result<Option<V>> {
        match self.tree.get(key.as_bytes())? {
            Some(b) => Ok(Some(self.decode(key.as_bytes(), &b)?)),
            None => Ok(None),
        }
    }

    fn ticket(&self) -> Durable {
        Durable {
            commit: Arc::clone(&self.commit),
            flush: self.commit.ticket(),
        }
    }

    /// Writes one value and waits until it is durable.
    pub async fn put(&self, key: &str, value: &V) -> Result<()> {
        self.put_deferred(key, value)?.await
    }

    /// Writes one value, visible to readers at once, and returns the ticket
    /// to await before acknowledging it (see [`Durable`]).
    pub fn put_deferred(&self, key: &str, value: &V) -> Result<Durable> {
        self.tree.insert(key.as_bytes(), Self::encode(value)?)?;
        Ok(self.ticket())
    }

    /// A ticket for every write of this store visible now: await it before
    /// acknowledging something read, not written (an idempotent retry that
    /// finds its work done), since another writer may not have awaited its
    /// own ticket yet.
    pub fn visible(&self) -> Durable {
        self.ticket()
    }

    /// Writes one value only if the key is absent; returns false (and writes
    /// nothing) when it exists. Durable on return.
    pub async fn insert_new(&self, key: &str, value: &V) -> Result<bool> {
        let swapped = self.tree.compare_and_swap(
            key.as_bytes(),
            None as Option<&[u8]>,
            Some(Self::encode(value)?),
        )?;
        if swapped.is_ok() {
            self.commit.durable().await?;
        }
        Ok(swapped.is_ok())
    }

    /// Removes one value and waits until the removal is durable. Returns the
    /// old value.
    pub async fn remove(&self, key: &str) -> Result<Option<V>> {
        let (old, durable) = self.remove_deferred(key)?;
        durable.await?;
        Ok(old)
    }

    /// Removes one value, at once for readers, and returns the old value and
    /// the ticket to await before acknowledging the removal (see [`Durable`]).
    pub fn remove_deferred(&self, key: &str) -> Result<(Option<V>, Durable)> {
        let old = self.tree.remove(key.as_bytes())?;
        let durable = self.ticket();
        match old {
            Some(b) => Ok((Some(self.decode(key.as_bytes(), &b)?), durable)),
            None => Ok((None, durable)),
        }
    }

    /// All values whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, V)>> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv?;
            let value = self.decode(&k, &v)?;
            out.push((String::from_utf8_lossy(&k).into_owned(), value));
        }
        Ok(out)
    }

    /// At most `limit` values whose keys sort after `after`, in key order,
    /// and whether more follow (one page of a paged list call).
    pub fn page_after(&self, after: &str, limit: usize) -> Result<(Vec<(String, V)>, bool)> {
        use std::ops::Bound;
        let mut out = Vec::new();
        let range = self
            .tree
            .range::<&[u8], _>((Bound::Excluded(after.as_bytes()), Bound::Unbounded));
        for kv in range {
            let (k, v) = kv?;
            if out.len() >= limit {
                return Ok((out, true));
            }
            let value = self.decode(&k, &v)?;
            out.push((String::from_utf8_lossy(&k).into_owned(), value));
        }
        Ok((out, false))
    }

    /// Every value, in key order.
    pub fn all(&self) -> Result<Vec<(String, V)>> {
        self.scan_prefix("")
    }

    /// Every value, in key order, decoded as `W`: a read-only view of `V`
    /// naming only the fields a scan needs (serde skips the others without
    /// building them), for start-up scans over many large records.
    pub fn all_as<W: DeserializeOwned>(&self) -> Result<Vec<(String, W)>> {
        let mut out = Vec::new();
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            let value = self.decode_as(&k, &v)?;
            out.push((String::from_utf8_lossy(&k).into_owned(), value));
        }
        Ok(out)
    }

    /// Every value, in key order, decoded as `W` (see [`Table::all_as`]) and
    /// handed to `f` one at a time: nothing is collected, so a scan over
    /// 100,000 records holds one of them at a time, not all.
    pub fn for_each_as<W: DeserializeOwned>(&self, mut f: impl FnMut(String, W)) -> Result<()> {
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            let value = self.decode_as(&k, &v)?;
            f(String::from_utf8_lossy(&k).into_owned(), value);
        }
        Ok(())
    }

    /// Every key, in order; values are not decoded.
    pub fn keys(&self) -> Result<Vec<String>> {
        self.tree
            .iter()
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        name: String,
        n: u32,
    }

    #[tokio::test]
    async fn only_a_clean_close_is_reported_and_only_once() {
        let tmp = tempfile::tempdir().unwrap();
        let reopen = || Store::open(tmp.path()).unwrap();
        let s = reopen();
        assert!(!s.take_closed_clean(), "a new directory");
        s.close_clean().await.unwrap();
        drop(s);
        let s = reopen();
        assert!(s.take_closed_clean());
        assert!(!s.take_closed_clean(), "taken once");
        // This run ends without a clean close (a crash): the mark is gone.
        drop(s);
        assert!(!reopen().take_closed_clean());
    }

    #[test]
    fn a_held_directory_is_refused_as_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        let _held = Store::open(tmp.path()).unwrap();
        let err = Store::open(tmp.path()).unwrap_err();
        assert!(matches!(err, StoreError::InUse(_)), "{err:?}");
    }

    #[tokio::test]
    async fn reopening_right_after_flushed_writes_succeeds() {
        // Flushes run on sled's helper threads, which hold the lock a moment
        // after the store is dropped: reopening must wait for them.
        let tmp = tempfile::tempdir().unwrap();
        for round in 0..20u32 {
            let store = Store::open(tmp.path()).unwrap();
            let t = store.table::<Rec>("t").unwrap();
            t.put(
                "k",
                &Rec {
                    name: "x".into(),
                    n: round,
                },
            )
            .await
            .unwrap();
            store.flush().await.unwrap();
        }
        let t = Store::open(tmp.path()).unwrap().table::<Rec>("t").unwrap();
        assert_eq!(t.get("k").unwrap().unwrap().n, 19);
    }

    #[cfg(unix)]
    #[test]
    fn sled_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("entra");
        let _s = Store::open(&dir).unwrap();
        let mut seen = 0;
        let mut stack = vec![dir];
        while let Some(p) = stack.pop() {
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            if meta.is_dir() {
                assert_eq!(mode, 0o700, "{}", p.display());
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            } else {
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
                seen += 1;
            }
        }
        assert!(seen > 0, "sled wrote no files");
    }

    /// A start-up scan can read a few fields of every record, or only the keys.
    #[tokio::test]
    async fn scans_read_keys_alone_or_a_view_of_each_value() {
        #[derive(Debug, PartialEq, serde::Deserialize)]
        struct NameOnly {
            name: String,
        }
        let s = Store::memory().unwrap();
        let t = s.table::<Rec>("recs").unwrap();
        for (k, name, n) in [("b", "y", 2), ("a", "x", 1)] {
            t.put(
                k,
                &Rec {
                    name: name.into(),
                    n,
                },
            )
            .await
            .unwrap();
        }
        assert_eq!(t.keys().unwrap(), ["a", "b"]);
        let view = t.all_as::<NameOnly>().unwrap();
        assert_eq!(
            view,
            [
                ("a".to_owned(), NameOnly { name: "x".into() }),
                ("b".to_owned(), NameOnly { name: "y".into() })
            ]
        );
        // A view that asks for a field the records lack is a corrupt record, not a default.
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Missing {
            absent: String,
        }
        assert!(matches!(
            t.all_as::<Missing>(),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn values_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let t = s.table::<Rec>("recs").unwrap();
            t.put(
                "a/1",
                &Rec {
                    name: "x".into(),
                    n: 1,
                },
            )
            .await
            .unwrap();
            t.put(
                "b/1",
                &Rec {
                    name: "y".into(),
                    n: 2,
                },
            )
            .await
            .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let t = s.table::<Rec>("recs").unwrap();
        assert_eq!(
            t.get("a/1").unwrap(),
            Some(Rec {
                name: "x".into(),
                n: 1
            })
        );
        assert_eq!(t.scan_prefix("b/").unwrap().len(), 1);
        assert_eq!(t.all().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn insert_new_refuses_existing_keys() {
        let s = Store::memory().unwrap();
        let t = s.table::<Rec>("recs").unwrap();
        assert!(
            t.insert_new(
                "k",
                &Rec {
                    name: "a".into(),
                    n: 1
                }
            )
            .await
            .unwrap()
        );
        assert!(
            !t.insert_new(
                "k",
                &Rec {
                    name: "b".into(),
                    n: 2
                }
            )
            .await
            .unwrap()
        );
        assert_eq!(t.get("k").unwrap().unwrap().name, "a");
        assert_eq!(t.remove("k").await.unwrap().unwrap().n, 1);
        assert_eq!(t.get("k").unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_writers_all_complete_and_persist() {
        // One sled `flush_async` per writer deadlocked at about 8 concurrent
        // writers (every sled IO thread waiting in a flush for a log write
        // queued behind them); group commit flushes on its own thread.
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let t = s.table::<Rec>("recs").unwrap();
            let writers: Vec<_> = (0..64u32)
                .map(|n| {
                    let t = t.clone();
                    tokio::spawn(async move {
                        let rec = Rec {
                            name: format!("r{n}"),
                            n,
                        };
                        t.put(&format!("k/{n:02}"), &rec).await
                    })
                })
                .collect();
            let all = futures_join(writers);
            tokio::time::timeout(std::time::Duration::from_secs(60), all)
                .await
                .expect("writers stuck");
        }
        let t = Store::open(dir.path())
            .unwrap()
            .table::<Rec>("recs")
            .unwrap();
        assert_eq!(t.scan_prefix("k/").unwrap().len(), 64);
    }

    async fn futures_join(handles: Vec<tokio::task::JoinHandle<Result<()>>>) {
        for h in handles {
            h.await.unwrap().unwrap();
        }
    }

    fn poll_once<F: std::future::Future>(f: Pin<&mut F>) -> std::task::Poll<F::Output> {
        f.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test]
    async fn a_deferred_write_is_visible_at_once_and_durable_only_after_a_flush_begun_after_it() {
        const STUCK: std::time::Duration = std::time::Duration::from_secs(30);
        let commit::gated::Harness {
            committer,
            began,
            release,
        } = commit::gated::harness();
        let store = Store {
            db: sled::Config::new().temporary(true).open().unwrap(),
            commit: Arc::new(committer),
            closed_clean: Default::default(),
        };
        let t = store.table::<Rec>("recs").unwrap();
        // Another writer's flush (1) is under way when this write is applied.
        let earlier = t.visible();
        began.recv_timeout(STUCK).expect("flush 1 began");
        let rec = Rec {
            name: "x".into(),
            n: 1,
        };
        let ticket = t.put_deferred("k", &rec).unwrap();
        assert_eq!(t.get("k").unwrap().as_ref(), Some(&rec), "visible at once");
        // A reader acknowledging what it saw waits as long as the writer.
        let seen = t.visible();
        let mut ticket = std::pin::pin!(ticket.into_future());
        let mut seen = std::pin::pin!(seen.wait());
        assert!(poll_once(ticket.as_mut()).is_pending());
        release.send(Ok(())).unwrap();
        tokio::time::timeout(STUCK, earlier.wait())
            .await
            .expect("flush 1 ended")
            .unwrap();
        began.recv_timeout(STUCK).expect("flush 2 began");
        assert!(
            poll_once(ticket.as_mut()).is_pending(),
            "flush 1 began before the write: it does not cover it"
        );
        assert!(poll_once(seen.as_mut()).is_pending());
        release.send(Ok(())).unwrap();
        tokio::time::timeout(STUCK, ticket).await.unwrap().unwrap();
        tokio::time::timeout(STUCK, seen).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn deferred_writes_awaited_by_their_last_ticket_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let a = s.table::<Rec>("a").unwrap();
            let b = s.table::<Rec>("b").unwrap();
            let rec = |n| Rec {
                name: format!("r{n}"),
                n,
            };
            a.put("gone", &rec(0)).await.unwrap();
            let first = a.put_deferred("k", &rec(1)).unwrap();
            let (old, second) = a.remove_deferred("gone").unwrap();
            assert_eq!(old, Some(rec(0)));
            let last = b.put_deferred("k", &rec(2)).unwrap();
            first.and(second).and(last).await.unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let a = s.table::<Rec>("a").unwrap();
        assert_eq!(a.get("k").unwrap().map(|r| r.n), Some(1));
        assert_eq!(a.get("gone").unwrap(), None);
        let b = s.table::<Rec>("b").unwrap();
        assert_eq!(b.get("k").unwrap().map(|r| r.n), Some(2));
    }

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        let s = Store::memory().unwrap();
        let t = s.table::<Rec>("recs").unwrap();
        t.tree.insert("bad", vec![9u8, b'{']).unwrap();
        t.tree.insert("bad2", vec![1u8, b'{']).unwrap();
        assert!(matches!(t.get("bad"), Err(StoreError::Corrupt { .. })));
        assert!(matches!(t.get("bad2"), Err(StoreError::Corrupt { .. })));
    }
}
