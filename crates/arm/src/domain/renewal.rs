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
//! earliest due time the last scan saw (or a day later at the most), and when the clock is moved;
//! due identities are scheduled [`SCHEDULE_BATCH`] at a time, so a large data directory never
//! holds the reconciler (or any request) for long.
//!
//! That time is kept on disk ([`NEXT_SCAN_KEY`]), so a restart scans only when something is due
//! then: a scan reads every VM and identity record, about 2 s of CPU and 200 MiB of sled's
//! cache at 100,000 VMs (docs/performance.md finding 13). What keeps it safe to skip is one
//! invariant, *no identity's due time is earlier than the stored time unless a renewal
//! operation is pending for it*: a scan stores its result only once every identity it found due
//! has its operation written, and a credential due earlier than the stored time (only possible
//! once the clock was moved backwards) lowers it before the credential's record is written, so
//! the record's flush carries it.

use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use misim_store::{Store, StoreError, Table};

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
/// The key under which the next scan's time is stored, in ARM's schedule table.
pub(crate) const NEXT_SCAN_KEY: &str = "renewal.next_scan";

/// An identity found due: its resource's table key, resource id and principal.
#[derive(Debug, Clone)]
struct Due {
    target: String,
    resource_id: String,
    principal_id: String,
}

/// The renewal schedule: the next scan's time, in memory and on disk (see the module's
/// invariant), and the identities found due and not scheduled yet.
#[derive(Debug)]
pub(crate) struct Renewal {
    /// Sandbox time (Unix seconds) at which the next scan is due; `i64::MIN` to scan at once.
    next_scan: AtomicI64,
    /// The next scan's time as last stored, under the lock every store of it takes (so a
    /// lower time noted meanwhile is never overwritten by a higher one).
    stored: std::sync::Mutex<i64>,
    table: Table<i64>,
    /// Identities found due and not scheduled yet.
    queue: std::sync::Mutex<VecDeque<Due>>,
    /// Moves of the sandbox clock, to scan at once (`Arm::follow_clock`).
    pub(crate) clock_moves: std::sync::Mutex<Option<tokio::sync::watch::Receiver<i64>>>,
}

impl Renewal {
    /// The schedule as stored in `table`; a directory without one (new, or written before it
    /// was kept) scans at once.
    pub(crate) fn open(table: Table<i64>) -> Result<Self, StoreError> {
        let stored = table.get(NEXT_SCAN_KEY)?.unwrap_or(i64::MIN);
        Ok(Self {
            next_scan: AtomicI64::new(stored),
            stored: std::sync::Mutex::new(stored),
            table,
            queue: std::sync::Mutex::default(),
            clock_moves: std::sync::Mutex::default(),
        })
    }

    /// The table the schedule is kept in, from ARM's store.
    pub(crate) fn table(store: &Store) -> Result<Table<i64>, StoreError> {
        store.table("schedule")
    }

    /// Something becomes due at `at`: scan then at the latest. Call it before the record that
    /// makes it due is written: when `at` is earlier than the stored time, the stored time is
    /// lowered now, and the record's own flush makes both durable.
    pub(crate) fn note_due(&self, at: i64) -> Result<(), StoreError> {
        self.next_scan.fetch_min(at, Ordering::SeqCst);
        let mut stored = self.stored_lock();
        if at < *stored {
            // The ticket is not awaited: the write that follows (the record) waits for a
            // flush that covers this one.
            let _covered_by_the_record = self.table.put_deferred(NEXT_SCAN_KEY, &at)?;
            *stored = at;
        }
        Ok(())
    }

    /// Scan at the next look (the clock moved). In memory only: the stored time still holds
    /// for a restart, since moving the clock changes no identity's due time.
    pub(crate) fn wake(&self) {
        self.next_scan.fetch_min(i64::MIN, Ordering::SeqCst);
    }

    /// Stores the next scan's time once nothing found due is left to schedule (every due
    /// identity has its operation written): until then a restart scans again.
    async fn settle(&self) -> Result<(), StoreError> {
        let written = {
            let mut stored = self.stored_lock();
            let next = self.next_scan.load(Ordering::SeqCst);
            if next == *stored || !self.queue().is_empty() {
                return Ok(());
            }
            *stored = next;
            self.table.put_deferred(NEXT_SCAN_KEY, &next)?
        };
        written.await
    }

