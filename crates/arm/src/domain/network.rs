//! Generic stored `Microsoft.Network` resources: virtual networks (with
//! subnets), network security groups, public IP addresses and network
//! interfaces. ARM keeps what the caller sent and fills the read-only fields
//! clients read back: child ids, `provisioningState`, a public `ipAddress`,
//! and each NIC IP configuration's `privateIPAddress`, allocated from its
//! subnet's prefix (first free address from `.4`, as Azure reserves `.0`–`.3`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use misim_types::ResourceId;
use serde_json::{Map, Value, json};

use super::{Core, Put, location_of, merge_patch, res_key, tags_of};
use crate::error::ArmError;
use crate::records::NetworkRecord;
use crate::resource::Kind;

/// First address of the simulated public range.
const PUBLIC_BASE: Ipv4Addr = Ipv4Addr::new(20, 81, 0, 4);

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Parses `a.b.c.d/len` into the usable host range (from `.4`, without broadcast).
pub fn host_range(cidr: &str) -> Option<(u32, u32)> {
    let (addr, len) = cidr.split_once('/')?;
    let addr: Ipv4Addr = addr.trim().parse().ok()?;
    let len: u32 = len.trim().parse().ok()?;
    if len > 29 {
        return None;
    }
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    let net = u32::from(addr) & mask;
    let broadcast = net | !mask;
    Some((net + 4, broadcast - 1))
}

/// The first address of `range` not in `used`.
pub fn first_free(range: (u32, u32), used: &BTreeSet<u32>) -> Option<Ipv4Addr> {
    (range.0..=range.1)
        .find(|a| !used.contains(a))
        .map(Ipv4Addr::from)
}

fn objects_mut<'v>(
    props: &'v mut Value,
    key: &str,
) -> impl Iterator<Item = &'v mut Map<String, Value>> {
    props
        .get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// Gives each named child object an `id` under `parent` and a `provisioningState`.
fn name_children(props: &mut Value, key: &str, parent: &str, child_type: &str) {
    for c in objects_mut(props, key) {
        let Some(name) = c.get("name").and_then(Value::as_str).map(str::to_owned) else {
            continue;
        };
        c.insert("id".into(), json!(format!("{parent}/{key}/{name}")));
        c.insert("type".into(), json!(child_type));
        let p = c.entry("properties").or_insert_with(|| json!({}));
        if let Some(p) = p.as_object_mut() {
            p.insert("provisioningState".into(), json!("Succeeded"));
        }
    }
}

fn ip_configs(props: &Value) -> impl Iterator<Item = &Map<String, Value>> {
    props
        .get("ipConfigurations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

/// The resources a NIC joins, with the action joining each takes.
fn nic_links(props: &Value) -> Vec<(&'static str, String)> {
    let mut links = Vec::new();
    for c in ip_configs(props).filter_map(|c| c.get("properties")) {
        if let Some(id) = text_at(c, "/subnet/id") {
            links.push((
                "Microsoft.Network/virtualNetworks/subnets/join/action",
                id.to_owned(),
            ));
        }
        if let Some(id) = text_at(c, "/publicIPAddress/id") {
            links.push((
                "Microsoft.Network/publicIPAddresses/join/action",
                id.to_owned(),
            ));
        }
    }
    if let Some(id) = text_at(props, "/networkSecurityGroup/id") {
        links.push((
            "Microsoft.Network/networkSecurityGroups/join/action",
            id.to_owned(),
        ));
    }
    links.sort();
    links.dedup_by(|a, b| a.0 == b.0 && a.1.eq_ignore_ascii_case(&b.1));
    links
}

fn text_at<'v>(v: &'v Value, ptr: &str) -> Option<&'v str> {
    v.pointer(ptr).and_then(Value::as_str)
}

