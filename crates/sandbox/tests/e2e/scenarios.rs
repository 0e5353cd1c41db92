//! Scenarios through the `misim` binary: `misim apply` (every example in examples/scenarios,
//! idempotence, pinned ids that IMDS tokens carry, malformed files refused by name with
//! nothing changed), `misim export` round trips, `misim up --scenario`, and that only the
//! sandbox owner can pin a managed identity's ids.

use std::path::{Path, PathBuf};

use misim_proto::auth::Caller;
use misim_proto::entra::v1 as entra;
use serde_json::{Value, json};

use crate::harness::{VAULT_AUD, World, start};

const PINNED_CLIENT: &str = "6a1f3c2e-0b7d-4c55-9e2a-1d3f5b7c9e01";
const PINNED_OBJECT: &str = "0f9e8d7c-6b5a-4938-8271-605f4e3d2c1b";

/// Runs the `misim` binary with `args` against the sandbox in `data_dir`.
async fn misim(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = cli(data_dir, args).output().await.expect("misim runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli(data_dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_misim"));
    c.args(args).arg("--data-dir").arg(data_dir);
    for v in [
        "MISIM_CONTROL_KEY_FILE",
        "MISIM_SCENARIO",
        "MISIM_IMDS_GRPC_URL",
        "MISIM_ENTRA_GRPC_URL",
        "MISIM_ARM_GRPC_URL",
        "MISIM_KEYVAULT_GRPC_URL",
    ] {
        c.env_remove(v);
    }
    c
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/scenarios")
        .join(name)
}

fn example_names() -> Vec<String> {
    let dir = example("");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn world() -> World {
    let w = start().await;
    w.sb.write_env_file().unwrap();
    w
}

async fn apply(w: &World, file: &Path) -> String {
    let (ok, out, err) = misim(w.dir.path(), &["apply", file.to_str().unwrap()]).await;
    assert!(ok, "apply {}: {out}{err}", file.display());
    out
}

async fn export(dir: &Path) -> Value {
    let (ok, out, err) = misim(
        dir,
        &["export", "--format", "json", "--include-secret-values"],
    )
    .await;
    assert!(ok, "export: {out}{err}");
    serde_json::from_str(&out).unwrap()
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&misim_token::b64_lenient(payload).unwrap()).unwrap()
}

/// Every example applies to a fresh sandbox, and applying it again changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn every_example_applies_and_a_second_apply_changes_nothing() {
    let names = example_names();
    assert!(names.len() >= 3, "{names:?}");
    for name in names {
        let w = world().await;
        let first = apply(&w, &example(&name)).await;
        assert!(
            first.contains("\ncreated\t") || first.starts_with("created\t"),
            "{name}: {first}"
        );
        let again = apply(&w, &example(&name)).await;
        assert!(again.trim_end().ends_with(" unchanged"), "{name}: {again}");
        assert!(
            again.contains("\n0 changed,"),
            "{name}: nothing may change the second time: {again}"
        );
        w.sb.shutdown().await.unwrap();
    }
}

/// The pinned identity's ids are what ARM reports and what the IMDS token carries (after the
/// scenario's two injected 429s); the VM reads the vault with it; the clock moved.
#[tokio::test(flavor = "multi_thread")]
async fn pinned_ids_reach_arm_and_the_imds_token() {
    let w = world().await;
    let out = apply(&w, &example("pinned-ids.yaml")).await;
    assert!(
        out.contains("updated\tclock\t2030-01-15T09:00:00Z"),
        "{out}"
    );
    let token = w.admin_token("https://management.azure.com/.default").await;
    let (s, id) = w
        .arm("GET", &w.uami_id("app-rg", "app-identity"), &token, None)
        .await;
    assert_eq!(s, 200, "{id}");
    assert_eq!(id["properties"]["clientId"], PINNED_CLIENT);
    assert_eq!(id["properties"]["principalId"], PINNED_OBJECT);

    let endpoint = w.imds_endpoint(&w.vm_id("app-rg", "vm1")).await;
    for _ in 0..2 {
        let (s, body) = w.imds_token(&endpoint, VAULT_AUD, None).await;
        assert_eq!(s, 429, "the scenario's fault: {body}");
    }
    let (s, body) = w.imds_token(&endpoint, VAULT_AUD, None).await;
    assert_eq!(s, 200, "{body}");
    let access = body["access_token"].as_str().unwrap();
    let c = claims(access);
    assert_eq!(c["oid"], PINNED_OBJECT);
    assert_eq!(c["appid"], PINNED_CLIENT);
    assert!(
        c["iat"].as_i64().unwrap() >= 1_894_698_000,
        "issued at the scenario's time: {c}"
    );
    // The harness's client knows kv1 and kv2 only.
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(w.sb.ca_pem.as_bytes()).unwrap())
        .resolve("app-kv.vault.localhost", w.sb.keyvault_addr)
        .no_proxy()
        .build()
        .unwrap();
    let r = http
        .get(format!(
            "{}secrets/api-key?api-version=7.4",
            w.sb.vault_url("app-kv")
        ))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let secret: Value = r.json().await.unwrap();
    assert_eq!(secret["value"], "not-a-real-key");
    assert!(
        out.contains("created\tsecret\tapp-kv/filled-in-later"),
        "{out}"
    );
    w.sb.shutdown().await.unwrap();
}

