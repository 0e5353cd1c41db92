//! ARM's logic: resources, managed-identity provisioning (ARM acting as the
//! MSI resource provider, docs/contracts.md) and RBAC decisions. No axum,
//! tonic or generated proto types: peers are reached through [`crate::peers`].

pub mod catalog;
pub mod deployment;
pub mod doctor;
pub mod identity;
pub mod model;
pub mod network;
pub mod orchestrate;
pub mod roles;

use std::collections::BTreeMap;
use std::time::Duration;

use misim_store::{CachedTable, Store, Table};
use misim_types::{ResourceId, SharedClock, SharedIds};
use serde_json::{Map, Value};

use crate::config::Config;
use crate::error::ArmError;
use crate::peers::{IdentityKind, Peers, Principal};

use crate::rbac::{self, AccessRequest, AssignmentView, Decision};
use crate::records::*;
use crate::resource::Kind;
use identity::{IdentityRequest, IdentityState};

/// Validity of managed-identity certificates (docs/azure-protocol.md, Entra: managed-identity
/// certificates).
const CERT_VALIDITY: Duration = Duration::from_secs(90 * 86400);

/// The ARM core shared by the HTTP and gRPC edges.
#[derive(Debug)]
pub struct Core {
    pub(crate) config: Config,
    pub(crate) clock: SharedClock,
    ids: SharedIds,
    /// Entra and IMDS.
    peers: Peers,
    rgs: Table<RgRecord>,
    uamis: Table<UamiRecord>,
    vms: Table<VmRecord>,
    vaults: Table<VaultRecord>,
    vault_names: Table<String>,
    /// Read whole on every authorization: kept in memory between writes.
    assignments: CachedTable<AssignmentRecord>,
    network: Table<NetworkRecord>,
    deployments: Table<DeploymentRecord>,
    custom_roles: CachedTable<roles::CustomRoleRecord>,
    ops: Table<OpRecord>,
    pending: Table<String>,
    locks: orchestrate::Locks,
    op_seq: std::sync::Mutex<u64>,
}

/// The id of subscription `sub` as a scope.
fn sub_id(sub: &str) -> Result<ResourceId, ArmError> {
    ResourceId::parse(&format!("/subscriptions/{sub}"))
        .map_err(|e| ArmError::InvalidParameter(e.to_string()))
}

/// The lock serialising claims of a vault name (names are global).
fn vault_name_lock(name_key: &str) -> String {
    format!("vault-name|{name_key}")
}

/// Attaching a user-assigned identity to a resource.
const UAMI_ASSIGN: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action";

/// A PUT's outcome: the record and whether it was created.
pub type Put<T> = (T, bool);

fn rg_key(sub: &str, rg: &str) -> String {
    format!("{sub}/{rg}/").to_ascii_lowercase()
}

fn res_key(sub: &str, rg: &str, kind: Kind, name: &str) -> String {
    format!("{sub}/{rg}/{}/{name}", kind.type_name()).to_ascii_lowercase()
}

fn tags_of(body: &Value) -> Result<Option<Map<String, Value>>, ArmError> {
    match body.get("tags") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(_) => Err(ArmError::InvalidRequestContent(
            "tags must be an object".into(),
        )),
    }
}

