//! Component tests of misim-imds: a real IMDS on loopback listeners against misim-testkit's
//! fake Entra `Directory`, whose `IssueToken` here verifies every client assertion.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use misim_imds::config::VmAddresses;
use misim_imds::{Config, Deps, Imds, VmAddressing};
use misim_proto::auth::Caller;
use misim_proto::entra::v1 as entra;
use misim_proto::imds::v1 as pb;
use misim_proto::imds::v1::control_server::Control;
use misim_testkit::fakes::{FakeDirectory, SharedState, shared_state};
use misim_testkit::{channel_as, control_key, eventually};
use misim_token::cert::GeneratedCert;
use misim_types::{Clock, ManualClock};
use serde_json::Value;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::{Request, Status};

mod addresses;
mod concurrency;
mod hot_path;
mod put_vm_identities;

const TENANT: &str = "72f988bf-0000-4000-8000-000000000001";
const AUTHORITY: &str = "https://localhost:9443";
const NOW: u64 = 1_767_139_199;
const ARM: &str = "https://management.azure.com/";
const VM1: &str =
    "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1";
const VM2: &str =
    "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm2";

fn certs() -> &'static Vec<GeneratedCert> {
    static C: OnceLock<Vec<GeneratedCert>> = OnceLock::new();
    C.get_or_init(|| {
        let nb = std::time::UNIX_EPOCH + Duration::from_secs(NOW - 3600);
        (0..3)
            .map(|i| {
                misim_token::cert::generate_rsa_cert(
                    &format!("c{i}"),
                    nb,
                    nb + Duration::from_secs(90 * 86400),
                )
                .unwrap()
            })
            .collect()
    })
}

// ---------------------------------------------------------------- fake Entra

