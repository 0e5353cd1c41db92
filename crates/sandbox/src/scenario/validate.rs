//! Checks a whole scenario before anything is written and resolves it to a [`Plan`]: names,
//! GUIDs, references to declared groups, identities, VMs and vaults, fault rules, the clock.
//! Every problem is reported with its path (`identities[2].clientId: ... is not a GUID`).

use std::collections::HashMap;

use super::model::{API_VERSION, Assignment, Fault, Scenario};

/// Azure's default region for a resource group that names none.
pub(crate) const DEFAULT_LOCATION: &str = "eastus";

/// A managed identity's principal, as a role assignment names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Who {
    /// A user-assigned identity (resource id).
    Identity(String),
    /// A VM's system-assigned identity (VM resource id).
    Vm(String),
    /// An object id.
    Object(String),
}

/// Pinned client and object ids.
pub(crate) type Ids = (String, String);

/// A user-assigned identity to ensure.
#[derive(Debug, Clone)]
pub(crate) struct PlannedIdentity {
    pub(crate) path: String,
    pub(crate) id: String,
    pub(crate) location: String,
    pub(crate) pinned: Option<Ids>,
}

/// A vault to ensure, with its secrets.
#[derive(Debug, Clone)]
pub(crate) struct PlannedVault {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) location: String,
    pub(crate) secrets: Vec<(String, Option<String>)>,
}

/// A VM to ensure.
#[derive(Debug, Clone)]
pub(crate) struct PlannedVm {
    pub(crate) path: String,
    pub(crate) id: String,
    pub(crate) location: String,
    /// `Some(None)`: a system-assigned identity with generated ids.
    pub(crate) system: Option<Option<Ids>>,
    /// User-assigned identities' resource ids.
    pub(crate) user: Vec<String>,
}

/// A role assignment to ensure.
#[derive(Debug, Clone)]
pub(crate) struct PlannedAssignment {
    pub(crate) path: String,
    pub(crate) role: String,
    pub(crate) who: Who,
    pub(crate) scope: String,
}

/// What applying a scenario does, resolved to resource ids.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    pub(crate) clock: Option<i64>,
    pub(crate) groups: Vec<(String, String)>,
    pub(crate) identities: Vec<PlannedIdentity>,
    pub(crate) vaults: Vec<PlannedVault>,
    pub(crate) vms: Vec<PlannedVm>,
    pub(crate) assignments: Vec<PlannedAssignment>,
    pub(crate) faults: Vec<misim_chaos::RuleSpec>,
}

/// Every problem found, each with its path.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub(crate) Vec<String>);

impl Problems {
    fn add(&mut self, path: &str, what: impl std::fmt::Display) {
        self.0.push(format!("{path}: {what}"));
    }
}

pub(crate) fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Checks `name` against Azure's naming rule for `kind`; `None` when it is fine.
fn bad_name(kind: &str, name: &str) -> Option<String> {
    let ok_chars = |extra: &str| {
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    };
    let ok = match kind {
        "resource group" => {
            (1..=90).contains(&name.len()) && ok_chars("-_.()") && !name.ends_with('.')
        }
        "identity" => (3..=128).contains(&name.len()) && ok_chars("-_"),
        "VM" => (1..=64).contains(&name.len()) && ok_chars("-_."),
        "vault" => {
            (3..=24).contains(&name.len())
                && ok_chars("-")
                && name.starts_with(|c: char| c.is_ascii_alphabetic())
                && !name.ends_with('-')
                && !name.contains("--")
        }
        _ => (1..=127).contains(&name.len()) && ok_chars("-"),
    };
    (!ok).then(|| format!("{name:?} is not a valid {kind} name"))
}

fn twice(name: &str) -> String {
    format!("{name:?} is declared twice in its group")
}

/// Declared resources of one type by lower-cased `group/name`, for references.
struct Names {
    kind: &'static str,
    ids: HashMap<String, String>,
}

impl Names {
    fn new(kind: &'static str) -> Self {
        Self {
            kind,
            ids: HashMap::new(),
        }
    }

    /// Records `group/name` as `id`; false if it was declared already.
    fn declare(&mut self, group: &str, name: &str, id: &str) -> bool {
        let k = format!("{group}/{name}").to_ascii_lowercase();
        self.ids.insert(k, id.to_owned()).is_none()
    }

