//! A fake IMDS `Control`: VMs and the identities configured on them, as ARM pushes them.

use misim_proto::imds::v1 as pb;
use misim_proto::imds::v1::control_server::{Control, ControlServer};
use tonic::{Request, Response, Status};

use super::SharedState;

/// A fake IMDS `Control` keeping VMs and identities in the shared
/// [`FakeState`](super::FakeState) and logging every call there. `PutIdentity` asserts that
/// the identity carries a key, a certificate and the expected tenant, as ARM must send them.
#[derive(Debug, Clone)]
pub struct FakeControl {
    state: SharedState,
    tenant_id: String,
}

impl FakeControl {
    /// A control API that expects identities of `tenant_id`.
    pub fn new(state: SharedState, tenant_id: &str) -> Self {
        Self {
            state,
            tenant_id: tenant_id.to_owned(),
        }
    }

    /// The tonic service to [`serve`](crate::serve).
    pub fn into_server(self) -> ControlServer<Self> {
        ControlServer::new(self)
    }
}

impl FakeControl {
    /// Configures one identity on a VM's list (replacing one of its client
    /// id), asserting it carries what ARM must send.
    fn put_one(&self, list: &mut Vec<pb::IdentityInfo>, i: pb::ManagedIdentity) {
        assert!(i.private_key_pem.contains("PRIVATE KEY"));
        assert!(i.certificate_pem.contains("CERTIFICATE"));
        assert_eq!(i.tenant_id, self.tenant_id);
        let thumbprint =
            misim_token::cert::pem_thumbprint_sha1(&i.certificate_pem).unwrap_or_default();
        list.retain(|x| x.client_id != i.client_id);
        list.push(pb::IdentityInfo {
            kind: i.kind,
            client_id: i.client_id,
            object_id: i.object_id,
            resource_id: i.resource_id,
            certificate_thumbprint: thumbprint,
        });
    }
}

#[tonic::async_trait]
impl Control for FakeControl {
    async fn put_vm(&self, r: Request<pb::PutVmRequest>) -> Result<Response<pb::Vm>, Status> {
        let r = r.into_inner();
        let md = r.metadata.unwrap_or_default();
        let mut s = self.state.lock();
        // The identities the call carries, logged after the VM as they are
        // applied (`PutIdentity`'s line, in `PutVm`'s call).
        let mut line = format!(
            "PutVm {} size={} os={} user={} pub={}",
            md.resource_id, md.vm_size, md.os_type, md.admin_username, md.publisher
        );
        for i in &r.identities {
            line.push_str(&format!(" + kind={} client={}", i.kind, i.client_id));
        }
        s.calls.push(line);
        let list = s
            .vms
            .entry(md.resource_id.to_ascii_lowercase())
            .or_default();
        for i in r.identities {
            self.put_one(list, i);
        }
        let identities = list.clone();
        Ok(Response::new(pb::Vm {
            metadata: Some(md),
            identities,
            ..Default::default()
        }))
    }

    async fn get_vm(&self, r: Request<pb::GetVmRequest>) -> Result<Response<pb::Vm>, Status> {
        let id = r.into_inner().resource_id;
        match self.state.lock().vms.get(&id.to_ascii_lowercase()) {
            Some(ids) => Ok(Response::new(pb::Vm {
                identities: ids.clone(),
                ..Default::default()
            })),
            None => Err(Status::not_found("fake: no such vm")),
        }
    }

    async fn list_vms(
        &self,
        _: Request<pb::ListVmsRequest>,
    ) -> Result<Response<pb::ListVmsResponse>, Status> {
        // Resource ids as the fake keeps them: lower-cased.
        let mut vms: Vec<pb::Vm> = self
            .state
            .lock()
            .vms
            .iter()
            .map(|(id, identities)| pb::Vm {
                metadata: Some(pb::VmMetadata {
                    resource_id: id.clone(),
                    ..Default::default()
                }),
                identities: identities.clone(),
                ..Default::default()
            })
            .collect();
        vms.sort_by_key(|v| v.metadata.as_ref().map(|m| m.resource_id.clone()));
        // One page: the fakes hold a handful of VMs.
        Ok(Response::new(pb::ListVmsResponse {
            vms,
            next_page_token: String::new(),
        }))
    }

    async fn delete_vm(
        &self,
        r: Request<pb::DeleteVmRequest>,
    ) -> Result<Response<pb::DeleteVmResponse>, Status> {
        let id = r.into_inner().resource_id;
        let mut s = self.state.lock();
        s.calls.push(format!("DeleteVm {id}"));
        s.vms.remove(&id.to_ascii_lowercase());
        Ok(Response::new(pb::DeleteVmResponse { existed: true }))
    }

    async fn put_identity(
        &self,
        r: Request<pb::PutIdentityRequest>,
    ) -> Result<Response<pb::PutIdentityResponse>, Status> {
        let r = r.into_inner();
        let i = r.identity.unwrap_or_default();
        let mut s = self.state.lock();
        s.calls.push(format!(
            "PutIdentity {} kind={} client={}",
            r.vm_resource_id, i.kind, i.client_id
        ));
        let list = s
            .vms
            .entry(r.vm_resource_id.to_ascii_lowercase())
            .or_default();
        self.put_one(list, i);
        Ok(Response::new(pb::PutIdentityResponse {}))
    }

    async fn remove_identity(
        &self,
        r: Request<pb::RemoveIdentityRequest>,
    ) -> Result<Response<pb::RemoveIdentityResponse>, Status> {
        let r = r.into_inner();
        let mut s = self.state.lock();
        s.calls.push(format!(
            "RemoveIdentity {} client={}",
            r.vm_resource_id, r.client_id
        ));
        if let Some(list) = s.vms.get_mut(&r.vm_resource_id.to_ascii_lowercase()) {
            list.retain(|x| x.client_id != r.client_id);
        }
        Ok(Response::new(pb::RemoveIdentityResponse { existed: true }))
    }
}
