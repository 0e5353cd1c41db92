//! `misim.entra.v1.Directory`: the only module that sees the generated types.

use misim_proto::auth::Caller;
use misim_proto::entra::v1 as pb;
use misim_proto::required;
use misim_types::ResourceId;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::domain::directory::{ChosenIds, EnsureApp, NewPrincipal, hash_secret};
use crate::domain::federation::{CredentialInput, FederatedCredential, Owner};
use crate::domain::principal::{KeyCredential, Principal, PrincipalKind};
use crate::domain::tokens::ClientCredential;
use crate::{Entra, EntraError};

fn key_to_pb(k: &KeyCredential) -> pb::KeyCredential {
    pb::KeyCredential {
        key_id: k.key_id.clone(),
        certificate_der: k.certificate_der.clone(),
        thumbprint_sha1: k.thumbprint_sha1.clone(),
        start_unix: k.start_unix,
        end_unix: k.end_unix,
    }
}

fn principal_to_pb(p: &Principal) -> pb::ServicePrincipal {
    pb::ServicePrincipal {
        object_id: p.object_id.clone(),
        app_id: p.app_id.clone(),
        display_name: p.display_name.clone(),
        r#type: match p.kind {
            PrincipalKind::Application => pb::ServicePrincipalType::Application,
            PrincipalKind::ManagedIdentity => pb::ServicePrincipalType::ManagedIdentity,
        } as i32,
        alternative_names: p.alternative_names.clone(),
        key_credentials: p.key_credentials.iter().map(key_to_pb).collect(),
        created_unix: p.created_unix,
        managed_identity_resource_id: p.managed_identity_resource_id.clone().unwrap_or_default(),
    }
}

/// A GUID field of a request, lower-cased; INVALID_ARGUMENT otherwise.
fn guid(field: &str, v: &str) -> Result<String, Status> {
    if crate::config::is_guid(v) {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(Status::invalid_argument(format!(
            "{field} {v:?} is not a GUID"
        )))
    }
}

fn fic_to_pb(c: &FederatedCredential) -> pb::FederatedCredential {
    pb::FederatedCredential {
        id: c.id.clone(),
        name: c.name.clone(),
        issuer: c.issuer.clone(),
        subject: c.subject.clone(),
        audiences: c.audiences.clone(),
        description: c.description.clone().unwrap_or_default(),
    }
}

/// Logs an error where it is handled (server faults at ERROR, client mistakes
/// at INFO) and maps it to a status carrying its AADSTS code as the
/// `ErrorInfo` reason (see `From<EntraError> for Status`).
fn status(method: &'static str, e: EntraError) -> Status {
    match e.code() {
        misim_types::ErrorCode::Internal | misim_types::ErrorCode::Unavailable => {
            tracing::error!(method, error = %e, "directory call failed");
        }
        _ => tracing::info!(method, error = %e, "directory call refused"),
    }
    e.into()
}

/// Who may call each `Directory` method, besides the sandbox owner (`admin`,
/// who may call everything). Only ARM, as the managed-identity resource
/// provider, manages managed-identity principals and their certificates;
/// only IMDS redeems client assertions; services that verify tokens read the
/// signing keys. `CreateApplication` (a principal with a secret),
/// `EnsureApplication` and `ReserveManagedIdentityIds` (pinning the ids a new
/// managed identity gets) are for the sandbox owner only.
pub(crate) fn allowed(method: &str) -> &'static [Caller] {
    use Caller::{Arm, Imds, KeyVault};
    match method {
        "GetTenant" | "GetSigningKeys" => &[Arm, Imds, KeyVault],
        "CreateServicePrincipal"
        | "GetServicePrincipal"
        | "ListServicePrincipals"
        | "DeleteServicePrincipal"
        | "AddKeyCredential"
        | "RemoveKeyCredential" => &[Arm],
        "IssueToken" => &[Imds],
        _ => &[],
    }
}

/// Who may call each `Federation` method, besides the sandbox owner: ARM,
/// the managed-identity resource provider, pushes the federated credentials
/// of user-assigned identities; the external issuers' keys (`PutIssuerKeys`,
/// ...) are the sandbox owner's alone.
pub(crate) fn federation_allowed(method: &str) -> &'static [Caller] {
    match method {
        "PutFederatedCredential" | "DeleteFederatedCredential" | "ListFederatedCredentials" => {
            &[Caller::Arm]
        }
        _ => &[],
    }
}

