//! The sandbox's virtual clock through its public interfaces: `misim clock` (the CLI binary)
//! and `misim.admin.v1.Clock` over gRPC. Tokens, IMDS's cache and Key Vault's checks all
//! follow it, refusals change nothing, and the offset survives a restart.

use std::path::Path;

use crate::harness::{VAULT_AUD, now_unix, start, start_in};
use misim_proto::admin::v1::{AdvanceClockRequest, SetClockRequest, ShowClockRequest};
use misim_proto::auth::Caller;

/// Runs the `misim` binary with `args` against the sandbox in `data_dir`.
async fn misim(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_misim"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("MISIM_CLOCK_GRPC_URLS")
        .env_remove("MISIM_CONTROL_KEY_FILE")
        .output()
        .await
        .expect("misim runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn exp_of(token: &str) -> i64 {
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&misim_token::b64_lenient(payload).unwrap()).unwrap();
    claims["exp"].as_i64().unwrap()
}

/// The issue's scenario: a VM's token works, `misim clock advance 25h`, Key Vault refuses the
/// old token as expired with its own error, and IMDS hands out a new one (its cache follows
/// the clock) that Key Vault accepts.
#[tokio::test(flavor = "multi_thread")]
async fn advancing_25h_expires_old_tokens_and_imds_issues_new_ones() {
    let w = start().await;
    w.sb.write_env_file().unwrap();
    let (vm_id, _) = w
        .vm_reading_vault(("rg1", "vm1", "kv1"), ("db", "s3cret"))
        .await;
    let endpoint = w.imds_endpoint(&vm_id).await;
    let (s, before) = w.imds_token(&endpoint, VAULT_AUD, None).await;
    assert_eq!(s, 200, "{before}");
    let old = before["access_token"].as_str().unwrap().to_owned();
    assert_eq!(w.get_secret("kv1", "db", &old).await.0, 200);

    let (ok, out, err) = misim(w.dir.path(), &["clock", "advance", "25h"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("offset +1d 1h"), "{out}");
    let (ok, shown, err) = misim(w.dir.path(), &["clock", "show"]).await;
    assert!(ok, "{err}");
    assert!(shown.contains("offset +1d 1h"), "{shown}");

    let (s, refused) = w.get_secret("kv1", "db", &old).await;
    assert_eq!(s, 401, "{refused}");
    assert_eq!(refused["error"]["code"], "Unauthorized");
    assert_eq!(
        refused["error"]["message"],
        "[TokenExpired] Error validating token: 'S2S12086'."
    );

    let (s, after) = w.imds_token(&endpoint, VAULT_AUD, None).await;
    assert_eq!(s, 200, "{after}");
    let new = after["access_token"].as_str().unwrap();
    assert_ne!(new, old, "IMDS must not serve the expired cached token");
    let exp = exp_of(new);
    assert!(exp > now_unix() + 25 * 3600, "exp {exp} follows the clock");
    assert_eq!(after["expires_on"].as_str().unwrap(), exp.to_string());
    let (s, secret) = w.get_secret("kv1", "db", new).await;
    assert_eq!(s, 200, "{secret}");
    assert_eq!(secret["value"], "s3cret");
    w.sb.shutdown().await.unwrap();
}

/// Over gRPC: only the admin moves the clock; zero, negative and backward moves are refused
/// with a reason and leave it where it was; `allow_backwards` permits going back; the offset
/// survives a restart.
#[tokio::test(flavor = "multi_thread")]
async fn clock_rpc_is_admin_only_forward_only_and_persisted() {
    let w = start().await;
    let mut clock = w.sb.clock_client().unwrap();
    let first = clock.show(ShowClockRequest {}).await.unwrap().into_inner();
    assert_eq!(first.offset_seconds, 0);
    assert!((first.now_unix_seconds - now_unix()).abs() < 60);

    for caller in [Caller::Arm, Caller::Entra, Caller::Imds, Caller::KeyVault] {
        let mut as_service = misim_proto::admin::v1::clock_client::ClockClient::new(
            w.sb.channel_as(caller, &w.sb.admin_grpc_url).unwrap(),
        );
        let e = as_service
            .advance(AdvanceClockRequest { seconds: 60 })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{caller}");
    }

    let moved = clock
        .advance(AdvanceClockRequest {
            seconds: 46 * 86_400,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.offset_seconds, 46 * 86_400);
    let e = clock
        .advance(AdvanceClockRequest { seconds: -5 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = clock
        .set(SetClockRequest {
            unix_seconds: now_unix(),
            allow_backwards: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().contains("only moves forward"),
        "{}",
        e.message()
    );
    let unchanged = clock.show(ShowClockRequest {}).await.unwrap().into_inner();
    assert_eq!(unchanged.offset_seconds, 46 * 86_400);
    // Tokens are stamped with the moved time.
    let admin = w.admin_token("https://management.azure.com/.default").await;
    assert!(exp_of(&admin) > now_unix() + 46 * 86_400);

    let crate::harness::World { sb, dir, .. } = w;
    sb.shutdown().await.unwrap();
    let w = start_in(dir).await;
    let mut clock = w.sb.clock_client().unwrap();
    let again = clock.show(ShowClockRequest {}).await.unwrap().into_inner();
    assert_eq!(
        again.offset_seconds,
        46 * 86_400,
        "the offset survives restart"
    );
    let back = clock
        .set(SetClockRequest {
            unix_seconds: now_unix(),
            allow_backwards: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(back.offset_seconds.abs() < 60, "{back:?}");
    w.sb.shutdown().await.unwrap();
}

/// The CLI's bad input: a bad duration or time names the problem; going backwards without
/// the flag is refused and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn clock_cli_refuses_bad_input_and_changes_nothing() {
    let w = start().await;
    w.sb.write_env_file().unwrap();
    let dir = w.dir.path();
    let (ok, _, err) = misim(dir, &["clock", "advance", "soon"]).await;
    assert!(!ok);
    assert!(err.contains("not a duration"), "{err}");
    let (ok, _, err) = misim(dir, &["clock", "advance", "2w"]).await;
    assert!(!ok);
    assert!(err.contains("the unit must be"), "{err}");
    let (ok, _, err) = misim(dir, &["clock", "set", "yesterday"]).await;
    assert!(!ok);
    assert!(err.contains("RFC 3339"), "{err}");
    let (ok, _, err) = misim(dir, &["clock", "set", "2001-01-01T00:00:00Z"]).await;
    assert!(!ok);
    assert!(err.contains("only moves forward"), "{err}");
    let (ok, out, err) = misim(dir, &["clock", "show"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("offset 0s"), "{out}");
    let (ok, out, err) = misim(dir, &["clock", "set", "2999-01-01T00:00:00Z"]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("2999-01-01T00:00:0"), "{out}");
    w.sb.shutdown().await.unwrap();
}
