//! Security suite: code on one VM gets that VM's identities and nothing more.
//!
//! IMDS names the VM from the connection (the listener it arrives on), never
//! from anything the caller sends, so selectors naming another VM's identity,
//! forwarding headers and missing `Metadata` headers are all refused with the
//! answers Azure's IMDS gives.

use serde_json::{Value, json};

use crate::harness::{VAULT_AUD, World, start};

async fn get(w: &World, url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = w.http.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn token_url(ep: &str, extra: &str) -> String {
    format!(
        "{ep}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={VAULT_AUD}{extra}"
    )
}

/// Two VMs, each with a system-assigned identity and its own user-assigned
/// one. Returns (vm1 endpoint, vm2's SAMI principal id, vm2's UAMI (client
/// id, principal id, resource id)).
async fn two_vms(w: &World) -> (String, String, (String, String, String)) {
    w.create_rg("rg1").await;
    let mut uamis = Vec::new();
    for name in ["u1", "u2"] {
        let (s, v) = w
            .admin(
                "PUT",
                &w.uami_id("rg1", name),
                Some(json!({"location": "eastus"})),
            )
            .await;
        assert!(s == 200 || s == 201, "{v}");
        uamis.push(v);
    }
    for (vm, uami) in [("vm1", "u1"), ("vm2", "u2")] {
        w.create_vm(
            "rg1",
            vm,
            json!({"type": "SystemAssigned, UserAssigned",
                   "userAssignedIdentities": {w.uami_id("rg1", uami): {}}}),
        )
        .await;
    }
    let (_, vm2) = w.admin("GET", &w.vm_id("rg1", "vm2"), None).await;
    let ep1 = w.imds_endpoint(&w.vm_id("rg1", "vm1")).await;
    let u2 = &uamis[1]["properties"];
    (
        ep1,
        vm2["identity"]["principalId"].as_str().unwrap().to_owned(),
        (
            u2["clientId"].as_str().unwrap().to_owned(),
            u2["principalId"].as_str().unwrap().to_owned(),
            w.uami_id("rg1", "u2"),
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_cannot_select_another_vms_identities() {
    let w = start().await;
    let (ep1, vm2_sami, (u2_client, u2_principal, u2_id)) = two_vms(&w).await;
    for sel in [
        format!("&client_id={u2_client}"),
        format!("&object_id={u2_principal}"),
        format!("&msi_res_id={u2_id}"),
        format!("&object_id={vm2_sami}"),
        // Case and encoding variants of the same ids.
        format!("&client_id={}", u2_client.to_uppercase()),
        format!("&msi_res_id={}", u2_id.to_uppercase()),
        format!("&msi_res_id={}", u2_id.replace('/', "%2F")),
    ] {
        let (s, v) = get(&w, &token_url(&ep1, &sel), &[("Metadata", "true")]).await;
        assert_eq!(s, 400, "{sel}: {v}");
        assert_eq!(
            v,
            json!({"error": "invalid_request", "error_description": "Identity not found"}),
            "{sel}"
        );
    }
    // Parameters IMDS does not define (App Service's `principal_id`) are
    // ignored: the answer is vm1's own system-assigned identity, never vm2's.
    let (s, v) = get(
        &w,
        &token_url(&ep1, &format!("&principal_id={u2_principal}")),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (_, own) = get(&w, &token_url(&ep1, ""), &[("Metadata", "true")]).await;
    assert_eq!(v["client_id"], own["client_id"]);
    assert_ne!(v["client_id"], json!(u2_client));
    // vm1's own user-assigned identity is still served.
    let own = w.uami_id("rg1", "u1");
    let (s, v) = get(
        &w,
        &token_url(&ep1, &format!("&msi_res_id={own}")),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_ne!(v["client_id"], json!(u2_client));
}

#[tokio::test(flavor = "multi_thread")]
async fn imds_header_rules_hold_through_the_sandbox() {
    let w = start().await;
    let (ep1, _, _) = two_vms(&w).await;
    let url = token_url(&ep1, "");
    let missing = json!({"error": "invalid_request", "error_description": "Required metadata header not specified"});
    for headers in [
        &[][..],
        &[("Metadata", "false")][..],
        &[("Metadata", "")][..],
    ] {
        let (s, v) = get(&w, &url, headers).await;
        assert_eq!(s, 400, "{headers:?}");
        assert_eq!(v, missing, "{headers:?}");
    }
    // A request that came through a proxy is refused: IMDS is for code on the
    // VM itself, and Azure documents rejecting any request with X-Forwarded-For.
    let (s, v) = get(
        &w,
        &url,
        &[("Metadata", "true"), ("X-Forwarded-For", "127.0.0.1")],
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"], "invalid_request", "{v}");
    // The App Service endpoint needs the VM's own identity header.
    let app = format!("{ep1}/msi/token?api-version=2019-08-01&resource={VAULT_AUD}");
    let (s, _) = get(&w, &app, &[]).await;
    assert_eq!(s, 400);
    let (s, v) = get(&w, &app, &[("X-IDENTITY-HEADER", "guessed")]).await;
    assert_eq!(s, 401, "{v}");
    // And a well-formed request works.
    let (s, v) = get(&w, &url, &[("Metadata", "true")]).await;
    assert_eq!(s, 200, "{v}");
}

/// Every VM's endpoint is on IMDS's one port, at the VM's own loopback
/// address: the address called names the VM, so each VM gets its own
/// identity there, and an address no VM holds gets nobody's.
#[tokio::test(flavor = "multi_thread")]
async fn vms_share_one_port_and_the_address_called_names_the_vm() {
    let w = start().await;
    w.create_rg("rg1").await;
    let mut principals = Vec::new();
    let mut endpoints = Vec::new();
    for vm in ["vm1", "vm2"] {
        let v = w
            .create_vm("rg1", vm, json!({"type": "SystemAssigned"}))
            .await;
        principals.push(v["identity"]["principalId"].as_str().unwrap().to_owned());
        endpoints.push(w.imds_endpoint(&w.vm_id("rg1", vm)).await);
    }
    let addr =
        |ep: &str| -> std::net::SocketAddr { ep.trim_start_matches("http://").parse().unwrap() };
    let (a1, a2) = (addr(&endpoints[0]), addr(&endpoints[1]));
    assert_eq!(a1.port(), a2.port(), "one port");
    assert_ne!(a1.ip(), a2.ip(), "an address per VM");
    for (ep, principal) in endpoints.iter().zip(&principals) {
        let (s, v) = w.imds_token(ep, VAULT_AUD, None).await;
        assert_eq!(s, 200, "{v}");
        let claims = w
            .verify_with_jwks(v["access_token"].as_str().unwrap(), VAULT_AUD)
            .await;
        assert_eq!(&claims.oid, principal, "{ep} serves its own VM's identity");
    }
    let stranger = format!("http://127.64.250.250:{}", a1.port());
    let (s, v) = get(&w, &token_url(&stranger, ""), &[("Metadata", "true")]).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        v,
        json!({"error": "invalid_request", "error_description": "Identity not found"})
    );
}
