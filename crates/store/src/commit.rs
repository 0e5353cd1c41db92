//! Group commit: concurrent writers share flushes.
//!
//! Every write method of a [`Table`](crate::Table) returns only once its
//! change is on disk. Flushing once per write makes each writer pay a whole
//! log write and sync, and concurrent writers queue behind each other's
//! syncs. Instead, one flusher thread per [`Store`](crate::Store) runs
//! flushes back to back while anyone waits: a writer that finished its tree
//! write asks for the *next* flush to start (flush number `started + 1`, read
//! under the lock after its write, so that flush begins after the write and
//! covers it) and waits until a flush with at least that number has ended.
//! Every writer that arrives while a flush runs is acknowledged by the one
//! flush after it, so N concurrent writers cost about two flushes, not N.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::watch;

/// What one flush does: makes every write that completed before the call durable.
pub(crate) trait Flusher: Send + 'static {
    /// Flushes; an error means nothing is known about the writes it covered.
    fn flush(&mut self) -> Result<(), sled::Error>;
}

impl Flusher for sled::Db {
    fn flush(&mut self) -> Result<(), sled::Error> {
        // `Db` derefs to its default `Tree`, whose flush covers the whole database.
        sled::Tree::flush(self).map(drop)
    }
}

/// The end of a flush, as published to waiting writers.
#[derive(Debug, Clone)]
struct Done {
    /// Number of the last flush that ended (0: none yet).
    flush: u64,
    /// That flush's failure, if it failed.
    error: Option<sled::Error>,
}

#[derive(Debug, Default)]
struct State {
    /// Flushes begun so far: the flusher bumps it, under the lock, just before it flushes.
    started: u64,
    /// Highest flush number a writer waits for.
    wanted: u64,
    /// The store is gone: the flusher stops once nobody waits.
    closing: bool,
    /// The flusher is waiting on the condvar (not flushing): only then does a
    /// writer need to wake it. A busy flusher looks at `wanted` again before
    /// it waits, and a notify costs a futex syscall even with nobody waiting.
    idle: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is three counters updated in single statements: a panic
        // elsewhere cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The group-commit handle of one store; dropping the last one stops its flusher thread.
#[derive(Debug)]
pub(crate) struct Committer {
    shared: Arc<Shared>,
    done: watch::Receiver<Done>,
}

impl Committer {
    /// Starts the flusher thread around `flusher`.
    pub(crate) fn start(flusher: impl Flusher) -> std::io::Result<Committer> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let (tx, done) = watch::channel(Done {
            flush: 0,
            error: None,
        });
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("misim-store-flush".into())
            .spawn(move || run(&thread_shared, flusher, &tx))?;
        Ok(Committer { shared, done })
    }

    /// Asks for the next flush to begin and returns its number: a flush that
    /// begins after this call, so it covers every write completed before it.
    /// The flusher starts on it at once; [`Committer::wait`] for it later (a
    /// writer may release its locks first, see [`crate::Durable`]).
    pub(crate) fn ticket(&self) -> u64 {
        let (need, idle) = {
            let mut st = self.shared.lock();
            let need = st.started + 1;
            st.wanted = st.wanted.max(need);
            (need, st.idle)
        };
        if idle {
            self.shared.wake.notify_one();
        }
        need
    }

    /// Returns once flush number `need` (or a later one) has ended.
    pub(crate) async fn wait(&self, need: u64) -> Result<(), sled::Error> {
        let mut done = self.done.clone();
        let d = done
            .wait_for(|d| d.flush >= need)
            .await
            .map_err(|_| flusher_gone())?
            .clone();
        match d.error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Returns once a flush that started after this call has ended: every write
    /// completed before the call is then durable.
    pub(crate) async fn durable(&self) -> Result<(), sled::Error> {
        self.wait(self.ticket()).await
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
    }
}

fn flusher_gone() -> sled::Error {
    sled::Error::ReportableBug("the store's flusher thread stopped".into())
}

/// The flusher thread: one flush at a time, as long as a writer waits for one.
fn run(shared: &Shared, mut flusher: impl Flusher, done: &watch::Sender<Done>) {
    loop {
        let flush = {
            let mut st = shared.lock();
            while st.wanted <= st.started && !st.closing {
                st.idle = true;
                st = shared.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                st.idle = false;
            }
            if st.wanted <= st.started {
                return;
            }
            st.started += 1;
            st.started
        };
        let error = flusher.flush().err();
        done.send_replace(Done { flush, error });
    }
}

/// A flusher the tests hold in their hand (here and in the `Table` tests).
#[cfg(test)]
pub(crate) mod gated {
    use std::sync::mpsc;

    use super::*;

    /// A flusher that reports each flush it begins and ends it only when told to.
    pub(crate) struct Gated {
        began: mpsc::Sender<()>,
        release: mpsc::Receiver<Result<(), sled::Error>>,
    }

    impl Flusher for Gated {
        fn flush(&mut self) -> Result<(), sled::Error> {
            let _ = self.began.send(());
            self.release.recv().unwrap_or(Ok(()))
        }
    }

    /// The test's end: `began` hears of each flush beginning, `release` ends it.
    pub(crate) struct Harness {
        pub(crate) committer: Committer,
        pub(crate) began: mpsc::Receiver<()>,
        pub(crate) release: mpsc::Sender<Result<(), sled::Error>>,
    }