/// Each malformed scenario is refused with a message naming the problem, and nothing is
/// created (not even what comes before the problem in the file).
#[tokio::test(flavor = "multi_thread")]
async fn malformed_scenarios_are_refused_by_name_and_change_nothing() {
    let w = world().await;
    let head = "apiVersion: misim/v1\nresourceGroups: [{name: rg1}]\n";
    let cases = [
        (
            "identities: [{name: id1, resourceGroup: rg1, clientID: x}]",
            "identities[0].clientID: unknown field `clientID`",
        ),
        (
            "identities: [{name: id1, resourceGroup: rg1, clientId: nope, principalId: 11111111-1111-4111-8111-111111111111}]",
            "identities[0].clientId: \"nope\" is not a GUID",
        ),
        (
            "vms: [{name: vm1, resourceGroup: rg2}]",
            "vms[0].resourceGroup: no resource group \"rg2\"",
        ),
        (
            "vms: [{name: vm1, resourceGroup: rg1, userAssigned: [ghost]}]",
            "vms[0].userAssigned[0]: no identity \"ghost\"",
        ),
        (
            "identities: [{name: id1, resourceGroup: rg1}]\nroleAssignments: [{role: Vault Wizard, principal: {identity: id1}, scope: {resourceGroup: rg1}}]",
            "roleAssignments[0].role: no role named \"Vault Wizard\"",
        ),
        (
            "faults: [{service: imds, status: 429, latency: 2h}]",
            "faults[0]: latency:",
        ),
        ("faults: [{service: dns, status: 500}]", "faults[0]: "),
        (
            "clock: {at: next tuesday}",
            "clock.at: \"next tuesday\" is not an RFC 3339 time",
        ),
        (
            "vms: [{name: vm1, resourceGroup: rg1, systemAssigned: yes}]",
            "vms[0].systemAssigned: invalid type",
        ),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let file = w.dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&file, format!("{head}{body}\n")).unwrap();
        let (ok, out, err) = misim(w.dir.path(), &["apply", file.to_str().unwrap()]).await;
        assert!(!ok, "{body}: {out}");
        assert!(err.contains(want), "{body}: want {want:?} in {err}");
        assert!(err.contains("nothing was changed"), "{err}");
    }
    let file = w.dir.path().join("bad.json");
    std::fs::write(&file, "{\"apiVersion\": \"misim/v1\", ").unwrap();
    let (ok, _, err) = misim(w.dir.path(), &["apply", file.to_str().unwrap()]).await;
    assert!(!ok && err.contains("not JSON"), "{err}");

    let state = export(w.dir.path()).await;
    assert!(
        state.get("resourceGroups").is_none(),
        "nothing was created: {state}"
    );
    w.sb.shutdown().await.unwrap();
}

