//! `misim vm exec --isolated` (Linux): curl and Python run in the VM's own user + network + mount
//! namespace and, with no override variable, get that VM's token from Azure's IMDS address and
//! read a secret from `https://{vault}.vault.azure.net`, a vault created after nothing was
//! configured for it; every other name is NXDOMAIN there. Skipped, with the reason, where
//! unprivileged namespaces, curl or python3 are not available.

use serde_json::{Value, json};

use crate::harness;

/// Azure's IMDS address, which exists only inside the namespace.
const IMDS: &str = "169.254.169.254"; // const
const SECRETS_USER: &str = "4633458b-17de-408a-b874-0445c86b69e6";

/// Why this machine cannot run the test, if it cannot.
fn unsupported() -> Option<String> {
    if !cfg!(target_os = "linux") {
        return Some("not Linux".into());
    }
    for tool in ["curl", "python3", "ip"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} not found"));
        }
    }
    match std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "--mount", "true"])
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "unshare refused: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("unshare: {e}")),
    }
}

async fn in_vm(data_dir: &std::path::Path, vm: &str, cmd: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_misim"))
        .args(["vm", "exec", "--isolated", vm, "--data-dir"])
        .arg(data_dir)
        .arg("--")
        .args(cmd)
        .env_remove("MISIM_DATA_DIR")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

fn claim(jwt: &str, name: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()[name].clone()
}

#[tokio::test]
async fn isolated_vm_gets_its_token_and_secret_under_azures_names() {
    if let Some(why) = unsupported() {
        eprintln!("SKIPPED isolated_vm_gets_its_token_and_secret_under_azures_names: {why}");
        return;
    }
    let w = harness::start().await;
    w.sb.write_env_file().unwrap();
    w.create_rg("rg1").await;
    let vm1 = w
        .create_vm("rg1", "vm1", json!({"type": "SystemAssigned"}))
        .await;
    let vm2 = w
        .create_vm("rg1", "vm2", json!({"type": "SystemAssigned"}))
        .await;
    let p1 = vm1["identity"]["principalId"].as_str().unwrap().to_owned();
    let p2 = vm2["identity"]["principalId"].as_str().unwrap().to_owned();
    // Created now; nothing in the namespace names it: only the DNS wildcard makes it resolve.
    w.create_vault("rg1", "kv2").await;
    w.assign_role(&w.vault_id("rg1", "kv2"), &p1, SECRETS_USER)
        .await;
    w.set_secret("kv2", "db", "s3cret").await;
    let dir = w.dir.path();

    let url = format!(
        "http://{IMDS}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net"
    );
    let curl = [
        "curl",
        "-sS",
        "--fail-with-body",
        "-H",
        "Metadata: true",
        &url,
    ];
    for (vm, principal) in [("vm1", &p1), ("vm2", &p2)] {
        let (ok, out, err) = in_vm(dir, vm, &curl).await;
        assert!(ok, "curl in {vm}: {out} {err}");
        let token: Value = serde_json::from_str(&out).unwrap();
        let token = token["access_token"].as_str().unwrap();
        assert_eq!(claim(token, "oid"), json!(principal), "{vm}'s own identity");
    }

    // Plain Python (urllib, the system CA store): IMDS, then the vault by Azure's name.
    let app = format!(
        r#"
import json, socket, urllib.request
req = urllib.request.Request("{url}", headers={{"Metadata": "true"}})
token = json.load(urllib.request.urlopen(req))["access_token"]
req = urllib.request.Request("https://kv2.vault.azure.net/secrets/db?api-version=7.4",
                             headers={{"Authorization": "Bearer " + token}})
print(json.load(urllib.request.urlopen(req))["value"])
for name in ["example.com", "pypi.org", "a.b.vault.azure.net"]:
    try:
        socket.getaddrinfo(name, 443)
        print("resolved", name)
    except socket.gaierror:
        print("nxdomain", name)
"#
    );
    let (ok, out, err) = in_vm(dir, "vm1", &["python3", "-c", &app]).await;
    assert!(ok, "python in vm1: {out} {err}");
    assert_eq!(
        out,
        "s3cret\nnxdomain example.com\nnxdomain pypi.org\nnxdomain a.b.vault.azure.net"
    );

    // No override variable: nothing names misim or the VM's loopback IMDS.
    let (ok, out, err) = in_vm(dir, "vm1", &["env"]).await;
    assert!(ok, "env: {err}");
    for var in [
        "AZURE_POD_IDENTITY_AUTHORITY_HOST=",
        "IDENTITY_ENDPOINT=",
        "MSI_ENDPOINT=",
        "MISIM_",
    ] {
        assert!(
            !out.lines().any(|l| l.starts_with(var)),
            "{var} is set: {out}"
        );
    }

    // vm2 has no role on the vault: its token is refused.
    let (ok, out, _) = in_vm(
        dir,
        "vm2",
        &[
            "sh",
            "-c",
            &format!(
                "t=$(curl -sS -H Metadata:true '{url}' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])') && \
                 curl -sS -o /dev/null -w '%{{http_code}}' -H \"Authorization: Bearer $t\" \
                 'https://kv2.vault.azure.net/secrets/db?api-version=7.4'"
            ),
        ],
    )
    .await;
    assert!(ok);
    assert_eq!(out, "403", "vm2 reads vm1's vault");

    // A VM that does not exist: a clear error, not a namespace.
    let (ok, _, err) = in_vm(dir, "nope", &["true"]).await;
    assert!(!ok);
    assert!(err.contains("no VM named nope"), "{err}");
}