    fn stored_lock(&self) -> std::sync::MutexGuard<'_, i64> {
        self.stored.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Identities found due and not yet scheduled.
    pub(crate) fn queued(&self) -> usize {
        self.queue().len()
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
            return;
        }
        if let Err(e) = self.renewal.settle().await {
            tracing::warn!(error = %e, "cannot store the next renewal scan's time");
        }
    }

    /// Scans, schedules and runs every renewal due now, inline (resuming one already
    /// pending); how many identities were due. Renewals a peer's outage holds up stay
    /// pending for the reconciler.
    pub async fn renew_due_credentials(self: &Arc<Self>) -> Result<usize, ArmError> {
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
        self.renewal.settle().await?;
        for t in &targets {
            self.drive_inline(t).await;
        }
        Ok(targets.len())
    }

    pub(crate) fn scan_if_due(&self) -> Result<(), ArmError> {
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
        self.renewal.next_scan.fetch_min(next, Ordering::SeqCst);
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
            self.renewal.note_due(t)?;
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

    const T0: i64 = 1_700_000_000;
    const DAY: i64 = 86400;

    /// A core over `store` at sandbox time `now`, whose peers are never called (scanning
    /// and scheduling are local).
    fn core(store: &Store, now: i64) -> Core {
        let clock = misim_types::ManualClock::at_unix(now as u64);
        Core::new(
            crate::Config::default(),
            store,
            std::sync::Arc::new(clock),
            std::sync::Arc::new(misim_types::SeqIds::new(1)),
            crate::peers::Peers::unreachable(),
        )
        .unwrap()
    }

    /// Writes a user-assigned identity whose certificate was made at `made` (so due at
    /// `made` + 45 days) straight into the table, as a record from before the schedule
    /// was kept would be.
    async fn uami(core: &Core, name: &str, made: i64) {
        let rec = UamiRecord {
            id: format!("/subscriptions/s/resourcegroups/rg/providers/x/{name}"),
            name: name.into(),
            location: "l".into(),
            tags: Default::default(),
            credential: cred(Some((made, made + 90 * DAY)), &[]),
        };
        core.uamis
            .put(&format!("s/rg/x/{name}"), &rec)
            .await
            .unwrap();
    }

    fn stored(core: &Core) -> Option<i64> {
        core.schedule.get(NEXT_SCAN_KEY).unwrap()
    }

    fn pending_rolls(core: &Core) -> usize {
        core.pending.all().unwrap().len()
    }

    #[tokio::test]
    async fn a_restart_scans_only_once_something_is_due() {
        let store = Store::memory().unwrap();
        let first = core(&store, T0);
        uami(&first, "a", T0 - 40 * DAY).await; // due in 5 days
        assert_eq!(stored(&first), None, "a new directory scans at once");
        first.renewal_tick().await;
        assert_eq!(stored(&first), Some(T0 + DAY), "a day ahead at the most");

        // A record due now that no scan has seen (written without the schedule, as before it
        // was kept): a restart before the stored time does not read it...
        uami(&first, "b", T0 - 50 * DAY).await;
        let restarted = core(&store, T0 + 3600);
        restarted.renewal_tick().await;
        assert_eq!(
            pending_rolls(&restarted),
            0,
            "no scan before the stored time"
        );
        // ...the first look at or after it does.
        let later = core(&store, T0 + DAY);
        later.renewal_tick().await;
        assert_eq!(pending_rolls(&later), 1, "b is scheduled");
    }

    #[tokio::test]
    async fn identities_found_due_and_not_yet_scheduled_are_found_again_after_a_restart() {
        let store = Store::memory().unwrap();
        let first = core(&store, T0);
        for i in 0..=SCHEDULE_BATCH {
            uami(&first, &format!("u{i}"), T0 - 46 * DAY).await;
        }
        first.renewal_tick().await;
        assert_eq!(pending_rolls(&first), SCHEDULE_BATCH, "one batch a look");
        assert_eq!(
            stored(&first),
            None,
            "one is left in memory: not stored yet"
        );
        // Killed here: the next process scans at once and finds the last one.
        let restarted = core(&store, T0);
        restarted.renewal_tick().await; // the batch already pending, found again
        restarted.renewal_tick().await;
        assert_eq!(pending_rolls(&restarted), SCHEDULE_BATCH + 1);
        assert_eq!(stored(&restarted), Some(T0 + DAY));
    }

    #[tokio::test]
    async fn a_credential_due_before_the_stored_time_lowers_it_on_disk() {
        let store = Store::memory().unwrap();
        let first = core(&store, T0);
        first.renewal_tick().await;
        assert_eq!(stored(&first), Some(T0 + DAY));
        // The clock moved backwards by 50 days: a certificate made now is due before then.
        let back = T0 - 50 * DAY;
        first.renewal.note_due(back + 45 * DAY).unwrap();
        first.renewal.note_due(T0 + 10 * DAY).unwrap();
        assert_eq!(
            stored(&first),
            Some(back + 45 * DAY),
            "only ever lowered by a note"
        );
        let restarted = core(&store, back);
        assert_eq!(
            restarted.renewal.next_scan.load(Ordering::SeqCst),
            back + 45 * DAY
        );
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
