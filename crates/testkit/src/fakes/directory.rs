//! A fake Entra `Directory`: the tenant, one signing key, service principals with key
//! credentials, and token issuance by a test-supplied function, with a gate a test can
//! hold issuance at (a slow Entra, without sleeping).

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

use misim_proto::entra::v1 as pb;
use misim_proto::entra::v1::directory_server::{Directory, DirectoryServer};
use misim_token::RsaSigner;
use tonic::{Request, Response, Status};

use super::{SharedState, unimplemented};

/// The tenant the fake Entra reports (`GetTenant`).
#[derive(Debug, Clone)]
pub struct FakeTenant {
    /// The tenant id.
    pub tenant_id: String,
    /// Entra's public URL, the prefix of the v2 issuer.
    pub authority: String,
}

type IssueToken = dyn Fn(pb::IssueTokenRequest) -> Result<pb::IssuedToken, Status> + Send + Sync;

/// A fake Entra `Directory`. Built with what the test needs; unconfigured parts answer
/// `UNIMPLEMENTED`. Principal calls (create, get, list, delete, add and remove key credentials) are always
/// modelled, on the shared [`FakeState`](super::FakeState), and logged there, as is each
/// `IssueToken` once configured (before the test's function decides it). Clones share the
/// gate.
#[derive(Clone)]
pub struct FakeDirectory {
    state: SharedState,
    tenant: Option<FakeTenant>,
    signing_key: Option<pb::SigningKey>,
    issue_token: Option<Arc<IssueToken>>,
    /// When set, `IssueToken` waits for one of its permits before it answers.
    gate: Arc<Mutex<Option<Arc<Semaphore>>>>,
    /// Notified as each `IssueToken` arrives, before the gate.
    arrived: Arc<Notify>,
}

impl std::fmt::Debug for FakeDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDirectory")
            .field("tenant", &self.tenant)
            .field("issues_tokens", &self.issue_token.is_some())
            .finish_non_exhaustive()
    }
}

impl FakeDirectory {
    /// A directory with no tenant, no signing key and no token issuance.
    pub fn new(state: SharedState) -> Self {
        Self {
            state,
            tenant: None,
            signing_key: None,
            issue_token: None,
            gate: Arc::default(),
            arrived: Arc::default(),
        }
    }

    /// From now on each `IssueToken` waits for a permit of `gate` (the test adds them)
    /// before it answers; `None` lets calls through again. A call already waiting keeps
    /// waiting on the gate it found.
    pub fn gate_issue_token(&self, gate: Option<Arc<Semaphore>>) {
        *self.gate.lock() = gate;
    }

    /// Returns once an `IssueToken` has arrived (at once if one arrived since the last
    /// call), so a test knows a call is in flight.
    pub async fn issue_arrived(&self) {
        self.arrived.notified().await;
    }

    /// Answers `GetTenant` with `tenant` (and its tenant id in `GetSigningKeys`).
    pub fn with_tenant(mut self, tenant: FakeTenant) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// Answers `GetSigningKeys` with `signer`'s public key.
    pub fn with_signing_key(mut self, signer: &RsaSigner) -> Self {
        let (modulus, exponent) = signer.public_components();
        self.signing_key = Some(pb::SigningKey {
            kid: signer.kid().into(),
            modulus,
            exponent,
            certificate_der: vec![],
        });
        self
    }

    /// Answers `IssueToken` with `issue` (which may check the client assertion).
    pub fn with_issue_token(
        mut self,
        issue: impl Fn(pb::IssueTokenRequest) -> Result<pb::IssuedToken, Status> + Send + Sync + 'static,
    ) -> Self {
        self.issue_token = Some(Arc::new(issue));
        self
    }

    /// The tonic service to [`serve`](crate::serve).
    pub fn into_server(self) -> DirectoryServer<Self> {
        DirectoryServer::new(self)
    }
}

#[tonic::async_trait]
impl Directory for FakeDirectory {
    async fn get_tenant(
        &self,
        _: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let Some(t) = &self.tenant else {
            return unimplemented();
        };
        Ok(Response::new(pb::Tenant {
            tenant_id: t.tenant_id.clone(),
            issuer_v1: format!("https://sts.windows.net/{}/", t.tenant_id),
            issuer_v2: format!("{}/{}/v2.0", t.authority, t.tenant_id),
        }))
    }

    async fn get_signing_keys(
        &self,
        _: Request<pb::GetSigningKeysRequest>,
    ) -> Result<Response<pb::SigningKeys>, Status> {
        let Some(key) = &self.signing_key else {
            return unimplemented();
        };
        Ok(Response::new(pb::SigningKeys {
            keys: vec![key.clone()],
            tenant_id: self
                .tenant
                .as_ref()
                .map(|t| t.tenant_id.clone())
                .unwrap_or_default(),
        }))
    }

