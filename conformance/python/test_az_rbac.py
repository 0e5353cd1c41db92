"""Azure CLI conformance for the seed's permission model: the Virtual Machine
Contributor and Reader cases of the Rust system tests
(crates/sandbox/tests/e2e/rbac.rs), driven by az.

The admin (misim.env) creates a resource group and a deployment principal the
Azure way, `az ad sp create-for-rbac --role ... --scopes <rg id>`; the test then
logs in as that principal (`az login --service-principal`) in its own
AZURE_CONFIG_DIR and runs the seed's commands. What each denial looks like is
what Azure answers (docs/compatibility.md, "RBAC denials through az"):

- a direct write: 403 `AuthorizationFailed`, naming the principal, the action and the scope;
- a template resource the deployer may not write (`az vm create` is a deployment):
  the deployment PUT's preflight answers 400 `InvalidTemplateDeployment`,
  "Authorization failed for template resource ...", one entry per resource, and
  nothing is deployed;
- attaching a user-assigned identity without `.../assign/action` on it: 403
  `LinkedAuthorizationFailed` (in a deployment: `DeploymentFailed` carrying it).
"""
import json

import pytest

from conftest import SUB, TENANT, unique
from test_az_cli import Az, login_admin

SCOPE = f"/subscriptions/{SUB}"
ASSIGN = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"
PASSWORD = "myPassword12"
CONTRIBUTOR = f"{SCOPE}/providers/Microsoft.Authorization/roleDefinitions/b24988ac-6180-42a0-ab88-20f7382dd24c"


def rg_id(rg):
    return f"{SCOPE}/resourceGroups/{rg}"


def create_for_rbac(admin, role, scope):
    """`az ad sp create-for-rbac` as the admin; returns (appId, password, object id)."""
    sp = admin("ad", "sp", "create-for-rbac", "--name", unique("deployer-"), "--role", role, "--scopes", scope)
    assert sp["tenant"] == TENANT and sp["password"]
    oid = admin("ad", "sp", "show", "--id", sp["appId"])["id"]
    return sp["appId"], sp["password"], oid


def login_as(tmp_path, name, app_id, password):
    a = Az(tmp_path / name)
    a.use_misim_cloud()
    accounts = a("login", "--service-principal", "-u", app_id, "-p", password, "--tenant", TENANT)
    # A principal with a role on one resource group still sees the subscription.
    assert [x["id"] for x in accounts] == [SUB]
    return a


def assert_denied(err, code, *parts):
    """az printed `(code) message` naming every part (principal, action, scope)."""
    assert f"({code})" in err, err
    low = err.lower()
    for p in parts:
        assert p.lower() in low, f"{p!r} not in: {err}"


def preflight_denied(err, oid, *resources):
    """`InvalidTemplateDeployment` naming each (name, type, action, scope) template resource."""
    assert_denied(err, "InvalidTemplateDeployment")
    for name, ty, action, scope in resources:
        assert (
            f"Authorization failed for template resource '{name}' of type '{ty}'. The client '{oid}' with object id "
            f"'{oid}' does not have permission to perform action '{action}' at scope '{scope}'." in err
        ), err


@pytest.fixture
def admin(tmp_path):
    a = Az(tmp_path / "admin")
    a.use_misim_cloud()
    login_admin(a)
    return a


@pytest.fixture
def group(admin):
    name = unique("azrbac")
    admin("group", "create", "-n", name, "-l", "eastus")
    yield name
    admin("group", "delete", "-n", name, "--yes")


def vm_create(az, rg, name, *extra, expect_ok=True):
    return az("vm", "create", "-g", rg, "-n", name, "--image", "Ubuntu2204", "--admin-username", "azureuser",
              "--admin-password", PASSWORD, *extra, expect_ok=expect_ok)


# No new network resources: az finds the admin's VNet in the group by itself (listing
# VNets needs only virtualNetworks/read) and the NIC joins its subnet
# (subnets/join/action); no public IP, no NSG.
EXISTING_NET = ("--public-ip-address", "", "--nsg", "")


