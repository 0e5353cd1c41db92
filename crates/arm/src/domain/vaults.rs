//! Key vaults (management plane). Vault names are global: a name is claimed
//! (`vault_names`) before its vault is written, under one lock per name.

use serde_json::{Map, Value};

use super::{Core, Put, location_of, res_key, tags_of};
use crate::error::ArmError;
use crate::records::*;
use crate::resource::Kind;

/// The lock serialising claims of a vault name (names are global).
fn vault_name_lock(name_key: &str) -> String {
    format!("vault-name|{name_key}")
}

impl Core {
    /// Creates or updates a vault. Vault names are global, as in Azure: a name another resource
    /// group holds is 409 `VaultAlreadyExists`.
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

    pub fn get_vault(&self, sub: &str, rg: &str, name: &str) -> Result<VaultRecord, ArmError> {
        self.require_rg(sub, rg)?;
        self.vaults
            .get(&res_key(sub, rg, Kind::Vault, name))?
            .ok_or_else(|| Self::not_found(Kind::Vault, rg, name))
    }

    /// Deletes a vault's record (its secrets live in Key Vault's own store and are not
    /// touched); `false` when there was none.
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
            crate::peers::Peers::unreachable(),
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
}
