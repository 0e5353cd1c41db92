//! User-assigned identities, and the credentials ARM makes as the
//! managed-identity resource provider (step 2: a principal in Entra, a
//! P-256 key and self-signed certificate registered with it; renewed by `renewal`).

use std::sync::Arc;

use misim_types::ResourceId;
use serde_json::Value;

use super::renewal::CERT_VALIDITY;
use super::{Core, Put, location_of, res_key, tags_of};
use crate::error::ArmError;
use crate::peers::Principal;
use crate::records::*;
use crate::resource::Kind;

/// Whether a principal has the ids a credential was made for.
pub(crate) fn same_ids(sp: &Principal, c: &Credential) -> bool {
    sp.object_id.eq_ignore_ascii_case(&c.principal_id)
        && sp.app_id.eq_ignore_ascii_case(&c.client_id)
}

impl Core {
    /// Creates a managed-identity service principal (idempotent by
    /// `request_id`) with a fresh certificate: one call to Entra, which
    /// creates the principal with the ids ARM chose and registers the
    /// certificate made for them in the same write. Nothing needs persisting
    /// first: a user-assigned identity's create is not resumed, its operation
    /// only deletes a principal that no record took.
    pub(crate) async fn provision(
        &self,
        display_name: &str,
        resource_id: &str,
        request_id: &str,
    ) -> Result<Credential, ArmError> {
        let proposed = self.proposed_credential().await?;
        let (sp, registered) = self
            .peers
            .create_principal_with(request_id, display_name, resource_id, &proposed)
            .await?;
        if registered {
            return Ok(proposed);
        }
        let c = if same_ids(&sp, &proposed) {
            proposed
        } else {
            self.new_credential(&sp).await?
        };
        self.peers.register_certificate(&c).await?;
        Ok(c)
    }

    /// A key and certificate for a principal not created yet, under ids ARM
    /// picks (fresh GUIDs); Entra gives the principal these ids unless a
    /// reservation (`misim apply`) pins others for the identity.
    pub(crate) async fn proposed_credential(&self) -> Result<Credential, ArmError> {
        self.new_credential(&Principal {
            object_id: self.ids.guid(),
            app_id: self.ids.guid(),
        })
        .await
    }

    /// A new key and certificate for a principal (not yet registered).
    pub(crate) async fn new_credential(&self, sp: &Principal) -> Result<Credential, ArmError> {
        let now = self.clock.now();
        let cn = sp.app_id.clone();
        let cert = tokio::task::spawn_blocking(move || {
            misim_token::cert::generate_ec_cert(&cn, now, now + CERT_VALIDITY)
        })
        .await
        .map_err(|e| ArmError::Internal(e.to_string()))?
        .map_err(|e| ArmError::Internal(e.to_string()))?;
        let not_before = misim_types::unix_seconds(now);
        let validity = (not_before, misim_types::unix_seconds(now + CERT_VALIDITY));
        self.renewal
            .note_due(not_before + super::renewal::RENEW_AFTER.as_secs() as i64)?;
        Ok(Credential {
            principal_id: sp.object_id.clone(),
            client_id: sp.app_id.clone(),
            certificate_pem: cert.certificate_pem,
            private_key_pem: cert.private_key_pem,
            validity: Some(validity),
            retired: Vec::new(),
        })
    }

    // ------------------------------------------------------------- UAMIs

    /// Creates (provisioning its principal) or updates a user-assigned identity.
    pub async fn put_uami(
        self: &Arc<Self>,
        sub: &str,
        rg: &str,
        name: &str,
        body: &Value,
    ) -> Result<Put<UamiRecord>, ArmError> {
        let group = self.require_rg(sub, rg)?;
        let key = res_key(sub, rg, Kind::Uami, name);
        let lock = self.locks.get(&key);
        let guard = lock.lock().await;
        // Under the lock: a certificate renewal rewrites the record too.
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
        // Intent first: if the principal is created but the record is not
        // written, the reconciler deletes it again.
        let request_id = self.ids.guid();
        let mut op = self
            .new_op(
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
        // The record owns the principal now, which is all the operation was
        // to make sure of: it ends with the record, in the same flush.
        let _recorded = self.uamis.put_deferred(&key, &rec)?;
        self.finish_op(&mut op, OpStatus::Succeeded, None).await?;
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

    pub(crate) fn uami_by_id(&self, id: &str) -> Result<Option<UamiRecord>, ArmError> {
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
    pub async fn delete_uami(
        self: &Arc<Self>,
        sub: &str,
        rg: &str,
        name: &str,
    ) -> Result<bool, ArmError> {
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
        self.forget_fics(&key).await?;
        self.uamis.remove(&key).await?;
        drop(guard);
        self.drive_inline(&key).await;
        tracing::info!(id = %rec.id, "user-assigned identity deleted");
        Ok(true)
    }
}
