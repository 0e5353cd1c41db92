//! `misim.arm.v1.Operations`: the convergence check behind `misim doctor`, and
//! certificate renewal on demand behind `misim identity renew`.

use std::sync::Arc;

use misim_proto::arm::v1::{
    DoctorReport, DoctorRequest, Drift, RenewCredentialsReport, RenewCredentialsRequest,
    RenewedCredential, operations_server::Operations,
};
use misim_proto::auth::Caller;
use tonic::{Request, Response, Status};

use crate::domain::Core;
use crate::domain::renew_now::RenewWhich;

/// Who may call each `Operations` method: the sandbox owner (`admin`, who
/// may call everything: `misim doctor`, `misim identity renew`) only.
pub(crate) fn allowed(_method: &str) -> &'static [Caller] {
    &[]
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub(crate) struct OperationsService {
    pub(crate) core: Arc<Core>,
}

#[tonic::async_trait]
impl Operations for OperationsService {
    async fn doctor(&self, _req: Request<DoctorRequest>) -> Result<Response<DoctorReport>, Status> {
        let r = self.core.doctor().await.map_err(crate::grpc::status)?;
        Ok(Response::new(DoctorReport {
            drifts: r
                .drifts
                .into_iter()
                .map(|d| Drift {
                    kind: d.kind,
                    subject: d.subject,
                    detail: d.detail,
                })
                .collect(),
            pending_operations: r.pending_operations,
            failed_operations: r.failed_operations,
            identities: r.identities,
            service_principals: r.service_principals,
            vms: r.vms,
            imds_vms: r.imds_vms,
        }))
    }

    async fn renew_credentials(
        &self,
        req: Request<RenewCredentialsRequest>,
    ) -> Result<Response<RenewCredentialsReport>, Status> {
        let r = req.into_inner();
        let which = match (r.all, r.identities.is_empty()) {
            (true, true) => RenewWhich::All,
            (false, false) => RenewWhich::Identities(r.identities),
            (true, false) => {
                return Err(Status::invalid_argument(
                    "give either all or identities, not both",
                ));
            }
            (false, true) => {
                return Err(Status::invalid_argument(
                    "name the identities to renew (client id, object id or resource id), or all",
                ));
            }
        };
        let renewed = self
            .core
            .renew_now(&which)
            .await
            .map_err(crate::grpc::status)?;
        Ok(Response::new(RenewCredentialsReport {
            renewed: renewed
                .into_iter()
                .map(|r| RenewedCredential {
                    resource_id: r.resource_id,
                    principal_id: r.principal_id,
                    client_id: r.client_id,
                    previous_thumbprint: r.previous_thumbprint,
                    thumbprint: r.thumbprint,
                    done: r.done,
                })
                .collect(),
        }))
    }
}
