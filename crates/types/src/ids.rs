//! Injected GUID generation: `IdGen`, random in production (`RandomIds`), sequential in tests
//! (`SeqIds`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Generates GUIDs (principal ids, client ids, VM ids, key ids, operation ids).
/// Injected so tests can make them predictable.
pub trait IdGen: Send + Sync + std::fmt::Debug {
    /// A new GUID in lower-case hyphenated form.
    fn guid(&self) -> String;

    /// A new id of 32 lower-case hex digits (Key Vault secret versions).
    fn hex32(&self) -> String {
        self.guid().replace('-', "")
    }
}

/// A generator shared between services.
pub type SharedIds = Arc<dyn IdGen>;

/// Random v4 GUIDs.
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomIds;

impl IdGen for RandomIds {
    fn guid(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

/// Sequential GUIDs `00000000-0000-4000-8000-{prefix:04x}{n:08x}`, for deterministic tests.
#[derive(Debug)]
pub struct SeqIds {
    prefix: u16,
    next: AtomicU64,
}

impl SeqIds {
    /// A generator whose ids carry `prefix`, so two generators never collide.
    pub fn new(prefix: u16) -> Self {
        Self {
            prefix,
            next: AtomicU64::new(1),
        }
    }
}

impl IdGen for SeqIds {
    fn guid(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("00000000-0000-4000-8000-{:04x}{:08x}", self.prefix, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_ids_are_valid_distinct_guids() {
        let g = SeqIds::new(7);
        let a = g.guid();
        let b = g.guid();
        assert_ne!(a, b);
        assert_eq!(a, "00000000-0000-4000-8000-000700000001");
        assert!(uuid::Uuid::parse_str(&b).is_ok());
        assert_eq!(g.hex32().len(), 32);
    }
}
