//! Managed-identity certificate renewal against the fake Entra and IMDS: renewed after 45
//! days of the (manual) clock, registered with Entra before IMDS gets it, the old certificate
//! removed once expired; a user-assigned identity's reaches every VM carrying it; an Entra
//! outage leaves the renewal pending and it completes afterwards; `renew_credentials` renews on
//! demand (`misim identity renew`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use misim_arm::ArmError;
use misim_arm::domain::renew_now::{RenewWhich, Renewed};
use misim_proto::arm::v1::{DoctorRequest, operations_client::OperationsClient};
use misim_proto::faults::{FaultHook, Faults};

use super::*;

const DAY: Duration = Duration::from_secs(86400);

impl Harness {
    /// The thumbprints Entra holds for a principal.
    pub(super) fn entra_thumbprints(&self, principal: &str) -> Vec<String> {
        self.shared.lock().service_principals[principal]
            .key_credentials
            .iter()
            .map(|k| k.thumbprint_sha1.clone())
            .collect()
    }

    /// The thumbprint IMDS signs with for `client` on `vm_id`.
    pub(super) fn imds_thumbprint(&self, vm_id: &str, client: &str) -> String {
        self.shared.lock().vms[&vm_id.to_ascii_lowercase()]
            .iter()
            .find(|i| i.client_id == client)
            .map(|i| i.certificate_thumbprint.clone())
            .expect("identity configured in IMDS")
    }

