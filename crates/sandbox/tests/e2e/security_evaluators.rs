//! Issue #10, items 3 and 4: ARM's evaluators (templates, role action
//! patterns) have budgets. Each attack comes from a low-privileged principal
//! through public HTTPS; each must be refused with Azure's error, and the
//! sandbox (ARM and the Entra token endpoint in the same process) must still
//! answer afterwards.

use serde_json::{Map, Value, json};

use crate::harness::{self, Principal, World};

/// A principal holding only Key Vault Reader on `rg` (a role that, like
/// several, includes `Microsoft.Resources/deployments/*`).
async fn key_vault_reader(w: &World, rg: &str) -> Principal {
    w.create_rg(rg).await;
    w.principal("kv-reader", &[("Key Vault Reader", &w.rg_id(rg))])
        .await
}

/// A template whose one resource is named by the variable `top`.
fn template(vars: Map<String, Value>, top: &str) -> Value {
    json!({"properties": {"mode": "Incremental", "template": {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "variables": vars,
        "resources": [{"type": "Microsoft.ManagedIdentity/userAssignedIdentities",
            "apiVersion": "2023-01-31", "name": format!("[variables('{top}')]"),
            "location": "eastus"}],
    }}})
}

/// `v0 = [variables('v1')]`, …: `n` variables, each naming the next.
fn chain(n: usize) -> Value {
    let mut vars = Map::new();
    for i in 0..n - 1 {
        vars.insert(format!("v{i}"), json!(format!("[variables('v{}')]", i + 1)));
    }
    vars.insert(format!("v{}", n - 1), json!("end"));
    template(vars, "v0")
}

fn deployment(w: &World, rg: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Resources/deployments/{name}",
        w.rg_id(rg)
    )
}

fn role_path(w: &World, rg: &str, guid: &str) -> String {
    format!(
        "{}/providers/Microsoft.Authorization/roleDefinitions/{guid}",
        w.rg_id(rg)
    )
}

/// ARM and Entra still answer: a fresh token for `p`, and an ARM read.
async fn still_serving(w: &World, p: &Principal, rg: &str) {
    let token = w
        .token_for(
            &p.client_id,
            &p.secret,
            "https://management.azure.com/.default",
        )
        .await;
    let (s, v) = w
        .arm("GET", &deployment(w, rg, "absent"), &token, None)
        .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"]["code"], "ResourceNotFound", "{v}");
    let (s, v) = w.admin("GET", &w.rg_id(rg), None).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_variable_chain_is_an_invalid_template_not_a_crash() {
    let w = harness::start().await;
    let p = key_vault_reader(&w, "rg1").await;
    // As reported: 2,000 links, beyond ARM's 512 variables.
    let (s, v) = w
        .arm(
            "PUT",
            &deployment(&w, "rg1", "chain"),
            &p.arm_token,
            Some(chain(2000)),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "InvalidTemplate");
    assert_eq!(
        v["error"]["message"],
        "Deployment template validation failed: 'The number of template variables limit exceeded. Limit: '512' and actual: '2000'. Please see https://aka.ms/arm-template/#variables for usage details.'."
    );
    // Within the variable limit, the nesting budget refuses it.
    let (s, v) = w
        .arm(
            "PUT",
            &deployment(&w, "rg1", "chain"),
            &p.arm_token,
            Some(chain(500)),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "InvalidTemplate");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Deployment template validation failed: 'The template evaluation nests deeper than 256 levels"),
        "{v}"
    );
    still_serving(&w, &p, "rg1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doubling_a_value_is_an_invalid_template_before_it_grows() {
    let w = harness::start().await;
    let p = key_vault_reader(&w, "rg1").await;
    let mut vars = Map::new();
    vars.insert("d0".into(), json!("x".repeat(1024)));
    for i in 1..=20 {
        vars.insert(
            format!("d{i}"),
            json!(format!(
                "[concat(variables('d{p}'), variables('d{p}'))]",
                p = i - 1
            )),
        );
    }
    let (s, v) = w
        .arm(
            "PUT",
            &deployment(&w, "rg1", "double"),
            &p.arm_token,
            Some(template(vars, "d20")),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "InvalidTemplate");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("produces a value larger than 4194304 bytes"),
        "{v}"
    );
    still_serving(&w, &p, "rg1").await;
}

/// An Owner of one group writes a custom role with `action`.
async fn owner_writes_role(w: &World, action: &str) -> (Principal, u16, Value) {
    w.create_rg("rg1").await;
    let p = w
        .principal("group-owner", &[("Owner", &w.rg_id("rg1"))])
        .await;
    let body = json!({"properties": {"roleName": "Hostile", "type": "CustomRole",
        "assignableScopes": [w.rg_id("rg1")],
        "permissions": [{"actions": [action]}]}});
    let (s, v) = w
        .arm(
            "PUT",
            &role_path(w, "rg1", "6f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"),
            &p.arm_token,
            Some(body),
        )
        .await;
    (p, s, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_of_200000_wildcards_is_refused_at_write() {
    let w = harness::start().await;
    let (p, s, v) = owner_writes_role(&w, &"*".repeat(200_000)).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "InvalidActionOrNotAction");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("is 200000 characters long; an action may have at most 512."),
        "{v}"
    );
    // The Owner's own next authorization evaluates normally.
    let (s, v) = w.arm("GET", &w.rg_id("rg1"), &p.arm_token, None).await;
    assert_eq!(s, 200, "{v}");
    still_serving(&w, &p, "rg1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_wildcard_action_is_refused_at_write() {
    let w = harness::start().await;
    let nested = format!("x{}/y", "/*".repeat(11));
    let (p, s, v) = owner_writes_role(&w, &nested).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "InvalidActionOrNotAction");
    assert_eq!(
        v["error"]["message"],
        format!("'{nested}' contains multiple wildcards. Only one is allowed.")
    );
    let (s, v) = w.arm("GET", &w.rg_id("rg1"), &p.arm_token, None).await;
    assert_eq!(s, 200, "{v}");
    still_serving(&w, &p, "rg1").await;
}