    /// `NAME` (unique among the declared) or `GROUP/NAME`.
    fn resolve(&self, r: &str) -> Result<&str, String> {
        let r = r.to_ascii_lowercase();
        if r.contains('/') {
            return self
                .ids
                .get(&r)
                .map(String::as_str)
                .ok_or_else(|| format!("no {} {r:?} is declared", self.kind));
        }
        let found: Vec<&String> = self
            .ids
            .iter()
            .filter(|(k, _)| k.rsplit('/').next() == Some(r.as_str()))
            .map(|(_, v)| v)
            .collect();
        match found.as_slice() {
            [one] => Ok(one.as_str()),
            [] => Err(format!("no {} {r:?} is declared", self.kind)),
            _ => Err(format!(
                "{} {} are named {r:?}: write GROUP/{r}",
                found.len(),
                self.kind
            )),
        }
    }
}

/// Validates `s` for the subscription `sub` and resolves it.
pub(crate) fn plan(s: &Scenario, sub: &str) -> Result<Plan, Problems> {
    let mut c = Checker {
        p: Problems::default(),
        plan: Plan::default(),
        sub_id: format!("/subscriptions/{sub}"),
        groups: HashMap::new(),
        pinned_seen: HashMap::new(),
        identities: Names::new("identity"),
        vaults: Names::new("vault"),
        vms: Names::new("VM"),
        with_system: HashMap::new(),
    };
    if s.api_version != API_VERSION {
        c.p.add(
            "apiVersion",
            format!(
                "{:?} is not supported (this misim reads {API_VERSION})",
                s.api_version
            ),
        );
    }
    if let Some(clock) = &s.clock {
        match misim_types::time::parse_rfc3339(&clock.at) {
            Some(t) => c.plan.clock = Some(t),
            None => c.p.add(
                "clock.at",
                format!("{:?} is not an RFC 3339 time", clock.at),
            ),
        }
    }
    c.groups(s);
    c.identities(s);
    c.vaults(s);
    c.vms(s);
    let Checker {
        mut p,
        mut plan,
        sub_id,
        groups,
        identities,
        vaults,
        vms,
        with_system,
        ..
    } = c;
    let refs = Refs {
        sub_id: &sub_id,
        groups: &groups,
        identities: &identities,
        vaults: &vaults,
        vms: &vms,
        with_system: &with_system,
    };
    for (i, a) in s.role_assignments.iter().enumerate() {
        if let Some(planned) = refs.assignment(&mut p, format!("roleAssignments[{i}]"), a) {
            plan.assignments.push(planned);
        }
    }
    for (i, f) in s.faults.iter().enumerate() {
        match rule(f) {
            Ok(r) => plan.faults.push(r),
            Err(e) => p.add(&format!("faults[{i}]"), e),
        }
    }
    if p.0.is_empty() { Ok(plan) } else { Err(p) }
}

/// The state of one validation: problems so far, the plan, and what is declared.
struct Checker {
    p: Problems,
    plan: Plan,
    sub_id: String,
    /// Lower-cased group name → (resource id, location).
    groups: HashMap<String, (String, String)>,
    /// Lower-cased pinned GUID → the path that pinned it first.
    pinned_seen: HashMap<String, String>,
    identities: Names,
    vaults: Names,
    vms: Names,
    /// Lower-cased ids of VMs with a system-assigned identity.
    with_system: HashMap<String, ()>,
}

impl Checker {
    fn groups(&mut self, s: &Scenario) {
        for (i, g) in s.resource_groups.iter().enumerate() {
            let path = format!("resourceGroups[{i}]");
            if let Some(e) = bad_name("resource group", &g.name) {
                self.p.add(&format!("{path}.name"), e);
            }
            let id = format!("{}/resourceGroups/{}", self.sub_id, g.name);
            let loc = g
                .location
                .clone()
                .unwrap_or_else(|| DEFAULT_LOCATION.into());
            if self
                .groups
                .insert(g.name.to_ascii_lowercase(), (id.clone(), loc.clone()))
                .is_some()
            {
                self.p.add(
                    &format!("{path}.name"),
                    format!("{:?} is declared twice", g.name),
                );
            }
            self.plan.groups.push((id, loc));
        }
    }

    /// The declared group `name` (id, location), or a problem at `path`.
    fn group(&mut self, path: &str, name: &str) -> Option<(String, String)> {
        let g = self.groups.get(&name.to_ascii_lowercase()).cloned();
        if g.is_none() {
            self.p.add(
                &format!("{path}.resourceGroup"),
                format!("no resource group {name:?} is declared in resourceGroups"),
            );
        }
        g
    }

