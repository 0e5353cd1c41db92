//! Operation-status URLs (`Azure-AsyncOperation`, `Location`) are as private
//! as the resource the operation converges.

use super::*;

const OTHER: &str = "44444444-4444-4444-8444-444444444444";
const READER_OID: &str = "55555555-5555-4555-8555-555555555555";

/// A harness whose IMDS never answers, so VM operations stay in progress.
async fn stuck_harness() -> Harness {
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    harness_with(Some(&url)).await
}

/// The path and query of an absolute URL ARM handed out.
fn local(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    rest[rest.find('/').unwrap()..].to_owned()
}

async fn poll_as(h: &Harness, oid: &str, path: &str) -> (StatusCode, Value) {
    let (s, _, v) = h.raw("GET", path, Some(&h.token(oid)), None).await;
    (s, v)
}

fn assert_refused(s: StatusCode, v: &Value, oid: &str, vm: &str) {
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "AuthorizationFailed", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(oid)
            && msg.contains("Microsoft.Compute/virtualMachines/read")
            && msg.to_lowercase().contains(&vm.to_lowercase()),
        "{msg}"
    );
}

#[tokio::test]
async fn compute_operation_status_needs_read_on_the_vm() {
    let h = stuck_harness().await;
    h.rg("rg1").await;
    h.principal(OTHER);
    h.principal(READER_OID);
    let vm = vm_path("rg1", "vm1");
    let (s, headers, v) = h
        .raw(
            "PUT",
            &format!("{}?api-version=2024-11-01", vm_path("rg1", "vm1")),
            Some(&h.token(ADMIN)),
            Some(&vm_body(json!({"type": "SystemAssigned"})).to_string()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let status = local(headers["azure-asyncoperation"].to_str().unwrap());

    let (s, v) = poll_as(&h, ADMIN, &status).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "InProgress", "{v}");

    // Any other principal with a valid ARM token: refused as a GET of the VM is.
    let (s, v) = poll_as(&h, OTHER, &status).await;
    assert_refused(s, &v, OTHER, &vm);
    let (s, gv) = h.call_as(OTHER, "GET", &vm_path("rg1", "vm1"), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{gv}");

    // Reader on the resource group may read the VM, so it may poll too.
    h.assign(READER_OID, READER, &rg_path("rg1")).await;
    let (s, v) = poll_as(&h, READER_OID, &status).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // The same operation under another subscription's URL does not exist there.
    let elsewhere = status.replace(SUB, "99999999-9999-4999-8999-999999999999");
    let (s, v) = poll_as(&h, ADMIN, &elsewhere).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    // While the VM is being deleted its operation URL is still guarded.
    let (s, headers, v) = h
        .raw(
            "DELETE",
            &format!("{}?api-version=2024-11-01", vm_path("rg1", "vm1")),
            Some(&h.token(ADMIN)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let delete_status = local(headers["location"].to_str().unwrap());
    let (s, v) = poll_as(&h, OTHER, &delete_status).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "AuthorizationFailed", "{v}");
    let (s, v) = poll_as(&h, ADMIN, &delete_status).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn resource_group_deletion_location_needs_read_on_its_resources() {
    let h = stuck_harness().await;
    h.rg("rg1").await;
    h.principal(OTHER);
    let (s, v) = h
        .call(
            "PUT",
            &vm_path("rg1", "vm1"),
            Some(vm_body(json!({"type": "SystemAssigned"}))),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, headers, v) = h
        .raw(
            "DELETE",
            &format!("{}?api-version=2024-11-01", rg_path("rg1")),
            Some(&h.token(ADMIN)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let location = local(headers["location"].to_str().unwrap());
    assert!(location.contains("/operationresults/"), "{location}");

    let (s, v) = poll_as(&h, OTHER, &location).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "AuthorizationFailed", "{v}");
    let (s, v) = poll_as(&h, ADMIN, &location).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
}
