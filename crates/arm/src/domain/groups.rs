//! Resource groups, and deleting one with everything in it.

use misim_types::ResourceId;
use serde_json::Value;
use std::sync::Arc;

use super::resources::{Deleted, Pending};
use super::{Core, Put, location_of, rg_key, tags_of};
use crate::error::ArmError;
use crate::records::*;
use crate::resource::Kind;

impl Core {
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
    pub async fn delete_rg(self: &Arc<Self>, sub: &str, rg: &str) -> Result<Vec<String>, ArmError> {
        let rec = self.require_rg(sub, rg)?;
        let prefix = rg_key(sub, rg);
        let mut pending = Vec::new();
        // In `Kind::ALL` order: VMs before the identities they carry.
        for kind in Kind::ALL {
            for name in self.resource_names(sub, &rec.name, kind)? {
                // A VM's deletion is durable once marked; the reconciler finishes it.
                if let Deleted::Pending(Pending::Compute { op, .. }) =
                    self.delete_resource(sub, &rec.name, kind, &name).await?
                {
                    pending.push(op);
                }
            }
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
}
