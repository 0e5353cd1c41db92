//! The system-test harness: a whole sandbox in-process on port 0 with sled in a temp dir, an HTTPS
//! client that trusts its CA, a fault hook on ARM's peer calls, and helpers for common requests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use misim_proto::faults::{FaultHook, Faults};
use misim_sandbox::{Sandbox, SandboxConfig};
use misim_token::verify::{AccessClaims, KeySet};
use serde_json::{Value, json};

pub(crate) const KV_SECRETS_USER: &str = "4633458b-17de-408a-b874-0445c86b69e6";
pub(crate) const VAULT_AUD: &str = "https://vault.azure.net";

/// A running sandbox plus an HTTPS client that trusts its CA and resolves the
/// vault host names to the loopback Key Vault listener.
pub(crate) struct World {
    pub sb: Sandbox,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub admin_arm: String,
    /// Sees (and may fail) every call ARM makes to Entra and IMDS.
    pub faults: Arc<PeerFaults>,
}

/// The fault hook on ARM's calls to its peers: counts every call by
/// `service/method` and fails the ones a test names, deterministically.
#[derive(Debug)]
pub(crate) struct PeerFaults {
    state: Mutex<FaultState>,
    /// Bumped on every call, so a test can wait for a count without sleeping.
    seen: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct FaultState {
    /// `service/method` suffix → the status such calls fail with, and how
    /// many more calls fail (`None`: every one).
    fail: BTreeMap<String, (tonic::Code, String, Option<u64>)>,
    calls: BTreeMap<String, u64>,
}

impl Default for PeerFaults {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            seen: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl PeerFaults {
    fn state(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every later call whose `service/method` ends with `method` fails with
    /// `code` and `message`, unsent.
    pub(crate) fn fail(&self, method: &str, code: tonic::Code, message: &str) {
        self.state()
            .fail
            .insert(method.to_owned(), (code, message.to_owned(), None));
    }

    /// As [`fail`](Self::fail), for the next `n` such calls only.
    pub(crate) fn fail_times(&self, method: &str, code: tonic::Code, message: &str, n: u64) {
        self.state()
            .fail
            .insert(method.to_owned(), (code, message.to_owned(), Some(n)));
    }

    /// No call fails any more.
    pub(crate) fn clear(&self) {
        self.state().fail.clear();
    }

    /// Calls so far whose `service/method` ends with `method` (failed or not).
    pub(crate) fn calls(&self, method: &str) -> u64 {
        self.state()
            .calls
            .iter()
            .filter(|(k, _)| k.ends_with(method))
            .map(|(_, n)| n)
            .sum()
    }

    /// Waits (up to a minute) until there have been `n` such calls.
    pub(crate) async fn wait_calls(&self, method: &str, n: u64) {
        let mut rx = self.seen.subscribe();
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            rx.wait_for(|_| self.calls(method) >= n),
        )
        .await;
        assert!(
            matches!(r, Ok(Ok(_))),
            "{n} calls of {method} never came ({} seen)",
            self.calls(method)
        );
    }
}

impl FaultHook for PeerFaults {
    fn before_call(&self, service: &str, method: &str) -> Option<tonic::Status> {
        let key = format!("{service}/{method}");
        let failure = {
            let mut st = self.state();
            *st.calls.entry(key.clone()).or_default() += 1;
            st.fail
                .iter_mut()
                .find(|(m, (_, _, left))| key.ends_with(m.as_str()) && *left != Some(0))
                .map(|(_, (code, msg, left))| {
                    if let Some(n) = left {
                        *n -= 1;
                    }
                    tonic::Status::new(*code, msg.clone())
                })
        };
        self.seen.send_modify(|n| *n += 1);
        failure
    }
}

/// A service principal created through Graph, with an ARM token.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub client_id: String,
    pub secret: String,
    pub object_id: String,
    pub arm_token: String,
}

pub(crate) async fn start() -> World {
    let dir = tempfile::tempdir().unwrap();
    start_in(dir).await
}

pub(crate) async fn start_in(dir: tempfile::TempDir) -> World {
    start_with_clock(dir, None).await
}

/// A sandbox in `dir` whose services all read `clock` (the real clock if none).
pub(crate) async fn start_with_clock(
    dir: tempfile::TempDir,
    clock: Option<misim_types::SharedClock>,
) -> World {
    start_with(dir, |config| {
        if let Some(clock) = clock {
            config.clock = clock;
        }
    })
    .await
}

/// A sandbox in `dir` whose configuration `tweak` adjusts (the fault hook is the harness's).
pub(crate) async fn start_with(
    dir: tempfile::TempDir,
    tweak: impl FnOnce(&mut SandboxConfig),
) -> World {
    let faults = Arc::new(PeerFaults::default());
    let mut config = SandboxConfig::new(dir.path());
    config.arm_peer_faults = Faults::with(faults.clone());
    tweak(&mut config);
    let sb = Sandbox::start(config).await.expect("sandbox starts");
    let http = client(&sb);
    let mut w = World {
        sb,
        http,
        dir,
        admin_arm: String::new(),
        faults,
    };
    w.admin_arm = w.admin_token("https://management.azure.com/.default").await;
    w
}

pub(crate) fn client(sb: &Sandbox) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(sb.ca_pem.as_bytes()).unwrap();
    let mut b = reqwest::Client::builder()
        .add_root_certificate(ca)
        .no_proxy()
        .timeout(Duration::from_secs(30));
    for vault in ["kv1", "kv2"] {
        b = b.resolve(&format!("{vault}.vault.localhost"), sb.keyvault_addr);
    }
    b.build().unwrap()
}

