//! Identity lifecycles through ARM's public API: what each deletion or
//! disabling removes from Entra (Graph, Directory) and IMDS, what stays, that
//! tokens issued before stay valid, outages of Entra and IMDS, and that
//! `doctor` reports zero drift once everything has settled.

use misim_proto::arm::v1::DoctorReport;
use misim_proto::entra::v1::{GetServicePrincipalRequest, ListServicePrincipalsRequest};
use misim_proto::imds::v1::GetVmRequest;
use misim_sandbox::Service;
use misim_testkit::eventually;
use serde_json::{Value, json};

use crate::harness::*;

const CREATE_SP: &str = "misim.entra.v1.Directory/CreateServicePrincipal";
const DELETE_VM: &str = "misim.imds.v1.Control/DeleteVm";

/// `GET {entra}/v1.0/servicePrincipals/{id}` with an admin Graph token: the status.
async fn graph_sp(w: &World, principal: &str) -> u16 {
    let token = w.admin_token(&format!("{}/.default", w.sb.entra_url)).await;
    w.http
        .get(format!(
            "{}/v1.0/servicePrincipals/{principal}",
            w.sb.entra_url
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The principal's key credentials in Entra, or None when it does not exist.
async fn sp_keys(w: &World, principal: &str) -> Option<usize> {
    match w
        .sb
        .directory()
        .unwrap()
        .get_service_principal(GetServicePrincipalRequest {
            object_id: principal.into(),
            app_id: String::new(),
        })
        .await
    {
        Ok(sp) => Some(sp.into_inner().key_credentials.len()),
        Err(s) => {
            assert_eq!(s.code(), tonic::Code::NotFound, "{s}");
            None
        }
    }
}

/// Client ids IMDS serves on a VM, or None when IMDS does not know the VM.
async fn imds_clients(w: &World, vm_id: &str) -> Option<Vec<String>> {
    match w
        .sb
        .imds_control()
        .unwrap()
        .get_vm(GetVmRequest {
            resource_id: vm_id.into(),
        })
        .await
    {
        Ok(vm) => {
            let mut ids: Vec<String> = vm
                .into_inner()
                .identities
                .into_iter()
                .map(|i| i.client_id)
                .collect();
            ids.sort();
            Some(ids)
        }
        Err(s) => {
            assert_eq!(s.code(), tonic::Code::NotFound, "{s}");
            None
        }
    }
}

/// Waits until no operation is pending, then asserts zero drift.
async fn settle(w: &World) -> DoctorReport {
    eventually("no pending operation and no drift", || async {
        match w.sb.doctor().await {
            Ok(r) if r.pending_operations == 0 && r.drifts.is_empty() => Ok(r),
            r => Err(r),
        }
    })
    .await
}

async fn create_uami(w: &World, rg: &str, name: &str) -> Value {
    let (s, v) = w
        .admin(
            "PUT",
            &w.uami_id(rg, name),
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert!(s == 200 || s == 201, "create uami: {s} {v}");
    v
}

/// PUTs a VM with a system identity while its provisioning cannot complete:
/// 201, `Updating`, and the `Azure-AsyncOperation` URL to poll.
async fn create_vm_left_updating(w: &World, vm_id: &str) -> String {
    let (st, h, v) = arm_raw(
        w,
        "PUT",
        vm_id,
        Some(vm_body(json!({"type": "SystemAssigned"}))),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Updating", "{v}");
    h["azure-asyncoperation"].to_str().unwrap().to_owned()
}

/// `(id, principalId, clientId)` of a user-assigned identity.
fn uami_ids(u: &Value) -> (String, String, String) {
    (
        s(u, "/id"),
        s(u, "/properties/principalId"),
        s(u, "/properties/clientId"),
    )
}

/// An identity block with the system-assigned identity and `uamis`.
fn sami_and(uamis: &[&str]) -> Value {
    let attached: serde_json::Map<String, Value> =
        uamis.iter().map(|id| (id.to_string(), json!({}))).collect();
    json!({"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": attached})
}

fn s(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{ptr} missing in {v}"))
        .to_owned()
}

/// A request whose headers matter (long-running operations).
async fn arm_raw(
    w: &World,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let url = format!("{}{path}{sep}api-version=2024-11-01", w.sb.arm_url);
    let mut req = w
        .http
        .request(method.parse().unwrap(), url)
        .bearer_auth(&w.admin_arm);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

async fn poll(w: &World, url: &str) -> Value {
    w.http
        .get(url)
        .bearer_auth(&w.admin_arm)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn vm_body(identity: Value) -> Value {
    json!({"location": "eastus", "identity": identity, "properties": {
        "hardwareProfile": {"vmSize": "Standard_B1s"},
        "osProfile": {"adminUsername": "azureuser"}}})
}

#[tokio::test]
async fn deleting_a_vm_deletes_its_system_identity_and_keeps_its_user_identity() {
    let w = start().await;
    w.create_rg("rg1").await;
    let u = create_uami(&w, "rg1", "id1").await;
    let (uid, upid, _) = uami_ids(&u);
    let vm = w.create_vm("rg1", "vm1", sami_and(&[&uid])).await;
    assert_eq!(vm["properties"]["provisioningState"], "Succeeded", "{vm}");
    let sami = s(&vm, "/identity/principalId");
    let vm_id = w.vm_id("rg1", "vm1");
    assert_eq!(graph_sp(&w, &sami).await, 200);
    assert_eq!(graph_sp(&w, &upid).await, 200);
    assert_eq!(sp_keys(&w, &sami).await, Some(1));
    assert_eq!(imds_clients(&w, &vm_id).await.unwrap().len(), 2);
    settle(&w).await;

    // A token issued before the deletion.
    let ep = w.imds_endpoint(&vm_id).await;
    let (st, t) = w
        .imds_token(&ep, VAULT_AUD, Some(("object_id", sami.as_str())))
        .await;
    assert_eq!(st, 200, "{t}");
    let before = s(&t, "/access_token");

    let (st, v) = w.admin("DELETE", &vm_id, None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        graph_sp(&w, &sami).await,
        404,
        "the SAMI's principal is gone"
    );
    assert_eq!(sp_keys(&w, &sami).await, None);
    assert_eq!(imds_clients(&w, &vm_id).await, None, "IMDS forgot the VM");
    assert_eq!(graph_sp(&w, &upid).await, 200, "the UAMI stays");
    assert_eq!(sp_keys(&w, &upid).await, Some(1));
    let (st, _) = w.admin("GET", &uid, None).await;
    assert_eq!(st, 200);
    let (st, _) = w.admin("GET", &vm_id, None).await;
    assert_eq!(st, 404);
    // Tokens already issued stay valid until they expire.
    let claims = w.verify_with_jwks(&before, VAULT_AUD).await;
    assert_eq!(claims.oid, sami);
    settle(&w).await;
    w.sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn disabling_the_system_identity_deletes_it_and_reenabling_creates_a_new_one() {
    let w = start().await;
    w.create_rg("rg1").await;
    let u = create_uami(&w, "rg1", "id1").await;
    let (uid, upid, ucid) = uami_ids(&u);
    let vm = w.create_vm("rg1", "vm1", sami_and(&[&uid])).await;
    let vm_id = w.vm_id("rg1", "vm1");
    let sami1 = s(&vm, "/identity/principalId");

    // PATCH without SystemAssigned: the SAMI alone goes.
    let (st, v) = w
        .admin(
            "PATCH",
            &vm_id,
            Some(json!({"identity": {"type": "UserAssigned"}})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["identity"]["type"], "UserAssigned");
    assert!(v["identity"].get("principalId").is_none(), "{v}");
    assert_eq!(graph_sp(&w, &sami1).await, 404);
    assert_eq!(imds_clients(&w, &vm_id).await, Some(vec![ucid.clone()]));
    assert_eq!(graph_sp(&w, &upid).await, 200);
    let ep = w.imds_endpoint(&vm_id).await;
    let (st, t) = w
        .imds_token(&ep, VAULT_AUD, Some(("client_id", ucid.as_str())))
        .await;
    assert_eq!(st, 200, "the UAMI still gets tokens: {t}");
    let (st, _) = w
        .imds_token(&ep, VAULT_AUD, Some(("object_id", sami1.as_str())))
        .await;
    assert_ne!(st, 200, "the SAMI no longer does");
    settle(&w).await;

    // Re-enabling creates a new principal.
    let (st, v) = w
        .admin(
            "PATCH",
            &vm_id,
            Some(json!({"identity": {"type": "SystemAssigned, UserAssigned"}})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let sami2 = s(&v, "/identity/principalId");
    assert_ne!(sami1, sami2, "a new principal");
    assert_eq!(graph_sp(&w, &sami2).await, 200);
    assert_eq!(sp_keys(&w, &sami2).await, Some(1));
    assert_eq!(graph_sp(&w, &sami1).await, 404);
    assert_eq!(imds_clients(&w, &vm_id).await.unwrap().len(), 2);
    settle(&w).await;

    // `None`: every identity leaves the VM; the UAMI itself stays.
    let (st, v) = w
        .admin("PATCH", &vm_id, Some(json!({"identity": {"type": "None"}})))
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(v.get("identity").is_none(), "{v}");
    assert_eq!(graph_sp(&w, &sami2).await, 404);
    assert_eq!(imds_clients(&w, &vm_id).await, Some(vec![]));
    assert_eq!(graph_sp(&w, &upid).await, 200);
    let r = settle(&w).await;
    assert_eq!(r.identities, 1, "{r:?}");
    w.sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn deleting_a_user_identity_shared_by_three_vms_while_in_use() {
    let w = start().await;
    w.create_rg("rg1").await;
    w.create_vault("rg1", "kv1").await;
    w.set_secret("kv1", "s1", "v1").await;
    let u = create_uami(&w, "rg1", "shared").await;
    let (uid, upid, ucid) = uami_ids(&u);
    w.assign_role(&w.vault_id("rg1", "kv1"), &upid, KV_SECRETS_USER)
        .await;
    let mut eps = Vec::new();
    let mut samis = Vec::new();
    for n in ["vm1", "vm2", "vm3"] {
        let ident = if n == "vm1" {
            sami_and(&[&uid])
        } else {
            json!({"type": "UserAssigned", "userAssignedIdentities": {&uid: {}}})
        };
        let vm = w.create_vm("rg1", n, ident).await;
        if n == "vm1" {
            samis.push(s(&vm, "/identity/principalId"));
        }
        eps.push(w.imds_endpoint(&w.vm_id("rg1", n)).await);
    }
    assert_eq!(graph_sp(&w, &upid).await, 200);
    // In use: every VM reads the secret with the shared identity.
    let mut tokens = Vec::new();
    for ep in &eps {
        let (st, t) = w
            .imds_token(ep, VAULT_AUD, Some(("client_id", ucid.as_str())))
            .await;
        assert_eq!(st, 200, "{t}");
        let tok = s(&t, "/access_token");
        assert_eq!(w.get_secret("kv1", "s1", &tok).await.0, 200);
        tokens.push(tok);
    }
    settle(&w).await;

    let (st, v) = w.admin("DELETE", &uid, None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(graph_sp(&w, &upid).await, 404, "its principal is gone");
    assert_eq!(sp_keys(&w, &upid).await, None);
    for (i, n) in ["vm1", "vm2", "vm3"].iter().enumerate() {
        let vm_id = w.vm_id("rg1", n);
        // IMDS no longer has it: no new token.
        assert!(!imds_clients(&w, &vm_id).await.unwrap().contains(&ucid));
        let (st, t) = w
            .imds_token(&eps[i], VAULT_AUD, Some(("client_id", ucid.as_str())))
            .await;
        assert_ne!(st, 200, "{t}");
        // The VM's identity block still lists it with its old ids, as in Azure.
        let (st, v) = w.admin("GET", &vm_id, None).await;
        assert_eq!(st, 200);
        let listed = v["identity"]["userAssignedIdentities"]
            .as_object()
            .unwrap_or_else(|| panic!("{v}"));
        let entry = listed
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&uid))
            .map(|(_, e)| e)
            .unwrap_or_else(|| panic!("{v}"));
        assert_eq!(
            *entry,
            json!({"principalId": upid, "clientId": ucid}),
            "{v}"
        );
        // A token issued before stays valid until it expires.
        let c = w.verify_with_jwks(&tokens[i], VAULT_AUD).await;
        assert_eq!(c.oid, upid);
    }
    // vm1's system identity is untouched.
    let (st, t) = w
        .imds_token(&eps[0], VAULT_AUD, Some(("object_id", samis[0].as_str())))
        .await;
    assert_eq!(st, 200, "{t}");
    // The role assignment stays listed (Azure shows it for an unknown principal).
    let (st, v) = w
        .admin(
            "GET",
            &format!(
                "{}/providers/Microsoft.Authorization/roleAssignments",
                w.vault_id("rg1", "kv1")
            ),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert!(v.to_string().contains(&upid), "{v}");
    // Detaching the dead id from a VM works.
    let (st, v) = w
        .admin(
            "PATCH",
            &w.vm_id("rg1", "vm2"),
            Some(json!({"identity": {"type": "None"}})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    settle(&w).await;
    // Created again under the same id it is a new identity: vm3 keeps
    // showing the old ids, and does not carry the new one, until reassigned.
    let again = create_uami(&w, "rg1", "shared").await;
    let new_cid = s(&again, "/properties/clientId");
    assert_ne!(s(&again, "/properties/principalId"), upid);
    let vm3 = w.vm_id("rg1", "vm3");
    let (_, v) = w.admin("GET", &vm3, None).await;
    assert_eq!(
        v["identity"]["userAssignedIdentities"][&uid],
        json!({"principalId": upid, "clientId": ucid}),
        "{v}"
    );
    assert!(!imds_clients(&w, &vm3).await.unwrap().contains(&new_cid));
    settle(&w).await;
    w.sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn deleting_a_resource_group_cascades() {
    let w = start().await;
    w.create_rg("rg1").await;
    w.create_rg("rg2").await;
    let u = create_uami(&w, "rg1", "id1").await;
    let (uid, upid, ucid) = uami_ids(&u);
    let keep = create_uami(&w, "rg2", "keep").await;
    let vm1 = w.create_vm("rg1", "vm1", sami_and(&[&uid])).await;
    let sami1 = s(&vm1, "/identity/principalId");
    let vm2 = w
        .create_vm(
            "rg2",
            "vm2",
            sami_and(&[&uid, keep["id"].as_str().unwrap()]),
        )
        .await;
    let sami2 = s(&vm2, "/identity/principalId");
    settle(&w).await;

    let (st, v) = w.admin("DELETE", &w.rg_id("rg1"), None).await;
    assert!(st == 200 || st == 202, "{st} {v}");
    let r = settle(&w).await;
    assert_eq!(graph_sp(&w, &sami1).await, 404);
    assert_eq!(graph_sp(&w, &upid).await, 404);
    assert_eq!(imds_clients(&w, &w.vm_id("rg1", "vm1")).await, None);
    // rg2's VM keeps its own identities and lists the deleted one.
    assert_eq!(graph_sp(&w, &sami2).await, 200);
    let clients = imds_clients(&w, &w.vm_id("rg2", "vm2")).await.unwrap();
    assert_eq!(clients.len(), 2, "{clients:?}");
    assert!(!clients.contains(&ucid));
    let (_, v) = w.admin("GET", &w.vm_id("rg2", "vm2"), None).await;
    let listed = v["identity"]["userAssignedIdentities"].as_object().unwrap();
    assert_eq!(listed.len(), 2, "{v}");
    // The deleted one with the ids it had (from the VM's record), the live one with its own.
    assert_eq!(
        listed[&uid],
        json!({"principalId": upid, "clientId": ucid}),
        "{v}"
    );
    let keep_id = s(&keep, "/id");
    assert_eq!(
        listed[&keep_id],
        json!({"principalId": s(&keep, "/properties/principalId"), "clientId": s(&keep, "/properties/clientId")}),
        "{v}"
    );
    assert_eq!(r.identities, 2, "{r:?}");
    w.sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn entra_then_imds_outage_converges_without_duplicates() {
    let w = start().await;
    w.create_rg("rg1").await;
    let gone = create_uami(&w, "rg1", "gone").await;
    let gone_pid = s(&gone, "/properties/principalId");
    let u = create_uami(&w, "rg1", "id1").await;
    let (uid, upid) = (s(&u, "/id"), s(&u, "/properties/principalId"));
    w.create_vm("rg1", "vm2", json!({"type": "SystemAssigned"}))
        .await;
    settle(&w).await;

    // ---- Entra down.
    w.sb.stop_service(Service::Entra).await.unwrap();
    // A VM with a system identity is accepted and shows Updating with
    // Azure's async-operation header.
    let vm_id = w.vm_id("rg1", "vm1");
    let status_url = create_vm_left_updating(&w, &vm_id).await;
    let op = poll(&w, &status_url).await;
    assert_eq!(op["status"], "InProgress", "{op}");
    assert!(
        op["startTime"].is_string() && op["name"].is_string(),
        "{op}"
    );
    // A user-assigned identity cannot be created (Azure fails the synchronous
    // create when the directory is unavailable): 503 in ARM's error shape,
    // nothing kept.
    let never = w.uami_id("rg1", "never");
    let (st, v) = w
        .admin("PUT", &never, Some(json!({"location": "eastus"})))
        .await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["error"]["code"], "ServiceUnavailable", "{v}");
    assert!(!s(&v, "/error/message").is_empty(), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 1, "only `error`: {v}");
    assert_eq!(v["error"].as_object().unwrap().len(), 2, "{v}");
    let (st, _) = w.admin("GET", &never, None).await;
    assert_eq!(st, 404);
    // Deleting one is accepted; its principal goes when Entra is back.
    let (st, v) = w.admin("DELETE", &s(&gone, "/id"), None).await;
    assert_eq!(st, 200, "{v}");
    let pending = w.sb.doctor().await;
    assert!(pending.is_err() || pending.unwrap().pending_operations > 0);
    // The reconciler retries while Entra is down (the VM's principal).
    let tried = w.faults.calls(CREATE_SP);
    w.faults.wait_calls(CREATE_SP, tried + 1).await;
    w.sb.start_service(Service::Entra).await.unwrap();
    let r = settle(&w).await;
    // Nothing of the refused create leaks once Entra is back: no resource,
    // no principal (the one the reconciler may create for its request id
    // is deleted again), no failed operation.
    let (st, _) = w.admin("GET", &never, None).await;
    assert_eq!(st, 404);
    assert!(principals_of(&w, &never).await.is_empty());
    assert_eq!(r.failed_operations, 0, "{r:?}");
    let op = poll(&w, &status_url).await;
    assert_eq!(op["status"], "Succeeded", "{op}");
    let (_, v) = w.admin("GET", &vm_id, None).await;
    assert_eq!(v["properties"]["provisioningState"], "Succeeded", "{v}");
    let sami = s(&v, "/identity/principalId");
    assert_eq!(graph_sp(&w, &sami).await, 200);
    assert_eq!(sp_keys(&w, &sami).await, Some(1), "one key credential");
    assert_eq!(graph_sp(&w, &gone_pid).await, 404);
    // No duplicates: exactly the principals ARM owns (id1, vm1, vm2).
    assert_eq!((r.identities, r.service_principals), (3, 3), "{r:?}");

    // ---- IMDS down.
    w.sb.stop_service(Service::Imds).await.unwrap();
    let (st, h, v) = arm_raw(
        &w,
        "PATCH",
        &vm_id,
        Some(json!({"identity": {"type": "SystemAssigned,UserAssigned", "userAssignedIdentities": {&uid: {}}}})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Updating", "{v}");
    assert!(h.contains_key("azure-asyncoperation"));
    let (st, h, _) = arm_raw(&w, "DELETE", &w.vm_id("rg1", "vm2"), None).await;
    assert_eq!(st, 202);
    let del_url = h["azure-asyncoperation"].to_str().unwrap().to_owned();
    assert!(h.contains_key("location"));
    let (st, v) = w.admin("GET", &w.vm_id("rg1", "vm2"), None).await;
    assert_eq!(st, 200);
    assert_eq!(v["properties"]["provisioningState"], "Deleting", "{v}");
    // A VM being deleted cannot be updated.
    let (st, v) = w
        .admin("PATCH", &w.vm_id("rg1", "vm2"), Some(json!({"tags": {}})))
        .await;
    assert_eq!(st, 409, "{v}");
    // The reconciler retries while IMDS is down (vm2's deletion).
    let tried = w.faults.calls(DELETE_VM);
    w.faults.wait_calls(DELETE_VM, tried + 1).await;
    w.sb.start_service(Service::Imds).await.unwrap();
    let r = settle(&w).await;
    assert_eq!(poll(&w, &del_url).await["status"], "Succeeded");
    let (st, _) = w.admin("GET", &w.vm_id("rg1", "vm2"), None).await;
    assert_eq!(st, 404);
    let clients = imds_clients(&w, &vm_id).await.unwrap();
    assert_eq!(clients.len(), 2, "{clients:?}");
    assert_eq!(graph_sp(&w, &upid).await, 200);
    assert_eq!((r.identities, r.service_principals), (2, 2), "{r:?}");
    assert_eq!(r.failed_operations, 0);
    w.sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn acknowledged_operations_resume_after_a_restart() {
    let w = start().await;
    w.create_rg("rg1").await;
    let vm0 = w
        .create_vm("rg1", "vm0", json!({"type": "SystemAssigned"}))
        .await;
    let sami0 = s(&vm0, "/identity/principalId");
    settle(&w).await;

    // Entra down: both requests are acknowledged, neither can complete.
    w.sb.stop_service(Service::Entra).await.unwrap();
    let vm1_id = w.vm_id("rg1", "vm1");
    let (st, _, v) = arm_raw(
        &w,
        "PUT",
        &vm1_id,
        Some(vm_body(json!({"type": "SystemAssigned"}))),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Updating");
    let (st, _, _) = arm_raw(&w, "DELETE", &w.vm_id("rg1", "vm0"), None).await;
    assert_eq!(st, 202);

    // The whole sandbox goes down with the work pending, and comes back.
    let World { sb, dir, .. } = w;
    sb.shutdown().await.unwrap();
    let w = start_in(dir).await;
    let r = settle(&w).await;
    let (st, v) = w.admin("GET", &vm1_id, None).await;
    assert_eq!(st, 200);
    assert_eq!(v["properties"]["provisioningState"], "Succeeded", "{v}");
    let sami1 = s(&v, "/identity/principalId");
    assert_eq!(sp_keys(&w, &sami1).await, Some(1));
    assert_eq!(imds_clients(&w, &vm1_id).await.unwrap().len(), 1);
    let (st, _) = w.admin("GET", &w.vm_id("rg1", "vm0"), None).await;
    assert_eq!(st, 404);
    assert_eq!(graph_sp(&w, &sami0).await, 404);
    assert_eq!((r.identities, r.service_principals), (1, 1), "{r:?}");
    w.sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn deleting_a_resource_group_while_imds_is_down_is_accepted_and_polled() {
    let w = start().await;
    w.create_rg("rg1").await;
    let vm = w
        .create_vm("rg1", "vm1", json!({"type": "SystemAssigned"}))
        .await;
    let sami = s(&vm, "/identity/principalId");
    settle(&w).await;

    w.sb.stop_service(Service::Imds).await.unwrap();
    let (st, h, _) = arm_raw(&w, "DELETE", &w.rg_id("rg1"), None).await;
    assert_eq!(st, 202, "Azure's resource-group deletion is asynchronous");
    let location = h["location"].to_str().unwrap().to_owned();
    let r = w
        .http
        .get(&location)
        .bearer_auth(&w.admin_arm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let (st, _) = w.admin("GET", &w.rg_id("rg1"), None).await;
    assert_eq!(st, 404);
    w.sb.start_service(Service::Imds).await.unwrap();
    settle(&w).await;
    let r = w
        .http
        .get(&location)
        .bearer_auth(&w.admin_arm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(graph_sp(&w, &sami).await, 404);
    assert_eq!(imds_clients(&w, &w.vm_id("rg1", "vm1")).await, None);
    w.sb.shutdown().await.unwrap();
}

/// Managed-identity principals Entra holds for a resource id.
async fn principals_of(w: &World, resource_id: &str) -> Vec<String> {
    w.sb.directory()
        .unwrap()
        .list_service_principals(ListServicePrincipalsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .service_principals
        .into_iter()
        .filter(|sp| {
            sp.managed_identity_resource_id
                .eq_ignore_ascii_case(resource_id)
        })
        .map(|sp| sp.object_id)
        .collect()
}

/// Polls an operation status URL until it leaves `InProgress`.
async fn poll_finished(w: &World, url: &str) -> Value {
    eventually(&format!("{url} finishes"), || async {
        let op = poll(w, url).await;
        if op["status"] != "InProgress" {
            Ok(op)
        } else {
            Err(op)
        }
    })
    .await
}

#[tokio::test]
async fn a_step_that_keeps_failing_fails_the_operation_and_a_retry_succeeds() {
    let w = start().await;
    w.create_rg("rg1").await;
    settle(&w).await;

    // Entra rejects the principal ARM creates with its certificate, as often
    // as the orchestrator tries (10, its limit of non-transient failures): a
    // non-transient error. The cleanup's own call (finding whatever its
    // request id made, to delete it) is let through.
    w.faults.fail_times(
        CREATE_SP,
        tonic::Code::InvalidArgument,
        "the certificate was rejected (injected fault)",
        10,
    );
    let vm_id = w.vm_id("rg1", "vm1");
    let status_url = create_vm_left_updating(&w, &vm_id).await;

    // The orchestrator gives up after its limit of non-transient failures (10).
    w.faults.wait_calls(CREATE_SP, 10).await;
    let op = poll_finished(&w, &status_url).await;
    assert_eq!(op["status"], "Failed", "{op}");
    assert_eq!(op["error"]["code"], "FailedIdentityOperation", "{op}");
    let msg = s(&op, "/error/message");
    // Entra's own message stays in ARM's log (docs/error-handling.md).
    assert!(
        msg.contains(&vm_id) && !msg.contains("injected fault"),
        "{op}"
    );
    assert!(op["endTime"].is_string() && op["name"].is_string(), "{op}");

    // The VM shows Failed, and why in its instance view (as compute does).
    let (st, v) = w.admin("GET", &vm_id, None).await;
    assert_eq!(st, 200);
    assert_eq!(v["properties"]["provisioningState"], "Failed", "{v}");
    let (st, v) = w
        .admin("GET", &format!("{vm_id}?$expand=instanceView"), None)
        .await;
    assert_eq!(st, 200);
    let status = &v["properties"]["instanceView"]["statuses"][0];
    assert_eq!(
        status["code"], "ProvisioningState/failed/FailedIdentityOperation",
        "{v}"
    );
    assert_eq!(status["level"], "Error", "{v}");
    assert!(
        s(status, "/message").contains("Encountered internal server error."),
        "{v}"
    );

    // Nothing half-made stays: the attempt's principal is deleted again.
    let r = settle(&w).await;
    assert_eq!(r.failed_operations, 1, "{r:?}");
    assert_eq!(r.service_principals, 0, "{r:?}");
    assert!(principals_of(&w, &vm_id).await.is_empty());
    // IMDS knows the failed VM, without identities (`imds_learns_failed_vm`).
    assert_eq!(imds_clients(&w, &vm_id).await, Some(vec![]));
    assert_eq!(
        w.faults.calls(CREATE_SP),
        11,
        "no attempt after giving up: ten, and the cleanup's"
    );

    // The fault goes; the user PUTs the VM again and it succeeds.
    w.faults.clear();
    let (st, _, v) = arm_raw(
        &w,
        "PUT",
        &vm_id,
        Some(vm_body(json!({"type": "SystemAssigned"}))),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Succeeded", "{v}");
    let sami = s(&v, "/identity/principalId");
    assert_eq!(principals_of(&w, &vm_id).await, vec![sami.clone()]);
    assert_eq!(sp_keys(&w, &sami).await, Some(1));
    let ep = w.imds_endpoint(&vm_id).await;
    let (st, t) = w.imds_token(&ep, VAULT_AUD, None).await;
    assert_eq!(st, 200, "{t}");
    let r = settle(&w).await;
    assert_eq!((r.identities, r.service_principals), (1, 1), "{r:?}");
    // The failed operation's status stays readable.
    assert_eq!(poll(&w, &status_url).await["status"], "Failed");
    w.sb.shutdown().await.unwrap();
}

/// Deleting a user-assigned identity cannot fail for good: its record is gone
/// at once, so nothing could retry it. However long Entra refuses to delete
/// the principal, the operation stays pending and completes when it can.
#[tokio::test]
async fn a_uami_delete_outlasts_any_number_of_failures() {
    const DELETE_SP: &str = "misim.entra.v1.Directory/DeleteServicePrincipal";
    let w = start().await;
    w.create_rg("rg1").await;
    let u = create_uami(&w, "rg1", "id1").await;
    let pid = s(&u, "/properties/principalId");
    settle(&w).await;

    w.faults.fail(
        DELETE_SP,
        tonic::Code::InvalidArgument,
        "the principal cannot be deleted (injected fault)",
    );
    let (st, v) = w.admin("DELETE", &w.uami_id("rg1", "id1"), None).await;
    assert_eq!(st, 200, "{v}");
    // More failures than a VM operation is allowed before it fails.
    w.faults.wait_calls(DELETE_SP, 11).await;
    let r = w.sb.doctor().await.unwrap();
    assert_eq!((r.pending_operations, r.failed_operations), (1, 0), "{r:?}");
    assert_eq!(graph_sp(&w, &pid).await, 200, "not deleted yet");

    w.faults.clear();
    let r = settle(&w).await;
    assert_eq!((r.failed_operations, r.service_principals), (0, 0), "{r:?}");
    assert_eq!(graph_sp(&w, &pid).await, 404);
    w.sb.shutdown().await.unwrap();
}