def test_az_vm_contributor_system_assigned(admin, group, tmp_path):
    app_id, password, oid = create_for_rbac(admin, "Virtual Machine Contributor", rg_id(group))
    dep = login_as(tmp_path, "deployer", app_id, password)
    net = f"{rg_id(group)}/providers/Microsoft.Network"

    # Default networking creates a VNet, an NSG and a public IP: Virtual Machine
    # Contributor may join them but not write them, so ARM's preflight refuses the
    # whole deployment, naming every resource, and deploys nothing.
    err = vm_create(dep, group, "vm1", "--assign-identity", expect_ok=False)
    preflight_denied(
        err,
        oid,
        ("vm1VNET", "Microsoft.Network/virtualNetworks", "Microsoft.Network/virtualNetworks/write", f"{net}/virtualNetworks/vm1VNET"),
        ("vm1NSG", "Microsoft.Network/networkSecurityGroups", "Microsoft.Network/networkSecurityGroups/write",
         f"{net}/networkSecurityGroups/vm1NSG"),
        ("vm1PublicIP", "Microsoft.Network/publicIPAddresses", "Microsoft.Network/publicIPAddresses/write",
         f"{net}/publicIPAddresses/vm1PublicIP"),
    )
    assert "Deployment failed with multiple errors" in err
    assert dep("vm", "list", "-g", group) == []
    assert dep("network", "nic", "list", "-g", group) == []

    # The admin provides the network; the deployer reuses it.
    admin("network", "vnet", "create", "-g", group, "-n", "vnet", "--address-prefix", "10.1.0.0/16",
          "--subnet-name", "default", "--subnet-prefixes", "10.1.0.0/24")

    # Naming the subnet does not work for this role, on Azure as here: az probes
    # `GET .../virtualNetworks/vnet/subnets/default`, which needs
    # Microsoft.Network/virtualNetworks/subnets/read (not in the role), takes the 403
    # for "no such subnet" and tries to create it (subnets/write, refused too).
    err = vm_create(dep, group, "vm1", "--vnet-name", "vnet", "--subnet", "default", *EXISTING_NET, expect_ok=False)
    assert "Subnet(default) does not exist, but failed to create a new subnet" in err, err

    # The seed's --role contributor --scope <subscription> is refused before anything
    # is created. az first looks the role name up at the scope (Role Definitions - List
    # needs Microsoft.Authorization/roleDefinitions/read there; the deployer's role
    # holds it on its resource group only) ...
    err = vm_create(dep, group, "vm1", "--assign-identity", "--role", "contributor", "--scope", SCOPE,
                    *EXISTING_NET, expect_ok=False)
    assert_denied(err, "AuthorizationFailed", oid, "Microsoft.Authorization/roleDefinitions/read", f"over scope '{SCOPE}'")
    # ... and with the role given by id (no lookup; a bare GUID trips an az 2.91 bug,
    # `'RoleDefinitionsOperations' object has no attribute 'config'`) the deployment carries the role
    # assignment, which Virtual Machine Contributor may not write
    # (Microsoft.Authorization/roleAssignments/write): ARM's preflight refuses it.
    err = vm_create(dep, group, "vm1", "--assign-identity", "--role", CONTRIBUTOR, "--scope", SCOPE,
                    *EXISTING_NET, expect_ok=False)
    assert_denied(err, "InvalidTemplateDeployment")
    assert (
        "The template deployment failed with error: 'Authorization failed for template resource '" in err
        and "' of type 'Microsoft.Authorization/roleAssignments'. " in err
        and f"The client '{oid}' with object id '{oid}' does not have permission to perform action "
        f"'Microsoft.Authorization/roleAssignments/write' at scope '{SCOPE}/providers/Microsoft.Authorization/roleAssignments/"
        in err
    ), err
    err = dep("vm", "show", "-g", group, "-n", "vm1", expect_ok=False)
    assert "(ResourceNotFound)" in err, err

    # The seed's system-assigned creation, on the existing network: allowed.
    vm = vm_create(dep, group, "vm1", "--assign-identity", *EXISTING_NET)
    sami = vm["identity"]["systemAssignedIdentity"]
    assert vm["powerState"] == "VM running" and sami and vm["publicIpAddress"] == ""
    assert dep("vm", "identity", "show", "-g", group, "-n", "vm1")["principalId"] == sami

    # Enabling the system-assigned identity on an existing VM: allowed.
    vm_create(dep, group, "vm2", *EXISTING_NET)
    assert dep("vm", "identity", "show", "-g", group, "-n", "vm2") is None
    assigned = dep("vm", "identity", "assign", "-g", group, "-n", "vm2")
    assert assigned["systemAssignedIdentity"] and assigned["systemAssignedIdentity"] != sami

    # Nothing outside what the role grants: no role assignments, no identities.
    err = dep("role", "assignment", "create", "--assignee-object-id", sami, "--assignee-principal-type",
              "ServicePrincipal", "--role", "Reader", "--scope", rg_id(group), expect_ok=False)
    assert_denied(err, "AuthorizationFailed", oid, "Microsoft.Authorization/roleAssignments/write", rg_id(group))
    err = dep("identity", "create", "-g", group, "-n", "id1", expect_ok=False)
    assert_denied(err, "AuthorizationFailed", oid, "Microsoft.ManagedIdentity/userAssignedIdentities/write",
                  f"{rg_id(group)}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1")


