//! Custom role definitions: CRUD, `$filter=roleName eq`, use in assignments,
//! the same evaluation as built-ins, and the explanation `CheckAccess` returns.

use http::StatusCode;
use misim_proto::arm::v1::CheckAccessRequest;
use serde_json::json;

use super::*;

const CUSTOM: &str = "6f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
const USER: &str = "44444444-4444-4444-8444-444444444444";

fn def_path(scope: &str, guid: &str) -> String {
    format!("{scope}/providers/Microsoft.Authorization/roleDefinitions/{guid}")
}

/// A custom role body: `name`, assignable at `scopes`, with `actions`.
fn role(name: &str, scopes: &[&str], actions: &[&str]) -> Value {
    json!({"properties": {"roleName": name, "assignableScopes": scopes,
        "permissions": [{"actions": actions}]}})
}

fn custom_body(scope: &str) -> Value {
    json!({"properties": {"roleName": "VM Starter", "type": "CustomRole",
        "description": "Reads and writes VMs, never deletes them.",
        "assignableScopes": [scope],
        "permissions": [{"actions": ["Microsoft.Compute/virtualMachines/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read"],
            "notActions": ["Microsoft.Compute/virtualMachines/delete"],
            "dataActions": [], "notDataActions": []}]}})
}

#[tokio::test]
async fn custom_role_lifecycle_and_evaluation() {
    let h = harness().await;
    h.rg("rg1").await;
    h.rg("rg2").await;
    h.principal(USER);
    let sub = format!("/subscriptions/{SUB}");
    let rg1 = rg_path("rg1");

    // Writing a role definition is Microsoft.Authorization/roleDefinitions/write.
    let (s, v) = h
        .call_as(
            USER,
            "PUT",
            &def_path(&sub, CUSTOM),
            Some(custom_body(&rg1)),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Microsoft.Authorization/roleDefinitions/write"),
        "{v}"
    );

    let (s, v) = h
        .call("PUT", &def_path(&sub, CUSTOM), Some(custom_body(&rg1)))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["properties"]["type"], "CustomRole");
    assert_eq!(v["name"], CUSTOM);
    let (s, _) = h
        .call("PUT", &def_path(&sub, CUSTOM), Some(custom_body(&rg1)))
        .await;
    assert_eq!(s, StatusCode::OK, "an update");

    // Listed by name (case-insensitive), readable by GUID.
    let (s, v) = h
        .call(
            "GET",
            &format!("{rg1}/providers/Microsoft.Authorization/roleDefinitions?$filter=roleName%20eq%20'vm%20starter'"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["value"].as_array().unwrap().len(), 1, "{v}");
    let (s, v) = h.call("GET", &def_path(&sub, CUSTOM), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["properties"]["roleName"], "VM Starter");
    // Not visible where it cannot be assigned.
    let (_, v) = h
        .call(
            "GET",
            &format!("{}/providers/Microsoft.Authorization/roleDefinitions?$filter=roleName%20eq%20'VM%20Starter'", rg_path("rg2")),
            None,
        )
        .await;
    assert_eq!(v["value"].as_array().unwrap().len(), 0, "{v}");

    // Bad definitions.
    for (guid, body, code) in [
        ("not-a-guid", custom_body(&rg1), "InvalidParameter"),
        (OWNER, custom_body(&rg1), "InvalidParameter"),
        (
            "7f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
            role("Reader", &[&rg1], &[]),
            "RoleDefinitionWithSameNameExists",
        ),
        (
            "7f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
            json!({"properties": {"roleName": "No scopes", "permissions": []}}),
            "InvalidParameter",
        ),
        (
            "7f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
            json!({"properties": {"assignableScopes": [rg1]}}),
            "InvalidRequestContent",
        ),
    ] {
        let (s, v) = h.call("PUT", &def_path(&sub, guid), Some(body)).await;
        assert!(s.is_client_error(), "{guid}: {s} {v}");
        assert_eq!(v["error"]["code"], code, "{guid}: {v}");
    }

    // Usable in assignments, with the same evaluation as built-ins.
    h.assign(USER, CUSTOM, &rg1).await;
    let (s, v) = h
        .call_as(
            USER,
            "PUT",
            &vm_path("rg1", "vm1"),
            Some(vm_body(json!({"type": "SystemAssigned"}))),
        )
        .await;
    assert!(s.is_success(), "{v}");
    let (s, _) = h.call_as(USER, "GET", &rg1, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h
        .call_as(USER, "DELETE", &vm_path("rg1", "vm1"), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "notActions: {v}");
    let (s, _) = h
        .call_as(
            USER,
            "PUT",
            &vm_path("rg2", "vm1"),
            Some(vm_body(json!({"type": "None"}))),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "scope");

    // The explanation names every assignment considered and what it did.
    let url = serve_arm_grpc(&h.arm).await;
    let mut authz = AuthorizationClient::new(channel_as(Caller::KeyVault, &url));
    let d = authz
        .check_access(CheckAccessRequest {
            principal_id: USER.into(),
            action: "Microsoft.Compute/virtualMachines/delete".into(),
            scope: vm_path("rg1", "vm1"),
            data_action: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!d.allowed);
    assert!(
        d.reason.contains("'VM Starter'") && d.reason.contains("excluded by notActions"),
        "{}",
        d.reason
    );

    // A role in use cannot be deleted; once unassigned it can.
    let (s, v) = h.call("DELETE", &def_path(&sub, CUSTOM), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "RoleDefinitionHasAssignments");
    let (_, list) = h
        .call(
            "GET",
            &format!("{rg1}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId%20eq%20'{USER}'"),
            None,
        )
        .await;
    let id = list["value"][0]["id"].as_str().unwrap().to_owned();
    let (s, _) = h.call("DELETE", &id, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h.call("DELETE", &def_path(&sub, CUSTOM), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = h.call("DELETE", &def_path(&sub, CUSTOM), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h.call("GET", &def_path(&sub, CUSTOM), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.call("DELETE", &def_path(&sub, OWNER), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "built-ins stay");
}

/// A custom role is assignable only within its `assignableScopes`, may not
/// name "/", and making it assignable somewhere is a write there.
#[tokio::test]
async fn assignable_scopes_bound_custom_roles() {
    let h = harness().await;
    h.rg("rg1").await;
    h.rg("rg2").await;
    h.principal(USER);
    let sub = format!("/subscriptions/{SUB}");
    let (rg1, rg2) = (rg_path("rg1"), rg_path("rg2"));
    let (s, v) = h
        .call("PUT", &def_path(&sub, CUSTOM), Some(custom_body(&rg1)))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    let assignment = |scope: &str, name: &str| {
        (
            format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"),
            json!({"properties": {"roleDefinitionId": format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/{CUSTOM}"),
                "principalId": USER, "principalType": "ServicePrincipal"}}),
        )
    };
    // Outside: another group, and the subscription above the assignable scope.
    for scope in [rg2.as_str(), sub.as_str()] {
        let (path, body) = assignment(scope, "a1b2c3d4-0000-4000-8000-000000000001");
        let (s, v) = h.call("PUT", &path, Some(body)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{scope}: {v}");
        assert_eq!(v["error"]["code"], "ScopeDoesNotMatchRoleDefinition", "{v}");
        assert_eq!(
            v["error"]["message"],
            "The role VM Starter is not available for assignment at the requested scope."
        );
    }
    // Inside: the group itself.
    let (path, body) = assignment(&rg1, "a1b2c3d4-0000-4000-8000-000000000002");
    let (s, v) = h.call("PUT", &path, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // "/" is for built-ins only.
    let other = "7f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
    let (s, v) = h
        .call(
            "PUT",
            &def_path(&sub, other),
            Some(role("Everywhere", &["/"], &[])),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "InvalidParameter");

    // An owner of rg1 alone may define a role for rg1, not one for rg2 too.
    h.assign(USER, OWNER, &rg1).await;
    let both = role("Two groups", &[&rg1, &rg2], &[]);
    let (s, v) = h
        .call_as(USER, "PUT", &def_path(&rg1, other), Some(both))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(&rg2),
        "{v}"
    );
    let one = role("One group", &[&rg1], &[]);
    let (s, v) = h
        .call_as(USER, "PUT", &def_path(&rg1, other), Some(one))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // ...and may not rewrite or delete a role assignable beyond rg1: that would
    // change what its assignments grant elsewhere.
    let wide = "8f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
    let (s, v) = h
        .call(
            "PUT",
            &def_path(&sub, wide),
            Some(role("Wide", &[&sub], &[])),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = h
        .call_as(
            USER,
            "PUT",
            &def_path(&rg1, wide),
            Some(role("Wide", &[&rg1], &["*"])),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("over scope '{sub}'")),
        "{v}"
    );
    let (s, v) = h.call_as(USER, "DELETE", &def_path(&rg1, wide), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // Narrowing a role past one of its assignments is refused; re-creating an
    // assignment that exists stays idempotent.
    let (path, body) = assignment(&rg1, "a1b2c3d4-0000-4000-8000-000000000002");
    let (s, _) = h.call("PUT", &path, Some(body)).await;
    assert_eq!(s, StatusCode::OK);
    let mut narrowed = custom_body(&rg2);
    narrowed["properties"]["roleName"] = json!("VM Starter");
    let (s, v) = h.call("PUT", &def_path(&sub, CUSTOM), Some(narrowed)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("outside the new assignable scopes"),
        "{v}"
    );
}

/// A NIC that joins a subnet, NSG or public IP needs each one's `join/action`
/// (a linked authorization): a role that may write NICs but join nothing is
/// refused with every refused link named; Virtual Machine Contributor, which
/// lists the join actions, is not.
#[tokio::test]
async fn nics_need_the_join_actions_of_what_they_join() {
    let h = harness().await;
    h.rg("rg1").await;
    h.principal(USER);
    let sub = format!("/subscriptions/{SUB}");
    let rg1 = rg_path("rg1");
    let net = |t: &str, n: &str| format!("{rg1}/providers/Microsoft.Network/{t}/{n}");
    for (path, body) in [
        (
            net("virtualNetworks", "vnet1"),
            json!({"location": "eastus", "properties": {
            "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
            "subnets": [{"name": "s1", "properties": {"addressPrefix": "10.0.0.0/24"}}]}}),
        ),
        (
            net("networkSecurityGroups", "nsg1"),
            json!({"location": "eastus", "properties": {}}),
        ),
        (
            net("publicIPAddresses", "pip1"),
            json!({"location": "eastus", "properties": {}}),
        ),
    ] {
        let (s, v) = h.call("PUT", &path, Some(body)).await;
        assert!(s.is_success(), "{path}: {v}");
    }
    let nic_writer = "5e1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
    let (s, v) = h
        .call(
            "PUT",
            &def_path(&sub, nic_writer),
            Some(role(
                "NIC writer",
                &[&rg1],
                &["Microsoft.Network/networkInterfaces/*"],
            )),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    h.assign(USER, nic_writer, &rg1).await;

    let subnet = format!("{}/subnets/s1", net("virtualNetworks", "vnet1"));
    let nic = net("networkInterfaces", "nic1");
    let body = json!({"location": "eastus", "properties": {
        "networkSecurityGroup": {"id": net("networkSecurityGroups", "nsg1")},
        "ipConfigurations": [{"name": "ipconfig1", "properties": {
            "subnet": {"id": subnet}, "publicIPAddress": {"id": net("publicIPAddresses", "pip1")}}}]}});
    let (s, v) = h.call_as(USER, "PUT", &nic, Some(body.clone())).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "LinkedAuthorizationFailed", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    for (action, scope) in [
        (
            "Microsoft.Network/virtualNetworks/subnets/join/action",
            subnet.clone(),
        ),
        (
            "Microsoft.Network/publicIPAddresses/join/action",
            net("publicIPAddresses", "pip1"),
        ),
        (
            "Microsoft.Network/networkSecurityGroups/join/action",
            net("networkSecurityGroups", "nsg1"),
        ),
    ] {
        assert!(
            msg.contains(action) && msg.contains(&scope),
            "{action} {scope}: {msg}"
        );
    }
    assert!(
        msg.to_ascii_lowercase().contains(
            &format!("'Microsoft.Network/networkInterfaces/write' on scope '{nic}'")
                .to_ascii_lowercase()
        ),
        "{msg}"
    );
    let (s, _) = h.call("GET", &nic, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing written");

    h.assign(USER, VM_CONTRIBUTOR, &rg1).await;
    let (s, v) = h.call_as(USER, "PUT", &nic, Some(body)).await;
    assert!(s.is_success(), "{v}");
}

const ROLE_2: &str = "7a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d";

#[tokio::test]
async fn an_action_of_200000_wildcards_is_refused_at_write() {
    let h = harness().await;
    h.rg("rg1").await;
    h.principal(USER);
    let rg1 = rg_path("rg1");
    h.assign(USER, OWNER, &rg1).await;
    let stars = "*".repeat(200_000);
    let (s, v) = h
        .call_as(
            USER,
            "PUT",
            &def_path(&rg1, CUSTOM),
            Some(role("Stars", &[&rg1], &[&stars])),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "InvalidActionOrNotAction");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.ends_with("is 200000 characters long; an action may have at most 512."),
        "{msg}"
    );
    assert!(msg.len() < 200, "the message does not echo the pattern");
    // Nothing stored; the writer's next authorization works.
    let (s, _) = h.call("GET", &def_path(&rg1, CUSTOM), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = h.call_as(USER, "GET", &rg1, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn nested_wildcard_actions_are_refused_at_write() {
    let h = harness().await;
    h.rg("rg1").await;
    h.principal(USER);
    let rg1 = rg_path("rg1");
    h.assign(USER, OWNER, &rg1).await;
    // 26 s to match at 11 repeats with the recursive matcher.
    let nested = format!("x{}/y", "/*".repeat(11));
    let (s, v) = h
        .call_as(
            USER,
            "PUT",
            &def_path(&rg1, ROLE_2),
            Some(
                json!({"properties": {"roleName": "Nested", "assignableScopes": [rg1],
                "permissions": [{"actions": ["Microsoft.Compute/virtualMachines/read"],
                    "notDataActions": [nested]}]}}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "InvalidActionOrNotAction");
    assert_eq!(
        v["error"]["message"],
        format!("'{nested}' contains multiple wildcards. Only one is allowed.")
    );
    let (s, v) = h.call_as(USER, "GET", &rg1, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}
