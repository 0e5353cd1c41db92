//! Renewing managed-identity certificates on demand (`misim identity renew`,
//! `misim.arm.v1.Operations/RenewCredentials`): the same persisted operation as the
//! 45-day renewal ([`super::renewal`]), marked to renew whatever the certificate's
//! age, and run inline. A tester uses it to see a client ride out a certificate
//! change without moving the clock 45 days.

use std::sync::Arc;

use super::Core;
use crate::error::ArmError;
use crate::records::*;

/// Which identities [`Core::renew_now`] renews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewWhich {
    /// Every managed identity: each VM's system-assigned one and every user-assigned one.
    All,
    /// These, each a client id, object (principal) id, user-assigned identity's resource
    /// id or VM's resource id (its system-assigned identity).
    Identities(Vec<String>),
}

/// One identity's renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    /// The resource owning the identity (the VM, or the user-assigned identity).
    pub resource_id: String,
    /// The identity's principal (object) id.
    pub principal_id: String,
    /// Its client (app) id.
    pub client_id: String,
    /// The certificate's SHA-1 thumbprint before the renewal (upper-case hex).
    pub previous_thumbprint: String,
    /// The current certificate's thumbprint after it.
    pub thumbprint: String,
    /// False when the renewal did not finish within the call (a peer is down): the
    /// operation is persisted and the reconciler completes it.
    pub done: bool,
}

/// An identity that can be renewed: its owner's table key, resource id and credential.
struct Candidate {
    target: String,
    resource_id: String,
    cred: Credential,
}

impl Candidate {
    fn named_by(&self, name: &str) -> bool {
        let name = name.trim();
        [
            &self.cred.client_id,
            &self.cred.principal_id,
            &self.resource_id,
        ]
        .iter()
        .any(|v| v.eq_ignore_ascii_case(name))
    }
}

fn thumbprint(c: &Credential) -> String {
    misim_token::cert::pem_thumbprint_sha1(&c.certificate_pem).unwrap_or_default()
}

impl Core {
    /// Every managed identity with a credential (none of a VM being deleted).
    fn renewable(&self) -> Result<Vec<Candidate>, ArmError> {
        let mut out = Vec::new();
        for (target, vm) in self.vms.all()? {
            if let (Some(cred), false) = (vm.sami, vm.state == ProvState::Deleting) {
                out.push(Candidate {
                    target,
                    resource_id: vm.id,
                    cred,
                });
            }
        }
        for (target, u) in self.uamis.all()? {
            out.push(Candidate {
                target,
                resource_id: u.id,
                cred: u.credential,
            });
        }
        Ok(out)
    }

    /// Marks a renewal of `c` that is already pending (the 45-day one, held up
    /// by a peer's outage) to renew whatever the certificate's age, so that the
    /// request renews once rather than queueing a second renewal behind it.
    /// False when none is pending. Under the owner's lock: the reconciler may
    /// be running that operation.
    async fn force_pending_roll(&self, c: &Candidate) -> Result<bool, ArmError> {
        let lock = self.locks.get(&c.target);
        let _g = lock.lock().await;
        for (_, op_id) in self.pending.scan_prefix(&format!("{}|", c.target))? {
            let Some(mut op) = self.ops.get(&op_id)? else {
                continue;
            };
            let ours = matches!(&op.kind, OpKind::CredentialRoll { principal_id, .. }
                if principal_id.eq_ignore_ascii_case(&c.cred.principal_id));
            if ours && op.status == OpStatus::InProgress && op.failed.is_none() {
                if let OpKind::CredentialRoll { force, .. } = &mut op.kind {
                    *force = true;
                }
                self.ops.put(&op.id, &op).await?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Renews the chosen identities' certificates now, one after the other, each as the
    /// 45-day renewal does it (Entra first, then IMDS; the old certificate stays registered
    /// until it expires). Every name is resolved before anything is renewed: an unknown one
    /// fails the call with [`ArmError::IdentityNotFound`] and changes nothing.
    pub async fn renew_now(self: &Arc<Self>, which: &RenewWhich) -> Result<Vec<Renewed>, ArmError> {
        let all = self.renewable()?;
        let chosen: Vec<&Candidate> = match which {
            RenewWhich::All => all.iter().collect(),
            RenewWhich::Identities(names) => {
                let mut chosen: Vec<&Candidate> = Vec::new();
                for name in names {
                    let c = all
                        .iter()
                        .find(|c| c.named_by(name))
                        .ok_or_else(|| ArmError::IdentityNotFound(name.clone()))?;
                    if !chosen.iter().any(|x| x.target == c.target) {
                        chosen.push(c);
                    }
                }
                chosen
            }
        };
        let mut out = Vec::with_capacity(chosen.len());
        for c in chosen {
            if !self.force_pending_roll(c).await? {
                let kind = OpKind::CredentialRoll {
                    principal_id: c.cred.principal_id.clone(),
                    force: true,
                };
                self.new_op(&c.target, &c.resource_id, kind).await?;
            }
            let done = self.drive_inline(&c.target).await;
            let now = self
                .owner(&c.target)?
                .and_then(|o| o.credential().map(thumbprint))
                .unwrap_or_default();
            tracing::info!(resource = %c.resource_id, done, "managed-identity certificate renewal requested");
            out.push(Renewed {
                resource_id: c.resource_id.clone(),
                principal_id: c.cred.principal_id.clone(),
                client_id: c.cred.client_id.clone(),
                previous_thumbprint: thumbprint(&c.cred),
                thumbprint: now,
                done,
            });
        }
        Ok(out)
    }
}