def test_az_vm_contributor_user_assigned_needs_managed_identity_operator(admin, group, tmp_path):
    app_id, password, oid = create_for_rbac(admin, "Virtual Machine Contributor", rg_id(group))
    admin("network", "vnet", "create", "-g", group, "-n", "vnet", "--address-prefix", "10.1.0.0/16",
          "--subnet-name", "default", "--subnet-prefixes", "10.1.0.0/24")
    uami = admin("identity", "create", "-g", group, "-n", "myUserAssignedIdentity")
    dep = login_as(tmp_path, "deployer", app_id, password)
    vm_create(dep, group, "plain", *EXISTING_NET)

    # Virtual Machine Contributor alone may write the VM but not attach the identity.
    # The deployment starts and fails at the VM; az prints the operation's status body.
    err = vm_create(dep, group, "vm1", "--assign-identity", "myUserAssignedIdentity", *EXISTING_NET, expect_ok=False)
    status = json.loads(err.removeprefix("ERROR:").strip())
    assert status["status"] == "Failed" and status["error"]["code"] == "DeploymentFailed", err
    [detail] = status["error"]["details"]
    vm1 = f"{rg_id(group)}/providers/Microsoft.Compute/virtualMachines/vm1"
    assert detail["code"] == "LinkedAuthorizationFailed" and detail["target"].lower() == vm1.lower(), err
    assert detail["message"] == (
        f"The client '{oid}' with object id '{oid}' has permission to perform action "
        f"'Microsoft.Compute/virtualMachines/write' on scope '{vm1}'; however, it does not have permission to perform "
        f"action(s) '{ASSIGN}' on the linked scope(s) '{uami['id']}' (respectively) or the linked scope(s) are invalid."
    ), err
    err = dep("vm", "show", "-g", group, "-n", "vm1", expect_ok=False)
    assert "(ResourceNotFound)" in err, err
    err = dep("vm", "identity", "assign", "-g", group, "-n", "plain", "--identities", "myUserAssignedIdentity",
              expect_ok=False)
    assert_denied(err, "LinkedAuthorizationFailed", oid, ASSIGN, uami["id"])
    assert dep("vm", "identity", "show", "-g", group, "-n", "plain") is None

    # ... until the admin grants Managed Identity Operator on that identity.
    admin("role", "assignment", "create", "--assignee", app_id, "--role", "Managed Identity Operator",
          "--scope", uami["id"])
    vm = vm_create(dep, group, "vm1", "--assign-identity", "myUserAssignedIdentity", *EXISTING_NET)
    assert [v["clientId"] for v in vm["identity"]["userAssignedIdentities"].values()] == [uami["clientId"]]
    both = dep("vm", "identity", "assign", "-g", group, "-n", "plain", "--identities", "myUserAssignedIdentity")
    assert [v["principalId"] for v in both["userAssignedIdentities"].values()] == [uami["principalId"]]
    assert dep("vm", "identity", "show", "-g", group, "-n", "plain")["type"] == "UserAssigned"


def test_az_reader_reads_but_cannot_create_or_assign(admin, group, tmp_path):
    admin("network", "vnet", "create", "-g", group, "-n", "vnet", "--address-prefix", "10.1.0.0/16",
          "--subnet-name", "default", "--subnet-prefixes", "10.1.0.0/24")
    vm_create(admin, group, "vm1", *EXISTING_NET)
    app_id, password, oid = create_for_rbac(admin, "Reader", rg_id(group))
    reader = login_as(tmp_path, "reader", app_id, password)

    assert reader("vm", "show", "-g", group, "-n", "vm1")["name"] == "vm1"
    assert [v["name"] for v in reader("vm", "list", "-g", group)] == ["vm1"]

    # az vm create is a deployment: Reader may not even start one.
    err = vm_create(reader, group, "vm2", "--assign-identity", *EXISTING_NET, expect_ok=False)
    assert_denied(err, "AuthorizationFailed", oid, "Microsoft.Resources/deployments/write",
                  f"{rg_id(group)}/providers/Microsoft.Resources/deployments/vm_deploy_")
    err = reader("vm", "identity", "assign", "-g", group, "-n", "vm1", expect_ok=False)
    assert_denied(err, "AuthorizationFailed", oid, "Microsoft.Compute/virtualMachines/write",
                  f"{rg_id(group)}/providers/Microsoft.Compute/virtualMachines/vm1")
    assert reader("vm", "identity", "show", "-g", group, "-n", "vm1") is None
