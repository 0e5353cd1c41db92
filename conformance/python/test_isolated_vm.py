"""Unmodified code inside `misim vm exec --isolated` (Linux): the command runs in its VM's own user +
network + mount namespace, where Azure's IMDS address and Azure's host names reach misim. The command
gets no override variable and no misim setting: its environment is PATH and HOME only (misim's
namespace adds the CA bundle variables), so azure-identity and the Rust crate take their IMDS path
and the vault is reached as https://{name}.vault.azure.net.
"""
import json
import os
import subprocess
import sys

from conftest import (
    DATA, KV_SECRETS_USER, MISIM, SUB, TENANT, VAULT_SCOPE, assign_role, create_vault, decode, mgmt_kwargs,
    unique, vm_body,
)
from test_rust_sdk import rust_client


def isolated(vm_name, cmd):
    """Runs `cmd` in the VM's namespace with a bare environment; returns its last stdout line as JSON."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")}
    p = subprocess.run([MISIM, "vm", "exec", "--isolated", vm_name, "--data-dir", DATA, "--", *cmd],
                       capture_output=True, text=True, timeout=150, env=env)
    assert p.returncode == 0, f"{cmd[0]} in VM {vm_name} (--isolated): exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr[-4000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def vm_with_vault(admin, rg, vault_name):
    from azure.keyvault.secrets import SecretClient
    from azure.mgmt.compute import ComputeManagementClient

    vault = create_vault(admin, rg, vault_name)
    SecretClient(vault.properties.vault_uri, admin).set_secret("db", "s3cret")
    compute = ComputeManagementClient(admin, SUB, **mgmt_kwargs())
    vm = compute.virtual_machines.begin_create_or_update(rg, unique("vm"), vm_body({"type": "SystemAssigned"})).result()
    assign_role(admin, vault.id, vm.identity.principal_id, KV_SECRETS_USER)
    return vm


APP = """
import json, os
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
token = ManagedIdentityCredential().get_token("https://vault.azure.net/.default").token
secret = SecretClient("https://%s.vault.azure.net", DefaultAzureCredential()).get_secret("db").value
print(json.dumps({"token": token, "secret": secret,
                  "overrides": sorted(k for k in os.environ if k.startswith(("MISIM_", "AZURE_", "IDENTITY_", "MSI_")))}))
"""


def test_azure_identity_in_isolated_vm_without_overrides(admin, rg):
    vm = vm_with_vault(admin, rg, "kv6")
    out = isolated(vm.name, [sys.executable, "-c", APP % "kv6"])
    claims = decode(out["token"])
    assert claims["oid"] == vm.identity.principal_id and claims["tid"] == TENANT, claims
    assert claims["xms_mirid"].lower() == vm.id.lower(), claims
    assert out["secret"] == "s3cret", out
    assert out["overrides"] == [], f"the command saw override variables: {out['overrides']}"


def test_rust_managed_identity_imds_in_isolated_vm(admin, rg):
    vm = vm_with_vault(admin, rg, "kv7")
    out = isolated(vm.name, [rust_client(), "managed-identity", "--scope", VAULT_SCOPE])
    claims = decode(out["token"])
    assert claims["oid"] == vm.identity.principal_id and claims["tid"] == TENANT, claims
    assert claims["aud"].rstrip("/") == "https://vault.azure.net", claims
