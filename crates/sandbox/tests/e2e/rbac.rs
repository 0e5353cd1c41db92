//! The seed's permission model, table-driven, over real HTTPS: principals are
//! created through Microsoft Graph with the admin token (`misim principal
//! create`), roles are granted through ARM, and each row acts as one principal.

use misim_proto::arm::v1::{CheckAccessRequest, CreateRoleAssignmentRequest};
use misim_proto::entra::v1::CreateApplicationRequest;
use serde_json::{Value, json};

use crate::harness::{KV_SECRETS_USER, Principal, VAULT_AUD, World, start};

const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
const MI_OPERATOR: &str = "f1a07417-d97a-45cb-824c-7a7467783830";
const ASSIGN: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action";
const RA_WRITE: &str = "Microsoft.Authorization/roleAssignments/write";
const CUSTOM_ROLE: &str = "5d2c1a4e-6b7f-4c1d-9e0a-3f8b2c7d6e51";

fn vm_body(identity: Value) -> Value {
    json!({"location": "eastus", "identity": identity, "properties": {
        "hardwareProfile": {"vmSize": "Standard_B1s"},
        "storageProfile": {"imageReference": {"publisher": "Canonical",
            "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts-gen2", "version": "latest"}},
        "osProfile": {"computerName": "vm", "adminUsername": "azureuser"}}})
}

fn with_uami(uami_id: &str) -> Value {
    json!({"type": "UserAssigned", "userAssignedIdentities": {uami_id: {}}})
}

