//! The propagation delay of new role assignments (issue #12, docs/toolkit.md):
//! on Azure an assignment can take minutes to take effect; with a delay set,
//! a new assignment is left out of RBAC decisions until that many seconds of
//! the sandbox clock have passed since it was created. Off (zero) by default.
//!
//! Kept in memory: after a restart every assignment is in effect, which is
//! what a long-settled Azure tenant shows too.

use std::collections::HashMap;
use std::time::Duration;

use std::sync::{Mutex, MutexGuard, PoisonError};

#[derive(Debug, Default)]
pub(crate) struct Propagation {
    /// (delay in seconds, lower-case assignment id → Unix second created).
    state: Mutex<(i64, HashMap<String, i64>)>,
}

impl Propagation {
    /// The state; a panic elsewhere cannot leave it half-written (each
    /// change is one assignment), so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, (i64, HashMap<String, i64>)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_delay(&self, delay: Duration) {
        let mut s = self.lock();
        s.0 = i64::try_from(delay.as_secs()).unwrap_or(i64::MAX);
        s.1.clear();
    }

    /// Notes a new assignment created at `now`.
    pub(crate) fn created(&self, id: &str, now: i64) {
        let mut s = self.lock();
        let delay = s.0;
        if delay == 0 {
            return;
        }
        // Only assignments still propagating are kept, so the map stays small.
        s.1.retain(|_, born| born.saturating_add(delay) > now);
        s.1.insert(id.to_ascii_lowercase(), now);
    }

    /// Seconds until the assignment `id` takes effect; `None` when it has.
    pub(crate) fn remaining(&self, id: &str, now: i64) -> Option<i64> {
        let s = self.lock();
        let born = *s.1.get(&id.to_ascii_lowercase())?;
        let left = born.saturating_add(s.0) - now;
        (left > 0).then_some(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_assignments_wait_out_the_delay() {
        let p = Propagation::default();
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
