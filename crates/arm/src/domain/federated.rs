//! Federated identity credentials of user-assigned identities
//! (`…/userAssignedIdentities/{name}/federatedIdentityCredentials/{fic}`,
//! docs/workload-identity.md): ARM's record is the truth it answers from;
//! Entra holds the copy it matches external tokens against, brought in line
//! by a persisted `FicSync` operation on the identity (written before the
//! record changes), so an acknowledged write reaches Entra even across a crash.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;

use serde_json::Value;

use super::{Core, Put, res_key};
use crate::error::ArmError;
use crate::records::{FicRecord, OpKind, OpRecord, UamiRecord};
use crate::resource::{FEDERATED_CREDENTIAL_TYPE, FEDERATED_CREDENTIALS, Kind};

/// The audience Entra's token exchange expects, and the default when a write
/// names none ([Graph FIC] in docs/workload-identity.md).
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// Credentials per identity (Considerations, in docs/workload-identity.md's sources).
pub const MAX_PER_IDENTITY: usize = 20;
/// Issuer, subject and audience are limited to 600 characters ([Graph FIC]).
const MAX_FIELD: usize = 600;
/// The first api-version of `Microsoft.ManagedIdentity` that serves the
/// resource (azure-cli recorded its FIC commands at it); later ones
/// (2023-01-31, 2024-11-30, 2025-01-31-preview) compare greater.
pub const FIRST_API_VERSION: &str = "2022-01-31-preview";

/// The identities with a credential write in flight (their table keys).
#[derive(Debug, Default)]
pub(crate) struct InFlight(Mutex<HashSet<String>>);

/// A claimed identity; released when dropped.
struct Claim<'a> {
    set: &'a InFlight,
    key: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut s = self.set.0.lock().unwrap_or_else(|p| p.into_inner());
        s.remove(&self.key);
    }
}

impl InFlight {
    /// Claims `key`, or 409 as Azure answers concurrent writes on one identity.
    fn claim(&self, key: &str, id: &str) -> Result<Claim<'_>, ArmError> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !s.insert(key.to_owned()) {
            return Err(ArmError::ConcurrentFicWrites(id.to_ascii_lowercase()));
        }
        Ok(Claim {
            set: self,
            key: key.to_owned(),
        })
    }
}

/// Whether `api_version` serves federated identity credentials.
pub fn api_version_ok(api_version: &str) -> Result<(), ArmError> {
    // Dates compare as strings; a preview sorts after its date's GA.
    if api_version >= FIRST_API_VERSION {
        return Ok(());
    }
    Err(ArmError::ApiVersionNotSupported {
        resource_type: FEDERATED_CREDENTIAL_TYPE.to_owned(),
        api_version: api_version.to_owned(),
        supported:
            "2022-01-31-preview, 2023-01-31, 2023-07-31-preview, 2024-11-30, 2025-01-31-preview"
                .to_owned(),
    })
}

fn fic_prefix(uami_key: &str) -> String {
    format!("{uami_key}/{}/", FEDERATED_CREDENTIALS.to_ascii_lowercase())
}

fn fic_key(uami_key: &str, name: &str) -> String {
    format!("{}{}", fic_prefix(uami_key), name.to_ascii_lowercase())
}

fn bad(m: impl Into<String>) -> ArmError {
    ArmError::BadRequest(m.into())
}

/// The name rule of Considerations (docs/workload-identity.md): 3 to 120
/// characters, letters, digits, hyphens and underscores, starting with a
/// letter or digit (azure-cli checks
/// `^[a-zA-Z0-9]{1}[a-zA-Z0-9-_]{2,119}$` before sending).
fn check_name(name: &str) -> Result<(), ArmError> {
    let ok = (3..=120).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        return Ok(());
    }
    Err(bad(format!(
        "The federated identity credential name '{name}' is invalid. It must be 3 to 120 characters long, start with a letter or a number, and contain only letters, numbers, hyphens and underscores."
    )))
}

fn string_prop<'a>(props: &'a Value, name: &str) -> Result<Option<&'a str>, ArmError> {
    match props.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ArmError::InvalidRequestContent(format!(
            "properties.{name} must be a string"
        ))),
    }
}

fn check_len(what: &str, v: &str) -> Result<(), ArmError> {
    if v.chars().count() > MAX_FIELD {
        return Err(bad(format!(
            "Property '{what}' exceeds the limit of {MAX_FIELD} characters."
        )));
    }
    Ok(())
}

/// True for `https://host...` with a non-empty host and no whitespace (the
/// rule Entra applies too, so a credential ARM accepts is one Entra accepts).
fn is_https_url(s: &str) -> bool {
    s.strip_prefix("https://").is_some_and(|rest| {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        !host.is_empty() && !s.chars().any(char::is_whitespace)
    })
}