    pub(crate) fn harness() -> Harness {
        let (began_tx, began) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let committer = Committer::start(Gated {
            began: began_tx,
            release: release_rx,
        })
        .unwrap();
        Harness {
            committer,
            began,
            release,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use super::gated::harness;

    /// Generous bound on waiting for the flusher thread; a pass never waits it out.
    const STUCK: Duration = Duration::from_secs(30);

    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn a_write_is_acknowledged_only_by_a_flush_that_started_after_it() {
        let h = harness();
        // Writer A asks for flush 1, which begins and is held.
        let mut a = pin!(h.committer.durable());
        assert!(poll_once(a.as_mut()).is_pending());
        h.began.recv_timeout(STUCK).expect("flush 1 began");
        // Writer B writes while flush 1 runs: flush 1 does not cover it.
        let mut b = pin!(h.committer.durable());
        assert!(poll_once(b.as_mut()).is_pending());
        h.release.send(Ok(())).unwrap();
        tokio::time::timeout(STUCK, a.as_mut())
            .await
            .expect("A acknowledged by flush 1")
            .unwrap();
        // Flush 2 (B's) begins on its own; until it ends, B waits.
        h.began.recv_timeout(STUCK).expect("flush 2 began");
        assert!(
            poll_once(b.as_mut()).is_pending(),
            "B before its flush ended"
        );
        h.release.send(Ok(())).unwrap();
        tokio::time::timeout(STUCK, b.as_mut())
            .await
            .expect("B acknowledged by flush 2")
            .unwrap();
    }

    #[tokio::test]
    async fn writers_waiting_behind_one_flush_share_the_next() {
        let h = harness();
        let mut first = pin!(h.committer.durable());
        assert!(poll_once(first.as_mut()).is_pending());
        h.began.recv_timeout(STUCK).expect("flush 1 began");
        let mut waiting: Vec<_> = (0..8).map(|_| Box::pin(h.committer.durable())).collect();
        for w in &mut waiting {
            assert!(poll_once(w.as_mut()).is_pending());
        }
        h.release.send(Ok(())).unwrap();
        h.began.recv_timeout(STUCK).expect("flush 2 began");
        h.release.send(Ok(())).unwrap();
        first.await.unwrap();
        for w in waiting {
            tokio::time::timeout(STUCK, w).await.unwrap().unwrap();
        }
        // Eight writers, one flush: no third flush was asked for.
        assert!(h.began.try_recv().is_err(), "a third flush began");
    }

    #[tokio::test]
    async fn a_ticket_resolves_only_after_a_flush_that_began_after_it_was_taken() {
        let h = harness();
        // Write A takes its ticket: flush 1 begins at once, though nobody waits yet.
        let a = h.committer.ticket();
        h.began.recv_timeout(STUCK).expect("flush 1 began");
        // Write B, made while flush 1 runs, gets the next flush.
        let b = h.committer.ticket();
        assert_eq!((a, b), (1, 2));
        // B is awaited first (its writer released its locks before A's did):
        // flush 1 ending does not resolve it.
        let mut wait_b = pin!(h.committer.wait(b));
        assert!(poll_once(wait_b.as_mut()).is_pending());
        h.release.send(Ok(())).unwrap();
        tokio::time::timeout(STUCK, h.committer.wait(a))
            .await
            .expect("A resolved by flush 1")
            .unwrap();
        h.began.recv_timeout(STUCK).expect("flush 2 began");
        assert!(
            poll_once(wait_b.as_mut()).is_pending(),
            "B before flush 2 ended"
        );
        h.release.send(Ok(())).unwrap();
        tokio::time::timeout(STUCK, wait_b)
            .await
            .expect("B resolved by flush 2")
            .unwrap();
        // Awaited after its flush ended, a ticket resolves at once, costing no flush.
        assert!(matches!(
            poll_once(pin!(h.committer.wait(a))),
            Poll::Ready(Ok(()))
        ));
        assert!(h.began.try_recv().is_err(), "a third flush began");
    }

    #[tokio::test]
    async fn tickets_taken_during_one_flush_share_the_next() {
        let h = harness();
        let first = h.committer.ticket();
        h.began.recv_timeout(STUCK).expect("flush 1 began");
        let during: Vec<u64> = (0..8).map(|_| h.committer.ticket()).collect();
        assert!(during.iter().all(|&t| t == first + 1), "{during:?}");
        h.release.send(Ok(())).unwrap();
        h.began.recv_timeout(STUCK).expect("flush 2 began");
        h.release.send(Ok(())).unwrap();
        for t in during {
            tokio::time::timeout(STUCK, h.committer.wait(t))
                .await
                .unwrap()
                .unwrap();
        }
        assert!(h.began.try_recv().is_err(), "a third flush began");
    }

    #[tokio::test]
    async fn a_failed_flush_fails_the_writers_it_covered() {
        let h = harness();
        let mut a = pin!(h.committer.durable());
        assert!(poll_once(a.as_mut()).is_pending());
        h.began.recv_timeout(STUCK).expect("flush began");
        h.release
            .send(Err(sled::Error::Unsupported("disk on fire".into())))
            .unwrap();
        let err = tokio::time::timeout(STUCK, a).await.unwrap().unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
        // The next writer gets a fresh flush, not the old failure.
        let mut b = pin!(h.committer.durable());
        assert!(poll_once(b.as_mut()).is_pending());
        h.began.recv_timeout(STUCK).expect("next flush began");
        h.release.send(Ok(())).unwrap();
        tokio::time::timeout(STUCK, b).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn dropping_the_committer_stops_the_flusher() {
        let h = harness();
        let mut done = h.committer.done.clone();
        drop(h.committer);
        // The thread owns the sender: it is dropped when the thread returns.
        let ended = tokio::time::timeout(STUCK, done.changed()).await;
        assert!(matches!(ended, Ok(Err(_))), "flusher still running");
    }
}
