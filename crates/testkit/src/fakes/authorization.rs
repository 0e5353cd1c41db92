//! A fake ARM `Authorization`: vault access decided by a test-supplied function, every
//! check recorded.

use std::sync::Arc;

use misim_proto::arm::v1 as pb;
use misim_proto::arm::v1::authorization_server::{Authorization, AuthorizationServer};
use parking_lot::Mutex;
use tonic::{Request, Response, Status};

use super::unimplemented;

type Decide = dyn Fn(&pb::CheckVaultAccessRequest) -> pb::VaultAccessDecision + Send + Sync;

/// A fake ARM `Authorization` that answers `CheckVaultAccess` (Key Vault's only call) with a
/// test's decision. Clones share the record of checks.
#[derive(Clone)]
pub struct FakeAuthorization {
    decide: Arc<Decide>,
    checks: Arc<Mutex<Vec<pb::CheckVaultAccessRequest>>>,
}

impl std::fmt::Debug for FakeAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAuthorization")
            .field("checks", &self.checks.lock().len())
            .finish_non_exhaustive()
    }
}

impl FakeAuthorization {
    /// Answers every vault access check with `decide`.
    pub fn new(
        decide: impl Fn(&pb::CheckVaultAccessRequest) -> pb::VaultAccessDecision + Send + Sync + 'static,
    ) -> Self {
        Self {
            decide: Arc::new(decide),
            checks: Arc::default(),
        }
    }

    /// Every vault access check so far, in order.
    pub fn vault_checks(&self) -> Vec<pb::CheckVaultAccessRequest> {
        self.checks.lock().clone()
    }

    /// The data action of the latest vault access check (empty before the first).
    pub fn last_data_action(&self) -> String {
        self.checks
            .lock()
            .last()
            .map(|c| c.data_action.clone())
            .unwrap_or_default()
    }

    /// The tonic service to [`serve`](crate::serve).
    pub fn into_server(self) -> AuthorizationServer<Self> {
        AuthorizationServer::new(self)
    }
}

#[tonic::async_trait]
impl Authorization for FakeAuthorization {
    async fn create_role_assignment(
        &self,
        _: Request<pb::CreateRoleAssignmentRequest>,
    ) -> Result<Response<pb::RoleAssignment>, Status> {
        unimplemented()
    }

    async fn check_access(
        &self,
        _: Request<pb::CheckAccessRequest>,
    ) -> Result<Response<pb::AccessDecision>, Status> {
        unimplemented()
    }

    async fn check_vault_access(
        &self,
        r: Request<pb::CheckVaultAccessRequest>,
    ) -> Result<Response<pb::VaultAccessDecision>, Status> {
        let r = r.into_inner();
        let decision = (self.decide)(&r);
        self.checks.lock().push(r);
        Ok(Response::new(decision))
    }
}
