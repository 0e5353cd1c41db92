//! The tenant's service principals in the store: principals by object id,
//! plus the indexes app id → object id and request id → object id.

use std::collections::{HashMap, HashSet};

use misim_store::{Durable, Store, Table};
use misim_types::{ResourceId, SharedClock, SharedIds};

use super::application::Application;
use super::principal::{KeyCredential, Principal, PrincipalKind, mi_alternative_names};
use crate::EntraError;

/// A principal to create.
#[derive(Debug, Clone)]
pub(crate) struct NewPrincipal {
    /// Idempotency key.
    pub request_id: String,
    /// Display name.
    pub display_name: String,
    /// Kind.
    pub kind: PrincipalKind,
    /// Required for managed identities.
    pub managed_identity_resource_id: Option<ResourceId>,
    /// The ids the caller chose for a new principal (lower-case GUIDs), if
    /// any; a reservation for the identity wins over them.
    pub ids: Option<ChosenIds>,
    /// A certificate to register in the same write (DER, parsed), if any.
    pub certificate: Option<(Vec<u8>, misim_token::cert::CertInfo)>,
}

/// The ids a caller of `create` chose (ARM picks them so that it can make the
/// certificate, whose subject is the app id, before the call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChosenIds {
    /// App (client) id, lower case.
    pub app_id: String,
    /// Object id, lower case.
    pub object_id: String,
}

/// An application with a known id and secret (bootstrap).
#[derive(Debug, Clone)]
pub(crate) struct EnsureApp<'a> {
    /// App id.
    pub app_id: &'a str,
    /// Object id.
    pub object_id: &'a str,
    /// Display name.
    pub display_name: &'a str,
    /// Client secret (hashed before it is stored).
    pub secret: &'a str,
}

/// Principals and their indexes.
#[derive(Debug)]
pub(crate) struct Directory {
    /// Principals by object id, read through a cache (token requests read one each).
    pub(super) principals: super::principal_cache::PrincipalTable,
    pub(super) by_app: Table<String>,
    /// What `by_app` answered before, app id → object id (both lower-cased),
    /// checked against the principal on every use (see [`Directory::get_by_app`]).
    app_ids: parking_lot::RwLock<HashMap<String, String>>,
    by_request: Table<String>,
    /// Graph applications by object id.
    pub(super) applications: Table<Application>,
    /// Application app id → application object id.
    pub(super) apps_by_app_id: Table<String>,
    /// Graph application permissions by principal object id (the admin has all).
    pub(super) graph_permissions: Table<super::graph_permission::GraphPermission>,
    /// Ids the sandbox owner pinned for managed identities not yet created, by
    /// lower-cased identity resource id (`pinned_ids.rs`).
    pub(super) reservations: Table<super::pinned_ids::Reservation>,
    /// Serialises writes so index updates never interleave.
    pub(super) write: tokio::sync::Mutex<()>,
    pub(super) clock: SharedClock,
    pub(super) ids: SharedIds,
}

/// App ids [`Directory::get_by_app`] remembers at most (as many as the
/// principal cache holds); past it, it starts over.
const APP_IDS_MAX: usize = 4096;

pub(super) fn key(id: &str) -> String {
    id.to_ascii_lowercase()
}

/// The fields of a principal or an application that its indexes hold (a
/// read-only view for [`Directory::repair_indexes`]).
#[derive(serde::Deserialize)]
struct IndexedFields {
    app_id: String,
    #[serde(default)]
    request_id: Option<String>,
}

/// Upper-case hex SHA-256 of a secret.
pub(crate) fn hash_secret(secret: &str) -> String {
    misim_token::hex_upper(&misim_token::sha256(secret.as_bytes()))
}

impl Directory {
    pub(crate) fn open(
        store: &Store,
        clock: SharedClock,
        ids: SharedIds,
    ) -> Result<Self, EntraError> {
        Ok(Self {
            principals: super::principal_cache::PrincipalTable::new(store.table("principals")?),
            by_app: store.table("principals_by_app_id")?,
            app_ids: parking_lot::RwLock::default(),
            by_request: store.table("principals_by_request_id")?,
            applications: store.table("applications")?,
            apps_by_app_id: store.table("applications_by_app_id")?,
            graph_permissions: store.table("graph_permissions")?,
            reservations: store.table("managed_identity_id_reservations")?,
            write: tokio::sync::Mutex::new(()),
            clock,
            ids,
        })
    }

