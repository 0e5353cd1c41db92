"""Shared helpers for the Python-client conformance tests.

The suite runs against one `misim up` (started by conformance/run.sh); tests
never share resources: each creates its own resource group with a unique name.
Clients are configured only through their documented settings: authority host
+ disable_instance_discovery, base_url + credential_scopes, REQUESTS_CA_BUNDLE,
AZURE_POD_IDENTITY_AUTHORITY_HOST / IDENTITY_ENDPOINT (set by `misim vm exec`).
"""
import json
import os
import subprocess
import sys
import uuid

import pytest

try:  # azure-mgmt-resource >= 24 moved the client into a subpackage
    from azure.mgmt.resource.resources import ResourceManagementClient
except ImportError:  # pragma: no cover
    from azure.mgmt.resource import ResourceManagementClient

E = os.environ
ARM = E["MISIM_ARM_URL"]
ENTRA = E["MISIM_ENTRA_URL"]
TENANT = E["MISIM_TENANT_ID"]
SUB = E["MISIM_SUBSCRIPTION_ID"]
ADMIN_ID = E["MISIM_ADMIN_CLIENT_ID"]
ADMIN_SECRET = E["MISIM_ADMIN_CLIENT_SECRET"]
ADMIN_CERT = E["MISIM_ADMIN_CERT_PATH"]
MISIM = E["MISIM_BIN"]
DATA = E["MISIM_DATA_DIR"]
ARM_SCOPE = "https://management.azure.com/.default"
VAULT_SCOPE = "https://vault.azure.net/.default"
KV_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"


def mgmt_kwargs():
    return {"base_url": ARM, "credential_scopes": [ARM_SCOPE]}


@pytest.fixture(scope="session")
def admin():
    from azure.identity import ClientSecretCredential

    return ClientSecretCredential(TENANT, ADMIN_ID, ADMIN_SECRET, authority=ENTRA, disable_instance_discovery=True)


@pytest.fixture
def rg(admin):
    """A fresh resource group, deleted (with everything in it) afterwards."""

    client = ResourceManagementClient(admin, SUB, **mgmt_kwargs())
    name = "conf-" + uuid.uuid4().hex[:8]
    client.resource_groups.create_or_update(name, {"location": "eastus"})
    yield name
    client.resource_groups.begin_delete(name).result()


def unique(prefix):
    return prefix + uuid.uuid4().hex[:6]


def vm_body(identity):
    """A VM body as wire JSON: azure-mgmt-compute >= 35 sends dicts verbatim."""
    return {
        "location": "eastus",
        "identity": identity,
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_B1s"},
            "storageProfile": {
                "imageReference": {"publisher": "Canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts-gen2", "version": "latest"}
            },
            "osProfile": {"computerName": "vm", "adminUsername": "azureuser", "adminPassword": "P@ssw0rd1234!"},
        },
    }


def in_vm(vm_name, code, app_service=False):
    """Runs Python `code` "inside" a VM with `misim vm exec`; returns its stdout parsed as JSON."""
    cmd = [MISIM, "vm", "exec", vm_name, "--data-dir", DATA]
    if app_service:
        cmd.append("--app-service")
    cmd += ["--", sys.executable, "-c", code]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"in VM {vm_name}: exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr[-4000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def decode(token):
    import jwt

    return jwt.decode(token, options={"verify_signature": False})


def assign_role(admin, scope, principal_id, role_guid):
    from azure.mgmt.authorization import AuthorizationManagementClient

    client = AuthorizationManagementClient(admin, SUB, **mgmt_kwargs())
    return client.role_assignments.create(
        scope,
        str(uuid.uuid4()),
        {
            "role_definition_id": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{role_guid}",
            "principal_id": principal_id,
        },
    )


def create_vault(admin, rg, name):
    from azure.mgmt.keyvault import KeyVaultManagementClient

    client = KeyVaultManagementClient(admin, SUB, **mgmt_kwargs())
    return client.vaults.begin_create_or_update(
        rg,
        name,
        {
            "location": "eastus",
            "properties": {"tenant_id": TENANT, "sku": {"family": "A", "name": "standard"}, "enable_rbac_authorization": True},
        },
    ).result()
