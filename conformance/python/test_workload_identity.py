"""Workload identity federation conformance: unmodified clients trade an external
token for an Entra token through a federated identity credential (FIC).

- Pods: `misim pod exec` prepares the command the way AKS's workload-identity
  webhook prepares a pod (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_AUTHORITY_HOST,
  AZURE_FEDERATED_TOKEN_FILE); the clients read only those variables and the
  sandbox CA (docs/workload-identity.md, "Pods").
- CI jobs: a GitHub-shaped token from `misim oidc token --issuer github`.
- A managed identity as an application's credential: the identity's IMDS token
  for `api://AzureADTokenExchange` is the application's client assertion.
"""
import json
import os
import subprocess
import sys

import requests

from conftest import (
    ENTRA, KV_SECRETS_USER, MISIM, DATA, SUB, TENANT, assign_role, create_vault, decode, in_vm, mgmt_kwargs, unique,
    vm_body,
)
from test_az_cli import AZ, Az, login_admin

EXCHANGE = "api://AzureADTokenExchange"
OIDC = os.environ["MISIM_OIDC_URL"]
CA = os.environ["MISIM_CA_BUNDLE"]
READER = "acdd72a7-3385-48ef-bd42-f6fdc9fd2aa7"


def cluster_issuer(cluster):
    # AKS issuer URLs end with a slash; the FIC must name it exactly.
    return f"{OIDC}/kubernetes/{cluster}/"


