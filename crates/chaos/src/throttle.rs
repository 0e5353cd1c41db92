//! IMDS's per-VM rate limit for the identity endpoint: Azure documents 20
//! requests per second per VM for the managed-identity category (and 5
//! concurrent, which misim does not model), answering 429 beyond it
//! (docs/toolkit.md, Throttling). Counted in one-second windows of the
//! sandbox clock, so a test with a stopped clock sees the limit exactly.

use std::collections::HashMap;

use parking_lot::Mutex;

use misim_types::SharedClock;

/// Azure's documented limit for the identity category, per VM.
pub const AZURE_IDENTITY_RATE: u32 = 20;
/// Windows kept at most; older ones are dropped first.
const MAX_KEYS: usize = 4096;

/// Whether and how much to throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Requests per second per VM; `None` is off.
    pub per_second: Option<u32>,
}

impl ThrottleConfig {
    /// Azure's limit.
    pub const AZURE: Self = Self {
        per_second: Some(AZURE_IDENTITY_RATE),
    };
    /// No limit.
    pub const OFF: Self = Self { per_second: None };

    /// `on` (Azure's limit), `off`, or a number of requests per second.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "azure" => Ok(Self::AZURE),
            "off" | "false" | "0" => Ok(Self::OFF),
            n => n
                .parse::<u32>()
                .map(|n| Self {
                    per_second: Some(n),
                })
                .map_err(|_| {
                    format!("'{s}' is not a throttle setting: on, off or requests per second")
                }),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Throttle {
    clock: SharedClock,
    config: Mutex<ThrottleConfig>,
    /// VM key → (window second, requests in it).
    windows: Mutex<HashMap<String, (i64, u32)>>,
}

impl Throttle {
    /// Off until a service turns it on.
    pub(crate) fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            config: Mutex::new(ThrottleConfig::OFF),
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn set(&self, c: ThrottleConfig) {
        *self.config.lock() = c;
        self.windows.lock().clear();
    }

    /// Counts a request of `key`; `Some(limit)` when it is over the limit.
    pub(crate) fn over(&self, key: &str) -> Option<u32> {
        let limit = self.config.lock().per_second?;
        let now = self.clock.unix();
        let mut w = self.windows.lock();
        if w.len() >= MAX_KEYS && !w.contains_key(key) {
            w.retain(|_, (sec, _)| *sec == now);
            if w.len() >= MAX_KEYS {
                // Every key is in this second: forget them all rather than grow.
                w.clear();
            }
        }
        let slot = w.entry(key.to_owned()).or_insert((now, 0));
        if slot.0 != now {
            *slot = (now, 0);
        }
        slot.1 = slot.1.saturating_add(1);
        (slot.1 > limit).then_some(limit)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use misim_types::ManualClock;

    use super::*;

    #[test]
    fn the_limit_holds_per_vm_and_per_second() {
        let clock = Arc::new(ManualClock::at_unix(1_700_000_000));
        let t = Throttle::new(clock.clone());
        assert_eq!(t.over("vm1"), None, "off by default");
        t.set(ThrottleConfig::AZURE);
        for _ in 0..AZURE_IDENTITY_RATE {
            assert_eq!(t.over("vm1"), None);
        }
        assert_eq!(t.over("vm1"), Some(AZURE_IDENTITY_RATE));
        assert_eq!(t.over("vm2"), None, "another VM has its own budget");
        clock.advance(Duration::from_secs(1));
        assert_eq!(t.over("vm1"), None, "a new second, a new budget");
        assert_eq!(ThrottleConfig::parse("off"), Ok(ThrottleConfig::OFF));
        assert_eq!(ThrottleConfig::parse("5").unwrap().per_second, Some(5));
        assert!(
            ThrottleConfig::parse("fast")
                .unwrap_err()
                .contains("'fast'")
        );
    }
}
