//! `misim.arm.v1.Authorization`: RBAC decisions for data planes, from the same
//! evaluator as ARM's own checks.

use std::sync::Arc;

use misim_proto::arm::v1::{
    AccessDecision, CheckAccessRequest, CheckVaultAccessRequest, CreateRoleAssignmentRequest,
    RoleAssignment, VaultAccessDecision, authorization_server::Authorization,
};
use misim_proto::auth::Caller;
use misim_proto::{code_to_status, required};
use misim_types::ResourceId;
use tonic::{Request, Response, Status};

use crate::domain::Core;
use crate::error::ArmError;

/// The gRPC service.
#[derive(Debug, Clone)]
pub(crate) struct AuthorizationService {
    pub(crate) core: Arc<Core>,
}

/// Who may call each `Authorization` method, besides the sandbox owner
/// (`admin`, who may call everything): Key Vault asks for data-plane
/// decisions; `CreateRoleAssignment` (a grant for test clients) is the
/// owner's alone.
pub(crate) fn allowed(method: &str) -> &'static [Caller] {
    match method {
        "CheckAccess" | "CheckVaultAccess" => &[Caller::KeyVault],
        _ => &[],
    }
}

/// A domain error as a status: its fixed text (a server-side failure's
/// details are logged here, never sent to the peer).
pub(crate) fn status(e: ArmError) -> Status {
    if let Some(detail) = e.detail() {
        tracing::error!(error = %e, detail, "grpc call failed");
    }
    code_to_status(e.code(), e.to_string())
}

#[tonic::async_trait]
impl Authorization for AuthorizationService {
    async fn check_access(
        &self,
        req: Request<CheckAccessRequest>,
    ) -> Result<Response<AccessDecision>, Status> {
        let r = req.into_inner();
        let principal = required("principal_id", &r.principal_id)?;
        let action = required("action", &r.action)?;
        let scope = ResourceId::parse(required("scope", &r.scope)?)
            .map_err(|_| misim_proto::ProtocolError::Invalid("scope", r.scope.clone()))?;
        let d = self
            .core
            .decide(principal, action, &scope, r.data_action)
            .map_err(status)?;
        if d.allowed {
            tracing::debug!(principal, action, scope = %scope, reason = %d.reason, "access allowed");
        } else {
            tracing::info!(principal, action, scope = %scope, reason = %d.reason, "access denied");
        }
        Ok(Response::new(AccessDecision {
            allowed: d.allowed,
            reason: d.reason,
        }))
    }

    async fn check_vault_access(
        &self,
        req: Request<CheckVaultAccessRequest>,
    ) -> Result<Response<VaultAccessDecision>, Status> {
        let r = req.into_inner();
        let name = required("vault_name", &r.vault_name)?;
        let principal = required("principal_id", &r.principal_id)?;
        let action = required("data_action", &r.data_action)?;
        let Some(vault) = self.core.vault_by_name(name).map_err(status)? else {
            return Ok(Response::new(VaultAccessDecision {
                vault_exists: false,
                reason: format!("no vault named {name}"),
                ..Default::default()
            }));
        };
        let scope = ResourceId::parse(&vault.id).map_err(|e| Status::internal(e.to_string()))?;
        let d = self
            .core
            .decide(principal, action, &scope, true)
            .map_err(status)?;
        if d.allowed {
            tracing::debug!(principal, action, vault = %vault.id, reason = %d.reason, "vault access allowed");
        } else {
            tracing::info!(principal, action, vault = %vault.id, reason = %d.reason, "vault access denied");
        }
        Ok(Response::new(VaultAccessDecision {
            vault_exists: true,
            vault_resource_id: vault.id,
            location: vault.location,
            allowed: d.allowed,
            reason: d.reason,
            vault_uid: vault.uid,
        }))
    }

    async fn create_role_assignment(
        &self,
        req: Request<CreateRoleAssignmentRequest>,
    ) -> Result<Response<RoleAssignment>, Status> {
        let r = req.into_inner();
        let principal = required("principal_id", &r.principal_id)?;
        let role = required("role", &r.role)?;
        let scope = required("scope", &r.scope)?;
        ResourceId::parse(scope)
            .map_err(|_| misim_proto::ProtocolError::Invalid("scope", r.scope.clone()))?;
        let a = self
            .core
            .grant(principal, role, scope)
            .await
            .map_err(status)?;
        Ok(Response::new(RoleAssignment {
            id: a.id,
            principal_id: a.principal_id,
            role_definition_id: a.role_definition_id,
            scope: a.scope,
        }))
    }
}
