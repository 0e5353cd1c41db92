"""The tester's toolkit against real clients: faults injected with `misim fault`, seen in `misim log`.

What each client really does (docs/toolkit.md, "Real clients against injected faults", cites the source):
azure-identity's IMDS pipeline retries 404, 410, 429 and 5xx up to five times, sleeping `Retry-After`
when IMDS sends one, else 0, 1.6, 3.2, 6.4, 12.8 s (0, 5, 10, 20, 40 s after a 410); the Azure CLI's ARM clients use
azure-core's default retry policy (408, 429, 500, 502, 503, 504; at most 3 retries on a status;
`Retry-After` honoured).

Every test first shows the injected answer is really what the client got (a raw request, or the
client's own debug log), then that the client got through, then that the rule was consumed. Lower
bounds on elapsed time are the clients' own sleeps, never upper bounds (the machine may be slow).
"""
import datetime
import json
import os
import pathlib
import re
import subprocess
import sys
import time
import uuid

import pytest

from conftest import (
    ADMIN_ID, ADMIN_SECRET, DATA, KV_SECRETS_USER, MISIM, SUB, TENANT, decode, in_vm, mgmt_kwargs, unique, vm_body,
)
from test_az_cli import AZ, Az

ROOT = pathlib.Path(__file__).resolve().parents[2]


