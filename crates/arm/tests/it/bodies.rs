//! Property test (issue #10): random JSON bodies for the PUTs of VMs,
//! user-assigned identities, role assignments and role definitions, through
//! the HTTP router. Never a panic, never a 5xx, and every refusal has ARM's
//! `{"error":{"code","message"}}` shape. Bounded case count, printed.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::*;

const CASES: u32 = 128;

/// JSON built from the words these bodies use, so cases reach the parsers'
/// branches rather than failing at the first key.
fn body() -> impl Strategy<Value = Value> {
    let word = prop::sample::select(vec![
        "SystemAssigned",
        "UserAssigned",
        "SystemAssigned, UserAssigned",
        "None",
        "eastus",
        "CustomRole",
        "*",
        "*/read",
        "x/*/*/y",
        "Microsoft.Compute/virtualMachines/*",
        "/",
        "/subscriptions/11111111-1111-4111-8111-111111111111",
        "/subscriptions/11111111-1111-4111-8111-111111111111/resourceGroups/rg1",
        "/subscriptions/11111111-1111-4111-8111-111111111111/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7",
        "33333333-3333-4333-8333-333333333333",
        "",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        word.prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    let key = prop::sample::select(vec![
        "properties",
        "identity",
        "type",
        "userAssignedIdentities",
        "location",
        "principalId",
        "principalType",
        "roleDefinitionId",
        "roleName",
        "permissions",
        "actions",
        "notActions",
        "dataActions",
        "assignableScopes",
        "hardwareProfile",
        "tags",
        "x",
    ]);
    let tree = leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..5).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    });
    prop_oneof![
        tree.clone(),
        (tree.clone(), tree)
            .prop_map(|(p, i)| json!({"location": "eastus", "properties": p, "identity": i})),
    ]
}

#[test]
fn random_put_bodies_get_arm_errors_never_panics() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let h = rt.block_on(async {
        let h = harness().await;
        h.rg("rg1").await;
        h
    });
    let rg1 = rg_path("rg1");
    let paths = [
        vm_path("rg1", "vm1"),
        uami_path("rg1", "id1"),
        format!(
            "{rg1}/providers/Microsoft.Authorization/roleAssignments/aaaaaaaa-0000-4000-8000-000000000001"
        ),
        format!(
            "{rg1}/providers/Microsoft.Authorization/roleDefinitions/6f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
        ),
    ];
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::with_cases(CASES)
    });
    runner
        .run(&body(), |b| {
            for path in &paths {
                let (s, v) = rt.block_on(h.call("PUT", path, Some(b.clone())));
                prop_assert!(s.as_u16() < 500, "{path} {b}: {s} {v}");
                if !s.is_success() {
                    prop_assert!(v["error"]["code"].is_string(), "{path} {b}: {v}");
                    prop_assert!(v["error"]["message"].is_string(), "{path} {b}: {v}");
                }
            }
            Ok(())
        })
        .unwrap();
    eprintln!("ARM PUT bodies: {CASES} cases x {} paths", paths.len());
}
