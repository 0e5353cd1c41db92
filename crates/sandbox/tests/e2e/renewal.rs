//! Managed-identity certificates follow the sandbox clock: `misim clock advance 46d` renews a
//! VM's certificate (ARM registers it with Entra, then pushes it to IMDS) while its tokens keep
//! working; past the old certificate's expiry Entra no longer holds it and refuses an assertion
//! naming it with AADSTS700027, in the decision log; a renewal that cannot reach Entra keeps
//! being retried and completes once Entra answers.

use misim_proto::admin::v1 as pb;
use misim_proto::auth::Caller;
use misim_proto::entra::v1::GetServicePrincipalRequest;
use misim_proto::imds::v1::GetVmRequest;
use misim_testkit::eventually;

use crate::faults::{misim, stdout};
use crate::harness::{VAULT_AUD, World, start};

/// The certificate thumbprint IMDS signs with for the VM's (only) identity.
async fn imds_thumbprint(w: &World, vm_id: &str) -> String {
    let vm =
        w.sb.imds_control()
            .unwrap()
            .get_vm(GetVmRequest {
                resource_id: vm_id.into(),
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(vm.identities.len(), 1, "{vm:?}");
    vm.identities[0].certificate_thumbprint.clone()
}

/// The thumbprints of the key credentials Entra holds for a principal.
async fn entra_thumbprints(w: &World, principal: &str) -> Vec<String> {
    w.sb.directory()
        .unwrap()
        .get_service_principal(GetServicePrincipalRequest {
            object_id: principal.into(),
            app_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .key_credentials
        .into_iter()
        .map(|k| k.thumbprint_sha1)
        .collect()
}

async fn advance(w: &World, by: &str) {
    let o = misim(w, &["clock", "advance", by]).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("offset"), "{}", stdout(&o));
}

/// A client assertion whose header names the certificate `thumbprint` (hex SHA-1). Entra picks
/// the key credential by that name before it checks any signature, so the refusal of a
/// certificate that expired or is no longer registered does not need its private key (which
/// never leaves ARM and IMDS).
fn assertion_naming(thumbprint: &str, client_id: &str, aud: &str) -> String {
    let sha1: Vec<u8> = (0..thumbprint.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&thumbprint[i..i + 2], 16).unwrap())
        .collect();
    let header =
        serde_json::json!({"alg": "ES256", "typ": "JWT", "x5t": misim_token::b64url(&sha1)});
    let now = crate::harness::now_unix();
    let claims = serde_json::json!({"aud": aud, "iss": client_id, "sub": client_id,
        "jti": "j-1", "nbf": now, "iat": now, "exp": now + 600});
    format!(
        "{}.{}.{}",
        misim_token::b64url(header.to_string().as_bytes()),
        misim_token::b64url(claims.to_string().as_bytes()),
        misim_token::b64url(&[0u8; 64])
    )
}

/// Entra holds the old and the new certificate (the overlap), and the VM's token from IMDS
/// still reads kv1's secret `db`.
async fn overlap_and_the_vm_reads(
    w: &World,
    endpoint: &str,
    principal: &str,
    (old, new): (&String, &String),
) {
    let both = entra_thumbprints(w, principal).await;
    assert!(
        both.len() == 2 && both.contains(old) && both.contains(new),
        "Entra accepts old and new during the overlap: {both:?}"
    );
    let (s, t) = w.imds_token(endpoint, VAULT_AUD, None).await;
    assert_eq!(s, 200, "{t}");
    let (s, v) = w
        .get_secret("kv1", "db", t["access_token"].as_str().unwrap())
        .await;
    assert_eq!((s, v["value"].as_str()), (200, Some("s3cret")), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn advancing_46d_renews_the_certificate_and_the_old_one_goes_once_expired() {
    let w = start().await;
    let (vm_id, principal) = w
        .vm_reading_vault(("rg1", "vm1", "kv1"), ("db", "s3cret"))
        .await;
    let endpoint = w.imds_endpoint(&vm_id).await;
    let (s, t) = w.imds_token(&endpoint, VAULT_AUD, None).await;
    assert_eq!(s, 200, "{t}");
    let first = imds_thumbprint(&w, &vm_id).await;
    assert_eq!(entra_thumbprints(&w, &principal).await, vec![first.clone()]);

    advance(&w, "46d").await;
    let renewed = eventually("IMDS holds a renewed certificate", || async {
        let t = imds_thumbprint(&w, &vm_id).await;
        if t == first {
            Err("still the first")
        } else {
            Ok(t)
        }
    })
    .await;
    overlap_and_the_vm_reads(&w, &endpoint, &principal, (&first, &renewed)).await;

    // Day 90 and 6 hours: the first certificate has expired and ARM removes it from Entra
    // (the renewed one, 44 days and 6 hours old, is not due yet).
    advance(&w, "1062h").await;
    eventually("the expired certificate leaves Entra", || async {
        let now = entra_thumbprints(&w, &principal).await;
        if now == vec![renewed.clone()] {
            Ok(())
        } else {
            Err(now)
        }
    })
    .await;
    let client_id =
        w.sb.directory()
            .unwrap()
            .get_service_principal(GetServicePrincipalRequest {
                object_id: principal.clone(),
                app_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .app_id;
    let token_url = format!("{}/{}/oauth2/v2.0/token", w.sb.entra_url, w.tid());
    let r = w
        .http
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            (
                "client_assertion",
                &assertion_naming(&first, &client_id, &token_url),
            ),
            ("scope", "https://vault.azure.net/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client", "{body}");
    assert_eq!(body["error_codes"][0], 700027, "{body}");
    let mut log = pb::log_client::LogClient::new(
        w.sb.channel_as(Caller::Admin, &w.sb.entra_grpc_url)
            .unwrap(),
    );
    let denied = log
        .list_decisions(pb::LogQuery {
            denied_only: true,
            principal: client_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .decisions;
    assert!(
        denied.iter().any(|d| d.reason.starts_with("AADSTS700027")),
        "{denied:?}"
    );
    // The VM never noticed: IMDS signs with the renewed certificate.
    let (s, t) = w.imds_token(&endpoint, VAULT_AUD, None).await;
    assert_eq!(s, 200, "{t}");
    let report = settled(&w).await;
    assert!(report.drifts.is_empty(), "{report:?}");
    w.sb.shutdown().await.unwrap();
}

/// `misim doctor`'s report once no operation is pending.
async fn settled(w: &World) -> misim_proto::arm::v1::DoctorReport {
    eventually("every operation finishes", || async {
        let r = w.sb.doctor().await.unwrap();
        if r.pending_operations == 0 {
            Ok(r)
        } else {
            Err(r)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_that_cannot_reach_entra_keeps_retrying_and_completes_after() {
    let w = start().await;
    let (vm_id, principal) = w
        .vm_reading_vault(("rg1", "vm1", "kv1"), ("db", "s3cret"))
        .await;
    let endpoint = w.imds_endpoint(&vm_id).await;
    let first = imds_thumbprint(&w, &vm_id).await;
    let before = w.faults.calls("Directory/AddKeyCredential");
    w.faults.fail(
        "Directory/AddKeyCredential",
        tonic::Code::Unavailable,
        "entra unreachable",
    );
    w.sb.clock_client()
        .unwrap()
        .advance(pb::AdvanceClockRequest {
            seconds: 46 * 86400,
        })
        .await
        .unwrap();
    // Tried, and tried again.
    w.faults
        .wait_calls("Directory/AddKeyCredential", before + 2)
        .await;
    assert_eq!(imds_thumbprint(&w, &vm_id).await, first);
    assert_eq!(entra_thumbprints(&w, &principal).await, vec![first.clone()]);
    let (s, t) = w.imds_token(&endpoint, VAULT_AUD, None).await;
    assert_eq!(s, 200, "the first certificate is still valid: {t}");

    w.faults.clear();
    eventually("the renewal completes once Entra answers", || async {
        let t = imds_thumbprint(&w, &vm_id).await;
        if t == first {
            Err("still the first")
        } else {
            Ok(())
        }
    })
    .await;
    assert_eq!(entra_thumbprints(&w, &principal).await.len(), 2);
    let (s, t) = w.imds_token(&endpoint, VAULT_AUD, None).await;
    assert_eq!(s, 200, "{t}");
    let report = settled(&w).await;
    assert!(report.drifts.is_empty(), "{report:?}");
    w.sb.shutdown().await.unwrap();
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `misim identity renew` (`Operations/RenewCredentials`, the owner's alone) renews a
/// certificate now, whatever its age, as the 45-day renewal does: Entra holds the old and
/// the new one, IMDS signs with the new one and the VM's tokens keep reading the vault. A
/// name no identity has renews nothing, even next to a known one; the compose way (the ARM
/// URL and the control key from the environment, no misim.env) renews every identity.
#[tokio::test(flavor = "multi_thread")]
async fn misim_identity_renew_renews_now_and_only_for_the_owner() {
    let w = start().await;
    let (vm_id, principal) = w
        .vm_reading_vault(("rg1", "vm1", "kv1"), ("db", "s3cret"))
        .await;
    let endpoint = w.imds_endpoint(&vm_id).await;
    let first = imds_thumbprint(&w, &vm_id).await;

    for args in [
        &["identity", "renew", "no-such-identity"][..],
        &["identity", "renew", principal.as_str(), "no-such-identity"][..],
    ] {
        let o = misim(&w, args).await;
        assert!(!o.status.success(), "{args:?}: {}", stdout(&o));
        assert!(
            stderr(&o).contains(
                "No managed identity has the client id, object id or resource id 'no-such-identity'"
            ),
            "{}",
            stderr(&o)
        );
    }
    for args in [
        &["identity", "renew"][..],
        &["identity", "renew", "--all", "x"],
    ] {
        let o = misim(&w, args).await;
        assert!(!o.status.success(), "{args:?} is refused by the CLI");
    }
    for caller in [Caller::Arm, Caller::Imds, Caller::Entra, Caller::KeyVault] {
        let e = misim_proto::arm::v1::operations_client::OperationsClient::new(
            w.sb.channel_as(caller, &w.sb.arm_grpc_url).unwrap(),
        )
        .renew_credentials(misim_proto::arm::v1::RenewCredentialsRequest {
            all: true,
            identities: vec![],
        })
        .await
        .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (
                tonic::Code::PermissionDenied,
                format!("caller {caller} may not call misim.arm.v1.Operations/RenewCredentials")
                    .as_str()
            )
        );
    }
    assert_eq!(imds_thumbprint(&w, &vm_id).await, first, "nothing renewed");
    assert_eq!(entra_thumbprints(&w, &principal).await, vec![first.clone()]);

    // By object id, with `misim up`'s misim.env.
    let o = misim(&w, &["identity", "renew", &principal]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let renewed = imds_thumbprint(&w, &vm_id).await;
    assert_ne!(renewed, first);
    assert!(
        stdout(&o).contains(&format!("{first} -> {renewed}\trenewed")),
        "{}",
        stdout(&o)
    );
    overlap_and_the_vm_reads(&w, &endpoint, &principal, (&first, &renewed)).await;

    // The compose way: no misim.env, the settings from the environment.
    let bare = tempfile::tempdir().unwrap();
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_misim"))
        .args(["identity", "renew", "--all", "--json", "--data-dir"])
        .arg(bare.path())
        .env("MISIM_ARM_GRPC_URL", &w.sb.arm_grpc_url)
        .env(
            misim_proto::auth::ENV_CONTROL_KEY_FILE,
            w.dir.path().join(misim_proto::auth::CONTROL_KEY_FILE),
        )
        .output()
        .await
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let third = imds_thumbprint(&w, &vm_id).await;
    assert_eq!(lines.len(), 1, "vm1's is the only identity: {lines:?}");
    assert_eq!(
        (
            lines[0]["principalId"].as_str(),
            lines[0]["previousThumbprint"].as_str(),
            lines[0]["thumbprint"].as_str(),
            lines[0]["done"].as_bool()
        ),
        (
            Some(principal.as_str()),
            Some(renewed.as_str()),
            Some(third.as_str()),
            Some(true)
        )
    );
    assert_ne!(third, renewed);
    assert_eq!(entra_thumbprints(&w, &principal).await.len(), 3);
    let report = settled(&w).await;
    assert!(report.drifts.is_empty(), "{report:?}");
    w.sb.shutdown().await.unwrap();
}