/// Parses and validates a PUT body into the credential's fields.
fn parse(id: String, name: &str, body: &Value) -> Result<FicRecord, ArmError> {
    check_name(name)?;
    let props = match body.get("properties") {
        None | Some(Value::Null) => &Value::Null,
        Some(p @ Value::Object(_)) => p,
        Some(_) => {
            return Err(ArmError::InvalidRequestContent(
                "properties must be an object".into(),
            ));
        }
    };
    if props
        .get("claimsMatchingExpression")
        .is_some_and(|v| !v.is_null())
    {
        return Err(bad(
            "Property 'claimsMatchingExpression' (flexible federated identity credentials) is not supported by misim; use 'subject'.",
        ));
    }
    let issuer = string_prop(props, "issuer")?.unwrap_or_default();
    if issuer.trim().is_empty() {
        return Err(bad("Property 'issuer' is required."));
    }
    if !is_https_url(issuer) {
        return Err(bad(format!(
            "Invalid issuer '{issuer}': the issuer must be a valid URL using the https scheme."
        )));
    }
    let subject = string_prop(props, "subject")?.unwrap_or_default();
    if subject.is_empty() {
        return Err(bad("Property 'subject' is required."));
    }
    if subject.trim() != subject {
        return Err(bad(
            "Property 'subject' must not begin or end with whitespace.",
        ));
    }
    let audiences = match props.get("audiences") {
        None | Some(Value::Null) => vec![TOKEN_EXCHANGE_AUDIENCE.to_owned()],
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for v in a {
                match v.as_str() {
                    Some(s) if !s.trim().is_empty() => out.push(s.to_owned()),
                    _ => return Err(bad("Property 'audiences' must hold non-empty strings.")),
                }
            }
            match out.len() {
                0 => vec![TOKEN_EXCHANGE_AUDIENCE.to_owned()],
                1 => out,
                _ => return Err(bad("Property 'audiences' can only hold a single value.")),
            }
        }
        Some(_) => {
            return Err(ArmError::InvalidRequestContent(
                "properties.audiences must be an array".into(),
            ));
        }
    };
    check_len("issuer", issuer)?;
    check_len("subject", subject)?;
    check_len("audiences", &audiences[0])?;
    Ok(FicRecord {
        id,
        name: name.to_owned(),
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
        audiences,
    })
}

impl Core {
    fn fic_parent(
        &self,
        sub: &str,
        rg: &str,
        identity: &str,
    ) -> Result<(String, UamiRecord), ArmError> {
        let uami = self.get_uami(sub, rg, identity)?;
        Ok((res_key(sub, rg, Kind::Uami, identity), uami))
    }

    fn fic_not_found(rg: &str, identity: &str, name: &str) -> ArmError {
        ArmError::ResourceNotFound {
            resource_type: FEDERATED_CREDENTIAL_TYPE.into(),
            name: format!("{identity}/{name}"),
            resource_group: rg.into(),
        }
    }

    /// Creates or replaces a federated identity credential and pushes it to
    /// Entra. Acknowledged means Entra has it, or the persisted operation
    /// that puts it there is pending (the reconciler finishes it).
    pub async fn put_fic(
        self: &Arc<Self>,
        sub: &str,
        rg: &str,
        identity: &str,
        name: &str,
        body: &Value,
    ) -> Result<Put<FicRecord>, ArmError> {
        let (key, uami) = self.fic_parent(sub, rg, identity)?;
        let _claim = self.fic_writes.claim(&key, &uami.id)?;
        let rec = parse(
            format!("{}/{FEDERATED_CREDENTIALS}/{name}", uami.id),
            name,
            body,
        )?;
        let lock = self.locks.get(&key);
        let guard = lock.lock().await;
        // The identity may have been deleted (or replaced) while we waited.
        let uami = self
            .uamis
            .get(&key)?
            .ok_or_else(|| Self::not_found(Kind::Uami, rg, identity))?;
        let fk = fic_key(&key, name);
        let others: Vec<FicRecord> = self
            .fics
            .scan_prefix(&fic_prefix(&key))?
            .into_iter()
            .filter(|(k, _)| *k != fk)
            .map(|(_, v)| v)
            .collect();
        let existing = self.fics.get(&fk)?;
        if others
            .iter()
            .any(|o| o.issuer == rec.issuer && o.subject == rec.subject)
        {
            return Err(bad(
                "Issuer and subject combination already exists for this Managed Identity.",
            ));
        }
        if existing.is_none() && others.len() >= MAX_PER_IDENTITY {
            return Err(bad(format!(
                "The managed identity '{}' already has the maximum of {MAX_PER_IDENTITY} federated identity credentials.",
                uami.id
            )));
        }
        // The name keeps the casing it was created with.
        let rec = match &existing {
            Some(e) => FicRecord {
                id: e.id.clone(),
                name: e.name.clone(),
                ..rec
            },
            None => rec,
        };
        if existing.as_ref() == Some(&rec) {
            return Ok((rec, false));
        }
        self.new_fic_op(&key, &uami, &rec).await?;
        self.fics.put(&fk, &rec).await?;
        drop(guard);
        self.drive_inline(&key).await;
        tracing::info!(id = %rec.id, "federated identity credential written");
        Ok((rec, existing.is_none()))
    }

    async fn new_fic_op(
        &self,
        key: &str,
        uami: &UamiRecord,
        rec: &FicRecord,
    ) -> Result<OpRecord, ArmError> {
        self.new_op(
            key,
            &rec.id,
            OpKind::FicSync {
                client_id: uami.credential.client_id.clone(),
                name: rec.name.clone(),
            },
        )
        .await
    }

