//! Component tests: ARM's HTTP router driven with `oneshot`, against misim-testkit's fake
//! Entra `Directory` and `Federation` and IMDS `Control`, served on loopback in the test.

use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use misim_arm::{Arm, Config, Deps};
use misim_proto::arm::v1::{CheckVaultAccessRequest, authorization_client::AuthorizationClient};
use misim_proto::auth::Caller;
use misim_proto::entra::v1 as entra;
use misim_proto::faults::Faults;
use misim_proto::imds::v1 as imds;
use misim_testkit::fakes::{
    FakeControl, FakeDirectory, FakeFederation, FakeTenant, SharedState, shared_state,
};
use misim_testkit::{channel_as, control_key};
use misim_token::RsaSigner;
use misim_types::{Clock, ManualClock, SeqIds};
use serde_json::{Value, json};
use tonic::service::Routes;
use tower::ServiceExt;

const SUB: &str = "11111111-1111-4111-8111-111111111111";
const TID: &str = "22222222-2222-4222-8222-222222222222";
const ADMIN: &str = "33333333-3333-4333-8333-333333333333";
const NOW: u64 = 1_700_000_000;

const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
const VM_CONTRIBUTOR: &str = "9980e02c-c2be-4d73-94e8-173b1dc7cf3c";
const MI_OPERATOR: &str = "f1a07417-d97a-45cb-824c-7a7467783830";
const KV_SECRETS_USER: &str = "4633458b-17de-408a-b874-0445c86b69e6";
const KV_SECRETS_OFFICER: &str = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7";

mod bodies;
mod custom_roles;
mod deployments;
mod federated;
mod operation_status;
mod provisioning;
mod renewal;

// ---------------------------------------------------------------- harness

struct Harness {
    arm: Arm,
    router: axum::Router,
    /// What the fake peers hold and the ordered log of ARM's calls to them.
    shared: SharedState,
    /// The fake Entra `Federation`, to hold its writes in flight.
    federation: FakeFederation,
    signer: Arc<RsaSigner>,
    clock: Arc<ManualClock>,
}

fn signer() -> Arc<RsaSigner> {
    static SIGNER: std::sync::OnceLock<Arc<RsaSigner>> = std::sync::OnceLock::new();
    SIGNER
        .get_or_init(|| {
            let nb = std::time::UNIX_EPOCH + std::time::Duration::from_secs(NOW - 86400);
            let c = misim_token::cert::generate_rsa_cert(
                "signer",
                nb,
                nb + std::time::Duration::from_secs(365 * 86400),
            )
            .unwrap();
            Arc::new(RsaSigner::new(&c.private_key_der, &c.certificate_der).unwrap())
        })
        .clone()
}

/// Serves the fake Entra (`Directory` with this tenant and `signer`'s key, `Federation`)
/// and IMDS (`Control`) on one loopback port, all over `state`.
async fn serve_fakes(state: SharedState, federation: FakeFederation, signer: &RsaSigner) -> String {
    let directory = FakeDirectory::new(state.clone())
        .with_tenant(FakeTenant {
            tenant_id: TID.into(),
            authority: "https://localhost:9".into(),
        })
        .with_signing_key(signer);
    misim_testkit::serve(
        Routes::new(directory.into_server())
            .add_service(federation.into_server())
            .add_service(FakeControl::new(state, TID).into_server()),
    )
    .await
}

/// Serves ARM's own gRPC API (checking the testkit's control key) on a loopback port.
async fn serve_arm_grpc(arm: &Arm) -> String {
    misim_testkit::serve_router(arm.grpc_router(&control_key())).await
}

/// A gRPC channel calling as ARM (to the fake Entra and IMDS).
fn channel(url: &str) -> misim_proto::auth::ControlChannel {
    channel_as(Caller::Arm, url)
}

async fn harness_with(imds_url: Option<&str>) -> Harness {
    harness_full(imds_url, Faults::none()).await
}

/// ARM with its calls to Entra's directory and to IMDS behind `faults`.
async fn harness_full(imds_url: Option<&str>, faults: Faults) -> Harness {
    harness_tuned(imds_url, faults, |_| {}).await
}

/// As [`harness_full`], with `tune` applied to ARM's configuration.
async fn harness_tuned(imds_url: Option<&str>, faults: Faults, tune: fn(&mut Config)) -> Harness {
    let shared = shared_state();
    let federation = FakeFederation::new(shared.clone());
    let signer = signer();
    let url = serve_fakes(shared.clone(), federation.clone(), &signer).await;
    let ch = channel(&url);
    let imds_ch = imds_url.map(channel).unwrap_or_else(|| ch.clone());
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let config = Config {
        subscription_id: SUB.into(),
        tenant_id: TID.into(),
        public_url: "https://localhost:8443".into(),
        entra_authority: "https://localhost:8444".into(),
        keyvault_port: Some(8445),
        bootstrap_assignments: vec![
            (ADMIN.into(), OWNER.into()),
            (ADMIN.into(), KV_SECRETS_OFFICER.into()),
        ],
        ..Config::default()
    };
    let mut config = config;
    tune(&mut config);
    let deps = Deps {
        store: misim_store::Store::memory().unwrap(),
        clock: clock.clone(),
        ids: Arc::new(SeqIds::new(1)),
        keys: misim_proto::keys::EntraKeys::new(entra::directory_client::DirectoryClient::new(
            ch.clone(),
        )),
        directory: entra::directory_client::DirectoryClient::new(faults.clone().wrap(ch.clone())),
        federation: entra::federation_client::FederationClient::new(Faults::none().wrap(ch)),
        imds: imds::control_client::ControlClient::new(faults.wrap(imds_ch)),
    };
    let arm = Arm::open(config, deps).await.unwrap();
    Harness {
        router: arm.http_router(),
        arm,
        shared,
        federation,
        signer,
        clock,
    }
}