impl Core {
    /// Creates, replaces (PUT) or updates (PATCH) a network resource. A NIC
    /// that newly joins a subnet, NSG or public IP needs the `join/action` on
    /// it (a linked authorization, as on Azure).
    #[allow(clippy::too_many_arguments)]
    pub async fn put_network(
        &self,
        principal: &str,
        sub: &str,
        rg: &str,
        kind: Kind,
        name: &str,
        body: &Value,
        patch: bool,
    ) -> Result<Put<NetworkRecord>, ArmError> {
        debug_assert!(kind.is_network());
        let group = self.require_rg(sub, rg)?;
        let key = res_key(sub, rg, kind, name);
        let existing = self.network.get(&key)?;
        if patch && existing.is_none() {
            return Err(Self::not_found(kind, rg, name));
        }
        let mut props = match body.get("properties") {
            None | Some(Value::Null) => json!({}),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => {
                return Err(ArmError::InvalidRequestContent(
                    "properties must be an object".into(),
                ));
            }
        };
        if patch && let Some(e) = &existing {
            let mut merged = e.properties.clone();
            merge_patch(&mut merged, &props);
            props = merged;
        }
        let id = existing.as_ref().map(|e| e.id.clone()).unwrap_or_else(|| {
            format!(
                "/subscriptions/{}/resourceGroups/{}/providers/{}/{name}",
                self.config.subscription_id,
                group.name,
                kind.type_name()
            )
        });
        if let Some(p) = props.as_object_mut() {
            p.insert("provisioningState".into(), json!("Succeeded"));
            let guid = existing
                .as_ref()
                .and_then(|e| text_at(&e.properties, "/resourceGuid"))
                .map(str::to_owned)
                .unwrap_or_else(|| self.ids.guid());
            p.insert("resourceGuid".into(), json!(guid));
        }
        if kind == Kind::NetworkInterface {
            let before = existing
                .as_ref()
                .map(|e| nic_links(&e.properties))
                .unwrap_or_default();
            let links: Vec<(&str, String)> = nic_links(&props)
                .into_iter()
                .filter(|l| !before.contains(l))
                .collect();
            self.authorize_links(
                principal,
                "Microsoft.Network/networkInterfaces/write",
                &id,
                &links,
            )?;
        }
        self.fill_read_only(kind, &id, existing.as_ref(), &mut props)?;
        let rec = NetworkRecord {
            id,
            name: existing
                .as_ref()
                .map(|e| e.name.clone())
                .unwrap_or_else(|| name.to_owned()),
            resource_type: kind.type_name().to_owned(),
            location: location_of(body)
                .or_else(|| existing.as_ref().map(|e| e.location.clone()))
                .unwrap_or_else(|| group.location.clone()),
            tags: match tags_of(body)? {
                Some(t) => t,
                None => existing
                    .as_ref()
                    .map(|e| e.tags.clone())
                    .unwrap_or_default(),
            },
            sku: body
                .get("sku")
                .filter(|s| !s.is_null())
                .cloned()
                .or_else(|| existing.as_ref().and_then(|e| e.sku.clone())),
            properties: props,
        };
        self.network.put(&key, &rec).await?;
        tracing::info!(id = %rec.id, "network resource written");
        Ok((rec, existing.is_none()))
    }