    /// Reads a federated identity credential.
    pub fn get_fic(
        &self,
        sub: &str,
        rg: &str,
        identity: &str,
        name: &str,
    ) -> Result<FicRecord, ArmError> {
        let (key, _) = self.fic_parent(sub, rg, identity)?;
        self.fics
            .get(&fic_key(&key, name))?
            .ok_or_else(|| Self::fic_not_found(rg, identity, name))
    }

    /// The federated identity credentials of an identity.
    pub fn list_fics(
        &self,
        sub: &str,
        rg: &str,
        identity: &str,
    ) -> Result<Vec<FicRecord>, ArmError> {
        let (key, _) = self.fic_parent(sub, rg, identity)?;
        Ok(self
            .fics
            .scan_prefix(&fic_prefix(&key))?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Deletes a federated identity credential here and (durably) in Entra.
    /// False when it did not exist.
    pub async fn delete_fic(
        self: &Arc<Self>,
        sub: &str,
        rg: &str,
        identity: &str,
        name: &str,
    ) -> Result<bool, ArmError> {
        let (key, uami) = self.fic_parent(sub, rg, identity)?;
        let _claim = self.fic_writes.claim(&key, &uami.id)?;
        let lock = self.locks.get(&key);
        let guard = lock.lock().await;
        let fk = fic_key(&key, name);
        let (Some(uami), Some(rec)) = (self.uamis.get(&key)?, self.fics.get(&fk)?) else {
            return Ok(false);
        };
        self.new_fic_op(&key, &uami, &rec).await?;
        self.fics.remove(&fk).await?;
        drop(guard);
        self.drive_inline(&key).await;
        tracing::info!(id = %rec.id, "federated identity credential deleted");
        Ok(true)
    }

    /// Forgets the credentials of an identity being deleted (Entra deletes
    /// its copies with the principal). Called under the identity's lock.
    pub(crate) async fn forget_fics(&self, uami_key: &str) -> Result<(), ArmError> {
        for (k, _) in self.fics.scan_prefix(&fic_prefix(uami_key))? {
            self.fics.remove(&k).await?;
        }
        Ok(())
    }

    /// Runs a `FicSync` operation: Entra gets the credential ARM holds for
    /// the principal the write was made for, or loses it.
    pub(crate) async fn run_fic_sync(
        &self,
        target: &str,
        client_id: &str,
        name: &str,
    ) -> Result<(), ArmError> {
        let current = self
            .uamis
            .get(target)?
            .filter(|u| u.credential.client_id == client_id)
            .map(|_| self.fics.get(&fic_key(target, name)))
            .transpose()?
            .flatten();
        match current {
            // A principal that is gone took its credentials with it.
            Some(rec) => self
                .peers
                .put_federated_credential(client_id, &rec)
                .await
                .map(drop),
            None => {
                self.peers
                    .delete_federated_credential(client_id, name)
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(p: Value) -> Value {
        json!({ "properties": p })
    }

    #[test]
    fn bodies_are_validated_as_azure_does() {
        let ok = parse(
            "id".into(),
            "fic1",
            &body(json!({"issuer": "https://example.test/x", "subject": "system:serviceaccount:ns:sa"})),
        )
        .unwrap();
        assert_eq!(ok.audiences, vec![TOKEN_EXCHANGE_AUDIENCE]);
        for (name, props) in [
            ("ab", json!({"issuer": "https://i", "subject": "s"})),
            ("-abc", json!({"issuer": "https://i", "subject": "s"})),
            ("a.bc", json!({"issuer": "https://i", "subject": "s"})),
            ("fic1", json!({"issuer": "http://i", "subject": "s"})),
            ("fic1", json!({"issuer": "", "subject": "s"})),
            ("fic1", json!({"issuer": "https://i"})),
            ("fic1", json!({"issuer": "https://i", "subject": " s"})),
            (
                "fic1",
                json!({"issuer": "https://i", "subject": "s", "audiences": ["a", "b"]}),
            ),
            (
                "fic1",
                json!({"issuer": "https://i", "claimsMatchingExpression": {"value": "x", "languageVersion": 1}}),
            ),
        ] {
            let e = parse("id".into(), name, &body(props.clone())).unwrap_err();
            assert_eq!(e.arm_code(), "BadRequest", "{name} {props}");
        }
        assert!(check_name(&"a".repeat(120)).is_ok());
        assert!(check_name(&"a".repeat(121)).is_err());
    }

    #[test]
    fn api_versions_before_the_resource_existed_are_refused() {
        for v in [
            "2022-01-31-preview",
            "2023-01-31",
            "2024-11-30",
            "2025-01-31-preview",
        ] {
            assert!(api_version_ok(v).is_ok(), "{v}");
        }
        for v in ["2018-11-30", "2021-09-30-preview", ""] {
            assert_eq!(
                api_version_ok(v).unwrap_err().arm_code(),
                "NoRegisteredProviderFound"
            );
        }
    }
}
