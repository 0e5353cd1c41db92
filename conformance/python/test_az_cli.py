"""Azure CLI conformance: the seed's commands verbatim, logins, and identity/role management.

az runs from its own virtualenv (.venv-az) with a throwaway AZURE_CONFIG_DIR per
test, pointed at misim only through documented settings: `az cloud register`,
REQUESTS_CA_BUNDLE and AZURE_CORE_INSTANCE_DISCOVERY=false.
"""
import json
import os
import pathlib
import subprocess

import pytest

from conftest import ADMIN_CERT, ADMIN_ID, ADMIN_SECRET, ARM, DATA, MISIM, SUB, TENANT, unique

AZ = str(pathlib.Path(__file__).resolve().parents[2] / ".venv-az" / "bin" / "az")
SCOPE = f"/subscriptions/{SUB}"


class Az:
    def __init__(self, config_dir):
        self.env = dict(os.environ)
        self.env.update(
            AZURE_CONFIG_DIR=str(config_dir),
            AZURE_CORE_INSTANCE_DISCOVERY="false",
            AZURE_CORE_COLLECT_TELEMETRY="false",
            AZURE_CORE_NO_COLOR="true",
            AZURE_CORE_ONLY_SHOW_ERRORS="true",
        )

    def __call__(self, *args, vm=None, expect_ok=True):
        cmd = [AZ, *args, "-o", "json"]
        if vm:
            cmd = [MISIM, "vm", "exec", vm, "--data-dir", DATA, "--", *cmd]
        p = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=300)
        what = " ".join(args)
        if expect_ok:
            assert p.returncode == 0, f"az {what}: exit {p.returncode}\nstderr: {p.stderr[-3000:]}\nstdout: {p.stdout[-2000:]}"
            return json.loads(p.stdout) if p.stdout.strip() else None
        assert p.returncode != 0, f"az {what} was expected to fail but printed {p.stdout[-2000:]}"
        return p.stderr

    def use_misim_cloud(self):
        self("cloud", "register", "-n", "misim", "--endpoint-resource-manager", ARM + "/")
        self("cloud", "set", "-n", "misim")


@pytest.fixture
def az(tmp_path):
    a = Az(tmp_path / "azure")
    a.use_misim_cloud()
    return a


def login_admin(az):
    az("login", "--service-principal", "-u", ADMIN_ID, "-p", ADMIN_SECRET, "--tenant", TENANT)


def test_az_login_service_principal_secret_and_certificate(az):
    accounts = az("login", "--service-principal", "-u", ADMIN_ID, "-p", ADMIN_SECRET, "--tenant", TENANT)
    assert [a["id"] for a in accounts] == [SUB]
    show = az("account", "show")
    assert show["tenantId"] == TENANT and show["user"]["name"] == ADMIN_ID and show["environmentName"] == "misim"
    az("logout")
    az("login", "--service-principal", "-u", ADMIN_ID, "--certificate", ADMIN_CERT, "--tenant", TENANT)
    assert az("account", "show")["id"] == SUB
    assert az("group", "list") is not None


