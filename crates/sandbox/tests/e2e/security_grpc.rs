//! Issue #10, item 2: the gRPC control plane is not open to every local user.
//! Every call needs a credential made with the sandbox's control key
//! (`misim_proto::auth`), and each service's table says which callers may
//! call which method (the sandbox owner, `admin`, may call everything).
//! One test per attack, each asserting the exact refusal and that nothing
//! was created.

use misim_proto::arm::v1::authorization_client::AuthorizationClient;
use misim_proto::arm::v1::operations_client::OperationsClient;
use misim_proto::arm::v1::{CheckVaultAccessRequest, CreateRoleAssignmentRequest, DoctorRequest};
use misim_proto::auth::{Caller, ControlChannel, ControlKey};
use misim_proto::entra::v1::directory_client::DirectoryClient;
use misim_proto::entra::v1::{
    AddKeyCredentialRequest, CreateApplicationRequest, CreateServicePrincipalRequest,
    GetSigningKeysRequest, IssueTokenRequest, ListServicePrincipalsRequest, ServicePrincipalType,
};
use misim_proto::imds::v1::control_client::ControlClient;
use misim_proto::imds::v1::{ListVmsRequest, PutIdentityRequest, PutVmRequest, VmMetadata};
use tonic::Code;

use crate::harness::{World, start};

fn directory_as(w: &World, caller: Caller) -> DirectoryClient<ControlChannel> {
    DirectoryClient::new(w.sb.channel_as(caller, &w.sb.entra_grpc_url).unwrap())
}

fn authorization_as(w: &World, caller: Caller) -> AuthorizationClient<ControlChannel> {
    AuthorizationClient::new(w.sb.channel_as(caller, &w.sb.arm_grpc_url).unwrap())
}

fn imds_as(w: &World, caller: Caller) -> ControlClient<ControlChannel> {
    ControlClient::new(w.sb.channel_as(caller, &w.sb.imds_grpc_url).unwrap())
}

/// Service principals named `name` in Entra (asked as the owner).
async fn principals_named(w: &World, name: &str) -> usize {
    directory_as(w, Caller::Admin)
        .list_service_principals(ListServicePrincipalsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .service_principals
        .iter()
        .filter(|p| p.display_name == name)
        .count()
}

/// Role assignments of `principal` at the subscription (through ARM, as any assignment).
async fn assignments_of(w: &World, principal: &str) -> usize {
    let (s, v) = w
        .admin(
            "GET",
            &format!(
                "/subscriptions/{}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId%20eq%20'{principal}'",
                w.sub()
            ),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["value"].as_array().map_or(0, Vec::len)
}

fn assert_denied(r: Result<impl std::fmt::Debug, tonic::Status>, caller: Caller, path: &str) {
    let e = r.expect_err("the call was allowed");
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::PermissionDenied,
            format!("caller {caller} may not call {path}").as_str()
        )
    );
}

