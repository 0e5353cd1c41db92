"""Rust SDK conformance: the crates.io `azure_identity` 1.0 crate, unmodified.

conformance/run.sh builds conformance/rust (its own Cargo workspace) and exports
MISIM_RUST_CLIENT, a small binary that prints one JSON line per call. The crate is
configured only through its documented settings: ClientOptions::cloud (custom
authority host) or AZURE_AUTHORITY_HOST, SSL_CERT_FILE for the sandbox CA, and
IDENTITY_ENDPOINT + IDENTITY_HEADER (`misim vm exec --app-service`; the crate's
IMDS address is hard-coded to the link-local Azure address).
"""
import json
import os
import subprocess
import time

import requests

from conftest import (
    ADMIN_ID, ARM_SCOPE, DATA, ENTRA, KV_SECRETS_USER, MISIM, SUB, TENANT, VAULT_SCOPE,
    assign_role, create_vault, decode, mgmt_kwargs, unique, vm_body,
)


def rust_client():
    path = os.environ.get("MISIM_RUST_CLIENT")
    assert path and os.access(path, os.X_OK), "MISIM_RUST_CLIENT is not set: run the suite with conformance/run.sh"
    return path


def run_rust(args, vm=None, env=None, expect_ok=True, timeout=150):
    """Runs the Rust client (inside `vm` via `misim vm exec --app-service` if given); returns its JSON line."""
    cmd = [rust_client(), *args]
    if vm:
        cmd = [MISIM, "vm", "exec", vm, "--data-dir", DATA, "--app-service", "--", *cmd]
    where = f" in VM {vm} (--app-service)" if vm else ""
    call = f"rust azure_identity 1.0: `{' '.join(args)}`{where}"
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    lines = p.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise AssertionError(f"{call}: exit {p.returncode}, no JSON line\nstdout: {p.stdout}\nstderr: {p.stderr[-4000:]}")
    if expect_ok:
        assert p.returncode == 0 and "token" in out, f"{call}: exit {p.returncode}\noutput: {out}\nstderr: {p.stderr[-4000:]}"
        assert out["expires_on"] > time.time() + 300, f"{call}: expires_on must be > 5 min ahead: {out}"
    else:
        assert p.returncode != 0 and "error" in out, f"{call}: expected a failure, got exit {p.returncode}: {out}"
    return out


def claims_of(out, call):
    claims = decode(out["token"])
    assert abs(claims["exp"] - out["expires_on"]) <= 1, f"{call}: expires_on {out['expires_on']} vs exp {claims['exp']}"
    return claims


def test_rust_client_secret_credential_arm_and_keyvault():
    for scope, aud in [(ARM_SCOPE, "https://management.azure.com"), (VAULT_SCOPE, "https://vault.azure.net")]:
        call = f"ClientSecretCredential.get_token({scope})"
        claims = claims_of(run_rust(["secret", "--scope", scope]), call)
        assert claims["appid"] == ADMIN_ID, (call, claims)
        assert claims["tid"] == TENANT, (call, claims)
        assert claims["aud"].rstrip("/") == aud, (call, claims)
        assert claims["appidacr"] == "1", (call, claims)


def test_rust_authority_host_from_env():
    """AZURE_AUTHORITY_HOST is the crate's other documented way to pick the authority."""
    out = run_rust(["secret", "--authority-from-env", "--scope", VAULT_SCOPE], env={"AZURE_AUTHORITY_HOST": ENTRA})
    claims = claims_of(out, "ClientSecretCredential (AZURE_AUTHORITY_HOST)")
    assert claims["appid"] == ADMIN_ID and claims["tid"] == TENANT, claims


