//! ARM's calls to its peers: Entra's `Directory` (managed-identity principals,
//! their certificates, signing keys) and `Federation` (the federated identity
//! credentials of user-assigned identities), and IMDS's `Control` (VMs and the
//! identities they carry). The one module besides `grpc*.rs` that sees generated
//! proto types; the domain speaks in records and the small types below.
//!
//! A failed call becomes an [`ArmError`] here, once: `PeerUnavailable` when it
//! is worth retrying (the peer is down, slow or overloaded, or the connection
//! failed), else `PeerFailed`. Calls the domain makes idempotent treat the
//! peer's `NotFound` as done.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex};

use misim_proto::entra::v1 as entra;
use misim_proto::faults::PeerChannel;
use misim_proto::imds::v1 as imds;
use misim_proto::keys::{EntraKeys, KeysError, Trusted};
use misim_token::TokenError;
use misim_token::verify::{SKEW_SECS, peek_kid, verify_access_token};
use misim_types::{Clock, ErrorCode};
use serde_json::Value;
use tonic::Status;

use crate::error::ArmError;
use crate::records::{Credential, FicRecord, VmRecord};

const ENTRA: &str = "entra";
const IMDS: &str = "imds";

/// A managed-identity principal Entra created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    /// Object id (`principalId`).
    pub object_id: String,
    /// App id (`clientId`).
    pub app_id: String,
}

/// A managed-identity principal as Entra lists it (for `doctor`).
#[derive(Debug, Clone)]
pub(crate) struct ListedPrincipal {
    pub object_id: String,
    pub resource_id: String,
    /// SHA-1 thumbprints of its key credentials, upper-case hex.
    pub thumbprints: Vec<String>,
}

/// A VM as IMDS serves it (for `doctor`).
#[derive(Debug, Clone)]
pub(crate) struct ImdsVm {
    pub resource_id: String,
    pub identities: Vec<ImdsIdentity>,
}

/// An identity IMDS signs for on a VM.
#[derive(Debug, Clone)]
pub(crate) struct ImdsIdentity {
    pub client_id: String,
    pub object_id: String,
    pub certificate_thumbprint: String,
}

/// Which identity of a VM is pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdentityKind {
    System,
    User,
}

/// An identity a VM carries, as pushed to IMDS with the VM (`put_vm`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct VmIdentity<'a> {
    pub kind: IdentityKind,
    /// The identity's resource id: the VM's own for a system-assigned one.
    pub resource_id: &'a str,
    pub tenant_id: &'a str,
    pub credential: &'a Credential,
}

/// Most bearer tokens [`Verified`] remembers; when full it starts over.
const VERIFIED_CAPACITY: usize = 1024;

/// Bearer tokens whose signature has been checked, by their exact text.
///
/// Every ARM request carries a bearer token and a client reuses one token
/// for its whole lifetime (an hour), but checking its RS256 signature is the
/// largest single cost of a request: about 0.47 million instructions, a
/// sixth of a VM PUT's and a fifth of a user-assigned identity PUT's
/// (callgrind, `examples/provision_cost.rs`). Whether a signature verifies
/// depends only on the token's bytes and the key, so an entry holds the
/// trusted key set it was checked against and counts only while that set is
/// still the current one (a key refresh starts over). What depends on the
/// time, the token's lifetime, is checked again on every use; a token that
/// fails it goes the full way, which words the error.
#[derive(Default)]
struct Verified(Mutex<HashMap<Box<str>, VerifiedToken>>);

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys are bearer tokens: count them, never print them.
        let n = self.0.lock().map_or(0, |m| m.len());
        write!(f, "Verified({n})")
    }
}

#[derive(Debug)]
struct VerifiedToken {
    /// The key set whose key verified the signature.
    trusted: Arc<Trusted>,
    nbf: i64,
    exp: i64,
    /// The caller's object id.
    oid: String,
}

impl Verified {
    /// The caller's object id if `token` was verified against `trusted`
    /// (the current set) and is within its lifetime at `now`.
    fn get(&self, token: &str, trusted: &Arc<Trusted>, now: i64) -> Option<String> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let v = m.get(token)?;
        // The same bounds `verify_access_token` applies, skew included.
        let live = now.saturating_sub(v.exp) <= SKEW_SECS && now.saturating_add(SKEW_SECS) >= v.nbf;
        (Arc::ptr_eq(&v.trusted, trusted) && live).then(|| v.oid.clone())
    }

    fn insert(&self, token: &str, v: VerifiedToken) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= VERIFIED_CAPACITY {
            m.clear();
        }
        m.insert(token.into(), v);
    }
}

