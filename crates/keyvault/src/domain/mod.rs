//! Secrets as stored, and the pure rules around them (names, ids, bundles).

use std::collections::BTreeMap;

use misim_store::{Store, Table};
use serde::{Deserialize, Serialize};

use crate::error::KvError;

/// One version of a secret: a set writes a new version and never changes an old one;
/// `Debug` never prints the value.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct SecretVersion {
    /// Name as first created (names are case-insensitive).
    pub name: String,
    /// 32 hex digits.
    pub version: String,
    pub value: String,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub enabled: bool,
    pub created: i64,
    pub updated: i64,
}

impl std::fmt::Debug for SecretVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secret values.
        f.debug_struct("SecretVersion")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// True for a valid secret name: 1-127 letters, digits and dashes.
pub fn valid_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Secrets of every vault: versions by `{vault}/{name}/{version}`, the
/// current version by `{vault}/{name}` (all lower case).
#[derive(Debug, Clone)]
pub struct Secrets {
    versions: Table<SecretVersion>,
    current: Table<SecretVersion>,
}

fn key(vault: &str, name: &str) -> String {
    format!(
        "{}/{}",
        vault.to_ascii_lowercase(),
        name.to_ascii_lowercase()
    )
}

impl Secrets {
    /// Opens (creating them if new) the two tables: every version by name and version, and
    /// each name's current version.
    pub fn open(store: &Store) -> Result<Self, KvError> {
        Ok(Self {
            versions: store.table("secret_versions")?,
            current: store.table("secret_current")?,
        })
    }

    /// Stores a new version and makes it current.
    pub async fn set(&self, vault: &str, s: SecretVersion) -> Result<(), KvError> {
        let k = key(vault, &s.name);
        self.versions
            .put(&format!("{k}/{}", s.version.to_ascii_lowercase()), &s)
            .await?;
        self.current.put(&k, &s).await?;
        Ok(())
    }

    /// The current version, or a given one.
    pub fn get(
        &self,
        vault: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<SecretVersion>, KvError> {
        let k = key(vault, name);
        Ok(match version {
            None => self.current.get(&k)?,
            Some(v) => self
                .versions
                .get(&format!("{k}/{}", v.to_ascii_lowercase()))?,
        })
    }

    /// The current version of every secret of a vault.
    pub fn list(&self, vault: &str) -> Result<Vec<SecretVersion>, KvError> {
        let prefix = format!("{}/", vault.to_ascii_lowercase());
        Ok(self
            .current
            .scan_prefix(&prefix)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Deletes a secret with all its versions; returns the current version.
    pub async fn delete(&self, vault: &str, name: &str) -> Result<Option<SecretVersion>, KvError> {
        let k = key(vault, name);
        let Some(cur) = self.current.remove(&k).await? else {
            return Ok(None);
        };
        for (vk, _) in self.versions.scan_prefix(&format!("{k}/"))? {
            self.versions.remove(&vk).await?;
        }
        Ok(Some(cur))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("db-password-1"));
        assert!(!valid_name(""));
        assert!(!valid_name("a_b"));
        assert!(!valid_name(&"a".repeat(128)));
    }

    #[tokio::test]
    async fn versions_and_current() {
        let s = Secrets::open(&Store::memory().unwrap()).unwrap();
        let v = |version: &str, value: &str| SecretVersion {
            name: "Pw".into(),
            version: version.into(),
            value: value.into(),
            content_type: None,
            tags: BTreeMap::new(),
            enabled: true,
            created: 1,
            updated: 1,
        };
        s.set("kv1", v("a1", "one")).await.unwrap();
        s.set("KV1", v("b2", "two")).await.unwrap();
        assert_eq!(s.get("kv1", "pw", None).unwrap().unwrap().value, "two");
        assert_eq!(
            s.get("kv1", "PW", Some("A1")).unwrap().unwrap().value,
            "one"
        );
        assert!(s.get("kv2", "pw", None).unwrap().is_none());
        assert_eq!(s.list("kv1").unwrap().len(), 1);
        assert!(s.delete("kv1", "pw").await.unwrap().is_some());
        assert!(s.get("kv1", "pw", Some("a1")).unwrap().is_none());
        assert!(s.delete("kv1", "pw").await.unwrap().is_none());
    }
}
