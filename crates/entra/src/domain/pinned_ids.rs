//! Ids the sandbox owner pins for a managed identity's service principal before ARM
//! creates it (`misim apply` with a scenario's fixed client and object ids): one
//! reservation per identity resource id, consumed by `Directory::create`.

use serde::{Deserialize, Serialize};

use super::directory::{Directory, key};
use super::principal::PrincipalKind;
use crate::EntraError;

/// The ids a managed identity's principal gets when it is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Reservation {
    /// The identity's ARM resource id (original casing).
    pub resource_id: String,
    /// App (client) id, lower case.
    pub app_id: String,
    /// Object id, lower case.
    pub object_id: String,
}

/// What a reservation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reserved {
    /// The identity's principal exists with exactly these ids.
    Existing,
    /// Kept for the principal's creation.
    Pending,
}

impl Directory {
    /// Pins `r`'s ids for the principal of `r.resource_id`. Refuses ids that another
    /// principal, application or reservation holds, and an existing principal of the
    /// identity with other ids (its ids cannot change; delete the identity first).
    pub(crate) async fn reserve_ids(&self, r: Reservation) -> Result<Reserved, EntraError> {
        let _w = self.write.lock().await;
        let rid = key(&r.resource_id);
        let of_identity = |mi: &Option<String>| mi.as_deref().is_some_and(|m| key(m) == rid);
        if let Some(p) = self.list()?.into_iter().find(|p| {
            p.kind == PrincipalKind::ManagedIdentity && of_identity(&p.managed_identity_resource_id)
        }) {
            return if key(&p.app_id) == r.app_id && key(&p.object_id) == r.object_id {
                Ok(Reserved::Existing)
            } else {
                Err(EntraError::Conflict(format!(
                    "the managed identity {} already exists with client id {} and object id {}; \
                     its ids cannot change (delete it first)",
                    r.resource_id, p.app_id, p.object_id
                )))
            };
        }
        self.check_ids_free(&r.app_id, &r.object_id)?;
        for (other_rid, other) in self.reservations.all()? {
            if other_rid != rid && (other.app_id == r.app_id || other.object_id == r.object_id) {
                return Err(EntraError::Conflict(format!(
                    "client id {} or object id {} is already reserved for {}",
                    r.app_id, r.object_id, other.resource_id
                )));
            }
        }
        self.reservations.put(&rid, &r).await?;
        Ok(Reserved::Pending)
    }

    /// Refuses ids that a principal or an application already holds.
    pub(super) fn check_ids_free(&self, app_id: &str, object_id: &str) -> Result<(), EntraError> {
        let taken = |what: &str, id: &str, by: &str| {
            Err(EntraError::Conflict(format!(
                "{what} {id} is already used by {by}"
            )))
        };
        if let Some(p) = self.get(object_id)? {
            return taken(
                "object id",
                object_id,
                &format!("service principal {}", p.object_id),
            );
        }
        if let Some(p) = self.get_by_app(app_id)? {
            return taken(
                "client id",
                app_id,
                &format!("service principal {}", p.object_id),
            );
        }
        if self.applications.get(&key(object_id))?.is_some() {
            return taken("object id", object_id, "an application");
        }
        if self.apps_by_app_id.get(&key(app_id))?.is_some() {
            return taken("client id", app_id, "an application");
        }
        Ok(())
    }

    /// Refuses ids that a reservation holds (ids a caller of `create` chose
    /// for an identity that has no reservation of its own).
    pub(super) fn check_ids_unreserved(
        &self,
        app_id: &str,
        object_id: &str,
    ) -> Result<(), EntraError> {
        for (_, other) in self.reservations.all()? {
            if other.app_id.eq_ignore_ascii_case(app_id)
                || other.object_id.eq_ignore_ascii_case(object_id)
            {
                return Err(EntraError::Conflict(format!(
                    "client id {app_id} or object id {object_id} is reserved for {}",
                    other.resource_id
                )));
            }
        }
        Ok(())
    }

    /// The ids reserved for the identity `resource_id`, if any, checked free again.
    pub(super) fn reserved_for(
        &self,
        resource_id: &str,
    ) -> Result<Option<Reservation>, EntraError> {
        let Some(r) = self.reservations.get(&key(resource_id))? else {
            return Ok(None);
        };
        self.check_ids_free(&r.app_id, &r.object_id)?;
        Ok(Some(r))
    }

    /// Drops a consumed reservation (after the principal and its indexes are
    /// written); the caller awaits the ticket.
    pub(super) fn release(&self, resource_id: &str) -> Result<misim_store::Durable, EntraError> {
        let (_, durable) = self.reservations.remove_deferred(&key(resource_id))?;
        Ok(durable)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use misim_store::Store;

    use super::*;
    use crate::domain::directory::NewPrincipal;

    const UAMI: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1";
    const APP: &str = "11111111-1111-4111-8111-111111111111";
    const OBJ: &str = "22222222-2222-4222-8222-222222222222";

    fn directory() -> Directory {
        Directory::open(
            &Store::memory().unwrap(),
            Arc::new(misim_types::ManualClock::at_unix(1_700_000_000)),
            Arc::new(misim_types::SeqIds::new(1)),
        )
        .unwrap()
    }

    fn reservation(rid: &str, app: &str, obj: &str) -> Reservation {
        Reservation {
            resource_id: rid.into(),
            app_id: app.into(),
            object_id: obj.into(),
        }
    }

    fn create(rid: &str, request: &str) -> NewPrincipal {
        NewPrincipal {
            request_id: request.into(),
            display_name: "id1".into(),
            kind: PrincipalKind::ManagedIdentity,
            managed_identity_resource_id: Some(misim_types::ResourceId::parse(rid).unwrap()),
            ids: None,
            certificate: None,
        }
    }

    #[tokio::test]
    async fn a_reserved_identity_is_created_with_its_ids_once() {
        let d = directory();
        let r = reservation(UAMI, APP, OBJ);
        assert_eq!(d.reserve_ids(r.clone()).await.unwrap(), Reserved::Pending);
        let p = d.create(create(UAMI, "op-1")).await.unwrap();
        assert_eq!((p.app_id.as_str(), p.object_id.as_str()), (APP, OBJ));
        assert_eq!(d.reserve_ids(r).await.unwrap(), Reserved::Existing);
        // Consumed: the next identity of another name gets generated ids.
        let other = UAMI.replace("id1", "id2");
        let q = d.create(create(&other, "op-2")).await.unwrap();
        assert_ne!(q.object_id, OBJ);
    }

    #[tokio::test]
    async fn taken_ids_and_changed_ids_are_refused() {
        let d = directory();
        let p = d.create(create(UAMI, "op-1")).await.unwrap();
        let other = UAMI.replace("id1", "id2");
        let e = d
            .reserve_ids(reservation(&other, APP, &p.object_id))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("already used by service principal"),
            "{e}"
        );
        let e = d
            .reserve_ids(reservation(UAMI, APP, OBJ))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("its ids cannot change"), "{e}");
        d.reserve_ids(reservation(&other, APP, OBJ)).await.unwrap();
        let third = UAMI.replace("id1", "id3");
        let e = d
            .reserve_ids(reservation(&third, APP, OBJ))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("already reserved for"), "{e}");
        assert_eq!(d.list().unwrap().len(), 1, "refusals created nothing");
    }
}