async fn harness() -> Harness {
    harness_with(None).await
}

impl Harness {
    fn token_with(&self, oid: &str, aud: &str, exp_in: i64) -> String {
        let now = self.clock.unix();
        self.signer
            .sign(&json!({
                "aud": aud, "iss": format!("https://sts.windows.net/{TID}/"),
                "iat": now, "nbf": now, "exp": now + exp_in,
                "appid": oid, "oid": oid, "sub": oid, "tid": TID, "ver": "1.0",
            }))
            .unwrap()
    }

    fn token(&self, oid: &str) -> String {
        self.token_with(oid, "https://management.azure.com/", 3600)
    }

    /// Registers a principal in the fake directory (so assignments accept it).
    fn principal(&self, oid: &str) {
        self.shared.lock().service_principals.insert(
            oid.into(),
            entra::ServicePrincipal {
                object_id: oid.into(),
                ..Default::default()
            },
        );
    }

    fn calls(&self) -> Vec<String> {
        self.shared.lock().calls.clone()
    }

    fn clear_calls(&self) {
        self.shared.lock().calls.clear();
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, http::HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Body::from(body.unwrap_or("").to_owned())).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, headers, v)
    }

    async fn call_as(
        &self,
        oid: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}api-version=2024-11-01");
        let body = body.map(|b| b.to_string());
        let (s, _, v) = self
            .raw(method, &path, Some(&self.token(oid)), body.as_deref())
            .await;
        (s, v)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(ADMIN, method, path, body).await
    }

    async fn rg(&self, name: &str) {
        let (s, v) = self
            .call("PUT", &rg_path(name), Some(json!({"location": "eastus"})))
            .await;
        assert!(s.is_success(), "{v}");
    }

    async fn uami(&self, rg: &str, name: &str) -> Value {
        let (s, v) = self
            .call(
                "PUT",
                &uami_path(rg, name),
                Some(json!({"location": "eastus"})),
            )
            .await;
        assert!(s.is_success(), "{v}");
        v
    }

    async fn assign(&self, principal: &str, role: &str, scope: &str) {
        let name = format!(
            "aaaaaaaa-0000-4000-8000-{:012}",
            rand_suffix(principal, role, scope)
        );
        let (s, v) = self
            .call(
                "PUT",
                &format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"),
                Some(json!({"properties": {"principalId": principal, "roleDefinitionId": role_id(role)}})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
}

fn rand_suffix(a: &str, b: &str, c: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (a, b, c).hash(&mut h);
    h.finish() % 1_000_000_000_000
}

fn role_id(guid: &str) -> String {
    format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{guid}")
}

fn rg_path(rg: &str) -> String {
    format!("/subscriptions/{SUB}/resourcegroups/{rg}")
}

fn uami_path(rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )
}

fn vm_path(rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
    )
}

fn vault_path(rg: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}")
}

