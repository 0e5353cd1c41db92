//! The convergence check: ARM's identities and VMs against Entra's service
//! principals (`Directory.ListServicePrincipals`) and IMDS's VMs
//! (`Control.ListVms`), both read through [`crate::peers`]. Zero drifts on a
//! healthy, settled system. `grpc_ops` turns the [`Report`] into its message.

use std::collections::{BTreeMap, BTreeSet};

use super::Core;
use crate::error::ArmError;
use crate::peers::{ImdsVm, ListedPrincipal};
use crate::records::*;

/// One disagreement between ARM and a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// What kind (`orphan_service_principal`, `missing_imds_identity`, ...).
    pub kind: String,
    /// The resource or principal it concerns.
    pub subject: String,
    /// For a human.
    pub detail: String,
}

/// What `misim doctor` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Every disagreement found.
    pub drifts: Vec<Drift>,
    /// Operations not finished yet, and certificate renewals due but not yet
    /// written as operations.
    pub pending_operations: u32,
    /// Operations that failed for good.
    pub failed_operations: u32,
    /// Managed identities ARM owns (user-assigned, and VMs' system-assigned).
    pub identities: u32,
    /// Managed-identity principals in Entra.
    pub service_principals: u32,
    /// VMs in ARM.
    pub vms: u32,
    /// VMs IMDS reports (`ListVms`); differs from `vms` while an operation is pending.
    pub imds_vms: u32,
}

fn drift(kind: &str, subject: &str, detail: String) -> Drift {
    Drift {
        kind: kind.into(),
        subject: subject.into(),
        detail,
    }
}

/// The thumbprint of ARM's certificate for a principal, as Entra and IMDS report theirs;
/// `None` for a certificate that does not parse, which then matches no peer's.
fn thumbprint(c: &Credential) -> Option<String> {
    misim_token::cert::pem_thumbprint_sha1(&c.certificate_pem).ok()
}

/// Entra against ARM: every managed-identity principal owned by an ARM
/// resource, with exactly ARM's certificate (and those a renewal retired and
/// that have not been removed yet); every owned principal present.
fn entra_drifts(
    sps: &[ListedPrincipal],
    owned: &BTreeMap<String, (String, &Credential)>,
) -> Vec<Drift> {
    let mut drifts = Vec::new();
    let mut seen = BTreeSet::new();
    for sp in sps {
        let oid = sp.object_id.to_ascii_lowercase();
        let Some((res, cred)) = owned.get(&oid) else {
            drifts.push(drift(
                "orphan_service_principal",
                &sp.object_id,
                format!(
                    "managed-identity principal of '{}' has no owning resource in ARM",
                    sp.resource_id
                ),
            ));
            continue;
        };
        seen.insert(oid);
        // ARM's current certificate, plus the ones a renewal retired until they expire.
        let want = thumbprint(cred);
        let mut expected: BTreeSet<&str> = cred
            .retired
            .iter()
            .map(|r| r.thumbprint_sha1.as_str())
            .collect();
        expected.extend(want.as_deref());
        let have: Vec<&str> = sp.thumbprints.iter().map(String::as_str).collect();
        let same = have.len() == expected.len() && have.iter().all(|t| expected.contains(t));
        if want.is_none() || !same {
            drifts.push(drift(
                "key_credential_mismatch",
                res,
                format!(
                    "principal {} has key credentials {have:?}, ARM's certificate is {want:?}",
                    sp.object_id
                ),
            ));
        }
    }
    for (oid, (res, _)) in owned {
        if !seen.contains(oid) {
            drifts.push(drift(
                "missing_service_principal",
                res,
                format!("principal {oid} does not exist in Entra"),
            ));
        }
    }

    drifts
}

