//! `misim export`: the sandbox's current state as a scenario that `misim apply` reproduces on a
//! fresh sandbox: groups, identities with their ids, vaults and secrets, VMs, the role
//! assignments of those identities, active faults and the clock.

use std::collections::HashMap;

use misim_chaos::Service;
use misim_proto::entra::v1 as entra;
use serde_json::Value;

use super::model::{
    API_VERSION, Assignment, Clock, Fault, Group, Identity, PinnedIds, Principal, Scenario, Scope,
    Secret, Vault, Vm,
};
use super::remote::Remote;

/// What `export` left out, for a note on stderr.
#[derive(Debug, Default)]
pub(crate) struct Skipped {
    /// Role assignments of principals that are not managed identities in the export (the
    /// bootstrap admin's, applications').
    pub(crate) assignments: usize,
}

fn s(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// `NAME` when no other resource of the kind has that name, else `GROUP/NAME`.
fn refs(items: &[(String, String, String)]) -> HashMap<String, String> {
    items
        .iter()
        .map(|(id, group, name)| {
            let unique = items
                .iter()
                .filter(|(_, _, n)| n.eq_ignore_ascii_case(name))
                .count()
                == 1;
            let r = if unique {
                name.clone()
            } else {
                format!("{group}/{name}")
            };
            (id.to_ascii_lowercase(), r)
        })
        .collect()
}

/// The resources of one type in group `rg`, as `(id, group, name, body)`, sorted by name.
async fn list_in(
    remote: &Remote,
    rg_id: &str,
    rg: &str,
    provider: &str,
) -> anyhow::Result<Vec<Item>> {
    let mut v: Vec<_> = remote
        .arm_list(&format!("{rg_id}/providers/{provider}"))
        .await?
        .into_iter()
        .map(|r| (s(&r, "/id"), rg.to_owned(), s(&r, "/name"), r))
        .collect();
    v.sort_by_key(|(_, _, n, _)| n.to_ascii_lowercase());
    Ok(v)
}

/// One listed resource: `(id, group, name, body)`.
type Item = (String, String, String, Value);

/// Every group and the resources a scenario holds, sorted by name.
struct Listed {
    groups: Vec<Group>,
    /// Lower-cased group name → location.
    group_location: HashMap<String, String>,
    identities: Vec<Item>,
    vaults: Vec<Item>,
    vms: Vec<Item>,
}

async fn list_all(remote: &Remote, sub: &str) -> anyhow::Result<Listed> {
    let mut all = remote.arm_list(&format!("{sub}/resourcegroups")).await?;
    all.sort_by_key(|g| s(g, "/name").to_ascii_lowercase());
    let mut l = Listed {
        groups: Vec::new(),
        group_location: HashMap::new(),
        identities: Vec::new(),
        vaults: Vec::new(),
        vms: Vec::new(),
    };
    for g in &all {
        let (id, name, location) = (s(g, "/id"), s(g, "/name"), s(g, "/location"));
        l.group_location
            .insert(name.to_ascii_lowercase(), location.clone());
        l.groups.push(Group {
            name: name.clone(),
            location: Some(location),
        });
        let uami = "Microsoft.ManagedIdentity/userAssignedIdentities";
        l.identities
            .extend(list_in(remote, &id, &name, uami).await?);
        l.vaults
            .extend(list_in(remote, &id, &name, "Microsoft.KeyVault/vaults").await?);
        l.vms
            .extend(list_in(remote, &id, &name, "Microsoft.Compute/virtualMachines").await?);
    }
    Ok(l)
}

/// Reads the sandbox in `data_dir` as a scenario.
pub(crate) async fn export(
    data_dir: &std::path::Path,
    include_secret_values: bool,
) -> anyhow::Result<(Scenario, Skipped)> {
    let mut remote = Remote::connect(data_dir).await?;
    remote.sign_in().await?;
    let sub = format!("/subscriptions/{}", remote.subscription_id);
    let mut out = Scenario {
        api_version: API_VERSION.into(),
        ..Default::default()
    };
    out.clock = Some(clock(&remote).await?);

    let Listed {
        groups,
        group_location,
        identities,
        vaults,
        vms,
    } = list_all(&remote, &sub).await?;
    out.resource_groups = groups;
    // A resource's location is written only where it differs from its group's.
    let loc = |rg: &str, v: &Value| {
        let l = s(v, "/location");
        (group_location.get(&rg.to_ascii_lowercase()) != Some(&l)).then_some(l)
    };
    let key = |x: &[Item]| -> Vec<(String, String, String)> {
        x.iter()
            .map(|(a, b, c, _)| (a.clone(), b.clone(), c.clone()))
            .collect()
    };
    let (identity_refs, vault_refs, vm_refs) = (
        refs(&key(&identities)),
        refs(&key(&vaults)),
        refs(&key(&vms)),
    );

    // Who each managed identity's principal is, to name role assignments' principals.
    let mut principal_refs: HashMap<String, Principal> = HashMap::new();
    for (id, rg, name, v) in &identities {
        principal_refs.insert(
            s(v, "/properties/principalId").to_ascii_lowercase(),
            Principal {
                identity: identity_refs.get(&id.to_ascii_lowercase()).cloned(),
                ..Default::default()
            },
        );
        out.identities.push(Identity {
            name: name.clone(),
            resource_group: rg.clone(),
            location: loc(rg, v),
            client_id: Some(s(v, "/properties/clientId")),
            principal_id: Some(s(v, "/properties/principalId")),
        });
    }
    for (_, rg, name, v) in &vaults {
        out.vaults.push(Vault {
            name: name.clone(),
            resource_group: rg.clone(),
            location: loc(rg, v),
            secrets: secrets(&remote, name, include_secret_values).await?,
        });
    }
    for (id, rg, name, v) in &vms {
        let system_assigned = system_assigned(&remote, id, v).await?;
        if let Some(ids) = &system_assigned {
            principal_refs.insert(
                ids.principal_id
                    .clone()
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
                Principal {
                    vm: vm_refs.get(&id.to_ascii_lowercase()).cloned(),
                    ..Default::default()
                },
            );
        }
        let user_assigned = user_assigned(v, &identity_refs);
        out.vms.push(Vm {
            name: name.clone(),
            resource_group: rg.clone(),
            location: loc(rg, v),
            system_assigned,
            user_assigned,
        });
    }

    let scopes = ScopeNames {
        sub: &sub,
        identity_refs: &identity_refs,
        vault_refs: &vault_refs,
        vm_refs: &vm_refs,
    };
    let mut skipped = Skipped::default();
    out.role_assignments =
        assignments(&remote, &sub, &principal_refs, &scopes, &mut skipped).await?;
    out.faults = faults(&remote).await?;
    Ok((out, skipped))
}

/// A VM's user-assigned identities, by their names in the export.
fn user_assigned(vm: &Value, identity_refs: &HashMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = vm
        .pointer("/identity/userAssignedIdentities")
        .and_then(Value::as_object)
        .map(|m| {
            m.keys()
                .map(|k| {
                    identity_refs
                        .get(&k.to_ascii_lowercase())
                        .cloned()
                        .unwrap_or_else(|| k.clone())
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A vault's secrets, sorted by name; values only if asked for.
async fn secrets(remote: &Remote, vault: &str, values: bool) -> anyhow::Result<Vec<Secret>> {
    let mut names = remote.secret_names(vault).await?;
    names.sort_by_key(|n| n.to_ascii_lowercase());
    let mut out = Vec::new();
    for n in names {
        let value = if values {
            remote.secret_get(vault, &n).await?
        } else {
            None
        };
        out.push(Secret { name: n, value });
    }
    Ok(out)
}

/// The ids of VM `id`'s system-assigned identity (the client id from Entra), if it has one.
async fn system_assigned(
    remote: &Remote,
    id: &str,
    v: &Value,
) -> anyhow::Result<Option<PinnedIds>> {
    if !s(v, "/identity/type")
        .to_ascii_lowercase()
        .contains("systemassigned")
    {
        return Ok(None);
    }
    let object = s(v, "/identity/principalId");
    let client = remote
        .directory()?
        .get_service_principal(entra::GetServicePrincipalRequest {
            object_id: object.clone(),
            app_id: String::new(),
        })
        .await
        .map_err(|st| anyhow::anyhow!("reading the principal {object} of {id}: {}", st.message()))?
        .into_inner()
        .app_id;
    Ok(Some(PinnedIds {
        client_id: Some(client),
        principal_id: Some(object),
    }))
}

/// The sandbox clock's time.
async fn clock(remote: &Remote) -> anyhow::Result<Clock> {
    let now = remote.now().await?;
    Ok(Clock {
        at: misim_types::time::format_rfc3339(now),
    })
}

struct ScopeNames<'a> {
    sub: &'a str,
    identity_refs: &'a HashMap<String, String>,
    vault_refs: &'a HashMap<String, String>,
    vm_refs: &'a HashMap<String, String>,
}

impl ScopeNames<'_> {
    fn scope(&self, id: &str) -> Scope {
        let k = id.trim_end_matches('/').to_ascii_lowercase();
        let mut scope = Scope::default();
        if k == self.sub.to_ascii_lowercase() {
            scope.subscription = Some(true);
        } else if let Some(r) = self.identity_refs.get(&k) {
            scope.identity = Some(r.clone());
        } else if let Some(r) = self.vault_refs.get(&k) {
            scope.vault = Some(r.clone());
        } else if let Some(r) = self.vm_refs.get(&k) {
            scope.vm = Some(r.clone());
        } else if let Some(rg) = k
            .strip_prefix(&format!(
                "{}/resourcegroups/",
                self.sub.to_ascii_lowercase()
            ))
            .filter(|r| !r.contains('/'))
        {
            // The group's own casing is in the id.
            let t = id.trim_end_matches('/');
            scope.resource_group = Some(t[t.len() - rg.len()..].to_owned());
        } else {
            scope.id = Some(id.to_owned());
        }
        scope
    }
}

async fn assignments(
    remote: &Remote,
    sub: &str,
    principals: &HashMap<String, Principal>,
    scopes: &ScopeNames<'_>,
    skipped: &mut Skipped,
) -> anyhow::Result<Vec<Assignment>> {
    let roles: HashMap<String, String> = remote
        .arm_list(&format!(
            "{sub}/providers/Microsoft.Authorization/roleDefinitions"
        ))
        .await?
        .iter()
        .map(|d| {
            (
                s(d, "/name").to_ascii_lowercase(),
                s(d, "/properties/roleName"),
            )
        })
        .collect();
    let mut out = Vec::new();
    for a in remote
        .arm_list(&format!(
            "{sub}/providers/Microsoft.Authorization/roleAssignments"
        ))
        .await?
    {
        let Some(principal) =
            principals.get(&s(&a, "/properties/principalId").to_ascii_lowercase())
        else {
            skipped.assignments += 1;
            continue;
        };
        let def = s(&a, "/properties/roleDefinitionId");
        let guid = def
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let role = roles
            .get(&guid)
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or(guid);
        out.push(Assignment {
            role,
            principal: principal.clone(),
            scope: scopes.scope(&s(&a, "/properties/scope")),
        });
    }
    out.sort_by_key(|a| serde_json::to_string(a).unwrap_or_default());
    Ok(out)
}

async fn faults(remote: &Remote) -> anyhow::Result<Vec<Fault>> {
    let mut out = Vec::new();
    for service in Service::ALL {
        let rules = remote.list_faults(service).await?;
        for f in rules {
            let spec = f.spec.unwrap_or_default();
            let opt = |v: String| (!v.is_empty()).then_some(v);
            out.push(Fault {
                service: spec.service,
                vm: opt(spec.vm),
                identity: opt(spec.identity),
                path: opt(spec.path),
                status: u16::try_from(spec.status).ok().filter(|s| *s != 0),
                aadsts: (spec.aadsts != 0).then_some(spec.aadsts),
                retry_after: spec.retry_after_secs,
                latency: (spec.latency_ms != 0).then(|| format!("{}ms", spec.latency_ms)),
                count: spec.count,
                probability: spec.probability,
            });
        }
    }
    Ok(out)
}