impl World {
    pub(crate) fn sub(&self) -> &str {
        &self.sb.bootstrap.subscription_id
    }

    pub(crate) fn tid(&self) -> &str {
        &self.sb.bootstrap.tenant_id
    }

    pub(crate) fn rg_id(&self, rg: &str) -> String {
        format!("/subscriptions/{}/resourceGroups/{rg}", self.sub())
    }

    pub(crate) fn vm_id(&self, rg: &str, vm: &str) -> String {
        format!(
            "{}/providers/Microsoft.Compute/virtualMachines/{vm}",
            self.rg_id(rg)
        )
    }

    pub(crate) fn uami_id(&self, rg: &str, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
            self.rg_id(rg)
        )
    }

    pub(crate) fn vault_id(&self, rg: &str, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.KeyVault/vaults/{name}",
            self.rg_id(rg)
        )
    }

    /// Client-credentials token for the bootstrap administrator (v2 endpoint).
    pub(crate) async fn admin_token(&self, scope: &str) -> String {
        let url = format!("{}/{}/oauth2/v2.0/token", self.sb.entra_url, self.tid());
        let r = self
            .http
            .post(url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.sb.bootstrap.admin_client_id.as_str()),
                (
                    "client_secret",
                    self.sb.bootstrap.admin_client_secret.as_str(),
                ),
                ("scope", scope),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "admin token");
        let v: Value = r.json().await.unwrap();
        assert!(v["expires_in"].is_i64(), "v2 expires_in is an integer: {v}");
        v["access_token"].as_str().unwrap().to_owned()
    }

    /// Client-credentials token for any application (v2 endpoint, `scope` like
    /// `https://management.azure.com/.default`).
    pub(crate) async fn token_for(&self, client_id: &str, secret: &str, scope: &str) -> String {
        let url = format!("{}/{}/oauth2/v2.0/token", self.sb.entra_url, self.tid());
        let r = self
            .http
            .post(url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("scope", scope),
            ])
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "token for {client_id}: {v}");
        v["access_token"].as_str().unwrap().to_owned()
    }

    /// The public endpoints and admin credentials, as `misim.env` gives them.
    pub(crate) fn public_apis(&self) -> misim_sandbox::cli::PublicApis {
        misim_sandbox::cli::PublicApis {
            arm_url: self.sb.arm_url.clone(),
            entra_url: self.sb.entra_url.clone(),
            tenant_id: self.tid().to_owned(),
            subscription_id: self.sub().to_owned(),
            admin_client_id: self.sb.bootstrap.admin_client_id.clone(),
            admin_client_secret: self.sb.bootstrap.admin_client_secret.clone(),
            ca_pem: self.sb.ca_pem.clone(),
        }
    }

    /// `misim principal create --name N [--role R --scope S]...`: an application,
    /// its service principal and a secret through Graph (admin token), each role
    /// granted through ARM. Returns the principal with an ARM token for it.
    pub(crate) async fn principal(&self, name: &str, grants: &[(&str, &str)]) -> Principal {
        let grants: Vec<(String, String)> = grants
            .iter()
            .map(|(r, s)| (r.to_string(), s.to_string()))
            .collect();
        let v = misim_sandbox::cli::create_principal(&self.public_apis(), name, &grants)
            .await
            .expect("misim principal create");
        let client_id = v["clientId"].as_str().unwrap().to_owned();
        let secret = v["clientSecret"].as_str().unwrap().to_owned();
        let arm_token = self
            .token_for(&client_id, &secret, "https://management.azure.com/.default")
            .await;
        Principal {
            client_id,
            secret,
            object_id: v["objectId"].as_str().unwrap().to_owned(),
            arm_token,
        }
    }

    /// Role assignment `PUT` by any caller; returns status and body.
    pub(crate) async fn grant_as(
        &self,
        token: &str,
        scope: &str,
        principal: &str,
        role_guid: &str,
    ) -> (u16, Value) {
        let name = uuid_like(principal, role_guid);
        let body = json!({"properties": {"principalId": principal,
            "roleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{role_guid}", self.sub())}});
        self.arm(
            "PUT",
            &format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"),
            token,
            Some(body),
        )
        .await
    }

    /// `METHOD {arm}{path}?api-version=..` with a bearer token; returns status and JSON body.
    pub(crate) async fn arm(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{sep}api-version=2024-11-01", self.sb.arm_url);
        let mut req = self
            .http
            .request(method.parse().unwrap(), url)
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub(crate) async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.arm(method, path, &self.admin_arm, body).await
    }

    pub(crate) async fn create_rg(&self, rg: &str) {
        let (s, v) = self
            .admin("PUT", &self.rg_id(rg), Some(json!({"location": "eastus"})))
            .await;
        assert!(s == 200 || s == 201, "create rg: {s} {v}");
    }

    pub(crate) async fn create_vault(&self, rg: &str, name: &str) -> Value {
        let body = json!({"location": "eastus", "properties": {"tenantId": self.tid(),
            "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": true}});
        let (s, v) = self
            .admin("PUT", &self.vault_id(rg, name), Some(body))
            .await;
        assert!(s == 200 || s == 201, "create vault: {s} {v}");
        v
    }

    pub(crate) async fn create_vm(&self, rg: &str, name: &str, identity: Value) -> Value {
        let body = json!({"location": "eastus", "identity": identity, "properties": {
            "hardwareProfile": {"vmSize": "Standard_B1s"},
            "storageProfile": {"imageReference": {"publisher": "Canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts-gen2", "version": "latest"}},
            "osProfile": {"computerName": name, "adminUsername": "azureuser"}}});
        let (s, v) = self.admin("PUT", &self.vm_id(rg, name), Some(body)).await;
        assert!(s == 200 || s == 201, "create vm: {s} {v}");
        v
    }

    pub(crate) async fn assign_role(&self, scope: &str, principal: &str, role_guid: &str) {
        let name = uuid_like(principal, role_guid);
        let body = json!({"properties": {"principalId": principal,
            "roleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{role_guid}", self.sub())}});
        let (s, v) = self
            .admin(
                "PUT",
                &format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"),
                Some(body),
            )
            .await;
        assert_eq!(s, 201, "role assignment: {v}");
    }

    /// Resource group `rg` with vault `vault` holding secret `name` = `value`, and VM `vm` with a
    /// system-assigned identity granted Key Vault Secrets User on the vault. Returns the VM's id
    /// and its principal id.
    pub(crate) async fn vm_reading_vault(
        &self,
        (rg, vm, vault): (&str, &str, &str),
        (name, value): (&str, &str),
    ) -> (String, String) {
        self.create_rg(rg).await;
        self.create_vault(rg, vault).await;
        self.set_secret(vault, name, value).await;
        let created = self
            .create_vm(rg, vm, json!({"type": "SystemAssigned"}))
            .await;
        let principal = created["identity"]["principalId"]
            .as_str()
            .unwrap()
            .to_owned();
        self.assign_role(&self.vault_id(rg, vault), &principal, KV_SECRETS_USER)
            .await;
        (self.vm_id(rg, vm), principal)
    }

    /// The VM's own IMDS base URL.
    pub(crate) async fn imds_endpoint(&self, vm_id: &str) -> String {
        let vm = self
            .sb
            .imds_control()
            .unwrap()
            .get_vm(misim_proto::imds::v1::GetVmRequest {
                resource_id: vm_id.into(),
            })
            .await
            .unwrap()
            .into_inner();
        // The VM's own loopback address (127.64.0.0/10), on IMDS's one port.
        assert!(
            vm.imds_endpoint.starts_with("http://127.")
                && !vm.imds_endpoint.starts_with("http://127.0."),
            "{}",
            vm.imds_endpoint
        );
        vm.imds_endpoint
    }

    /// Step 5: code in the VM asks its IMDS for a token.
    pub(crate) async fn imds_token(
        &self,
        endpoint: &str,
        resource: &str,
        selector: Option<(&str, &str)>,
    ) -> (u16, Value) {
        let mut q = vec![("api-version", "2018-02-01"), ("resource", resource)];
        if let Some(s) = selector {
            q.push(s);
        }
        let r = self
            .http
            .get(format!("{endpoint}/metadata/identity/oauth2/token"))
            .query(&q)
            .header("Metadata", "true")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// Step 7: read a secret with a bearer token.
    pub(crate) async fn get_secret(&self, vault: &str, name: &str, token: &str) -> (u16, Value) {
        let url = format!(
            "{}secrets/{name}/?api-version=7.4",
            self.sb.vault_url(vault)
        );
        let r = self.http.get(url).bearer_auth(token).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn set_secret(&self, vault: &str, name: &str, value: &str) {
        let token = self.admin_token("https://vault.azure.net/.default").await;
        let url = format!("{}secrets/{name}?api-version=7.4", self.sb.vault_url(vault));
        let r = self
            .http
            .put(url)
            .bearer_auth(token)
            .json(&json!({"value": value}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "set secret: {}", r.text().await.unwrap());
    }

    /// Verifies a token's signature and claims against the JWKS that Entra
    /// publishes over HTTPS (found through OIDC discovery), as any JWT library would.
    pub(crate) async fn verify_with_jwks(&self, token: &str, aud: &str) -> AccessClaims {
        let disco: Value = self
            .http
            .get(format!(
                "{}/{}/.well-known/openid-configuration",
                self.sb.entra_url,
                self.tid()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let issuer = disco["issuer"].as_str().unwrap().to_owned();
        let jwks: misim_token::jwks::Jwks = self
            .http
            .get(disco["jwks_uri"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut keys = KeySet::new(self.tid());
        for k in &jwks.keys {
            let n = misim_token::b64_lenient(&k.n).unwrap();
            let e = misim_token::b64_lenient(&k.e).unwrap();
            keys.add_rsa(&k.kid, &n, &e);
        }
        misim_token::verify::verify_access_token(
            token,
            &keys,
            &[issuer.as_str()],
            &misim_types::SystemClock,
            |a| misim_types::audiences::normalize(a) == misim_types::audiences::normalize(aud),
        )
        .expect("token verifies against the published JWKS")
    }
}

pub(crate) fn uuid_like(a: &str, b: &str) -> String {
    // Deterministic assignment name per (principal, role): the digits of both GUIDs mixed.
    let hex: String = a
        .chars()
        .chain(b.chars())
        .filter(|c| c.is_ascii_hexdigit())
        .collect();
    let h = &hex[hex.len() - 32..];
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

pub(crate) fn now_unix() -> i64 {
    #[allow(clippy::disallowed_methods)]
    // the test compares against the real clock the sandbox uses
    let now = std::time::SystemTime::now();
    now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}
