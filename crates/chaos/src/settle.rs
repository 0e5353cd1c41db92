//! Settling delays (issue #12, docs/toolkit.md, Delays): on Azure something
//! new takes a while to be seen everywhere (a role assignment by RBAC, an
//! identity by IMDS). With a delay set, a key noted as new counts as not yet
//! there until that many seconds of the sandbox clock have passed. Off (zero)
//! by default; kept in memory (after a restart everything has settled, as in
//! a long-running tenant).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The new keys and the delay (cheap to share behind an `Arc`; one per use).
#[derive(Debug, Default)]
pub struct Settling {
    /// (delay in seconds, lower-case key → Unix second it was noted).
    state: Mutex<(i64, HashMap<String, i64>)>,
}

impl Settling {
    /// A panic elsewhere cannot leave the state half-written (each change is
    /// one key), so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, (i64, HashMap<String, i64>)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the delay (zero: off); forgets what was settling.
    pub fn set_delay(&self, delay: Duration) {
        let mut s = self.lock();
        s.0 = i64::try_from(delay.as_secs()).unwrap_or(i64::MAX);
        s.1.clear();
    }

    /// Notes `key` as new at `now` (nothing when the delay is off).
    pub fn created(&self, key: &str, now: i64) {
        let mut s = self.lock();
        let delay = s.0;
        if delay == 0 {
            return;
        }
        // Only keys still settling are kept, so the map stays small.
        s.1.retain(|_, born| born.saturating_add(delay) > now);
        s.1.insert(key.to_ascii_lowercase(), now);
    }

    /// Seconds until `key` has settled; `None` when it has.
    pub fn remaining(&self, key: &str, now: i64) -> Option<i64> {
        let s = self.lock();
        let born = *s.1.get(&key.to_ascii_lowercase())?;
        let left = born.saturating_add(s.0) - now;
        (left > 0).then_some(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_keys_wait_out_the_delay() {
        let p = Settling::default();
        p.created("/A", 100);
        assert_eq!(p.remaining("/a", 100), None, "no delay set: at once");
        p.set_delay(Duration::from_secs(30));
        p.created("/A", 100);
        assert_eq!(p.remaining("/a", 100), Some(30));
        assert_eq!(p.remaining("/a", 129), Some(1));
        assert_eq!(p.remaining("/a", 130), None);
        p.created("/b", 200);
        assert_eq!(p.lock().1.len(), 1, "settled ones are forgotten");
    }
}