    /// Restores index entries a crash left unwritten: `create` writes the
    /// principal before its app-id and request-id indexes (and applications
    /// go before theirs), so a record may lack them. Without this, a retried create (same request id) would make
    /// a second principal and orphan the first. Runs at open, before any request.
    pub(crate) async fn repair_indexes(&self) -> Result<usize, EntraError> {
        // One pass over each table, decoding only the fields the indexes
        // hold: with 100,000 identities this runs on every start
        // (docs/performance.md finding 9).
        let by_app: HashSet<String> = self.by_app.keys()?.into_iter().collect();
        let by_request: HashSet<String> = self.by_request.keys()?.into_iter().collect();
        let mut repaired = 0;
        for (oid, p) in self.principals.all_as::<IndexedFields>()? {
            if !by_app.contains(&key(&p.app_id)) {
                self.by_app.put(&key(&p.app_id), &oid).await?;
                repaired += 1;
            }
            if let Some(r) = &p.request_id
                && !by_request.contains(&key(r))
            {
                self.by_request.put(&key(r), &oid).await?;
                repaired += 1;
            }
        }
        let apps_by_app_id: HashSet<String> = self.apps_by_app_id.keys()?.into_iter().collect();
        for (oid, a) in self.applications.all_as::<IndexedFields>()? {
            if !apps_by_app_id.contains(&key(&a.app_id)) {
                self.apps_by_app_id.put(&key(&a.app_id), &oid).await?;
                repaired += 1;
            }
        }
        if repaired > 0 {
            tracing::warn!(repaired, "directory index entries restored after a crash");
        }
        Ok(repaired)
    }

    pub(crate) fn get(&self, object_id: &str) -> Result<Option<Principal>, EntraError> {
        Ok(self.principals.get(&key(object_id))?)
    }

    /// The principal with this app (client) id.
    ///
    /// Every token request asks this. The app id's object id is remembered, and
    /// trusted only while the principal it names exists with this app id: an
    /// app id belongs to one principal for the principal's whole life, so the
    /// answer is what the index would say, without its store read.
    pub(crate) fn get_by_app(&self, app_id: &str) -> Result<Option<Principal>, EntraError> {
        let app_key = key(app_id);
        let remembered = self.app_ids.read().get(&app_key).cloned();
        if let Some(oid) = remembered
            && let Some(p) = self.get(&oid)?
            && p.app_id.eq_ignore_ascii_case(app_id)
        {
            return Ok(Some(p));
        }
        let Some(oid) = self.by_app.get(&app_key)? else {
            return Ok(None);
        };
        let found = self.get(&oid)?;
        if found.is_some() {
            let mut ids = self.app_ids.write();
            if ids.len() >= APP_IDS_MAX {
                ids.clear();
            }
            ids.insert(app_key, oid);
        }
        Ok(found)
    }

    pub(crate) fn list(&self) -> Result<Vec<Principal>, EntraError> {
        Ok(self.principals.all()?.into_iter().map(|(_, p)| p).collect())
    }

    /// At most `limit` principals whose keys sort after `after`, in key
    /// order, and the last one's key when more follow (the next page's `after`).
    pub(crate) fn list_page(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<Principal>, Option<String>), EntraError> {
        let (page, more) = self.principals.page_after(after, limit.max(1))?;
        let next = more.then(|| page.last().map(|(k, _)| k.clone())).flatten();
        Ok((page.into_iter().map(|(_, p)| p).collect(), next))
    }

    /// Creates a principal, or returns the one created earlier with the same request id.
    ///
    /// The writes are applied under the write lock and awaited after it is
    /// released (misim_store's deferred acknowledgement), so concurrent
    /// creates share one flush instead of queueing one flush each.
    pub(crate) async fn create(&self, new: NewPrincipal) -> Result<Principal, EntraError> {
        let (p, durable) = {
            let _w = self.write.lock().await;
            self.create_locked(new)?
        };
        durable.await?;
        Ok(p)
    }

