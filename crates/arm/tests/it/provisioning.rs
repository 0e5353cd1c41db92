//! Provisioning's calls to the peers (misim issue #11, target 1): a managed identity's
//! principal is created with its certificate in one call to Entra, and a VM operation gives
//! IMDS the VM with every identity it carries in one `PutVm`.

use std::sync::atomic::Ordering;

use misim_proto::faults::Faults;

use super::renewal::PeersDown;
use super::*;

/// A user-assigned identity PUT is one call to Entra: the principal comes back
/// with ARM's ids and its certificate registered.
#[tokio::test]
async fn a_uami_put_is_one_call_to_entra_that_registers_its_certificate() {
    let h = harness().await;
    h.rg("rg1").await;
    h.clear_calls();
    let v = h.uami("rg1", "id1").await;
    let principal = v["properties"]["principalId"].as_str().unwrap();
    let sp = h.shared.lock().service_principals[principal].clone();
    assert_eq!(v["properties"]["clientId"], sp.app_id);
    assert_eq!(h.entra_thumbprints(principal).len(), 1, "{sp:?}");
    let calls = h.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].starts_with("CreateServicePrincipal "), "{calls:?}");
}

/// A VM with both kinds of identity: one `CreateServicePrincipal` (its system
/// identity, with the certificate) and one `PutVm` carrying both identities;
/// detaching the user-assigned one is a `PutVm` with the system identity and a
/// `RemoveIdentity`.
#[tokio::test]
async fn a_vm_operation_puts_the_vm_with_every_identity_it_carries_in_one_call() {
    let h = harness().await;
    h.rg("rg1").await;
    let u = h.uami("rg1", "id1").await;
    let (uid, uclient) = (
        u["id"].as_str().unwrap().to_owned(),
        u["properties"]["clientId"].as_str().unwrap().to_owned(),
    );
    h.clear_calls();
    let (s, v) = h
        .call(
            "PUT",
            &vm_path("rg1", "vm1"),
            Some(vm_body(json!({
                "type": "SystemAssigned, UserAssigned",
                "userAssignedIdentities": {&uid: {}}
            }))),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let vm_id = v["id"].as_str().unwrap().to_owned();
    let principal = v["identity"]["principalId"].as_str().unwrap();
    let client = h.shared.lock().service_principals[principal].app_id.clone();
    assert_eq!(
        h.calls(),
        vec![
            format!("CreateServicePrincipal {vm_id}"),
            format!(
                "PutVm {vm_id} size=Standard_B1s os=Linux user=azureuser pub=Canonical \
                 + kind=1 client={client} + kind=2 client={uclient}"
            ),
        ]
    );
    // IMDS signs with the certificates Entra holds.
    assert_eq!(
        vec![h.imds_thumbprint(&vm_id, &client)],
        h.entra_thumbprints(principal)
    );
    assert!(h.drifts().await.is_empty());

    h.clear_calls();
    let (s, v) = h
        .call(
            "PATCH",
            &vm_path("rg1", "vm1"),
            Some(json!({"identity": {"type": "SystemAssigned"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        h.calls(),
        vec![
            format!(
                "PutVm {vm_id} size=Standard_B1s os=Linux user=azureuser pub=Canonical \
                 + kind=1 client={client}"
            ),
            format!("RemoveIdentity {vm_id} client={uclient}"),
        ]
    );
    assert!(h.drifts().await.is_empty());
}

/// PUTs rg1/vm1 with a system-assigned identity.
async fn put_system_assigned(h: &Harness) -> (StatusCode, Value) {
    h.call(
        "PUT",
        &vm_path("rg1", "vm1"),
        Some(vm_body(json!({"type": "SystemAssigned"}))),
    )
    .await
}

/// A harness whose Entra is down (still down on return) and rg1/vm1, PUT
/// with a system-assigned identity meanwhile: accepted, left updating. The
/// peers' switches, the harness and the PUT's answer.
async fn created_while_entra_is_down() -> (Arc<PeersDown>, Harness, Value) {
    let down = Arc::new(PeersDown::default());
    let h = harness_full(None, Faults::with(down.clone())).await;
    h.rg("rg1").await;
    down.entra.store(true, Ordering::SeqCst);
    let (s, v) = put_system_assigned(&h).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Updating", "{v}");
    (down, h, v)
}

/// Entra down when the VM is created: the VM is left updating, IMDS has not
/// heard of it, and the operation's next run (here, before the VM's
/// next write) creates the principal with the credential the intent recorded:
/// one principal, one certificate, Entra and IMDS in agreement.
#[tokio::test]
async fn a_create_held_by_an_entra_outage_completes_with_one_principal_and_certificate() {
    let (down, h, v) = created_while_entra_is_down().await;
    let vm_id = v["id"].as_str().unwrap().to_owned();
    assert!(
        h.shared.lock().service_principals.len() <= 1,
        "the admin's at most"
    );
    assert!(
        !h.shared
            .lock()
            .vms
            .contains_key(&vm_id.to_ascii_lowercase())
    );

    down.entra.store(false, Ordering::SeqCst);
    // The user PUTs it again: the pending operation runs first, then this one.
    let (s, v) = put_system_assigned(&h).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Succeeded", "{v}");
    let principal = v["identity"]["principalId"]
        .as_str()
        .expect("a system identity");
    let sps = h.shared.lock().service_principals.clone();
    assert_eq!(sps.keys().collect::<Vec<_>>(), [principal], "one principal");
    assert_eq!(h.entra_thumbprints(principal).len(), 1);
    // The second PUT left the creation to the pending operation: no principal
    // of its own, made and deleted again.
    let calls = h.calls();
    let created: Vec<_> = calls
        .iter()
        .filter(|c| c.starts_with("CreateServicePrincipal") && !c.ends_with("(again)"))
        .collect();
    assert_eq!(created.len(), 1, "{calls:?}");
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("DeleteServicePrincipal")),
        "{calls:?}"
    );
    assert!(h.drifts().await.is_empty());
}

/// A PATCH that names no identity keeps the one the VM is to have, even while
/// its creation is still pending (it once read "has no principal yet" as "has
/// no system identity" and dropped it).
#[tokio::test]
async fn a_patch_while_the_system_identity_is_pending_keeps_it() {
    let (down, h, _) = created_while_entra_is_down().await;

    let tags = json!({"tags": {"team": "a"}});
    let (s, v) = h.call("PATCH", &vm_path("rg1", "vm1"), Some(tags)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["identity"]["type"], "SystemAssigned", "{v}");

    down.entra.store(false, Ordering::SeqCst);
    let tags = json!({"tags": {"team": "b"}});
    let (s, v) = h.call("PATCH", &vm_path("rg1", "vm1"), Some(tags)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Succeeded", "{v}");
    assert_eq!(v["identity"]["type"], "SystemAssigned", "{v}");
    let principal = v["identity"]["principalId"].as_str().expect("a principal");
    assert_eq!(h.entra_thumbprints(principal).len(), 1);
    assert!(h.drifts().await.is_empty());
}

/// One operation that creates a system identity twice: IMDS is down, so the
/// VM's first operation is retried with each later write, and those writes
/// disable the identity and then enable it again before it ends. The second
/// identity is a new principal: under the first one's request id Entra would
/// answer with the principal the operation is retiring, and the VM would be
/// left pointing at a deleted one.
#[tokio::test]
async fn an_identity_disabled_and_enabled_again_within_one_operation_is_a_new_principal() {
    let down = Arc::new(PeersDown::default());
    let h = harness_full(None, Faults::with(down.clone())).await;
    h.rg("rg1").await;
    down.imds.store(true, Ordering::SeqCst);
    for kind in ["SystemAssigned", "None", "SystemAssigned"] {
        let (s, v) = h
            .call(
                "PUT",
                &vm_path("rg1", "vm1"),
                Some(vm_body(json!({ "type": kind }))),
            )
            .await;
        assert!(s.is_success(), "{v}");
        assert_eq!(v["properties"]["provisioningState"], "Updating", "{v}");
    }

    down.imds.store(false, Ordering::SeqCst);
    let (s, v) = put_system_assigned(&h).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Succeeded", "{v}");
    let principal = v["identity"]["principalId"].as_str().expect("a principal");
    let sps = h.shared.lock().service_principals.clone();
    let managed: Vec<&String> = sps
        .iter()
        .filter(|(_, p)| !p.managed_identity_resource_id.is_empty())
        .map(|(k, _)| k)
        .collect();
    assert_eq!(managed, [principal], "the VM's principal, and only it");
    assert_eq!(h.entra_thumbprints(principal).len(), 1);
    assert!(h.drifts().await.is_empty());
}

/// Entra down (every Directory call unavailable) or refusing the principal's
/// creation (a refusal the operation counts against itself).
#[derive(Debug, Default)]
struct EntraRefuses {
    down: std::sync::atomic::AtomicBool,
    refuses: std::sync::atomic::AtomicBool,
}

impl misim_proto::faults::FaultHook for EntraRefuses {
    fn before_call(&self, service: &str, method: &str) -> Option<tonic::Status> {
        if !service.ends_with("Directory") {
            None
        } else if self.down.load(Ordering::SeqCst) {
            Some(tonic::Status::unavailable("peer is down"))
        } else if self.refuses.load(Ordering::SeqCst) && method == "CreateServicePrincipal" {
            Some(tonic::Status::invalid_argument("refused"))
        } else {
            None
        }
    }
}

/// A second PUT that wants the system identity while the first one's
/// operation is still to create it leaves the creation to that operation.
/// Should that operation then fail for good, the VM still gets its identity:
/// the next operation that finds it missing creates it, one principal with one
/// certificate.
#[tokio::test]
async fn a_system_identity_left_to_an_operation_that_fails_for_good_is_created_by_the_next() {
    let entra = Arc::new(EntraRefuses::default());
    let h = harness_full(None, Faults::with(entra.clone())).await;
    h.rg("rg1").await;
    entra.down.store(true, Ordering::SeqCst);
    for expected in [StatusCode::CREATED, StatusCode::OK] {
        let (s, v) = put_system_assigned(&h).await;
        assert_eq!(s, expected, "{v}");
        assert_eq!(v["properties"]["provisioningState"], "Updating", "{v}");
    }

    // The first operation's creation is refused on each of its runs (one per
    // write to the VM) until it fails for good.
    entra.down.store(false, Ordering::SeqCst);
    entra.refuses.store(true, Ordering::SeqCst);
    let mut failed = false;
    for team in 0..12 {
        let tags = json!({"tags": {"team": team.to_string()}});
        let (s, v) = h.call("PATCH", &vm_path("rg1", "vm1"), Some(tags)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if v["properties"]["provisioningState"] == "Failed" {
            failed = true;
            break;
        }
    }
    assert!(failed, "the first operation fails for good");

    entra.refuses.store(false, Ordering::SeqCst);
    let (s, v) = put_system_assigned(&h).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Succeeded", "{v}");
    let principal = v["identity"]["principalId"].as_str().expect("a principal");
    let sps = h.shared.lock().service_principals.clone();
    assert_eq!(sps.keys().collect::<Vec<_>>(), [principal], "one principal");
    assert_eq!(h.entra_thumbprints(principal).len(), 1);
    assert!(h.drifts().await.is_empty());
}
