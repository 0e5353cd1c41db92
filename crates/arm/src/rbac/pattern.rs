//! Action patterns of role definitions: matching an action against one, and
//! the limits a custom role's patterns must meet when written.
//!
//! Matching simulates the pattern as an automaton over its positions, one
//! pass per character of the action: no recursion and no backtracking, so it
//! takes at most (pattern length) × (action length) steps whatever the pattern.
//! A stored role once crashed ARM with 200,000 `*` in one action (the
//! recursive matcher overflowed the stack), and `x/*/*/…` took 26 s to match
//! at 11 repeats; patterns stored before the write limits existed stay safe
//! to evaluate.

/// Longest pattern a custom role may hold. Azure's operation names are well
/// under 200 characters.
pub const MAX_PATTERN_CHARS: usize = 512;

/// Wildcards in one pattern. Azure refuses more than one ("contains multiple
/// wildcards. Only one is allowed.", `InvalidActionOrNotAction`, as quoted in
/// https://github.com/MicrosoftDocs/azure-docs/issues/74428); every built-in
/// role's pattern has at most one.
pub const MAX_WILDCARDS: usize = 1;

/// Patterns in one role definition (all lists of all blocks together), and
/// permission blocks in one.
pub const MAX_PATTERNS: usize = 2_000;
/// See [`MAX_PATTERNS`].
pub const MAX_BLOCKS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(u8),
    Star,
}

/// Matches an action against a permission pattern, case-insensitively.
/// `*` matches any run of characters; `/*/` also matches a single `/`, so
/// `Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action` covers
/// `Microsoft.ManagedIdentity/userAssignedIdentities/assign/action`.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    if !pattern.contains('*') {
        return pattern.eq_ignore_ascii_case(action);
    }
    let p = pattern.as_bytes();
    // Runs of `*` are one star. `skip[i]` marks a `/` followed by a single
    // `*` and another `/`: from before it, the automaton may jump past the
    // `/*` (the `/*/` → `/` reading).
    let mut toks = Vec::with_capacity(p.len());
    let mut skip = Vec::with_capacity(p.len());
    for (j, &b) in p.iter().enumerate() {
        if b == b'*' {
            if j > 0 && p[j - 1] == b'*' {
                continue;
            }
            if j > 0
                && p[j - 1] == b'/'
                && p.get(j + 1) == Some(&b'/')
                && let Some(s) = skip.last_mut()
            {
                *s = true;
            }
            toks.push(Tok::Star);
        } else {
            toks.push(Tok::Lit(b.to_ascii_lowercase()));
        }
        skip.push(false);
    }
    let n = toks.len();
    // `live[i]`: the action read so far can end just before token `i`.
    let close = |live: &mut [bool]| {
        for i in 0..n {
            if live[i] {
                if toks[i] == Tok::Star {
                    live[i + 1] = true;
                }
                if skip[i] {
                    live[i + 2] = true;
                }
            }
        }
    };
    let mut live = vec![false; n + 1];
    let mut next = vec![false; n + 1];
    live[0] = true;
    close(&mut live);
    for &c in action.as_bytes() {
        let c = c.to_ascii_lowercase();
        next.fill(false);
        let mut any = false;
        for i in 0..n {
            if !live[i] {
                continue;
            }
            match toks[i] {
                Tok::Star => next[i] = true,
                Tok::Lit(b) if b == c => next[i + 1] = true,
                Tok::Lit(_) => continue,
            }
            any = true;
        }
        if !any {
            return false;
        }
        close(&mut next);
        std::mem::swap(&mut live, &mut next);
    }
    live[n]
}

/// A pattern for an error message: never the whole of a long one.
fn shown(pattern: &str) -> String {
    const MAX: usize = 80;
    match pattern.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &pattern[..at]),
        None => pattern.to_owned(),
    }
}