    /// `create`'s work under the write lock: the principal and the ticket to
    /// await before returning it (for a retry, one covering what it read).
    ///
    /// The request's certificate is registered (in the principal's own write)
    /// only on a principal whose app id is the one the request chose, or when
    /// it chose none: the certificate's subject names the app id the caller
    /// chose, so when a reservation replaced the ids the caller gets the
    /// principal without it and registers one made for the reserved id.
    fn create_locked(&self, new: NewPrincipal) -> Result<(Principal, Durable), EntraError> {
        let takes_cert = |p: &Principal| {
            new.ids
                .as_ref()
                .is_none_or(|ids| p.app_id.eq_ignore_ascii_case(&ids.app_id))
        };
        if let Some(oid) = self.by_request.get(&key(&new.request_id))?
            && let Some(mut p) = self.get(&oid)?
        {
            // A retry: the principal of the first call, with the certificate
            // registered if the first call's write did not (a caller that
            // resumes with the same request id and certificate, or an older
            // caller's principal that the certificate is now sent with).
            if let Some((der, info)) = &new.certificate
                && takes_cert(&p)
                && !p.has_certificate(&info.sha1)
            {
                p.key_credentials.push(self.key_credential(der, info));
                let durable = self.principals.put_deferred(&key(&p.object_id), &p)?;
                return Ok((p, durable));
            }
            return Ok((p, self.principals.visible()));
        }
        let (alternative_names, mi_id) = match (new.kind, &new.managed_identity_resource_id) {
            (PrincipalKind::ManagedIdentity, Some(id)) => {
                (mi_alternative_names(id), Some(id.as_str().to_owned()))
            }
            (PrincipalKind::ManagedIdentity, None) => {
                return Err(EntraError::InvalidRequest(
                    "managed_identity_resource_id is required for a managed identity".into(),
                ));
            }
            (PrincipalKind::Application, _) => (Vec::new(), None),
        };
        let pinned = match &mi_id {
            Some(id) => self.reserved_for(id)?,
            None => None,
        };
        let (object_id, app_id) = match (&pinned, &new.ids) {
            (Some(r), _) => (r.object_id.clone(), r.app_id.clone()),
            (None, Some(ids)) => {
                self.check_ids_free(&ids.app_id, &ids.object_id)?;
                self.check_ids_unreserved(&ids.app_id, &ids.object_id)?;
                (ids.object_id.clone(), ids.app_id.clone())
            }
            (None, None) => (self.ids.guid(), self.ids.guid()),
        };
        let mut p = Principal {
            object_id,
            app_id,
            display_name: new.display_name,
            kind: new.kind,
            alternative_names,
            created_unix: self.clock.unix(),
            managed_identity_resource_id: mi_id,
            request_id: Some(new.request_id.clone()),
            secret_sha256: None,
            key_credentials: Vec::new(),
            application_object_id: None,
            federated_credentials: Vec::new(),
        };
        if let Some((der, info)) = &new.certificate
            && takes_cert(&p)
        {
            p.key_credentials.push(self.key_credential(der, info));
        }
        // Principal first, indexes after: an index never points at nothing
        // that a retry could not repair. The last ticket covers all of them,
        // and a crash keeps a prefix of them, as if each had been awaited.
        let _ = self.principals.put_deferred(&key(&p.object_id), &p)?;
        let _ = self
            .by_app
            .put_deferred(&key(&p.app_id), &key(&p.object_id))?;
        let mut durable = self
            .by_request
            .put_deferred(&key(&new.request_id), &key(&p.object_id))?;
        if let Some(r) = pinned {
            durable = self.release(&r.resource_id)?;
        }
        Ok((p, durable))
    }

