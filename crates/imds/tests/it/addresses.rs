//! Per-VM-address mode: every VM has its own loopback address, all served on one port by
//! one listening socket; the address a connection is made to names the VM.

use super::*;

/// The address and port of an endpoint URL `http://a.b.c.d:port`.
fn addr_of(endpoint: &str) -> std::net::SocketAddr {
    endpoint.trim_start_matches("http://").parse().unwrap()
}

/// Listening TCP sockets on `port` in this network namespace (`/proc/net/tcp`, state 0A).
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&port) && f[3] == "0A"
        })
        .count()
}

/// A token request to `endpoint` (any base URL) with `Metadata: true`, by `client`.
async fn token_at(client: &reqwest::Client, endpoint: &str) -> (u16, Value) {
    let r = client
        .get(format!(
            "{endpoint}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={ARM}"
        ))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// VM1 and VM2, each with its own system-assigned identity (`client-vm1`, `client-vm2`).
async fn two_vms(h: &Harness) -> (pb::Vm, pb::Vm) {
    let vm1 = h.put_vm(VM1).await;
    let vm2 = h.put_vm(VM2).await;
    h.put_identity(VM1, identity(SAMI, "vm1", 0)).await;
    h.put_identity(VM2, identity(SAMI, "vm2", 1)).await;
    (vm1, vm2)
}

#[tokio::test]
async fn two_vms_share_one_port_and_one_socket_yet_each_sees_only_its_own() {
    let h = harness().await;
    let (vm1, vm2) = two_vms(&h).await;
    let (a1, a2) = (addr_of(&vm1.imds_endpoint), addr_of(&vm2.imds_endpoint));
    assert_eq!(a1.port(), a2.port(), "one port");
    assert_ne!(a1.ip(), a2.ip(), "each VM its own address");
    for a in [a1, a2] {
        let std::net::IpAddr::V4(ip) = a.ip() else {
            panic!("{a}")
        };
        assert_eq!(ip.octets()[..2], [127, 64], "{a}: in 127.64.0.0/10");
    }
    if cfg!(target_os = "linux") {
        assert_eq!(listening_sockets(a1.port()), 1, "one listening socket");
    }
    assert_eq!(client_of(&h.token(&vm1, "").await.1), "client-vm1");
    assert_eq!(client_of(&h.token(&vm2, "").await.1), "client-vm2");
    // Naming the other VM's identity gets nothing, whichever address asks.
    let (s, b) = h.token(&vm1, "&client_id=client-vm2").await;
    assert_eq!(s, 400);
    error_is(&b, "invalid_request", "Identity not found");
    // Alternating between the two addresses over kept-alive connections:
    // each connection stays bound to the VM it was made to.
    for _ in 0..3 {
        assert_eq!(client_of(&h.token(&vm2, "").await.1), "client-vm2");
        assert_eq!(client_of(&h.token(&vm1, "").await.1), "client-vm1");
    }
}

#[tokio::test]
async fn an_address_no_vm_holds_gets_identity_not_found() {
    let h = harness().await;
    let vm = h.put_vm(VM1).await;
    h.put_identity(VM1, identity(SAMI, "vm1", 0)).await;
    let port = addr_of(&vm.imds_endpoint).port();
    for stranger in ["127.64.200.7", "127.0.0.1", "127.1.2.3"] {
        let (s, b) = token_at(&h.http, &format!("http://{stranger}:{port}")).await;
        assert_eq!(s, 400, "{stranger}: {b}");
        error_is(&b, "invalid_request", "Identity not found");
    }
    // The VM itself is served.
    assert_eq!(token_at(&h.http, &vm.imds_endpoint).await.0, 200);
}

/// The caller's source address says nothing: a client calling from another
/// loopback address gets the VM whose address it calls.
#[tokio::test]
async fn the_called_address_names_the_vm_whatever_the_source() {
    let h = harness().await;
    let (vm1, vm2) = two_vms(&h).await;
    // A client bound to vm2's address, calling vm1's.
    let from_vm2 = reqwest::Client::builder()
        .no_proxy()
        .local_address(addr_of(&vm2.imds_endpoint).ip())
        .build()
        .unwrap();
    let (s, b) = token_at(&from_vm2, &vm1.imds_endpoint).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(client_of(&b), "client-vm1");
}

/// The VM `id` as IMDS's `Control.GetVm` answers.
async fn get_vm(h: &Harness, id: &str) -> pb::Vm {
    Control::get_vm(
        &h.imds,
        Request::new(pb::GetVmRequest {
            resource_id: id.into(),
        }),
    )
    .await
    .unwrap()
    .into_inner()
}

/// IMDS on a store in `dir`, against the fake Entra at `url`.
async fn open_in(
    dir: &std::path::Path,
    url: &str,
    fake: SharedState,
    clock: Arc<ManualClock>,
) -> Harness {
    open(misim_store::Store::open(dir).unwrap(), url, fake, clock).await
}

/// Shuts `h` down and opens IMDS again on the store in `dir`.
async fn restart(h: Harness, dir: &std::path::Path, url: &str) -> Harness {
    let (entra, clock) = (h.entra.clone(), h.clock.clone());
    drop(h);
    // The old listener task holds the store until it has drained.
    let store = eventually("the old IMDS releases its store", || {
        std::future::ready(misim_store::Store::open(dir))
    })
    .await;
    open(store, url, entra, clock).await
}

#[tokio::test]
async fn a_restart_keeps_every_vms_endpoint_and_never_reuses_a_deleted_vms_address() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let (fake, url) = fake_entra(&clock).await;
    let h = open_in(dir.path(), &url, fake, clock).await;
    let (vm1, vm2) = two_vms(&h).await;
    let vm3 = h.put_vm(&VM2.replace("vm2", "vm3")).await;
    Control::delete_vm(
        &h.imds,
        Request::new(pb::DeleteVmRequest {
            resource_id: VM2.replace("vm2", "vm3"),
        }),
    )
    .await
    .unwrap();

    let h = restart(h, dir.path(), &url).await;
    assert_eq!(get_vm(&h, VM1).await.imds_endpoint, vm1.imds_endpoint);
    assert_eq!(get_vm(&h, VM2).await.imds_endpoint, vm2.imds_endpoint);
    assert_eq!(client_of(&h.token(&vm1, "").await.1), "client-vm1");
    assert_eq!(client_of(&h.token(&vm2, "").await.1), "client-vm2");
    // A VM created after the restart gets an address no VM ever had:
    // whatever still calls the deleted vm3's endpoint reaches nobody.
    let vm4 = h.put_vm(&VM2.replace("vm2", "vm4")).await;
    for old in [&vm1, &vm2, &vm3] {
        assert_ne!(
            addr_of(&vm4.imds_endpoint).ip(),
            addr_of(&old.imds_endpoint).ip()
        );
    }
    let (s, _) = token_at(&h.http, &vm3.imds_endpoint).await;
    assert_eq!(s, 400);
}