def test_az_seed_commands_verbatim(az):
    login_admin(az)
    rg = az("group", "create", "-n", "myResourceGroup", "-l", "eastus")
    assert rg["properties"]["provisioningState"] == "Succeeded"

    # Enable system-assigned managed identity during creation of an Azure VM.
    vm = az("vm", "create", "--resource-group", "myResourceGroup", "--name", "myVM", "--image", "win2016datacenter",
            "--generate-ssh-keys", "--assign-identity", "--role", "contributor", "--scope", SCOPE,
            "--admin-username", "azureuser", "--admin-password", "myPassword12")
    sami = vm["identity"]["systemAssignedIdentity"]
    assert vm["powerState"] == "VM running" and sami
    contributor = [r for r in az("role", "assignment", "list", "--scope", SCOPE, "--assignee", sami)
                   if r["roleDefinitionName"] == "Contributor"]
    assert contributor, "the --role/--scope assignment exists"

    # Enable system-assigned managed identity on an existing Azure VM (note the casing: ARM names are case-insensitive).
    assigned = az("vm", "identity", "assign", "-g", "myResourceGroup", "-n", "myVm")
    assert assigned["systemAssignedIdentity"] == sami

    # Create a user-assigned identity.
    uami = az("identity", "create", "-g", "myResourceGroup", "-n", "myUserAssignedIdentity")
    assert uami["tenantId"] == TENANT and uami["clientId"] and uami["principalId"]

    # Assign a user-assigned managed identity during the creation of an Azure VM.
    vm2 = az("vm", "create", "--resource-group", "myResourceGroup", "--name", "myVM2", "--image", "Ubuntu2204",
             "--admin-username", "azureuser", "--admin-password", "myPassword12", "--assign-identity", "myUserAssignedIdentity")
    assert [v["clientId"] for v in vm2["identity"]["userAssignedIdentities"].values()] == [uami["clientId"]]

    # Assign a user-assigned managed identity to an existing Azure VM.
    both = az("vm", "identity", "assign", "-g", "myResourceGroup", "-n", "myVM", "--identities", "myUserAssignedIdentity")
    assert both["systemAssignedIdentity"] == sami and len(both["userAssignedIdentities"]) == 1
    shown = az("vm", "identity", "show", "-g", "myResourceGroup", "-n", "myVM")
    assert shown["type"] == "SystemAssigned, UserAssigned"

    # Removing the user-assigned identity keeps the system-assigned one (the canonical type string matters here).
    az("vm", "identity", "remove", "-g", "myResourceGroup", "-n", "myVM", "--identities", "myUserAssignedIdentity")
    shown = az("vm", "identity", "show", "-g", "myResourceGroup", "-n", "myVM")
    assert shown["type"] == "SystemAssigned" and shown["principalId"] == sami

    assert az("identity", "show", "-g", "myResourceGroup", "-n", "myUserAssignedIdentity")["principalId"] == uami["principalId"]
    assert [i["name"] for i in az("identity", "list", "-g", "myResourceGroup")] == ["myUserAssignedIdentity"]

    rg_scope = f"{SCOPE}/resourceGroups/myResourceGroup"
    ra = az("role", "assignment", "create", "--assignee-object-id", uami["principalId"], "--assignee-principal-type",
            "ServicePrincipal", "--role", "Reader", "--scope", rg_scope)
    assert ra["principalId"] == uami["principalId"]
    # Creating it again is not an error (az treats RoleAssignmentExists as success).
    az("role", "assignment", "create", "--assignee-object-id", uami["principalId"], "--assignee-principal-type",
       "ServicePrincipal", "--role", "reader", "--scope", rg_scope)
    listed = az("role", "assignment", "list", "--scope", rg_scope, "--assignee", uami["principalId"])
    assert [r["roleDefinitionName"] for r in listed] == ["Reader"]
    az("role", "assignment", "delete", "--ids", ra["id"])
    assert az("role", "assignment", "list", "--scope", rg_scope, "--assignee", uami["principalId"]) == []

    az("vm", "identity", "remove", "-g", "myResourceGroup", "-n", "myVM")
    assert az("vm", "identity", "show", "-g", "myResourceGroup", "-n", "myVM") is None
    az("identity", "delete", "-g", "myResourceGroup", "-n", "myUserAssignedIdentity")
    assert az("identity", "list", "-g", "myResourceGroup") == []
    az("vm", "delete", "-g", "myResourceGroup", "-n", "myVM2", "--yes")
    az("group", "delete", "-n", "myResourceGroup", "--yes")
    assert "myResourceGroup" not in [g["name"] for g in az("group", "list")]


def test_az_login_identity_inside_vm(az, tmp_path):
    login_admin(az)
    rg = unique("azid")
    vm_name = unique("idvm")
    az("group", "create", "-n", rg, "-l", "eastus")
    az("vm", "create", "-g", rg, "-n", vm_name, "--image", "Ubuntu2204", "--admin-username", "azureuser",
       "--admin-password", "myPassword12", "--assign-identity", "--role", "Reader", "--scope", f"{SCOPE}/resourceGroups/{rg}")
    inside = Az(tmp_path / "vm-azure")
    inside.use_misim_cloud()
    accounts = inside("login", "--identity", vm=vm_name)
    assert accounts[0]["user"]["name"] == "systemAssignedIdentity" and accounts[0]["tenantId"] == TENANT
    assert inside("account", "show", vm=vm_name)["id"] == SUB
    assert inside("group", "show", "-n", rg, vm=vm_name)["name"] == rg
    # Reader cannot write.
    err = inside("group", "create", "-n", unique("nope"), "-l", "eastus", vm=vm_name, expect_ok=False)
    assert "AuthorizationFailed" in err
    az("group", "delete", "-n", rg, "--yes")