/// One request made as one principal, with the answer expected.
struct Row {
    what: &'static str,
    who: Who,
    method: &'static str,
    path: String,
    body: Option<Value>,
    /// Expected status (200 also accepts 201 for PUTs that create).
    status: u16,
    /// For a 403: the action the message must name (its scope is checked too).
    denied: Option<(&'static str, String)>,
    /// The 403's error code.
    code: &'static str,
}

#[derive(Clone, Copy, Debug)]
enum Who {
    VmContributor,
    Reader,
    Owner,
    Contributor,
    Custom,
}

struct Cast {
    vmc: Principal,
    reader: Principal,
    owner: Principal,
    contributor: Principal,
    custom: Principal,
}

impl Cast {
    fn get(&self, who: Who) -> &Principal {
        match who {
            Who::VmContributor => &self.vmc,
            Who::Reader => &self.reader,
            Who::Owner => &self.owner,
            Who::Contributor => &self.contributor,
            Who::Custom => &self.custom,
        }
    }
}

async fn run(w: &World, cast: &Cast, rows: Vec<Row>) {
    for r in rows {
        let p = cast.get(r.who);
        let (status, body) = w.arm(r.method, &r.path, &p.arm_token, r.body).await;
        let ok = status == r.status || (r.status == 200 && status == 201);
        assert!(
            ok,
            "{} ({:?} {} {}): want {}, got {status} {body}",
            r.what, r.who, r.method, r.path, r.status
        );
        if let Some((action, scope)) = r.denied {
            assert_eq!(body["error"]["code"], r.code, "{}", r.what);
            let msg = body["error"]["message"].as_str().unwrap_or("");
            assert!(
                msg.contains(&p.object_id),
                "{}: names the principal: {msg}",
                r.what
            );
            assert!(
                msg.contains(&format!("'{action}'")),
                "{}: names {action}: {msg}",
                r.what
            );
            assert!(
                msg.to_ascii_lowercase()
                    .contains(&format!("'{}'", scope.to_ascii_lowercase())),
                "{}: names scope {scope}: {msg}",
                r.what
            );
        }
    }
}

fn row(what: &'static str, who: Who, method: &'static str, path: String) -> Row {
    Row {
        what,
        who,
        method,
        path,
        body: None,
        status: 200,
        denied: None,
        code: "AuthorizationFailed",
    }
}

impl Row {
    fn body(mut self, b: Value) -> Self {
        self.body = Some(b);
        self
    }
    fn status(mut self, s: u16) -> Self {
        self.status = s;
        self
    }
    fn denied(mut self, action: &'static str, scope: String) -> Self {
        self.status = 403;
        self.denied = Some((action, scope));
        self
    }
    /// Denied as a linked authorization: the write itself is allowed, an
    /// action on a resource it links (`scope`) is not.
    fn linked(self, action: &'static str, scope: String) -> Self {
        Self {
            code: "LinkedAuthorizationFailed",
            ..self.denied(action, scope)
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_permission_model() {
    let w = start().await;
    for rg in ["rg1", "rg2"] {
        w.create_rg(rg).await;
    }
    let (rg1, rg2) = (w.rg_id("rg1"), w.rg_id("rg2"));
    let sub = format!("/subscriptions/{}", w.sub());
    let (s, u) = w
        .admin(
            "PUT",
            &w.uami_id("rg1", "id1"),
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert!(s == 200 || s == 201, "{u}");
    let uami = w.uami_id("rg1", "id1");
    w.create_vm("rg1", "existing", json!({"type": "None"}))
        .await;

    // A custom role: VM create/update and attaching identities, nothing else.
    let (s, def) = w
        .admin(
            "PUT",
            &format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/{CUSTOM_ROLE}"),
            Some(
                json!({"properties": {"roleName": "VM Identity Operator", "type": "CustomRole",
                "description": "Create VMs and attach identities.",
                "assignableScopes": [rg1],
                "permissions": [{"actions": ["Microsoft.Compute/virtualMachines/*",
                    "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action"],
                    "notActions": ["Microsoft.Compute/virtualMachines/delete"]}]}}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{def}");
    assert_eq!(def["properties"]["type"], "CustomRole");

    let cast = Cast {
        vmc: w
            .principal("vm-contributor", &[("Virtual Machine Contributor", &rg1)])
            .await,
        reader: w.principal("reader", &[("Reader", &rg1)]).await,
        owner: w.principal("owner", &[("Owner", &rg1)]).await,
        contributor: w.principal("contributor", &[("Contributor", &sub)]).await,
        custom: w
            .principal("custom", &[("VM Identity Operator", &rg1)])
            .await,
    };
    let vm = |rg: &str, n: &str| w.vm_id(rg, n);
    let ra = |scope: &str, name: &str| {
        format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}")
    };
    let new_ra = |p: &Principal| {
        json!({"properties": {"principalId": p.object_id,
            "roleDefinitionId": format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/{READER}")}})
    };
    use Who::*;

    // ---- Virtual Machine Contributor only, at rg1.
    run(
        &w,
        &cast,
        vec![
            row(
                "VMC creates a VM with a SAMI",
                VmContributor,
                "PUT",
                vm("rg1", "vm-sami"),
            )
            .body(vm_body(json!({"type": "SystemAssigned"}))),
            row(
                "VMC enables a SAMI on an existing VM",
                VmContributor,
                "PATCH",
                vm("rg1", "existing"),
            )
            .body(json!({"identity": {"type": "SystemAssigned"}})),
            row(
                "VMC reads the VM",
                VmContributor,
                "GET",
                vm("rg1", "existing"),
            ),
            row(
                "VMC cannot attach a UAMI at creation",
                VmContributor,
                "PUT",
                vm("rg1", "vm-uami"),
            )
            .body(vm_body(with_uami(&uami)))
            .linked(ASSIGN, uami.clone()),
            row(
                "VMC cannot attach a UAMI to an existing VM",
                VmContributor,
                "PATCH",
                vm("rg1", "existing"),
            )
            .body(json!({"identity": with_uami(&uami)}))
            .linked(ASSIGN, uami.clone()),
            row(
                "VMC cannot add role assignments (--role/--scope)",
                VmContributor,
                "PUT",
                ra(&rg1, "0c9e5a1b-7d2f-4e8a-9b3c-1d4e5f6a7b8c"),
            )
            .body(new_ra(&cast.vmc))
            .denied(RA_WRITE, rg1.clone()),
            row(
                "VMC at rg1 does not cover rg2",
                VmContributor,
                "PUT",
                vm("rg2", "elsewhere"),
            )
            .body(vm_body(json!({"type": "SystemAssigned"})))
            .denied(
                "Microsoft.Compute/virtualMachines/write",
                vm("rg2", "elsewhere"),
            ),
            row(
                "VMC cannot create a UAMI",
                VmContributor,
                "PUT",
                w.uami_id("rg1", "id2"),
            )
            .body(json!({"location": "eastus"}))
            .denied(
                "Microsoft.ManagedIdentity/userAssignedIdentities/write",
                w.uami_id("rg1", "id2"),
            ),
        ],
    )
    .await;

    // ... until it also holds Managed Identity Operator on that identity.
    let (s, v) = w
        .grant_as(&w.admin_arm, &uami, &cast.vmc.object_id, MI_OPERATOR)
        .await;
    assert_eq!(s, 201, "{v}");
    run(
        &w,
        &cast,
        vec![
            row(
                "VMC + MI Operator attaches the UAMI at creation",
                VmContributor,
                "PUT",
                vm("rg1", "vm-uami"),
            )
            .body(vm_body(with_uami(&uami))),
            row(
                "VMC + MI Operator attaches the UAMI to an existing VM",
                VmContributor,
                "PATCH",
                vm("rg1", "existing"),
            )
            .body(json!({"identity": {"type": "SystemAssigned,UserAssigned",
                "userAssignedIdentities": {uami.clone(): {}}}})),
        ],
    )
    .await;

    // ---- Reader, Owner, Contributor, the custom role.
    run(&w, &cast, vec![
        row("Reader reads a VM", Reader, "GET", vm("rg1", "vm-sami")),
        row("Reader reads the group", Reader, "GET", rg1.clone()),
        row("Reader lists the group's VMs", Reader, "GET",
            format!("{rg1}/providers/Microsoft.Compute/virtualMachines")),
        row("Reader lists role assignments", Reader, "GET",
            format!("{rg1}/providers/Microsoft.Authorization/roleAssignments")),
        row("Reader cannot write a VM", Reader, "PUT", vm("rg1", "reader-vm"))
            .body(vm_body(json!({"type": "None"})))
            .denied("Microsoft.Compute/virtualMachines/write", vm("rg1", "reader-vm")),
        row("Reader cannot delete a VM", Reader, "DELETE", vm("rg1", "vm-sami"))
            .denied("Microsoft.Compute/virtualMachines/delete", vm("rg1", "vm-sami")),
        row("Reader at rg1 cannot read rg2", Reader, "GET", rg2.clone())
            .denied("Microsoft.Resources/subscriptions/resourceGroups/read", rg2.clone()),
        row("Owner creates a VM with a UAMI", Owner, "PUT", vm("rg1", "owner-vm"))
            .body(vm_body(with_uami(&uami))),
        row("Owner adds a role assignment", Owner, "PUT",
            ra(&rg1, "1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d"))
            .body(new_ra(&cast.contributor)).status(201),
        row("Owner deletes a VM", Owner, "DELETE", vm("rg1", "owner-vm")),
        row("Owner at rg1 cannot write rg2", Owner, "PUT", vm("rg2", "owner-vm"))
            .body(vm_body(json!({"type": "None"})))
            .denied("Microsoft.Compute/virtualMachines/write", vm("rg2", "owner-vm")),
        row("Contributor creates in any group", Contributor, "PUT", vm("rg2", "c-vm"))
            .body(vm_body(with_uami(&uami))),
        row("Contributor's notActions stop role assignment writes", Contributor, "PUT",
            ra(&rg2, "2b3c4d5e-6f7a-4b1c-8d2e-3f4a5b6c7d8e"))
            .body(new_ra(&cast.contributor))
            .denied(RA_WRITE, rg2.clone()),
        row("Contributor's notActions stop role assignment deletes", Contributor, "DELETE",
            ra(&rg1, "1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d"))
            .denied("Microsoft.Authorization/roleAssignments/delete", rg1.clone()),
        row("Contributor cannot write role definitions", Contributor, "PUT",
            format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/{CUSTOM_ROLE}"))
            .body(json!({"properties": {"roleName": "x", "assignableScopes": [sub], "permissions": []}}))
            .denied("Microsoft.Authorization/roleDefinitions/write", sub.clone()),
        row("Contributor reads role definitions", Contributor, "GET",
            format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/{CUSTOM_ROLE}")),
        row("Custom role creates a VM with a UAMI", Custom, "PUT", vm("rg1", "custom-vm"))
            .body(vm_body(with_uami(&uami))),
        row("Custom role's notActions stop deletes", Custom, "DELETE", vm("rg1", "custom-vm"))
            .denied("Microsoft.Compute/virtualMachines/delete", vm("rg1", "custom-vm")),
        row("Custom role grants nothing on groups", Custom, "GET", rg1.clone())
            .denied("Microsoft.Resources/subscriptions/resourceGroups/read", rg1.clone()),
        row("Custom role is limited to rg1", Custom, "PUT", vm("rg2", "custom-vm"))
            .body(vm_body(json!({"type": "None"})))
            .denied("Microsoft.Compute/virtualMachines/write", vm("rg2", "custom-vm")),
    ]).await;

    // The custom role is listed by name and cannot go while it is assigned.
    let (s, v) = w
        .admin(
            "GET",
            &format!(
                "{rg1}/providers/Microsoft.Authorization/roleDefinitions?$filter=roleName%20eq%20'VM%20Identity%20Operator'"
            ),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["value"][0]["name"], CUSTOM_ROLE);
    let (s, v) = w
        .admin(
            "DELETE",
            &format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/{CUSTOM_ROLE}"),
            None,
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "RoleDefinitionHasAssignments");

    // Duplicates and unknown principals.
    let (s, v) = w
        .grant_as(&w.admin_arm, &uami, &cast.vmc.object_id, MI_OPERATOR)
        .await;
    assert_eq!(s, 200, "same name, same content is idempotent: {v}");
    let (s, v) = w
        .arm(
            "PUT",
            &ra(&uami, "3c4d5e6f-7a8b-4c1d-8e2f-3a4b5c6d7e8f"),
            &w.admin_arm,
            Some(json!({"properties": {"principalId": cast.vmc.object_id,
                "roleDefinitionId": format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/{MI_OPERATOR}")}})),
        )
        .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (409, &json!("RoleAssignmentExists")),
        "{v}"
    );
    let (s, v) = w
        .grant_as(
            &w.admin_arm,
            &rg1,
            "00000000-dead-4bee-8000-000000000001",
            READER,
        )
        .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (400, &json!("PrincipalNotFound")),
        "{v}"
    );

    // The decision is explainable over gRPC: the assignments considered are named.
    let mut authz = w.sb.authorization().unwrap();
    let d = authz
        .check_access(CheckAccessRequest {
            principal_id: cast.contributor.object_id.clone(),
            action: RA_WRITE.into(),
            scope: rg1.clone(),
            data_action: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!d.allowed);
    assert!(
        d.reason.contains("'Contributor'") && d.reason.contains("excluded by notActions"),
        "{}",
        d.reason
    );
    let d = authz
        .check_access(CheckAccessRequest {
            principal_id: cast.vmc.object_id.clone(),
            action: ASSIGN.into(),
            scope: uami.clone(),
            data_action: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(d.allowed, "{}", d.reason);
    assert!(
        d.reason.contains("'Managed Identity Operator'")
            && d.reason.contains("'Virtual Machine Contributor'"),
        "{}",
        d.reason
    );

    // The VM's token is what Key Vault authorizes, vault by vault.
    w.create_vault("rg1", "kv1").await;
    w.create_vault("rg1", "kv2").await;
    w.set_secret("kv1", "s", "one").await;
    w.set_secret("kv2", "s", "two").await;
    let (_, sami_vm) = w.admin("GET", &vm("rg1", "vm-sami"), None).await;
    let sami = sami_vm["identity"]["principalId"]
        .as_str()
        .unwrap()
        .to_owned();
    w.assign_role(&w.vault_id("rg1", "kv1"), &sami, KV_SECRETS_USER)
        .await;
    let endpoint = w.imds_endpoint(&vm("rg1", "vm-sami")).await;
    let (s, tok) = w.imds_token(&endpoint, VAULT_AUD, None).await;
    assert_eq!(s, 200, "{tok}");
    let tok = tok["access_token"].as_str().unwrap();
    let (s, v) = w.get_secret("kv1", "s", tok).await;
    assert_eq!((s, &v["value"]), (200, &json!("one")), "{v}");
    let (s, v) = w.get_secret("kv2", "s", tok).await;
    assert_eq!(s, 403, "{v}");

    // Orphans: the identity goes, its assignments stay (listed, type kept) and
    // its principal is gone from Graph.
    let uami_principal = u["properties"]["principalId"].as_str().unwrap().to_owned();
    w.assign_role(&rg1, &uami_principal, READER).await;
    let (s, _) = w.admin("DELETE", &uami, None).await;
    assert_eq!(s, 200);
    let (s, v) = w
        .admin(
            "GET",
            &format!(
                "{rg1}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId%20eq%20'{uami_principal}'"
            ),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let list = v["value"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["properties"]["principalType"], "ServicePrincipal");
    let graph = w.admin_token("https://graph.microsoft.com/.default").await;
    let r = w
        .http
        .get(format!(
            "{}/v1.0/servicePrincipals/{uami_principal}",
            w.sb.entra_url
        ))
        .bearer_auth(graph)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Graph has its own check: a principal with only ARM roles cannot create applications.
    let vmc_graph = w
        .token_for(
            &cast.vmc.client_id,
            &cast.vmc.secret,
            "https://graph.microsoft.com/.default",
        )
        .await;
    let r = w
        .http
        .post(format!("{}/v1.0/applications", w.sb.entra_url))
        .bearer_auth(vmc_graph)
        .json(&json!({"displayName": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A recreated identity of the same name gets a new principal: no grant carries over.
    let (s, u2) = w
        .admin("PUT", &uami, Some(json!({"location": "eastus"})))
        .await;
    assert_eq!(s, 201, "{u2}");
    assert_ne!(u2["properties"]["principalId"], json!(uami_principal));
}

/// The same principals through misim's gRPC API: Entra registers an
/// application with a secret, ARM grants it a role, and it then acts over
/// HTTPS with exactly that role.
#[tokio::test]
async fn principals_and_grants_over_grpc() {
    let w = start().await;
    w.create_rg("rg1").await;
    w.create_rg("rg2").await;
    let rg1 = w.rg_id("rg1");
    let mut directory = w.sb.directory().unwrap();
    let mut authz = w.sb.authorization().unwrap();

    let created = directory
        .create_application(CreateApplicationRequest {
            display_name: "deployer".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let sp = created.service_principal.unwrap();
    assert_eq!(sp.display_name, "deployer");
    assert!(created.client_secret.len() >= 32);
    let a = authz
        .create_role_assignment(CreateRoleAssignmentRequest {
            principal_id: sp.object_id.clone(),
            role: "virtual machine contributor".into(),
            scope: rg1.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        a.role_definition_id
            .ends_with("9980e02c-c2be-4d73-94e8-173b1dc7cf3c"),
        "{a:?}"
    );
    assert!(
        a.id.to_ascii_lowercase()
            .starts_with(&rg1.to_ascii_lowercase()),
        "{a:?}"
    );

    // Visible through ARM as any assignment is.
    let (s, v) = w
        .admin(
            "GET",
            &format!("{rg1}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId%20eq%20'{}'", sp.object_id),
            None,
        )
        .await;
    assert_eq!(
        (s, v["value"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{v}"
    );

    // It acts with exactly that role.
    let token = w
        .token_for(
            &sp.app_id,
            &created.client_secret,
            "https://management.azure.com/.default",
        )
        .await;
    let (s, v) = w
        .arm(
            "PUT",
            &w.vm_id("rg1", "vm1"),
            &token,
            Some(vm_body(json!({"type": "SystemAssigned"}))),
        )
        .await;
    assert!(s == 200 || s == 201, "{s} {v}");
    let (s, v) = w
        .arm(
            "PUT",
            &w.vm_id("rg2", "vm1"),
            &token,
            Some(vm_body(json!({"type": "SystemAssigned"}))),
        )
        .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (403, &json!("AuthorizationFailed")),
        "{v}"
    );

    // The same refusals as the HTTP API, as gRPC codes.
    for (principal, role, scope, code) in [
        (
            sp.object_id.as_str(),
            "Virtual Machine Contributor",
            rg1.as_str(),
            tonic::Code::AlreadyExists,
        ),
        (
            "00000000-dead-4bee-8000-000000000001",
            "Reader",
            rg1.as_str(),
            tonic::Code::InvalidArgument,
        ),
        (
            sp.object_id.as_str(),
            "No Such Role",
            rg1.as_str(),
            tonic::Code::InvalidArgument,
        ),
        (
            sp.object_id.as_str(),
            "Reader",
            "not a scope",
            tonic::Code::InvalidArgument,
        ),
    ] {
        let e = authz
            .create_role_assignment(CreateRoleAssignmentRequest {
                principal_id: principal.into(),
                role: role.into(),
                scope: scope.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{role} at {scope}: {e:?}");
    }
    let e = directory
        .create_application(CreateApplicationRequest {
            display_name: "  ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
}
