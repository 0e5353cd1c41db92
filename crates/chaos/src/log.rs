//! The decision log: a bounded ring buffer of refusals, injected faults and
//! throttled requests, with a broadcast for followers. In memory only, like
//! the rules: it explains what happened in this run.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::broadcast;

/// Entries kept per service; the oldest go first.
pub const LOG_CAPACITY: usize = 4096;
/// Longest reason kept (error messages are short; a body might not be).
const MAX_REASON: usize = 2048;

/// Why an entry was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The service itself refused.
    Denied,
    /// A fault rule fired.
    Fault,
    /// The service's rate limit refused.
    Throttled,
}

impl Kind {
    /// As the log prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Denied => "denied",
            Kind::Fault => "fault",
            Kind::Throttled => "throttled",
        }
    }
}

/// One entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Increasing per service process.
    pub seq: u64,
    /// The sandbox clock, Unix ms.
    pub time_unix_ms: i64,
    /// imds, entra, graph, arm, keyvault.
    pub service: String,
    /// Why it is here.
    pub kind: Kind,
    /// HTTP method.
    pub method: String,
    /// Path (no query: queries may carry secrets).
    pub path: String,
    /// Status answered (0: a fault that only delayed).
    pub status: u16,
    /// Who: object id, client id, or the VM.
    pub principal: String,
    /// The client id, when known.
    pub client_id: String,
    /// Azure's error code.
    pub code: String,
    /// Why.
    pub reason: String,
    /// The rule that fired.
    pub fault_id: String,
}

/// Filters of `misim log`.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only the services' own refusals.
    pub denied_only: bool,
    /// Principal or client id, case-insensitive.
    pub principal: Option<String>,
    /// Service name.
    pub service: Option<String>,
}

impl Query {
    /// True when `d` passes every filter.
    pub fn admits(&self, d: &Decision) -> bool {
        (!self.denied_only || d.kind == Kind::Denied)
            && self.principal.as_deref().is_none_or(|p| {
                d.principal.eq_ignore_ascii_case(p) || d.client_id.eq_ignore_ascii_case(p)
            })
            && self
                .service
                .as_deref()
                .is_none_or(|s| d.service.eq_ignore_ascii_case(s))
    }
}

/// The ring buffer.
#[derive(Debug)]
pub struct DecisionLog {
    entries: Mutex<(VecDeque<Decision>, u64)>,
    tx: broadcast::Sender<Decision>,
}

impl Default for DecisionLog {
    fn default() -> Self {
        Self {
            entries: Mutex::new((VecDeque::new(), 0)),
            tx: broadcast::channel(256).0,
        }
    }
}

impl DecisionLog {
    /// Records `d` (its `seq` is assigned here) and tells followers.
    pub fn record(&self, mut d: Decision) {
        if d.reason.len() > MAX_REASON {
            let mut cut = MAX_REASON;
            while !d.reason.is_char_boundary(cut) {
                cut -= 1;
            }
            d.reason.truncate(cut);
        }
        let mut g = self.entries.lock();
        g.1 += 1;
        d.seq = g.1;
        if g.0.len() == LOG_CAPACITY {
            g.0.pop_front();
        }
        g.0.push_back(d.clone());
        // Sent under the lock, so a follower's snapshot and stream never
        // miss or repeat an entry. No receiver is not an error.
        let _ = self.tx.send(d);
    }

    /// The entries `q` admits, oldest first.
    pub fn list(&self, q: &Query) -> Vec<Decision> {
        self.entries
            .lock()
            .0
            .iter()
            .filter(|d| q.admits(d))
            .cloned()
            .collect()
    }

    /// The entries held now, and a receiver of every later one.
    pub fn follow(&self, q: &Query) -> (Vec<Decision>, broadcast::Receiver<Decision>) {
        let g = self.entries.lock();
        let rx = self.tx.subscribe();
        let now = g.0.iter().filter(|d| q.admits(d)).cloned().collect();
        (now, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(kind: Kind, principal: &str) -> Decision {
        Decision {
            seq: 0,
            time_unix_ms: 0,
            service: "arm".into(),
            kind,
            method: "GET".into(),
            path: "/".into(),
            status: 403,
            principal: principal.into(),
            client_id: String::new(),
            code: String::new(),
            reason: "é".repeat(MAX_REASON),
            fault_id: String::new(),
        }
    }

    #[test]
    fn the_ring_is_bounded_and_filters_apply() {
        let log = DecisionLog::default();
        let (_, mut rx) = log.follow(&Query::default());
        log.record(d(Kind::Throttled, "first"));
        assert_eq!(
            rx.try_recv().unwrap().seq,
            1,
            "followers get each new entry"
        );
        for i in 0..LOG_CAPACITY + 10 {
            log.record(d(
                if i % 2 == 0 {
                    Kind::Denied
                } else {
                    Kind::Fault
                },
                "P",
            ));
        }
        let all = log.list(&Query::default());
        assert_eq!(all.len(), LOG_CAPACITY);
        assert_eq!(all[0].seq, 12, "the oldest went first");
        assert!(all[0].reason.len() <= MAX_REASON);
        let denied = Query {
            denied_only: true,
            principal: Some("p".into()),
            ..Default::default()
        };
        assert_eq!(log.list(&denied).len(), LOG_CAPACITY / 2);
        let other = Query {
            service: Some("imds".into()),
            ..Default::default()
        };
        assert!(log.list(&other).is_empty());
    }
}
