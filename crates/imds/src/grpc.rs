//! `misim.imds.v1.Control`: how ARM configures VMs and their identities.
//! The only module that sees the generated types.

use misim_proto::auth::Caller;
use misim_proto::imds::v1 as pb;
use misim_proto::imds::v1::control_server::Control;
use misim_proto::required;
use tonic::{Request, Response, Status};

use crate::domain::{IdentityRecord, Kind, VmMeta};
use crate::service::{Imds, LiveVm};

/// Who may call each `Control` method, besides the sandbox owner (`admin`,
/// who may call everything, e.g. `misim vm list`): ARM alone configures VMs
/// and pushes identities (their private keys) into IMDS.
pub(crate) fn allowed(method: &str) -> &'static [Caller] {
    match method {
        "PutVm" | "GetVm" | "ListVms" | "DeleteVm" | "PutIdentity" | "RemoveIdentity" => {
            &[Caller::Arm]
        }
        _ => &[],
    }
}

fn meta_from(m: pb::VmMetadata) -> VmMeta {
    VmMeta {
        resource_id: m.resource_id,
        vm_id: m.vm_id,
        name: m.name,
        resource_group: m.resource_group,
        subscription_id: m.subscription_id,
        location: m.location,
        vm_size: m.vm_size,
        os_type: m.os_type,
        tags: m.tags.into_iter().collect(),
        publisher: m.publisher,
        offer: m.offer,
        sku: m.sku,
        version: m.version,
        admin_username: m.admin_username,
        computer_name: m.computer_name,
        private_ip: m.private_ip,
    }
}

fn meta_to(m: &VmMeta) -> pb::VmMetadata {
    pb::VmMetadata {
        resource_id: m.resource_id.clone(),
        vm_id: m.vm_id.clone(),
        name: m.name.clone(),
        resource_group: m.resource_group.clone(),
        subscription_id: m.subscription_id.clone(),
        location: m.location.clone(),
        vm_size: m.vm_size.clone(),
        os_type: m.os_type.clone(),
        tags: m.tags.clone().into_iter().collect(),
        publisher: m.publisher.clone(),
        offer: m.offer.clone(),
        sku: m.sku.clone(),
        version: m.version.clone(),
        admin_username: m.admin_username.clone(),
        computer_name: m.computer_name.clone(),
        private_ip: m.private_ip.clone(),
    }
}

/// The public view of a VM: never any private key.
/// The certificate's SHA-1 thumbprint (upper-case hex), empty if unreadable.
fn vm_to(imds: &Imds, vm: &LiveVm) -> pb::Vm {
    let r = &vm.record;
    pb::Vm {
        metadata: Some(meta_to(&r.meta)),
        imds_endpoint: imds.endpoint(r),
        identity_header: r.identity_header.clone(),
        identities: r
            .identities
            .iter()
            .map(|i| pb::IdentityInfo {
                kind: match i.kind {
                    Kind::System => pb::IdentityKind::SystemAssigned,
                    Kind::User => pb::IdentityKind::UserAssigned,
                } as i32,
                client_id: i.client_id.clone(),
                object_id: i.object_id.clone(),
                resource_id: i.resource_id.clone(),
                certificate_thumbprint: misim_token::cert::pem_thumbprint_sha1(&i.certificate_pem)
                    .unwrap_or_default(),
            })
            .collect(),
    }
}

/// An identity as ARM sends it (`field` names it in errors: `identity` of
/// `PutIdentity`, `identities` of `PutVm`).
fn identity_from(i: pb::ManagedIdentity, field: &str) -> Result<IdentityRecord, Status> {
    let kind = match pb::IdentityKind::try_from(i.kind) {
        Ok(pb::IdentityKind::SystemAssigned) => Kind::System,
        Ok(pb::IdentityKind::UserAssigned) => Kind::User,
        _ => {
            return Err(Status::invalid_argument(format!(
                "invalid value {} for field {field}.kind",
                i.kind
            )));
        }
    };
    let [client_id, certificate_pem, private_key_pem] = if field == "identity" {
        [
            "identity.client_id",
            "identity.certificate_pem",
            "identity.private_key_pem",
        ]
    } else {
        [
            "identities.client_id",
            "identities.certificate_pem",
            "identities.private_key_pem",
        ]
    };
    required(client_id, &i.client_id)?;
    required(certificate_pem, &i.certificate_pem)?;
    required(private_key_pem, &i.private_key_pem)?;
    Ok(IdentityRecord {
        kind,
        client_id: i.client_id,
        object_id: i.object_id,
        resource_id: i.resource_id,
        tenant_id: i.tenant_id,
        certificate_pem: i.certificate_pem.into(),
        private_key_pem: i.private_key_pem.into(),
    })
}

#[tonic::async_trait]
impl Control for Imds {
    async fn put_vm(&self, req: Request<pb::PutVmRequest>) -> Result<Response<pb::Vm>, Status> {
        let req = req.into_inner();
        let meta = req
            .metadata
            .ok_or_else(|| Status::invalid_argument("missing field metadata"))?;
        required("metadata.resource_id", &meta.resource_id)?;
        let identities = req
            .identities
            .into_iter()
            .map(|i| identity_from(i, "identities"))
            .collect::<Result<Vec<_>, _>>()?;
        let vm = self.put_vm(meta_from(meta), identities).await?;
        Ok(Response::new(vm_to(self, &vm)))
    }

    async fn get_vm(&self, req: Request<pb::GetVmRequest>) -> Result<Response<pb::Vm>, Status> {
        let id = req.into_inner().resource_id;
        required("resource_id", &id)?;
        let vm = self
            .vm(&crate::service::vm_key(&id))
            .ok_or_else(|| Status::not_found(format!("vm {id} not found")))?;
        Ok(Response::new(vm_to(self, &vm)))
    }

    async fn list_vms(
        &self,
        req: Request<pb::ListVmsRequest>,
    ) -> Result<Response<pb::ListVmsResponse>, Status> {
        let req = req.into_inner();
        let size = misim_proto::page_size(req.page_size)?;
        let (vms, next) = self.list_page(&req.page_token, size);
        Ok(Response::new(pb::ListVmsResponse {
            vms: vms.iter().map(|v| vm_to(self, v)).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn delete_vm(
        &self,
        req: Request<pb::DeleteVmRequest>,
    ) -> Result<Response<pb::DeleteVmResponse>, Status> {
        let id = req.into_inner().resource_id;
        required("resource_id", &id)?;
        let existed = self.delete_vm(&id).await?;
        Ok(Response::new(pb::DeleteVmResponse { existed }))
    }

    async fn put_identity(
        &self,
        req: Request<pb::PutIdentityRequest>,
    ) -> Result<Response<pb::PutIdentityResponse>, Status> {
        let req = req.into_inner();
        required("vm_resource_id", &req.vm_resource_id)?;
        let i = req
            .identity
            .ok_or_else(|| Status::invalid_argument("missing field identity"))?;
        let record = identity_from(i, "identity")?;
        self.put_identity(&req.vm_resource_id, record).await?;
        Ok(Response::new(pb::PutIdentityResponse {}))
    }

    async fn remove_identity(
        &self,
        req: Request<pb::RemoveIdentityRequest>,
    ) -> Result<Response<pb::RemoveIdentityResponse>, Status> {
        let req = req.into_inner();
        required("vm_resource_id", &req.vm_resource_id)?;
        required("client_id", &req.client_id)?;
        let existed = self
            .remove_identity(&req.vm_resource_id, &req.client_id)
            .await?;
        Ok(Response::new(pb::RemoveIdentityResponse { existed }))
    }
}