    /// Pinned ids: both or neither, GUIDs, each pinned once in the scenario.
    fn pin(&mut self, path: &str, c: &Option<String>, o: &Option<String>) -> Option<Ids> {
        let (c, o) = match (c, o) {
            (None, None) => return None,
            (Some(c), Some(o)) => (c, o),
            _ => {
                self.p.add(
                    path,
                    "clientId and principalId go together: give both or neither",
                );
                return None;
            }
        };
        let mut ok = true;
        for (field, v) in [("clientId", c), ("principalId", o)] {
            if !is_guid(v) {
                self.p
                    .add(&format!("{path}.{field}"), format!("{v:?} is not a GUID"));
                ok = false;
            } else if let Some(first) = self.pinned_seen.insert(v.to_ascii_lowercase(), path.into())
            {
                self.p.add(
                    &format!("{path}.{field}"),
                    format!("{v} is already pinned by {first}"),
                );
                ok = false;
            }
        }
        ok.then(|| (c.to_ascii_lowercase(), o.to_ascii_lowercase()))
    }

    fn identities(&mut self, s: &Scenario) {
        for (i, x) in s.identities.iter().enumerate() {
            let path = format!("identities[{i}]");
            if let Some(e) = bad_name("identity", &x.name) {
                self.p.add(&format!("{path}.name"), e);
            }
            let pinned = self.pin(&path, &x.client_id, &x.principal_id);
            let Some((gid, gloc)) = self.group(&path, &x.resource_group) else {
                continue;
            };
            let id = format!(
                "{gid}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}",
                x.name
            );
            if !self.identities.declare(&x.resource_group, &x.name, &id) {
                self.p.add(&format!("{path}.name"), twice(&x.name));
            }
            self.plan.identities.push(PlannedIdentity {
                path,
                id,
                location: x.location.clone().unwrap_or(gloc),
                pinned,
            });
        }
    }

    fn vaults(&mut self, s: &Scenario) {
        for (i, v) in s.vaults.iter().enumerate() {
            let path = format!("vaults[{i}]");
            if let Some(e) = bad_name("vault", &v.name) {
                self.p.add(&format!("{path}.name"), e);
            }
            let mut names = HashMap::new();
            for (j, sec) in v.secrets.iter().enumerate() {
                let sp = format!("{path}.secrets[{j}].name");
                if let Some(e) = bad_name("secret", &sec.name) {
                    self.p.add(&sp, e);
                }
                if names.insert(sec.name.to_ascii_lowercase(), ()).is_some() {
                    self.p.add(&sp, format!("{:?} is declared twice", sec.name));
                }
            }
            let Some((gid, gloc)) = self.group(&path, &v.resource_group) else {
                continue;
            };
            let id = format!("{gid}/providers/Microsoft.KeyVault/vaults/{}", v.name);
            // Vault names are global, not per group.
            let taken = self.vaults.ids.values().any(|o| {
                o.rsplit('/')
                    .next()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&v.name))
            });
            if taken {
                self.p.add(
                    &format!("{path}.name"),
                    format!("vault {:?} is declared twice", v.name),
                );
            }
            self.vaults.ids.insert(
                format!("{}/{}", v.resource_group, v.name).to_ascii_lowercase(),
                id.clone(),
            );
            self.plan.vaults.push(PlannedVault {
                id,
                name: v.name.clone(),
                location: v.location.clone().unwrap_or(gloc),
                secrets: v
                    .secrets
                    .iter()
                    .map(|s| (s.name.clone(), s.value.clone()))
                    .collect(),
            });
        }
    }

    fn vms(&mut self, s: &Scenario) {
        for (i, v) in s.vms.iter().enumerate() {
            let path = format!("vms[{i}]");
            if let Some(e) = bad_name("VM", &v.name) {
                self.p.add(&format!("{path}.name"), e);
            }
            let system = v.system_assigned.as_ref().map(|ids| {
                self.pin(
                    &format!("{path}.systemAssigned"),
                    &ids.client_id,
                    &ids.principal_id,
                )
            });
            let mut user = Vec::new();
            for (j, r) in v.user_assigned.iter().enumerate() {
                let at = format!("{path}.userAssigned[{j}]");
                match self.identities.resolve(r) {
                    Ok(id) if user.contains(&id.to_owned()) => {
                        self.p.add(&at, format!("{r:?} is listed twice"))
                    }
                    Ok(id) => user.push(id.to_owned()),
                    Err(e) => self.p.add(&at, e),
                }
            }
            let Some((gid, gloc)) = self.group(&path, &v.resource_group) else {
                continue;
            };
            let id = format!(
                "{gid}/providers/Microsoft.Compute/virtualMachines/{}",
                v.name
            );
            if system.is_some() {
                self.with_system.insert(id.to_ascii_lowercase(), ());
            }
            if !self.vms.declare(&v.resource_group, &v.name, &id) {
                self.p.add(&format!("{path}.name"), twice(&v.name));
            }
            self.plan.vms.push(PlannedVm {
                path,
                id,
                location: v.location.clone().unwrap_or(gloc),
                system,
                user,
            });
        }
    }
}