    async fn create_service_principal(
        &self,
        r: Request<pb::CreateServicePrincipalRequest>,
    ) -> Result<Response<pb::ServicePrincipal>, Status> {
        let r = r.into_inner();
        let mut s = self.state.lock();
        if let Some(sp) = s
            .by_request
            .get(&r.request_id)
            .and_then(|oid| s.service_principals.get(oid))
            .cloned()
        {
            s.calls.push(format!(
                "CreateServicePrincipal {} (again)",
                r.managed_identity_resource_id
            ));
            return Ok(Response::new(sp));
        }
        s.next_principal += 1;
        let n = s.next_principal;
        // The caller's ids when it chose them, as Entra honours them.
        let (object_id, app_id) = if r.app_id.is_empty() {
            (
                format!("00000000-0000-4000-9000-{n:012}"),
                format!("00000000-0000-4000-a000-{n:012}"),
            )
        } else {
            (r.object_id.clone(), r.app_id.clone())
        };
        let mut sp = pb::ServicePrincipal {
            object_id,
            app_id,
            display_name: r.display_name,
            r#type: r.r#type,
            managed_identity_resource_id: r.managed_identity_resource_id.clone(),
            ..Default::default()
        };
        // A certificate sent with the create is registered in the same call.
        if !r.certificate_der.is_empty() {
            let info = misim_token::cert::parse_cert(&r.certificate_der)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            sp.key_credentials.push(pb::KeyCredential {
                key_id: "k".into(),
                certificate_der: r.certificate_der,
                thumbprint_sha1: misim_token::hex_upper(&info.sha1),
                start_unix: info.not_before,
                end_unix: info.not_after,
            });
        }
        s.calls.push(format!(
            "CreateServicePrincipal {}",
            r.managed_identity_resource_id
        ));
        s.by_request
            .insert(r.request_id.clone(), sp.object_id.clone());
        s.service_principals
            .insert(sp.object_id.clone(), sp.clone());
        Ok(Response::new(sp))
    }

    async fn get_service_principal(
        &self,
        r: Request<pb::GetServicePrincipalRequest>,
    ) -> Result<Response<pb::ServicePrincipal>, Status> {
        self.state
            .lock()
            .service_principals
            .get(&r.into_inner().object_id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found("no such principal"))
    }

    async fn list_service_principals(
        &self,
        _: Request<pb::ListServicePrincipalsRequest>,
    ) -> Result<Response<pb::ListServicePrincipalsResponse>, Status> {
        let mut service_principals: Vec<pb::ServicePrincipal> = self
            .state
            .lock()
            .service_principals
            .values()
            .cloned()
            .collect();
        service_principals.sort_by(|a, b| a.object_id.cmp(&b.object_id));
        // One page: the fakes hold a handful of principals.
        Ok(Response::new(pb::ListServicePrincipalsResponse {
            service_principals,
            next_page_token: String::new(),
        }))
    }

    async fn delete_service_principal(
        &self,
        r: Request<pb::DeleteServicePrincipalRequest>,
    ) -> Result<Response<pb::DeleteServicePrincipalResponse>, Status> {
        let r = r.into_inner();
        let mut s = self.state.lock();
        s.calls
            .push(format!("DeleteServicePrincipal {}", r.object_id));
        let removed = s.service_principals.remove(&r.object_id);
        // A principal's federated credentials go with it, as in Entra.
        if let Some(sp) = &removed {
            s.federated_credentials.remove(&sp.app_id);
        }
        let existed = removed.is_some();
        Ok(Response::new(pb::DeleteServicePrincipalResponse {
            existed,
        }))
    }

    async fn add_key_credential(
        &self,
        r: Request<pb::AddKeyCredentialRequest>,
    ) -> Result<Response<pb::KeyCredential>, Status> {
        let r = r.into_inner();
        let mut s = self.state.lock();
        s.calls.push(format!("AddKeyCredential {}", r.object_id));
        let sp = s
            .service_principals
            .get_mut(&r.object_id)
            .ok_or_else(|| Status::not_found("no such principal"))?;
        let info = misim_token::cert::parse_cert(&r.certificate_der)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let thumbprint_sha1 = misim_token::hex_upper(&info.sha1);
        if let Some(k) = sp
            .key_credentials
            .iter()
            .find(|k| k.thumbprint_sha1 == thumbprint_sha1)
        {
            return Ok(Response::new(k.clone()));
        }
        let kc = pb::KeyCredential {
            key_id: "k".into(),
            certificate_der: r.certificate_der,
            thumbprint_sha1,
            start_unix: info.not_before,
            end_unix: info.not_after,
        };
        sp.key_credentials.push(kc.clone());
        Ok(Response::new(kc))
    }

    async fn remove_key_credential(
        &self,
        r: Request<pb::RemoveKeyCredentialRequest>,
    ) -> Result<Response<pb::RemoveKeyCredentialResponse>, Status> {
        let r = r.into_inner();
        let mut s = self.state.lock();
        s.calls.push(format!(
            "RemoveKeyCredential {} {}",
            r.object_id, r.thumbprint_sha1
        ));
        let sp = s
            .service_principals
            .get_mut(&r.object_id)
            .ok_or_else(|| Status::not_found("no such principal"))?;
        let before = sp.key_credentials.len();
        sp.key_credentials
            .retain(|k| !k.thumbprint_sha1.eq_ignore_ascii_case(&r.thumbprint_sha1));
        Ok(Response::new(pb::RemoveKeyCredentialResponse {
            existed: sp.key_credentials.len() < before,
        }))
    }

    async fn ensure_application(
        &self,
        _: Request<pb::EnsureApplicationRequest>,
    ) -> Result<Response<pb::ServicePrincipal>, Status> {
        unimplemented()
    }

    async fn create_application(
        &self,
        _: Request<pb::CreateApplicationRequest>,
    ) -> Result<Response<pb::CreatedApplication>, Status> {
        unimplemented()
    }

    async fn reserve_managed_identity_ids(
        &self,
        _: Request<pb::ReserveManagedIdentityIdsRequest>,
    ) -> Result<Response<pb::ReservedManagedIdentityIds>, Status> {
        unimplemented()
    }

    async fn issue_token(
        &self,
        r: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssuedToken>, Status> {
        let Some(issue) = &self.issue_token else {
            return unimplemented();
        };
        let r = r.into_inner();
        self.state
            .lock()
            .calls
            .push(format!("IssueToken {} {}", r.client_id, r.resource));
        self.arrived.notify_one();
        super::pass_gate(&self.gate).await?;
        issue(r).map(Response::new)
    }
}