fn location_of(body: &Value) -> Option<String> {
    body.get("location")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Fills the read-only parts of a VM's `properties` that clients read back:
/// `storageProfile.osDisk.osType` (from the image), the OS disk's name and
/// storage type when sent as `null`, and the OS configuration block.
fn complete_vm_properties(p: &mut Map<String, Value>, vm_name: &str) {
    let image = p
        .get("storageProfile")
        .and_then(|s| s.get("imageReference"))
        .cloned()
        .unwrap_or(Value::Null);
    let text = |k: &str| image.get(k).and_then(Value::as_str).unwrap_or("");
    let os = catalog::os_of(text("publisher"), text("offer"), text("sku"));
    if let Some(i) = catalog::image(text("publisher"), text("offer"), text("sku"))
        && let Some(v) = i.version(text("version"))
        && let Some(Value::Object(r)) = p
            .get_mut("storageProfile")
            .and_then(|s| s.get_mut("imageReference"))
    {
        r.insert("exactVersion".into(), Value::String(v.into()));
    }
    if let Some(Value::Object(sp)) = p.get_mut("storageProfile") {
        let disk = sp
            .entry("osDisk")
            .or_insert_with(|| serde_json::json!({"createOption": "FromImage"}));
        if let Some(d) = disk.as_object_mut() {
            if d.get("osType").is_none_or(Value::is_null) {
                d.insert("osType".into(), Value::String(os.into()));
            }
            if d.get("name").is_none_or(Value::is_null) {
                d.insert("name".into(), Value::String(format!("{vm_name}_OsDisk_1")));
            }
            let md = d
                .entry("managedDisk")
                .or_insert_with(|| serde_json::json!({}));
            if let Some(m) = md.as_object_mut()
                && m.get("storageAccountType").is_none_or(Value::is_null)
            {
                m.insert(
                    "storageAccountType".into(),
                    Value::String("Premium_LRS".into()),
                );
            }
        }
    }
    let windows = p
        .get("storageProfile")
        .and_then(|s| s.pointer("/osDisk/osType"))
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("windows"));
    if let Some(Value::Object(os)) = p.get_mut("osProfile") {
        if windows {
            os.entry("windowsConfiguration").or_insert_with(
                || serde_json::json!({"provisionVMAgent": true, "enableAutomaticUpdates": true}),
            );
        } else {
            os.entry("linuxConfiguration").or_insert_with(
                || serde_json::json!({"disablePasswordAuthentication": false, "provisionVMAgent": true}),
            );
        }
        os.entry("secrets").or_insert_with(|| Value::Array(vec![]));
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl Core {
    /// Opens the tables.
    pub(crate) fn new(
        config: Config,
        store: &Store,
        clock: SharedClock,
        ids: SharedIds,
        peers: Peers,
    ) -> Result<Self, ArmError> {
        Ok(Self {
            config,
            clock,
            ids,
            peers,
            rgs: store.table("resource_groups")?,
            uamis: store.table("user_assigned_identities")?,
            vms: store.table("virtual_machines")?,
            vaults: store.table("vaults")?,
            vault_names: store.table("vault_names")?,
            assignments: CachedTable::new(store.table("role_assignments")?),
            network: store.table("network_resources")?,
            deployments: store.table("deployments")?,
            custom_roles: CachedTable::new(store.table("custom_role_definitions")?),
            ops: store.table("operations")?,
            pending: store.table("pending_operations")?,
            locks: orchestrate::Locks::default(),
            op_seq: std::sync::Mutex::new(0),
        })
    }

    // ---------------------------------------------------------------- RBAC

    /// Ensures the bootstrap assignments exist at the subscription scope.
    pub async fn bootstrap(&self) -> Result<(), ArmError> {
        let scope = format!("/subscriptions/{}", self.config.subscription_id);
        for (principal, role) in &self.config.bootstrap_assignments {
            let exists = self.assignments.all()?.iter().any(|(_, a)| {
                a.principal_id.eq_ignore_ascii_case(principal)
                    && a.role_guid.eq_ignore_ascii_case(role)
                    && a.scope.eq_ignore_ascii_case(&scope)
            });
            if exists {
                continue;
            }
            let name = self.ids.guid();
            let rec = AssignmentRecord {
                id: format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"),
                name,
                scope: scope.clone(),
                role_guid: role.to_ascii_lowercase(),
                role_definition_id: self.config.role_definition_id(role),
                principal_id: principal.clone(),
                principal_type: "ServicePrincipal".into(),
            };
            self.assignments
                .put(&rec.id.to_ascii_lowercase(), &rec)
                .await?;
            tracing::info!(principal, role, "bootstrap role assignment created");
        }
        Ok(())
    }

    /// Decides an access question.
    pub fn decide(
        &self,
        principal: &str,
        action: &str,
        scope: &ResourceId,
        data: bool,
    ) -> Result<Decision, ArmError> {
        self.decide_with(principal, action, scope, data, rbac::evaluate)
    }

    fn decide_with(
        &self,
        principal: &str,
        action: &str,
        scope: &ResourceId,
        data: bool,
        evaluate: fn(&AccessRequest<'_>, &[AssignmentView<'_>]) -> Decision,
    ) -> Result<Decision, ArmError> {
        let all = self.assignments.all()?;
        let custom = self.custom_roles.all()?;
        let custom_role = |guid: &str| {
            custom
                .iter()
                .find(|(k, _)| k == guid)
                .map(|(_, r)| &r.definition)
        };
        let views: Vec<AssignmentView<'_>> = all
            .iter()
            .map(|(_, a)| a)
            .filter(|a| a.principal_id.eq_ignore_ascii_case(principal))
            .filter_map(|a| {
                Some(AssignmentView {
                    id: &a.id,
                    principal_id: &a.principal_id,
                    scope: ResourceId::parse(&a.scope).ok()?,
                    role: rbac::role_by_guid(&a.role_guid).or_else(|| custom_role(&a.role_guid))?,
                })
            })
            .collect();
        Ok(evaluate(
            &AccessRequest {
                principal_id: principal,
                action,
                scope,
                data,
            },
            &views,
        ))
    }

    /// Fails with 403 `AuthorizationFailed` unless `principal` may do `action` at `scope`.
    pub fn authorize(&self, principal: &str, action: &str, scope: &str) -> Result<(), ArmError> {
        let id = ResourceId::parse(scope).map_err(|e| ArmError::InvalidParameter(e.to_string()))?;
        let d = self.decide(principal, action, &id, false)?;
        Self::enforce(principal, action, scope, &d)
    }

    /// Like [`Core::authorize`] for reads of the subscription's catalogs
    /// (images, VM sizes, SKUs), which any assignment within the subscription
    /// whose role lists the action allows (see [`rbac::evaluate_subscription_read`]).
    pub fn authorize_subscription_read(
        &self,
        principal: &str,
        action: &str,
        sub: &str,
    ) -> Result<(), ArmError> {
        self.check_sub(sub)?;
        let id = sub_id(sub)?;
        let d = self.decide_with(
            principal,
            action,
            &id,
            false,
            rbac::evaluate_subscription_read,
        )?;
        Self::enforce(principal, action, id.as_str(), &d)
    }

    /// True when `principal` holds any role assignment at, above or within
    /// `sub`: what makes a subscription visible to it (`GET /subscriptions`,
    /// providers, locations), as on Azure.
    pub fn has_access_in(&self, principal: &str, sub: &str) -> Result<bool, ArmError> {
        if self.check_sub(sub).is_err() {
            return Ok(false);
        }
        let id = sub_id(sub)?;
        Ok(self.assignments.all()?.iter().any(|(_, a)| {
            a.principal_id.eq_ignore_ascii_case(principal)
                && ResourceId::parse(&a.scope).is_ok_and(|s| rbac::on_one_path(&id, &s))
        }))
    }

    /// Fails with 403 `AuthorizationFailed` unless `principal` has any access
    /// in `sub` (reported as a denial of `action`, as Azure words it).
    pub fn require_access_in(
        &self,
        principal: &str,
        action: &str,
        sub: &str,
    ) -> Result<(), ArmError> {
        self.check_sub(sub)?;
        if self.has_access_in(principal, sub)? {
            return Ok(());
        }
        tracing::info!(
            principal,
            action,
            sub,
            "authorization denied: no access in the subscription"
        );
        Err(ArmError::AuthorizationFailed {
            principal: principal.to_owned(),
            action: action.to_owned(),
            scope: format!("/subscriptions/{sub}"),
        })
    }

    /// Azure's linked authorization: the caller, allowed `action` at `scope`,
    /// must also be allowed each `(action, scope)` of the resources the
    /// request links to (identities a VM attaches, the subnet, NSG and public
    /// IP a NIC joins). Fails with 403 `LinkedAuthorizationFailed` naming
    /// every refused link.
    pub(crate) fn authorize_links(
        &self,
        principal: &str,
        action: &str,
        scope: &str,
        links: &[(&str, String)],
    ) -> Result<(), ArmError> {
        let mut refused: Vec<&(&str, String)> = Vec::new();
        for link in links {
            let (linked_action, linked_scope) = link;
            let id = ResourceId::parse(linked_scope).map_err(|e| {
                ArmError::InvalidParameter(format!(
                    "'{linked_scope}' is not a valid resource id: {e}"
                ))
            })?;
            let d = self.decide(principal, linked_action, &id, false)?;
            if !d.allowed {
                tracing::info!(principal, action = linked_action, scope = %linked_scope, reason = %d.reason, "linked authorization denied");
                refused.push(link);
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        Err(ArmError::LinkedAuthorizationFailed {
            principal: principal.to_owned(),
            action: action.to_owned(),
            scope: scope.to_owned(),
            linked_actions: refused
                .iter()
                .map(|(a, _)| *a)
                .collect::<Vec<_>>()
                .join(","),
            linked_scopes: refused
                .iter()
                .map(|(_, s)| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
        })
    }

    fn enforce(principal: &str, action: &str, scope: &str, d: &Decision) -> Result<(), ArmError> {
        if d.allowed {
            tracing::debug!(principal, action, scope, reason = %d.reason, "authorization allowed");
            return Ok(());
        }
        tracing::info!(principal, action, scope, reason = %d.reason, "authorization denied");
        Err(ArmError::AuthorizationFailed {
            principal: principal.to_owned(),
            action: action.to_owned(),
            scope: scope.to_owned(),
        })
    }

    // ------------------------------------------------------------ scopes

    /// The object id of the caller of an ARM bearer `token`.
    pub async fn authenticate(&self, token: &str) -> Result<String, ArmError> {
        self.peers.verify_bearer(token, self.clock.as_ref()).await
    }

    /// Fails unless `sub` is the configured subscription.
    pub fn check_sub(&self, sub: &str) -> Result<(), ArmError> {
        if sub.eq_ignore_ascii_case(&self.config.subscription_id) {
            Ok(())
        } else {
            Err(ArmError::SubscriptionNotFound(sub.to_owned()))
        }
    }

    /// The resource group, or 404 `ResourceGroupNotFound`.
    pub fn require_rg(&self, sub: &str, rg: &str) -> Result<RgRecord, ArmError> {
        self.check_sub(sub)?;
        self.rgs
            .get(&rg_key(sub, rg))?
            .ok_or_else(|| ArmError::ResourceGroupNotFound(rg.to_owned()))
    }

    fn not_found(kind: Kind, rg: &str, name: &str) -> ArmError {
        ArmError::ResourceNotFound {
            resource_type: kind.type_name().into(),
            name: name.into(),
            resource_group: rg.into(),
        }
    }

    // ------------------------------------------------- generic resources

    /// Creates or updates a resource of `kind` after the RBAC check
    /// `{type}/write` at its id. The one code path for direct PUTs/PATCHes and
    /// template deployments; returns the rendered resource.
    #[allow(clippy::too_many_arguments)]
    pub async fn write_resource(
        &self,
        principal: &str,
        sub: &str,
        rg: &str,
        kind: Kind,
        name: &str,
        body: &Value,
        patch: bool,
    ) -> Result<Put<Value>, ArmError> {
        let scope = format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/{}/{name}",
            kind.type_name()
        );
        self.authorize(principal, &format!("{}/write", kind.type_name()), &scope)?;
        let cfg = &self.config;
        match kind {
            Kind::Vm => {
                let (v, created) = self.put_vm(principal, sub, rg, name, body, patch).await?;
                Ok((
                    model::vm(cfg, &v, &self.attached_uamis(&v)?, false),
                    created,
                ))
            }
            Kind::Uami => {
                if patch {
                    self.get_uami(sub, rg, name)?;
                }
                let (u, created) = self.put_uami(sub, rg, name, body).await?;
                Ok((model::uami(cfg, &u), created))
            }
            Kind::Vault => {
                if patch {
                    self.get_vault(sub, rg, name)?;
                }
                let (v, created) = self.put_vault(sub, rg, name, body).await?;
                Ok((model::vault(&v), created))
            }
            Kind::VirtualNetwork
            | Kind::NetworkSecurityGroup
            | Kind::PublicIp
            | Kind::NetworkInterface => {
                let (r, created) = self
                    .put_network(principal, sub, rg, kind, name, body, patch)
                    .await?;
                Ok((model::network(&r), created))
            }
            Kind::Deployment => Err(ArmError::InvalidTemplate(
                "Nested deployments are not supported by misim.".into(),
            )),
        }
    }

    /// Reads and renders a resource of `kind` (no RBAC check).
    pub fn read_resource(
        &self,
        sub: &str,
        rg: &str,
        kind: Kind,
        name: &str,
        expand_instance_view: bool,
    ) -> Result<Value, ArmError> {
        let cfg = &self.config;
        Ok(match kind {
            Kind::Vm => {
                let v = self.get_vm(sub, rg, name)?;
                model::vm(cfg, &v, &self.attached_uamis(&v)?, expand_instance_view)
            }
            Kind::Uami => model::uami(cfg, &self.get_uami(sub, rg, name)?),
            Kind::Vault => model::vault(&self.get_vault(sub, rg, name)?),
            Kind::VirtualNetwork
            | Kind::NetworkSecurityGroup
            | Kind::PublicIp
            | Kind::NetworkInterface => model::network(&self.get_network(sub, rg, kind, name)?),
            Kind::Deployment => model::deployment(&self.get_deployment(sub, rg, name)?),
        })
    }

    // ---------------------------------------------------- resource groups

    /// Creates or updates a resource group.
    pub async fn put_rg(
        &self,
        sub: &str,
        rg: &str,
        body: &Value,
    ) -> Result<Put<RgRecord>, ArmError> {
        self.check_sub(sub)?;
        let key = rg_key(sub, rg);
        let existing = self.rgs.get(&key)?;
        let location = location_of(body)
            .or_else(|| existing.as_ref().map(|r| r.location.clone()))
            .ok_or_else(|| {
                ArmError::InvalidParameter("The 'location' property is required.".into())
            })?;
        let rec = match existing.clone() {
            Some(mut r) => {
                if let Some(t) = tags_of(body)? {
                    r.tags = t;
                }
                r.location = location;
                r
            }
            None => RgRecord {
                id: format!(
                    "/subscriptions/{}/resourceGroups/{rg}",
                    self.config.subscription_id
                ),
                name: rg.to_owned(),
                location,
                tags: tags_of(body)?.unwrap_or_default(),
            },
        };
        self.rgs.put(&key, &rec).await?;
        Ok((rec, existing.is_none()))
    }

    /// Lists the resource groups.
    pub fn list_rgs(&self, sub: &str) -> Result<Vec<RgRecord>, ArmError> {
        self.check_sub(sub)?;
        Ok(self
            .rgs
            .scan_prefix(&format!("{}/", sub.to_ascii_lowercase()))?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Deletes a resource group and everything in it.
    /// Returns the VM deletions still in progress (operation ids).
    pub async fn delete_rg(&self, sub: &str, rg: &str) -> Result<Vec<String>, ArmError> {
        let rec = self.require_rg(sub, rg)?;
        let prefix = rg_key(sub, rg);
        let mut pending = Vec::new();
        for (_, vm) in self.vms.scan_prefix(&prefix)? {
            // Deletion is durable once marked; the reconciler finishes it.
            if let Some((false, op)) = self.delete_vm(sub, &rec.name, &vm.name).await? {
                pending.push(op);
            }
        }
        for (_, u) in self.uamis.scan_prefix(&prefix)? {
            self.delete_uami(sub, &rec.name, &u.name).await?;
        }
        for (_, v) in self.vaults.scan_prefix(&prefix)? {
            self.delete_vault(sub, &rec.name, &v.name).await?;
        }
        for (k, _) in self.network.scan_prefix(&prefix)? {
            self.network.remove(&k).await?;
        }
        for (k, _) in self.deployments.scan_prefix(&prefix)? {
            self.deployments.remove(&k).await?;
        }
        // Role assignments at or below the group go with it.
        let rg_id = ResourceId::parse(&rec.id).map_err(|e| ArmError::Internal(e.to_string()))?;
        for (k, a) in self.assignments.all()?.iter() {
            if ResourceId::parse(&a.scope).is_ok_and(|s| s.is_within(&rg_id)) {
                self.assignments.remove(k).await?;
            }
        }
        self.rgs.remove(&prefix).await?;
        tracing::info!(rg = %rec.id, pending = pending.len(), "resource group deleted");
        Ok(pending)
    }

    // --------------------------------------------------------- provisioning

    /// Creates a managed-identity service principal (idempotent by
    /// `request_id`) with a fresh certificate.
    async fn provision(
        &self,
        display_name: &str,
        resource_id: &str,
        request_id: &str,
    ) -> Result<Credential, ArmError> {
        let sp = self
            .peers
            .create_principal(request_id, display_name, resource_id)
            .await?;
        let c = self.new_credential(&sp).await?;
        self.peers.register_certificate(&c).await?;
        Ok(c)
    }

    /// A new key and certificate for a principal (not yet registered).
    async fn new_credential(&self, sp: &Principal) -> Result<Credential, ArmError> {
        let now = self.clock.now();
        let cn = sp.app_id.clone();
        let cert = tokio::task::spawn_blocking(move || {
            misim_token::cert::generate_rsa_cert(&cn, now, now + CERT_VALIDITY)
        })
        .await
        .map_err(|e| ArmError::Internal(e.to_string()))?
        .map_err(|e| ArmError::Internal(e.to_string()))?;
        Ok(Credential {
            principal_id: sp.object_id.clone(),
            client_id: sp.app_id.clone(),
            certificate_pem: cert.certificate_pem,
            private_key_pem: cert.private_key_pem,
        })
    }

    /// Step 3: pushes one identity of a VM to IMDS.
    async fn push_identity(
        &self,
        vm_id: &str,
        kind: IdentityKind,
        resource_id: &str,
        c: &Credential,
    ) -> Result<(), ArmError> {
        self.peers
            .push_identity(vm_id, kind, resource_id, &self.config.tenant_id, c)
            .await
    }

    // ------------------------------------------------------------- UAMIs

    /// Creates (provisioning its principal) or updates a user-assigned identity.
    pub async fn put_uami(
        &self,
        sub: &str,
        rg: &str,
        name: &str,
        body: &Value,
    ) -> Result<Put<UamiRecord>, ArmError> {
        let group = self.require_rg(sub, rg)?;
        let key = res_key(sub, rg, Kind::Uami, name);
        if let Some(mut r) = self.uamis.get(&key)? {
            if let Some(t) = tags_of(body)? {
                r.tags = t;
            }
            self.uamis.put(&key, &r).await?;
            return Ok((r, false));
        }
        let location = location_of(body).unwrap_or_else(|| group.location.clone());
        let tags = tags_of(body)?.unwrap_or_default();
        let id = format!(
            "/subscriptions/{}/resourcegroups/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
            self.config.subscription_id, group.name
        );
        let lock = self.locks.get(&key);
        let guard = lock.lock().await;
        if let Some(r) = self.uamis.get(&key)? {
            return Ok((r, false));
        }
        // Intent first: if the principal is created but the record is not
        // written, the reconciler deletes it again.
        let request_id = self.ids.guid();
        self.new_op(
            &key,
            &id,
            OpKind::UamiCreate {
                request_id: request_id.clone(),
            },
        )
        .await?;
        let credential = self.provision(name, &id, &request_id).await?;
        let rec = UamiRecord {
            id,
            name: name.to_owned(),
            location,
            tags,
            credential,
        };
        self.uamis.put(&key, &rec).await?;
        drop(guard);
        self.drive_inline(&key).await;
        tracing::info!(id = %rec.id, principal = %rec.credential.principal_id, "user-assigned identity created");
        Ok((rec, true))
    }

    /// Reads a user-assigned identity.
    pub fn get_uami(&self, sub: &str, rg: &str, name: &str) -> Result<UamiRecord, ArmError> {
        self.require_rg(sub, rg)?;
        self.uamis
            .get(&res_key(sub, rg, Kind::Uami, name))?
            .ok_or_else(|| Self::not_found(Kind::Uami, rg, name))
    }

    fn uami_by_id(&self, id: &str) -> Result<Option<UamiRecord>, ArmError> {
        let rid = ResourceId::parse(id).map_err(|_| {
            ArmError::InvalidParameter(format!("'{id}' is not a valid resource id"))
        })?;
        match (
            rid.subscription(),
            rid.resource_group(),
            rid.resource_type(),
        ) {
            (Some(s), Some(g), t) if t.eq_ignore_ascii_case(Kind::Uami.type_name()) => {
                Ok(self.uamis.get(&res_key(s, g, Kind::Uami, rid.name()))?)
            }
            _ => Ok(None),
        }
    }

    /// Deletes a user-assigned identity: its record at once, then (durably)
    /// its principal and its IMDS entries on every VM that carries it. The
    /// VMs keep listing it with its old ids, as in Azure. Returns false when it did not exist.
    pub async fn delete_uami(&self, sub: &str, rg: &str, name: &str) -> Result<bool, ArmError> {
        self.require_rg(sub, rg)?;
        let key = res_key(sub, rg, Kind::Uami, name);
        let lock = self.locks.get(&key);
        let guard = lock.lock().await;
        let Some(rec) = self.uamis.get(&key)? else {
            return Ok(false);
        };
        self.new_op(
            &key,
            &rec.id,
            OpKind::UamiDelete {
                uami_id: rec.id.clone(),
                principal_id: rec.credential.principal_id.clone(),
                client_id: rec.credential.client_id.clone(),
            },
        )
        .await?;
        self.uamis.remove(&key).await?;
        drop(guard);
        self.drive_inline(&key).await;
        tracing::info!(id = %rec.id, "user-assigned identity deleted");
        Ok(true)
    }

    /// Lists identities in a subscription or group.
    pub fn list_uamis(&self, sub: &str, rg: Option<&str>) -> Result<Vec<UamiRecord>, ArmError> {
        self.list(&self.uamis, sub, rg, Kind::Uami)
    }

    fn list<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        table: &Table<T>,
        sub: &str,
        rg: Option<&str>,
        kind: Kind,
    ) -> Result<Vec<T>, ArmError> {
        self.check_sub(sub)?;
        let ty = format!("/{}/", kind.type_name().to_ascii_lowercase());
        let prefix = match rg {
            Some(rg) => {
                self.require_rg(sub, rg)?;
                rg_key(sub, rg)
            }
            None => format!("{}/", sub.to_ascii_lowercase()),
        };
        Ok(table
            .scan_prefix(&prefix)?
            .into_iter()
            .filter(|(k, _)| k.contains(&ty))
            .map(|(_, v)| v)
            .collect())
    }

    // --------------------------------------------------------------- VMs

    /// Creates, replaces (PUT) or updates (PATCH) a VM, reconciling its identities.
    /// Checks `userAssignedIdentities/assign/action` for each newly attached UAMI.
    pub async fn put_vm(
        &self,
        principal: &str,
        sub: &str,
        rg: &str,
        name: &str,
        body: &Value,
        patch: bool,
    ) -> Result<Put<VmRecord>, ArmError> {
        let group = self.require_rg(sub, rg)?;
        if !body.is_object() {
            return Err(ArmError::InvalidRequestContent(
                "the body must be a JSON object".into(),
            ));
        }
        let key = res_key(sub, rg, Kind::Vm, name);
        let lock = self.locks.get(&key);
        let guard = lock.lock().await;
        let existing = self.vms.get(&key)?;
        if patch && existing.is_none() {
            return Err(Self::not_found(Kind::Vm, rg, name));
        }
        if existing
            .as_ref()
            .is_some_and(|v| v.state == ProvState::Deleting)
        {
            return Err(ArmError::OperationNotAllowed(format!(
                "The operation is not allowed: virtual machine '{name}' is being deleted."
            )));
        }
        let current = existing
            .as_ref()
            .map(|v| IdentityState {
                system: v.sami.is_some(),
                uamis: v.uamis.clone(),
            })
            .unwrap_or_default();
        let ident_req = match body.get("identity") {
            None | Some(Value::Null) => None,
            Some(v) => Some(IdentityRequest::from_json(v)?),
        };
        let desired = match (patch, &ident_req) {
            (true, None) => current.clone(),
            (true, Some(r)) => identity::merge(&current, r)?,
            (false, r) => identity::replace(&current, r.as_ref())?,
        };
        let id = existing.as_ref().map(|v| v.id.clone()).unwrap_or_else(|| {
            format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{name}",
                self.config.subscription_id, group.name
            )
        });
        // Every UAMI must exist; new ones need the assign permission. So does
        // one whose identity changed under the same id (deleted and created
        // again): attaching it would hand the VM a principal the caller was
        // never checked for.
        let mut attached = BTreeMap::new();
        let mut links = Vec::new();
        for (k, original) in &desired.uamis {
            let u = self.uami_by_id(original)?.ok_or_else(|| {
                ArmError::FailedIdentityOperation(format!(
                    "Identity '{original}' could not be found: the user-assigned identity does not exist."
                ))
            })?;
            let same_identity = current.uamis.contains_key(k)
                && existing
                    .as_ref()
                    .and_then(|v| v.uami_principals.get(k))
                    .is_some_and(|a| a.principal_id == u.credential.principal_id);
            if !same_identity {
                links.push((UAMI_ASSIGN, u.id.clone()));
            }
            attached.insert(k.clone(), u);
        }
        self.authorize_links(
            principal,
            "Microsoft.Compute/virtualMachines/write",
            &id,
            &links,
        )?;

        let mut properties = match body.get("properties") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => {
                return Err(ArmError::InvalidRequestContent(
                    "properties must be an object".into(),
                ));
            }
        };
        if patch {
            let mut merged = existing
                .as_ref()
                .map(|v| v.properties.clone())
                .unwrap_or(Value::Object(Map::new()));
            merge_patch(&mut merged, &properties);
            properties = merged;
        }
        if let Some(p) = properties.as_object_mut() {
            for ro in ["provisioningState", "vmId", "instanceView"] {
                p.remove(ro);
            }
            if let Some(Value::Object(os)) = p.get_mut("osProfile") {
                os.remove("adminPassword");
                os.remove("customData");
            }
            complete_vm_properties(p, name);
        }
        let mut rec = VmRecord {
            id: id.clone(),
            name: existing
                .as_ref()
                .map(|v| v.name.clone())
                .unwrap_or_else(|| name.to_owned()),
            resource_group: group.name.clone(),
            location: location_of(body)
                .or_else(|| existing.as_ref().map(|v| v.location.clone()))
                .unwrap_or_else(|| group.location.clone()),
            tags: match tags_of(body)? {
                Some(t) => t,
                None if patch || existing.is_some() => existing
                    .as_ref()
                    .map(|v| v.tags.clone())
                    .unwrap_or_default(),
                None => Map::new(),
            },
            vm_id: existing
                .as_ref()
                .map(|v| v.vm_id.clone())
                .unwrap_or_else(|| self.ids.guid()),
            properties,
            sami: existing.as_ref().and_then(|v| v.sami.clone()),
            uamis: desired.uamis.clone(),
            want_sami: Some(desired.system),
            state: ProvState::Updating,
            op: None,
            error: None,
            uami_principals: attached
                .iter()
                .map(|(k, u)| {
                    (
                        k.clone(),
                        AttachedUami {
                            principal_id: u.credential.principal_id.clone(),
                            client_id: u.credential.client_id.clone(),
                        },
                    )
                })
                .collect(),
        };
        // Intent first, then the record; the operation converges Entra and IMDS.
        let op = self.new_op(&key, &id, OpKind::Vm).await?;
        rec.op = Some(op.id.clone());
        self.vms.put(&key, &rec).await?;
        drop(guard);
        self.drive_inline(&key).await;
        let rec = self
            .vms
            .get(&key)?
            .ok_or_else(|| Self::not_found(Kind::Vm, rg, name))?;
        tracing::info!(id = %rec.id, identity = desired.kind().canonical(), state = rec.state.as_str(), "virtual machine written");
        Ok((rec, existing.is_none()))
    }

    /// Reads a VM.
    pub fn get_vm(&self, sub: &str, rg: &str, name: &str) -> Result<VmRecord, ArmError> {
        self.require_rg(sub, rg)?;
        self.vms
            .get(&res_key(sub, rg, Kind::Vm, name))?
            .ok_or_else(|| Self::not_found(Kind::Vm, rg, name))
    }

    /// The ids to show for each UAMI a VM lists (id as sent → ids, `None`
    /// when unknown): the identity's own while it exists and is the one that
    /// was attached; else, as Azure does for a deleted (or deleted and
    /// recreated) identity, the ids it had when it was attached.
    pub fn attached_uamis(
        &self,
        vm: &VmRecord,
    ) -> Result<Vec<(String, Option<AttachedUami>)>, ArmError> {
        let mut out = Vec::new();
        for (k, original) in &vm.uamis {
            let stored = vm.uami_principals.get(k);
            let live = self
                .uami_by_id(original)?
                .filter(|u| stored.is_none_or(|s| s.principal_id == u.credential.principal_id));
            let ids = match live {
                Some(u) => Some(AttachedUami {
                    principal_id: u.credential.principal_id,
                    client_id: u.credential.client_id,
                }),
                None => stored.cloned(),
            };
            out.push((original.clone(), ids));
        }
        Ok(out)
    }

    /// The UAMIs a VM carries: attached, existing, and the same identity
    /// (principal) that was attached.
    pub(crate) fn live_uamis(&self, vm: &VmRecord) -> Result<Vec<UamiRecord>, ArmError> {
        let mut out = Vec::new();
        for (k, original) in &vm.uamis {
            if let Some(u) = self.uami_by_id(original)?
                && vm
                    .uami_principals
                    .get(k)
                    .is_none_or(|a| a.principal_id == u.credential.principal_id)
            {
                out.push(u);
            }
        }
        Ok(out)
    }

    /// Lists VMs.
    pub fn list_vms(&self, sub: &str, rg: Option<&str>) -> Result<Vec<VmRecord>, ArmError> {
        self.list(&self.vms, sub, rg, Kind::Vm)
    }

    /// Deletes a VM, its system-assigned principal and its IMDS state:
    /// marks it `Deleting` (with a persisted operation) and runs the
    /// operation. `None` when it did not exist, else whether the deletion
    /// completed and the operation id.
    pub async fn delete_vm(
        &self,
        sub: &str,
        rg: &str,
        name: &str,
    ) -> Result<Option<(bool, String)>, ArmError> {
        self.require_rg(sub, rg)?;
        let key = res_key(sub, rg, Kind::Vm, name);
        let lock = self.locks.get(&key);
        let guard = lock.lock().await;
        let Some(mut rec) = self.vms.get(&key)? else {
            return Ok(None);
        };
        let op_id = match (&rec.state, &rec.op) {
            (ProvState::Deleting, Some(op)) => op.clone(),
            _ => {
                let op = self.new_op(&key, &rec.id, OpKind::Vm).await?;
                rec.state = ProvState::Deleting;
                rec.op = Some(op.id.clone());
                self.vms.put(&key, &rec).await?;
                op.id
            }
        };
        drop(guard);
        let done = self.drive_inline(&key).await;
        Ok(Some((done, op_id)))
    }

    // ------------------------------------------------------------- vaults

    /// Creates or updates a vault.
    pub async fn put_vault(
        &self,
        sub: &str,
        rg: &str,
        name: &str,
        body: &Value,
    ) -> Result<Put<VaultRecord>, ArmError> {
        let group = self.require_rg(sub, rg)?;
        let key = res_key(sub, rg, Kind::Vault, name);
        let name_key = name.to_ascii_lowercase();
        // Claims of one name are decided one at a time.
        let lock = self.locks.get(&vault_name_lock(&name_key));
        let _claiming = lock.lock().await;
        // The name is taken only by a vault that exists: a claim without its
        // vault is what a crash between the two writes (either way) leaves.
        if let Some(other) = self.vault_names.get(&name_key)?
            && other != key
            && self.vaults.get(&other)?.is_some()
        {
            return Err(ArmError::VaultAlreadyExists(name.to_owned()));
        }
        let existing = self.vaults.get(&key)?;
        let mut props = match body.get("properties") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                return Err(ArmError::InvalidRequestContent(
                    "properties must be an object".into(),
                ));
            }
        };
        props.insert(
            "tenantId".into(),
            Value::String(self.config.tenant_id.clone()),
        );
        props
            .entry("sku")
            .or_insert_with(|| serde_json::json!({"family": "A", "name": "standard"}));
        props
            .entry("enableRbacAuthorization")
            .or_insert(Value::Bool(true));
        props
            .entry("accessPolicies")
            .or_insert_with(|| Value::Array(vec![]));
        props.insert(
            "vaultUri".into(),
            Value::String(self.config.vault_uri(name)),
        );
        props.insert(
            "provisioningState".into(),
            Value::String("Succeeded".into()),
        );
        let rec = VaultRecord {
            id: existing.as_ref().map(|v| v.id.clone()).unwrap_or_else(|| {
                format!(
                    "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/{name}",
                    self.config.subscription_id, group.name
                )
            }),
            name: existing.as_ref().map(|v| v.name.clone()).unwrap_or_else(|| name.to_owned()),
            location: location_of(body).unwrap_or_else(|| group.location.clone()),
            tags: tags_of(body)?.unwrap_or_default(),
            properties: Value::Object(props),
            uid: existing
                .as_ref()
                .map(|v| v.uid.clone())
                .unwrap_or_else(|| self.ids.guid()),
        };
        self.vault_names.put(&name_key, &key).await?;
        self.vaults.put(&key, &rec).await?;
        Ok((rec, existing.is_none()))
    }

    /// Reads a vault.
    pub fn get_vault(&self, sub: &str, rg: &str, name: &str) -> Result<VaultRecord, ArmError> {
        self.require_rg(sub, rg)?;
        self.vaults
            .get(&res_key(sub, rg, Kind::Vault, name))?
            .ok_or_else(|| Self::not_found(Kind::Vault, rg, name))
    }

    /// Lists vaults.
    pub fn list_vaults(&self, sub: &str, rg: Option<&str>) -> Result<Vec<VaultRecord>, ArmError> {
        self.list(&self.vaults, sub, rg, Kind::Vault)
    }

    /// Deletes a vault.
    pub async fn delete_vault(&self, sub: &str, rg: &str, name: &str) -> Result<bool, ArmError> {
        self.require_rg(sub, rg)?;
        let key = res_key(sub, rg, Kind::Vault, name);
        let name_key = name.to_ascii_lowercase();
        let lock = self.locks.get(&vault_name_lock(&name_key));
        let _claiming = lock.lock().await;
        let Some(_) = self.vaults.remove(&key).await? else {
            return Ok(false);
        };
        // Only this vault's own claim goes (another group may hold the name
        // by now if this vault's claim was lost to a crash).
        if self.vault_names.get(&name_key)?.as_deref() == Some(key.as_str()) {
            self.vault_names.remove(&name_key).await?;
        }
        Ok(true)
    }

    /// Finds a vault by its globally unique name.
    pub fn vault_by_name(&self, name: &str) -> Result<Option<VaultRecord>, ArmError> {
        match self.vault_names.get(&name.to_ascii_lowercase())? {
            Some(key) => Ok(self.vaults.get(&key)?),
            None => Ok(None),
        }
    }

    // --------------------------------------------------- role assignments

    /// Grants `role` (GUID, roleDefinitionId or name) to `principal_id` at
    /// `scope` under a new assignment name: the gRPC form of a role
    /// assignment PUT, with the same checks.
    pub async fn grant(
        &self,
        principal_id: &str,
        role: &str,
        scope: &str,
    ) -> Result<AssignmentRecord, ArmError> {
        let def = self
            .resolve_role(role)?
            .ok_or_else(|| ArmError::RoleDefinitionDoesNotExist(role.to_owned()))?;
        let body = serde_json::json!({"properties": {
            "principalId": principal_id,
            "principalType": "ServicePrincipal",
            "roleDefinitionId": format!(
                "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{}",
                self.config.subscription_id, def.name
            ),
        }});
        let (rec, _) = self.put_assignment(scope, &self.ids.guid(), &body).await?;
        Ok(rec)
    }

    /// Creates a role assignment at `scope`.
    pub async fn put_assignment(
        &self,
        scope: &str,
        name: &str,
        body: &Value,
    ) -> Result<Put<AssignmentRecord>, ArmError> {
        let props = body
            .get("properties")
            .and_then(Value::as_object)
            .ok_or_else(|| ArmError::InvalidRequestContent("properties is required".into()))?;
        let text = |k: &str| {
            props
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    ArmError::InvalidRequestContent(format!("properties.{k} is required"))
                })
        };
        let principal_id = text("principalId")?;
        let role_definition_id = text("roleDefinitionId")?;
        let role_guid = role_definition_id
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let Some(role) = self.role(&role_guid)? else {
            return Err(ArmError::RoleDefinitionDoesNotExist(role_guid));
        };
        let principal_type = props
            .get("principalType")
            .and_then(Value::as_str)
            .unwrap_or("ServicePrincipal")
            .to_owned();
        let id = format!(
            "{}/providers/Microsoft.Authorization/roleAssignments/{name}",
            scope.trim_end_matches('/')
        );
        let key = id.to_ascii_lowercase();
        if let Some(old) = self.assignments.get(&key)? {
            if old.principal_id.eq_ignore_ascii_case(&principal_id) && old.role_guid == role_guid {
                return Ok((old, false));
            }
            return Err(ArmError::RoleAssignmentUpdateNotPermitted);
        }
        // A role is assignable only at or below one of its assignableScopes
        // (built-ins have "/"; a custom role names its subscriptions or groups).
        let target = ResourceId::parse(if scope.is_empty() { "/" } else { scope })
            .map_err(|e| ArmError::InvalidParameter(e.to_string()))?;
        let assignable = role
            .assignable_scopes
            .iter()
            .any(|s| ResourceId::parse(s).is_ok_and(|s| target.is_within(&s)));
        if !assignable {
            return Err(ArmError::ScopeDoesNotMatchRoleDefinition(role.role_name));
        }
        let dup = self.assignments.all()?.iter().any(|(_, a)| {
            a.principal_id.eq_ignore_ascii_case(&principal_id)
                && a.role_guid == role_guid
                && a.scope
                    .trim_end_matches('/')
                    .eq_ignore_ascii_case(scope.trim_end_matches('/'))
        });
        if dup {
            return Err(ArmError::RoleAssignmentExists);
        }
        if !self.peers.principal_exists(&principal_id).await? {
            return Err(ArmError::PrincipalNotFound {
                principal: principal_id,
                tenant: self.config.tenant_id.clone(),
            });
        }
        let rec = AssignmentRecord {
            id,
            name: name.to_owned(),
            scope: if scope.is_empty() {
                "/".into()
            } else {
                scope.to_owned()
            },
            role_guid,
            role_definition_id,
            principal_id,
            principal_type,
        };
        self.assignments.put(&key, &rec).await?;
        tracing::info!(id = %rec.id, principal = %rec.principal_id, role = %rec.role_guid, "role assignment created");
        Ok((rec, true))
    }

    fn assignment_key(scope: &str, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.Authorization/roleAssignments/{name}",
            scope.trim_end_matches('/')
        )
        .to_ascii_lowercase()
    }

    /// Reads a role assignment.
    pub fn get_assignment(&self, scope: &str, name: &str) -> Result<AssignmentRecord, ArmError> {
        self.assignments
            .get(&Self::assignment_key(scope, name))?
            .ok_or_else(|| ArmError::RoleAssignmentNotFound(name.to_owned()))
    }

    /// Deletes a role assignment; returns it if it existed.
    pub async fn delete_assignment(
        &self,
        scope: &str,
        name: &str,
    ) -> Result<Option<AssignmentRecord>, ArmError> {
        Ok(self
            .assignments
            .remove(&Self::assignment_key(scope, name))
            .await?)
    }

    /// Lists role assignments relevant at `scope`: at or above it with
    /// `at_scope`, else also below it; optionally of one principal.
    pub fn list_assignments(
        &self,
        scope: &str,
        at_scope: bool,
        principal: Option<&str>,
    ) -> Result<Vec<AssignmentRecord>, ArmError> {
        let target =
            ResourceId::parse(scope).map_err(|e| ArmError::InvalidParameter(e.to_string()))?;
        Ok(self
            .assignments
            .all()?
            .iter()
            .map(|(_, a)| a)
            .filter(|a| principal.is_none_or(|p| a.principal_id.eq_ignore_ascii_case(p)))
            .filter(|a| match ResourceId::parse(&a.scope) {
                Ok(s) => target.is_within(&s) || (!at_scope && s.is_within(&target)),
                Err(_) => false,
            })
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut t, &json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(t, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }

    /// A vault-name claim whose vault does not exist (a crash between the
    /// two writes) does not keep the name from another group.
    #[tokio::test]
    async fn a_vault_name_claim_without_its_vault_is_free() {
        let config = crate::Config::default();
        let sub = config.subscription_id.clone();
        let core = Core::new(
            config,
            &misim_store::Store::memory().unwrap(),
            std::sync::Arc::new(misim_types::ManualClock::at_unix(1_700_000_000)),
            std::sync::Arc::new(misim_types::SeqIds::new(1)),
            Peers::unreachable(),
        )
        .unwrap();
        for rg in ["rg1", "rg2"] {
            core.put_rg(&sub, rg, &json!({"location": "eastus"}))
                .await
                .unwrap();
        }
        let body = json!({"location": "eastus", "properties": {}});
        core.put_vault(&sub, "rg1", "kv1", &body).await.unwrap();
        assert!(matches!(
            core.put_vault(&sub, "rg2", "KV1", &body).await,
            Err(ArmError::VaultAlreadyExists(_))
        ));
        // The vault record lost, its claim kept: what a crash can leave.
        core.vaults
            .remove(&res_key(&sub, "rg1", Kind::Vault, "kv1"))
            .await
            .unwrap();
        let (v, created) = core.put_vault(&sub, "rg2", "kv1", &body).await.unwrap();
        assert!(created);
        assert_eq!(core.vault_by_name("kv1").unwrap().map(|r| r.id), Some(v.id));
        // Deleting the lost vault's leftovers does not take the new owner's name.
        assert!(!core.delete_vault(&sub, "rg1", "kv1").await.unwrap());
        assert!(core.vault_by_name("KV1").unwrap().is_some());
    }

    #[test]
    fn keys_are_lower_case_prefixes() {
        assert_eq!(rg_key("S1", "RG"), "s1/rg/");
        assert_eq!(
            res_key("S1", "RG", Kind::Vm, "VM1"),
            "s1/rg/microsoft.compute/virtualmachines/vm1"
        );
        assert!(res_key("s1", "rg", Kind::Vm, "x").starts_with(&rg_key("s1", "rg")));
    }
}