/// What role assignments may refer to.
struct Refs<'a> {
    sub_id: &'a str,
    groups: &'a HashMap<String, (String, String)>,
    identities: &'a Names,
    vaults: &'a Names,
    vms: &'a Names,
    with_system: &'a HashMap<String, ()>,
}

impl Refs<'_> {
    fn assignment(
        &self,
        p: &mut Problems,
        path: String,
        a: &Assignment,
    ) -> Option<PlannedAssignment> {
        if a.role.trim().is_empty() {
            p.add(
                &format!("{path}.role"),
                "a role name or definition GUID is required",
            );
        }
        let pr = &a.principal;
        let pp = format!("{path}.principal");
        let who = match (&pr.identity, &pr.vm, &pr.principal_id) {
            (Some(r), None, None) => self
                .identities
                .resolve(r)
                .map(|id| Who::Identity(id.to_owned()))
                .map_err(|e| p.add(&format!("{pp}.identity"), e))
                .ok(),
            (None, Some(r), None) => match self.vms.resolve(r) {
                Ok(id) if self.with_system.contains_key(&id.to_ascii_lowercase()) => {
                    Some(Who::Vm(id.to_owned()))
                }
                Ok(_) => {
                    p.add(
                        &format!("{pp}.vm"),
                        format!("VM {r:?} has no systemAssigned identity"),
                    );
                    None
                }
                Err(e) => {
                    p.add(&format!("{pp}.vm"), e);
                    None
                }
            },
            (None, None, Some(g)) if is_guid(g) => Some(Who::Object(g.to_ascii_lowercase())),
            (None, None, Some(g)) => {
                p.add(&format!("{pp}.principalId"), format!("{g:?} is not a GUID"));
                None
            }
            _ => {
                p.add(&pp, "give exactly one of identity, vm, principalId");
                None
            }
        };
        let scope = self.scope(p, &format!("{path}.scope"), &a.scope);
        Some(PlannedAssignment {
            path,
            role: a.role.trim().to_owned(),
            who: who?,
            scope: scope?,
        })
    }

    fn scope(&self, p: &mut Problems, path: &str, s: &super::model::Scope) -> Option<String> {
        let set = [
            s.subscription.is_some(),
            s.resource_group.is_some(),
            s.vault.is_some(),
            s.identity.is_some(),
            s.vm.is_some(),
            s.id.is_some(),
        ];
        if set.iter().filter(|x| **x).count() != 1 {
            p.add(
                path,
                "give exactly one of subscription, resourceGroup, vault, identity, vm, id",
            );
            return None;
        }
        let r = |field: &str, names: &Names, r: &str, p: &mut Problems| {
            names
                .resolve(r)
                .map(str::to_owned)
                .map_err(|e| p.add(&format!("{path}.{field}"), e))
                .ok()
        };
        if let Some(b) = s.subscription {
            if !b {
                p.add(
                    &format!("{path}.subscription"),
                    "only `true` means anything here",
                );
                return None;
            }
            return Some(self.sub_id.to_owned());
        }
        if let Some(g) = &s.resource_group {
            let found = self
                .groups
                .get(&g.to_ascii_lowercase())
                .map(|(id, _)| id.clone());
            if found.is_none() {
                p.add(
                    &format!("{path}.resourceGroup"),
                    format!("no resource group {g:?} is declared"),
                );
            }
            return found;
        }
        if let Some(v) = &s.vault {
            return r("vault", self.vaults, v, p);
        }
        if let Some(v) = &s.identity {
            return r("identity", self.identities, v, p);
        }
        if let Some(v) = &s.vm {
            return r("vm", self.vms, v, p);
        }
        let id = s.id.as_deref().unwrap_or_default();
        match misim_types::ResourceId::parse(id) {
            Ok(_)
                if id
                    .to_ascii_lowercase()
                    .starts_with(&self.sub_id.to_ascii_lowercase()) =>
            {
                Some(id.trim_end_matches('/').to_owned())
            }
            Ok(_) => {
                p.add(
                    &format!("{path}.id"),
                    format!("{id:?} is not in the sandbox subscription {}", self.sub_id),
                );
                None
            }
            Err(e) => {
                p.add(&format!("{path}.id"), e);
                None
            }
        }
    }
}