/// A local user without the key: plain h2c to Entra's port.
#[tokio::test]
async fn create_application_without_a_credential_is_unauthenticated() {
    let w = start().await;
    let mut c = DirectoryClient::new(misim_runtime::lazy_channel(&w.sb.entra_grpc_url).unwrap());
    let e = c
        .create_application(CreateApplicationRequest {
            display_name: "intruder".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(
        e.message().starts_with("missing control-plane credential"),
        "{e:?}"
    );
    assert_eq!(principals_named(&w, "intruder").await, 0);
}

/// A credential made with another key (a guess, another sandbox's) is refused.
#[tokio::test]
async fn a_credential_from_another_key_is_unauthenticated() {
    let w = start().await;
    let forged = ControlKey::generate().unwrap().credential(Caller::Admin);
    let mut c = DirectoryClient::new(
        forged.wrap(misim_runtime::lazy_channel(&w.sb.entra_grpc_url).unwrap()),
    );
    let e = c
        .create_application(CreateApplicationRequest {
            display_name: "intruder".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(
        e.message(),
        "invalid control-plane credential for caller admin: not made with this sandbox's control key"
    );
    let mut authz = AuthorizationClient::new(
        ControlKey::generate()
            .unwrap()
            .credential(Caller::Admin)
            .wrap(misim_runtime::lazy_channel(&w.sb.arm_grpc_url).unwrap()),
    );
    let e = authz
        .create_role_assignment(CreateRoleAssignmentRequest {
            principal_id: w.sb.bootstrap.admin_object_id.clone(),
            role: "Owner".into(),
            scope: format!("/subscriptions/{}", w.sub()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(principals_named(&w, "intruder").await, 0);
}

/// `CreateApplication` (a principal with a secret) is the owner's: services may not.
#[tokio::test]
async fn create_application_is_refused_to_services() {
    let w = start().await;
    for caller in [Caller::KeyVault, Caller::Imds, Caller::Arm] {
        let r = directory_as(&w, caller)
            .create_application(CreateApplicationRequest {
                display_name: "intruder".into(),
            })
            .await;
        assert_denied(r, caller, "misim.entra.v1.Directory/CreateApplication");
    }
    assert_eq!(principals_named(&w, "intruder").await, 0);
    // The owner may.
    let created = directory_as(&w, Caller::Admin)
        .create_application(CreateApplicationRequest {
            display_name: "tester".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.client_secret.len() >= 32);
    assert_eq!(principals_named(&w, "tester").await, 1);
}

/// `CreateRoleAssignment` (making someone Owner) is the owner's: services may not.
#[tokio::test]
async fn create_role_assignment_is_refused_to_services() {
    let w = start().await;
    let app = directory_as(&w, Caller::Admin)
        .create_application(CreateApplicationRequest {
            display_name: "would-be-owner".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .service_principal
        .unwrap();
    let grant = || CreateRoleAssignmentRequest {
        principal_id: app.object_id.clone(),
        role: "Owner".into(),
        scope: format!("/subscriptions/{}", w.sub()),
    };
    for caller in [Caller::KeyVault, Caller::Imds, Caller::Entra] {
        let r = authorization_as(&w, caller)
            .create_role_assignment(grant())
            .await;
        assert_denied(r, caller, "misim.arm.v1.Authorization/CreateRoleAssignment");
    }
    assert_eq!(assignments_of(&w, &app.object_id).await, 0);
    authorization_as(&w, Caller::Admin)
        .create_role_assignment(grant())
        .await
        .unwrap();
    assert_eq!(assignments_of(&w, &app.object_id).await, 1);
}

/// Only ARM (the managed-identity resource provider) creates managed-identity
/// principals and registers their certificates in Entra.
#[tokio::test]
async fn managed_identity_principals_are_arms_alone() {
    let w = start().await;
    for caller in [Caller::Imds, Caller::KeyVault, Caller::Entra] {
        let r = directory_as(&w, caller)
            .create_service_principal(CreateServicePrincipalRequest {
                request_id: format!("sec-{caller}"),
                display_name: "forged-mi".into(),
                r#type: ServicePrincipalType::ManagedIdentity as i32,
                ..Default::default()
            })
            .await;
        assert_denied(r, caller, "misim.entra.v1.Directory/CreateServicePrincipal");
        let r = directory_as(&w, caller)
            .add_key_credential(AddKeyCredentialRequest {
                object_id: w.sb.bootstrap.admin_object_id.clone(),
                certificate_der: vec![1, 2, 3],
            })
            .await;
        assert_denied(r, caller, "misim.entra.v1.Directory/AddKeyCredential");
    }
    assert_eq!(principals_named(&w, "forged-mi").await, 0);
}

/// Only ARM pushes VMs and identities (with their private keys) into IMDS.
#[tokio::test]
async fn imds_configuration_is_arms_alone() {
    let w = start().await;
    let vm = format!(
        "/subscriptions/{}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/evil",
        w.sub()
    );
    for caller in [Caller::KeyVault, Caller::Imds, Caller::Entra] {
        let mut c = imds_as(&w, caller);
        let r = c
            .put_vm(PutVmRequest {
                metadata: Some(VmMetadata {
                    resource_id: vm.clone(),
                    name: "evil".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        assert_denied(r, caller, "misim.imds.v1.Control/PutVm");
        let r = c
            .put_identity(PutIdentityRequest {
                vm_resource_id: vm.clone(),
                identity: None,
            })
            .await;
        assert_denied(r, caller, "misim.imds.v1.Control/PutIdentity");
        let r = c.list_vms(ListVmsRequest::default()).await;
        assert_denied(r, caller, "misim.imds.v1.Control/ListVms");
    }
    let vms = imds_as(&w, Caller::Admin)
        .list_vms(ListVmsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .vms;
    assert!(vms.is_empty(), "{vms:?}");
}

/// Only IMDS redeems client assertions for tokens.
#[tokio::test]
async fn issue_token_is_imds_alone() {
    let w = start().await;
    for caller in [Caller::Arm, Caller::KeyVault, Caller::Entra] {
        let r = directory_as(&w, caller)
            .issue_token(IssueTokenRequest::default())
            .await;
        assert_denied(r, caller, "misim.entra.v1.Directory/IssueToken");
    }
    // IMDS passes the table (and then fails on the empty request itself).
    let e = directory_as(&w, Caller::Imds)
        .issue_token(IssueTokenRequest::default())
        .await
        .unwrap_err();
    assert_ne!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_ne!(e.code(), Code::Unauthenticated, "{e:?}");
}

/// Services that verify tokens read the signing keys; Key Vault asks ARM for
/// vault access; the doctor report is the owner's.
#[tokio::test]
async fn readers_get_what_they_need_and_no_more() {
    let w = start().await;
    for caller in [Caller::Arm, Caller::KeyVault, Caller::Imds, Caller::Admin] {
        let keys = directory_as(&w, caller)
            .get_signing_keys(GetSigningKeysRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(!keys.keys.is_empty());
    }
    let ask = || CheckVaultAccessRequest {
        vault_name: "nope".into(),
        principal_id: w.sb.bootstrap.admin_object_id.clone(),
        data_action: "Microsoft.KeyVault/vaults/secrets/getSecret/action".into(),
    };
    let d = authorization_as(&w, Caller::KeyVault)
        .check_vault_access(ask())
        .await
        .unwrap()
        .into_inner();
    assert!(!d.vault_exists);
    let r = authorization_as(&w, Caller::Imds)
        .check_vault_access(ask())
        .await;
    assert_denied(
        r,
        Caller::Imds,
        "misim.arm.v1.Authorization/CheckVaultAccess",
    );
    let r = OperationsClient::new(
        w.sb.channel_as(Caller::KeyVault, &w.sb.arm_grpc_url)
            .unwrap(),
    )
    .doctor(DoctorRequest {})
    .await;
    assert_denied(r, Caller::KeyVault, "misim.arm.v1.Operations/Doctor");
    w.sb.doctor().await.unwrap();
}

/// Health stays open (container probes have no key): it says only "serving".
#[tokio::test]
async fn health_needs_no_credential() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let w = start().await;
    for url in [
        &w.sb.entra_grpc_url,
        &w.sb.arm_grpc_url,
        &w.sb.imds_grpc_url,
    ] {
        let st = HealthClient::new(misim_runtime::lazy_channel(url).unwrap())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(st.status, 1, "SERVING at {url}");
    }
}
