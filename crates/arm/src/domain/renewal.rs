//! Managed-identity certificate renewal, as the managed-identity resource provider does it:
//! a certificate is valid 90 days and renewed once it is 45 days old (docs/azure-protocol.md,
//! "Entra: managed-identity certificates"), by the sandbox clock.
//!
//! Each renewal is a persisted operation ([`OpKind::CredentialRoll`]) on the identity's own
//! resource (the VM for a system-assigned identity, the user-assigned identity otherwise), so it
//! queues behind that resource's other operations and resumes after a crash. Its steps keep one
//! invariant, *Entra accepts every credential IMDS holds*: the new key is persisted in the
//! operation, registered with Entra (`AddKeyCredential`), recorded as the identity's credential
//! (the old one kept as retired), and only then pushed to IMDS; the retired certificate stays
//! registered until it expires and is removed afterwards (`RemoveKeyCredential`).
//!
//! What is due is found by a scan of every identity, done only when the sandbox clock reaches the
//! earliest due time the last scan saw (or a day later at the most), when ARM starts, and when
//! the clock is moved; due identities are scheduled [`SCHEDULE_BATCH`] at a time, so a large
//! data directory never holds the reconciler (or any request) for long.

use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::Core;
use crate::error::ArmError;
use crate::peers::{IdentityKind, Principal};
use crate::records::*;

/// Validity of a managed identity's certificate.
pub(crate) const CERT_VALIDITY: Duration = Duration::from_secs(90 * 86400);
/// Age at which a certificate is renewed.
pub(crate) const RENEW_AFTER: Duration = Duration::from_secs(45 * 86400);
/// Most renewals scheduled per reconciler pass.
const SCHEDULE_BATCH: usize = 64;
/// Longest time (sandbox clock) between two scans: a renewal that failed for good is
/// scheduled again at the latest this long after.
const RESCAN_AT_LEAST_EVERY: i64 = 86400;

/// An identity found due: its resource's table key, resource id and principal.
#[derive(Debug, Clone)]
struct Due {
    target: String,
    resource_id: String,
    principal_id: String,
}

/// The renewal schedule (in memory: rebuilt by a scan at start).
#[derive(Debug)]
pub(crate) struct Renewal {
    /// Sandbox time (Unix seconds) at which the next scan is due; `i64::MIN` until the first.
    next_scan: AtomicI64,
    /// Identities found due and not scheduled yet.
    queue: std::sync::Mutex<VecDeque<Due>>,
    /// Moves of the sandbox clock, to scan at once (`Arm::follow_clock`).
    pub(crate) clock_moves: std::sync::Mutex<Option<tokio::sync::watch::Receiver<i64>>>,
}

impl Default for Renewal {
    fn default() -> Self {
        Self {
            next_scan: AtomicI64::new(i64::MIN),
            queue: std::sync::Mutex::default(),
            clock_moves: std::sync::Mutex::default(),
        }
    }
}

impl Renewal {
    /// Something becomes due at `at`: scan then at the latest.
    pub(crate) fn note_due(&self, at: i64) {
        self.next_scan.fetch_min(at, Ordering::SeqCst);
    }