    /// The read-only fields of each network kind: child ids, a public
    /// address, NICs' private addresses.
    fn fill_read_only(
        &self,
        kind: Kind,
        id: &str,
        existing: Option<&NetworkRecord>,
        props: &mut Value,
    ) -> Result<(), ArmError> {
        match kind {
            Kind::VirtualNetwork => name_children(
                props,
                "subnets",
                id,
                "Microsoft.Network/virtualNetworks/subnets",
            ),
            Kind::NetworkSecurityGroup => name_children(
                props,
                "securityRules",
                id,
                "Microsoft.Network/networkSecurityGroups/securityRules",
            ),
            Kind::PublicIp => self.assign_public_ip(id, existing, props)?,
            Kind::NetworkInterface => {
                name_children(
                    props,
                    "ipConfigurations",
                    id,
                    "Microsoft.Network/networkInterfaces/ipConfigurations",
                );
                self.assign_private_ips(id, existing, props)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn assign_public_ip(
        &self,
        id: &str,
        existing: Option<&NetworkRecord>,
        props: &mut Value,
    ) -> Result<(), ArmError> {
        let kept = existing
            .and_then(|e| text_at(&e.properties, "/ipAddress"))
            .map(str::to_owned);
        let ip = match kept {
            Some(ip) => ip,
            None => {
                let used: BTreeSet<u32> = self
                    .network
                    .all()?
                    .into_iter()
                    .filter(|(_, r)| {
                        eq(&r.resource_type, Kind::PublicIp.type_name()) && !eq(&r.id, id)
                    })
                    .filter_map(|(_, r)| {
                        text_at(&r.properties, "/ipAddress")?
                            .parse::<Ipv4Addr>()
                            .ok()
                    })
                    .map(u32::from)
                    .collect();
                first_free((u32::from(PUBLIC_BASE), u32::MAX - 1), &used)
                    .ok_or_else(|| ArmError::Internal("public address range exhausted".into()))?
                    .to_string()
            }
        };
        if let Some(p) = props.as_object_mut() {
            p.insert("ipAddress".into(), json!(ip));
            p.entry("publicIPAddressVersion").or_insert(json!("IPv4"));
            p.entry("publicIPAllocationMethod")
                .or_insert(json!("Static"));
            p.entry("idleTimeoutInMinutes").or_insert(json!(4));
        }
        Ok(())
    }

    /// The addresses NICs other than `except` hold in `subnet_id`.
    fn used_private_ips(&self, subnet_id: &str, except: &str) -> Result<BTreeSet<u32>, ArmError> {
        let mut used = BTreeSet::new();
        for (_, r) in self.network.all()? {
            if !eq(&r.resource_type, Kind::NetworkInterface.type_name()) || eq(&r.id, except) {
                continue;
            }
            for c in ip_configs(&r.properties) {
                let props = c.get("properties");
                let same = props
                    .and_then(|p| text_at(p, "/subnet/id"))
                    .is_some_and(|s| eq(s.trim_end_matches('/'), subnet_id));
                if same
                    && let Some(ip) = props.and_then(|p| text_at(p, "/privateIPAddress"))
                    && let Ok(a) = ip.parse::<Ipv4Addr>()
                {
                    used.insert(u32::from(a));
                }
            }
        }
        Ok(used)
    }

    /// The address prefix of a subnet, by id.
    fn subnet_prefix(&self, subnet_id: &str) -> Option<String> {
        let rid = ResourceId::parse(subnet_id).ok()?;
        let (sub, rg) = (rid.subscription()?, rid.resource_group()?);
        let vnet = rid.segment_value("virtualNetworks")?;
        let subnet = rid.segment_value("subnets")?;
        let rec = self
            .network
            .get(&res_key(sub, rg, Kind::VirtualNetwork, vnet))
            .ok()??;
        let s = rec
            .properties
            .get("subnets")?
            .as_array()?
            .iter()
            .find(|s| {
                s.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| eq(n, subnet))
            })?;
        text_at(s, "/properties/addressPrefix")
            .or_else(|| text_at(s, "/properties/addressPrefixes/0"))
            .map(str::to_owned)
    }

    fn assign_private_ips(
        &self,
        id: &str,
        existing: Option<&NetworkRecord>,
        props: &mut Value,
    ) -> Result<(), ArmError> {
        let mut first = true;
        let mut taken: BTreeSet<u32> = BTreeSet::new();
        for c in objects_mut(props, "ipConfigurations") {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let p = c.entry("properties").or_insert_with(|| json!({}));
            let Some(p) = p.as_object_mut() else { continue };
            p.insert("primary".into(), json!(first));
            first = false;
            p.entry("privateIPAddressVersion").or_insert(json!("IPv4"));
            p.entry("privateIPAllocationMethod")
                .or_insert(json!("Dynamic"));
            let Some(subnet_id) = p
                .get("subnet")
                .and_then(|s| s.get("id"))
                .and_then(Value::as_str)
                .map(|s| s.trim_end_matches('/').to_owned())
            else {
                continue;
            };
            let prefix = self.subnet_prefix(&subnet_id).ok_or_else(|| {
                ArmError::InvalidResourceReference {
                    reference: subnet_id.clone(),
                    referrer: id.to_owned(),
                }
            })?;
            let range = host_range(&prefix).ok_or_else(|| {
                ArmError::InvalidParameter(format!(
                    "Subnet '{subnet_id}' has an invalid address prefix '{prefix}'."
                ))
            })?;
            let is_static = p
                .get("privateIPAllocationMethod")
                .and_then(Value::as_str)
                .is_some_and(|m| eq(m, "Static"));
            let previous = existing.and_then(|e| {
                ip_configs(&e.properties)
                    .find(|c| {
                        c.get("name")
                            .and_then(Value::as_str)
                            .is_some_and(|n| eq(n, &name))
                    })
                    .and_then(|c| c.get("properties"))
                    .and_then(|p| text_at(p, "/privateIPAddress"))
                    .map(str::to_owned)
            });
            let sent = p
                .get("privateIPAddress")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let ip = match (is_static, sent, previous) {
                (true, Some(ip), _) => ip,
                (_, _, Some(ip)) => ip,
                _ => {
                    let mut used = self.used_private_ips(&subnet_id, id)?;
                    used.extend(&taken);
                    first_free(range, &used)
                        .ok_or_else(|| {
                            ArmError::InvalidParameter(format!(
                                "Subnet {subnet_id} with address prefix {prefix} does not have enough capacity for 1 IP addresses."
                            ))
                        })?
                        .to_string()
                }
            };
            if let Ok(a) = ip.parse::<Ipv4Addr>() {
                taken.insert(u32::from(a));
            }
            p.insert("privateIPAddress".into(), json!(ip));
        }
        Ok(())
    }

    pub fn get_network(
        &self,
        sub: &str,
        rg: &str,
        kind: Kind,
        name: &str,
    ) -> Result<NetworkRecord, ArmError> {
        self.require_rg(sub, rg)?;
        self.network
            .get(&res_key(sub, rg, kind, name))?
            .ok_or_else(|| Self::not_found(kind, rg, name))
    }

    /// Lists network resources of one kind.
    pub fn list_network(
        &self,
        sub: &str,
        rg: Option<&str>,
        kind: Kind,
    ) -> Result<Vec<NetworkRecord>, ArmError> {
        self.list(&self.network, sub, rg, kind)
    }

    /// Deletes a network resource; false when it did not exist.
    pub async fn delete_network(
        &self,
        sub: &str,
        rg: &str,
        kind: Kind,
        name: &str,
    ) -> Result<bool, ArmError> {
        self.require_rg(sub, rg)?;
        Ok(self
            .network
            .remove(&res_key(sub, rg, kind, name))
            .await?
            .is_some())
    }

    /// A subnet of a virtual network as its own resource.
    pub fn get_subnet(
        &self,
        sub: &str,
        rg: &str,
        vnet: &str,
        name: &str,
    ) -> Result<Value, ArmError> {
        self.list_subnets(sub, rg, vnet)?
            .into_iter()
            .find(|s| {
                s.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| eq(n, name))
            })
            .ok_or_else(|| ArmError::ResourceNotFound {
                resource_type: "Microsoft.Network/virtualNetworks/subnets".into(),
                name: format!("{vnet}/{name}"),
                resource_group: rg.into(),
            })
    }

    /// The subnets of a virtual network.
    pub fn list_subnets(&self, sub: &str, rg: &str, vnet: &str) -> Result<Vec<Value>, ArmError> {
        let rec = self.get_network(sub, rg, Kind::VirtualNetwork, vnet)?;
        Ok(rec
            .properties
            .get("subnets")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// The primary private address of the first NIC a VM's `networkProfile` names.
    pub(crate) fn vm_private_ip(&self, vm_properties: &Value) -> Option<String> {
        let nic_id = text_at(vm_properties, "/networkProfile/networkInterfaces/0/id")?;
        let rid = ResourceId::parse(nic_id).ok()?;
        let key = res_key(
            rid.subscription()?,
            rid.resource_group()?,
            Kind::NetworkInterface,
            rid.name(),
        );
        let nic = self.network.get(&key).ok()??;
        ip_configs(&nic.properties)
            .find_map(|c| {
                c.get("properties")
                    .and_then(|p| text_at(p, "/privateIPAddress"))
            })
            .map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_starts_at_dot_four_and_skips_used() {
        let r = host_range("10.0.0.0/24").unwrap();
        assert_eq!(Ipv4Addr::from(r.0), Ipv4Addr::new(10, 0, 0, 4));
        assert_eq!(Ipv4Addr::from(r.1), Ipv4Addr::new(10, 0, 0, 254));
        let mut used = BTreeSet::new();
        assert_eq!(first_free(r, &used), Some(Ipv4Addr::new(10, 0, 0, 4)));
        used.insert(u32::from(Ipv4Addr::new(10, 0, 0, 4)));
        used.insert(u32::from(Ipv4Addr::new(10, 0, 0, 6)));
        assert_eq!(first_free(r, &used), Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(
            host_range("10.1.2.77/16").map(|r| Ipv4Addr::from(r.0)),
            Some(Ipv4Addr::new(10, 1, 0, 4))
        );
        assert!(host_range("10.0.0.0/30").is_none());
        assert!(host_range("nope").is_none());
        let full = host_range("10.0.0.0/29").unwrap();
        let all: BTreeSet<u32> = (full.0..=full.1).collect();
        assert_eq!(first_free(full, &all), None);
    }
}