impl Entra {
    fn directory(&self) -> &crate::domain::directory::Directory {
        &self.inner.directory
    }
}

#[tonic::async_trait]
impl pb::directory_server::Directory for Entra {
    async fn get_tenant(
        &self,
        _: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let c = &self.inner.config;
        Ok(Response::new(pb::Tenant {
            tenant_id: c.tenant_id.clone(),
            issuer_v1: c.issuer_v1(),
            issuer_v2: c.issuer_v2(),
        }))
    }

    async fn create_service_principal(
        &self,
        request: Request<pb::CreateServicePrincipalRequest>,
    ) -> Result<Response<pb::ServicePrincipal>, Status> {
        let r = request.into_inner();
        let request_id = required("request_id", &r.request_id)?.to_owned();
        let kind = match pb::ServicePrincipalType::try_from(r.r#type) {
            Ok(pb::ServicePrincipalType::Application) => PrincipalKind::Application,
            Ok(pb::ServicePrincipalType::ManagedIdentity) => PrincipalKind::ManagedIdentity,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "invalid service principal type {}",
                    r.r#type
                )));
            }
        };
        let mi_id = match kind {
            PrincipalKind::ManagedIdentity => {
                let raw = required(
                    "managed_identity_resource_id",
                    &r.managed_identity_resource_id,
                )?;
                Some(ResourceId::parse(raw).map_err(|e| Status::invalid_argument(e.to_string()))?)
            }
            PrincipalKind::Application => None,
        };
        let ids = match (r.app_id.is_empty(), r.object_id.is_empty()) {
            (true, true) => None,
            (false, false) => Some(ChosenIds {
                app_id: guid("app_id", &r.app_id)?,
                object_id: guid("object_id", &r.object_id)?,
            }),
            _ => {
                return Err(Status::invalid_argument(
                    "app_id and object_id are set together or not at all",
                ));
            }
        };
        // Parsed before the write lock, as `AddKeyCredential` does.
        let certificate = if r.certificate_der.is_empty() {
            None
        } else {
            let info = misim_token::cert::parse_cert(&r.certificate_der).map_err(|e| {
                status(
                    "CreateServicePrincipal",
                    EntraError::BadCertificate(e.to_string()),
                )
            })?;
            Some((r.certificate_der, info))
        };
        let p = self
            .directory()
            .create(NewPrincipal {
                request_id,
                display_name: r.display_name,
                kind,
                managed_identity_resource_id: mi_id,
                ids,
                certificate,
            })
            .await
            .map_err(|e| status("CreateServicePrincipal", e))?;
        Ok(Response::new(principal_to_pb(&p)))
    }

    async fn get_service_principal(
        &self,
        request: Request<pb::GetServicePrincipalRequest>,
    ) -> Result<Response<pb::ServicePrincipal>, Status> {
        let r = request.into_inner();
        let (found, id) = match (r.object_id.is_empty(), r.app_id.is_empty()) {
            (false, true) => (self.directory().get(&r.object_id), r.object_id),
            (true, false) => (self.directory().get_by_app(&r.app_id), r.app_id),
            _ => {
                return Err(Status::invalid_argument(
                    "exactly one of object_id and app_id must be set",
                ));
            }
        };
        match found.map_err(|e| status("GetServicePrincipal", e))? {
            Some(p) => Ok(Response::new(principal_to_pb(&p))),
            None => Err(status(
                "GetServicePrincipal",
                EntraError::PrincipalNotFound(id),
            )),
        }
    }

    async fn list_service_principals(
        &self,
        request: Request<pb::ListServicePrincipalsRequest>,
    ) -> Result<Response<pb::ListServicePrincipalsResponse>, Status> {
        let r = request.into_inner();
        let size = misim_proto::page_size(r.page_size)?;
        let (page, next) = self
            .directory()
            .list_page(&r.page_token, size)
            .map_err(|e| status("ListServicePrincipals", e))?;
        Ok(Response::new(pb::ListServicePrincipalsResponse {
            service_principals: page.iter().map(principal_to_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn delete_service_principal(
        &self,
        request: Request<pb::DeleteServicePrincipalRequest>,
    ) -> Result<Response<pb::DeleteServicePrincipalResponse>, Status> {
        let r = request.into_inner();
        let oid = required("object_id", &r.object_id)?;
        let existed = self
            .directory()
            .delete(oid)
            .await
            .map_err(|e| status("DeleteServicePrincipal", e))?;
        Ok(Response::new(pb::DeleteServicePrincipalResponse {
            existed,
        }))
    }

    async fn add_key_credential(
        &self,
        request: Request<pb::AddKeyCredentialRequest>,
    ) -> Result<Response<pb::KeyCredential>, Status> {
        let r = request.into_inner();
        let oid = required("object_id", &r.object_id)?;
        if r.certificate_der.is_empty() {
            return Err(misim_proto::ProtocolError::Missing("certificate_der").into());
        }
        let k = self
            .directory()
            .add_key_credential(oid, &r.certificate_der)
            .await
            .map_err(|e| status("AddKeyCredential", e))?;
        Ok(Response::new(key_to_pb(&k)))
    }

    async fn remove_key_credential(
        &self,
        request: Request<pb::RemoveKeyCredentialRequest>,
    ) -> Result<Response<pb::RemoveKeyCredentialResponse>, Status> {
        let r = request.into_inner();
        let oid = required("object_id", &r.object_id)?;
        let thumbprint = required("thumbprint_sha1", &r.thumbprint_sha1)?;
        let existed = self
            .directory()
            .remove_key_credential(oid, thumbprint)
            .await
            .map_err(|e| status("RemoveKeyCredential", e))?;
        Ok(Response::new(pb::RemoveKeyCredentialResponse { existed }))
    }

    async fn ensure_application(
        &self,
        request: Request<pb::EnsureApplicationRequest>,
    ) -> Result<Response<pb::ServicePrincipal>, Status> {
        let r = request.into_inner();
        // Over the network this may create an application, or repeat itself,
        // but never replace an existing principal's secret: that would let any
        // caller of the gRPC port take over the bootstrap administrator.
        // (`Config::admin` at startup is the only way to rotate it.)
        let object_id = required("object_id", &r.object_id)?;
        if let Some(existing) = self
            .directory()
            .get(object_id)
            .map_err(|e| status("EnsureApplication", e))?
            && existing.secret_sha256.as_deref() != Some(hash_secret(&r.client_secret).as_str())
        {
            return Err(Status::permission_denied(format!(
                "service principal {object_id} exists; its secret cannot be replaced over gRPC"
            )));
        }
        let p = self
            .directory()
            .ensure_application(EnsureApp {
                app_id: required("app_id", &r.app_id)?,
                object_id: required("object_id", &r.object_id)?,
                display_name: &r.display_name,
                secret: required("client_secret", &r.client_secret)?,
            })
            .await
            .map_err(|e| status("EnsureApplication", e))?;
        Ok(Response::new(principal_to_pb(&p)))
    }

    async fn create_application(
        &self,
        request: Request<pb::CreateApplicationRequest>,
    ) -> Result<Response<pb::CreatedApplication>, Status> {
        let r = request.into_inner();
        let name = required("display_name", r.display_name.trim())?;
        let created = self
            .directory()
            .create_application_principal(name)
            .await
            .map_err(|e| status("CreateApplication", e))?;
        tracing::info!(app_id = %created.principal.app_id, object_id = %created.principal.object_id, "application principal created over gRPC");
        Ok(Response::new(pb::CreatedApplication {
            service_principal: Some(principal_to_pb(&created.principal)),
            application_object_id: created.application.object_id,
            secret_key_id: created.secret.credential.key_id,
            secret_end_unix: created.secret.credential.end_unix,
            client_secret: created.secret.secret_text,
        }))
    }

    async fn issue_token(
        &self,
        request: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssuedToken>, Status> {
        let r = request.into_inner();
        let client_id = required("client_id", &r.client_id)?;
        let assertion = required("client_assertion", &r.client_assertion)?;
        let resource = required("resource", &r.resource)?;
        let issued = self
            .issue_access_token(client_id, ClientCredential::Assertion(assertion), resource)
            .instrument(tracing::info_span!("issue_token", client_id, resource))
            .await
            .map_err(|e| status("IssueToken", e))?;
        Ok(Response::new(pb::IssuedToken {
            access_token: issued.access_token,
            issued_at_unix: issued.iat,
            not_before_unix: issued.nbf,
            expires_on_unix: issued.exp,
            resource: issued.resource,
        }))
    }

    async fn get_signing_keys(
        &self,
        _: Request<pb::GetSigningKeysRequest>,
    ) -> Result<Response<pb::SigningKeys>, Status> {
        Ok(Response::new(pb::SigningKeys {
            keys: self
                .inner
                .issuer
                .keys
                .published()
                .iter()
                .map(|k| pb::SigningKey {
                    kid: k.kid().to_owned(),
                    modulus: k.modulus.clone(),
                    exponent: k.exponent.clone(),
                    certificate_der: k.certificate_der.clone(),
                })
                .collect(),
            tenant_id: self.inner.config.tenant_id.clone(),
        }))
    }

    async fn reserve_managed_identity_ids(
        &self,
        request: Request<pb::ReserveManagedIdentityIdsRequest>,
    ) -> Result<Response<pb::ReservedManagedIdentityIds>, Status> {
        let r = request.into_inner();
        let raw = required(
            "managed_identity_resource_id",
            &r.managed_identity_resource_id,
        )?;
        let rid = ResourceId::parse(raw).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let reservation = crate::domain::pinned_ids::Reservation {
            resource_id: rid.as_str().to_owned(),
            app_id: guid("app_id", &r.app_id)?,
            object_id: guid("object_id", &r.object_id)?,
        };
        let reserved = self
            .directory()
            .reserve_ids(reservation)
            .await
            .map_err(|e| status("ReserveManagedIdentityIds", e))?;
        Ok(Response::new(pb::ReservedManagedIdentityIds {
            existing: reserved == crate::domain::pinned_ids::Reserved::Existing,
        }))
    }
}

#[tonic::async_trait]
impl pb::federation_server::Federation for Entra {
    async fn put_federated_credential(
        &self,
        request: Request<pb::PutFederatedCredentialRequest>,
    ) -> Result<Response<pb::FederatedCredential>, Status> {
        let r = request.into_inner();
        let app_id = required("app_id", &r.app_id)?;
        let c = r
            .credential
            .ok_or(misim_proto::ProtocolError::Missing("credential"))?;
        let input = CredentialInput {
            name: Some(required("credential.name", &c.name)?.to_owned()),
            issuer: Some(c.issuer),
            subject: Some(c.subject),
            audiences: Some(c.audiences),
            description: Some(c.description),
        };
        let stored = self
            .directory()
            .put_federated(Owner::Principal(app_id), input)
            .await
            .map_err(|e| status("PutFederatedCredential", e))?;
        Ok(Response::new(fic_to_pb(&stored)))
    }

    async fn delete_federated_credential(
        &self,
        request: Request<pb::DeleteFederatedCredentialRequest>,
    ) -> Result<Response<pb::DeleteFederatedCredentialResponse>, Status> {
        let r = request.into_inner();
        let app_id = required("app_id", &r.app_id)?;
        let name = required("name", &r.name)?;
        let existed = match self
            .directory()
            .delete_federated(Owner::Principal(app_id), name)
            .await
        {
            Ok(existed) => existed,
            // The identity went first (its credentials with it): nothing to delete.
            Err(EntraError::PrincipalNotFound(_)) => false,
            Err(e) => return Err(status("DeleteFederatedCredential", e)),
        };
        Ok(Response::new(pb::DeleteFederatedCredentialResponse {
            existed,
        }))
    }

    async fn list_federated_credentials(
        &self,
        request: Request<pb::ListFederatedCredentialsRequest>,
    ) -> Result<Response<pb::ListFederatedCredentialsResponse>, Status> {
        let r = request.into_inner();
        let app_id = required("app_id", &r.app_id)?;
        let all = self
            .directory()
            .list_federated(Owner::Principal(app_id))
            .map_err(|e| status("ListFederatedCredentials", e))?;
        Ok(Response::new(pb::ListFederatedCredentialsResponse {
            credentials: all.iter().map(fic_to_pb).collect(),
        }))
    }

    async fn put_issuer_keys(
        &self,
        request: Request<pb::PutIssuerKeysRequest>,
    ) -> Result<Response<pb::IssuerKeys>, Status> {
        let r = request.into_inner();
        let issuer = required("issuer", &r.issuer)?;
        let jwks = required("jwks_json", &r.jwks_json)?;
        let s = self
            .inner
            .issuer_keys
            .put(issuer, jwks)
            .await
            .map_err(|e| status("PutIssuerKeys", e))?;
        tracing::info!(issuer, kids = ?s.kids, "external issuer keys registered");
        Ok(Response::new(pb::IssuerKeys {
            issuer: s.issuer,
            kids: s.kids,
            from_config: s.from_config,
        }))
    }

    async fn delete_issuer_keys(
        &self,
        request: Request<pb::DeleteIssuerKeysRequest>,
    ) -> Result<Response<pb::DeleteIssuerKeysResponse>, Status> {
        let r = request.into_inner();
        let issuer = required("issuer", &r.issuer)?;
        let existed = self
            .inner
            .issuer_keys
            .delete(issuer)
            .await
            .map_err(|e| status("DeleteIssuerKeys", e))?;
        Ok(Response::new(pb::DeleteIssuerKeysResponse { existed }))
    }

    async fn list_issuer_keys(
        &self,
        _: Request<pb::ListIssuerKeysRequest>,
    ) -> Result<Response<pb::ListIssuerKeysResponse>, Status> {
        let all = self
            .inner
            .issuer_keys
            .list()
            .map_err(|e| status("ListIssuerKeys", e))?;
        Ok(Response::new(pb::ListIssuerKeysResponse {
            issuers: all
                .into_iter()
                .map(|s| pb::IssuerKeys {
                    issuer: s.issuer,
                    kids: s.kids,
                    from_config: s.from_config,
                })
                .collect(),
        }))
    }
}

/// `misim.admin.v1.SigningKeys` is the sandbox owner's alone: no service rolls Entra's keys.
pub(crate) fn owner_only(_method: &str) -> &'static [Caller] {
    &[]
}

impl Entra {
    fn key_ring(&self) -> misim_proto::admin::v1::SigningKeyRing {
        use misim_proto::admin::v1 as admin;
        let keys = &self.inner.issuer.keys;
        let published: Vec<String> = keys
            .published()
            .iter()
            .map(|k| k.kid().to_owned())
            .collect();
        let snapshot = keys.snapshot();
        let mut ring: Vec<_> = snapshot
            .keys
            .iter()
            .map(|k| admin::SigningKeyInfo {
                kid: k.kid().to_owned(),
                state: k.state().name().to_owned(),
                created_unix: k.created_unix,
                active_from_unix: k.active_from_unix.unwrap_or(0),
                retired_unix: k.retired_unix.unwrap_or(0),
                published: published.iter().any(|p| p == k.kid()),
            })
            .collect();
        // Current first, then next, then retired (newest first).
        ring.sort_by_key(|k| {
            let rank = match k.state.as_str() {
                "current" => 0,
                "next" => 1,
                _ => 2,
            };
            (rank, -k.retired_unix)
        });
        admin::SigningKeyRing { keys: ring }
    }
}

#[tonic::async_trait]
impl misim_proto::admin::v1::signing_keys_server::SigningKeys for Entra {
    async fn list(
        &self,
        _: Request<misim_proto::admin::v1::ListSigningKeysRequest>,
    ) -> Result<Response<misim_proto::admin::v1::SigningKeyRing>, Status> {
        Ok(Response::new(self.key_ring()))
    }

    async fn roll(
        &self,
        _: Request<misim_proto::admin::v1::RollSigningKeysRequest>,
    ) -> Result<Response<misim_proto::admin::v1::SigningKeyRing>, Status> {
        self.inner
            .issuer
            .keys
            .roll()
            .await
            .map_err(|e| status("Roll", e))?;
        Ok(Response::new(self.key_ring()))
    }
}