/// A fault as the service would check it.
pub(crate) fn rule(f: &Fault) -> Result<misim_chaos::RuleSpec, String> {
    let latency = match &f.latency {
        Some(l) => crate::fault_cmd::parse_latency(l).map_err(|e| format!("latency: {e}"))?,
        None => std::time::Duration::ZERO,
    };
    let spec = misim_chaos::RuleSpec {
        service: f.service.clone(),
        vm: f.vm.clone(),
        identity: f.identity.clone(),
        path: f.path.clone(),
        status: f.status,
        aadsts: f.aadsts,
        retry_after: f.retry_after,
        latency,
        count: f.count,
        probability: f.probability,
    };
    spec.check().map_err(|e| e.to_string())?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::model::{Format, parse};

    const SUB: &str = "00000000-0000-4000-8000-000000000001";

    fn problems(yaml: &str) -> Vec<String> {
        let s = parse(yaml, Format::Yaml).unwrap();
        plan(&s, SUB).map(|_| Vec::new()).unwrap_or_else(|p| p.0)
    }

    #[test]
    fn a_valid_scenario_resolves_to_resource_ids() {
        let s = parse(
            "apiVersion: misim/v1\nresourceGroups: [{name: rg1, location: westeurope}]\n\
             identities: [{name: app, resourceGroup: rg1}]\n\
             vms: [{name: vm1, resourceGroup: rg1, systemAssigned: {}, userAssigned: [rg1/app]}]\n\
             roleAssignments: [{role: Reader, principal: {vm: vm1}, scope: {identity: app}}]\n",
            Format::Yaml,
        )
        .unwrap();
        let plan = plan(&s, SUB).unwrap();
        assert_eq!(plan.vms[0].location, "westeurope");
        assert_eq!(plan.vms[0].user, [plan.identities[0].id.clone()]);
        assert_eq!(plan.assignments[0].who, Who::Vm(plan.vms[0].id.clone()));
        assert_eq!(plan.assignments[0].scope, plan.identities[0].id);
    }

    #[test]
    fn every_problem_is_named_with_its_path() {
        let got = problems(
            "apiVersion: misim/v2\nclock: {at: tomorrow}\nresourceGroups: [{name: rg1}]\n\
             identities:\n  - {name: a, resourceGroup: rg1, clientId: nope, principalId: 11111111-1111-4111-8111-111111111111}\n\
             \x20 - {name: b12, resourceGroup: rg2}\n\
             vms: [{name: vm1, resourceGroup: rg1, userAssigned: [ghost]}]\n\
             roleAssignments: [{role: Reader, principal: {vm: vm1}, scope: {vault: kv9}}]\n\
             faults: [{service: imds, status: 418}, {service: dns, status: 500}, {service: arm, status: 429, latency: 2h}]\n",
        );
        let want = [
            "apiVersion: \"misim/v2\" is not supported",
            "clock.at: \"tomorrow\" is not an RFC 3339 time",
            "identities[0].name: \"a\" is not a valid identity name",
            "identities[0].clientId: \"nope\" is not a GUID",
            "identities[1].resourceGroup: no resource group \"rg2\" is declared",
            "vms[0].userAssigned[0]: no identity \"ghost\" is declared",
            "roleAssignments[0].principal.vm: VM \"vm1\" has no systemAssigned identity",
            "roleAssignments[0].scope.vault: no vault \"kv9\" is declared",
            "faults[0]: status 418",
            "faults[1]: ",
            "faults[2]: latency:",
        ];
        for w in want {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "missing {w:?} in {got:#?}"
            );
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
    }

    #[test]
    fn pinned_ids_are_guids_given_together_and_unique() {
        let g = "11111111-1111-4111-8111-111111111111";
        let got = problems(&format!(
            "apiVersion: misim/v1\nresourceGroups: [{{name: rg1}}]\nidentities:\n\
             \x20 - {{name: one, resourceGroup: rg1, clientId: {g}}}\n\
             \x20 - {{name: two, resourceGroup: rg1, clientId: {g}, principalId: {g}}}\n"
        ));
        assert!(
            got[0].starts_with("identities[0]: clientId and principalId go together"),
            "{got:?}"
        );
        assert!(
            got[1].starts_with(&format!(
                "identities[1].principalId: {g} is already pinned by identities[1]"
            )),
            "{got:?}"
        );
    }
}