fn vm_body(identity: Value) -> Value {
    json!({
        "location": "eastus",
        "tags": {"env": "test"},
        "identity": identity,
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_B1s"},
            "storageProfile": {"imageReference": {"publisher": "Canonical", "offer": "ubuntu", "sku": "22_04-lts", "version": "latest"}},
            "osProfile": {"adminUsername": "azureuser", "computerName": "vm1", "adminPassword": "secret!"},
        }
    })
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn missing_auth_is_401_with_challenge() {
    let h = harness().await;
    let (s, headers, v) = h
        .raw(
            "GET",
            &format!("{}?api-version=2024-11-01", rg_path("rg1")),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["code"], "AuthenticationFailed");
    assert_eq!(
        v["error"]["message"],
        "Authentication failed. The 'Authorization' header is missing."
    );
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with(&format!("Bearer authorization_uri=\"https://localhost:8444/{TID}\", error=\"invalid_token\", error_description=")), "{challenge}");

    let bad = [
        ("garbage".to_owned(), "InvalidAuthenticationToken"),
        (
            h.token_with(ADMIN, "https://vault.azure.net", 3600),
            "InvalidAuthenticationTokenAudience",
        ),
        (
            h.token_with(ADMIN, "https://management.azure.com/", -3600),
            "ExpiredAuthenticationToken",
        ),
    ];
    for (token, code) in bad {
        let (s, headers, v) = h
            .raw(
                "GET",
                &format!("{}?api-version=2024-11-01", rg_path("rg1")),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{code}");
        assert_eq!(v["error"]["code"], code);
        assert!(headers.contains_key("www-authenticate"));
    }
    // The classic audience az uses is accepted.
    let t = h.token_with(ADMIN, "https://management.core.windows.net/", 3600);
    let (s, _, _) = h
        .raw(
            "GET",
            "/subscriptions?api-version=2022-12-01",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn api_version_is_required_except_for_metadata() {
    let h = harness().await;
    let (s, _, v) = h
        .raw("GET", "/subscriptions", Some(&h.token(ADMIN)), None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "MissingApiVersionParameter");
    assert_eq!(
        v["error"]["message"],
        "The api-version query parameter (?api-version=) is required for all requests."
    );

    let (s, _, v) = h
        .raw(
            "GET",
            "/metadata/endpoints?api-version=2022-09-01",
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["name"], "misim");
    assert_eq!(v["resourceManager"], "https://localhost:8443/");
    assert_eq!(
        v["authentication"]["loginEndpoint"],
        "https://localhost:8444/"
    );
    assert_eq!(
        v["authentication"]["audiences"][0],
        "https://management.core.windows.net/"
    );
    assert_eq!(v["suffixes"]["keyVaultDns"], "vault.localhost");
    assert!(v["suffixes"]["storage"].is_string());
}

#[tokio::test]
async fn subscriptions_list_only_the_configured_one() {
    let h = harness().await;
    let (s, v) = h.call("GET", "/subscriptions", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["value"][0]["subscriptionId"], SUB);
    assert_eq!(v["value"][0]["tenantId"], TID);
    assert_eq!(v["value"][0]["state"], "Enabled");
    let (s, v) = h
        .call(
            "GET",
            "/subscriptions/00000000-0000-0000-0000-000000000000",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "SubscriptionNotFound");
}

/// Subscription-wide catalogs (the subscription itself, providers, locations,
/// SKUs, VM sizes, images) are visible to principals with access somewhere in
/// the subscription, and only as far as their roles list the catalog's action.
#[tokio::test]
async fn catalog_reads_follow_access_in_the_subscription() {
    let h = harness().await;
    h.rg("rg1").await;
    let sub = format!("/subscriptions/{SUB}");
    let deployer = "88888888-8888-4888-8888-888888888888";
    let vault_reader = "99999999-9999-4999-8999-999999999999";
    let nobody = "77777777-7777-4777-8777-777777777777";
    for p in [deployer, vault_reader, nobody] {
        h.principal(p);
    }
    h.assign(deployer, VM_CONTRIBUTOR, &rg_path("rg1")).await;
    h.assign(vault_reader, KV_SECRETS_USER, &rg_path("rg1"))
        .await;
    let images = format!(
        "{sub}/providers/Microsoft.Compute/locations/eastus/publishers/Canonical/artifacttypes/vmimage/offers/0001-com-ubuntu-server-jammy/skus/22_04-lts-gen2/versions"
    );
    let sizes = format!("{sub}/providers/Microsoft.Compute/locations/eastus/vmSizes");
    let shared = [
        sub.clone(),
        format!("{sub}/providers"),
        format!("{sub}/providers/Microsoft.Compute"),
        format!("{sub}/locations"),
        format!("{sub}/providers/Microsoft.Compute/skus"),
    ];
    // (principal, path, allowed)
    let mut cases: Vec<(&str, String, bool)> = Vec::new();
    for p in &shared {
        cases.push((deployer, p.clone(), true));
        cases.push((vault_reader, p.clone(), true));
        cases.push((nobody, p.clone(), false));
    }
    for p in [&images, &sizes] {
        // Resource-group-scoped Virtual Machine Contributor lists
        // Microsoft.Compute/locations/*: `az vm create` works for it.
        cases.push((deployer, p.clone(), true));
        // Key Vault Secrets User has data actions only.
        cases.push((vault_reader, p.clone(), false));
        cases.push((nobody, p.clone(), false));
    }
    for (who, path, allowed) in cases {
        let (s, v) = h.call_as(who, "GET", &path, None).await;
        if allowed {
            assert_eq!(s, StatusCode::OK, "{who} {path}: {v}");
        } else {
            assert_eq!(s, StatusCode::FORBIDDEN, "{who} {path}: {v}");
            assert_eq!(v["error"]["code"], "AuthorizationFailed", "{v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("over scope '{sub}'")),
                "{v}"
            );
        }
    }
    // The subscription list shows only what the caller has access in.
    let (_, v) = h.call_as(deployer, "GET", "/subscriptions", None).await;
    assert_eq!(v["value"][0]["subscriptionId"], SUB, "{v}");
    let (s, v) = h.call_as(nobody, "GET", "/subscriptions", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["value"], json!([]), "{v}");
    assert_eq!(v["count"]["value"], 0, "{v}");
}

#[tokio::test]
async fn resource_group_crud_with_mixed_case_paths() {
    let h = harness().await;
    let (s, v) = h
        .call(
            "PUT",
            &format!("/subscriptions/{SUB}/resourcegroups/MyRG"),
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["id"], format!("/subscriptions/{SUB}/resourceGroups/MyRG"));
    assert_eq!(v["name"], "MyRG");
    assert_eq!(v["properties"]["provisioningState"], "Succeeded");
    let (s, v) = h
        .call(
            "PUT",
            &format!("/SUBSCRIPTIONS/{SUB}/RESOURCEGROUPS/myrg"),
            Some(json!({"location": "eastus", "tags": {"a": "b"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["name"], "MyRG", "names echo as created");
    assert_eq!(v["tags"]["a"], "b");
    let (s, v) = h
        .call(
            "GET",
            &format!("/subscriptions/{SUB}/resourceGroups/MYRG"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["location"], "eastus");
    let (s, v) = h
        .call("GET", &format!("/subscriptions/{SUB}/resourceGroups"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
    let (s, _) = h.call("DELETE", &rg_path("myRG"), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h.call("GET", &rg_path("MyRG"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "ResourceGroupNotFound");
    assert_eq!(
        v["error"]["message"],
        "Resource group 'MyRG' could not be found."
    );
}

#[tokio::test]
async fn bad_json_is_a_400_envelope() {
    let h = harness().await;
    let (s, _, v) = h
        .raw(
            "PUT",
            &format!("{}?api-version=2024-11-01", rg_path("rg1")),
            Some(&h.token(ADMIN)),
            Some("{not json"),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "InvalidRequestContent");
    let (s, v) = h
        .call(
            "GET",
            &format!(
                "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/disks/d1"
            ),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "InvalidResourceType");
}

#[tokio::test]
async fn uami_create_provisions_a_principal_with_a_certificate() {
    let h = harness().await;
    h.rg("rg1").await;
    let v = h.uami("rg1", "id1").await;
    let id = format!(
        "/subscriptions/{SUB}/resourcegroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"
    );
    assert_eq!(v["id"], id);
    assert_eq!(
        v["type"],
        "Microsoft.ManagedIdentity/userAssignedIdentities"
    );
    assert_eq!(v["properties"]["tenantId"], TID);
    let principal = v["properties"]["principalId"].as_str().unwrap().to_owned();
    let client = v["properties"]["clientId"].as_str().unwrap().to_owned();
    {
        let s = h.shared.lock();
        let sp = &s.service_principals[&principal];
        assert_eq!(sp.app_id, client);
        assert_eq!(
            sp.r#type,
            entra::ServicePrincipalType::ManagedIdentity as i32
        );
        assert_eq!(sp.managed_identity_resource_id, id);
        assert_eq!(sp.key_credentials.len(), 1);
        let info = misim_token::cert::parse_cert(&sp.key_credentials[0].certificate_der).unwrap();
        assert_eq!(info.not_after - info.not_before, 90 * 86400);
        assert_eq!(info.not_before, NOW as i64);
    }
    // PUT again: 200, same principal, no new provisioning.
    let (s, again) = h
        .call(
            "PUT",
            &uami_path("rg1", "ID1"),
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["properties"]["principalId"], principal.as_str());
    let (_, list) = h
        .call(
            "GET",
            &format!(
                "/subscriptions/{SUB}/providers/Microsoft.ManagedIdentity/userAssignedIdentities"
            ),
            None,
        )
        .await;
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
    // Delete: principal goes; second delete is 204.
    let (s, _) = h.call("DELETE", &uami_path("rg1", "id1"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!h.shared.lock().service_principals.contains_key(&principal));
    let (s, _) = h.call("DELETE", &uami_path("rg1", "id1"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = h.call("GET", &uami_path("rg1", "id1"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "ResourceNotFound");
}

#[tokio::test]
async fn vm_with_system_identity_is_one_call_to_entra_then_one_to_imds() {
    let h = harness().await;
    h.rg("rg1").await;
    h.clear_calls();
    let (s, v) = h
        .call(
            "PUT",
            &vm_path("rg1", "vm1"),
            Some(vm_body(json!({"type": "systemassigned"}))),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let vm_id = format!(
        "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"
    );
    assert_eq!(v["id"], vm_id);
    assert_eq!(v["identity"]["type"], "SystemAssigned");
    assert_eq!(v["identity"]["tenantId"], TID);
    assert_eq!(v["properties"]["provisioningState"], "Succeeded");
    assert!(v["properties"]["vmId"].is_string());
    assert!(
        v["properties"]["osProfile"].get("adminPassword").is_none(),
        "secrets never echo"
    );
    let principal = v["identity"]["principalId"].as_str().unwrap();
    let sp = h.shared.lock().service_principals[principal].clone();
    assert_eq!(v["identity"]["principalId"], sp.object_id);
    // The principal was created with its certificate (no AddKeyCredential),
    // then IMDS was given the VM and its identity in one PutVm.
    assert_eq!(sp.key_credentials.len(), 1, "{sp:?}");
    let calls = h.calls();
    assert_eq!(
        calls,
        vec![
            format!("CreateServicePrincipal {vm_id}"),
            format!(
                "PutVm {vm_id} size=Standard_B1s os=Linux user=azureuser pub=Canonical + kind=1 client={}",
                sp.app_id
            ),
        ]
    );
    // IMDS signs with the certificate Entra holds.
    let imds = h.shared.lock().vms[&vm_id.to_ascii_lowercase()].clone();
    assert_eq!(imds.len(), 1);
    assert_eq!(
        imds[0].certificate_thumbprint,
        sp.key_credentials[0].thumbprint_sha1
    );
    // instanceView on request.
    let (s, v) = h
        .call(
            "GET",
            &format!("{}?$expand=instanceView", vm_path("rg1", "VM1")),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let codes: Vec<&str> = v["properties"]["instanceView"]["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["ProvisioningState/succeeded", "PowerState/running"]);
    // Delete: IMDS forgets the VM, the SAMI principal goes.
    h.clear_calls();
    let (s, _) = h.call("DELETE", &vm_path("rg1", "vm1"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h.calls(),
        vec![
            format!("DeleteVm {vm_id}"),
            format!("DeleteServicePrincipal {principal}")
        ]
    );
    let (s, _) = h.call("DELETE", &vm_path("rg1", "vm1"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn patch_follows_the_identity_merge_table() {
    let h = harness().await;
    h.rg("rg1").await;
    let u1 = h.uami("rg1", "id1").await;
    let u2 = h.uami("rg1", "id2").await;
    let id1 = u1["id"].as_str().unwrap().to_owned();
    // az expands names with resourceGroups casing.
    let id2 = uami_path("rg1", "id2");
    let (s, _) = h
        .call("PUT", &vm_path("rg1", "vm1"), Some(vm_body(json!(null))))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let vm = vm_path("rg1", "vm1");
    let patch = |identity: Value| json!({"identity": identity});

    // Row 1: SAMI created.
    let (s, v) = h
        .call("PATCH", &vm, Some(patch(json!({"type": "SystemAssigned"}))))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["identity"]["type"], "SystemAssigned");
    let sami1 = v["identity"]["principalId"].as_str().unwrap().to_owned();

    // Row 2: SAMI kept, UAMIs added; canonical type with the space.
    let (_, v) = h
        .call("PATCH", &vm, Some(patch(json!({"type": "SystemAssigned,UserAssigned", "userAssignedIdentities": {&id1: {}, &id2: {}}}))))
        .await;
    assert_eq!(v["identity"]["type"], "SystemAssigned, UserAssigned");
    assert_eq!(v["identity"]["principalId"], sami1.as_str());
    assert_eq!(
        v["identity"]["userAssignedIdentities"][&id1]["clientId"],
        u1["properties"]["clientId"]
    );
    assert_eq!(
        v["identity"]["userAssignedIdentities"][&id2]["principalId"],
        u2["properties"]["principalId"]
    );

    // Row 3: remove id1 only.
    h.clear_calls();
    let (_, v) = h
        .call("PATCH", &vm, Some(patch(json!({"type": "SystemAssigned,UserAssigned", "userAssignedIdentities": {&id1: null}}))))
        .await;
    assert_eq!(v["identity"]["type"], "SystemAssigned, UserAssigned");
    assert_eq!(
        v["identity"]["userAssignedIdentities"]
            .as_object()
            .unwrap()
            .len(),
        1
    );
    assert!(v["identity"]["userAssignedIdentities"].get(&id2).is_some());
    let vm_id = v["id"].as_str().unwrap().to_owned();
    assert!(h.calls().contains(&format!(
        "RemoveIdentity {vm_id} client={}",
        u1["properties"]["clientId"].as_str().unwrap()
    )));

    // Row 5: drop the SAMI, keep the UAMIs.
    h.clear_calls();
    let (_, v) = h
        .call(
            "PATCH",
            &vm,
            Some(patch(
                json!({"type": "UserAssigned", "userAssignedIdentities": null}),
            )),
        )
        .await;
    assert_eq!(v["identity"]["type"], "UserAssigned");
    assert!(v["identity"].get("principalId").is_none());
    assert!(v["identity"]["userAssignedIdentities"].get(&id2).is_some());
    assert!(
        h.calls()
            .contains(&format!("DeleteServicePrincipal {sami1}"))
    );
    assert!(!h.shared.lock().service_principals.contains_key(&sami1));

    // Re-enable: a new principal.
    let (_, v) = h
        .call(
            "PATCH",
            &vm,
            Some(patch(json!({"type": "SystemAssigned, UserAssigned"}))),
        )
        .await;
    assert_eq!(v["identity"]["type"], "SystemAssigned, UserAssigned");
    let sami2 = v["identity"]["principalId"].as_str().unwrap().to_owned();
    assert_ne!(sami1, sami2);

    // Row 4: drop all UAMIs, keep the SAMI.
    let (_, v) = h
        .call(
            "PATCH",
            &vm,
            Some(patch(
                json!({"type": "SystemAssigned", "userAssignedIdentities": null}),
            )),
        )
        .await;
    assert_eq!(v["identity"]["type"], "SystemAssigned");
    assert!(v["identity"].get("userAssignedIdentities").is_none());
    assert_eq!(v["identity"]["principalId"], sami2.as_str());

    // Row 6: remove everything.
    let (_, v) = h
        .call("PATCH", &vm, Some(patch(json!({"type": "None"}))))
        .await;
    assert!(v.get("identity").is_none(), "{v}");
    assert!(!h.shared.lock().service_principals.contains_key(&sami2));

    // Unknown UAMI: 400 FailedIdentityOperation, nothing written.
    let ghost = uami_path("rg1", "ghost");
    let (s, v) = h
        .call(
            "PATCH",
            &vm,
            Some(patch(
                json!({"type": "UserAssigned", "userAssignedIdentities": {&ghost: {}}}),
            )),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "FailedIdentityOperation");
    // Bad type string.
    let (s, v) = h
        .call("PATCH", &vm, Some(patch(json!({"type": "Both"}))))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "InvalidParameter");
}

#[tokio::test]
async fn deleting_a_uami_removes_it_from_imds_and_entra() {
    let h = harness().await;
    h.rg("rg1").await;
    let u = h.uami("rg1", "id1").await;
    let id = u["id"].as_str().unwrap().to_owned();
    let (s, v) = h
        .call(
            "PUT",
            &vm_path("rg1", "vm1"),
            Some(vm_body(
                json!({"type": "UserAssigned", "userAssignedIdentities": {&id: {}}}),
            )),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let vm_id = v["id"].as_str().unwrap().to_owned();
    h.clear_calls();
    let (s, _) = h.call("DELETE", &uami_path("rg1", "id1"), None).await;
    assert_eq!(s, StatusCode::OK);
    let client = u["properties"]["clientId"].as_str().unwrap();
    let principal = u["properties"]["principalId"].as_str().unwrap();
    assert_eq!(
        h.calls(),
        vec![
            format!("RemoveIdentity {vm_id} client={client}"),
            format!("DeleteServicePrincipal {principal}")
        ]
    );
    // As in Azure, the VM keeps listing the deleted identity's id.
    let (_, v) = h.call("GET", &vm_path("rg1", "vm1"), None).await;
    assert_eq!(v["identity"]["type"], "UserAssigned", "{v}");
    assert!(
        v["identity"]["userAssignedIdentities"].get(&id).is_some(),
        "{v}"
    );
}

#[tokio::test]
async fn resource_group_delete_cascades() {
    let h = harness().await;
    h.rg("rg1").await;
    let u = h.uami("rg1", "id1").await;
    let (s, v) = h
        .call(
            "PUT",
            &vm_path("rg1", "vm1"),
            Some(vm_body(json!({"type": "SystemAssigned"}))),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let sami = v["identity"]["principalId"].as_str().unwrap().to_owned();
    let (s, _) = h
        .call(
            "PUT",
            &vault_path("rg1", "kv1"),
            Some(json!({"location": "eastus", "properties": {}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = h.call("DELETE", &rg_path("rg1"), None).await;
    assert_eq!(s, StatusCode::OK);
    let sps = h.shared.lock().service_principals.clone();
    assert!(!sps.contains_key(&sami));
    assert!(!sps.contains_key(u["properties"]["principalId"].as_str().unwrap()));
    assert!(h.calls().iter().any(|c| c.starts_with("DeleteVm ")));
    // The vault name is free again.
    h.rg("rg2").await;
    let (s, _) = h
        .call(
            "PUT",
            &vault_path("rg2", "KV1"),
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test]
async fn role_assignments_create_duplicate_and_unknown_principal() {
    let h = harness().await;
    h.rg("rg1").await;
    let p = "44444444-4444-4444-8444-444444444444";
    h.principal(p);
    let scope = format!("/subscriptions/{SUB}/resourceGroups/rg1");
    let path = |n: &str| format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{n}");
    let body = |principal: &str| json!({"properties": {"principalId": principal, "roleDefinitionId": role_id(READER)}});
    let (s, v) = h.call("PUT", &path("a1"), Some(body(p))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["id"], path("a1"));
    assert_eq!(v["type"], "Microsoft.Authorization/roleAssignments");
    assert_eq!(v["properties"]["principalType"], "ServicePrincipal");
    assert_eq!(v["properties"]["scope"], scope);
    assert_eq!(v["properties"]["principalId"], p);
    assert_eq!(v["properties"]["roleDefinitionId"], role_id(READER));

    let (s, v) = h.call("PUT", &path("a2"), Some(body(p))).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["error"]["code"], "RoleAssignmentExists");

    let ghost = "55555555-5555-4555-8555-555555555555";
    let (s, v) = h.call("PUT", &path("a3"), Some(body(ghost))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "PrincipalNotFound");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(" does not exist in the directory ")
    );

    let (s, v) = h.call("GET", &path("A1"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["name"], "a1");

    let list_path = format!(
        "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId%20eq%20'{p}'"
    );
    let (s, v) = h.call("GET", &list_path, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["value"].as_array().unwrap().len(), 1, "{v}");
    // atScope() at the subscription excludes the RG-level assignment.
    let at = format!(
        "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments?$filter=atScope()"
    );
    let (_, v) = h.call("GET", &at, None).await;
    assert!(
        v["value"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["properties"]["principalId"] == ADMIN),
        "{v}"
    );

    let (s, _) = h.call("DELETE", &path("a1"), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h.call("GET", &path("a1"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "RoleAssignmentNotFound");
}

#[tokio::test]
async fn role_definitions_by_name_and_guid() {
    let h = harness().await;
    let (s, v) = h
        .call(
            "GET",
            &format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Authorization/roleDefinitions?$filter=roleName%20eq%20'virtual%20machine%20CONTRIBUTOR'"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let values = v["value"].as_array().unwrap();
    assert_eq!(values.len(), 1);
    assert_eq!(values[0]["name"], VM_CONTRIBUTOR);
    assert_eq!(values[0]["id"], role_id(VM_CONTRIBUTOR));
    assert_eq!(
        values[0]["properties"]["roleName"],
        "Virtual Machine Contributor"
    );
    assert_eq!(values[0]["properties"]["type"], "BuiltInRole");
    assert_eq!(values[0]["properties"]["assignableScopes"][0], "/");

    let (s, v) = h.call("GET", &format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{KV_SECRETS_USER}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["properties"]["permissions"][0]["dataActions"][0],
        "Microsoft.KeyVault/vaults/secrets/getSecret/action"
    );
    let (_, v) = h
        .call(
            "GET",
            &format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions"),
            None,
        )
        .await;
    assert_eq!(v["value"].as_array().unwrap().len(), 12);
}

#[tokio::test]
async fn reader_cannot_write() {
    let h = harness().await;
    h.rg("rg1").await;
    let reader = "66666666-6666-4666-8666-666666666666";
    h.principal(reader);
    h.assign(reader, READER, &format!("/subscriptions/{SUB}"))
        .await;
    let (s, _) = h.call_as(reader, "GET", &rg_path("rg1"), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h
        .call_as(
            reader,
            "PUT",
            &rg_path("rg2"),
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(v["error"]["code"], "AuthorizationFailed");
    assert_eq!(
        v["error"]["message"],
        format!(
            "The client '{reader}' with object id '{reader}' does not have authorization to perform action 'Microsoft.Resources/subscriptions/resourceGroups/write' over scope '/subscriptions/{SUB}/resourceGroups/rg2' or the scope is invalid. If access was recently granted, please refresh your credentials."
        )
    );
    // Nobody-at-all is denied reads too.
    let (s, _) = h
        .call_as(
            "77777777-7777-4777-8777-777777777777",
            "GET",
            &rg_path("rg1"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn vm_contributor_needs_managed_identity_operator_to_attach() {
    let h = harness().await;
    h.rg("rg1").await;
    let u = h.uami("rg1", "id1").await;
    let id = u["id"].as_str().unwrap().to_owned();
    let dev = "88888888-8888-4888-8888-888888888888";
    h.principal(dev);
    let rg_scope = format!("/subscriptions/{SUB}/resourceGroups/rg1");
    h.assign(dev, VM_CONTRIBUTOR, &rg_scope).await;

    // A SAMI needs only VM Contributor.
    let (s, v) = h
        .call_as(
            dev,
            "PUT",
            &vm_path("rg1", "vm1"),
            Some(vm_body(json!({"type": "SystemAssigned"}))),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Attaching is a linked authorization of the VM write: ARM names every
    // identity the caller may not assign, with one action for each.
    let id2 = h.uami("rg1", "id2").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let both = json!({"identity": {"type": "SystemAssigned,UserAssigned",
        "userAssignedIdentities": {&id: {}, &id2: {}}}});
    let (s, v) = h
        .call_as(dev, "PATCH", &vm_path("rg1", "vm1"), Some(both))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "LinkedAuthorizationFailed");
    let assign = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action";
    assert_eq!(
        v["error"]["message"],
        format!(
            "The client '{dev}' with object id '{dev}' has permission to perform action 'Microsoft.Compute/virtualMachines/write' on scope '/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1'; however, it does not have permission to perform action(s) '{assign},{assign}' on the linked scope(s) '{id},{id2}' (respectively) or the linked scope(s) are invalid."
        )
    );
    let attach = json!({"identity": {"type": "SystemAssigned,UserAssigned", "userAssignedIdentities": {&id: {}}}});
    // Nothing changed.
    let (_, v) = h.call("GET", &vm_path("rg1", "vm1"), None).await;
    assert_eq!(v["identity"]["type"], "SystemAssigned");

    h.assign(dev, MI_OPERATOR, &id).await;
    let (s, v) = h
        .call_as(dev, "PATCH", &vm_path("rg1", "vm1"), Some(attach))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["identity"]["type"], "SystemAssigned, UserAssigned");

    // Keeping an attached identity needs no permission on it...
    let ops = "99999999-9999-4999-8999-999999999999";
    h.principal(ops);
    h.assign(ops, VM_CONTRIBUTOR, &rg_scope).await;
    let tags = json!({"tags": {"env": "test"}});
    let (s, v) = h
        .call_as(ops, "PATCH", &vm_path("rg1", "vm1"), Some(tags.clone()))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // ...but an identity deleted and created again under the same id is
    // another principal: using it is a new assignment, checked as one.
    let (s, _) = h.call("DELETE", &uami_path("rg1", "id1"), None).await;
    assert!(s.is_success());
    h.uami("rg1", "id1").await;
    let (s, v) = h
        .call_as(ops, "PATCH", &vm_path("rg1", "vm1"), Some(tags))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "LinkedAuthorizationFailed", "{v}");
}

#[tokio::test]
async fn vault_access_follows_assignments_at_vault_scope() {
    let h = harness().await;
    h.rg("rg1").await;
    let (s, v) = h
        .call("PUT", &vault_path("rg1", "kv1"), Some(json!({"location": "eastus", "properties": {"sku": {"family": "A", "name": "standard"}, "tenantId": TID}})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["properties"]["vaultUri"],
        "https://kv1.vault.localhost:8445/"
    );
    assert_eq!(v["properties"]["enableRbacAuthorization"], true);
    assert_eq!(v["properties"]["tenantId"], TID);
    let kv1 = v["id"].as_str().unwrap().to_owned();
    let (s, _) = h
        .call(
            "PUT",
            &vault_path("rg1", "kv2"),
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // Names are global.
    h.rg("rg2").await;
    let (s, v) = h
        .call(
            "PUT",
            &vault_path("rg2", "KV1"),
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    let app = "99999999-9999-4999-8999-999999999999";
    h.principal(app);
    h.assign(app, KV_SECRETS_USER, &kv1).await;

    let url = serve_arm_grpc(&h.arm).await;
    // Role grants for test clients are the sandbox owner's, not Key Vault's.
    let refused = AuthorizationClient::new(channel_as(Caller::KeyVault, &url))
        .create_role_assignment(misim_proto::arm::v1::CreateRoleAssignmentRequest {
            principal_id: app.into(),
            role: "Owner".into(),
            scope: format!("/subscriptions/{SUB}"),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let mut client = AuthorizationClient::new(channel_as(Caller::KeyVault, &url));
    let ask = |vault: &str, action: &str| CheckVaultAccessRequest {
        vault_name: vault.into(),
        principal_id: app.into(),
        data_action: action.into(),
    };
    let get = "Microsoft.KeyVault/vaults/secrets/getSecret/action";
    let d = client
        .check_vault_access(ask("KV1", get))
        .await
        .unwrap()
        .into_inner();
    assert!(d.vault_exists && d.allowed, "{}", d.reason);
    assert_eq!(d.vault_resource_id, kv1);
    assert_eq!(d.location, "eastus");
    let d = client
        .check_vault_access(ask(
            "kv1",
            "Microsoft.KeyVault/vaults/secrets/setSecret/action",
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!d.allowed);
    let d = client
        .check_vault_access(ask("kv2", get))
        .await
        .unwrap()
        .into_inner();
    assert!(d.vault_exists && !d.allowed);
    let d = client
        .check_vault_access(ask("nope", get))
        .await
        .unwrap()
        .into_inner();
    assert!(!d.vault_exists && !d.allowed);
    // The admin's Key Vault Secrets Officer at the subscription covers every vault.
    let d = client
        .check_vault_access(CheckVaultAccessRequest {
            vault_name: "kv2".into(),
            principal_id: ADMIN.into(),
            data_action: "Microsoft.KeyVault/vaults/secrets/setSecret/action".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(d.allowed, "{}", d.reason);
    let d = client
        .check_access(misim_proto::arm::v1::CheckAccessRequest {
            principal_id: app.into(),
            action: "Microsoft.KeyVault/vaults/write".into(),
            scope: kv1.clone(),
            data_action: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!d.allowed);
}

#[tokio::test]
async fn imds_down_accepts_the_vm_and_leaves_it_updating() {
    // IMDS points at a port nobody listens on.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let h = harness_with(Some(&url)).await;
    h.rg("rg1").await;
    let (s, v) = h
        .call(
            "PUT",
            &vm_path("rg1", "vm1"),
            Some(vm_body(json!({"type": "SystemAssigned"}))),
        )
        .await;
    // Accepted (the intent is durable); the operation waits for IMDS.
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Updating");
    let (s, v) = h.call("GET", &vm_path("rg1", "vm1"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["properties"]["provisioningState"], "Updating");
    // The system identity's principal comes first now (created with its
    // certificate, so Entra accepts what IMDS will hold); IMDS gets the VM
    // and that identity in one call once it is back.
    let sps = h.shared.lock().service_principals.clone();
    assert_eq!(sps.len(), 1, "{sps:?}");
    let sp = sps.values().next().unwrap();
    assert_eq!(sp.key_credentials.len(), 1, "{sp:?}");
}