impl Core {
    /// Compares the three services' states.
    pub async fn doctor(&self) -> Result<Report, ArmError> {
        // Renewals already due count as pending work even before the
        // reconciler has written their operations (right after a restart,
        // or a clock moved forward): "converged" must not be reported while
        // a certificate that is due has not been renewed.
        self.scan_if_due()?;
        let (pending, failed) = self.op_counts()?;
        let pending = pending + self.renewal.queued() as u32;
        let sps = self.peers.managed_identity_principals().await?;
        let imds_vms = self.peers.imds_vms().await?;
        let uamis: Vec<UamiRecord> = self.uamis.all()?.into_iter().map(|(_, u)| u).collect();
        let vms: Vec<VmRecord> = self.vms.all()?.into_iter().map(|(_, v)| v).collect();

        // principal id → (owning resource, credential)
        let mut owned: BTreeMap<String, (String, &Credential)> = BTreeMap::new();
        for u in &uamis {
            owned.insert(
                u.credential.principal_id.to_ascii_lowercase(),
                (u.id.clone(), &u.credential),
            );
        }
        for v in &vms {
            if let Some(c) = &v.sami {
                owned.insert(c.principal_id.to_ascii_lowercase(), (v.id.clone(), c));
            }
        }
        let mut drifts = entra_drifts(&sps, &owned);
        self.imds_drifts(&vms, &imds_vms, &mut drifts)?;
        Ok(Report {
            drifts,
            pending_operations: pending,
            failed_operations: failed,
            identities: owned.len() as u32,
            service_principals: sps.len() as u32,
            vms: vms.len() as u32,
            imds_vms: imds_vms.len() as u32,
        })
    }

    /// IMDS against ARM: every VM ARM knows, with exactly the identities it carries.
    fn imds_drifts(
        &self,
        vms: &[VmRecord],
        imds_vms: &[ImdsVm],
        drifts: &mut Vec<Drift>,
    ) -> Result<(), ArmError> {
        let by_id: BTreeMap<String, &VmRecord> =
            vms.iter().map(|v| (v.id.to_ascii_lowercase(), v)).collect();
        let mut imds_seen = BTreeSet::new();
        for live in imds_vms {
            let rid = live.resource_id.clone();
            let key = rid.to_ascii_lowercase();
            let Some(v) = by_id.get(&key) else {
                drifts.push(drift(
                    "unknown_imds_vm",
                    &rid,
                    "IMDS serves a VM that ARM does not know".into(),
                ));
                continue;
            };
            imds_seen.insert(key);
            let mut want: BTreeMap<String, String> = BTreeMap::new();
            let mut certs: BTreeMap<String, Option<String>> = BTreeMap::new();
            if let Some(c) = &v.sami {
                want.insert(c.client_id.clone(), c.principal_id.clone());
                certs.insert(c.client_id.clone(), thumbprint(c));
            }
            for u in self.live_uamis(v)? {
                want.insert(
                    u.credential.client_id.clone(),
                    u.credential.principal_id.clone(),
                );
                certs.insert(u.credential.client_id.clone(), thumbprint(&u.credential));
            }
            for i in &live.identities {
                if let Some(Some(t)) = certs.get(&i.client_id)
                    && *t != i.certificate_thumbprint
                {
                    drifts.push(drift(
                        "imds_certificate_mismatch",
                        &v.id,
                        format!(
                            "IMDS signs for {} with certificate {}, ARM registered {t}",
                            i.client_id, i.certificate_thumbprint
                        ),
                    ));
                }
            }
            let have: BTreeMap<String, String> = live
                .identities
                .iter()
                .map(|i| (i.client_id.clone(), i.object_id.clone()))
                .collect();
            for (cid, oid) in &have {
                if want.get(cid) != Some(oid) {
                    drifts.push(drift(
                        "unknown_imds_identity",
                        &v.id,
                        format!(
                            "IMDS has identity {cid} (principal {oid}) that ARM does not attach"
                        ),
                    ));
                }
            }
            for cid in want.keys() {
                if !have.contains_key(cid) {
                    drifts.push(drift(
                        "missing_imds_identity",
                        &v.id,
                        format!("identity {cid} is attached in ARM but not configured in IMDS"),
                    ));
                }
            }
        }
        for v in vms {
            if !imds_seen.contains(&v.id.to_ascii_lowercase()) {
                drifts.push(drift(
                    "missing_imds_vm",
                    &v.id,
                    "ARM's VM is not configured in IMDS".into(),
                ));
            }
        }
        Ok(())
    }
}