    /// Creates or updates an application principal with fixed ids and a secret.
    pub(crate) async fn ensure_application(
        &self,
        app: EnsureApp<'_>,
    ) -> Result<Principal, EntraError> {
        let _w = self.write.lock().await;
        if let Some(other) = self.by_app.get(&key(app.app_id))?
            && other != key(app.object_id)
        {
            return Err(EntraError::Conflict(format!(
                "app id {} belongs to service principal {other}",
                app.app_id
            )));
        }
        let p = match self.get(app.object_id)? {
            Some(existing) => {
                if existing.kind != PrincipalKind::Application
                    || !existing.app_id.eq_ignore_ascii_case(app.app_id)
                {
                    return Err(EntraError::Conflict(format!(
                        "object id {} belongs to another service principal",
                        app.object_id
                    )));
                }
                Principal {
                    display_name: app.display_name.to_owned(),
                    secret_sha256: Some(hash_secret(app.secret)),
                    ..existing
                }
            }
            None => Principal {
                object_id: app.object_id.to_owned(),
                app_id: app.app_id.to_owned(),
                display_name: app.display_name.to_owned(),
                kind: PrincipalKind::Application,
                alternative_names: Vec::new(),
                created_unix: self.clock.unix(),
                managed_identity_resource_id: None,
                request_id: None,
                secret_sha256: Some(hash_secret(app.secret)),
                key_credentials: Vec::new(),
                application_object_id: None,
                federated_credentials: Vec::new(),
            },
        };
        self.principals.put(&key(&p.object_id), &p).await?;
        self.by_app.put(&key(&p.app_id), &key(&p.object_id)).await?;
        Ok(p)
    }

    /// Deletes a principal, its indexes and credentials. False when absent.
    pub(crate) async fn delete(&self, object_id: &str) -> Result<bool, EntraError> {
        let _w = self.write.lock().await;
        let Some(p) = self.get(object_id)? else {
            return Ok(false);
        };
        self.remove_principal(&p).await?;
        Ok(true)
    }

    /// Removes `p` and its indexes; the caller holds the write lock.
    pub(super) async fn remove_principal(&self, p: &Principal) -> Result<(), EntraError> {
        // Indexes first, so a crash midway leaves an unreachable record rather
        // than a reachable half-deleted one. All three are applied before the
        // first await (the last ticket covers them): a caller that goes away
        // (its gRPC stream reset) drops this future, and must not leave the
        // principal without its indexes until the next restart repairs them;
        // a create by the same request id would then not find it.
        let _ = self.by_app.remove_deferred(&key(&p.app_id))?;
        if let Some(r) = &p.request_id {
            let _ = self.by_request.remove_deferred(&key(r))?;
        }
        let (_, durable) = self.principals.remove_deferred(&key(&p.object_id))?;
        durable.await?;
        Ok(())
    }

    /// Registers a certificate; idempotent on its thumbprint.
    pub(crate) async fn add_key_credential(
        &self,
        object_id: &str,
        der: &[u8],
    ) -> Result<KeyCredential, EntraError> {
        let info = misim_token::cert::parse_cert(der)
            .map_err(|e| EntraError::BadCertificate(e.to_string()))?;
        let (k, durable) = {
            let _w = self.write.lock().await;
            self.add_key_credential_locked(object_id, der, info)?
        };
        // Awaited without the lock, as in `create`.
        durable.await?;
        Ok(k)
    }

    fn add_key_credential_locked(
        &self,
        object_id: &str,
        der: &[u8],
        info: misim_token::cert::CertInfo,
    ) -> Result<(KeyCredential, Durable), EntraError> {
        let mut p = self
            .get(object_id)?
            .ok_or_else(|| EntraError::PrincipalNotFound(object_id.to_owned()))?;
        let sha1 = misim_token::hex_upper(&info.sha1);
        if let Some(k) = p.key_credentials.iter().find(|k| k.thumbprint_sha1 == sha1) {
            return Ok((k.clone(), self.principals.visible()));
        }
        let k = self.key_credential(der, &info);
        p.key_credentials.push(k.clone());
        let durable = self.principals.put_deferred(&key(&p.object_id), &p)?;
        Ok((k, durable))
    }

    /// A new key credential for a parsed certificate.
    fn key_credential(&self, der: &[u8], info: &misim_token::cert::CertInfo) -> KeyCredential {
        KeyCredential {
            key_id: self.ids.guid(),
            certificate_der: der.to_vec(),
            rsa_public_key: info.public_key.clone(),
            thumbprint_sha1: misim_token::hex_upper(&info.sha1),
            thumbprint_sha256: misim_token::hex_upper(&info.sha256),
            start_unix: info.not_before,
            end_unix: info.not_after,
            display_name: None,
        }
    }

