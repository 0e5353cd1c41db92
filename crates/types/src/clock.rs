//! Injected wall-clock time: `Clock`, `SystemClock` (the only reader of system time) and
//! `ManualClock` for tests.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time. Everything that stamps or checks a time (token
/// `iat`/`nbf`/`exp`, cache expiry) takes a `Clock`, so tests can use
/// [`ManualClock`] instead of sleeping.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// The current time as Unix seconds.
    fn unix(&self) -> i64 {
        unix_seconds(self.now())
    }
}

/// A clock shared between services.
pub type SharedClock = Arc<dyn Clock>;

/// Converts a time to Unix seconds (negative before 1970).
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// The system's wall clock: the one place misim reads the time (clippy disallows
/// `SystemTime::now` everywhere else).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that may read the system time
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: parking_lot::Mutex<SystemTime>,
}

impl ManualClock {
    /// A clock stopped at `unix` seconds.
    pub fn at_unix(unix: u64) -> Self {
        Self {
            now: parking_lot::Mutex::new(UNIX_EPOCH + Duration::from_secs(unix)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        *self.now.lock() += by;
    }

    /// Moves the clock to `to`, backwards too (a test of a token issued "in the future").
    pub fn set(&self, to: SystemTime) {
        *self.now.lock() = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::at_unix(1_700_000_000);
        assert_eq!(c.unix(), 1_700_000_000);
        c.advance(Duration::from_secs(90));
        assert_eq!(c.unix(), 1_700_000_090);
    }

    #[test]
    fn unix_seconds_before_epoch_is_negative() {
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), -5);
    }
}
