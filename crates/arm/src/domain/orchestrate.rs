//! Durable cross-service operations (ARM → Entra, IMDS).
//!
//! Every change that spans services is first written as an [`OpRecord`]
//! (intent), next to the resource record it converges; then idempotent gRPC
//! calls keyed by the operation id bring Entra and IMDS in line; then the
//! operation completes. Operations on one resource run one at a time, oldest
//! first, under the resource's lock. The request path runs an operation once
//! inline; whatever does not complete there is resumed by [`Core::reconcile`]
//! (after a restart too), with backoff while a peer is down.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use misim_store::Durable;

use super::Core;
use super::deployment::rfc3339;
use crate::error::ArmError;
use crate::peers::{IdentityKind, VmIdentity};
use crate::records::*;

/// Attempts after which an operation failing with a non-transient error fails for good.
const MAX_HARD_FAILURES: u32 = 10;
/// How long a finished operation stays readable at its status URL. Azure keeps
/// an operation's status for a while after it ends, since clients may poll long
/// after the request (`az ... --no-wait`, an SDK poller resumed from a saved
/// token); a day covers any such poller while keeping the table bounded.
pub(crate) const OP_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Most expired operations deleted per pass (one flush for all of them), so a
/// backlog after a long downtime does not hold up resuming pending work.
const PRUNE_BATCH: usize = 1024;
/// How often (by the injected clock) the reconciler looks for expired operations
/// at most.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// The key under which the next pruning pass's time is stored, in ARM's schedule
/// table: a restart prunes only once something has expired (each pass reads
/// every operation record; docs/performance.md finding 13).
const NEXT_PRUNE_KEY: &str = "operations.next_prune";