    /// Removes a certificate by its SHA-1 thumbprint (any case); false when
    /// the principal has none with it, so a retried removal succeeds.
    pub(crate) async fn remove_key_credential(
        &self,
        object_id: &str,
        thumbprint_sha1: &str,
    ) -> Result<bool, EntraError> {
        let _w = self.write.lock().await;
        let mut p = self
            .get(object_id)?
            .ok_or_else(|| EntraError::PrincipalNotFound(object_id.to_owned()))?;
        let before = p.key_credentials.len();
        p.key_credentials
            .retain(|k| !k.thumbprint_sha1.eq_ignore_ascii_case(thumbprint_sha1));
        if p.key_credentials.len() == before {
            return Ok(false);
        }
        self.principals.put(&key(&p.object_id), &p).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn mi(request_id: &str) -> NewPrincipal {
        NewPrincipal {
            request_id: request_id.into(),
            display_name: "vm1".into(),
            kind: PrincipalKind::ManagedIdentity,
            managed_identity_resource_id: Some(
                misim_types::ResourceId::parse(
                    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
                )
                .unwrap(),
            ),
            ids: None,
            certificate: None,
        }
    }

    /// `get_by_app` remembers an app id's object id; once that principal is
    /// deleted, its object id given to a principal with another app id, and its
    /// app id to a principal with another object id (ids the caller chose), each
    /// app id finds its own principal.
    #[tokio::test]
    async fn a_remembered_app_id_follows_ids_given_again() {
        let d = Directory::open(
            &Store::memory().unwrap(),
            Arc::new(misim_types::ManualClock::at_unix(1_700_000_000)),
            Arc::new(misim_types::SeqIds::new(1)),
        )
        .unwrap();
        let (app_a, app_b) = (
            "aaaaaaaa-0000-4000-8000-000000000001",
            "bbbbbbbb-0000-4000-8000-000000000002",
        );
        let (oid_1, oid_2) = (
            "00000000-0000-4000-8000-0000000000a1",
            "00000000-0000-4000-8000-0000000000a2",
        );
        let with_ids = |request_id: &str, app_id: &str, object_id: &str| NewPrincipal {
            ids: Some(ChosenIds {
                app_id: app_id.into(),
                object_id: object_id.into(),
            }),
            ..mi(request_id)
        };
        let found =
            |d: &Directory, app_id: &str| d.get_by_app(app_id).unwrap().map(|p| p.object_id);
        d.create(with_ids("r1", &app_a.to_uppercase(), oid_1))
            .await
            .unwrap();
        assert_eq!(found(&d, app_a).as_deref(), Some(oid_1));
        assert!(d.delete(oid_1).await.unwrap());
        assert_eq!(found(&d, app_a), None, "a deleted principal is not found");

        d.create(with_ids("r2", app_b, oid_1)).await.unwrap();
        assert_eq!(
            found(&d, app_a),
            None,
            "its object id now has another app id"
        );
        assert_eq!(found(&d, app_b).as_deref(), Some(oid_1));

        d.create(with_ids("r3", app_a, oid_2)).await.unwrap();
        assert_eq!(found(&d, app_a).as_deref(), Some(oid_2));
    }

    /// A crash between writing a principal and its indexes must not let the
    /// retried create (same request id) make a second principal.
    #[tokio::test]
    async fn a_create_cut_short_by_a_crash_is_found_again_after_reopen() {
        let store = Store::memory().unwrap();
        let open = || {
            Directory::open(
                &store,
                Arc::new(misim_types::ManualClock::at_unix(1_700_000_000)),
                Arc::new(misim_types::SeqIds::new(1)),
            )
            .unwrap()
        };
        let d = open();
        let first = d.create(mi("op-1-sami")).await.unwrap();
        // What a crash right after the principal write leaves behind.
        d.by_request.remove(&key("op-1-sami")).await.unwrap();
        d.by_app.remove(&key(&first.app_id)).await.unwrap();

        let d = open();
        assert_eq!(d.repair_indexes().await.unwrap(), 2);
        let again = d.create(mi("op-1-sami")).await.unwrap();
        assert_eq!(again.object_id, first.object_id);
        assert_eq!(d.list().unwrap().len(), 1);
        assert_eq!(
            d.get_by_app(&first.app_id).unwrap().map(|p| p.object_id),
            Some(first.object_id)
        );
        assert_eq!(
            d.repair_indexes().await.unwrap(),
            0,
            "nothing left to repair"
        );
    }
}
