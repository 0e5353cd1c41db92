"""Python SDK conformance: azure-identity, azure-mgmt-*, azure-keyvault-secrets, PyJWT."""
import json
import uuid

import pytest
import requests

from conftest import (
    ADMIN_CERT, ADMIN_ID, ARM_SCOPE, ENTRA, KV_SECRETS_USER, SUB, TENANT, VAULT_SCOPE,
    assign_role, create_vault, decode, in_vm, mgmt_kwargs, unique, vm_body,
)


def test_client_secret_credential(admin):
    tok = admin.get_token(ARM_SCOPE)
    claims = decode(tok.token)
    assert claims["appid"] == ADMIN_ID, claims
    assert claims["tid"] == TENANT
    assert claims["aud"].rstrip("/") == "https://management.azure.com"
    assert claims["appidacr"] == "1"
    assert tok.expires_on > claims["iat"]


def test_certificate_credential():
    from azure.identity import CertificateCredential

    cred = CertificateCredential(TENANT, ADMIN_ID, certificate_path=ADMIN_CERT, authority=ENTRA, disable_instance_discovery=True)
    claims = decode(cred.get_token(ARM_SCOPE).token)
    assert claims["appid"] == ADMIN_ID
    assert claims["appidacr"] == "2", "certificate-authenticated tokens carry appidacr 2"


def test_generic_jwt_validation_via_oidc_discovery(admin):
    import jwt

    token = admin.get_token(VAULT_SCOPE).token
    disco = requests.get(f"{ENTRA}/{TENANT}/.well-known/openid-configuration", timeout=10).json()
    key = jwt.PyJWKClient(disco["jwks_uri"]).get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=disco["id_token_signing_alg_values_supported"],
                        audience="https://vault.azure.net", issuer=disco["issuer"])
    assert claims["tid"] == TENANT
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"), key.key, algorithms=["RS256"],
                   audience="https://vault.azure.net", issuer=disco["issuer"])


def test_management_clients_lifecycle(admin, rg):
    from azure.mgmt.authorization import AuthorizationManagementClient
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.msi import ManagedServiceIdentityClient
    from conftest import ResourceManagementClient

    res = ResourceManagementClient(admin, SUB, **mgmt_kwargs())
    assert res.resource_groups.get(rg).name == rg
    assert any(g.name == rg for g in res.resource_groups.list())

    msi = ManagedServiceIdentityClient(admin, SUB, **mgmt_kwargs())
    uami = msi.user_assigned_identities.create_or_update(rg, "id1", {"location": "eastus"})
    assert uami.client_id and uami.principal_id and uami.tenant_id == TENANT
    assert [i.name for i in msi.user_assigned_identities.list_by_resource_group(rg)] == ["id1"]

    compute = ComputeManagementClient(admin, SUB, **mgmt_kwargs())
    vm_name = unique("vm")
    vm = compute.virtual_machines.begin_create_or_update(
        rg, vm_name, vm_body({"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {uami.id: {}}})
    ).result()
    assert vm.identity.type == "SystemAssigned, UserAssigned"
    assert vm.identity.principal_id
    assert list(vm.identity.user_assigned_identities.values())[0].client_id == uami.client_id

    auth = AuthorizationManagementClient(admin, SUB, **mgmt_kwargs())
    scope = f"/subscriptions/{SUB}/resourceGroups/{rg}"
    reader = list(auth.role_definitions.list(scope, filter="roleName eq 'reader'"))
    assert len(reader) == 1 and reader[0].role_name == "Reader"
    ra = assign_role(admin, scope, vm.identity.principal_id, reader[0].name)
    assert ra.principal_id == vm.identity.principal_id
    listed = list(auth.role_assignments.list_for_scope(scope, filter=f"principalId eq '{vm.identity.principal_id}'"))
    assert [a.name for a in listed] == [ra.name]
    auth.role_assignments.delete(scope, ra.name)

    vm = compute.virtual_machines.begin_update(rg, vm_name, {"identity": {"type": "UserAssigned"}}).result()
    assert vm.identity.type == "UserAssigned" and vm.identity.principal_id is None
    compute.virtual_machines.begin_delete(rg, vm_name).result()
    msi.user_assigned_identities.delete(rg, "id1")
    assert list(msi.user_assigned_identities.list_by_resource_group(rg)) == []


def test_secret_client_challenge_flow(admin, rg):
    from azure.keyvault.secrets import SecretClient

    vault = create_vault(admin, rg, "kv1")
    client = SecretClient(vault.properties.vault_uri, admin)
    client.set_secret("greeting", "hello")
    assert client.get_secret("greeting").value == "hello"
    assert [p.name for p in client.list_properties_of_secrets()] == ["greeting"]


VM_TOKEN_CODE = """
import json
from azure.identity import ManagedIdentityCredential
cred = ManagedIdentityCredential({args})
print(json.dumps({{"token": cred.get_token("https://vault.azure.net/.default").token}}))
"""

VM_SECRET_CODE = """
import json, sys
from azure.identity import {cred}
from azure.keyvault.secrets import SecretClient
client = SecretClient({url!r}, {cred}({args}))
print(json.dumps({{"value": client.get_secret({name!r}).value}}))
"""


def test_system_assigned_identity_in_vm(admin, rg):
    from azure.keyvault.secrets import SecretClient
    from azure.mgmt.compute import ComputeManagementClient

    vault = create_vault(admin, rg, "kv2")
    SecretClient(vault.properties.vault_uri, admin).set_secret("db", "s3cret")
    compute = ComputeManagementClient(admin, SUB, **mgmt_kwargs())
    vm_name = unique("vm")
    vm = compute.virtual_machines.begin_create_or_update(rg, vm_name, vm_body({"type": "SystemAssigned"})).result()
    assign_role(admin, vault.id, vm.identity.principal_id, KV_SECRETS_USER)

    claims = decode(in_vm(vm_name, VM_TOKEN_CODE.format(args=""))["token"])
    assert claims["oid"] == vm.identity.principal_id
    assert claims["xms_mirid"].lower() == vm.id.lower()
    for cred in ["ManagedIdentityCredential", "DefaultAzureCredential"]:
        out = in_vm(vm_name, VM_SECRET_CODE.format(cred=cred, url=vault.properties.vault_uri, args="", name="db"))
        assert out["value"] == "s3cret", cred
    out = in_vm(vm_name, VM_SECRET_CODE.format(cred="ManagedIdentityCredential", url=vault.properties.vault_uri, args="", name="db"),
                app_service=True)
    assert out["value"] == "s3cret"


def test_user_assigned_identity_selectors_in_vm(admin, rg):
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
        (f"client_id={a.client_id!r}", a),
        (f"identity_config={{'object_id': {b.principal_id!r}}}", b),
        (f"identity_config={{'resource_id': {a.id!r}}}", a),
    ]:
        claims = decode(in_vm(vm_name, VM_TOKEN_CODE.format(args=args))["token"])
        assert claims["oid"] == expect.principal_id, args
    # Two user-assigned identities and no selector: IMDS refuses, the credential is unavailable.
    code = VM_TOKEN_CODE.format(args="").replace("print(", "try:\n    print(").replace("token}))", "token}))\nexcept Exception as e:\n    print(json.dumps({'error': str(e)}))")
    out = in_vm(vm_name, code)
    assert "Multiple user assigned identities" in out.get("error", ""), out