/// A pinned id that another principal holds is refused before anything is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_id_already_in_use_is_refused_naming_its_holder() {
    let w = world().await;
    let admin = w.sb.bootstrap.admin_object_id.clone();
    let file = w.dir.path().join("taken.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: misim/v1\nresourceGroups: [{{name: rg1}}]\nidentities:\n\
             \x20 - {{name: id1, resourceGroup: rg1, clientId: {PINNED_CLIENT}, principalId: {admin}}}\n"
        ),
    )
    .unwrap();
    let (ok, out, err) = misim(w.dir.path(), &["apply", file.to_str().unwrap()]).await;
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!(
            "identities[0].principalId: already used by service principal {admin}"
        )),
        "{err}"
    );
    assert!(export(w.dir.path()).await.get("resourceGroups").is_none());
    w.sb.shutdown().await.unwrap();
}

/// Only the owner pins ids: the services' credentials are refused, and ids in an ARM body
/// (even the admin's) are ignored as the read-only properties they are.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_owner_can_pin_a_managed_identitys_ids() {
    let w = world().await;
    let id = w.uami_id("rg1", "id1");
    for caller in [Caller::Arm, Caller::Imds, Caller::KeyVault, Caller::Entra] {
        let ch = w.sb.channel_as(caller, &w.sb.entra_grpc_url).unwrap();
        let e = entra::directory_client::DirectoryClient::new(ch)
            .reserve_managed_identity_ids(entra::ReserveManagedIdentityIdsRequest {
                managed_identity_resource_id: id.clone(),
                app_id: PINNED_CLIENT.into(),
                object_id: PINNED_OBJECT.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{caller:?}: {e}");
    }
    w.create_rg("rg1").await;
    let body = json!({"location": "eastus", "properties": {"clientId": PINNED_CLIENT, "principalId": PINNED_OBJECT}});
    let (s, v) = w.admin("PUT", &id, Some(body)).await;
    assert!(s == 200 || s == 201, "{v}");
    assert_ne!(v["properties"]["clientId"], PINNED_CLIENT);
    assert_ne!(v["properties"]["principalId"], PINNED_OBJECT);
    w.sb.shutdown().await.unwrap();
}

/// Export, apply to a fresh sandbox, export again: the same scenario (the clock only later).
#[tokio::test(flavor = "multi_thread")]
async fn export_then_apply_on_a_fresh_sandbox_reproduces_the_state() {
    let w = world().await;
    apply(&w, &example("pinned-ids.yaml")).await;
    apply(&w, &example("vm-reads-vault.yaml")).await;
    let (ok, out, err) = misim(
        w.dir.path(),
        &[
            "fault",
            "add",
            "--service",
            "keyvault",
            "--identity",
            PINNED_CLIENT,
            "--status",
            "403",
            "--probability",
            "0.5",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    let file = w.dir.path().join("exported.yaml");
    let (ok, out, err) = misim(
        w.dir.path(),
        &[
            "export",
            "--out",
            file.to_str().unwrap(),
            "--include-secret-values",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("not exported: 2 role assignment(s)"),
        "the admin's two: {err}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("apiVersion: misim/v1\n"), "{text}");
    let first = export(w.dir.path()).await;
    w.sb.shutdown().await.unwrap();

    let fresh = world().await;
    apply(&fresh, &file).await;
    let second = export(fresh.dir.path()).await;
    let without_clock = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("clock");
        v
    };
    assert_eq!(without_clock(&first), without_clock(&second));
    // Both sandboxes start from the file's time; neither is behind it (how far each has
    // ticked past it depends on how long its commands took).
    let at =
        |v: &Value| misim_types::time::parse_rfc3339(v["clock"]["at"].as_str().unwrap()).unwrap();
    let exported: Value = yaml_serde::from_str(&text).unwrap();
    assert!(at(&first) >= at(&exported), "{first} {exported}");
    assert!(at(&second) >= at(&exported), "{second} {exported}");
    assert_eq!(second["identities"][0]["clientId"], PINNED_CLIENT);
    assert_eq!(second["faults"].as_array().unwrap().len(), 2, "{second}");

    // Without --include-secret-values only names are written.
    let (ok, out, _) = misim(fresh.dir.path(), &["export"]).await;
    assert!(ok);
    assert!(
        out.contains("- name: db-password\n") && !out.contains("s3cret"),
        "{out}"
    );
    fresh.sb.shutdown().await.unwrap();
}

/// `misim up --scenario` applies the file before it reports ready; a failing scenario stops
/// `misim up` with the error and a non-zero exit.
#[tokio::test(flavor = "multi_thread")]
async fn up_with_a_scenario_applies_it_before_ready() {
    use tokio::io::AsyncBufReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let scenario = example("vm-reads-vault.yaml");
    let mut child = cli(
        dir.path(),
        &[
            "up",
            "--random-ports",
            "--scenario",
            scenario.to_str().unwrap(),
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut before_ready = Vec::new();
    let found = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.starts_with("misim is up") {
                return true;
            }
            before_ready.push(l);
        }
        false
    })
    .await
    .expect("misim up reports ready");
    assert!(found, "{before_ready:?}");
    assert!(
        before_ready.iter().any(|l| l.starts_with("created\tvm\t")),
        "{before_ready:?}"
    );
    let state = export(dir.path()).await;
    assert_eq!(state["vms"][0]["name"], "myVM");
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: misim/v1\nroleAssignments: [{role: Nope, principal: {principalId: x}, scope: {subscription: true}}]\n").unwrap();
    let other = tempfile::tempdir().unwrap();
    let out = cli(
        other.path(),
        &["up", "--random-ports", "--scenario", bad.to_str().unwrap()],
    )
    .output()
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("roleAssignments[0].principal.principalId: \"x\" is not a GUID"),
        "{err}"
    );
}

/// As in the compose sandbox's entra container: no misim.env, every setting from the
/// environment (the admin's app id and secret file, Key Vault by URL, the services' clocks
/// as a list); apply writes a vault's secret, a second apply changes nothing, export reads
/// it all back.
#[tokio::test(flavor = "multi_thread")]
async fn apply_and_export_reach_the_sandbox_the_environment_names_without_misim_env() {
    let w = start().await;
    let bare = tempfile::tempdir().unwrap();
    let secret_file = bare.path().join("admin-secret");
    let mut env: Vec<(String, String)> = Vec::new();
    for line in w.sb.env_file().lines() {
        let (k, v) = line.split_once('=').unwrap();
        match k {
            "MISIM_ADMIN_CLIENT_ID" => env.push(("MISIM_ADMIN_APP_ID".into(), v.into())),
            "MISIM_ADMIN_CLIENT_SECRET" => std::fs::write(&secret_file, format!("{v}\n")).unwrap(),
            "MISIM_KEYVAULT_PORT" => {
                env.push((
                    "MISIM_KEYVAULT_URL".into(),
                    format!("https://127.0.0.1:{v}"),
                ));
            }
            "MISIM_ADMIN_GRPC_URL" => {
                env.push(("MISIM_CLOCK_GRPC_URLS".into(), format!("{v},{v}")))
            }
            _ => env.push((k.into(), v.into())),
        }
    }
    env.push((
        "MISIM_ADMIN_SECRET_FILE".into(),
        secret_file.display().to_string(),
    ));
    let run = |args: &[&str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_misim"));
        c.args(args)
            .arg("--data-dir")
            .arg(bare.path())
            .env_remove("MISIM_ADMIN_CLIENT_ID")
            .env_remove("MISIM_ADMIN_CLIENT_SECRET")
            .env_remove("MISIM_ADMIN_GRPC_URL")
            .env_remove("MISIM_KEYVAULT_PORT")
            .envs(env.iter().map(|(k, v)| (k, v)));
        async move {
            let o = c.output().await.unwrap();
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(
                o.status.success(),
                "{out}{}",
                String::from_utf8_lossy(&o.stderr)
            );
            out
        }
    };
    let file = example("vm-reads-vault.yaml");
    let first = run(&["apply", file.to_str().unwrap()]).await;
    assert!(first.contains("created\t"), "{first}");
    let again = run(&["apply", file.to_str().unwrap()]).await;
    assert!(again.contains("\n0 changed,"), "{again}");
    let out = run(&["export", "--format", "json", "--include-secret-values"]).await;
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["vaults"][0]["name"], "kv1", "{s}");
    assert_eq!(s["vaults"][0]["secrets"][0]["value"], "s3cret", "{s}");
    assert_eq!(s["vms"][0]["name"], "myVM", "{s}");
    assert!(
        !bare.path().join("misim.env").exists(),
        "nothing was read or written there"
    );
    w.sb.shutdown().await.unwrap();
}