    async fn sami_vm(&self, name: &str) -> (String, String, String) {
        let (s, v) = self
            .call(
                "PUT",
                &vm_path("rg1", name),
                Some(vm_body(json!({"type": "SystemAssigned"}))),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let principal = v["identity"]["principalId"].as_str().unwrap().to_owned();
        let client = self.shared.lock().service_principals[&principal]
            .app_id
            .clone();
        (v["id"].as_str().unwrap().to_owned(), principal, client)
    }

    pub(super) async fn drifts(&self) -> Vec<String> {
        let url = serve_arm_grpc(&self.arm).await;
        let report = OperationsClient::new(channel_as(Caller::Admin, &url))
            .doctor(DoctorRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(report.pending_operations, 0, "{report:?}");
        report.drifts.into_iter().map(|d| d.detail).collect()
    }
}

#[tokio::test]
async fn a_certificate_is_renewed_after_45_days_and_the_old_one_removed_once_expired() {
    let h = harness().await;
    h.rg("rg1").await;
    let (vm_id, principal, client) = h.sami_vm("vm1").await;
    let first = h.entra_thumbprints(&principal);
    assert_eq!(first.len(), 1);
    assert_eq!(h.imds_thumbprint(&vm_id, &client), first[0]);

    // 44 days: nothing is due.
    h.clock.advance(DAY * 44);
    h.clear_calls();
    assert_eq!(h.arm.renew_due_credentials().await.unwrap(), 0);
    assert!(h.calls().is_empty(), "{:?}", h.calls());

    // 46 days: a new certificate, registered with Entra before IMDS gets it.
    h.clock.advance(DAY * 2);
    assert_eq!(h.arm.renew_due_credentials().await.unwrap(), 1);
    assert_eq!(
        h.calls(),
        vec![
            format!("AddKeyCredential {principal}"),
            format!("PutIdentity {vm_id} kind=1 client={client}"),
        ]
    );
    let both = h.entra_thumbprints(&principal);
    assert_eq!(
        both.len(),
        2,
        "Entra accepts old and new during the overlap"
    );
    let renewed = h.imds_thumbprint(&vm_id, &client);
    assert_ne!(renewed, first[0]);
    assert!(both.contains(&renewed) && both.contains(&first[0]));
    let sp = h.shared.lock().service_principals[&principal].clone();
    let new_key = sp
        .key_credentials
        .iter()
        .find(|k| k.thumbprint_sha1 == renewed)
        .unwrap();
    assert_eq!(new_key.start_unix, (NOW + 46 * 86400) as i64);
    assert_eq!(new_key.end_unix - new_key.start_unix, 90 * 86400);
    assert!(h.drifts().await.is_empty(), "overlap is not drift");
    // Nothing more until the old certificate expires.
    h.clear_calls();
    assert_eq!(h.arm.renew_due_credentials().await.unwrap(), 0);
    h.clock.advance(DAY * 44); // day 90: the old one still valid, to its last second
    assert_eq!(h.arm.renew_due_credentials().await.unwrap(), 0);
    assert!(h.calls().is_empty(), "{:?}", h.calls());

    // Past its notAfter the old certificate goes from Entra; IMDS keeps the new one.
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(h.arm.renew_due_credentials().await.unwrap(), 1);
    assert_eq!(
        h.calls().last().unwrap(),
        &format!("RemoveKeyCredential {principal} {}", first[0])
    );
    assert_eq!(h.entra_thumbprints(&principal), vec![renewed.clone()]);
    assert_eq!(h.imds_thumbprint(&vm_id, &client), renewed);
    assert!(h.drifts().await.is_empty());
}

#[tokio::test]
async fn a_user_assigned_identity_is_renewed_on_every_vm_that_carries_it() {
    let h = harness().await;
    h.rg("rg1").await;
    let u = h.uami("rg1", "id1").await;
    let uid = u["id"].as_str().unwrap().to_owned();
    let principal = u["properties"]["principalId"].as_str().unwrap().to_owned();
    let client = u["properties"]["clientId"].as_str().unwrap().to_owned();
    let mut vms = Vec::new();
    for name in ["vm1", "vm2"] {
        let (s, v) = h
            .call(
                "PUT",
                &vm_path("rg1", name),
                Some(vm_body(
                    json!({"type": "UserAssigned", "userAssignedIdentities": {uid.clone(): {}}}),
                )),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        vms.push(v["id"].as_str().unwrap().to_owned());
    }
    let first = h.entra_thumbprints(&principal)[0].clone();
    h.clock.advance(DAY * 46);
    h.clear_calls();
    assert_eq!(h.arm.renew_due_credentials().await.unwrap(), 1);
    let calls = h.calls();
    assert_eq!(calls[0], format!("AddKeyCredential {principal}"));
    let mut pushed: Vec<&String> = calls[1..].iter().collect();
    pushed.sort();
    assert_eq!(
        pushed,
        vms.iter()
            .map(|v| format!("PutIdentity {v} kind=2 client={client}"))
            .collect::<Vec<_>>()
            .iter()
            .collect::<Vec<_>>()
    );
    for vm in &vms {
        let t = h.imds_thumbprint(vm, &client);
        assert_ne!(t, first);
        assert!(h.entra_thumbprints(&principal).contains(&t));
    }
    // ARM's record serves the new certificate to a VM that attaches it later.
    let (s, v) = h
        .call(
            "PUT",
            &vm_path("rg1", "vm3"),
            Some(vm_body(
                json!({"type": "UserAssigned", "userAssignedIdentities": {uid.clone(): {}}}),
            )),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        h.imds_thumbprint(v["id"].as_str().unwrap(), &client),
        h.imds_thumbprint(&vms[0], &client)
    );
    assert!(h.drifts().await.is_empty());
}

/// Fails every call to Entra's Directory (to IMDS's control plane) while `entra` (`imds`),
/// as an unreachable peer would.
#[derive(Debug, Default)]
pub(super) struct PeersDown {
    pub(super) entra: AtomicBool,
    pub(super) imds: AtomicBool,
}

impl FaultHook for PeersDown {
    fn before_call(&self, service: &str, _method: &str) -> Option<tonic::Status> {
        let down = if service.ends_with("Directory") {
            &self.entra
        } else if service.starts_with("misim.imds.") {
            &self.imds
        } else {
            return None;
        };
        down.load(Ordering::SeqCst)
            .then(|| tonic::Status::unavailable("peer is down"))
    }
}

/// A system-assigned VM whose 45-day renewal is pending because Entra is down (still down on
/// return): the peers' switches, the harness, the VM's id, principal and client ids, and the
/// thumbprint IMDS signs with.
async fn renewal_held_by_entra() -> (Arc<PeersDown>, Harness, String, String, String, String) {
    let down = Arc::new(PeersDown::default());
    let h = harness_full(None, Faults::with(down.clone())).await;
    h.rg("rg1").await;
    let (vm_id, principal, client) = h.sami_vm("vm1").await;
    let first = h.imds_thumbprint(&vm_id, &client);
    down.entra.store(true, Ordering::SeqCst);
    h.clock.advance(DAY * 46);
    assert_eq!(h.arm.renew_due_credentials().await.unwrap(), 1);
    (down, h, vm_id, principal, client, first)
}

#[tokio::test]
async fn a_renewal_held_up_by_an_entra_outage_stays_pending_and_completes_after() {
    let (down, h, vm_id, principal, client, first) = renewal_held_by_entra().await;
    // Nothing reached IMDS: it still signs with a certificate Entra accepts.
    assert_eq!(h.imds_thumbprint(&vm_id, &client), first);
    assert_eq!(h.entra_thumbprints(&principal), vec![first.clone()]);
    // A second look retries the same operation rather than piling up another.
    assert_eq!(h.arm.renew_due_credentials().await.unwrap(), 1);
    let (s, v) = h.call("GET", &vm_path("rg1", "vm1"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["properties"]["provisioningState"], "Succeeded",
        "a background renewal does not touch the VM's state"
    );

    down.entra.store(false, Ordering::SeqCst);
    assert_eq!(h.arm.renew_due_credentials().await.unwrap(), 1);
    let renewed = h.imds_thumbprint(&vm_id, &client);
    assert_ne!(renewed, first);
    assert_eq!(h.entra_thumbprints(&principal).len(), 2);
    assert!(h.drifts().await.is_empty());
}

async fn renew(h: &Harness, names: &[&str]) -> Result<Vec<Renewed>, ArmError> {
    let names = names.iter().map(|n| (*n).to_owned()).collect();
    h.arm
        .renew_credentials(&RenewWhich::Identities(names))
        .await
}

/// `Arm::renew_credentials` (`misim identity renew`) renews at once, whatever the
/// certificate's age, Entra before IMDS; an identity is found by client id (any case),
/// object id or resource id, and renewed once however many of its names are given; an
/// unknown name renews nothing. One that IMDS's outage holds up says so and is completed by
/// the VM's next operation, which only pushes it: a renewal already recorded is not redone.
#[tokio::test]
async fn renew_credentials_renews_now_by_any_name_and_once() {
    let down = Arc::new(PeersDown::default());
    let h = harness_full(None, Faults::with(down.clone())).await;
    h.rg("rg1").await;
    let (vm_id, principal, client) = h.sami_vm("vm1").await;
    let first = h.imds_thumbprint(&vm_id, &client);

    h.clear_calls();
    let e = renew(&h, &[&client, "nope"]).await.unwrap_err();
    assert!(
        matches!(&e, ArmError::IdentityNotFound(n) if n == "nope"),
        "{e}"
    );
    assert!(h.calls().is_empty(), "nothing renewed: {:?}", h.calls());

    let r = renew(&h, &[&client.to_ascii_uppercase()]).await.unwrap();
    let second = h.imds_thumbprint(&vm_id, &client);
    assert_ne!(second, first, "renewed on day 0");
    assert_eq!(
        r,
        vec![Renewed {
            resource_id: vm_id.clone(),
            principal_id: principal.clone(),
            client_id: client.clone(),
            previous_thumbprint: first.clone(),
            thumbprint: second.clone(),
            done: true,
        }]
    );
    assert_eq!(
        h.calls(),
        vec![
            format!("AddKeyCredential {principal}"),
            format!("PutIdentity {vm_id} kind=1 client={client}"),
        ]
    );
    let r = renew(&h, &[&vm_id, &principal]).await.unwrap();
    assert_eq!(r.len(), 1, "one identity, named twice: {r:?}");
    let third = h.imds_thumbprint(&vm_id, &client);
    let held = h.entra_thumbprints(&principal);
    assert!(
        held.len() == 3 && [&first, &second, &third].iter().all(|t| held.contains(t)),
        "each old certificate stays until it expires: {held:?}"
    );

    down.imds.store(true, Ordering::SeqCst);
    let r = renew(&h, &[&principal]).await.unwrap();
    assert!(!r[0].done && r[0].thumbprint != third, "{r:?}");
    assert_eq!(
        h.imds_thumbprint(&vm_id, &client),
        third,
        "IMDS keeps a certificate Entra accepts"
    );
    assert_eq!(h.entra_thumbprints(&principal).len(), 4);
    down.imds.store(false, Ordering::SeqCst);
    h.clear_calls();
    let (s, v) = h
        .call(
            "PUT",
            &vm_path("rg1", "vm1"),
            Some(vm_body(json!({"type": "SystemAssigned"}))),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        !h.calls().iter().any(|c| c.starts_with("AddKeyCredential")),
        "resumed without renewing again: {:?}",
        h.calls()
    );
    assert_eq!(h.imds_thumbprint(&vm_id, &client), r[0].thumbprint);
    assert_eq!(h.entra_thumbprints(&principal).len(), 4);
    assert!(h.drifts().await.is_empty());
}

/// A renewal requested while the 45-day one is pending (held up by an Entra outage) renews
/// once: the pending operation is told to renew, not followed by a second one.
#[tokio::test]
async fn renew_credentials_with_a_renewal_pending_renews_once() {
    let (down, h, vm_id, principal, client, first) = renewal_held_by_entra().await;
    down.entra.store(false, Ordering::SeqCst);
    h.clear_calls();
    let r = renew(&h, &[&client]).await.unwrap();
    assert!(r[0].done, "{r:?}");
    let added: Vec<String> = h
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("AddKeyCredential"))
        .collect();
    assert_eq!(added.len(), 1, "renewed once: {:?}", h.calls());
    assert_ne!(h.imds_thumbprint(&vm_id, &client), first);
    assert_eq!(h.entra_thumbprints(&principal).len(), 2);
    assert!(h.drifts().await.is_empty());
}

/// The doctor counts a renewal that is due as pending work before any
/// operation for it is written (right after a restart, the reconciler has
/// not looked yet): "converged" is never reported while a due certificate
/// has not been renewed.
#[tokio::test]
async fn a_renewal_due_and_not_yet_scheduled_is_pending_for_the_doctor() {
    let h = harness().await;
    h.rg("rg1").await;
    h.sami_vm("vm1").await;
    let url = serve_arm_grpc(&h.arm).await;
    let doctor = || async {
        OperationsClient::new(channel_as(Caller::Admin, &url))
            .doctor(DoctorRequest {})
            .await
            .unwrap()
            .into_inner()
    };
    assert_eq!(doctor().await.pending_operations, 0);
    h.clock.advance(DAY * 46);
    let report = doctor().await;
    assert_eq!(report.pending_operations, 1, "{report:?}");
    assert!(report.drifts.is_empty(), "{report:?}");

    assert_eq!(h.arm.renew_due_credentials().await.unwrap(), 1);
    assert_eq!(doctor().await.pending_operations, 0);
}
