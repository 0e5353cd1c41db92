//! IMDS's per-VM limits for the identity endpoint: Azure documents 20
//! requests per second and 5 concurrent requests per VM for the
//! managed-identity category, answering 429 beyond them (docs/toolkit.md,
//! Throttling). The rate is counted in one-second windows of the sandbox
//! clock, so a test with a stopped clock sees the limit exactly; the
//! concurrency limit counts requests a VM has in flight, each released when
//! its answer is ready (or its caller gives up).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use misim_types::SharedClock;

/// Azure's documented rate limit for the identity category, per VM.
pub const AZURE_IDENTITY_RATE: u32 = 20;
/// Azure's documented limit of concurrent identity requests, per VM.
pub const AZURE_IDENTITY_CONCURRENCY: u32 = 5;
/// Windows kept at most; older ones are dropped first.
const MAX_KEYS: usize = 4096;

/// Whether and how much to throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Requests per second per VM; `None` is off.
    pub per_second: Option<u32>,
    /// Requests in flight at once per VM; `None` is off.
    pub concurrent: Option<u32>,
}

impl ThrottleConfig {
    /// Azure's limits.
    pub const AZURE: Self = Self {
        per_second: Some(AZURE_IDENTITY_RATE),
        concurrent: Some(AZURE_IDENTITY_CONCURRENCY),
    };
    /// No limit.
    pub const OFF: Self = Self {
        per_second: None,
        concurrent: None,
    };

    /// `on` (Azure's limits), `off`, a number of requests per second (with
    /// Azure's concurrency limit), or `RATE,CONCURRENT` where either may be
    /// `off` (`20,5` is `on`; `50,off`; `off,5`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "'{s}' is not a throttle setting: on, off, requests per second, or RATE,CONCURRENT (each a number or off)"
            )
        };
        let limit = |v: &str| match v.trim() {
            "off" | "0" => Ok(None),
            n => n.parse::<u32>().map(Some).map_err(|_| bad()),
        };
        let s_lower = s.trim().to_ascii_lowercase();
        match s_lower.as_str() {
            "on" | "true" | "azure" => Ok(Self::AZURE),
            "off" | "false" | "0" => Ok(Self::OFF),
            v => match v.split_once(',') {
                Some((rate, concurrent)) => Ok(Self {
                    per_second: limit(rate)?,
                    concurrent: limit(concurrent)?,
                }),
                None => Ok(Self {
                    per_second: Some(v.parse::<u32>().map_err(|_| bad())?),
                    concurrent: Some(AZURE_IDENTITY_CONCURRENCY),
                }),
            },
        }
    }
}

/// Requests in flight per VM key; a key is present only while it has some.
type InFlightMap = Arc<Mutex<HashMap<String, u32>>>;

#[derive(Debug)]
pub(crate) struct Throttle {
    clock: SharedClock,
    config: Mutex<ThrottleConfig>,
    /// VM key → (window second, requests in it).
    windows: Mutex<HashMap<String, (i64, u32)>>,
    in_flight: InFlightMap,
}

/// One admitted request's place among its VM's requests in flight, given
/// back when dropped: when the answer is ready, or when the caller goes away
/// and its request future is dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    map: InFlightMap,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.map.lock();
        if let Some(n) = m.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

impl Throttle {
    /// Off until a service turns it on.
    pub(crate) fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            config: Mutex::new(ThrottleConfig::OFF),
            windows: Mutex::new(HashMap::new()),
            in_flight: Arc::default(),
        }
    }

    /// Changes the limits. Requests already in flight keep their slots and
    /// still count against a concurrency limit turned on now.
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

    /// Admits a request of `key` among its VM's requests in flight: a
    /// [`Slot`] to hold until the answer is ready, `Ok(None)` with the limit
    /// off, or `Err(limit)` when the VM already has that many in flight.
    pub(crate) fn enter(&self, key: &str) -> Result<Option<Slot>, u32> {
        let Some(limit) = self.config.lock().concurrent else {
            return Ok(None);
        };
        let mut m = self.in_flight.lock();
        if m.get(key).copied().unwrap_or(0) >= limit {
            return Err(limit);
        }
        *m.entry(key.to_owned()).or_insert(0) += 1;
        Ok(Some(Slot {
            map: self.in_flight.clone(),
            key: key.to_owned(),
        }))
    }

    /// How many admitted requests of `key` are in flight.
    pub(crate) fn in_flight(&self, key: &str) -> u32 {
        self.in_flight.lock().get(key).copied().unwrap_or(0)
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
    }

    #[test]
    fn at_most_five_in_flight_per_vm_until_one_finishes() {
        let t = Throttle::new(Arc::new(ManualClock::at_unix(1_700_000_000)));
        assert!(matches!(t.enter("vm1"), Ok(None)), "off by default");
        t.set(ThrottleConfig::AZURE);
        let mut held: Vec<Slot> = (0..AZURE_IDENTITY_CONCURRENCY)
            .map(|i| t.enter("vm1").unwrap().unwrap_or_else(|| panic!("{i}")))
            .collect();
        assert_eq!(t.in_flight("vm1"), AZURE_IDENTITY_CONCURRENCY);
        assert_eq!(
            t.enter("vm1").unwrap_err(),
            AZURE_IDENTITY_CONCURRENCY,
            "a sixth is refused"
        );
        assert_eq!(
            t.in_flight("vm1"),
            AZURE_IDENTITY_CONCURRENCY,
            "a refusal takes no slot"
        );
        let other = t.enter("vm2").unwrap();
        assert!(other.is_some(), "another VM has its own slots");
        held.pop();
        let again = t.enter("vm1").unwrap();
        assert!(again.is_some(), "a finished request frees its slot");
        drop(again);
        drop(held);
        drop(other);
        assert_eq!(t.in_flight("vm1"), 0);
        assert!(
            t.in_flight.lock().is_empty(),
            "no key outlives its requests"
        );
        t.set(ThrottleConfig::OFF);
        let unlimited: Vec<_> = (0..10).map(|_| t.enter("vm1").unwrap()).collect();
        assert!(unlimited.iter().all(Option::is_none), "switched off");
    }

    #[test]
    fn settings_parse() {
        let p = ThrottleConfig::parse;
        assert_eq!(p("on"), Ok(ThrottleConfig::AZURE));
        assert_eq!(p("20,5"), Ok(ThrottleConfig::AZURE));
        assert_eq!(p(" Off "), Ok(ThrottleConfig::OFF));
        assert_eq!(p("off,off"), Ok(ThrottleConfig::OFF));
        assert_eq!(
            p("50"),
            Ok(ThrottleConfig {
                per_second: Some(50),
                concurrent: Some(AZURE_IDENTITY_CONCURRENCY),
            }),
            "a bare number is the rate; the concurrency limit stays Azure's"
        );
        assert_eq!(
            p("50,off"),
            Ok(ThrottleConfig {
                per_second: Some(50),
                concurrent: None,
            })
        );
        assert_eq!(
            p("off,2"),
            Ok(ThrottleConfig {
                per_second: None,
                concurrent: Some(2),
            })
        );
        for bad in ["fast", "5,", ",5", "5,x", "1,2,3", "-1"] {
            assert!(p(bad).unwrap_err().contains(&format!("'{bad}'")), "{bad}");
        }
    }
}
