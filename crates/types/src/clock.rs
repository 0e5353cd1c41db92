//! Injected wall-clock time: `Clock`, `SystemClock` (the only reader of system time),
//! `ManualClock` for tests and `VirtualClock`, the sandbox's movable clock (a base clock plus
//! an offset that users move forward with `misim clock`).

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

/// The sandbox's clock: a base clock (the real one in `misim up`) plus an offset in seconds.
/// Real time keeps ticking on top of the offset; `misim clock advance` and `set` move the
/// offset. This type only computes and holds it: whoever serves `misim.admin.v1.Clock` persists
/// a new offset before applying it with [`VirtualClock::set_offset`], so a restart resumes at
/// the moved time.
#[derive(Debug)]
pub struct VirtualClock {
    base: SharedClock,
    offset_secs: std::sync::atomic::AtomicI64,
}

/// Why the virtual clock refused to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockMoveError {
    /// An advance of zero or a negative duration.
    NotForward,
    /// A target before the current time, without permission to go back.
    Backwards {
        /// The clock's current time (Unix seconds).
        now: i64,
        /// The time asked for.
        target: i64,
    },
    /// The result does not fit (more than ~292 billion years away).
    OutOfRange,
}

impl std::fmt::Display for ClockMoveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotForward => write!(f, "the clock only advances by a positive duration"),
            Self::Backwards { now, target } => write!(
                f,
                "{} is before the sandbox's current time {}: time only moves forward \
                 unless going backwards is explicitly allowed",
                crate::time::format_rfc3339(*target),
                crate::time::format_rfc3339(*now)
            ),
            Self::OutOfRange => write!(f, "the time is out of range"),
        }
    }
}

impl std::error::Error for ClockMoveError {}

impl VirtualClock {
    /// `base` moved by `offset_secs` (the persisted offset; 0 on a new sandbox).
    pub fn new(base: SharedClock, offset_secs: i64) -> Self {
        Self {
            base,
            offset_secs: std::sync::atomic::AtomicI64::new(offset_secs),
        }
    }

    /// The offset from the base clock, in seconds.
    pub fn offset_secs(&self) -> i64 {
        self.offset_secs.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The base clock's time (Unix seconds), without the offset.
    pub fn base_unix(&self) -> i64 {
        self.base.unix()
    }

    /// The offset that moves the clock `by` seconds forward from now (`by` must be positive).
    pub fn offset_after_advance(&self, by_secs: i64) -> Result<i64, ClockMoveError> {
        if by_secs <= 0 {
            return Err(ClockMoveError::NotForward);
        }
        self.offset_secs()
            .checked_add(by_secs)
            .filter(|o| self.base_unix().checked_add(*o).is_some())
            .ok_or(ClockMoveError::OutOfRange)
    }

    /// The offset at which the clock reads `target` (Unix seconds) now. A target before the
    /// current time is refused unless `allow_backwards`.
    pub fn offset_to_reach(
        &self,
        target: i64,
        allow_backwards: bool,
    ) -> Result<i64, ClockMoveError> {
        let now = self.unix();
        if target < now && !allow_backwards {
            return Err(ClockMoveError::Backwards { now, target });
        }
        target
            .checked_sub(self.base_unix())
            .ok_or(ClockMoveError::OutOfRange)
    }

    /// Applies an offset (after its owner persisted it).
    pub fn set_offset(&self, offset_secs: i64) {
        self.offset_secs
            .store(offset_secs, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> SystemTime {
        let base = self.base.now();
        let off = self.offset_secs();
        let moved = if off >= 0 {
            base.checked_add(Duration::from_secs(off.unsigned_abs()))
        } else {
            base.checked_sub(Duration::from_secs(off.unsigned_abs()))
        };
        // Offsets are checked when set, so this only falls back for a base clock near the end of time.
        moved.unwrap_or(base)
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

    fn virtual_at(unix: u64, offset: i64) -> (Arc<ManualClock>, VirtualClock) {
        let base = Arc::new(ManualClock::at_unix(unix));
        let v = VirtualClock::new(base.clone(), offset);
        (base, v)
    }

    #[test]
    fn virtual_clock_adds_its_offset_and_base_time_keeps_ticking() {
        let (base, v) = virtual_at(1_700_000_000, 3600);
        assert_eq!(v.unix(), 1_700_003_600);
        base.advance(Duration::from_secs(10));
        assert_eq!(v.unix(), 1_700_003_610);
        let o = v.offset_after_advance(25 * 3600).unwrap();
        assert_eq!(o, 3600 + 25 * 3600);
        // Computing an offset changes nothing until it is applied.
        assert_eq!(v.unix(), 1_700_003_610);
        v.set_offset(o);
        assert_eq!(v.unix(), 1_700_000_010 + 26 * 3600);
    }

    #[test]
    fn virtual_clock_moves_forward_only_unless_allowed() {
        let (_, v) = virtual_at(1_700_000_000, 0);
        assert_eq!(v.offset_after_advance(0), Err(ClockMoveError::NotForward));
        assert_eq!(v.offset_after_advance(-5), Err(ClockMoveError::NotForward));
        assert_eq!(v.offset_to_reach(1_700_000_100, false), Ok(100));
        assert_eq!(
            v.offset_to_reach(1_699_999_000, false),
            Err(ClockMoveError::Backwards {
                now: 1_700_000_000,
                target: 1_699_999_000
            })
        );
        assert_eq!(v.offset_to_reach(1_699_999_000, true), Ok(-1000));
        v.set_offset(-1000);
        assert_eq!(v.unix(), 1_699_999_000);
        assert_eq!(
            v.offset_after_advance(i64::MAX),
            Err(ClockMoveError::OutOfRange)
        );
        let msg = ClockMoveError::Backwards { now: 0, target: -1 }.to_string();
        assert!(msg.contains("1969-12-31T23:59:59Z"), "{msg}");
    }
}