/// ARM's clients of Entra and IMDS.
#[derive(Debug)]
pub(crate) struct Peers {
    /// Entra's signing keys (bearer-token verification).
    keys: EntraKeys,
    /// Bearer tokens already verified against `keys`.
    verified: Verified,
    directory: entra::directory_client::DirectoryClient<PeerChannel>,
    federation: entra::federation_client::FederationClient<PeerChannel>,
    imds: imds::control_client::ControlClient<PeerChannel>,
}

/// Whether a failed call may succeed if retried: by the status code (peer
/// down, deadline, cancelled, overloaded) or, for statuses tonic made from a
/// local error, by the error's type (the connection failed).
fn transient(s: &Status) -> bool {
    if matches!(
        misim_proto::status_to_code(s),
        ErrorCode::Unavailable | ErrorCode::TooManyRequests
    ) {
        return true;
    }
    let mut source = s.source();
    while let Some(e) = source {
        if e.is::<tonic::transport::Error>()
            || e.is::<tonic::ConnectError>()
            || e.is::<tonic::TimeoutExpired>()
            || e.is::<std::io::Error>()
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// The one mapping of a peer's failure into ARM's errors. The peer's message
/// is logged here and goes no further: ARM's callers see fixed text.
fn failed(peer: &'static str, s: Status) -> ArmError {
    let reason = misim_proto::status::reason_of(&s, misim_proto::status::ENTRA_DOMAIN);
    if transient(&s) {
        tracing::warn!(peer, code = ?s.code(), message = s.message(), "peer unavailable");
        ArmError::PeerUnavailable { peer }
    } else {
        tracing::warn!(peer, code = ?s.code(), reason = ?reason, message = s.message(), "peer call failed");
        ArmError::PeerFailed { peer }
    }
}

fn is_not_found(s: &Status) -> bool {
    misim_proto::status_to_code(s) == ErrorCode::NotFound
}

impl Peers {
    /// Clients over channels the caller built (with fault hooks in tests).
    pub(crate) fn new(
        keys: EntraKeys,
        directory: entra::directory_client::DirectoryClient<PeerChannel>,
        federation: entra::federation_client::FederationClient<PeerChannel>,
        imds: imds::control_client::ControlClient<PeerChannel>,
    ) -> Self {
        Self {
            keys,
            verified: Verified::default(),
            directory,
            federation,
            imds,
        }
    }

    /// Peers at a closed port: for unit tests whose code never calls them.
    #[cfg(test)]
    pub(crate) fn unreachable() -> Self {
        use misim_proto::faults::Faults;
        let ch = misim_proto::auth::ControlKey::from_bytes([0; 32])
            .credential(misim_proto::auth::Caller::Arm)
            .wrap(misim_runtime::lazy_channel("http://127.0.0.1:9").expect("a valid url"));
        Self::new(
            EntraKeys::new(entra::directory_client::DirectoryClient::new(ch.clone())),
            entra::directory_client::DirectoryClient::new(Faults::none().wrap(ch.clone())),
            entra::federation_client::FederationClient::new(Faults::none().wrap(ch.clone())),
            imds::control_client::ControlClient::new(Faults::none().wrap(ch)),
        )
    }

    // ------------------------------------------------------------- Entra

    /// Verifies an ARM bearer token against Entra's keys; the caller's object id.
    /// A token verified before against the current keys skips the signature
    /// check ([`Verified`]); its lifetime is checked every time.
    pub(crate) async fn verify_bearer(
        &self,
        token: &str,
        clock: &dyn Clock,
    ) -> Result<String, ArmError> {
        match self.verify_cached(token, clock).await {
            Ok(oid) => Ok(oid),
            Err(KeysError::Token(TokenError::Lifetime(m))) => Err(ArmError::ExpiredToken(m)),
            Err(KeysError::Token(TokenError::Claim {
                claim: "aud",
                reason,
            })) => Err(ArmError::WrongAudience(reason)),
            Err(KeysError::Token(e)) => Err(ArmError::InvalidToken(e.to_string())),
            Err(KeysError::Unavailable(m)) => {
                tracing::warn!(peer = ENTRA, message = %m, "signing keys unavailable");
                Err(ArmError::PeerUnavailable { peer: ENTRA })
            }
        }
    }

    /// [`EntraKeys::verify`] for ARM's audience, remembering what verified.
    async fn verify_cached(&self, token: &str, clock: &dyn Clock) -> Result<String, KeysError> {
        // As `EntraKeys::verify`: the header first (a malformed token is
        // refused without asking Entra), then the key set for its kid.
        let kid = peek_kid(token)?;
        let trusted = self.keys.trusted(kid.as_deref()).await?;
        // Only an entry checked against this very set counts.
        if let Some(oid) = self.verified.get(token, &trusted, clock.unix()) {
            return Ok(oid);
        }
        let issuers: Vec<&str> = trusted.issuers.iter().map(String::as_str).collect();
        let c = verify_access_token(
            token,
            &trusted.keys,
            &issuers,
            clock,
            misim_types::audiences::is_arm,
        )?;
        self.verified.insert(
            token,
            VerifiedToken {
                trusted,
                nbf: c.nbf,
                exp: c.exp,
                oid: c.oid.clone(),
            },
        );
        Ok(c.oid)
    }

    /// Step 2: creates (idempotently by `request_id`) the managed-identity
    /// principal of `resource_id`, named `display_name` or else after the resource.
    pub(crate) async fn create_principal(
        &self,
        request_id: &str,
        display_name: &str,
        resource_id: &str,
    ) -> Result<Principal, ArmError> {
        let req = principal_request(request_id, display_name, resource_id);
        let (sp, _) = self.create_service_principal(req, None).await?;
        Ok(sp)
    }

    /// Step 2 in one call: creates the principal (idempotent by `request_id`)
    /// with the ids `c` was made for and registers `c`'s certificate in the
    /// same write. True when the certificate is registered on the returned
    /// principal; false when a reservation gave it other ids (or an Entra that
    /// predates the fold ignored the ids and the certificate), so the caller
    /// registers a credential made for the returned ids itself.
    pub(crate) async fn create_principal_with(
        &self,
        request_id: &str,
        display_name: &str,
        resource_id: &str,
        c: &Credential,
    ) -> Result<(Principal, bool), ArmError> {
        let der = misim_token::cert::pem_to_der(&c.certificate_pem, "CERTIFICATE")
            .map_err(|e| ArmError::Internal(e.to_string()))?;
        let thumbprint = misim_token::hex_upper(&misim_token::sha1(&der));
        let req = entra::CreateServicePrincipalRequest {
            app_id: c.client_id.clone(),
            object_id: c.principal_id.clone(),
            certificate_der: der,
            ..principal_request(request_id, display_name, resource_id)
        };
        self.create_service_principal(req, Some(&thumbprint)).await
    }

    /// The call itself; whether the principal has the certificate `thumbprint`.
    async fn create_service_principal(
        &self,
        req: entra::CreateServicePrincipalRequest,
        thumbprint: Option<&str>,
    ) -> Result<(Principal, bool), ArmError> {
        let sp = self
            .directory
            .clone()
            .create_service_principal(req)
            .await
            .map_err(|s| failed(ENTRA, s))?
            .into_inner();
        let registered = thumbprint.is_some_and(|t| {
            sp.key_credentials
                .iter()
                .any(|k| k.thumbprint_sha1.eq_ignore_ascii_case(t))
        });
        let p = Principal {
            object_id: sp.object_id,
            app_id: sp.app_id,
        };
        Ok((p, registered))
    }

    /// Step 2: registers a credential's certificate (idempotent by thumbprint).
    pub(crate) async fn register_certificate(&self, c: &Credential) -> Result<(), ArmError> {
        let der = misim_token::cert::pem_to_der(&c.certificate_pem, "CERTIFICATE")
            .map_err(|e| ArmError::Internal(e.to_string()))?;
        self.directory
            .clone()
            .add_key_credential(entra::AddKeyCredentialRequest {
                object_id: c.principal_id.clone(),
                certificate_der: der,
            })
            .await
            .map_err(|s| failed(ENTRA, s))?;
        Ok(())
    }

    /// Removes a certificate from a principal by thumbprint (done when either is gone).
    pub(crate) async fn remove_key_credential(
        &self,
        object_id: &str,
        thumbprint_sha1: &str,
    ) -> Result<(), ArmError> {
        match self
            .directory
            .clone()
            .remove_key_credential(entra::RemoveKeyCredentialRequest {
                object_id: object_id.to_owned(),
                thumbprint_sha1: thumbprint_sha1.to_owned(),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if is_not_found(&s) => Ok(()),
            Err(s) => Err(failed(ENTRA, s)),
        }
    }

    /// Deletes a principal (deleting one that is gone succeeds).
    pub(crate) async fn delete_principal(&self, object_id: &str) -> Result<(), ArmError> {
        self.directory
            .clone()
            .delete_service_principal(entra::DeleteServicePrincipalRequest {
                object_id: object_id.to_owned(),
            })
            .await
            .map_err(|s| failed(ENTRA, s))?;
        Ok(())
    }

    /// Creates or replaces (by name) a federated identity credential of the
    /// principal `client_id`. False when the principal is gone (its identity
    /// was deleted: Entra deleted its credentials with it).
    pub(crate) async fn put_federated_credential(
        &self,
        client_id: &str,
        f: &FicRecord,
    ) -> Result<bool, ArmError> {
        let req = entra::PutFederatedCredentialRequest {
            app_id: client_id.to_owned(),
            credential: Some(entra::FederatedCredential {
                id: String::new(),
                name: f.name.clone(),
                issuer: f.issuer.clone(),
                subject: f.subject.clone(),
                audiences: f.audiences.clone(),
                description: String::new(),
            }),
        };
        match self.federation.clone().put_federated_credential(req).await {
            Ok(_) => Ok(true),
            Err(s) if is_not_found(&s) => Ok(false),
            Err(s) => Err(failed(ENTRA, s)),
        }
    }

    /// Deletes a federated identity credential by name (one that is gone,
    /// or whose principal is gone, counts as deleted).
    pub(crate) async fn delete_federated_credential(
        &self,
        client_id: &str,
        name: &str,
    ) -> Result<(), ArmError> {
        let req = entra::DeleteFederatedCredentialRequest {
            app_id: client_id.to_owned(),
            name: name.to_owned(),
        };
        match self
            .federation
            .clone()
            .delete_federated_credential(req)
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if is_not_found(&s) => Ok(()),
            Err(s) => Err(failed(ENTRA, s)),
        }
    }

    /// Whether the directory knows the principal (a role assignment's target).
    pub(crate) async fn principal_exists(&self, object_id: &str) -> Result<bool, ArmError> {
        match self
            .directory
            .clone()
            .get_service_principal(entra::GetServicePrincipalRequest {
                object_id: object_id.to_owned(),
                app_id: String::new(),
            })
            .await
        {
            Ok(_) => Ok(true),
            // Not a GUID is as unknown as a GUID nobody has.
            Err(s) if is_not_found(&s) || s.code() == tonic::Code::InvalidArgument => Ok(false),
            Err(s) => Err(failed(ENTRA, s)),
        }
    }

    /// Every managed-identity principal in the directory.
    pub(crate) async fn managed_identity_principals(
        &self,
    ) -> Result<Vec<ListedPrincipal>, ArmError> {
        let sps = misim_proto::all_principals(&self.directory)
            .await
            .map_err(|s| failed(ENTRA, s))?;
        Ok(sps
            .into_iter()
            .filter(|s| !s.managed_identity_resource_id.is_empty())
            .map(|s| ListedPrincipal {
                thumbprints: s
                    .key_credentials
                    .into_iter()
                    .map(|k| k.thumbprint_sha1)
                    .collect(),
                object_id: s.object_id,
                resource_id: s.managed_identity_resource_id,
            })
            .collect())
    }

    // -------------------------------------------------------------- IMDS

    /// Step 3 in one call: IMDS learns the VM (and gives it an address) and
    /// configures `identities` on it in the same write (each as `PutIdentity`
    /// would; identities not named stay). Returns the client ids of the
    /// identities IMDS serves on the VM after that write.
    pub(crate) async fn put_vm(
        &self,
        v: &VmRecord,
        subscription_id: &str,
        private_ip: Option<String>,
        identities: &[VmIdentity<'_>],
    ) -> Result<Vec<String>, ArmError> {
        let vm = self
            .imds
            .clone()
            .put_vm(imds::PutVmRequest {
                metadata: Some(vm_metadata(v, subscription_id, private_ip)),
                identities: identities.iter().map(managed_identity).collect(),
            })
            .await
            .map_err(|s| failed(IMDS, s))?
            .into_inner();
        Ok(vm.identities.into_iter().map(|i| i.client_id).collect())
    }

    /// Pushes a renewed credential to a VM; false when IMDS does not know the VM (yet:
    /// the VM's own operation pushes the current credential once it has put the VM).
    pub(crate) async fn push_renewed(
        &self,
        vm_id: &str,
        kind: IdentityKind,
        resource_id: &str,
        tenant_id: &str,
        c: &Credential,
    ) -> Result<bool, ArmError> {
        match self
            .put_identity(vm_id, kind, resource_id, tenant_id, c)
            .await
        {
            Ok(()) => Ok(true),
            Err(s) if is_not_found(&s) => Ok(false),
            Err(s) => Err(failed(IMDS, s)),
        }
    }

    async fn put_identity(
        &self,
        vm_id: &str,
        kind: IdentityKind,
        resource_id: &str,
        tenant_id: &str,
        c: &Credential,
    ) -> Result<(), Status> {
        let identity = VmIdentity {
            kind,
            resource_id,
            tenant_id,
            credential: c,
        };
        self.imds
            .clone()
            .put_identity(imds::PutIdentityRequest {
                vm_resource_id: vm_id.to_owned(),
                identity: Some(managed_identity(&identity)),
            })
            .await?;
        Ok(())
    }

    /// Removes an identity from a VM (done when either is gone).
    pub(crate) async fn remove_identity(
        &self,
        vm_id: &str,
        client_id: &str,
    ) -> Result<(), ArmError> {
        match self
            .imds
            .clone()
            .remove_identity(imds::RemoveIdentityRequest {
                vm_resource_id: vm_id.to_owned(),
                client_id: client_id.to_owned(),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if is_not_found(&s) => Ok(()),
            Err(s) => Err(failed(IMDS, s)),
        }
    }

    /// Deletes a VM and its identities from IMDS (done when it is gone).
    pub(crate) async fn delete_vm(&self, vm_id: &str) -> Result<(), ArmError> {
        match self
            .imds
            .clone()
            .delete_vm(imds::DeleteVmRequest {
                resource_id: vm_id.to_owned(),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if is_not_found(&s) => Ok(()),
            Err(s) => Err(failed(IMDS, s)),
        }
    }

    /// Every VM IMDS serves, with its identities.
    pub(crate) async fn imds_vms(&self) -> Result<Vec<ImdsVm>, ArmError> {
        let vms = misim_proto::all_vms(&self.imds)
            .await
            .map_err(|s| failed(IMDS, s))?;
        Ok(vms
            .into_iter()
            .map(|v| ImdsVm {
                resource_id: v.metadata.map(|m| m.resource_id).unwrap_or_default(),
                identities: v
                    .identities
                    .into_iter()
                    .map(|i| ImdsIdentity {
                        client_id: i.client_id,
                        object_id: i.object_id,
                        certificate_thumbprint: i.certificate_thumbprint,
                    })
                    .collect(),
            })
            .collect())
    }
}

/// A managed-identity principal's create request, without ids or certificate.
fn principal_request(
    request_id: &str,
    display_name: &str,
    resource_id: &str,
) -> entra::CreateServicePrincipalRequest {
    let display = if display_name.is_empty() {
        resource_id.rsplit('/').next().unwrap_or(resource_id)
    } else {
        display_name
    };
    entra::CreateServicePrincipalRequest {
        request_id: request_id.to_owned(),
        display_name: display.to_owned(),
        r#type: entra::ServicePrincipalType::ManagedIdentity as i32,
        managed_identity_resource_id: resource_id.to_owned(),
        ..Default::default()
    }
}

/// One identity of a VM as IMDS is given it: ids, certificate and key.
fn managed_identity(i: &VmIdentity<'_>) -> imds::ManagedIdentity {
    let kind = match i.kind {
        IdentityKind::System => imds::IdentityKind::SystemAssigned,
        IdentityKind::User => imds::IdentityKind::UserAssigned,
    };
    let c = i.credential;
    imds::ManagedIdentity {
        kind: kind as i32,
        client_id: c.client_id.clone(),
        object_id: c.principal_id.clone(),
        resource_id: i.resource_id.to_owned(),
        tenant_id: i.tenant_id.to_owned(),
        certificate_pem: c.certificate_pem.clone(),
        private_key_pem: c.private_key_pem.clone(),
    }
}

/// What IMDS's `/metadata/instance` serves for a VM, from its record.
fn vm_metadata(
    v: &VmRecord,
    subscription_id: &str,
    private_ip: Option<String>,
) -> imds::VmMetadata {
    let p = &v.properties;
    let s = |ptr: &str| {
        p.pointer(ptr)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let os_type = match s("/storageProfile/osDisk/osType") {
        t if !t.is_empty() => t,
        _ if p.pointer("/osProfile/windowsConfiguration").is_some() => "Windows".into(),
        _ => "Linux".into(),
    };
    let computer_name = match s("/osProfile/computerName") {
        c if c.is_empty() => v.name.clone(),
        c => c,
    };
    imds::VmMetadata {
        resource_id: v.id.clone(),
        vm_id: v.vm_id.clone(),
        name: v.name.clone(),
        resource_group: v.resource_group.clone(),
        subscription_id: subscription_id.to_owned(),
        location: v.location.clone(),
        vm_size: s("/hardwareProfile/vmSize"),
        os_type,
        tags: v
            .tags
            .iter()
            .map(|(k, val)| {
                (
                    k.clone(),
                    val.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| val.to_string()),
                )
            })
            .collect(),
        publisher: s("/storageProfile/imageReference/publisher"),
        offer: s("/storageProfile/imageReference/offer"),
        sku: s("/storageProfile/imageReference/sku"),
        version: s("/storageProfile/imageReference/version"),
        admin_username: s("/osProfile/adminUsername"),
        computer_name,
        private_ip: private_ip.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> Arc<Trusted> {
        Arc::new(Trusted {
            keys: misim_token::verify::KeySet::new("tenant"),
            issuers: vec!["https://issuer/".into()],
        })
    }

    fn entry(trusted: &Arc<Trusted>, nbf: i64, exp: i64) -> VerifiedToken {
        VerifiedToken {
            trusted: trusted.clone(),
            nbf,
            exp,
            oid: "caller".into(),
        }
    }

    #[test]
    fn a_verified_token_counts_only_within_its_lifetime_and_against_the_same_keys() {
        let (keys, refreshed) = (trusted(), trusted());
        let v = Verified::default();
        v.insert("token", entry(&keys, 1_000, 2_000));
        assert_eq!(v.get("token", &keys, 1_500).as_deref(), Some("caller"));
        assert_eq!(v.get("other", &keys, 1_500), None, "only the exact text");
        // The same skew `verify_access_token` allows, and not a second more.
        assert!(v.get("token", &keys, 1_000 - SKEW_SECS).is_some());
        assert!(v.get("token", &keys, 1_000 - SKEW_SECS - 1).is_none());
        assert!(v.get("token", &keys, 2_000 + SKEW_SECS).is_some());
        assert!(v.get("token", &keys, 2_000 + SKEW_SECS + 1).is_none());
        // Keys fetched again (rotation): the signature is checked again.
        assert!(v.get("token", &refreshed, 1_500).is_none());
    }

    #[test]
    fn the_verified_tokens_stay_bounded() {
        let keys = trusted();
        let v = Verified::default();
        for i in 0..=VERIFIED_CAPACITY {
            v.insert(&format!("t{i}"), entry(&keys, 0, 10));
            assert!(v.0.lock().unwrap().len() <= VERIFIED_CAPACITY);
        }
        let last = format!("t{VERIFIED_CAPACITY}");
        assert!(v.get(&last, &keys, 5).is_some());
    }

    #[test]
    fn transience_is_decided_by_code_and_error_type_not_message() {
        assert!(transient(&Status::unavailable("x")));
        assert!(transient(&Status::deadline_exceeded("x")));
        assert!(!transient(&Status::internal("transport error")));
        assert!(!transient(&Status::unknown("error trying to connect")));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let from_io = Status::from_error(Box::new(io));
        assert_eq!(from_io.code(), tonic::Code::Unknown);
        assert!(transient(&from_io));
        assert!(matches!(
            failed(ENTRA, from_io),
            ArmError::PeerUnavailable { peer: "entra", .. }
        ));
        assert!(matches!(
            failed(IMDS, Status::not_found("gone")),
            ArmError::PeerFailed { peer: "imds", .. }
        ));
    }

    #[test]
    fn a_peers_message_never_reaches_arms_callers() {
        for s in [
            Status::internal("store at /var/lib/entra: disk full"),
            Status::unavailable("10.0.0.7:50051 refused"),
        ] {
            let e = failed(ENTRA, s);
            let shown = serde_json::to_string(&e.body()).unwrap();
            assert!(
                !shown.contains("disk") && !shown.contains("10.0.0.7"),
                "{shown}"
            );
        }
        let e = ArmError::Internal("key at /secret/path".into());
        assert_eq!(e.to_string(), crate::error::INTERNAL_MESSAGE);
        assert_eq!(e.arm_code(), "InternalServerError");
        assert_eq!(e.detail().as_deref(), Some("key at /secret/path"));
    }
}
