//! Fake gRPC peers: just enough of Entra's `Directory` and `Federation`, IMDS's `Control` and
//! ARM's `Authorization` for one service's tests, without the other services. Every method a
//! fake does not model answers `UNIMPLEMENTED`, so a test notices a call it did not expect.
//!
//! [`FakeDirectory`], [`FakeFederation`] and [`FakeControl`] share one [`FakeState`], so a
//! test reads a single ordered log of the calls its service made to its peers.

mod authorization;
mod control;
mod directory;
mod federation;

use std::collections::HashMap;
use std::sync::Arc;

use misim_proto::entra::v1::{FederatedCredential, ServicePrincipal};
use misim_proto::imds::v1::IdentityInfo;
use parking_lot::Mutex;
use tonic::{Response, Status};

pub use authorization::FakeAuthorization;
pub use control::FakeControl;
pub use directory::{FakeDirectory, FakeTenant};
pub use federation::FakeFederation;

/// What the fakes hold and saw.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Entra's service principals by object id.
    pub service_principals: HashMap<String, ServicePrincipal>,
    /// Every modelled call, in order: the method name, then what it was about
    /// (`CreateServicePrincipal <resource id>`, `PutVm <id> size=…`).
    pub calls: Vec<String>,
    /// IMDS's VMs: lower-cased resource id → configured identities.
    pub vms: HashMap<String, Vec<IdentityInfo>>,
    /// Entra's federated identity credentials: app id → credentials.
    pub federated_credentials: HashMap<String, Vec<FederatedCredential>>,
    /// Numbers the principals the fake Entra creates.
    next_principal: u32,
    /// The principal each `CreateServicePrincipal` request id created, as
    /// Entra keeps it: a call with a known request id whose principal still
    /// exists returns that principal.
    by_request: HashMap<String, String>,
}

/// The state one test's fakes share.
pub type SharedState = Arc<Mutex<FakeState>>;

/// A fresh, empty [`SharedState`].
pub fn shared_state() -> SharedState {
    SharedState::default()
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not modelled by the fake"))
}

/// A test's gate on a fake call: when one is set, waits for (and uses up) one
/// of its permits, so the call stays in flight until the test lets it go.
async fn pass_gate(
    gate: &parking_lot::Mutex<Option<std::sync::Arc<tokio::sync::Semaphore>>>,
) -> Result<(), Status> {
    let gate = gate.lock().clone();
    if let Some(gate) = gate {
        gate.acquire()
            .await
            .map_err(|_| Status::unavailable("fake: gate closed"))?
            .forget();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use misim_proto::auth::Caller;
    use misim_proto::entra::v1 as entra;
    use misim_proto::imds::v1 as imds;
    use tonic::service::Routes;

    use super::*;

    const VM: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1";

    #[tokio::test]
    async fn directory_and_control_share_one_call_log() {
        let state = shared_state();
        let url = crate::serve(
            Routes::new(FakeDirectory::new(state.clone()).into_server())
                .add_service(FakeControl::new(state.clone(), "t1").into_server()),
        )
        .await;
        let mut dir =
            entra::directory_client::DirectoryClient::new(crate::channel_as(Caller::Arm, &url));
        let mut ctl =
            imds::control_client::ControlClient::new(crate::channel_as(Caller::Arm, &url));

        let sp = dir
            .create_service_principal(entra::CreateServicePrincipalRequest {
                managed_identity_resource_id: VM.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let t0 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let cert =
            misim_token::cert::generate_ec_cert("c", t0, t0 + std::time::Duration::from_secs(60))
                .unwrap();
        let key = dir
            .add_key_credential(entra::AddKeyCredentialRequest {
                object_id: sp.object_id.clone(),
                certificate_der: cert.certificate_der.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(key.end_unix - key.start_unix, 60);
        ctl.put_identity(imds::PutIdentityRequest {
            vm_resource_id: VM.into(),
            identity: Some(imds::ManagedIdentity {
                client_id: sp.app_id.clone(),
                tenant_id: "t1".into(),
                private_key_pem: "PRIVATE KEY".into(),
                certificate_pem: "CERTIFICATE".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
        let vm = ctl
            .get_vm(imds::GetVmRequest {
                resource_id: VM.to_uppercase(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(vm.identities[0].client_id, sp.app_id);

        assert_eq!(
            state.lock().service_principals[&sp.object_id]
                .key_credentials
                .len(),
            1
        );
        for existed in [true, false] {
            let r = dir
                .remove_key_credential(entra::RemoveKeyCredentialRequest {
                    object_id: sp.object_id.clone(),
                    thumbprint_sha1: key.thumbprint_sha1.to_lowercase(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.existed, existed);
        }
        let s = state.lock();
        assert!(
            s.service_principals[&sp.object_id]
                .key_credentials
                .is_empty()
        );
        assert_eq!(
            s.calls[..3],
            [
                format!("CreateServicePrincipal {VM}"),
                format!("AddKeyCredential {}", sp.object_id),
                format!("PutIdentity {VM} kind=0 client={}", sp.app_id),
            ]
        );
    }

    #[tokio::test]
    async fn what_a_fake_does_not_model_is_unimplemented() {
        let url = crate::serve(Routes::new(
            FakeDirectory::new(shared_state()).into_server(),
        ))
        .await;
        let mut dir =
            entra::directory_client::DirectoryClient::new(crate::channel_as(Caller::Imds, &url));
        let e = dir
            .issue_token(entra::IssueTokenRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        let e = dir
            .get_tenant(entra::GetTenantRequest {})
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
    }
}