/// Registers `certificate_der` as the one key credential of the principal with client id
/// `client_id` in the fake Entra, which verifies that identity's assertions against it.
fn register(entra: &SharedState, client_id: &str, certificate_der: &[u8]) {
    entra.lock().service_principals.insert(
        format!("object-of-{client_id}"),
        entra::ServicePrincipal {
            object_id: format!("object-of-{client_id}"),
            app_id: client_id.into(),
            key_credentials: vec![entra::KeyCredential {
                certificate_der: certificate_der.to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
}

/// How many `IssueToken` calls the fake Entra has had.
fn issued(entra: &SharedState) -> usize {
    entra
        .lock()
        .calls
        .iter()
        .filter(|c| c.starts_with("IssueToken "))
        .count()
}

/// `IssueToken` as Entra answers it, for the fake: the client needs a registered
/// certificate (AADSTS700016), the assertion names it in `x5t` and verifies against it for
/// this tenant's v2 token endpoint at the clock's time (AADSTS700027), and the resource is
/// one Entra knows (AADSTS500011, carried as the status's `ErrorInfo` reason). The token
/// numbers the call, so a test can tell a cached token from a new one.
fn issue_token(
    entra: SharedState,
    clock: Option<Arc<ManualClock>>,
) -> impl Fn(entra::IssueTokenRequest) -> Result<entra::IssuedToken, Status> + Send + Sync + 'static
{
    move |req| {
        let n = issued(&entra);
        let now = clock.as_ref().map(|c| c.unix()).unwrap_or(NOW as i64);
        let der = entra
            .lock()
            .service_principals
            .values()
            .find(|sp| sp.app_id == req.client_id)
            .and_then(|sp| sp.key_credentials.first())
            .map(|k| k.certificate_der.clone())
            .ok_or_else(|| {
                Status::unauthenticated(format!("AADSTS700016: unknown client {}", req.client_id))
            })?;
        let info = misim_token::cert::parse_cert(&der).unwrap();
        let header = misim_token::verify::assertion_header(&req.client_assertion)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        assert_eq!(
            header.x5t.as_deref(),
            Some(info.sha1.as_slice()),
            "x5t names the certificate"
        );
        let aud = format!("{AUTHORITY}/{TENANT}/oauth2/v2.0/token");
        misim_token::verify::verify_client_assertion(
            &req.client_assertion,
            &header,
            &info.public_key,
            &req.client_id,
            now,
            |a| a == aud,
        )
        .map_err(|e| Status::unauthenticated(format!("AADSTS700027: {e}")))?;
        if misim_types::audiences::known(&req.resource).is_none() {
            return Err(misim_proto::status::with_reason(
                Status::invalid_argument(format!(
                    "AADSTS500011: The resource principal named {} was not found in the tenant named {TENANT}.",
                    req.resource
                )),
                misim_proto::status::ENTRA_DOMAIN,
                "AADSTS500011",
            ));
        }
        Ok(entra::IssuedToken {
            access_token: format!("tok-{n}-{}-{}", req.client_id, req.resource),
            issued_at_unix: now,
            not_before_unix: now,
            expires_on_unix: now + 86400,
            resource: req.resource,
        })
    }
}

/// Serves a fake Entra `Directory` over `entra` that issues tokens as [`issue_token`] says.
async fn serve_fake(entra: SharedState, clock: Option<Arc<ManualClock>>) -> String {
    let directory = FakeDirectory::new(entra.clone()).with_issue_token(issue_token(entra, clock));
    misim_testkit::serve(Routes::new(directory.into_server())).await
}

/// A fake Entra for one test: its state, and the URL it is served at.
async fn fake_entra(clock: &Arc<ManualClock>) -> (SharedState, String) {
    let entra = shared_state();
    let url = serve_fake(entra.clone(), Some(clock.clone())).await;
    (entra, url)
}

// ------------------------------------------------------------------ harness

struct Harness {
    imds: Imds,
    /// The fake Entra's state: registered certificates and the log of `IssueToken` calls.
    entra: SharedState,
    clock: Arc<ManualClock>,
    shutdown: misim_runtime::Shutdown,
    http: reqwest::Client,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn http_client() -> reqwest::Client {
    // Never through a proxy: every request goes to loopback.
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn open(
    store: misim_store::Store,
    directory_url: &str,
    entra: SharedState,
    clock: Arc<ManualClock>,
) -> Harness {
    let shutdown = misim_runtime::Shutdown::new();
    let config = Config {
        tenant_id: TENANT.into(),
        entra_authority: AUTHORITY.into(),
        addressing: VmAddressing::PerVmAddress { port: 0 },
    };
    let deps = Deps {
        store,
        clock: clock.clone(),
        ids: Arc::new(misim_types::SeqIds::new(1)),
        directory: misim_proto::entra::v1::directory_client::DirectoryClient::new(channel_as(
            Caller::Imds,
            directory_url,
        )),
        shutdown: shutdown.clone(),
    };
    let imds = Imds::open(config, deps).await.unwrap();
    let vms = imds.clone();
    tokio::spawn(async move { vms.serve_vms().await.unwrap() });
    Harness {
        imds,
        entra,
        clock,
        shutdown,
        http: http_client(),
    }
}

async fn harness() -> Harness {
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let (entra, url) = fake_entra(&clock).await;
    open(misim_store::Store::memory().unwrap(), &url, entra, clock).await
}

fn meta(id: &str, ip: &str) -> pb::VmMetadata {
    let mut tags = HashMap::new();
    tags.insert("env".to_owned(), "test".to_owned());
    pb::VmMetadata {
        resource_id: id.into(),
        vm_id: "11111111-2222-3333-4444-555555555555".into(),
        name: id.rsplit('/').next().unwrap().into(),
        resource_group: "rg".into(),
        subscription_id: "s1".into(),
        location: "westeurope".into(),
        vm_size: "Standard_D2s_v5".into(),
        os_type: "Linux".into(),
        tags,
        publisher: "Canonical".into(),
        offer: "ubuntu-24_04-lts".into(),
        sku: "server".into(),
        version: "latest".into(),
        admin_username: "azureuser".into(),
        computer_name: "vm".into(),
        private_ip: ip.into(),
    }
}

/// An identity: `n` picks the key; SAMI ids derive from the VM.
fn identity(kind: pb::IdentityKind, name: &str, n: usize) -> pb::ManagedIdentity {
    let c = &certs()[n];
    pb::ManagedIdentity {
        kind: kind as i32,
        client_id: format!("client-{name}"),
        object_id: format!("object-{name}"),
        resource_id: match kind {
            pb::IdentityKind::UserAssigned => {
                format!(
                    "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
                )
            }
            _ => format!(
                "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}"
            ),
        },
        tenant_id: TENANT.into(),
        certificate_pem: c.certificate_pem.clone(),
        private_key_pem: c.private_key_pem.clone(),
    }
}

const SAMI: pb::IdentityKind = pb::IdentityKind::SystemAssigned;
const UAMI: pb::IdentityKind = pb::IdentityKind::UserAssigned;

impl Harness {
    async fn put_vm(&self, id: &str) -> pb::Vm {
        Control::put_vm(
            &self.imds,
            Request::new(pb::PutVmRequest {
                metadata: Some(meta(id, "")),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_inner()
    }

    async fn put_identity(&self, vm: &str, i: pb::ManagedIdentity) {
        let n = certs()
            .iter()
            .position(|c| c.certificate_pem == i.certificate_pem)
            .unwrap();
        register(&self.entra, &i.client_id, &certs()[n].certificate_der);
        Control::put_identity(
            &self.imds,
            Request::new(pb::PutIdentityRequest {
                vm_resource_id: vm.into(),
                identity: Some(i),
            }),
        )
        .await
        .unwrap();
    }

    async fn remove_identity(&self, vm: &str, client_id: &str) -> bool {
        Control::remove_identity(
            &self.imds,
            Request::new(pb::RemoveIdentityRequest {
                vm_resource_id: vm.into(),
                client_id: client_id.into(),
            }),
        )
        .await
        .unwrap()
        .into_inner()
        .existed
    }

    /// GET `{endpoint}{path_and_query}` with `Metadata: true`.
    async fn get(&self, vm: &pb::Vm, pq: &str) -> (u16, Value) {
        self.get_with(vm, pq, &[("Metadata", "true")]).await
    }

    async fn get_with(&self, vm: &pb::Vm, pq: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut r = self.http.get(format!("{}{pq}", vm.imds_endpoint));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn token(&self, vm: &pb::Vm, extra: &str) -> (u16, Value) {
        self.get(
            vm,
            &format!(
                "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={ARM}{extra}"
            ),
        )
        .await
    }
}

fn error_is(body: &Value, error: &str, description: &str) {
    assert_eq!(body["error"], error, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with(description),
        "{body}"
    );
}

fn client_of(body: &Value) -> &str {
    body["client_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {body}"))
}

// -------------------------------------------------------------------- tests

#[tokio::test]
async fn missing_or_wrong_metadata_header_is_invalid_request() {
    let h = harness().await;
    let vm = h.put_vm(VM1).await;
    h.put_identity(VM1, identity(SAMI, "vm1", 0)).await;
    let pq = format!("/metadata/identity/oauth2/token?api-version=2018-02-01&resource={ARM}");
    for headers in [&[][..], &[("Metadata", "false")][..]] {
        let (s, b) = h.get_with(&vm, &pq, headers).await;
        assert_eq!(s, 400);
        assert_eq!(
            b,
            serde_json::json!({"error":"invalid_request","error_description":"Required metadata header not specified"})
        );
    }
    // The header name is case-insensitive (Rust sends `metadata`).
    let (s, _) = h.get_with(&vm, &pq, &[("metadata", "true")]).await;
    assert_eq!(s, 200);
    assert_eq!(issued(&h.entra), 1);
}

#[tokio::test]
async fn proxies_verbs_and_malformed_queries_are_rejected() {
    let h = harness().await;
    let vm = h.put_vm(VM1).await;
    h.put_identity(VM1, identity(SAMI, "vm1", 0)).await;
    let pq = format!("/metadata/identity/oauth2/token?api-version=2018-02-01&resource={ARM}");
    let (s, b) = h
        .get_with(
            &vm,
            &pq,
            &[("Metadata", "true"), ("X-Forwarded-For", "10.0.0.1")],
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(b["error"], "invalid_request");

    let resp = h
        .http
        .post(format!("{}{pq}", vm.imds_endpoint))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);

    for bad in [
        format!("/metadata/identity/oauth2/token?resource={ARM}"),
        format!("/metadata/identity/oauth2/token?api-version=2017-12-01&resource={ARM}"),
        format!("/metadata/identity/oauth2/token?api-version=latest&resource={ARM}"),
        "/metadata/identity/oauth2/token?api-version=2018-02-01".to_owned(),
        format!(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={ARM}&resource={ARM}"
        ),
        format!(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={ARM}&client_id=a&object_id=b"
        ),
        format!(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={ARM}&msi_res_id=a&mi_res_id=b"
        ),
    ] {
        let (s, b) = h.get(&vm, &bad).await;
        assert_eq!(s, 400, "{bad}");
        assert_eq!(b["error"], "invalid_request", "{bad}");
    }
    assert_eq!(issued(&h.entra), 0);
}

#[tokio::test]
async fn success_body_is_all_strings_and_echoes_selectors() {
    let h = harness().await;
    let vm = h.put_vm(VM1).await;
    h.put_identity(VM1, identity(UAMI, "u1", 1)).await;
    let (s, b) = h.token(&vm, "").await;
    assert_eq!(s, 200, "{b}");
    let obj = b.as_object().unwrap();
    for k in [
        "access_token",
        "client_id",
        "expires_in",
        "expires_on",
        "ext_expires_in",
        "not_before",
        "resource",
        "token_type",
    ] {
        assert!(obj[k].is_string(), "{k} must be a string: {b}");
    }
    assert!(obj.values().all(Value::is_string), "{b}");
    assert_eq!(b["token_type"], "Bearer");
    assert_eq!(b["resource"], ARM);
    assert_eq!(b["client_id"], "client-u1");
    assert_eq!(b["expires_on"], (NOW + 86400).to_string());
    assert_eq!(b["expires_in"], "86400");
    assert_eq!(b["not_before"], NOW.to_string());
    assert!(obj.get("object_id").is_none());

    let (_, b) = h.token(&vm, "&object_id=object-u1").await;
    assert_eq!(b["object_id"], "object-u1");
    let rid = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u1";
    let (_, b) = h.token(&vm, &format!("&msi_res_id={rid}")).await;
    assert_eq!(b["msi_res_id"], rid);
    assert_eq!(b["client_id"], "client-u1");
    let (_, b) = h
        .token(&vm, &format!("&mi_res_id={}", rid.to_uppercase()))
        .await;
    assert_eq!(b["client_id"], "client-u1");
}

#[tokio::test]
async fn identity_selection_follows_the_spec_table() {
    let h = harness().await;
    // No identity.
    let vm = h.put_vm(VM1).await;
    let (s, b) = h.token(&vm, "").await;
    assert_eq!(s, 400);
    error_is(&b, "invalid_request", "Identity not found");
    let (s, _) = h.token(&vm, "&client_id=client-vm1").await;
    assert_eq!(s, 400);

    // SAMI only.
    h.put_identity(VM1, identity(SAMI, "vm1", 0)).await;
    assert_eq!(client_of(&h.token(&vm, "").await.1), "client-vm1");
    let (s, b) = h.token(&vm, "&client_id=client-other").await;
    assert_eq!(s, 400);
    error_is(&b, "invalid_request", "Identity not found");

    // SAMI + UAMI: SAMI by default, the UAMI when selected.
    h.put_identity(VM1, identity(UAMI, "u1", 1)).await;
    assert_eq!(client_of(&h.token(&vm, "").await.1), "client-vm1");
    assert_eq!(
        client_of(&h.token(&vm, "&client_id=client-u1").await.1),
        "client-u1"
    );
    assert_eq!(
        client_of(&h.token(&vm, "&object_id=OBJECT-U1").await.1),
        "client-u1"
    );
    let (s, b) = h.token(&vm, "&object_id=object-nope").await;
    assert_eq!(s, 400);
    error_is(&b, "invalid_request", "Identity not found");

    // One UAMI, no SAMI: that UAMI.
    assert!(h.remove_identity(VM1, "client-vm1").await);
    assert_eq!(client_of(&h.token(&vm, "").await.1), "client-u1");
    assert_eq!(
        client_of(&h.token(&vm, "&client_id=client-u1").await.1),
        "client-u1"
    );
    assert_eq!(h.token(&vm, "&client_id=client-u9").await.0, 400);

    // Two UAMIs, no SAMI: ambiguous without a selector.
    h.put_identity(VM1, identity(UAMI, "u2", 2)).await;
    let (s, b) = h.token(&vm, "").await;
    assert_eq!(s, 400);
    error_is(
        &b,
        "invalid_request",
        "Multiple user assigned identities exist",
    );
    assert_eq!(
        client_of(&h.token(&vm, "&client_id=client-u2").await.1),
        "client-u2"
    );
    assert_eq!(h.token(&vm, "&client_id=client-u9").await.0, 400);
}

#[tokio::test]
async fn tokens_are_cached_until_the_reuse_point() {
    let h = harness().await;
    let vm = h.put_vm(VM1).await;
    h.put_identity(VM1, identity(SAMI, "vm1", 0)).await;
    let (_, a) = h.token(&vm, "").await;
    let (_, b) = h.token(&vm, "").await;
    assert_eq!(issued(&h.entra), 1, "the second request is a cache hit");
    assert_eq!(a["access_token"], b["access_token"]);
    // The same resource spelled without the trailing slash is another
    // audience (`aud` echoes the request), so another entry: a miss.
    let (_, c) = h.get(&vm, "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com").await;
    assert_eq!(issued(&h.entra), 2);
    assert_eq!(c["resource"], "https://management.azure.com");

    // Just before the reuse point (18 h of a 24 h token): still cached.
    let reuse = misim_imds::domain::cache::reuse_until(NOW as i64, NOW as i64 + 86400) - NOW as i64;
    h.clock.advance(Duration::from_secs(reuse as u64 - 1));
    let (_, d) = h.token(&vm, "").await;
    assert_eq!(issued(&h.entra), 2);
    assert_eq!(d["expires_in"], (86400 - reuse + 1).to_string());
    // At the reuse point: a fresh token.
    h.clock.advance(Duration::from_secs(1));
    let (_, e) = h.token(&vm, "").await;
    assert_eq!(issued(&h.entra), 3);
    assert_ne!(e["access_token"], a["access_token"]);
    assert_eq!(e["expires_in"], "86400");
}

#[tokio::test]
async fn a_vm_cannot_reach_another_vms_identity() {
    let h = harness().await;
    let _vm1 = h.put_vm(VM1).await;
    let vm2 = h.put_vm(VM2).await;
    h.put_identity(VM1, identity(UAMI, "u1", 1)).await;
    h.put_identity(VM2, identity(SAMI, "vm2", 0)).await;
    let rid = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u1";
    for sel in [
        "&client_id=client-u1".to_owned(),
        "&object_id=object-u1".to_owned(),
        format!("&msi_res_id={rid}"),
    ] {
        let (s, b) = h.token(&vm2, &sel).await;
        assert_eq!(s, 400, "{sel}");
        error_is(&b, "invalid_request", "Identity not found");
    }
    assert_eq!(client_of(&h.token(&vm2, "").await.1), "client-vm2");
}

#[tokio::test]
async fn removed_identities_and_deleted_vms_stop_serving_tokens() {
    let h = harness().await;
    let vm = h.put_vm(VM1).await;
    h.put_identity(VM1, identity(UAMI, "u1", 1)).await;
    assert_eq!(h.token(&vm, "").await.0, 200);
    assert!(h.remove_identity(VM1, "client-u1").await);
    assert!(!h.remove_identity(VM1, "client-u1").await, "idempotent");
    let (s, b) = h.token(&vm, "&client_id=client-u1").await;
    assert_eq!(s, 400);
    error_is(&b, "invalid_request", "Identity not found");
    // Put back: the purged cache means a fresh call to Entra.
    h.put_identity(VM1, identity(UAMI, "u1", 1)).await;
    assert_eq!(h.token(&vm, "").await.0, 200);
    assert_eq!(issued(&h.entra), 2);

    let del = Control::delete_vm(
        &h.imds,
        Request::new(pb::DeleteVmRequest {
            resource_id: VM1.to_uppercase(),
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert!(del.existed);
    // The VM's address names no VM any more.
    let (s, b) = h.token(&vm, "").await;
    assert_eq!(s, 400, "{b}");
    error_is(&b, "invalid_request", "Identity not found");
    let st = Control::get_vm(
        &h.imds,
        Request::new(pb::GetVmRequest {
            resource_id: VM1.into(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(st.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn unknown_resources_and_unreachable_entra_answer_in_imds_shape() {
    let h = harness().await;
    let vm = h.put_vm(VM1).await;
    h.put_identity(VM1, identity(SAMI, "vm1", 0)).await;
    let (s, b) = h
        .get(
            &vm,
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://nope.example",
        )
        .await;
    assert_eq!(s, 400);
    error_is(
        &b,
        "invalid_resource",
        "AADSTS500011: The resource principal named https://nope.example",
    );

    // Entra down: a closed loopback port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let down = open(
        misim_store::Store::memory().unwrap(),
        &closed,
        shared_state(),
        h.clock.clone(),
    )
    .await;
    let vm = down.put_vm(VM1).await;
    down.put_identity(VM1, identity(SAMI, "vm1", 0)).await;
    let (s, b) = down.token(&vm, "").await;
    assert!(s == 503 || s == 500, "{s} {b}");
    assert!(
        b["error"].is_string() && b["error_description"].is_string(),
        "{b}"
    );
}

#[tokio::test]
async fn app_service_endpoint_requires_the_identity_header() {
    let h = harness().await;
    let vm = h.put_vm(VM1).await;
    assert_eq!(vm.identity_header.len(), 48);
    h.put_identity(VM1, identity(SAMI, "vm1", 0)).await;
    h.put_identity(VM1, identity(UAMI, "u1", 1)).await;
    let pq = format!("/msi/token?api-version=2019-08-01&resource={ARM}");

    let (s, b) = h.get_with(&vm, &pq, &[]).await;
    assert_eq!(s, 400);
    assert_eq!(b["statusCode"], 400);
    assert!(
        b["message"].is_string() && b["correlationId"].is_string(),
        "{b}"
    );
    let (s, b) = h
        .get_with(&vm, &pq, &[("X-IDENTITY-HEADER", "wrong")])
        .await;
    assert_eq!(s, 401);
    assert_eq!(b["statusCode"], 401);

    let secret = vm.identity_header.as_str();
    let (s, b) = h
        .get_with(
            &vm,
            &pq,
            &[("x-identity-header", secret), ("metadata", "true")],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["client_id"], "client-vm1");
    assert_eq!(b["token_type"], "Bearer");
    assert_eq!(b["resource"], ARM);
    assert_eq!(
        b["expires_on"],
        (NOW + 86400).to_string(),
        "expires_on is a string"
    );
    assert!(b.get("expires_in").is_none());
    for sel in [
        "client_id=client-u1",
        "principal_id=object-u1",
        "object_id=object-u1",
    ] {
        let (s, b) = h
            .get_with(
                &vm,
                &format!("{pq}&{sel}"),
                &[("X-IDENTITY-HEADER", secret)],
            )
            .await;
        assert_eq!(s, 200, "{sel}: {b}");
        assert_eq!(b["client_id"], "client-u1");
    }
    let (s, _) = h
        .get_with(
            &vm,
            &format!("{pq}&client_id=nope"),
            &[("X-IDENTITY-HEADER", secret)],
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = h
        .get_with(
            &vm,
            "/msi/token?resource=x",
            &[("X-IDENTITY-HEADER", secret)],
        )
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn instance_metadata_has_azure_shape() {
    let h = harness().await;
    let vm = h.put_vm(VM1).await;
    let (s, b) = h
        .get(&vm, "/metadata/instance?api-version=2021-02-01")
        .await;
    assert_eq!(s, 200);
    let c = &b["compute"];
    assert_eq!(c["vmId"], "11111111-2222-3333-4444-555555555555");
    assert_eq!(c["resourceId"], VM1);
    assert_eq!(c["tags"], "env:test");
    assert_eq!(c["tagsList"][0]["name"], "env");
    assert_eq!(c["zone"], "");
    assert!(b["network"]["interface"].is_array());
    fn all_leaves_strings(v: &Value) -> bool {
        match v {
            Value::String(_) => true,
            Value::Array(a) => a.iter().all(all_leaves_strings),
            Value::Object(o) => o.values().all(all_leaves_strings),
            _ => false,
        }
    }
    assert!(all_leaves_strings(&b), "{b}");

    let (s, b) = h
        .get(
            &vm,
            "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text",
        )
        .await;
    assert_eq!(
        (s, b),
        (
            200,
            Value::String("11111111-2222-3333-4444-555555555555".into())
        )
    );
    let (s, _) = h
        .get(
            &vm,
            "/metadata/instance/compute/vmId?api-version=2021-02-01",
        )
        .await;
    assert_eq!(s, 400, "leaves need format=text");
    let (s, b) = h
        .get(&vm, "/metadata/instance/compute?api-version=2021-02-01")
        .await;
    assert_eq!((s, b["name"].as_str()), (200, Some("vm1")));
    let (s, b) = h.get(&vm, "/metadata/instance").await;
    assert_eq!(s, 400);
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .starts_with("Bad request. api-version is invalid"),
        "{b}"
    );
    let (s, b) = h
        .get_with(&vm, "/metadata/instance?api-version=2021-02-01", &[])
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["error"],
        "Bad request. Required metadata header not specified"
    );

    let (s, b) = h
        .get(&vm, "/metadata/identity/info?api-version=2018-02-01")
        .await;
    assert_eq!((s, b), (200, serde_json::json!({"tenantId": TENANT})));
    let (s, b) = h.get(&vm, "/metadata/versions").await;
    assert_eq!(s, 200);
    assert!(
        b["apiVersions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "2018-02-01")
    );
}

#[tokio::test]
async fn reopen_restores_vms_and_their_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let (fake, url) = fake_entra(&clock).await;
    let endpoint;
    {
        let h = open(
            misim_store::Store::open(dir.path()).unwrap(),
            &url,
            fake.clone(),
            clock.clone(),
        )
        .await;
        let vm = h.put_vm(VM1).await;
        h.put_identity(VM1, identity(SAMI, "vm1", 0)).await;
        assert_eq!(h.token(&vm, "").await.0, 200);
        endpoint = vm.imds_endpoint.clone();
        h.shutdown.cancel();
    }
    // The old listener task still holds the store until it has drained.
    let store = eventually("the old IMDS releases its store", || {
        std::future::ready(misim_store::Store::open(dir.path()))
    })
    .await;
    let h = open(store, &url, fake.clone(), clock).await;
    let vms = Control::list_vms(&h.imds, Request::new(pb::ListVmsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .vms;
    assert_eq!(vms.len(), 1);
    let vm = &vms[0];
    assert_eq!(vm.metadata.as_ref().unwrap().resource_id, VM1);
    assert_eq!(vm.identities.len(), 1);
    assert_eq!(vm.identities[0].client_id, "client-vm1");
    assert_eq!(
        vm.imds_endpoint, endpoint,
        "the previous port is reused when free"
    );
    let (s, b) = h.get(vm, "/metadata/identity/oauth2/token?api-version=2019-08-01&resource=https://vault.azure.net").await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn control_over_grpc_never_returns_private_keys() {
    let h = harness().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(misim_runtime::serve::serve_grpc(
        l,
        h.imds.grpc_router(&control_key()),
        h.shutdown.clone(),
    ));
    let mut c =
        misim_proto::imds::v1::control_client::ControlClient::new(channel_as(Caller::Arm, &url));
    let vm = c
        .put_vm(pb::PutVmRequest {
            metadata: Some(meta(VM1, "")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let again = c
        .put_vm(pb::PutVmRequest {
            metadata: Some(meta(VM1, "")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(vm, again, "PutVm is idempotent");
    assert!(
        vm.imds_endpoint.starts_with("http://127.64."),
        "{}",
        vm.imds_endpoint
    );
    let id = identity(UAMI, "u1", 1);
    for _ in 0..2 {
        c.put_identity(pb::PutIdentityRequest {
            vm_resource_id: VM1.into(),
            identity: Some(id.clone()),
        })
        .await
        .unwrap();
    }
    let got = c
        .get_vm(pb::GetVmRequest {
            resource_id: VM1.to_lowercase(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.identities.len(), 1);
    let dbg = format!("{got:?}");
    assert!(!dbg.contains("PRIVATE KEY"));
    let bad = c
        .put_identity(pb::PutIdentityRequest {
            vm_resource_id: VM2.into(),
            identity: Some(id.clone()),
        })
        .await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::NotFound);
    let mut broken = id;
    broken.private_key_pem = "junk".into();
    let bad = c
        .put_identity(pb::PutIdentityRequest {
            vm_resource_id: VM1.into(),
            identity: Some(broken),
        })
        .await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        misim_runtime::lazy_channel(&url).unwrap(),
    );
    let st = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        st.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // Only ARM (and the sandbox owner) configures VMs: Key Vault may not.
    let mut kv = misim_proto::imds::v1::control_client::ControlClient::new(channel_as(
        Caller::KeyVault,
        &url,
    ));
    let refused = kv
        .put_vm(pb::PutVmRequest {
            metadata: Some(meta(VM2, "")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        "caller keyvault may not call misim.imds.v1.Control/PutVm"
    );
}

/// Puts VM `vm` (id, private IP) with a system-assigned identity (`identity`'s
/// name and certificate number) registered with the fake Entra.
async fn put_vm_with_sami(
    imds: &Imds,
    entra: &SharedState,
    (vm, ip): (&str, &str),
    (name, n): (&str, usize),
) {
    Control::put_vm(
        imds,
        Request::new(pb::PutVmRequest {
            metadata: Some(meta(vm, ip)),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let i = identity(SAMI, name, n);
    register(entra, &i.client_id, &certs()[n].certificate_der);
    Control::put_identity(
        imds,
        Request::new(pb::PutIdentityRequest {
            vm_resource_id: vm.into(),
            identity: Some(i),
        }),
    )
    .await
    .unwrap();
}

/// IMDS in source-address mode (the compose sandbox's) over an in-memory
/// store, asking the fake Entra at `entra_url`; its ids carry `id_prefix`.
async fn open_source_address_mode(
    clock: Arc<ManualClock>,
    entra_url: &str,
    id_prefix: u16,
) -> (Imds, misim_runtime::Shutdown) {
    let shutdown = misim_runtime::Shutdown::new();
    let imds = Imds::open(
        Config {
            tenant_id: TENANT.into(),
            entra_authority: AUTHORITY.into(),
            addressing: VmAddressing::SourceAddress,
        },
        Deps {
            store: misim_store::Store::memory().unwrap(),
            clock,
            ids: Arc::new(misim_types::SeqIds::new(id_prefix)),
            directory: misim_proto::entra::v1::directory_client::DirectoryClient::new(channel_as(
                Caller::Imds,
                entra_url,
            )),
            shutdown: shutdown.clone(),
        },
    )
    .await
    .unwrap();
    (imds, shutdown)
}

#[tokio::test]
async fn source_address_mode_identifies_vms_by_peer_ip() {
    use tower::ServiceExt;
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let (entra, url) = fake_entra(&clock).await;
    let (imds, shutdown) = open_source_address_mode(clock, &url, 2).await;
    let vm = Control::put_vm(
        &imds,
        Request::new(pb::PutVmRequest {
            metadata: Some(meta(VM1, "10.1.0.4")),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(
        vm.imds_endpoint, "",
        "no per-VM listener in source-address mode"
    );
    let i = identity(SAMI, "vm1", 0);
    register(&entra, &i.client_id, &certs()[0].certificate_der);
    Control::put_identity(
        &imds,
        Request::new(pb::PutIdentityRequest {
            vm_resource_id: VM1.into(),
            identity: Some(i),
        }),
    )
    .await
    .unwrap();
    let call = |ip: &str| {
        let peer: std::net::SocketAddr = format!("{ip}:50000").parse().unwrap();
        http::Request::get(format!(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={ARM}"
        ))
        .header("Metadata", "true")
        .extension(misim_runtime::serve::PeerAddr(peer))
        .body(axum::body::Body::empty())
        .unwrap()
    };
    let body = |r: http::Response<axum::body::Body>| async move {
        use http_body_util::BodyExt;
        let status = r.status().as_u16();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice::<Value>(&bytes).unwrap())
    };
    let (s, b) = body(
        imds.vm_router_for_source_address()
            .oneshot(call("10.1.0.4"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["client_id"], "client-vm1");
    let (s, b) = body(
        imds.vm_router_for_source_address()
            .oneshot(call("10.1.0.5"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    error_is(&b, "invalid_request", "Identity not found");

    // A VM that ARM gave no private_ip is found through the static addresses
    // (MISIM_IMDS_VM_ADDRESSES); a VM with a private_ip keeps it.
    put_vm_with_sami(&imds, &entra, (VM2, ""), ("vm2", 1)).await;
    imds.set_static_addresses(
        VmAddresses::new([
            (VM2, "10.1.0.6".parse().unwrap()),
            (VM1, "10.1.0.7".parse().unwrap()),
        ])
        .unwrap(),
    );
    let (s, b) = body(
        imds.vm_router_for_source_address()
            .oneshot(call("10.1.0.6"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["client_id"], "client-vm2");
    let (s, b) = body(
        imds.vm_router_for_source_address()
            .oneshot(call("10.1.0.7"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "the static map wins over the NIC address: {b}");
    assert_eq!(b["client_id"], "client-vm1");
    // ...and then vm1's NIC address no longer identifies it: one address per VM.
    let (s, b) = body(
        imds.vm_router_for_source_address()
            .oneshot(call("10.1.0.4"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        s, 400,
        "a mapped VM answers only at its mapped address: {b}"
    );
    error_is(&b, "invalid_request", "Identity not found");
    shutdown.cancel();
}

/// An IMDS in source-address mode with `map` as its static addresses, and
/// a call from `ip` for an ARM token: (status, body).
struct SourceImds {
    imds: Imds,
    entra: SharedState,
    shutdown: misim_runtime::Shutdown,
}

impl Drop for SourceImds {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl SourceImds {
    async fn open(map: VmAddresses) -> Self {
        let clock = Arc::new(ManualClock::at_unix(NOW));
        let (entra, url) = fake_entra(&clock).await;
        let shutdown = misim_runtime::Shutdown::new();
        let imds = Imds::open(
            Config {
                tenant_id: TENANT.into(),
                entra_authority: AUTHORITY.into(),
                addressing: VmAddressing::SourceAddress,
            },
            Deps {
                store: misim_store::Store::memory().unwrap(),
                clock,
                ids: Arc::new(misim_types::SeqIds::new(3)),
                directory: misim_proto::entra::v1::directory_client::DirectoryClient::new(
                    channel_as(Caller::Imds, &url),
                ),
                shutdown: shutdown.clone(),
            },
        )
        .await
        .unwrap();
        imds.set_static_addresses(map);
        Self {
            imds,
            entra,
            shutdown,
        }
    }

    /// Creates (or updates) VM `id` with NIC address `ip` and a system-assigned
    /// identity `client-{name}` (key `n`).
    async fn put_vm(&self, id: &str, ip: &str, name: &str, n: usize) {
        Control::put_vm(
            &self.imds,
            Request::new(pb::PutVmRequest {
                metadata: Some(meta(id, ip)),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
        let i = identity(SAMI, name, n);
        register(&self.entra, &i.client_id, &certs()[n].certificate_der);
        Control::put_identity(
            &self.imds,
            Request::new(pb::PutIdentityRequest {
                vm_resource_id: id.into(),
                identity: Some(i),
            }),
        )
        .await
        .unwrap();
    }

    async fn token_from(&self, ip: &str) -> (u16, Value) {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let peer: std::net::SocketAddr = format!("{ip}:50000").parse().unwrap();
        let req = http::Request::get(format!(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={ARM}"
        ))
        .header("Metadata", "true")
        .extension(misim_runtime::serve::PeerAddr(peer))
        .body(axum::body::Body::empty())
        .unwrap();
        let r = self
            .imds
            .vm_router_for_source_address()
            .oneshot(req)
            .await
            .unwrap();
        let status = r.status().as_u16();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }
}

/// The compose map names vm1 by resource id: a VM called vm1 in another
/// resource group neither takes over vm1's address (before or after vm1
/// exists, by name or by claiming the address as its NIC's) nor makes it
/// ambiguous.
#[tokio::test]
async fn a_same_named_vm_in_another_group_gets_nothing() {
    const VM1_ADDR: &str = "169.254.169.11";
    const STRANGER: &str =
        "/subscriptions/s1/resourceGroups/rg2/providers/Microsoft.Compute/virtualMachines/vm1";
    // The map cannot be written by name at all.
    let e = VmAddresses::new([("vm1", VM1_ADDR.parse().unwrap())]).unwrap_err();
    assert!(e.contains("\"vm1=169.254.169.11\""), "{e}");
    let imds =
        SourceImds::open(VmAddresses::new([(VM1, VM1_ADDR.parse().unwrap())]).unwrap()).await;

    // rg2/vm1 exists, rg/vm1 not yet: vm1's container is nobody.
    imds.put_vm(STRANGER, "", "stranger", 1).await;
    let (s, b) = imds.token_from(VM1_ADDR).await;
    assert_eq!(s, 400, "{b}");
    error_is(&b, "invalid_request", "Identity not found");

    // rg/vm1 is created: its container gets exactly its identity.
    imds.put_vm(VM1, "10.0.0.4", "vm1", 0).await;
    let (s, b) = imds.token_from(VM1_ADDR).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["client_id"], "client-vm1");

    // The stranger claims vm1's container address as its NIC address: the
    // map still wins, and nothing else calls from that address.
    imds.put_vm(STRANGER, VM1_ADDR, "stranger", 1).await;
    let (s, b) = imds.token_from(VM1_ADDR).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["client_id"], "client-vm1");
    // The stranger is served only where it really is (its own NIC address
    // in per-NIC addressing), never at a mapped address.
    imds.put_vm(STRANGER, "10.9.0.4", "stranger", 1).await;
    let (s, b) = imds.token_from("10.9.0.4").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["client_id"], "client-stranger");
}

/// Issue #10: spellings Entra treats as one resource (case, repeated trailing
/// slashes) share one cache entry: one Entra call, not one per spelling.
#[tokio::test]
async fn spellings_of_one_resource_share_one_token() {
    let h = harness().await;
    let vm = h.put_vm(VM1).await;
    h.put_identity(VM1, identity(SAMI, "vm1", 0)).await;
    let q = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=";
    let (s, first) = h.get(&vm, &format!("{q}https://vault.azure.net")).await;
    assert_eq!(s, 200, "{first}");
    for spelling in [
        "HTTPS://VAULT.AZURE.NET",
        "https://Vault.Azure.Net",
        "https://vault.azure.NET",
    ] {
        let (s, b) = h.get(&vm, &format!("{q}{spelling}")).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["access_token"], first["access_token"], "{spelling}");
        // The body still echoes what was asked for.
        assert_eq!(b["resource"], spelling);
    }
    assert_eq!(issued(&h.entra), 1, "one Entra call for every spelling");
    let (_, slash) = h.get(&vm, &format!("{q}https://vault.azure.net/")).await;
    for spelling in ["https://vault.azure.net//", "https://VAULT.azure.net///"] {
        let (_, b) = h.get(&vm, &format!("{q}{spelling}")).await;
        assert_eq!(b["access_token"], slash["access_token"], "{spelling}");
    }
    assert_eq!(issued(&h.entra), 2, "a trailing slash keeps its own `aud`");
}

/// Property: any query string and headers on the token endpoint get IMDS's
/// error shape (or a token), never a panic or another status.
#[test]
fn random_token_queries_answer_in_imds_shape() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config as PtConfig, TestRunner};
    const CASES: u32 = 96;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (h, vm) = rt.block_on(async {
        let h = harness().await;
        let vm = h.put_vm(VM1).await;
        h.put_identity(VM1, identity(SAMI, "vm1", 0)).await;
        h.put_identity(VM1, identity(UAMI, "u1", 1)).await;
        (h, vm)
    });
    let key = prop_oneof![
        Just("api-version".to_owned()),
        Just("resource".to_owned()),
        Just("client_id".to_owned()),
        Just("object_id".to_owned()),
        Just("msi_res_id".to_owned()),
        Just("mi_res_id".to_owned()),
        Just("API-VERSION".to_owned()),
        "[a-z_%0-9]{0,8}",
    ];
    let value = prop_oneof![
        Just("2018-02-01".to_owned()),
        Just("2019-08-01".to_owned()),
        Just("2017-01-01".to_owned()),
        Just("https://management.azure.com/".to_owned()),
        Just("https%3A%2F%2Fvault.azure.net".to_owned()),
        Just("client-vm1".to_owned()),
        Just("client-u1".to_owned()),
        Just("object-u1".to_owned()),
        Just("%".to_owned()),
        Just("%zz".to_owned()),
        Just("%ff%fe".to_owned()),
        Just("%00".to_owned()),
        "[ -~]{0,24}".prop_map(|s| s.replace(['#', '&'], "")),
    ];
    let param =
        (key, value, any::<bool>()).prop_map(|(k, v, eq)| if eq { format!("{k}={v}") } else { k });
    let headers = (0u8..4, any::<bool>());
    let strategy = (proptest::collection::vec(param, 0..7), headers);
    let mut runner = TestRunner::new(PtConfig {
        cases: CASES,
        failure_persistence: None,
        ..PtConfig::default()
    });
    runner
        .run(&strategy, |(params, (metadata, xff))| {
            let pq = format!("/metadata/identity/oauth2/token?{}", params.join("&"));
            let mut hs: Vec<(&str, &str)> = match metadata {
                0 => vec![],
                1 => vec![("Metadata", "true")],
                2 => vec![("Metadata", "false")],
                _ => vec![("Metadata", "TRUE")],
            };
            if xff {
                hs.push(("X-Forwarded-For", "10.0.0.1"));
            }
            let (status, body) = rt.block_on(h.get_with(&vm, &pq, &hs));
            prop_assert!(status == 200 || status == 400, "{status} {pq}: {body}");
            if status == 200 {
                prop_assert!(body["access_token"].is_string(), "{pq}: {body}");
            } else {
                prop_assert!(body["error"].is_string(), "{pq}: {body}");
                prop_assert!(body["error_description"].is_string(), "{pq}: {body}");
            }
            Ok(())
        })
        .unwrap();
    println!("random_token_queries_answer_in_imds_shape: {CASES} cases");
}

/// `ListVms` pages: at most `page_size` VMs (1,000 at most and by default) in resource-id
/// order, and a token for the rest that `misim_proto::all_pages` follows to the end.
#[tokio::test]
async fn list_vms_pages_through_every_vm_in_order() {
    let h = harness().await;
    let id = |n: usize| {
        format!(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-{n:04}"
        )
    };
    for n in (0..1001).rev() {
        h.put_vm(&id(n)).await;
    }
    let list = |page_size: i32, page_token: &str| {
        let req = pb::ListVmsRequest {
            page_size,
            page_token: page_token.to_owned(),
        };
        let imds = h.imds.clone();
        async move {
            Control::list_vms(&imds, Request::new(req))
                .await
                .map(|r| r.into_inner())
        }
    };
    let ids = |vms: &[pb::Vm]| -> Vec<String> {
        vms.iter()
            .map(|v| v.metadata.as_ref().unwrap().resource_id.clone())
            .collect()
    };
    let first = list(2, "").await.unwrap();
    assert_eq!(ids(&first.vms), [id(0), id(1)]);
    let second = list(2, &first.next_page_token).await.unwrap();
    assert_eq!(ids(&second.vms), [id(2), id(3)]);
    let default = list(0, "").await.unwrap();
    assert_eq!(default.vms.len(), 1000, "the default and largest page");
    assert_eq!(list(5000, "").await.unwrap().vms.len(), 1000);
    let last = list(0, &default.next_page_token).await.unwrap();
    assert_eq!(ids(&last.vms), [id(1000)]);
    assert!(last.next_page_token.is_empty(), "the last page says so");
    let all = misim_proto::all_pages(|token| {
        let page = list(0, &token);
        async move { page.await.map(|r| (r.vms, r.next_page_token)) }
    })
    .await
    .unwrap();
    assert_eq!(ids(&all), (0..1001).map(id).collect::<Vec<_>>());
    let bad = list(-1, "").await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}