def test_rust_token_works_against_arm():
    token = run_rust(["secret", "--scope", ARM_SCOPE])["token"]
    r = requests.get(f"{os.environ['MISIM_ARM_URL']}/subscriptions/{SUB}/resourcegroups",
                     params={"api-version": "2021-04-01"}, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, f"ARM list resource groups with the Rust ClientSecretCredential token: {r.status_code} {r.text}"


def test_rust_client_certificate_credential():
    call = "ClientCertificateCredential.get_token(ARM)"
    claims = claims_of(run_rust(["certificate", "--scope", ARM_SCOPE]), call)
    assert claims["appid"] == ADMIN_ID, (call, claims)
    assert claims["tid"] == TENANT, (call, claims)
    assert claims["aud"].rstrip("/") == "https://management.azure.com", (call, claims)
    assert claims["appidacr"] == "2", (call, "certificate-authenticated tokens carry appidacr 2", claims)


def test_rust_system_assigned_identity_in_vm(admin, rg):
    from azure.keyvault.secrets import SecretClient
    from azure.mgmt.compute import ComputeManagementClient

    vault = create_vault(admin, rg, "kv5")
    SecretClient(vault.properties.vault_uri, admin).set_secret("db", "s3cret")
    compute = ComputeManagementClient(admin, SUB, **mgmt_kwargs())
    vm_name = unique("vm")
    vm = compute.virtual_machines.begin_create_or_update(rg, vm_name, vm_body({"type": "SystemAssigned"})).result()
    assign_role(admin, vault.id, vm.identity.principal_id, KV_SECRETS_USER)

    call = "ManagedIdentityCredential (system-assigned).get_token(vault)"
    out = run_rust(["managed-identity", "--scope", VAULT_SCOPE], vm=vm_name)
    claims = claims_of(out, call)
    assert claims["oid"] == vm.identity.principal_id, (call, claims)
    assert claims["tid"] == TENANT, (call, claims)
    assert claims["aud"].rstrip("/") == "https://vault.azure.net", (call, claims)
    assert claims["xms_mirid"].lower() == vm.id.lower(), (call, claims)
    # The token the Rust crate got is accepted by Key Vault.
    r = requests.get(f"{vault.properties.vault_uri.rstrip('/')}/secrets/db", params={"api-version": "7.4"},
                     headers={"Authorization": f"Bearer {out['token']}"}, timeout=10)
    assert r.status_code == 200 and r.json()["value"] == "s3cret", f"Key Vault with the Rust MI token: {r.status_code} {r.text}"


def test_rust_user_assigned_identity_selectors_in_vm(admin, rg):
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.msi import ManagedServiceIdentityClient

    msi = ManagedServiceIdentityClient(admin, SUB, **mgmt_kwargs())
    a = msi.user_assigned_identities.create_or_update(rg, "ida", {"location": "eastus"})
    b = msi.user_assigned_identities.create_or_update(rg, "idb", {"location": "eastus"})
    compute = ComputeManagementClient(admin, SUB, **mgmt_kwargs())
    vm_name = unique("vm")
    compute.virtual_machines.begin_create_or_update(
        rg, vm_name, vm_body({"type": "UserAssigned", "userAssignedIdentities": {a.id: {}, b.id: {}}})
    ).result()
    for args, expect in [
        (["--client-id", a.client_id], a),
        (["--object-id", b.principal_id], b),
        (["--client-id", b.client_id], b),
        (["--object-id", a.principal_id], a),
    ]:
        call = f"ManagedIdentityCredential({' '.join(args)}).get_token(ARM)"
        claims = claims_of(run_rust(["managed-identity", "--scope", ARM_SCOPE, *args], vm=vm_name), call)
        assert claims["oid"] == expect.principal_id, (call, claims)
        assert claims["appid"] == expect.client_id, (call, claims)
        assert claims["aud"].rstrip("/") == "https://management.azure.com", (call, claims)


def test_rust_unknown_user_assigned_identity_fails_fast(rg, admin):
    """An identity the VM does not have must get a 4xx (the crate retries 5xx for ~80 s)."""
    from azure.mgmt.compute import ComputeManagementClient

    compute = ComputeManagementClient(admin, SUB, **mgmt_kwargs())
    vm_name = unique("vm")
    compute.virtual_machines.begin_create_or_update(rg, vm_name, vm_body({"type": "SystemAssigned"})).result()
    start = time.time()
    out = run_rust(["managed-identity", "--scope", ARM_SCOPE, "--client-id", "00000000-0000-0000-0000-000000000001"],
                   vm=vm_name, expect_ok=False, timeout=60)
    assert time.time() - start < 30, f"ManagedIdentityCredential with an unknown client id took too long: {out}"