/// Checks one pattern a custom role would store; the message is for
/// `InvalidActionOrNotAction`.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    if pattern.trim().is_empty() {
        return Err("An action or data action of the role definition is empty.".into());
    }
    let chars = pattern.chars().count();
    if chars > MAX_PATTERN_CHARS {
        return Err(format!(
            "'{}' is {chars} characters long; an action may have at most {MAX_PATTERN_CHARS}.",
            shown(pattern)
        ));
    }
    if pattern.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "'{}' contains invalid character(s).",
            shown(pattern)
        ));
    }
    if pattern.matches('*').count() > MAX_WILDCARDS {
        return Err(format!(
            "'{}' contains multiple wildcards. Only one is allowed.",
            shown(pattern)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pathological_patterns_match_quickly_without_recursion() {
        // Each would overflow the stack or run for minutes with the
        // recursive matcher; no timing assertion, the test would hang.
        let stars = "*".repeat(200_000);
        assert!(action_matches(
            &stars,
            "Microsoft.Compute/virtualMachines/write"
        ));
        let slashes = format!("x{}", "/*".repeat(20_000));
        assert!(!action_matches(&slashes, &format!("y{}", "/".repeat(50))));
        assert!(action_matches(&slashes, &format!("x{}y", "/".repeat(50))));
        assert!(action_matches(&slashes, "x/a/b/c"));
        let nested = format!("x{}/y", "/*".repeat(11));
        assert!(!action_matches(&nested, &format!("x{}z", "/a".repeat(30))));
        assert!(action_matches(&nested, "x/y"));
    }

    #[test]
    fn a_role_stored_before_the_limits_still_evaluates() {
        use crate::rbac::{AccessRequest, AssignmentView, Permission, RoleDefinition, evaluate};
        use misim_types::ResourceId;
        let role = RoleDefinition {
            name: "6f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0".into(),
            role_name: "Old".into(),
            description: String::new(),
            assignable_scopes: vec!["/subscriptions/s1".into()],
            permissions: vec![Permission {
                actions: vec![format!("x{}/y", "/*".repeat(5_000)), "*".repeat(200_000)],
                not_actions: vec![format!("Microsoft.Compute{}", "/*".repeat(5_000))],
                ..Default::default()
            }],
            custom: true,
        };
        let scope = ResourceId::parse("/subscriptions/s1").unwrap();
        let assignments = [AssignmentView {
            id: "a",
            principal_id: "p",
            scope: scope.clone(),
            role: &role,
        }];
        let ask = |action| AccessRequest {
            principal_id: "p",
            action,
            scope: &scope,
            data: false,
        };
        assert!(evaluate(&ask("Microsoft.Network/virtualNetworks/read"), &assignments).allowed);
        assert!(!evaluate(&ask("Microsoft.Compute/virtualMachines/read"), &assignments).allowed);
    }

    #[test]
    fn write_limits() {
        assert!(validate_pattern("Microsoft.Compute/virtualMachines/*").is_ok());
        assert!(validate_pattern("*").is_ok());
        let e = validate_pattern(&"*".repeat(200_000)).unwrap_err();
        assert!(e.ends_with("an action may have at most 512."), "{e}");
        assert!(e.len() < 200, "{e}");
        let e = validate_pattern("x/*/*/y").unwrap_err();
        assert_eq!(
            e,
            "'x/*/*/y' contains multiple wildcards. Only one is allowed."
        );
        assert!(validate_pattern("").is_err());
        assert!(validate_pattern("Microsoft.Compute/ virtualMachines/read").is_err());
    }

    /// The recursive matcher this module replaced: exponential, but the
    /// definition of what a pattern means.
    fn reference(p: &str, a: &str) -> bool {
        fn glob(p: &[u8], a: &[u8]) -> bool {
            match p.split_first() {
                None => a.is_empty(),
                Some((b'*', rest)) => (0..=a.len()).any(|i| glob(rest, &a[i..])),
                Some((c, rest)) => a.first() == Some(c) && glob(rest, &a[1..]),
            }
        }
        fn collapsed(p: &str, a: &str) -> bool {
            if glob(p.as_bytes(), a.as_bytes()) {
                return true;
            }
            let mut start = 0;
            while let Some(pos) = p[start..].find("/*/") {
                let at = start + pos;
                if collapsed(&format!("{}{}", &p[..at], &p[at + 2..]), a) {
                    return true;
                }
                start = at + 1;
            }
            false
        }
        collapsed(&p.to_ascii_lowercase(), &a.to_ascii_lowercase())
    }

    const CASES: u32 = 512;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(CASES))]

        #[test]
        fn agrees_with_the_reference_on_small_inputs(
            p in "[aB/*]{0,9}",
            a in "[Ab/]{0,9}",
        ) {
            proptest::prop_assert_eq!(action_matches(&p, &a), reference(&p, &a), "{} vs {}", p, a);
        }

        #[test]
        fn never_panics_on_any_text(p in "\\PC{0,64}", a in "\\PC{0,64}") {
            let _ = action_matches(&p, &a);
            let _ = validate_pattern(&p);
        }
    }

    #[test]
    fn property_case_counts() {
        // proptest runs each property above CASES times.
        eprintln!("rbac::pattern properties: 2 x {CASES} cases");
    }

    #[test]
    fn every_builtin_pattern_is_accepted_at_write() {
        let mut n = 0;
        for r in crate::rbac::builtin_roles() {
            crate::rbac::validate_permissions(&r.permissions)
                .unwrap_or_else(|e| panic!("{}: {e}", r.role_name));
            for p in &r.permissions {
                n += p.actions.len()
                    + p.not_actions.len()
                    + p.data_actions.len()
                    + p.not_data_actions.len();
            }
        }
        eprintln!("{n} built-in patterns accepted");
        assert!(n > 50);
    }
}
