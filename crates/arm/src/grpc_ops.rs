//! `misim.arm.v1.Operations`: the convergence check behind `misim doctor`.

use std::sync::Arc;

use misim_proto::arm::v1::{DoctorReport, DoctorRequest, Drift, operations_server::Operations};
use misim_proto::auth::Caller;
use tonic::{Request, Response, Status};

use crate::domain::Core;

/// Who may call each `Operations` method: the sandbox owner (`admin`, who
/// may call everything: `misim doctor`) only.
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
}