/// Per-resource locks.
#[derive(Debug, Default)]
pub(crate) struct Locks(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Locks {
    pub(crate) fn get(&self, target: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(target.to_owned()).or_default().clone()
    }
}

/// Waits for the next move of the sandbox clock: true when it moved, false when
/// nobody can move it any more; never returns without a clock to follow.
async fn clock_moved(moves: &mut Option<tokio::sync::watch::Receiver<i64>>) -> bool {
    match moves {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// The request id under which a VM operation creates the VM's system-assigned principal.
pub(crate) fn sami_request_id(op: &OpRecord) -> String {
    format!("{}-sami", op.id)
}

fn pending_key(target: &str, seq: u64) -> String {
    format!("{target}|{seq:020}")
}

/// A failure worth retrying without counting it against the operation:
/// `peers` decided, from the peer's status, that the peer was unreachable.
fn transient(e: &ArmError) -> bool {
    matches!(e, ArmError::PeerUnavailable { .. })
}

impl Core {
    /// Writes a new operation's intent.
    pub(crate) async fn new_op(
        &self,
        target: &str,
        resource_id: &str,
        kind: OpKind,
    ) -> Result<OpRecord, ArmError> {
        let (op, durable) = self.new_op_deferred(target, resource_id, kind, |_| {})?;
        durable.await?;
        Ok(op)
    }

    /// Applies a new operation's intent and returns the ticket to await
    /// before any peer call or acknowledgement that relies on it: a caller
    /// that writes the resource's record next awaits only that later ticket
    /// (a crash keeps a prefix of a store's writes, so never the record
    /// without the intent). `prepare` completes the record before it is
    /// written (it is written once: a VM operation's record carries a
    /// certificate and its key).
    pub(crate) fn new_op_deferred(
        &self,
        target: &str,
        resource_id: &str,
        kind: OpKind,
        prepare: impl FnOnce(&mut OpRecord),
    ) -> Result<(OpRecord, Durable), ArmError> {
        let now = self.clock.now();
        let nanos = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seq = {
            let mut last = self.op_seq.lock().unwrap_or_else(|p| p.into_inner());
            *last = (*last + 1).max(nanos);
            *last
        };
        let mut op = OpRecord {
            id: self.ids.guid(),
            seq,
            target: target.to_owned(),
            resource_id: resource_id.to_owned(),
            kind,
            status: OpStatus::InProgress,
            error: None,
            start_time: rfc3339(now),
            end_time: None,
            ended_unix: None,
            attempts: 0,
            hard_failures: 0,
            retire: Vec::new(),
            sami_request: None,
            pending_cred: None,
            failed: None,
        };
        prepare(&mut op);
        // The queue entry first: a crash keeps a prefix of the writes, and a
        // queue entry without its record is dropped by the next `drive`,
        // while a record without its entry would say `InProgress` forever.
        let pending = self
            .pending
            .put_deferred(&pending_key(target, seq), &op.id)?;
        let intent = self.ops.put_deferred(&op.id, &op)?;
        Ok((op, pending.and(intent)))
    }

    /// Whether a pending operation of `target` is to create its system-assigned
    /// principal (its intent carries the request id and credential): a later
    /// write that wants that identity leaves the creation to it. Should that
    /// operation fail for good, its cleanup aborts the request and the next
    /// operation that finds the identity missing creates one
    /// (`create_sami`'s fallback).
    pub(crate) fn sami_pending(&self, target: &str) -> Result<bool, ArmError> {
        for (_, op_id) in self.pending.scan_prefix(&format!("{target}|"))? {
            if self.ops.get(&op_id)?.is_some_and(|op| {
                op.status == OpStatus::InProgress
                    && op.failed.is_none()
                    && op.sami_request.is_some()
            }) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Reads an operation (the async status URL).
    pub fn get_op(&self, id: &str) -> Result<Option<OpRecord>, ArmError> {
        Ok(self
            .ops
            .get(&id.to_ascii_lowercase())?
            .or(self.ops.get(id)?))
    }

    /// Number of pending and failed operations.
    pub(crate) fn op_counts(&self) -> Result<(u32, u32), ArmError> {
        let pending = self.pending.all()?.len() as u32;
        let failed = self
            .ops
            .all()?
            .into_iter()
            .filter(|(_, o)| o.status == OpStatus::Failed)
            .count() as u32;
        Ok((pending, failed))
    }

    /// Runs the pending operations of `target` while the caller waits (at
    /// most `Config::inline_budget`); true when none is left.
    ///
    /// The run is a task of its own, so a caller that stops waiting (the
    /// budget ran out, or the request's client went away and its handler
    /// was dropped) never cuts an operation short between two peer calls: a
    /// call already sent would still reach the peer, possibly after the calls
    /// of the operation's next run (a delete landing after the create that
    /// found its principal again), an order no idempotency key repairs. The
    /// task keeps the resource's lock until the run ends; the reconciler's
    /// next run of `target` waits for it.
    pub(crate) async fn drive_inline(self: &Arc<Self>, target: &str) -> bool {
        let core = Arc::clone(self);
        let owned = target.to_owned();
        let run = tokio::spawn(async move { core.drive(&owned).await });
        match tokio::time::timeout(self.config.inline_budget, run).await {
            Ok(Ok(Ok(done))) => done,
            Ok(Ok(Err(e))) => {
                tracing::warn!(target, error = %e, "operation left to the reconciler");
                false
            }
            Ok(Err(e)) => {
                tracing::error!(target, error = %e, "operation run panicked; left to the reconciler");
                false
            }
            Err(_) => false,
        }
    }

    /// Runs the pending operations of `target`, oldest first, until one cannot
    /// complete yet. True when none is left.
    pub(crate) async fn drive(&self, target: &str) -> Result<bool, ArmError> {
        let lock = self.locks.get(target);
        let _g = lock.lock().await;
        for (pk, op_id) in self.pending.scan_prefix(&format!("{target}|"))? {
            let Some(mut op) = self.ops.get(&op_id)? else {
                self.pending.remove(&pk).await?;
                continue;
            };
            if op.status != OpStatus::InProgress {
                self.pending.remove(&pk).await?;
                continue;
            }
            op.attempts += 1;
            if let Some(msg) = op.failed.clone() {
                // Failed for good; only its cleanup is left.
                match self.clean_up(&mut op).await {
                    Ok(()) => {
                        self.finish(&pk, &mut op, OpStatus::Failed, Some(msg))
                            .await?
                    }
                    Err(e) => {
                        tracing::info!(op = %op.id, target, error = %e, "cleanup of a failed operation will be retried");
                        return Ok(false);
                    }
                }
                continue;
            }
            let result = self.run_op(&mut op).await;
            if let Err(e) = &result
                && !transient(e)
            {
                op.hard_failures += 1;
            }
            match result {
                Ok(()) => self.finish(&pk, &mut op, OpStatus::Succeeded, None).await?,
                // Only a VM operation (or a federated credential's push,
                // which Entra refuses only if ARM's validation let through
                // what Entra's does not) can fail for good: its record stays,
                // so the user retries it. Deleting a user-assigned identity
                // (and cleaning up after its create) has no record left to
                // retry from, so it is retried until it completes. A
                // certificate renewal that fails for good is scheduled
                // again by the next scan (`renewal`).
                Err(e) if op.hard_failures < MAX_HARD_FAILURES || !op.kind.may_fail() => {
                    if op.hard_failures >= MAX_HARD_FAILURES {
                        tracing::warn!(op = %op.id, target, attempt = op.attempts, error = %e, "cleanup operation keeps failing; retrying");
                    } else {
                        tracing::info!(op = %op.id, target, attempt = op.attempts, error = %e, "operation will be retried");
                    }
                    op.error = Some(e.to_string());
                    self.ops.put(&op.id, &op).await?;
                    return Ok(false);
                }
                Err(e) => {
                    tracing::warn!(op = %op.id, target, error = %e, "operation failed");
                    // Every operation is identity work of the MSI resource
                    // provider; Azure words such failures this way.
                    let msg = format!(
                        "Identity operation for resource '{}' failed with error '{e}'.",
                        op.resource_id
                    );
                    // A background renewal failing leaves the VM as its owner left it.
                    if matches!(op.kind, OpKind::Vm)
                        && let Some(mut rec) = self.vms.get(target)?
                    {
                        rec.state = ProvState::Failed;
                        rec.error = Some(msg.clone());
                        self.vms.put(target, &rec).await?;
                    }
                    op.failed = Some(msg.clone());
                    self.ops.put(&op.id, &op).await?;
                    if let Err(e) = self.clean_up(&mut op).await {
                        tracing::info!(op = %op.id, target, error = %e, "cleanup of a failed operation will be retried");
                        return Ok(false);
                    }
                    self.finish(&pk, &mut op, OpStatus::Failed, Some(msg))
                        .await?;
                }
            }
        }
        Ok(true)
    }

    /// What a failed VM operation must still undo: principals of a disabled
    /// SAMI, and a principal created for a SAMI that no record took.
    async fn clean_up(&self, op: &mut OpRecord) -> Result<(), ArmError> {
        self.retire(op).await?;
        self.abort_sami_request(op).await?;
        self.imds_learns_failed_vm(op).await
    }

    /// A VM whose operation failed for good is still served by IMDS (its
    /// metadata, and the identities IMDS already served for it), as when IMDS
    /// learned every VM first: the VM operation now puts the VM in IMDS only
    /// after its identity exists. Only the metadata is put, so a failure that
    /// came from IMDS refusing an identity does not fail the cleanup; a
    /// refusal of the VM itself is logged and left (cleanup never fails for
    /// good), an unreachable IMDS retried.
    async fn imds_learns_failed_vm(&self, op: &OpRecord) -> Result<(), ArmError> {
        if !matches!(op.kind, OpKind::Vm) {
            return Ok(());
        }
        let Some(rec) = self.vms.get(&op.target)? else {
            return Ok(());
        };
        if rec.state == ProvState::Deleting {
            return Ok(());
        }
        let private_ip = self.vm_private_ip(&rec.properties);
        match self
            .peers
            .put_vm(&rec, &self.config.subscription_id, private_ip, &[])
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) => Err(e),
            Err(e) => {
                tracing::warn!(op = %op.id, id = %rec.id, error = %e, "IMDS refused a failed VM's metadata");
                Ok(())
            }
        }
    }

    /// Ends an operation the caller completed itself (see `finish`).
    pub(crate) async fn finish_op(
        &self,
        op: &mut OpRecord,
        status: OpStatus,
        error: Option<String>,
    ) -> Result<(), ArmError> {
        let pk = pending_key(&op.target, op.seq);
        self.finish(&pk, op, status, error).await
    }

    async fn finish(
        &self,
        pk: &str,
        op: &mut OpRecord,
        status: OpStatus,
        error: Option<String>,
    ) -> Result<(), ArmError> {
        let now = self.clock.now();
        op.status = status;
        op.error = error;
        op.end_time = Some(rfc3339(now));
        op.ended_unix = Some(misim_types::unix_seconds(now));
        // One flush for both (and for a record write the operation left
        // unawaited just before, `run_vm_op`'s last).
        let done = self.ops.put_deferred(&op.id, op)?;
        let (_, unlisted) = self.pending.remove_deferred(pk)?;
        done.and(unlisted).await?;
        Ok(())
    }

    /// One pass over every resource with pending operations.
    pub async fn reconcile_once(&self, backoff: &mut HashMap<String, (u32, tokio::time::Instant)>) {
        let targets: BTreeSet<String> = match self.pending.all() {
            Ok(all) => all
                .into_iter()
                .filter_map(|(k, _)| k.rsplit_once('|').map(|(t, _)| t.to_owned()))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "reconciler cannot read pending operations");
                return;
            }
        };
        backoff.retain(|t, _| targets.contains(t));
        let now = tokio::time::Instant::now();
        for t in targets {
            if backoff.get(&t).is_some_and(|(_, at)| *at > now) {
                continue;
            }
            match self.drive(&t).await {
                Ok(true) => {
                    backoff.remove(&t);
                }
                Ok(false) | Err(_) => {
                    let n = backoff.get(&t).map_or(0, |(n, _)| *n) + 1;
                    let delay =
                        Duration::from_millis(100 * (1u64 << n.min(5))).min(Duration::from_secs(2));
                    backoff.insert(t, (n, tokio::time::Instant::now() + delay));
                }
            }
        }
    }

    /// Deletes finished operations that ended more than [`OP_RETENTION`] ago
    /// (by the injected clock). Pending operations are never touched. A
    /// finished record without an end stamp (written before stamps existed)
    /// is stamped now, so it too is kept a full retention window. Returns
    /// how many were deleted (at most [`PRUNE_BATCH`]; the rest go next time),
    /// and stores when the next pass is due: when the oldest operation kept
    /// expires, or a retention window from now for operations that end later,
    /// but not before [`PRUNE_EVERY`] from now.
    pub async fn prune_ops(&self) -> Result<usize, ArmError> {
        let now = misim_types::unix_seconds(self.clock.now());
        let keep = OP_RETENTION.as_secs() as i64;
        /// What pruning reads of an operation (a view: the rest of each record, its
        /// certificate and key among it, is skipped without being built; every record is
        /// read each pass: docs/performance.md finding 9).
        #[derive(serde::Deserialize)]
        struct Ended {
            status: OpStatus,
            #[serde(default)]
            ended_unix: Option<i64>,
        }
        // Streamed: only the keys to act on are kept, not a view of every record.
        let (mut expired, mut unstamped) = (Vec::new(), Vec::new());
        let mut next = now.saturating_add(keep);
        self.ops
            .for_each_as::<Ended>(|k, view| match view.ended_unix {
                _ if view.status == OpStatus::InProgress => {}
                Some(t) if now - t >= keep && expired.len() < PRUNE_BATCH => expired.push(k),
                Some(t) => next = next.min(t.saturating_add(keep)),
                None => unstamped.push(k),
            })?;
        let pruned = expired.len();
        let mut durable = self.schedule.visible();
        for k in expired {
            durable = durable.and(self.ops.remove_deferred(&k)?.1);
        }
        for k in unstamped {
            // Rare (records from before end stamps): read it whole to stamp it.
            if let Some(mut op) = self.ops.get(&k)? {
                op.ended_unix = Some(now);
                durable = durable.and(self.ops.put_deferred(&k, &op)?);
            }
        }
        let next = next.max(now.saturating_add(PRUNE_EVERY.as_secs() as i64));
        durable
            .and(self.schedule.put_deferred(NEXT_PRUNE_KEY, &next)?)
            .await?;
        if pruned > 0 {
            tracing::info!(pruned, "expired operation records deleted");
        }
        Ok(pruned)
    }

    /// When the next pruning pass is due (sandbox time): as stored by the last
    /// pass, or now for a directory that has none.
    fn next_prune(&self) -> Result<std::time::SystemTime, ArmError> {
        Ok(match self.schedule.get(NEXT_PRUNE_KEY)? {
            Some(t) => UNIX_EPOCH + Duration::from_secs(t.max(0) as u64),
            None => self.clock.now(),
        })
    }

    /// The reconciler: resumes pending operations until `shutdown`, prunes
    /// expired operation records and schedules certificate renewals as the
    /// sandbox clock makes them due (at once when the clock is moved).
    pub async fn reconcile(self: Arc<Self>, shutdown: misim_runtime::Shutdown) {
        let mut backoff = HashMap::new();
        let mut next_prune = self.next_prune().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read when operations are next pruned");
            self.clock.now()
        });
        // A copy: a reconciler started again (ARM stopped and started in process) follows too.
        let mut moves = self
            .renewal
            .clock_moves
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        loop {
            if self.clock.now() >= next_prune {
                next_prune = match self.prune_ops().await.and_then(|_| self.next_prune()) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot prune operation records");
                        self.clock.now() + PRUNE_EVERY
                    }
                };
            }
            self.renewal_tick().await;
            self.reconcile_once(&mut backoff).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                moved = clock_moved(&mut moves) => {
                    if moved {
                        self.renewal.wake();
                    } else {
                        moves = None;
                    }
                }
            }
        }
    }

    async fn run_op(&self, op: &mut OpRecord) -> Result<(), ArmError> {
        match op.kind.clone() {
            OpKind::Vm => self.run_vm_op(op).await,
            OpKind::UamiDelete {
                uami_id,
                principal_id,
                client_id,
            } => {
                let id_key = uami_id.to_ascii_lowercase();
                for (vk, vm) in self.vms.all()? {
                    if !vm.uamis.contains_key(&id_key) {
                        continue;
                    }
                    // Under the VM's lock: a VM operation that saw the UAMI
                    // before its deletion has finished pushing it.
                    let lock = self.locks.get(&vk);
                    let _g = lock.lock().await;
                    self.peers.remove_identity(&vm.id, &client_id).await?;
                }
                self.peers.delete_principal(&principal_id).await
            }
            OpKind::CredentialRoll { principal_id, .. } => {
                self.run_credential_roll(op, &principal_id).await
            }
            OpKind::FicSync { client_id, name } => {
                self.run_fic_sync(&op.target, &client_id, &name).await
            }
            OpKind::UamiCreate { request_id } => {
                let sp = self
                    .peers
                    .create_principal(&request_id, "", &op.resource_id)
                    .await?;
                let owned = self
                    .uamis
                    .get(&op.target)?
                    .is_some_and(|u| u.credential.principal_id == sp.object_id);
                if !owned {
                    self.peers.delete_principal(&sp.object_id).await?;
                }
                Ok(())
            }
        }
    }

    /// Deletes a principal created under the operation's SAMI request id that
    /// no record took (create by request id is idempotent, so this finds it).
    async fn abort_sami_request(&self, op: &mut OpRecord) -> Result<(), ArmError> {
        if let Some(req) = op.sami_request.clone() {
            let sp = self
                .peers
                .create_principal(&req, "", &op.resource_id)
                .await?;
            let owned = self
                .vms
                .get(&op.target)?
                .and_then(|v| v.sami)
                .is_some_and(|c| c.principal_id == sp.object_id);
            if !owned {
                self.peers.delete_principal(&sp.object_id).await?;
            }
            op.sami_request = None;
            op.pending_cred = None;
            self.ops.put(&op.id, op).await?;
        }
        Ok(())
    }

    async fn retire(&self, op: &mut OpRecord) -> Result<(), ArmError> {
        while let Some(p) = op.retire.last().cloned() {
            self.peers.delete_principal(&p).await?;
            op.retire.pop();
            self.ops.put(&op.id, op).await?;
        }
        Ok(())
    }

    /// Step 2 of a VM operation: the system-assigned identity's principal,
    /// created with its certificate in one call to Entra, idempotent by the
    /// operation's SAMI request id. The credential (ids ARM chose and a
    /// certificate for them) is persisted in the operation before the call
    /// (with the intent, by `put_vm`), so a retry sends the same ids and
    /// certificate. Returns the registered credential.
    async fn create_sami(&self, op: &mut OpRecord, rec: &VmRecord) -> Result<Credential, ArmError> {
        let proposed = match (&op.sami_request, &op.pending_cred) {
            (Some(_), Some(c)) => c.clone(),
            // A second system identity in one operation (the first was
            // disabled and enabled again by later writes while it was being
            // retried), or an operation written before the credential was
            // part of the intent: both persisted here. The request id is a
            // new one: the first identity's would find its principal again,
            // which the operation is about to retire.
            _ => {
                let c = self.proposed_credential().await?;
                if op.sami_request.is_none() {
                    op.sami_request = Some(format!("{}-{}", sami_request_id(op), self.ids.guid()));
                }
                op.pending_cred = Some(c.clone());
                self.ops.put(&op.id, op).await?;
                c
            }
        };
        let req = op
            .sami_request
            .clone()
            .unwrap_or_else(|| sami_request_id(op));
        let (sp, registered) = self
            .peers
            .create_principal_with(&req, &rec.name, &rec.id, &proposed)
            .await?;
        if registered {
            return Ok(proposed);
        }
        // A reservation gave the principal other ids (or an Entra from before
        // the fold ignored them): a credential for the principal's own ids,
        // persisted before it is registered on its own, as before the fold.
        let cred = if super::identities::same_ids(&sp, &proposed) {
            proposed
        } else {
            let c = self.new_credential(&sp).await?;
            op.pending_cred = Some(c.clone());
            self.ops.put(&op.id, op).await?;
            c
        };
        self.peers.register_certificate(&cred).await?;
        Ok(cred)
    }

    async fn run_vm_op(&self, op: &mut OpRecord) -> Result<(), ArmError> {
        let Some(mut rec) = self.vms.get(&op.target)? else {
            self.retire(op).await?;
            return self.abort_sami_request(op).await;
        };
        if rec.state == ProvState::Deleting {
            self.peers.delete_vm(&rec.id).await?;
            if let Some(c) = &rec.sami {
                self.peers.delete_principal(&c.principal_id).await?;
            }
            self.retire(op).await?;
            self.abort_sami_request(op).await?;
            self.vms.remove(&op.target).await?;
            tracing::info!(id = %rec.id, "virtual machine deleted");
            return Ok(());
        }
        // 1-2. The system-assigned identity: its principal and certificate
        // in Entra (one call), then recorded, before IMDS is given it: Entra
        // accepts every credential IMDS holds. IMDS learns the VM only in
        // step 3, after the principal exists; nothing needs the VM in IMDS
        // earlier (a renewal of this identity is an operation on the same
        // VM, queued behind this one; a user-assigned identity's renewal
        // pushes only to VMs IMDS knows and this operation pushes the
        // current credential anyway). A VM operation that fails for good
        // still puts the VM in IMDS (`imds_learns_failed_vm`).
        if rec.wants_sami() && rec.sami.is_none() {
            let cred = self.create_sami(op, &rec).await?;
            rec.sami = Some(cred);
            op.pending_cred = None;
            op.sami_request = None;
            // Record first, then the operation; one flush for both, before the
            // credential is pushed to IMDS.
            let recorded = self.vms.put_deferred(&op.target, &rec)?;
            let moved_on = self.ops.put_deferred(&op.id, op)?;
            recorded.and(moved_on).await?;
        }
        if !rec.wants_sami()
            && let Some(c) = rec.sami.take()
        {
            op.retire.push(c.principal_id.clone());
            self.ops.put(&op.id, op).await?;
            self.vms.put(&op.target, &rec).await?;
        }
        // 3. IMDS learns the VM with every identity it carries, in one call
        // (one durable write on IMDS).
        let uamis = self.live_uamis(&rec)?;
        let tenant = self.config.tenant_id.as_str();
        let mut carried = Vec::with_capacity(uamis.len() + 1);
        if let Some(c) = &rec.sami {
            carried.push(VmIdentity {
                kind: IdentityKind::System,
                resource_id: &rec.id,
                tenant_id: tenant,
                credential: c,
            });
        }
        for u in &uamis {
            carried.push(VmIdentity {
                kind: IdentityKind::User,
                resource_id: &u.id,
                tenant_id: tenant,
                credential: &u.credential,
            });
        }
        let desired: BTreeSet<String> = carried
            .iter()
            .map(|i| i.credential.client_id.clone())
            .collect();
        let private_ip = self.vm_private_ip(&rec.properties);
        let served = self
            .peers
            .put_vm(&rec, &self.config.subscription_id, private_ip, &carried)
            .await?;
        // 4. Remove what it no longer carries: what IMDS serves after that
        // write and the VM does not carry (only this operation, under the
        // VM's lock, changes a VM's identities, besides a renewal's push of a
        // carried identity's new certificate; a system identity the write
        // replaced is already gone). The write only adds or replaces what
        // `desired` names, so this is what IMDS served before it less `desired`.
        for client_id in served {
            if !desired.contains(&client_id) {
                self.peers.remove_identity(&rec.id, &client_id).await?;
            }
        }
        // 5. Principals of a disabled SAMI go.
        self.retire(op).await?;
        self.abort_sami_request(op).await?;
        rec.state = ProvState::Succeeded;
        rec.error = None;
        // Awaited by `finish`, which `drive` calls next: the record's
        // `Succeeded` and the operation's end share one flush. Until then no
        // one is told (a reply that read it awaits `Table::visible`).
        let _converged = self.vms.put_deferred(&op.target, &rec)?;
        tracing::info!(id = %rec.id, op = %op.id, "virtual machine converged");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use misim_types::{ManualClock, SeqIds};

    const T0: u64 = 1_700_000_000;

    /// A core whose peers are never called (pruning is local).
    fn core(clock: Arc<ManualClock>) -> Core {
        core_over(&misim_store::Store::memory().unwrap(), clock)
    }

    fn core_over(store: &misim_store::Store, clock: Arc<ManualClock>) -> Core {
        Core::new(
            crate::Config::default(),
            store,
            clock,
            Arc::new(SeqIds::new(1)),
            crate::peers::Peers::unreachable(),
        )
        .unwrap()
    }

    async fn op(core: &Core, name: &str, status: Option<OpStatus>) -> String {
        let target = format!("sub/rg/microsoft.compute/virtualmachines/{name}");
        let mut op = core.new_op(&target, name, OpKind::Vm).await.unwrap();
        if let Some(st) = status {
            let pk = pending_key(&op.target, op.seq);
            core.finish(&pk, &mut op, st, None).await.unwrap();
        }
        op.id
    }

    /// A crash between an operation's two intent writes keeps the queue entry
    /// (written first) without the record: the next run drops the entry, and
    /// no record is left saying `InProgress` with nothing to run it.
    #[tokio::test]
    async fn a_queued_operation_whose_record_a_crash_lost_is_dropped() {
        let core = core(Arc::new(ManualClock::at_unix(T0)));
        let target = "sub/rg/microsoft.compute/virtualmachines/lost";
        core.pending
            .put(&pending_key(target, 1), &"never-written".to_owned())
            .await
            .unwrap();
        assert_eq!(core.op_counts().unwrap(), (1, 0));
        assert!(core.drive(target).await.unwrap(), "nothing left to run");
        assert_eq!(core.op_counts().unwrap(), (0, 0));
        assert!(core.get_op("never-written").unwrap().is_none());
    }

    #[tokio::test]
    async fn the_next_pruning_pass_is_stored_for_a_restart() {
        let store = misim_store::Store::memory().unwrap();
        let clock = Arc::new(ManualClock::at_unix(T0));
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        let first = core_over(&store, clock.clone());
        assert_eq!(
            first.next_prune().unwrap(),
            at(T0),
            "none stored: prune at once"
        );
        let keep = OP_RETENTION.as_secs();
        // Nothing finished: whatever ends from now on expires a window from now.
        first.prune_ops().await.unwrap();
        assert_eq!(first.next_prune().unwrap(), at(T0 + keep));
        op(&first, "a", Some(OpStatus::Succeeded)).await;
        clock.advance(Duration::from_secs(3600));
        first.prune_ops().await.unwrap();
        assert_eq!(first.next_prune().unwrap(), at(T0 + keep), "when a expires");
        // A restart reads the stored time (not every operation record).
        let same = core_over(&store, clock.clone());
        assert_eq!(same.next_prune().unwrap(), at(T0 + keep));
        // At that time a goes; with nothing left, the next pass is a window later.
        clock.set(at(T0 + keep));
        assert_eq!(same.prune_ops().await.unwrap(), 1);
        assert_eq!(
            same.next_prune().unwrap(),
            at(T0 + keep + keep),
            "nothing left: a window from now"
        );
    }

    #[tokio::test]
    async fn finished_operations_are_pruned_after_the_retention_window_pending_ones_never() {
        let clock = Arc::new(ManualClock::at_unix(T0));
        let core = core(clock.clone());
        let hour = Duration::from_secs(3600);
        let done = op(&core, "a", Some(OpStatus::Succeeded)).await;
        clock.advance(hour);
        let failed = op(&core, "b", Some(OpStatus::Failed)).await;
        let pending = op(&core, "c", None).await;
        // A finished record written before end stamps existed.
        let legacy = op(&core, "d", Some(OpStatus::Succeeded)).await;
        let mut rec = core.get_op(&legacy).unwrap().unwrap();
        rec.ended_unix = None;
        core.ops.put(&legacy, &rec).await.unwrap();
        let exists = |id: &str| core.get_op(id).unwrap().is_some();

        // Just inside the window of the first: nothing goes; the legacy one is stamped.
        clock.set(UNIX_EPOCH + Duration::from_secs(T0) + OP_RETENTION - Duration::from_secs(1));
        assert_eq!(core.prune_ops().await.unwrap(), 0);
        assert!(core.get_op(&legacy).unwrap().unwrap().ended_unix.is_some());
        clock.advance(Duration::from_secs(1));
        assert_eq!(core.prune_ops().await.unwrap(), 1);
        assert!(!exists(&done));
        assert!(exists(&failed) && exists(&pending) && exists(&legacy));
        clock.advance(hour);
        assert_eq!(core.prune_ops().await.unwrap(), 1);
        assert!(!exists(&failed), "failed operations go too");
        // A day after it was stamped, the legacy record goes; the pending one never does.
        clock.advance(OP_RETENTION * 100);
        assert_eq!(core.prune_ops().await.unwrap(), 1);
        assert!(!exists(&legacy));
        assert!(exists(&pending), "a pending operation is never pruned");
        assert_eq!(core.op_counts().unwrap(), (1, 0));
    }
}