def misim(*args, env=None, data_dir=DATA):
    """Runs a `misim` toolkit command against a sandbox; returns its stdout."""
    p = subprocess.run([MISIM, *args, "--data-dir", data_dir], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, f"misim {' '.join(args)}: exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p.stdout


def add_fault(*args):
    rule = misim("fault", "add", *args).strip()
    assert re.fullmatch(r"(imds|arm|entra|keyvault)-\d+", rule), rule
    return rule


def rules():
    return {r["id"]: r for r in json.loads(misim("fault", "list", "--json"))}


def fault_entries(service, rule):
    """The decision log's entries for one fault rule, oldest first."""
    lines = misim("log", "--service", service, "--json").splitlines()
    return [e for e in map(json.loads, lines) if e.get("faultId") == rule]


def seconds_between(a, b):
    t = lambda e: datetime.datetime.fromisoformat(e["time"].replace("Z", "+00:00"))
    return (t(b) - t(a)).total_seconds()


@pytest.fixture
def clear_faults():
    """Rules this test added; any left (a failed test) are cleared so no later test inherits them."""
    added = []
    yield added
    left = rules()
    for rule in added:
        if rule in left:
            misim("fault", "clear", rule)


# Inside the VM: optionally one raw IMDS request (no retry: what the client's first try sees), then
# ManagedIdentityCredential; prints one JSON line.
VM_RETRY_CODE = """
import json, os, time
import requests
from azure.identity import ManagedIdentityCredential
raw = None
if {probe}:
    r = requests.get(os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] + "/metadata/identity/oauth2/token",
                     params={{"api-version": "2018-02-01", "resource": "https://vault.azure.net"}},
                     headers={{"Metadata": "true"}}, timeout=30)
    raw = {{"status": r.status_code, "retry_after": r.headers.get("Retry-After"), "body": r.json()}}
start = time.monotonic()
try:
    token, error = ManagedIdentityCredential().get_token("https://vault.azure.net/.default").token, None
except Exception as e:
    token, error = None, type(e).__name__ + ": " + str(e)
print(json.dumps({{"raw": raw, "token": token, "error": error, "seconds": time.monotonic() - start}}))
"""


def vm_with_identity(admin, rg):
    from azure.mgmt.compute import ComputeManagementClient

    compute = ComputeManagementClient(admin, SUB, **mgmt_kwargs())
    return compute.virtual_machines.begin_create_or_update(rg, unique("vm"), vm_body({"type": "SystemAssigned"})).result()


def token_oid(token):
    return decode(token)["oid"]


def test_managed_identity_credential_survives_two_imds_429s(admin, rg, clear_faults):
    vm = vm_with_identity(admin, rg)
    # Three 429s: the raw request takes the first, ManagedIdentityCredential the next two.
    rule = add_fault("--service", "imds", "--vm", vm.name, "--status", "429", "--retry-after", "1", "--count", "3")
    clear_faults.append(rule)
    assert rules()[rule]["remaining"] == 3

    out = in_vm(vm.name, VM_RETRY_CODE.format(probe=True))
    assert out["raw"] == {"status": 429, "retry_after": "1", "body": {
        "error": "too_many_requests", "error_description": "Too many requests: the IMDS rate limit for this VM was exceeded"}}
    assert out["error"] is None and token_oid(out["token"]) == vm.identity.principal_id
    # Two sleeps of Retry-After (1 s) before the third try succeeded.
    assert out["seconds"] >= 2.0, out

    entries = fault_entries("imds", rule)
    assert [(e["kind"], e["status"], e["code"], e["principal"]) for e in entries] == \
        [("fault", 429, "too_many_requests", vm.name.lower())] * 3, entries
    assert seconds_between(entries[1], entries[2]) >= 0.99, "the credential waited Retry-After between its 429s"
    assert rule not in rules(), "the rule was consumed"


def test_managed_identity_credential_survives_two_imds_410s(admin, rg, clear_faults):
    vm = vm_with_identity(admin, rg)
    # IMDS's 410 carries no Retry-After: azure-identity backs off 0 s, then 5 s (its 410 factor 2.5).
    rule = add_fault("--service", "imds", "--vm", vm.name, "--status", "410", "--count", "3")
    clear_faults.append(rule)

    out = in_vm(vm.name, VM_RETRY_CODE.format(probe=True))
    assert out["raw"] == {"status": 410, "retry_after": None, "body": {
        "error": "service_unavailable", "error_description": "IMDS is being updated and will be available within 70 seconds"}}
    assert out["error"] is None and token_oid(out["token"]) == vm.identity.principal_id
    assert out["seconds"] >= 5.0, out

    entries = fault_entries("imds", rule)
    assert [(e["status"], e["code"]) for e in entries] == [(410, "service_unavailable")] * 3, entries
    assert rule not in rules()


def test_managed_identity_credential_gives_up_after_five_imds_retries(admin, rg, clear_faults):
    vm = vm_with_identity(admin, rg)
    rule = add_fault("--service", "imds", "--vm", vm.name, "--status", "429", "--retry-after", "1", "--count", "8")
    clear_faults.append(rule)

    out = in_vm(vm.name, VM_RETRY_CODE.format(probe=False))
    # One try and five retries, then the 429 reaches the app as "unavailable" (so DefaultAzureCredential
    # would go on to its next credential), with IMDS's error in the message.
    assert out["token"] is None
    assert out["error"].startswith("CredentialUnavailableError: ManagedIdentityCredential authentication unavailable"), out
    assert "(too_many_requests)" in out["error"], out
    assert out["seconds"] >= 5.0, out
    assert len(fault_entries("imds", rule)) == 6
    assert rules()[rule]["remaining"] == 2


def test_managed_identity_credential_does_not_retry_imds_400(admin, rg, clear_faults):
    vm = vm_with_identity(admin, rg)
    # 400 is IMDS's "Identity not found" (what --identity-delay answers too): not on azure-identity's list.
    rule = add_fault("--service", "imds", "--vm", vm.name, "--status", "400", "--count", "2")
    clear_faults.append(rule)

    out = in_vm(vm.name, VM_RETRY_CODE.format(probe=False))
    assert out["token"] is None
    assert out["error"].startswith("CredentialUnavailableError:") and "Identity not found" in out["error"], out
    assert len(fault_entries("imds", rule)) == 1
    assert rules()[rule]["remaining"] == 1


@pytest.fixture
def az_admin(tmp_path):
    az = Az(tmp_path / "azure")
    az.use_misim_cloud()
    az("login", "--service-principal", "-u", ADMIN_ID, "-p", ADMIN_SECRET, "--tenant", TENANT)
    return az


def az_debug(az, *args):
    """Runs az with --debug; returns (exit code, stdout, stderr with az's HTTP log)."""
    p = subprocess.run([AZ, *args, "--debug", "-o", "json"], capture_output=True, text=True, env=az.env, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_az_cli_survives_an_arm_429_with_retry_after(rg, az_admin, clear_faults):
    rule = add_fault("--service", "arm", "--path", f"*/resourceGroups/{rg}", "--status", "429", "--retry-after", "1",
                     "--count", "1")
    clear_faults.append(rule)

    code, out, debug = az_debug(az_admin, "group", "show", "-n", rg)
    assert code == 0, debug[-4000:]
    assert json.loads(out)["name"] == rg
    # az's own debug log: the group GET answered 429 (ARM's body, Retry-After: 1), then 200 on the retry.
    assert re.findall(r"Response status: (\d+)", debug.split(f"/resourcegroups/{rg}?", 1)[1]) == ["429", "200"]
    assert "'retry-after': '1'" in debug and '"code":"SubscriptionRequestsThrottled"' in debug

    [entry] = fault_entries("arm", rule)
    assert (entry["kind"], entry["status"], entry["code"], entry["clientId"]) == \
        ("fault", 429, "SubscriptionRequestsThrottled", ADMIN_ID), entry
    assert entry["path"].lower() == f"/subscriptions/{SUB}/resourcegroups/{rg}".lower()
    assert rule not in rules(), "the rule was consumed"


def test_az_cli_gives_up_after_three_arm_retries(rg, az_admin, clear_faults):
    rule = add_fault("--service", "arm", "--path", f"*/resourceGroups/{rg}", "--status", "429", "--retry-after", "1",
                     "--count", "5")
    clear_faults.append(rule)

    code, out, debug = az_debug(az_admin, "group", "show", "-n", rg)
    # azure-core's default policy allows 3 retries on a status (retry_status): four 429s, then the error.
    assert code != 0 and out == ""
    assert re.findall(r"Response status: (\d+)", debug.split(f"/resourcegroups/{rg}?", 1)[1]) == ["429"] * 4
    assert "(SubscriptionRequestsThrottled) Number of 'read' requests" in debug, debug[-3000:]
    assert len(fault_entries("arm", rule)) == 4
    assert rules()[rule]["remaining"] == 1


# --- README's worked example, run as written -------------------------------------------------------


def readme_example():
    """The worked example's app (python block) and commands (sh block), straight from README.md."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Worked example", 1)[1].split("\n## ", 1)[0]
    app = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    commands = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    lines = [ln for ln in commands.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return app, lines


@pytest.fixture
def own_sandbox(tmp_path):
    """A sandbox of this test's own: the example moves the clock, which no other test may see."""
    data = tmp_path / "sandbox"
    with open(tmp_path / "up.log", "w") as log:
        proc = subprocess.Popen([MISIM, "up", "--random-ports", "--data-dir", str(data)], stdout=log, stderr=subprocess.STDOUT)
    try:
        env_file = data / "misim.env"
        deadline = time.monotonic() + 60
        while not (env_file.exists() and env_file.stat().st_size > 0):
            assert proc.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, "misim up did not start"
            time.sleep(0.1)
        values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
        env = dict(os.environ, **values, MISIM_DATA_DIR=str(data))
        env.update(REQUESTS_CA_BUNDLE=values["MISIM_CA_BUNDLE"], SSL_CERT_FILE=values["MISIM_CA_BUNDLE"])
        # `misim` and `python3` as a user's shell finds them: the built binary, the SDK virtualenv.
        env["PATH"] = os.pathsep.join([str(pathlib.Path(MISIM).parent), str(pathlib.Path(sys.executable).parent), env["PATH"]])
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def seven_steps(env, monkeypatch):
    """README's seven steps, through the SDKs: myVM's identity reads kv1's db-password."""
    from azure.identity import ClientSecretCredential
    from azure.keyvault.secrets import SecretClient
    from azure.mgmt.authorization import AuthorizationManagementClient
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.keyvault import KeyVaultManagementClient
    from conftest import ARM_SCOPE, ResourceManagementClient

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", env["MISIM_CA_BUNDLE"])  # requests reads it per request
    sub, tenant = env["MISIM_SUBSCRIPTION_ID"], env["MISIM_TENANT_ID"]
    admin = ClientSecretCredential(tenant, env["MISIM_ADMIN_CLIENT_ID"], env["MISIM_ADMIN_CLIENT_SECRET"],
                                   authority=env["MISIM_ENTRA_URL"], disable_instance_discovery=True)
    kw = {"base_url": env["MISIM_ARM_URL"], "credential_scopes": [ARM_SCOPE]}
    rg = "myResourceGroup"
    ResourceManagementClient(admin, sub, **kw).resource_groups.create_or_update(rg, {"location": "eastus"})
    vault = KeyVaultManagementClient(admin, sub, **kw).vaults.begin_create_or_update(rg, "kv1", {
        "location": "eastus",
        "properties": {"tenant_id": tenant, "sku": {"family": "A", "name": "standard"}, "enable_rbac_authorization": True},
    }).result()
    SecretClient(vault.properties.vault_uri, admin).set_secret("db-password", "s3cret")
    vm = ComputeManagementClient(admin, sub, **kw).virtual_machines.begin_create_or_update(
        rg, "myVM", vm_body({"type": "SystemAssigned"})).result()
    AuthorizationManagementClient(admin, sub, **kw).role_assignments.create(vault.id, str(uuid.uuid4()), {
        "role_definition_id": f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{KV_SECRETS_USER}",
        "principal_id": vm.identity.principal_id,
    })
    return vm


def test_readme_worked_example(own_sandbox, tmp_path, monkeypatch):
    env = own_sandbox
    vm = seven_steps(env, monkeypatch)
    app, commands = readme_example()
    work = tmp_path / "app"
    work.mkdir()
    (work / "app.py").write_text(app)

    outputs = []
    for command in commands:
        p = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, f"{command}: exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr[-4000:]}"
        outputs.append((command, p.stdout))
    kinds = [c.split(" #")[0].split()[1] for c, _ in outputs]
    assert kinds == ["fault", "vm", "log", "clock", "vm"], commands
    (_, rule), (_, first), (_, log), _, (_, second) = outputs

    # Two 429s, then the token: the app never saw them.
    assert rule.strip() == "imds-1"
    assert first.splitlines() == ["secret: s3cret"]
    shown = [ln for ln in log.splitlines() if " imds fault 429 " in ln]
    assert len(shown) == 2 and all("rule imds-1" in ln and "too_many_requests" in ln for ln in shown), log
    own = {"env": env, "data_dir": env["MISIM_DATA_DIR"]}
    logged = [json.loads(ln) for ln in misim("log", "--service", "imds", "--json", **own).splitlines()]
    assert [(e["faultId"], e["status"], e["principal"]) for e in logged] == [("imds-1", 429, "myvm")] * 2
    assert json.loads(misim("fault", "list", "--json", **own)) == [], "both 429s were consumed"

    # A day later: a new token from IMDS, and Key Vault refuses the old one as expired, in Azure's words.
    assert second.splitlines() == [
        "secret: s3cret",
        "new token: True",
        "old token: 401 {'code': 'Unauthorized', 'message': \"[TokenExpired] Error validating token: 'S2S12086'.\"}",
    ], second
    new = (work / "token.txt").read_text()
    assert token_oid(new) == vm.identity.principal_id
