//! Property tests (issue #10): ARM resource ids parse, print and compare
//! without panicking, whatever the text. Bounded case counts, printed.

use misim_types::ResourceId;
use proptest::prelude::*;

const CASES: u32 = 512;

/// One path segment: ARM names, plus characters that are not.
fn segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._()-]{1,12}"
}

/// Well-formed ids: root, subscription, group, provider resources nested
/// and extension resources.
fn valid_id() -> impl Strategy<Value = String> {
    (
        segment(),
        proptest::option::of(segment()),
        proptest::collection::vec((segment(), segment()), 0..4),
        segment(),
    )
        .prop_map(|(sub, rg, types, ns)| {
            let mut id = format!("/subscriptions/{sub}");
            if let Some(rg) = rg {
                id.push_str(&format!("/resourceGroups/{rg}"));
            }
            if !types.is_empty() {
                id.push_str(&format!("/providers/{ns}"));
                for (t, n) in types {
                    id.push_str(&format!("/{t}/{n}"));
                }
            }
            id
        })
}

fn exercise(id: &ResourceId) {
    let _ = (
        id.subscription(),
        id.resource_group(),
        id.provider_resource(),
        id.resource_type(),
        id.name(),
        id.segment_value("providers"),
        id.key(),
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn valid_ids_round_trip_and_contain_themselves(s in valid_id(), trailing in "/{0,2}") {
        let id = ResourceId::parse(&format!("{s}{trailing}")).unwrap();
        prop_assert_eq!(id.to_string(), s.clone());
        let again = ResourceId::parse(&id.to_string()).unwrap();
        prop_assert_eq!(&again, &id);
        prop_assert_eq!(ResourceId::parse(&s.to_uppercase()).unwrap(), id.clone());
        prop_assert!(id.is_within(&id));
        prop_assert!(id.is_within(&ResourceId::parse("/").unwrap()));
        let child = ResourceId::parse(&format!("{s}/providers/A.B/c/d")).unwrap();
        prop_assert!(child.is_within(&id));
        prop_assert!(!id.is_within(&child));
        exercise(&id);
    }

    #[test]
    fn any_text_parses_or_is_refused_without_panicking(
        a in "(/|[a-zA-Z/]{0,3}|\\PC{0,40}|/subscriptions/[a-z/]{0,30})",
        b in "\\PC{0,40}",
    ) {
        for s in [&a, &b] {
            if let Ok(id) = ResourceId::parse(s) {
                let again = ResourceId::parse(&id.to_string()).unwrap();
                prop_assert_eq!(&again, &id);
                exercise(&id);
            }
        }
        if let (Ok(x), Ok(y)) = (ResourceId::parse(&a), ResourceId::parse(&b)) {
            let _ = (x.is_within(&y), y.is_within(&x));
        }
    }
}

#[test]
fn property_case_counts() {
    eprintln!("resource id properties: 2 x {CASES} cases");
}