/// Records written when every VM had a listener of its own (a `port` and an
/// `imds_endpoint`, no address) get an address at restore, kept from then on.
#[tokio::test]
async fn records_from_before_addresses_get_one_at_restore() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let (fake, url) = fake_entra(&clock).await;
    {
        let store = misim_store::Store::open(dir.path()).unwrap();
        let c = &certs()[0];
        let identity = misim_imds::domain::IdentityRecord {
            kind: misim_imds::domain::Kind::System,
            client_id: "client-old".into(),
            object_id: "object-old".into(),
            resource_id: VM1.into(),
            tenant_id: TENANT.into(),
            certificate_pem: c.certificate_pem.as_str().into(),
            private_key_pem: c.private_key_pem.as_str().into(),
        };
        register(&fake, "client-old", &c.certificate_der);
        let meta = misim_imds::domain::VmMeta {
            resource_id: VM1.into(),
            name: "vm1".into(),
            ..Default::default()
        };
        let old = serde_json::json!({
            "meta": meta,
            "imds_endpoint": "http://127.0.0.1:40123",
            "port": 40123,
            "identity_header": "secret",
            "identities": [identity],
        });
        let table = store.table::<Value>("vms").unwrap();
        table.put(&VM1.to_ascii_lowercase(), &old).await.unwrap();
        store.flush().await.unwrap();
    }
    let h = open_in(dir.path(), &url, fake, clock).await;
    let vm = get_vm(&h, VM1).await;
    assert!(
        vm.imds_endpoint.starts_with("http://127.64."),
        "{}",
        vm.imds_endpoint
    );
    assert_eq!(client_of(&h.token(&vm, "").await.1), "client-old");
    let h = restart(h, dir.path(), &url).await;
    assert_eq!(
        get_vm(&h, VM1).await.imds_endpoint,
        vm.imds_endpoint,
        "kept"
    );
}

/// A reservation block of 1,024 indexes ends on a `.255`, which is skipped: the VM that
/// comes after the block's last address must get the next block's first one, not an
/// error (it used to fail with "no free loopback address" once per 1,024 VMs).
#[tokio::test]
async fn vms_past_the_first_reservation_block_get_addresses() {
    let h = harness().await;
    let mut seen = std::collections::HashSet::new();
    for n in 0..1100 {
        let id = format!(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-{n}"
        );
        let vm = h.put_vm(&id).await;
        assert!(
            seen.insert(addr_of(&vm.imds_endpoint)),
            "{n}: address reused"
        );
    }
}
