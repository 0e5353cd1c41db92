//! A bounded glob matcher for fault rules' `--path`: `*` matches any run of
//! characters (including `/`), `?` exactly one; everything else matches
//! itself, ASCII case-insensitively (ARM paths are case-insensitive, and
//! nobody means case when they write a path filter).
//!
//! Matching never backtracks across stars: the pattern is split at its stars
//! into literal segments; the first must match at the start, the last at the
//! end, and each middle one is found leftmost after the previous (leftmost is
//! always right when only stars separate segments). That is O(path × segment)
//! per segment, so a rule's cost is linear in the path for its (bounded)
//! pattern; no input can make it exponential.

use crate::ChaosError;

/// The longest pattern a rule may carry.
pub const MAX_PATTERN: usize = 256;

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    /// The literal runs between stars (may be empty), lower-cased.
    segments: Vec<Vec<u8>>,
    /// Whether the pattern has at least one star.
    starred: bool,
}

impl Glob {
    /// Compiles `pattern`; refuses one over [`MAX_PATTERN`] bytes.
    pub(crate) fn new(pattern: &str) -> Result<Self, ChaosError> {
        if pattern.len() > MAX_PATTERN {
            return Err(ChaosError::invalid(format!(
                "the path glob is {} bytes; at most {MAX_PATTERN} are allowed",
                pattern.len()
            )));
        }
        let lower = pattern.to_ascii_lowercase();
        let segments: Vec<Vec<u8>> = lower.split('*').map(|s| s.as_bytes().to_vec()).collect();
        Ok(Self {
            starred: segments.len() > 1,
            segments,
        })
    }

    /// True when `path` matches the whole pattern.
    pub(crate) fn matches(&self, path: &str) -> bool {
        let p = path.as_bytes();
        if !self.starred {
            return seg_eq(&self.segments[0], p);
        }
        let (first, rest) = self
            .segments
            .split_first()
            .expect("split gives one segment");
        let (last, middle) = rest.split_last().expect("starred: two segments at least");
        if p.len() < first.len() + last.len() || !seg_eq(first, &p[..first.len()]) {
            return false;
        }
        let end = p.len() - last.len();
        if !seg_eq(last, &p[end..]) {
            return false;
        }
        // The middle segments, leftmost, within what the first and last leave.
        let mut at = first.len();
        for seg in middle {
            match find(seg, &p[at..end]) {
                Some(i) => at += i + seg.len(),
                None => return false,
            }
        }
        true
    }
}

/// `seg` against `text` of the same length: `?` is any one byte.
fn seg_eq(seg: &[u8], text: &[u8]) -> bool {
    seg.len() == text.len()
        && seg
            .iter()
            .zip(text)
            .all(|(s, t)| *s == b'?' || *s == t.to_ascii_lowercase())
}

/// The leftmost offset in `text` where `seg` matches.
fn find(seg: &[u8], text: &[u8]) -> Option<usize> {
    if seg.len() > text.len() {
        return None;
    }
    (0..=text.len() - seg.len()).find(|&i| seg_eq(seg, &text[i..i + seg.len()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p).unwrap().matches(s)
    }

    #[test]
    fn literals_stars_and_question_marks() {
        assert!(m(
            "/metadata/identity/oauth2/token",
            "/metadata/identity/oauth2/token"
        ));
        assert!(m("/METADATA/*", "/metadata/identity/oauth2/token"));
        assert!(!m("/metadata", "/metadata/identity"));
        assert!(m("*", ""));
        assert!(m("", ""));
        assert!(!m("", "/"));
        assert!(m(
            "*/roleAssignments/*",
            "/subscriptions/s/providers/Microsoft.Authorization/roleassignments/x"
        ));
        assert!(!m(
            "*/roleAssignments/*",
            "/subscriptions/s/resourceGroups/rg"
        ));
        assert!(m("/a?c", "/abc"));
        assert!(!m("/a?c", "/ac"));
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxcyyb"));
        assert!(m("*token", "/oauth2/v2.0/token"));
        // The last segment must not overlap the first.
        assert!(!m("ab*ba", "aba"));
        // Non-ASCII paths are compared bytewise, never a panic.
        assert!(m("/é*", "/é/x"));
        assert!(!m("/?", "/é"));
    }

    #[test]
    fn hostile_patterns_stay_fast_and_long_ones_are_refused() {
        let p = "*a".repeat(100);
        let s = "a".repeat(10_000) + "b";
        // Leftmost-segment matching: one pass per segment, no blow-up.
        assert!(!m(&p, &s));
        assert!(Glob::new(&"*".repeat(MAX_PATTERN + 1)).is_err());
    }
}
