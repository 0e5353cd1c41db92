//! `misim apply`: validate the whole scenario (the file, then what it names in the sandbox),
//! then make the sandbox match it through the owner's public surfaces, reporting what was
//! created, updated or already so. Applying the same file twice changes nothing.

use std::collections::HashMap;

use anyhow::Context as _;
use misim_chaos::Service;
use misim_proto::admin::v1 as admin;
use misim_proto::entra::v1 as entra;
use serde_json::{Value, json};

use super::model::Scenario;
use super::remote::Remote;
use super::validate::{Ids, Plan, PlannedVm, Who, plan};

/// What applying did, one line per resource: `created vm /subscriptions/...`.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) lines: Vec<String>,
}

impl Outcome {
    fn note(&mut self, what: &str, kind: &str, name: &str) {
        self.lines.push(format!("{what}\t{kind}\t{name}"));
    }

    /// How many lines say something changed.
    pub(crate) fn changes(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| !l.starts_with("unchanged"))
            .count()
    }
}

/// Validates `s` against the sandbox in `data_dir` and applies it.
/// With `check_only`, stops after validating.
pub(crate) async fn apply(
    data_dir: &std::path::Path,
    s: &Scenario,
    check_only: bool,
) -> anyhow::Result<Outcome> {
    let mut remote = Remote::connect(data_dir).await?;
    let plan = plan(s, &remote.subscription_id).map_err(|p| {
        anyhow::anyhow!(
            "the scenario is invalid; nothing was changed:\n  {}",
            p.0.join("\n  ")
        )
    })?;
    remote.sign_in().await?;
    let roles = check_against_sandbox(&remote, &plan).await.map_err(|p| {
        anyhow::anyhow!(
            "the scenario does not fit this sandbox; nothing was changed:\n  {}",
            p.join("\n  ")
        )
    })?;
    let mut out = Outcome::default();
    if check_only {
        return Ok(out);
    }
    if let Some(at) = plan.clock {
        set_clock(&remote, at, &mut out).await?;
        // Tokens follow the clock: fetch new ones at the new time.
        remote.sign_in().await?;
    }
    for (id, location) in &plan.groups {
        ensure(
            &remote,
            "resource group",
            id,
            json!({ "location": location }),
            &mut out,
        )
        .await?;
    }
    let mut principals: HashMap<String, String> = HashMap::new();
    for i in &plan.identities {
        if let Some(ids) = &i.pinned {
            reserve(&remote, &i.id, ids).await?;
        }
        let v = ensure(
            &remote,
            "identity",
            &i.id,
            json!({ "location": i.location }),
            &mut out,
        )
        .await?;
        let got = (
            str_at(&v, "/properties/clientId"),
            str_at(&v, "/properties/principalId"),
        );
        if let Some((c, o)) = &i.pinned {
            anyhow::ensure!(
                got.0.eq_ignore_ascii_case(c) && got.1.eq_ignore_ascii_case(o),
                "{}: ARM made the identity with client id {} and object id {}, not the pinned ones",
                i.path,
                got.0,
                got.1
            );
        }
        principals.insert(i.id.to_ascii_lowercase(), got.1.to_owned());
    }
    for v in &plan.vaults {
        let body = json!({ "location": v.location, "properties": {
            "tenantId": remote.tenant_id, "sku": {"family": "A", "name": "standard"},
            "enableRbacAuthorization": true }});
        ensure(&remote, "vault", &v.id, body, &mut out).await?;
        for (name, value) in &v.secrets {
            ensure_secret(&remote, &v.name, name, value.as_deref(), &mut out).await?;
        }
    }
    for vm in &plan.vms {
        if let Some(p) = ensure_vm(&remote, vm, &mut out).await? {
            principals.insert(vm.id.to_ascii_lowercase(), p);
        }
    }
    for a in &plan.assignments {
        let principal = match &a.who {
            Who::Object(o) => o.clone(),
            Who::Identity(id) | Who::Vm(id) => principals
                .get(&id.to_ascii_lowercase())
                .cloned()
                .with_context(|| format!("{}: no principal id for {id}", a.path))?,
        };
        let role = roles
            .get(&a.role.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default();
        ensure_assignment(&remote, (&a.scope, &role, &principal), &a.role, &mut out).await?;
    }
    for f in &plan.faults {
        ensure_fault(&remote, f, &mut out).await?;
    }
    Ok(out)
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// What validation can only ask the sandbox: role names, and whether pinned ids fit what
/// exists. Returns role definition ids by lower-cased role name or GUID.
async fn check_against_sandbox(
    remote: &Remote,
    plan: &Plan,
) -> Result<HashMap<String, String>, Vec<String>> {
    let mut problems = Vec::new();
    let mut roles = HashMap::new();
    let defs = remote
        .arm_list(&format!(
            "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions",
            remote.subscription_id
        ))
        .await
        .map_err(|e| vec![format!("listing role definitions: {e:#}")])?;
    for d in &defs {
        let id = d["id"].as_str().unwrap_or_default().to_owned();
        roles.insert(
            str_at(d, "/properties/roleName").to_ascii_lowercase(),
            id.clone(),
        );
        roles.insert(
            d["name"].as_str().unwrap_or_default().to_ascii_lowercase(),
            id,
        );
    }
    for a in &plan.assignments {
        if !roles.contains_key(&a.role.to_ascii_lowercase()) {
            problems.push(format!(
                "{}.role: no role named {:?} in this sandbox",
                a.path, a.role
            ));
        }
    }
    for i in &plan.identities {
        if let Some(ids) = &i.pinned {
            let current = remote
                .arm_get(&i.id)
                .await
                .map_err(|e| vec![format!("{e:#}")])?;
            let have = current.map(|v| {
                (
                    str_at(&v, "/properties/clientId").to_owned(),
                    str_at(&v, "/properties/principalId").to_owned(),
                )
            });
            check_pinned(remote, &i.path, ids, have, &mut problems).await;
        }
    }
    for vm in &plan.vms {
        if let Some(Some(ids)) = &vm.system {
            let current = remote
                .arm_get(&vm.id)
                .await
                .map_err(|e| vec![format!("{e:#}")])?;
            let oid = current
                .as_ref()
                .map(|v| str_at(v, "/identity/principalId").to_owned());
            let have = match oid.filter(|o| !o.is_empty()) {
                Some(o) => Some((app_id_of(remote, &o).await.unwrap_or_default(), o)),
                None => None,
            };
            check_pinned(
                remote,
                &format!("{}.systemAssigned", vm.path),
                ids,
                have,
                &mut problems,
            )
            .await;
        }
    }
    if problems.is_empty() {
        Ok(roles)
    } else {
        Err(problems)
    }
}

/// An existing identity must already have the pinned ids; a new one needs them unused.
async fn check_pinned(
    remote: &Remote,
    path: &str,
    (client, object): &Ids,
    have: Option<(String, String)>,
    problems: &mut Vec<String>,
) {
    if let Some((c, o)) = have {
        if !c.eq_ignore_ascii_case(client) || !o.eq_ignore_ascii_case(object) {
            problems.push(format!(
                "{path}: the identity exists with clientId {c} and principalId {o}; its ids cannot change (delete it first)"
            ));
        }
        return;
    }
    for (field, req) in [
        (
            "principalId",
            entra::GetServicePrincipalRequest {
                object_id: object.clone(),
                app_id: String::new(),
            },
        ),
        (
            "clientId",
            entra::GetServicePrincipalRequest {
                object_id: String::new(),
                app_id: client.clone(),
            },
        ),
    ] {
        let found = match remote.directory() {
            Ok(mut d) => d.get_service_principal(req).await,
            Err(e) => {
                problems.push(format!("{path}.{field}: cannot ask Entra: {e:#}"));
                continue;
            }
        };
        match found {
            Ok(p) => {
                let p = p.into_inner();
                problems.push(format!(
                    "{path}.{field}: already used by service principal {} ({})",
                    p.object_id, p.display_name
                ));
            }
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => problems.push(format!("{path}.{field}: cannot ask Entra: {}", s.message())),
        }
    }
}

async fn app_id_of(remote: &Remote, object_id: &str) -> anyhow::Result<String> {
    let p = remote
        .directory()?
        .get_service_principal(entra::GetServicePrincipalRequest {
            object_id: object_id.to_owned(),
            app_id: String::new(),
        })
        .await?
        .into_inner();
    Ok(p.app_id)
}

async fn reserve(remote: &Remote, resource_id: &str, (client, object): &Ids) -> anyhow::Result<()> {
    remote
        .directory()?
        .reserve_managed_identity_ids(entra::ReserveManagedIdentityIdsRequest {
            managed_identity_resource_id: resource_id.to_owned(),
            app_id: client.clone(),
            object_id: object.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("pinning the ids of {resource_id}: {}", s.message()))?;
    Ok(())
}

async fn set_clock(remote: &Remote, at: i64, out: &mut Outcome) -> anyhow::Result<()> {
    let now = remote.now().await?;
    let at_text = misim_types::time::format_rfc3339(at);
    if now >= at {
        // Time only moves forward: a sandbox already past the scenario's time stays there.
        out.note(
            "unchanged",
            "clock",
            &format!(
                "{at_text} (the sandbox is already at {})",
                misim_types::time::format_rfc3339(now)
            ),
        );
        return Ok(());
    }
    remote
        .clock()?
        .set(admin::SetClockRequest {
            unix_seconds: at,
            allow_backwards: false,
        })
        .await
        .map_err(|s| anyhow::anyhow!("setting the clock: {}", s.message()))?;
    out.note("updated", "clock", &at_text);
    Ok(())
}

/// `PUT`s `id` with `body` unless it exists; returns the resource.
async fn ensure(
    remote: &Remote,
    kind: &str,
    id: &str,
    body: Value,
    out: &mut Outcome,
) -> anyhow::Result<Value> {
    if let Some(v) = remote.arm_get(id).await? {
        out.note("unchanged", kind, id);
        return Ok(v);
    }
    let v = remote.arm_put(id, body).await?;
    out.note("created", kind, id);
    Ok(v)
}

async fn ensure_secret(
    remote: &Remote,
    vault: &str,
    name: &str,
    value: Option<&str>,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let label = format!("{vault}/{name}");
    let current = remote.secret_get(vault, name).await?;
    let what = match (current.as_deref(), value) {
        (Some(c), Some(v)) if c == v => "unchanged",
        (Some(_), None) => "unchanged",
        (Some(_), Some(_)) => "updated",
        (None, _) => "created",
    };
    if what != "unchanged" {
        remote
            .secret_set(vault, name, value.unwrap_or_default())
            .await?;
    }
    out.note(what, "secret", &label);
    Ok(())
}

/// The identity block a VM should have.
fn vm_identity(vm: &PlannedVm) -> Value {
    let kind = match (vm.system.is_some(), vm.user.is_empty()) {
        (true, true) => "SystemAssigned",
        (true, false) => "SystemAssigned, UserAssigned",
        (false, false) => "UserAssigned",
        (false, true) => "None",
    };
    let mut identity = json!({ "type": kind });
    if !vm.user.is_empty() {
        let users: serde_json::Map<String, Value> =
            vm.user.iter().map(|u| (u.clone(), json!({}))).collect();
        identity["userAssignedIdentities"] = Value::Object(users);
    }
    identity
}

/// Whether `current`'s identity block already is what the plan says.
fn same_identity(current: &Value, vm: &PlannedVm) -> bool {
    let kind = str_at(current, "/identity/type").to_ascii_lowercase();
    let has_system = kind.contains("systemassigned");
    let mut have: Vec<String> = current
        .pointer("/identity/userAssignedIdentities")
        .and_then(Value::as_object)
        .map(|m| m.keys().map(|k| k.to_ascii_lowercase()).collect())
        .unwrap_or_default();
    let mut want: Vec<String> = vm.user.iter().map(|u| u.to_ascii_lowercase()).collect();
    have.sort();
    want.sort();
    has_system == vm.system.is_some() && have == want
}

/// Creates or updates a VM; returns its system-assigned principal id, if any.
async fn ensure_vm(
    remote: &Remote,
    vm: &PlannedVm,
    out: &mut Outcome,
) -> anyhow::Result<Option<String>> {
    let current = remote.arm_get(&vm.id).await?;
    let v = match current {
        Some(v) if same_identity(&v, vm) => {
            out.note("unchanged", "vm", &vm.id);
            v
        }
        current => {
            if let Some(Some(ids)) = &vm.system {
                reserve(remote, &vm.id, ids).await?;
            }
            let v = remote
                .arm_put(
                    &vm.id,
                    json!({ "location": vm.location, "identity": vm_identity(vm) }),
                )
                .await?;
            out.note(
                if current.is_some() {
                    "updated"
                } else {
                    "created"
                },
                "vm",
                &vm.id,
            );
            v
        }
    };
    let principal = str_at(&v, "/identity/principalId").to_owned();
    if let Some(Some((_, object))) = &vm.system {
        anyhow::ensure!(
            principal.eq_ignore_ascii_case(object),
            "{}.systemAssigned: ARM made the identity with object id {principal}, not {object}",
            vm.path
        );
    }
    Ok((!principal.is_empty()).then_some(principal))
}

/// A role assignment, unless one of the same principal and role is already at the scope.
async fn ensure_assignment(
    remote: &Remote,
    (scope, role_id, principal): (&str, &str, &str),
    role: &str,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let label = format!("{role} for {principal} at {scope}");
    let existing = remote
        .arm_list(&format!(
            "{scope}/providers/Microsoft.Authorization/roleAssignments?$filter=atScope()"
        ))
        .await?;
    let role_guid = role_id.rsplit('/').next().unwrap_or(role_id);
    let found = existing.iter().any(|a| {
        str_at(a, "/properties/principalId").eq_ignore_ascii_case(principal)
            && str_at(a, "/properties/scope")
                .trim_end_matches('/')
                .eq_ignore_ascii_case(scope)
            && str_at(a, "/properties/roleDefinitionId")
                .rsplit('/')
                .next()
                .is_some_and(|g| g.eq_ignore_ascii_case(role_guid))
    });
    if found {
        out.note("unchanged", "role assignment", &label);
        return Ok(());
    }
    use misim_types::IdGen as _;
    let name = misim_types::RandomIds.guid();
    remote
        .arm_put(
            &format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"),
            json!({ "properties": { "roleDefinitionId": role_id, "principalId": principal } }),
        )
        .await?;
    out.note("created", "role assignment", &label);
    Ok(())
}

/// The fields that make two rules the same rule (ids, hits and what is left are state).
fn fault_key(s: &admin::FaultSpec) -> String {
    format!(
        "{}|{}|{}|{}|{}|{}|{:?}|{}|{:?}|{:?}",
        s.service.to_ascii_lowercase(),
        s.vm.to_ascii_lowercase(),
        s.identity.to_ascii_lowercase(),
        s.path.to_ascii_lowercase(),
        s.status,
        s.aadsts,
        s.retry_after_secs,
        s.latency_ms,
        s.count,
        s.probability
    )
}

/// The gRPC form of a checked rule.
pub(crate) fn fault_spec(r: &misim_chaos::RuleSpec) -> admin::FaultSpec {
    admin::FaultSpec {
        service: r.service.to_ascii_lowercase(),
        vm: r.vm.clone().unwrap_or_default(),
        identity: r.identity.clone().unwrap_or_default(),
        path: r.path.clone().unwrap_or_default(),
        status: r.status.map_or(0, u32::from),
        aadsts: r.aadsts.unwrap_or(0),
        retry_after_secs: r.retry_after,
        latency_ms: u64::try_from(r.latency.as_millis()).unwrap_or(u64::MAX),
        count: r.count,
        probability: r.probability,
    }
}

async fn ensure_fault(
    remote: &Remote,
    rule: &misim_chaos::RuleSpec,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let service = Service::parse(&rule.service)?;
    let spec = fault_spec(rule);
    let rules = remote.list_faults(service).await?;
    let key = fault_key(&spec);
    if let Some(f) = rules
        .iter()
        .find(|f| f.spec.as_ref().is_some_and(|s| fault_key(s) == key))
    {
        out.note("unchanged", "fault", &f.id);
        return Ok(());
    }
    let f = remote
        .faults(service)?
        .add_fault(admin::AddFaultRequest { spec: Some(spec) })
        .await
        .map_err(|s| anyhow::anyhow!("adding a {service} fault: {}", s.message()))?
        .into_inner();
    out.note("created", "fault", &f.id);
    Ok(())
}