def in_pod(cluster, service_account, client_id, cmd, env=None, expect_ok=True):
    """Runs `cmd` with `misim pod exec`; returns the completed process."""
    full = [MISIM, "pod", "exec", "--data-dir", DATA, "--cluster", cluster, "--service-account", service_account,
            "--client-id", client_id, "--", *cmd]
    p = subprocess.run(full, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    if expect_ok:
        assert p.returncode == 0, f"in pod {service_account}: exit {p.returncode}\nstdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-4000:]}"
    return p


def identity_with_fic(admin, rg, name, issuer, subject):
    """A user-assigned identity with one FIC, through azure-mgmt-msi; returns the identity."""
    from azure.mgmt.msi import ManagedServiceIdentityClient

    msi = ManagedServiceIdentityClient(admin, SUB, **mgmt_kwargs())
    uami = msi.user_assigned_identities.create_or_update(rg, name, {"location": "eastus"})
    fic = msi.federated_identity_credentials.create_or_update(
        rg, name, "fic1", {"issuer": issuer, "subject": subject, "audiences": [EXCHANGE]}
    )
    assert fic.issuer == issuer and fic.subject == subject and fic.audiences == [EXCHANGE]
    return uami


def graph(admin, method, path, body=None):
    token = admin.get_token("https://graph.microsoft.com/.default").token
    r = requests.request(method, f"{ENTRA}/v1.0/{path}", json=body, headers={"Authorization": f"Bearer {token}"},
                         verify=CA, timeout=60)
    assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
    return r.json() if r.text else None


def app_with_fic(admin, issuer, subject):
    """An application + service principal (`misim principal create`) trusting issuer/subject; returns the JSON."""
    p = subprocess.run([MISIM, "principal", "create", "--name", unique("wif-app-"), "--data-dir", DATA],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    app = json.loads(p.stdout)
    graph(admin, "POST", f"applications/{app['applicationObjectId']}/federatedIdentityCredentials",
          {"name": "trusted", "issuer": issuer, "subject": subject, "audiences": [EXCHANGE]})
    return app


POD_SECRET_CODE = """
import json
from azure.identity import {cred}
from azure.keyvault.secrets import SecretClient
print(json.dumps({{"value": SecretClient({url!r}, {cred}()).get_secret({name!r}).value}}))
"""


def test_workload_identity_credential_in_pod_reads_a_secret(admin, rg):
    """WorkloadIdentityCredential and DefaultAzureCredential, configured only by the webhook's variables."""
    from azure.keyvault.secrets import SecretClient

    uami = identity_with_fic(admin, rg, "payments-api", cluster_issuer("aks1"), "system:serviceaccount:payments:api")
    vault = create_vault(admin, rg, "kv6")
    SecretClient(vault.properties.vault_uri, admin).set_secret("db", "pod-s3cret")
    assign_role(admin, vault.id, uami.principal_id, KV_SECRETS_USER)
    for cred in ["WorkloadIdentityCredential", "DefaultAzureCredential"]:
        code = POD_SECRET_CODE.format(cred=cred, url=vault.properties.vault_uri, name="db")
        p = in_pod("aks1", "payments/api", uami.client_id, [sys.executable, "-c", code])
        assert json.loads(p.stdout.strip().splitlines()[-1])["value"] == "pod-s3cret", cred
    # Another service account of the same cluster is refused with Entra's subject code.
    code = POD_SECRET_CODE.format(cred="WorkloadIdentityCredential", url=vault.properties.vault_uri, name="db")
    p = in_pod("aks1", "payments/worker", uami.client_id, [sys.executable, "-c", code], expect_ok=False)
    assert p.returncode != 0 and "AADSTS700213" in p.stderr, p.stderr[-3000:]


def test_az_identity_federated_credential_commands_and_az_login_in_pod(tmp_path):
    """`az identity federated-credential create|show|list|delete` verbatim (Learn's AKS tutorial), then the
    pod logs in with `az login --federated-token "$(cat $AZURE_FEDERATED_TOKEN_FILE)"`."""
    az = Az(tmp_path / "admin")
    az.use_misim_cloud()
    login_admin(az)
    rg = unique("azwif")
    az("group", "create", "-n", rg, "-l", "eastus")
    uami = az("identity", "create", "--name", "wif-id", "--resource-group", rg, "--location", "eastus")
    issuer = cluster_issuer("aks2")
    fic = az("identity", "federated-credential", "create", "--name", "aks2-api", "--identity-name", "wif-id",
             "--resource-group", rg, "--issuer", issuer, "--subject", "system:serviceaccount:payments:api",
             "--audience", EXCHANGE)
    assert fic["name"] == "aks2-api" and fic["issuer"] == issuer and fic["audiences"] == [EXCHANGE], fic
    assert fic["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials", fic
    shown = az("identity", "federated-credential", "show", "--name", "aks2-api", "--identity-name", "wif-id",
               "--resource-group", rg)
    assert shown["subject"] == "system:serviceaccount:payments:api", shown
    listed = az("identity", "federated-credential", "list", "--identity-name", "wif-id", "--resource-group", rg)
    assert [f["name"] for f in listed] == ["aks2-api"], listed
    # The same issuer and subject under another name is refused, as Azure refuses it.
    err = az("identity", "federated-credential", "create", "--name", "dup", "--identity-name", "wif-id",
             "--resource-group", rg, "--issuer", issuer, "--subject", "system:serviceaccount:payments:api",
             expect_ok=False)
    assert "Issuer and subject combination already exists" in err, err
    az("role", "assignment", "create", "--assignee-object-id", uami["principalId"], "--assignee-principal-type",
       "ServicePrincipal", "--role", "Reader", "--scope", f"/subscriptions/{SUB}/resourceGroups/{rg}")

    pod_az = Az(tmp_path / "pod-azure")
    pod_az.use_misim_cloud()
    # The command of the workload-identity docs, typed in the pod ($1 is az, $2 the group).
    script = ('"$1" login --federated-token "$(cat $AZURE_FEDERATED_TOKEN_FILE)" --service-principal '
              '-u $AZURE_CLIENT_ID -t $AZURE_TENANT_ID -o json && "$1" group show -n "$2" -o json')
    p = in_pod("aks2", "payments/api", uami["clientId"], ["sh", "-c", script, "sh", AZ, rg], env=pod_az.env)
    assert f'"name": "{rg}"' in p.stdout, p.stdout
    account = pod_az("account", "show")
    assert account["user"]["name"] == uami["clientId"] and account["tenantId"] == TENANT, account

    az("identity", "federated-credential", "delete", "--name", "aks2-api", "--identity-name", "wif-id",
       "--resource-group", rg, "--yes")
    assert az("identity", "federated-credential", "list", "--identity-name", "wif-id", "--resource-group", rg) == []
    az("group", "delete", "-n", rg, "--yes")


def test_az_ad_app_federated_credential_commands_and_az_login_federated_token(tmp_path):
    """`az ad app federated-credential create|list|delete` (Learn's GitHub Actions setup), and a CI job's
    `az login --service-principal --federated-token` with the GitHub-shaped token."""
    az = Az(tmp_path / "admin")
    az.use_misim_cloud()
    login_admin(az)
    app = az("ad", "app", "create", "--display-name", unique("gh-deployer-"))
    az("ad", "sp", "create", "--id", app["appId"])
    subject = "repo:contoso/payments:environment:Production"
    params = tmp_path / "credential.json"
    params.write_text(json.dumps({"name": "github-prod", "issuer": f"{OIDC}/github", "subject": subject,
                                  "description": "Testing", "audiences": [EXCHANGE]}))
    created = az("ad", "app", "federated-credential", "create", "--id", app["id"], "--parameters", f"@{params}")
    assert created["name"] == "github-prod" and created["subject"] == subject, created
    listed = az("ad", "app", "federated-credential", "list", "--id", app["id"])
    assert [f["name"] for f in listed] == ["github-prod"], listed

    job_token = subprocess.run([MISIM, "oidc", "token", "--issuer", "github", "--subject", subject,
                                "--data-dir", DATA], capture_output=True, text=True, check=True).stdout.strip()
    job = Az(tmp_path / "job")
    job.use_misim_cloud()
    job("login", "--service-principal", "-u", app["appId"], "--federated-token", job_token, "--tenant", TENANT,
        "--allow-no-subscriptions")
    token = job("account", "get-access-token", "--resource", "https://management.azure.com/")
    assert decode(token["accessToken"])["appid"] == app["appId"]
    # A token of another environment (subject) is refused with AADSTS700213.
    other = subprocess.run([MISIM, "oidc", "token", "--issuer", "github", "--subject",
                            "repo:contoso/payments:environment:Staging", "--data-dir", DATA],
                           capture_output=True, text=True, check=True).stdout.strip()
    err = Az(tmp_path / "job2")
    err.use_misim_cloud()
    out = err("login", "--service-principal", "-u", app["appId"], "--federated-token", other, "--tenant", TENANT,
              "--allow-no-subscriptions", expect_ok=False)
    assert "AADSTS700213" in out, out

    az("ad", "app", "federated-credential", "delete", "--id", app["id"], "--federated-credential-id", "github-prod")
    assert az("ad", "app", "federated-credential", "list", "--id", app["id"]) == []
    az("ad", "app", "delete", "--id", app["id"])


def test_rust_workload_identity_credential_in_pod(admin, rg):
    """The crates.io azure_identity 1.0 WorkloadIdentityCredential, from the pod's environment only."""
    from test_rust_sdk import rust_client

    uami = identity_with_fic(admin, rg, "rust-api", cluster_issuer("aks3"), "system:serviceaccount:rust:api")
    p = in_pod("aks3", "rust/api", uami.client_id,
               [rust_client(), "workload-identity", "--scope", "https://management.azure.com/.default"])
    out = json.loads(p.stdout.strip().splitlines()[-1])
    claims = decode(out["token"])
    assert claims["oid"] == uami.principal_id and claims["appid"] == uami.client_id, claims


MI_AS_APP_CODE = """
import json
from azure.identity import ClientAssertionCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
mi = ManagedIdentityCredential(client_id={uami!r})
cred = ClientAssertionCredential({tenant!r}, {app!r}, lambda: mi.get_token("api://AzureADTokenExchange/.default").token,
                                 authority={entra!r})
print(json.dumps({{"value": SecretClient({url!r}, cred).get_secret("app-secret").value}}))
"""


def test_managed_identity_as_an_apps_federated_credential(admin, rg):
    """A VM's user-assigned identity's token for api://AzureADTokenExchange is an application's client
    assertion (Learn: configure an application to trust a managed identity)."""
    from azure.keyvault.secrets import SecretClient
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.msi import ManagedServiceIdentityClient

    msi = ManagedServiceIdentityClient(admin, SUB, **mgmt_kwargs())
    uami = msi.user_assigned_identities.create_or_update(rg, "app-credential", {"location": "eastus"})
    vm_name = unique("vm")
    ComputeManagementClient(admin, SUB, **mgmt_kwargs()).virtual_machines.begin_create_or_update(
        rg, vm_name, vm_body({"type": "UserAssigned", "userAssignedIdentities": {uami.id: {}}})
    ).result()
    app = app_with_fic(admin, f"{ENTRA}/{TENANT}/v2.0", uami.principal_id)
    vault = create_vault(admin, rg, "kv7")
    SecretClient(vault.properties.vault_uri, admin).set_secret("app-secret", "via-mi")
    assign_role(admin, vault.id, app["objectId"], KV_SECRETS_USER)
    out = in_vm(vm_name, MI_AS_APP_CODE.format(uami=uami.client_id, tenant=TENANT, app=app["appId"], entra=ENTRA,
                                               url=vault.properties.vault_uri))
    assert out["value"] == "via-mi"