    /// Scan at the next look (the clock moved).
    pub(crate) fn wake(&self) {
        self.note_due(i64::MIN);
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Due>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What renewal reads of a credential: its dates, and the certificate to read them from in
/// records written before they were kept. A full [`Credential`] and the scan's
/// [`CredentialDates`] view both have it.
pub(crate) trait CertDates {
    fn recorded_validity(&self) -> Option<(i64, i64)>;
    fn certificate_pem(&self) -> &str;
    fn retired(&self) -> &[RetiredCert];
}

/// Both types name the fields alike.
macro_rules! cert_dates_from_fields {
    ($($t:ty),*) => {$(
        impl CertDates for $t {
            fn recorded_validity(&self) -> Option<(i64, i64)> {
                self.validity
            }
            fn certificate_pem(&self) -> &str {
                &self.certificate_pem
            }
            fn retired(&self) -> &[RetiredCert] {
                &self.retired
            }
        }
    )*};
}
cert_dates_from_fields!(Credential, CredentialDates);

/// The fields of a [`Credential`] the renewal scan reads (a read-only view: the scan
/// decodes every VM and identity record, and the private key and the rest of a record are
/// skipped without being built; docs/performance.md finding 9).
#[derive(Deserialize)]
struct CredentialDates {
    principal_id: String,
    certificate_pem: String,
    #[serde(default)]
    validity: Option<(i64, i64)>,
    #[serde(default)]
    retired: Vec<RetiredCert>,
}

/// What the renewal scan reads of a VM record.
#[derive(Deserialize)]
struct VmDates {
    id: String,
    sami: Option<CredentialDates>,
    #[serde(default)]
    state: ProvState,
}

/// What the renewal scan reads of a user-assigned identity's record.
#[derive(Deserialize)]
struct UamiDates {
    id: String,
    credential: CredentialDates,
}

/// A certificate's validity: as recorded, else (records from before renewal) read from the
/// certificate itself, whose notBefore is when ARM made it. `None` when neither is readable.
pub(crate) fn validity(c: &impl CertDates) -> Option<(i64, i64)> {
    c.recorded_validity().or_else(|| {
        let der = misim_token::cert::pem_to_der(c.certificate_pem(), "CERTIFICATE").ok()?;
        let info = misim_token::cert::parse_cert(&der).ok()?;
        Some((info.not_before, info.not_after))
    })
}

/// When the certificate is due for renewal.
fn renew_at(c: &impl CertDates) -> Option<i64> {
    validity(c).map(|(nb, _)| nb.saturating_add(RENEW_AFTER.as_secs() as i64))
}

/// The earliest time anything is to be done for `c`: its renewal, or removing a retired
/// certificate once it has expired (Entra accepts a key until its notAfter included).
pub(crate) fn due_at(c: &impl CertDates) -> Option<i64> {
    let cleanup = c
        .retired()
        .iter()
        .map(|r| r.not_after.saturating_add(1))
        .min();
    match (renew_at(c), cleanup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The resource that owns an identity's credential.
pub(super) enum Owner {
    Vm(Box<VmRecord>),
    Uami(Box<UamiRecord>),
}

impl Owner {
    pub(super) fn credential(&self) -> Option<&Credential> {
        match self {
            Owner::Vm(v) => v.sami.as_ref(),
            Owner::Uami(u) => Some(&u.credential),
        }
    }

    fn set_credential(&mut self, c: Credential) {
        match self {
            Owner::Vm(v) => v.sami = Some(c),
            Owner::Uami(u) => u.credential = c,
        }
    }
}

impl Core {
    /// One look of the reconciler: scans when due, then schedules one batch.
    pub(crate) async fn renewal_tick(&self) {
        if let Err(e) = self.scan_if_due() {
            tracing::warn!(error = %e, "cannot scan identities for certificate renewal");
            return;
        }
        if let Err(e) = self.schedule_renewals(SCHEDULE_BATCH).await {
            tracing::warn!(error = %e, "cannot schedule certificate renewals");
        }
    }

    /// Scans, schedules and runs every renewal due now, inline (resuming one already
    /// pending); how many identities were due. Renewals a peer's outage holds up stay
    /// pending for the reconciler.
    pub async fn renew_due_credentials(&self) -> Result<usize, ArmError> {
        self.renewal.wake();
        self.scan_if_due()?;
        let mut targets = Vec::new();
        loop {
            let batch = self.schedule_renewals(SCHEDULE_BATCH).await?;
            if batch.is_empty() {
                break;
            }
            targets.extend(batch);
        }
        for t in &targets {
            self.drive_inline(t).await;
        }
        Ok(targets.len())
    }

    fn scan_if_due(&self) -> Result<(), ArmError> {
        let now = self.clock.unix();
        if !self.renewal.queue().is_empty() || now < self.renewal.next_scan.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.renewal
            .next_scan
            .store(now + RESCAN_AT_LEAST_EVERY, Ordering::SeqCst);
        let mut due = Vec::new();
        let mut next = i64::MAX;
        let mut consider = |target: String, resource_id: &str, c: &CredentialDates| match due_at(c)
        {
            Some(t) if t <= now => due.push(Due {
                target,
                resource_id: resource_id.to_owned(),
                principal_id: c.principal_id.clone(),
            }),
            Some(t) => next = next.min(t),
            None => tracing::warn!(
                resource_id,
                "managed-identity certificate unreadable; not renewed"
            ),
        };
        // Streamed, one record at a time: collected, the views of 100,000 VMs
        // (each with its certificate's PEM) added about 200 MiB to the
        // process after a restart (docs/performance.md finding 12).
        self.vms.for_each_as::<VmDates>(|k, vm| {
            if let (Some(c), false) = (&vm.sami, vm.state == ProvState::Deleting) {
                consider(k, &vm.id, c);
            }
        })?;
        self.uamis
            .for_each_as::<UamiDates>(|k, u| consider(k, &u.id, &u.credential))?;
        if !due.is_empty() {
            tracing::info!(
                due = due.len(),
                "managed-identity certificates due for renewal"
            );
        }
        self.renewal.note_due(next);
        self.renewal.queue().extend(due);
        Ok(())
    }

    /// Writes up to `n` renewal operations from the queue (none for an identity that has one
    /// pending already); the targets taken from the queue.
    async fn schedule_renewals(&self, n: usize) -> Result<Vec<String>, ArmError> {
        let batch: Vec<Due> = {
            let mut q = self.renewal.queue();
            let take = q.len().min(n);
            q.drain(..take).collect()
        };
        let mut scheduled = Vec::new();
        for d in batch {
            if self.roll_pending(&d.target)? {
                scheduled.push(d.target);
                continue;
            }
            self.new_op(
                &d.target,
                &d.resource_id,
                OpKind::CredentialRoll {
                    principal_id: d.principal_id,
                    force: false,
                },
            )
            .await?;
            scheduled.push(d.target);
        }
        Ok(scheduled)
    }

    fn roll_pending(&self, target: &str) -> Result<bool, ArmError> {
        for (_, op_id) in self.pending.scan_prefix(&format!("{target}|"))? {
            if let Some(op) = self.ops.get(&op_id)?
                && op.status == OpStatus::InProgress
                && matches!(op.kind, OpKind::CredentialRoll { .. })
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub(super) fn owner(&self, target: &str) -> Result<Option<Owner>, ArmError> {
        if let Some(v) = self.vms.get(target)? {
            return Ok(Some(Owner::Vm(Box::new(v))));
        }
        Ok(self.uamis.get(target)?.map(|u| Owner::Uami(Box::new(u))))
    }

    async fn save_owner(&self, target: &str, owner: &Owner) -> Result<(), ArmError> {
        match owner {
            Owner::Vm(v) => self.vms.put(target, v).await,
            Owner::Uami(u) => self.uamis.put(target, u).await,
        }
        .map_err(Into::into)
    }

    /// The operation: renew if due or forced (or resume a renewal), push the current credential to
    /// IMDS, remove expired retired certificates from Entra. Runs under the target's lock.
    pub(crate) async fn run_credential_roll(
        &self,
        op: &mut OpRecord,
        principal_id: &str,
    ) -> Result<(), ArmError> {
        let Some(mut owner) = self.owner(&op.target)? else {
            return Ok(());
        };
        let deleting = matches!(&owner, Owner::Vm(v) if v.state == ProvState::Deleting);
        let Some(mut cred) = owner.credential().cloned() else {
            return Ok(());
        };
        if deleting || !cred.principal_id.eq_ignore_ascii_case(principal_id) {
            // Deleted, disabled or replaced since it was scheduled: nothing to renew.
            return Ok(());
        }
        let now = self.clock.unix();
        let forced = matches!(op.kind, OpKind::CredentialRoll { force: true, .. });
        if op.pending_cred.is_some() || forced || renew_at(&cred).is_some_and(|t| t <= now) {
            cred = self.renew(op, &mut owner, cred).await?;
        }
        self.push_current(&owner, &cred).await?;
        let expired: Vec<RetiredCert> = cred
            .retired
            .iter()
            .filter(|r| r.not_after < now)
            .cloned()
            .collect();
        for r in &expired {
            self.peers
                .remove_key_credential(&cred.principal_id, &r.thumbprint_sha1)
                .await?;
            cred.retired.retain(|x| x != r);
            owner.set_credential(cred.clone());
            self.save_owner(&op.target, &owner).await?;
            tracing::info!(resource = %op.resource_id, thumbprint = %r.thumbprint_sha1, "expired managed-identity certificate removed");
        }
        if let Some(t) = due_at(&cred) {
            self.renewal.note_due(t);
        }
        Ok(())
    }

    /// Steps 1-3 of a renewal: the new credential persisted in the operation, registered with
    /// Entra, then recorded as the identity's (the old one retired). Returns the new credential.
    async fn renew(
        &self,
        op: &mut OpRecord,
        owner: &mut Owner,
        old: Credential,
    ) -> Result<Credential, ArmError> {
        let new = match op.pending_cred.clone() {
            Some(c) => c,
            None => {
                let c = self
                    .new_credential(&Principal {
                        object_id: old.principal_id.clone(),
                        app_id: old.client_id.clone(),
                    })
                    .await?;
                op.pending_cred = Some(c.clone());
                self.ops.put(&op.id, op).await?;
                c
            }
        };
        self.peers.register_certificate(&new).await?;
        let old_thumb = misim_token::cert::pem_thumbprint_sha1(&old.certificate_pem).ok();
        let new_thumb = misim_token::cert::pem_thumbprint_sha1(&new.certificate_pem).ok();
        let cred = if old_thumb == new_thumb {
            // A crash came after the record was written: it already holds the new one.
            old
        } else {
            let mut retired = old.retired.clone();
            if let (Some(t), Some((_, not_after))) = (old_thumb, validity(&old)) {
                retired.push(RetiredCert {
                    thumbprint_sha1: t,
                    not_after,
                });
            }
            let cred = Credential { retired, ..new };
            owner.set_credential(cred.clone());
            self.save_owner(&op.target, owner).await?;
            tracing::info!(resource = %op.resource_id, "managed-identity certificate renewed");
            cred
        };
        op.pending_cred = None;
        // Done: a resumed (forced) operation must not renew again.
        if let OpKind::CredentialRoll { force, .. } = &mut op.kind {
            *force = false;
        }
        self.ops.put(&op.id, op).await?;
        Ok(cred)
    }

    /// Pushes the identity's current credential to every VM whose IMDS serves it.
    async fn push_current(&self, owner: &Owner, cred: &Credential) -> Result<(), ArmError> {
        let tenant = &self.config.tenant_id;
        match owner {
            Owner::Vm(vm) => {
                self.peers
                    .push_renewed(&vm.id, IdentityKind::System, &vm.id, tenant, cred)
                    .await?;
            }
            Owner::Uami(u) => {
                let id_key = u.id.to_ascii_lowercase();
                for (vk, vm) in self.vms.all()? {
                    if !vm.uamis.contains_key(&id_key) {
                        continue;
                    }
                    // Under the VM's lock, re-read: a VM operation that detached the
                    // identity (or deleted the VM) meanwhile has the last word.
                    let lock = self.locks.get(&vk);
                    let _g = lock.lock().await;
                    let Some(vm) = self.vms.get(&vk)? else {
                        continue;
                    };
                    let carries = vm.state != ProvState::Deleting
                        && self
                            .live_uamis(&vm)?
                            .iter()
                            .any(|l| l.credential.principal_id == cred.principal_id);
                    if carries {
                        self.peers
                            .push_renewed(&vm.id, IdentityKind::User, &u.id, tenant, cred)
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(validity: Option<(i64, i64)>, retired: &[i64]) -> Credential {
        Credential {
            principal_id: "p".into(),
            client_id: "c".into(),
            certificate_pem: String::new(),
            private_key_pem: String::new(),
            validity,
            retired: retired
                .iter()
                .map(|t| RetiredCert {
                    thumbprint_sha1: format!("T{t}"),
                    not_after: *t,
                })
                .collect(),
        }
    }

    #[test]
    fn due_is_the_renewal_at_45_days_or_an_expired_retired_certificate_first() {
        let day = 86400;
        assert_eq!(due_at(&cred(Some((0, 90 * day)), &[])), Some(45 * day));
        assert_eq!(
            due_at(&cred(Some((0, 90 * day)), &[10 * day])),
            Some(10 * day + 1),
            "a retired certificate goes the second after it expires"
        );
        assert_eq!(due_at(&cred(None, &[])), None, "unreadable: never due");
    }

    #[test]
    fn a_record_from_before_renewal_reads_its_validity_from_the_certificate() {
        let t0 = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let cert = misim_token::cert::generate_ec_cert("c", t0, t0 + CERT_VALIDITY).unwrap();
        let mut c = cred(None, &[]);
        c.certificate_pem = cert.certificate_pem;
        assert_eq!(
            validity(&c),
            Some((1_700_000_000, 1_700_000_000 + 90 * 86400))
        );
        assert_eq!(renew_at(&c), Some(1_700_000_000 + 45 * 86400));
        // Records of that shape (no validity, no retired list) still read.
        let old = serde_json::json!({"principal_id": "p", "client_id": "c",
            "certificate_pem": "", "private_key_pem": ""});
        let r: Credential = serde_json::from_value(old).unwrap();
        assert_eq!((r.validity, r.retired.len()), (None, 0));
    }
}
