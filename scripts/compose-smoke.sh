#!/usr/bin/env bash
# Smoke test of the docker compose sandbox (deploy/compose.yaml):
#   builds the image offline (scripts/build-images.sh), brings the stack up and
#   waits for every healthcheck, runs the seven-step flow inside VM container vm1
#   for a system- and a user-assigned identity, proves isolation (vm2 cannot
#   use vm1's identities by client_id, object_id or msi_res_id, forged
#   forwarding headers don't help, VMs cannot reach any gRPC port, a VM named
#   vm1 in another resource group gets nothing of vm1's), proves Azure's host
#   names work inside vm1 with only the CA configured (misim-dns resolves
#   management.azure.com, login.microsoftonline.com, graph.microsoft.com and a
#   vault created during the test, NXDOMAIN for every other name; a secret is read
#   from https://{new}.vault.azure.net on 443), proves the VM image is a real
#   Debian userland (sh; curl to IMDS and to Azure's names with the CA in the
#   system store; a Python DefaultAzureCredential + SecretClient app; the Azure
#   CLI's `az login --identity` + `az keyvault secret show --vault-name`; dig
#   answering NXDOMAIN outside Azure's names), proves a VM cannot act
#   as the admin (no admin secret or control key anywhere in it, the secret once
#   committed to deploy/sandbox.env is refused with invalid_client), runs pod1 as
#   an AKS workload-identity pod (misim-oidc's projected token, a federated
#   credential, Python's WorkloadIdentityCredential and DefaultAzureCredential
#   reading a secret; pod1 reaches nothing on the control network), drives the
#   toolkit from the entra container (misim fault add/list, misim log and
#   log --denied, IMDS's 5-concurrent limit, misim keys roll, misim clock
#   advance 25h with pod1-token rewriting pod1's token by itself, certificate renewal after
#   misim clock advance 46d and by misim identity renew, misim apply of a scenario from stdin
#   twice and misim export), restarts the stack (`restart`, then `down` + `up` without -v, the
#   `up` with MISIM_ROLE_ASSIGNMENT_DELAY and MISIM_IDENTITY_DELAY set) and proves the state
#   survived, proves both delays (a new role assignment and a new identity wait until
#   misim clock advance passes them), then tears everything down (`down -v`).
# Admin steps (1-4) use curl from the host through the 127.0.0.1-published
# HTTPS ports, with the admin credentials the stack generated at first start
# (`misim secrets admin-env` in the entra container); steps 5-7 run inside vm1
# with `misim token` / `misim secret`.
# Options: --no-build (reuse misim-sandbox:local), KEEP=1 (leave the stack up).
set -euo pipefail
# The Azure IMDS address: it exists only on the compose VM network (internal: true)
# and is only ever contacted from inside the VM containers.
readonly IMDS_ADDR=169.254.169.254  # const
cd "$(dirname "$0")/.."
T0=$(date +%s)

if docker compose version >/dev/null 2>&1; then
  DC=(docker compose); WAIT_FLAG=(--wait)
elif command -v docker-compose >/dev/null 2>&1; then
  DC=(docker-compose); WAIT_FLAG=()   # compose v1 has no --wait: we poll health
else
  echo "compose smoke: no docker compose / docker-compose"; exit 1
fi
PROJECT=${MISIM_SMOKE_PROJECT:-misim-smoke}
export MISIM_ARM_HOST_PORT=${MISIM_ARM_HOST_PORT:-18443}
export MISIM_ENTRA_HOST_PORT=${MISIM_ENTRA_HOST_PORT:-18444}
export MISIM_KEYVAULT_HOST_PORT=${MISIM_KEYVAULT_HOST_PORT:-18445}
dc() { "${DC[@]}" -p "$PROJECT" -f deploy/compose.yaml "$@"; }
vm() { local v=$1; shift; dc exec -T "$v" misim "$@"; }
# `down`, its output in $1. Docker releases a removed container's network
# endpoints asynchronously, so removing a network right after its containers
# can fail with "has active endpoints" (seen once in CI, every container
# already gone); only that failure is retried, a few times.
dc_down() {
  local log=$1 i; shift
  for i in 1 2 3 4 5; do
    dc down "$@" >"$log" 2>&1 && return 0
    grep -q "has active endpoints" "$log" || return 1
    echo "compose smoke: a network still had endpoints after down (attempt $i); retrying" >>"$log.retries"
    sleep 2
  done
  return 1
}

PASS=0; FAIL=0
ok() { PASS=$((PASS + 1)); echo "   ok: $*"; }
bad() { FAIL=$((FAIL + 1)); echo "   FAILED: $*"; }
step() { echo "-- $*"; }
die() { echo "compose smoke: $*"; dc ps || true; dc logs --tail=40 || true; exit 1; }

WORK=$(mktemp -d)
cleanup() {
  local rc=$?
  if [ "${KEEP:-0}" = 1 ]; then
    echo "KEEP=1: stack left up (${DC[*]} -p $PROJECT -f deploy/compose.yaml down -v)"
  elif ! dc_down "$WORK/teardown.log" -v --remove-orphans; then
    # Said, and failing the run: a stack left behind breaks the next `up` (fixed subnets).
    cat "$WORK/teardown.log"; echo "compose smoke: down -v failed"
    [ "$rc" != 0 ] || rc=1
  fi
  rm -rf "$WORK"
  echo "compose smoke: $(( $(date +%s) - T0 ))s"
  exit $rc
}
trap cleanup EXIT

if [ "${1:-}" != "--no-build" ]; then
  step "build the image offline"
  scripts/build-images.sh
fi
dc down -v --remove-orphans >/dev/null 2>&1 || true

wait_healthy() {  # with compose v2 `up --wait` did it; v1: poll each container's health
  local deadline=$(( $(date +%s) + 180 )) svc id st
  for svc in entra arm imds keyvault oidc dns vm1 vm2 pod1; do
    while :; do
      id=$(dc ps -q "$svc" 2>/dev/null || true)
      st=$( [ -n "$id" ] && docker inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null || echo missing)
      [ "$st" = healthy ] && break
      [ "$(date +%s)" -lt "$deadline" ] || die "$svc is $st after 180s"
      sleep 1
    done
  done
}
up() {
  dc up -d "${WAIT_FLAG[@]}" >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; die "up failed"; }
  wait_healthy
}

step "docker compose up (every healthcheck passing)"
up
ok "stack is up and healthy"

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d'+sys.argv[1]))" "$1"; }
claim() {  # claim NAME < jwt
  python3 -c "import base64,json,sys; p=sys.stdin.read().strip().split('.')[1]; p+='='*(-len(p)%4); print(json.loads(base64.urlsafe_b64decode(p))[sys.argv[1]])" "$1"
}
set -a; . deploy/sandbox.env; set +a   # the public ids
# The admin's credentials as the owner gets them on the host (generated at
# first start into a volume only the services mount).
admin_env() {
  dc exec -T entra misim secrets admin-env >"$WORK/admin.env" || die "misim secrets admin-env failed"
  set -a; . "$WORK/admin.env"; set +a
}
admin_env
# What deploy/sandbox.env committed as the admin secret before it was generated.
OLD_SECRET=misim-sandbox-admin-secret-not-a-real-secret
FIRST_SECRET=$MISIM_ADMIN_CLIENT_SECRET
docker cp "$(dc ps -q arm):/data/tls/ca.pem" "$WORK/ca.pem"
CURL=(curl -sS --fail-with-body --cacert "$WORK/ca.pem")
ARM=https://localhost:$MISIM_ARM_HOST_PORT
ENTRA=https://localhost:$MISIM_ENTRA_HOST_PORT
KVHOST=kv1.vault.sim:$MISIM_KEYVAULT_HOST_PORT
KVCURL=("${CURL[@]}" --resolve "$KVHOST:127.0.0.1")
VAULT_URL=https://kv1.vault.sim:8445     # as VMs see it
SUB=/subscriptions/$MISIM_SUBSCRIPTION_ID
RG=$SUB/resourceGroups/rg1
SECRETS_USER=$SUB/providers/Microsoft.Authorization/roleDefinitions/4633458b-17de-408a-b874-0445c86b69e6

admin_token() {
  "${CURL[@]}" "$ENTRA/$MISIM_TENANT_ID/oauth2/v2.0/token" -d grant_type=client_credentials \
    -d "client_id=$MISIM_ADMIN_CLIENT_ID" --data-urlencode "client_secret=$MISIM_ADMIN_CLIENT_SECRET" \
    -d "scope=$1/.default" | json '["access_token"]'
}
arm() {  # arm METHOD PATH [JSON]
  "${CURL[@]}" -X "$1" "$ARM$2?api-version=2024-11-01" -H "Authorization: Bearer $ARM_TOKEN" \
    -H 'Content-Type: application/json' ${3:+-d "$3"}
}
tok() {  # tok VM [args]: the access token, or IMDS's refusal in $WORK/err
  local v=$1; shift
  vm "$v" token --resource https://vault.azure.net "$@" 2>"$WORK/err"
}
uuid() { python3 -c 'import uuid; print(uuid.uuid4())'; }
grant() {  # grant PRINCIPAL: Key Vault Secrets User on kv1
  arm PUT "$RG/providers/Microsoft.KeyVault/vaults/kv1/providers/Microsoft.Authorization/roleAssignments/$(uuid)" \
    '{"properties":{"principalId":"'"$1"'","roleDefinitionId":"'"$SECRETS_USER"'"}}' >/dev/null
}
expect_secret() {  # expect_secret WHAT VM [selector args]
  local what=$1 v=$2; shift 2
  local got
  if got=$(vm "$v" secret get --vault-url "$VAULT_URL" --name db-password "$@" 2>&1) && [ "$got" = s3cret ]; then
    ok "$what"
  else
    bad "$what: $got"
  fi
}
expect_not_found() {  # expect_not_found WHAT VM [token args]
  local what=$1 v=$2; shift 2
  local got
  if got=$(vm "$v" token --resource https://vault.azure.net "$@" 2>&1); then
    bad "$what: got a token"
  elif grep -q "Identity not found" <<<"$got"; then
    ok "$what"
  else
    bad "$what: $got"
  fi
}

step "admin (host, published ports): resource group, vault kv1, secret"
ARM_TOKEN=$(admin_token https://management.azure.com)
arm PUT "$RG" '{"location":"eastus"}' >/dev/null
arm PUT "$RG/providers/Microsoft.KeyVault/vaults/kv1" \
  '{"location":"eastus","properties":{"tenantId":"'"$MISIM_TENANT_ID"'","sku":{"family":"A","name":"standard"},"enableRbacAuthorization":true}}' \
  | json '["properties"]["vaultUri"]' | grep -qx "https://kv1.vault.azure.net/" && ok "vaultUri is https://kv1.vault.azure.net/ (as on Azure)" || bad "vaultUri"
"${KVCURL[@]}" -X PUT "https://$KVHOST/secrets/db-password?api-version=7.4" \
  -H "Authorization: Bearer $(admin_token https://vault.azure.net)" -H 'Content-Type: application/json' \
  -d '{"value":"s3cret"}' >/dev/null && ok "secret db-password set"

step "1-3. vm1 with a system-assigned identity, vm2 with its own; a user-assigned identity on vm1"
VM1=$RG/providers/Microsoft.Compute/virtualMachines/vm1
VM2=$RG/providers/Microsoft.Compute/virtualMachines/vm2
UAMI=$RG/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami1
arm PUT "$UAMI" '{"location":"eastus"}' >"$WORK/uami.json"
U_PRINCIPAL=$(json '["properties"]["principalId"]' <"$WORK/uami.json")
U_CLIENT=$(json '["properties"]["clientId"]' <"$WORK/uami.json")
S1=$(arm PUT "$VM1" '{"location":"eastus","identity":{"type":"SystemAssigned, UserAssigned","userAssignedIdentities":{"'"$UAMI"'":{}}},"properties":{"hardwareProfile":{"vmSize":"Standard_B1s"}}}' \
  | json '["identity"]["principalId"]')
S2=$(arm PUT "$VM2" '{"location":"eastus","identity":{"type":"SystemAssigned"},"properties":{"hardwareProfile":{"vmSize":"Standard_B1s"}}}' \
  | json '["identity"]["principalId"]')
echo "   vm1 SAMI $S1, vm2 SAMI $S2, uami1 $U_PRINCIPAL (client $U_CLIENT)"

step "5-7 before any role assignment: vm1 gets a token, Key Vault answers 403"
T=$(tok vm1 --msi-res-id "$UAMI") && [ "$(claim oid <<<"$T")" = "$U_PRINCIPAL" ] \
  && ok "vm1 token for uami1 by msi_res_id (oid $U_PRINCIPAL)" || bad "vm1 uami token: $T $(cat "$WORK/err")"
if out=$(vm vm1 secret get --vault-url "$VAULT_URL" --name db-password 2>&1); then bad "read without a role: $out"
elif grep -q "403" <<<"$out"; then ok "no role yet: 403"; else bad "no role yet: $out"; fi

step "4. Key Vault Secrets User on kv1 for vm1's SAMI, uami1 and vm2's SAMI"
grant "$S1"; grant "$U_PRINCIPAL"; grant "$S2"
ok "role assignments created"

flow() {  # steps 5-7 inside vm1, isolation from vm2
  T=$(tok vm1) && [ "$(claim oid <<<"$T")" = "$S1" ] \
    && ok "vm1 SAMI token from $IMDS_ADDR (oid = vm1's principal)" || bad "vm1 SAMI token: $T $(cat "$WORK/err")"
  expect_secret "vm1 SAMI reads the secret" vm1
  expect_secret "vm1 uami1 (client_id) reads the secret" vm1 --client-id "$U_CLIENT"
  expect_secret "vm1 uami1 (object_id) reads the secret" vm1 --object-id "$U_PRINCIPAL"
  expect_secret "vm1 uami1 (msi_res_id) reads the secret" vm1 --msi-res-id "$UAMI"
  T=$(tok vm2) && [ "$(claim oid <<<"$T")" = "$S2" ] \
    && ok "vm2 gets its own SAMI token" || bad "vm2 SAMI token: $T $(cat "$WORK/err")"
  expect_not_found "vm2 asks for uami1 by client_id" vm2 --client-id "$U_CLIENT"
  expect_not_found "vm2 asks for uami1 by object_id" vm2 --object-id "$U_PRINCIPAL"
  expect_not_found "vm2 asks for uami1 by msi_res_id" vm2 --msi-res-id "$UAMI"
  expect_not_found "vm2 asks for vm1's SAMI by object_id" vm2 --object-id "$S1"
  expect_not_found "vm2 forges X-Real-IP/Forwarded/X-Client-IP for uami1" vm2 --client-id "$U_CLIENT" \
    --header "X-Real-IP: 169.254.169.11" --header "Forwarded: for=169.254.169.11" \
    --header "X-Client-IP: 169.254.169.11" --header "True-Client-IP: 169.254.169.11"
  T=$(tok vm2 --header "X-Real-IP: 169.254.169.11" --header "Forwarded: for=169.254.169.11") \
    && [ "$(claim oid <<<"$T")" = "$S2" ] && ok "vm2 with forged X-Real-IP/Forwarded still gets only its own SAMI" \
    || bad "vm2 forged headers: $T $(cat "$WORK/err")"
  if T=$(tok vm2 --client-id "$U_CLIENT" --header "X-Forwarded-For: 169.254.169.11"); then
    bad "vm2 with a forged X-Forwarded-For got a token"
  elif grep -q "X-Forwarded-For header is not allowed" "$WORK/err"; then
    ok "vm2 with a forged X-Forwarded-For is refused (as Azure's IMDS refuses proxied requests)"
  else
    bad "vm2 forged X-Forwarded-For: $(cat "$WORK/err")"
  fi
}
flow

step "a VM named vm1 in resource group rg2 gets nothing of rg1/vm1's (IMDS maps full resource ids)"
RG2=$SUB/resourceGroups/rg2
arm PUT "$RG2" '{"location":"eastus"}' >/dev/null
arm PUT "$RG2/providers/Microsoft.Compute/virtualMachines/vm1" \
  '{"location":"eastus","identity":{"type":"SystemAssigned"},"properties":{"hardwareProfile":{"vmSize":"Standard_B1s"}}}' \
  >"$WORK/rg2vm1.json"
S1B=$(json '["identity"]["principalId"]' <"$WORK/rg2vm1.json")
[ "$(json '["properties"]["provisioningState"]' <"$WORK/rg2vm1.json")" = Succeeded ] \
  && ok "rg2/vm1 provisioned (SAMI $S1B)" || bad "rg2/vm1: $(cat "$WORK/rg2vm1.json")"
T=$(tok vm1) && [ "$(claim oid <<<"$T")" = "$S1" ] \
  && ok "container vm1 still gets rg1/vm1's identity, not rg2/vm1's" || bad "vm1 after rg2/vm1: $T $(cat "$WORK/err")"
expect_not_found "container vm1 asks for rg2/vm1's SAMI by object_id" vm1 --object-id "$S1B"

step "network isolation: VMs reach HTTPS by name, never gRPC"
out=$(vm vm1 probe http "https://arm/metadata/endpoints?api-version=2022-09-01" \
  "https://entra/$MISIM_TENANT_ID/v2.0/.well-known/openid-configuration" "$VAULT_URL/" 2>&1) \
  && ok "vm1 reaches arm, entra, kv1.vault.sim:8445 over TLS with the sandbox CA" || bad "vm1 https: $out"
for target in arm:50052 entra:50051 keyvault:50051 $IMDS_ADDR:50053 169.254.169.2:50052 169.254.169.3:50051 \
    169.254.100.10:50052 169.254.100.11:50051 169.254.100.12:50053 arm-grpc:50052 entra-grpc:50051 imds-grpc:50053 \
    169.254.100.10:443 169.254.100.11:443 169.254.100.13:443 169.254.100.13:8445 169.254.100.53:53; do
  if out=$(vm vm1 probe tcp --timeout-ms 1500 "$target" 2>&1); then bad "vm1 reached $target"; else ok "vm1 cannot reach $target"; fi
done
if vm vm1 probe tcp --timeout-ms 1500 169.254.169.2:443 >/dev/null 2>&1; then ok "(control) vm1 reaches arm's HTTPS port"; else bad "vm1 cannot reach arm:443"; fi
if out=$(dc exec -T vm1 misim ca init --dir /etc/misim 2>&1); then bad "vm1 could write the CA: $out"; else ok "vm1 has no CA key and cannot write one"; fi

step "Azure's host names inside the VMs (misim-dns): a vault created now, on 443, nothing else resolves"
# A vault no compose alias names: only the DNS wildcard can make it reachable.
NEWKV=smoke$(date +%s | tail -c 7)$RANDOM
NEWKV=${NEWKV:0:24}
arm PUT "$RG/providers/Microsoft.KeyVault/vaults/$NEWKV" \
  '{"location":"eastus","properties":{"tenantId":"'"$MISIM_TENANT_ID"'","sku":{"family":"A","name":"standard"},"enableRbacAuthorization":true}}' \
  | json '["properties"]["vaultUri"]' | grep -qx "https://$NEWKV.vault.azure.net/" \
  && ok "new vault $NEWKV: vaultUri https://$NEWKV.vault.azure.net/" || bad "vaultUri of $NEWKV"
expect_ip() {  # expect_ip NAME IP: as vm1's resolver answers
  local got
  if got=$(vm vm1 probe dns "$1" 2>&1) && [ "$got" = "$1: $2" ]; then ok "vm1 resolves $1 to $2"
  else bad "vm1 resolves $1: $got (want $2)"; fi
}
expect_ip management.azure.com 169.254.169.2
expect_ip login.microsoftonline.com 169.254.169.3
expect_ip login.windows.net 169.254.169.3
expect_ip graph.microsoft.com 169.254.169.3
expect_ip "$NEWKV.vault.azure.net" 169.254.169.4
expect_ip "KV1.Vault.Azure.NET" 169.254.169.4
for name in example.com azure.com vault.azure.net "a.$NEWKV.vault.azure.net" pypi.org; do
  if out=$(vm vm1 probe dns "$name" 2>&1); then bad "vm1 resolved $name: $out"
  elif grep -qi "not known\|no address\|nodename nor servname" <<<"$out"; then ok "vm1: $name does not exist (NXDOMAIN)"
  else bad "vm1 $name: $out (want NXDOMAIN)"; fi
done
# The vault's secret, set from the host through the published port under the Azure name.
NEWKV_HOST=$NEWKV.vault.azure.net:$MISIM_KEYVAULT_HOST_PORT
"${CURL[@]}" --resolve "$NEWKV_HOST:127.0.0.1" -X PUT "https://$NEWKV_HOST/secrets/app-secret?api-version=7.4" \
  -H "Authorization: Bearer $(admin_token https://vault.azure.net)" -H 'Content-Type: application/json' \
  -d '{"value":"azure-names"}' >/dev/null && ok "secret app-secret set in $NEWKV" || bad "setting app-secret in $NEWKV"
challenge=$(curl -sS --cacert "$WORK/ca.pem" --resolve "$NEWKV_HOST:127.0.0.1" -o /dev/null -D - \
  "https://$NEWKV_HOST/secrets/app-secret?api-version=7.4" | tr -d '\r' | grep -i '^www-authenticate:' || true)
grep -qF "authorization=\"https://login.microsoftonline.com/$MISIM_TENANT_ID\", resource=\"https://vault.azure.net\"" <<<"$challenge" \
  && ok "Key Vault's challenge under the Azure name: Azure's authority and resource" || bad "challenge: $challenge"
arm PUT "$RG/providers/Microsoft.KeyVault/vaults/$NEWKV/providers/Microsoft.Authorization/roleAssignments/$(uuid)" \
  '{"properties":{"principalId":"'"$S1"'","roleDefinitionId":"'"$SECRETS_USER"'"}}' >/dev/null
out=$(vm vm1 probe http "https://management.azure.com/metadata/endpoints?api-version=2022-09-01" \
  "https://login.microsoftonline.com/$MISIM_TENANT_ID/v2.0/.well-known/openid-configuration" \
  "https://graph.microsoft.com/v1.0/applications" "https://$NEWKV.vault.azure.net/" 2>&1) \
  && ok "vm1 reaches management.azure.com, login.microsoftonline.com, graph.microsoft.com, $NEWKV.vault.azure.net on 443 (sandbox CA)" \
  || bad "vm1 https by Azure names: $out"
if got=$(vm vm1 secret get --vault-url "https://$NEWKV.vault.azure.net" --name app-secret 2>&1) && [ "$got" = azure-names ]; then
  ok "vm1 reads app-secret from https://$NEWKV.vault.azure.net with its IMDS token (no misim URL, no override)"
else bad "vm1 reads from $NEWKV.vault.azure.net: $got"; fi

step "vm1 is a Debian VM: sh, curl, dig, Python's azure-identity, the Azure CLI, the sandbox CA in the system store"
out=$(dc exec -T vm1 sh -c '. /etc/os-release; echo "$ID $VERSION_CODENAME $(python3 -c "import platform; print(platform.python_version())")"' 2>&1) \
  && grep -q '^debian bookworm 3\.11' <<<"$out" && ok "docker compose exec vm1 sh: $out" || bad "vm1 sh: $out"
out=$(dc exec -T vm1 sh -c 'env -u MISIM_CA_BUNDLE curl -sS --fail-with-body -o /dev/null -w "%{http_code}" "https://management.azure.com/metadata/endpoints?api-version=2022-09-01"' 2>&1) \
  && [ "$out" = 200 ] && ok "curl trusts the sandbox CA system-wide (https://management.azure.com, no --cacert)" || bad "vm1 curl https: $out"
T=$(dc exec -T vm1 curl -sS --fail-with-body -H Metadata:true \
  "http://$IMDS_ADDR/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net" 2>"$WORK/err" \
  | json '["access_token"]') && [ "$(claim oid <<<"$T")" = "$S1" ] \
  && ok "curl -H Metadata:true http://$IMDS_ADDR/metadata/identity/oauth2/token in vm1: vm1's token" || bad "vm1 curl IMDS: $T $(cat "$WORK/err")"
cat >"$WORK/app.py" <<'PY'
# Production code, unchanged: DefaultAzureCredential + SecretClient on Azure's vault URL.
import sys
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient
client = SecretClient(f"https://{sys.argv[1]}.vault.azure.net", DefaultAzureCredential())
print(client.get_secret("app-secret").value)
PY
if got=$(dc exec -T vm1 sh -c 'env -u MISIM_CA_BUNDLE python3 - "$0"' "$NEWKV" <"$WORK/app.py" 2>&1) && [ "$got" = azure-names ]; then
  ok "Python DefaultAzureCredential + SecretClient(https://$NEWKV.vault.azure.net) in vm1 reads app-secret"
else bad "vm1 python app: $got"; fi
# The Azure CLI as on an Azure VM: `az login --identity` (msal's IMDS path), then
# a data-plane read by vault name (the CLI builds https://{name}.vault.azure.net).
if got=$(dc exec -T vm1 sh -c 'env -u MISIM_CA_BUNDLE az login --identity --output none \
    && env -u MISIM_CA_BUNDLE az keyvault secret show --vault-name "$0" --name app-secret --query value --output tsv' \
    "$NEWKV" 2>&1) && [ "$(tail -n 1 <<<"$got")" = azure-names ]; then
  ok "az login --identity; az keyvault secret show --vault-name $NEWKV in vm1 reads app-secret"
else bad "vm1 az CLI: $got"; fi
for name in example.com pypi.org deb.debian.org azure.com "x.y.$NEWKV.vault.azure.net"; do
  out=$(dc exec -T vm1 dig +time=3 +tries=1 "$name" A 2>&1 || true)
  grep -q 'status: NXDOMAIN' <<<"$out" && ok "dig $name in vm1: NXDOMAIN" || bad "dig $name in vm1: $out"
done
out=$(dc exec -T vm1 dig +short "$NEWKV.vault.azure.net" A 2>&1) && [ "$out" = 169.254.169.4 ] \
  && ok "dig $NEWKV.vault.azure.net in vm1: 169.254.169.4" || bad "dig $NEWKV.vault.azure.net: $out"
if out=$(dc exec -T vm1 curl -sS --max-time 5 https://example.com 2>&1); then bad "vm1 reached example.com: $out"
elif grep -q "Could not resolve host" <<<"$out"; then ok "curl https://example.com in vm1: could not resolve host"
else bad "vm1 curl example.com: $out"; fi
env_names=$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$(dc ps -q vm1)" | cut -d= -f1 | grep '^MISIM_' | tr '\n' ' ')
[ "$env_names" = "MISIM_CA_BUNDLE " ] && ok "vm1's only misim variable is the CA bundle" || bad "vm1's misim variables: $env_names"

step "vm1 cannot act as admin: no admin secret or control key in the VM; the once-committed secret is refused"
VM1_ID=$(dc ps -q vm1)
[ ${#MISIM_ADMIN_CLIENT_SECRET} -ge 32 ] && [ "$MISIM_ADMIN_CLIENT_SECRET" != "$OLD_SECRET" ] \
  && ok "the admin secret was generated (${#MISIM_ADMIN_CLIENT_SECRET} chars)" || bad "admin secret: $MISIM_ADMIN_CLIENT_SECRET"
CONTROL_KEY=$(docker cp "$(dc ps -q entra):/secrets/control.key" - | tar -xO)
[[ "$CONTROL_KEY" =~ ^[0-9a-f]{64}$ ]] && ok "the control key was generated (64 hex digits)" || bad "control key: $CONTROL_KEY"
mounts=$(docker inspect -f '{{range .Mounts}}{{.Destination}} {{end}}' "$VM1_ID")
[ "$mounts" = "/etc/misim " ] && ok "vm1 mounts only the public CA volume" || bad "vm1 mounts: $mounts"
docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$VM1_ID" >"$WORK/vm1.env"
if grep -qF -e "$MISIM_ADMIN_CLIENT_SECRET" -e "$CONTROL_KEY" -e SECRET -e CONTROL_KEY "$WORK/vm1.env"; then
  bad "vm1's environment names a secret: $(cat "$WORK/vm1.env")"
else ok "vm1's environment holds no secret"; fi
if docker cp "$VM1_ID:/secrets" - >/dev/null 2>&1; then bad "vm1 has /secrets"; else ok "vm1 has no /secrets"; fi
docker export "$VM1_ID" >"$WORK/vm1.tar" && docker cp "$VM1_ID:/etc/misim" - >"$WORK/vm1-volumes.tar" \
  || die "exporting vm1's filesystem"
hits=$(cat "$WORK/vm1.tar" "$WORK/vm1-volumes.tar" | grep -acF -e "$MISIM_ADMIN_CLIENT_SECRET" -e "$CONTROL_KEY" || true)
[ "$hits" = 0 ] && ok "vm1's filesystem (image, writable layer, volumes: $(du -ch "$WORK"/vm1*.tar | tail -1 | cut -f1)) holds neither the admin secret nor the control key" \
  || bad "vm1's filesystem holds the admin secret or the control key ($hits lines)"
rm -f "$WORK"/vm1*.tar
# The attack that worked while deploy/sandbox.env committed the secret:
# `misim principal create --role Owner` from inside vm1.
mkdir -p "$WORK/attack"
printf '%s\n' "MISIM_ARM_URL=https://arm" "MISIM_ENTRA_URL=https://entra" \
  "MISIM_CA_BUNDLE=/etc/misim/ca.pem" "MISIM_TENANT_ID=$MISIM_TENANT_ID" \
  "MISIM_SUBSCRIPTION_ID=$MISIM_SUBSCRIPTION_ID" "MISIM_ADMIN_CLIENT_ID=$MISIM_ADMIN_CLIENT_ID" \
  "MISIM_ADMIN_CLIENT_SECRET=$OLD_SECRET" >"$WORK/attack/misim.env"
docker cp "$WORK/attack" "$VM1_ID:/tmp/attack"
if out=$(vm vm1 principal create --name pwned --role Owner --scope "$SUB" --data-dir /tmp/attack 2>&1); then
  bad "vm1 made itself an Owner with the once-committed secret: $out"
elif grep -q '401.*invalid_client' <<<"$out"; then
  ok "vm1's principal create --role Owner with the once-committed secret: Entra answers 401 invalid_client"
else
  bad "vm1 principal create: $out"
fi

step "pod1: an AKS workload-identity pod (misim-oidc's projected token, federated identity) reads a secret"
# As on AKS: a user-assigned identity, a federated credential for the cluster's issuer and the
# service account's subject, a role on the vault, the client id annotated (MISIM_POD1_CLIENT_ID),
# and the pod (re)created.
POD_UAMI=$RG/providers/Microsoft.ManagedIdentity/userAssignedIdentities/payments-api
POD_ISSUER=https://oidc/kubernetes/aks1/
POD_SUBJECT=system:serviceaccount:payments:api
arm PUT "$POD_UAMI" '{"location":"eastus"}' >"$WORK/pod-uami.json"
P_CLIENT=$(json '["properties"]["clientId"]' <"$WORK/pod-uami.json")
P_PRINCIPAL=$(json '["properties"]["principalId"]' <"$WORK/pod-uami.json")
arm PUT "$POD_UAMI/federatedIdentityCredentials/aks1-payments-api" \
  '{"properties":{"issuer":"'"$POD_ISSUER"'","subject":"'"$POD_SUBJECT"'","audiences":["api://AzureADTokenExchange"]}}' \
  | json '["properties"]["subject"]' | grep -qx "$POD_SUBJECT" \
  && ok "federated credential: $POD_ISSUER, $POD_SUBJECT" || bad "federated credential on payments-api"
grant "$P_PRINCIPAL"
export MISIM_POD1_CLIENT_ID=$P_CLIENT
dc up -d --no-deps pod1 >"$WORK/pod1-up.log" 2>&1 || { cat "$WORK/pod1-up.log"; die "recreating pod1"; }
wait_healthy
pod_token=$(dc exec -T pod1 sh -c 'cat "$AZURE_FEDERATED_TOKEN_FILE"')
[ "$(claim iss <<<"$pod_token")" = "$POD_ISSUER" ] && [ "$(claim sub <<<"$pod_token")" = "$POD_SUBJECT" ] \
  && [ "$(claim aud <<<"$pod_token")" = "['api://AzureADTokenExchange']" ] \
  && ok "pod1's projected token: iss $POD_ISSUER, sub $POD_SUBJECT, aud api://AzureADTokenExchange (minted by misim-oidc)" \
  || bad "pod1's token claims: $(claim iss <<<"$pod_token") $(claim sub <<<"$pod_token") $(claim aud <<<"$pod_token")"
pod_env=$(dc exec -T pod1 sh -c 'env | grep -E "^AZURE_" | sort' | tr -d '\r')
expected_env=$(printf '%s\n' "AZURE_AUTHORITY_HOST=https://login.microsoftonline.com/" "AZURE_CLIENT_ID=$P_CLIENT" \
  "AZURE_FEDERATED_TOKEN_FILE=/var/run/secrets/azure/tokens/azure-identity-token" "AZURE_TENANT_ID=$MISIM_TENANT_ID")
[ "$pod_env" = "$expected_env" ] && ok "pod1 has exactly the webhook's four AZURE_* variables" || bad "pod1's env: $pod_env"
cat >"$WORK/pod-app.py" <<'PY'
# Unchanged production code: workload identity from the webhook's variables, Azure's vault URL.
from azure.identity import DefaultAzureCredential, WorkloadIdentityCredential
from azure.keyvault.secrets import SecretClient
for cred in (WorkloadIdentityCredential(), DefaultAzureCredential()):
    print(SecretClient("https://kv1.vault.azure.net", cred).get_secret("db-password").value)
PY
if got=$(dc exec -T pod1 python3 - <"$WORK/pod-app.py" 2>&1) && [ "$got" = "$(printf 's3cret\ns3cret')" ]; then
  ok "pod1: WorkloadIdentityCredential and DefaultAzureCredential read db-password from https://kv1.vault.azure.net"
else bad "pod1 python app: $got"; fi
for target in oidc:443 169.254.100.14:443 169.254.100.14:50054 oidc-grpc:50054 169.254.100.11:50051 \
    169.254.100.12:50053 169.254.100.13:50055 169.254.100.14:50060; do
  if out=$(vm pod1 probe tcp --timeout-ms 1500 "$target" 2>&1); then bad "pod1 reached $target"; else ok "pod1 cannot reach $target"; fi
done
mounts=$(docker inspect -f '{{range .Mounts}}{{.Destination}} {{end}}' "$(dc ps -q pod1)")
[ "$mounts" = "/etc/misim /var/run/secrets/azure/tokens " ] || [ "$mounts" = "/var/run/secrets/azure/tokens /etc/misim " ] \
  && ok "pod1 mounts only the public CA and its token" || bad "pod1 mounts: $mounts"
if dc exec -T pod1 sh -c 'echo x > "$AZURE_FEDERATED_TOKEN_FILE"' >/dev/null 2>&1; then bad "pod1 could write its token file"
else ok "pod1's token volume is read-only"; fi

step "the toolkit from the control side: misim in the entra container (control key, control network)"
ctl() { dc exec -T entra misim "$@"; }
jwt_kid() {  # jwt_kid < jwt: the header's kid
  python3 -c "import base64,json,sys; h=sys.stdin.read().strip().split('.')[0]; h+='='*(-len(h)%4); print(json.loads(base64.urlsafe_b64decode(h))['kid'])"
}
FID=$(ctl fault add --service imds --vm vm1 --status 429 --retry-after 1 --count 1 2>&1) && [[ "$FID" =~ ^imds-[0-9]+$ ]] \
  && ok "misim fault add --service imds --vm vm1 --status 429 --count 1: $FID" || bad "fault add: $FID"
ctl fault list | grep -q "^$FID" && ok "misim fault list shows $FID" || bad "fault list: $(ctl fault list 2>&1)"
if T=$(tok vm1); then bad "vm1 got a token through the injected 429"
elif grep -q "429" "$WORK/err" && grep -q too_many_requests "$WORK/err"; then ok "vm1's next token request: IMDS 429 too_many_requests"
else bad "vm1 with the 429 rule: $(cat "$WORK/err")"; fi
T=$(tok vm1) && [ "$(claim oid <<<"$T")" = "$S1" ] && ok "then vm1 gets its token (the rule fired once)" || bad "vm1 after the 429: $T $(cat "$WORK/err")"
ctl log --service imds --json >"$WORK/log.json" 2>&1 || bad "misim log: $(cat "$WORK/log.json")"
python3 -c '
import json, sys
e = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert any(d["kind"] == "fault" and d["faultId"] == sys.argv[2] and d["status"] == 429 and d["principal"] == "vm1" for d in e)
' "$WORK/log.json" "$FID" && ok "misim log --service imds: the injected 429, fault $FID, principal vm1" || bad "log: $(cat "$WORK/log.json")"
ctl log --denied --json >"$WORK/denied.json" 2>&1 || bad "misim log --denied: $(cat "$WORK/denied.json")"
python3 -c '
import json, sys
e = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert all(d["kind"] == "denied" for d in e)
assert any(d["service"] == "keyvault" and d["status"] == 403 for d in e)
assert any(d["service"] == "imds" and d["principal"] == "vm2" for d in e)
' "$WORK/denied.json" && ok "misim log --denied: Key Vault's 403 before the role assignment, IMDS refusing vm2; no faults" \
  || bad "log --denied: $(cat "$WORK/denied.json")"
# Azure's 5 concurrent identity requests per VM: five held in flight by a latency rule, a sixth is 429.
LID=$(ctl fault add --service imds --vm vm1 --latency 5s --count 5 2>&1) || bad "latency rule: $LID"
codes=$(dc exec -T vm1 sh -c 'for i in 1 2 3 4 5 6; do
  curl -s -o /dev/null -w "%{http_code}\n" -H Metadata:true "http://'"$IMDS_ADDR"'/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net" &
done; wait' | sort | uniq -c | tr -s ' ' | tr '\n' ';')
[ "$codes" = " 5 200; 1 429;" ] && ok "six concurrent token requests from vm1 (five held 5 s): five 200, one 429" || bad "concurrency: $codes"
# Into a file first: `grep -q` leaving a long pipe early would SIGPIPE the writer (pipefail).
ctl log --service imds --json >"$WORK/log.json" 2>&1 && grep -q "5 concurrent identity requests" "$WORK/log.json" \
  && ok "the log names the concurrency limit" || bad "no concurrency entry in the log"
K_OLD=$(ctl keys list | awk '$2 == "current" {print $1}')
T_OLD=$(tok vm1) && [ "$(jwt_kid <<<"$T_OLD")" = "$K_OLD" ] && ok "vm1's token is signed by the current key $K_OLD" || bad "kid of vm1's token"
ctl keys roll >"$WORK/keys.txt" 2>&1 || bad "misim keys roll: $(cat "$WORK/keys.txt")"
K_NEW=$(awk '$2 == "current" {print $1}' "$WORK/keys.txt")
[ -n "$K_NEW" ] && [ "$K_NEW" != "$K_OLD" ] && awk -v k="$K_OLD" '$1 == k {print $2}' "$WORK/keys.txt" | grep -qx retired \
  && ok "misim keys roll: $K_NEW signs, $K_OLD retired" || bad "keys roll: $(cat "$WORK/keys.txt")"
curl -sS --cacert "$WORK/ca.pem" "$ENTRA/$MISIM_TENANT_ID/discovery/v2.0/keys" | grep -q "\"$K_OLD\"" \
  && ok "the retired key stays published in JWKS" || bad "JWKS lost $K_OLD"
expect_secret "vm1's cached token (retired key) still reads the secret" vm1
before=$(ctl clock show | awk '{print $2}' | head -1)
# pod1's token as projected before the jump (pod1-token rewrites it within seconds of it).
pod_token() { dc exec -T pod1 sh -c 'cat "$AZURE_FEDERATED_TOKEN_FILE"'; }
old_pod_token=$(pod_token)
ctl clock advance 25h >/dev/null && ok "misim clock advance 25h" || bad "clock advance"
offsets=$(ctl clock show | awk '{print $4, $5}' | sort -u)
[ "$offsets" = "+1d 1h" ] && ok "every service's clock (entra, arm, imds, keyvault, oidc) is 25h ahead" || bad "clock offsets: $offsets (before $before)"
if out=$(vm vm1 secret get --vault-url "$VAULT_URL" --name db-password --token "$T_OLD" 2>&1); then bad "the 25h-old token still reads: $out"
elif grep -q "401" <<<"$out" && grep -q "TokenExpired" <<<"$out"; then ok "the old token: Key Vault 401 TokenExpired"
else bad "old token after 25h: $out"; fi
T_NEW=$(tok vm1) && [ "$(jwt_kid <<<"$T_NEW")" = "$K_NEW" ] && [ "$(claim iat <<<"$T_NEW")" -gt $(( $(date +%s) + 24 * 3600 )) ] \
  && ok "vm1's new token: signed by $K_NEW, issued 25h ahead" || bad "vm1's token after 25h: $T_NEW"
expect_secret "vm1 reads the secret with its new token" vm1
ARM_TOKEN=$(admin_token https://management.azure.com)   # the admin's 1 h token is 25 h old now
# pod1's token was minted before the jump: pod1-token reads oidc's clock every 2 s and
# rewrites it by itself, as the kubelet does, with no restart. (The snapshot is taken before
# the jump: read after it, it may already be the rewritten one.)
deadline=$(( $(date +%s) + 30 ))
until new_pod_token=$(pod_token) && [ "$new_pod_token" != "$old_pod_token" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || break
  sleep 1
done
pod_logs=$(docker logs --tail 20 "$(dc ps -q pod1-token)" 2>&1)
[ "$new_pod_token" != "$old_pod_token" ] && [ "$(claim iat <<<"$new_pod_token")" -gt $(( $(date +%s) + 24 * 3600 )) ] \
  && grep -q "token rewritten" <<<"$pod_logs" \
  && ok "pod1-token rewrote pod1's token by itself after the jump (iat 25h ahead; no restart)" \
  || bad "pod1-token did not rewrite the token within 30 s: $(tail -n 5 <<<"$pod_logs")"
if got=$(dc exec -T pod1 python3 - <"$WORK/pod-app.py" 2>&1) && [ "$got" = "$(printf 's3cret\ns3cret')" ]; then
  ok "pod1 reads the secret after the jump with its re-projected token"
else bad "pod1 after the clock jump: $got"; fi

step "managed-identity certificates: renewed after 45 days of sandbox time (misim clock advance 46d)"
sp_certs() {  # sp_certs OBJECT_ID: the thumbprints Entra holds for a principal (Graph), one per line
  "${CURL[@]}" "$ENTRA/v1.0/servicePrincipals/$1" -H "Authorization: Bearer $(admin_token https://graph.microsoft.com)" \
    | python3 -c 'import json,sys; [print(k.get("customKeyIdentifier") or k["keyId"]) for k in json.load(sys.stdin)["keyCredentials"]]'
}
certs_before=$(sp_certs "$S1") && [ "$(wc -l <<<"$certs_before")" = 1 ] \
  && ok "vm1's principal holds one certificate" || bad "vm1's certificates before: $certs_before"
ctl clock advance 46d >/dev/null && ok "misim clock advance 46d" || bad "clock advance 46d"
# ARM follows its clock's moves and renews in the background: poll Entra (real time, bounded).
deadline=$(( $(date +%s) + 60 ))
until certs_after=$(sp_certs "$S1") && [ "$(wc -l <<<"$certs_after")" = 2 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || break
  sleep 1
done
[ "$(wc -l <<<"$certs_after")" = 2 ] && grep -qxF "$certs_before" <<<"$certs_after" \
  && ok "ARM renewed vm1's certificate: Entra holds the old and the new one (overlap)" || bad "vm1's certificates after 46d: $certs_after"
expect_secret "vm1 reads the secret 46 days later" vm1
ARM_TOKEN=$(admin_token https://management.azure.com)
u_certs_before=$(sp_certs "$U_PRINCIPAL")
if out=$(ctl identity renew "$U_CLIENT" 2>&1) && grep -q "^$U_CLIENT.*renewed$" <<<"$out" \
    && u_certs_after=$(sp_certs "$U_PRINCIPAL") \
    && [ "$(wc -l <<<"$u_certs_after")" = $(( $(wc -l <<<"$u_certs_before") + 1 )) ]; then
  ok "misim identity renew uami1 (entra container): renewed at once, Entra holds one more certificate"
else bad "misim identity renew: $out / $(sp_certs "$U_PRINCIPAL" | tr '\n' ' ')"; fi
expect_secret "vm1 reads the secret as uami1 with its renewed certificate" vm1 --client-id "$U_CLIENT"
if out=$(ctl identity renew no-such-identity 2>&1); then bad "renewing an unknown identity: $out"
elif grep -q "No managed identity has the client id, object id or resource id 'no-such-identity'" <<<"$out"; then
  ok "misim identity renew no-such-identity: refused, naming it"
else bad "renew no-such-identity: $out"; fi

step "scenarios from the entra container: misim apply (stdin), again (unchanged), misim export"
cat >"$WORK/scenario.yaml" <<'YAML'
apiVersion: misim/v1
resourceGroups:
  - name: scen-rg
    location: westeurope
identities:
  - name: scen-id
    resourceGroup: scen-rg
vaults:
  - name: scenkv
    resourceGroup: scen-rg
    secrets:
      - name: greeting
        value: hello-from-a-scenario
roleAssignments:
  - role: Key Vault Secrets User
    principal: { identity: scen-id }
    scope: { vault: scenkv }
YAML
if out=$(ctl apply - <"$WORK/scenario.yaml" 2>&1) && grep -q "^created" <<<"$out" && ! grep -q "^0 changed" <<<"$out"; then
  ok "misim apply - in the entra container: $(tail -1 <<<"$out")"
else bad "misim apply: $out"; fi
if out=$(ctl apply - <"$WORK/scenario.yaml" 2>&1) && grep -q "^0 changed," <<<"$out" && ! grep -qv -e "^unchanged" -e "^0 changed," <<<"$out"; then
  ok "a second apply: only unchanged ($(tail -1 <<<"$out"))"
else bad "second apply: $out"; fi
# (stderr names what a scenario cannot hold, e.g. the admin's own role assignments)
ctl export --format json --include-secret-values >"$WORK/export.json" 2>"$WORK/export.err" \
  || bad "misim export: $(cat "$WORK/export.err")"
python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
kv = [v for v in s["vaults"] if v["name"] == "scenkv"]
assert kv and any(x["name"] == "greeting" and x["value"] == "hello-from-a-scenario" for x in kv[0]["secrets"]), kv
assert any(i["name"] == "scen-id" for i in s["identities"])
assert any(a["principal"] == {"identity": "scen-id"} or a["principal"].get("identity", "").endswith("scen-id") for a in s["roleAssignments"])
' "$WORK/export.json" && ok "misim export lists the scenario's identity, vault, secret value and role assignment"   || bad "export: $(head -c 2000 "$WORK/export.json")"

step "docker compose restart: state survives"
dc restart >"$WORK/restart.log" 2>&1 || { cat "$WORK/restart.log"; die "restart failed"; }
wait_healthy
flow
P=$(arm GET "$VM1" | json '["identity"]["principalId"]') && [ "$P" = "$S1" ] && ok "ARM still has vm1 with the same principal" || bad "vm1 after restart: $P"

step "docker compose down && up (volumes kept), with propagation delays set: state survives"
# (A failing `down` must stop the test with its output, never silently under set -e.)
dc_down "$WORK/down.log" || { cat "$WORK/down.log"; die "down failed"; }
# Every service starts with the delays from the shell that runs compose (deploy/compose.yaml),
# as a user turns them on: the whole stack, not one container recreated mid-run.
export MISIM_ROLE_ASSIGNMENT_DELAY=10m MISIM_IDENTITY_DELAY=10m
up
unset MISIM_ROLE_ASSIGNMENT_DELAY MISIM_IDENTITY_DELAY
for pair in arm:MISIM_ROLE_ASSIGNMENT_DELAY=10m imds:MISIM_IDENTITY_DELAY=10m; do
  docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$(dc ps -q "${pair%%:*}")" | grep -qx "${pair#*:}" \
    && ok "the ${pair%%:*} container has ${pair#*:}" || bad "${pair%%:*}'s environment lacks ${pair#*:}"
done
admin_env
[ "$MISIM_ADMIN_CLIENT_SECRET" = "$FIRST_SECRET" ] && ok "the admin secret survived (generated once)" || bad "the admin secret changed"
ARM_TOKEN=$(admin_token https://management.azure.com)
flow
P=$(arm GET "$VM1" | json '["identity"]["principalId"]') && [ "$P" = "$S1" ] && ok "ARM still has vm1 with the same principal" || bad "vm1 after down/up: $P"
if got=$(dc exec -T pod1 python3 - <"$WORK/pod-app.py" 2>&1) && [ "$got" = "$(printf 's3cret\ns3cret')" ]; then
  ok "pod1 still reads the secret (federated credential, role and issuer key survived)"
else bad "pod1 after down/up: $got"; fi
out=$(ctl apply - <"$WORK/scenario.yaml" 2>&1) && grep -q "^0 changed," <<<"$out" \
  && ok "the scenario's resources survived: applying it again changes nothing" || bad "apply after down/up: $out"
(( $(ctl clock show | awk '{print $4, $5}' | sort -u | grep -c '^+47d 1h') == 1 )) \
  && ok "the clocks are still 47d 1h ahead" || bad "clocks after down/up: $(ctl clock show)"

step "propagation delays (10m of sandbox time): a new role assignment, a new identity on vm2"
# What existed before the restart is in effect (the flow above); what is new waits.
arm PUT "$SUB/resourceGroups/scen-rg/providers/Microsoft.KeyVault/vaults/scenkv/providers/Microsoft.Authorization/roleAssignments/$(uuid)" \
  '{"properties":{"principalId":"'"$S1"'","roleDefinitionId":"'"$SECRETS_USER"'"}}' >/dev/null \
  && ok "vm1's identity: Key Vault Secrets User on scenkv (new)" || bad "role assignment on scenkv"
scen_read() { vm vm1 secret get --vault-url https://scenkv.vault.azure.net --name greeting 2>&1; }
if out=$(scen_read); then bad "vm1 read scenkv before the assignment took effect: $out"
elif grep -q 403 <<<"$out"; then ok "vm1 reads scenkv at once: 403 (the assignment is still propagating)"
else bad "vm1 reads scenkv during the delay: $out"; fi
ctl log --denied --service keyvault --json >"$WORK/prop.json" 2>&1 && grep -q "still propagating" "$WORK/prop.json" \
  && ok "misim log --denied: Key Vault's 403, reason \"still propagating\"" || bad "no propagation entry: $(tail -c 600 "$WORK/prop.json")"
DELAYED=$RG/providers/Microsoft.ManagedIdentity/userAssignedIdentities/delayed-id
arm PUT "$DELAYED" '{"location":"eastus"}' >"$WORK/delayed.json"
D_CLIENT=$(json '["properties"]["clientId"]' <"$WORK/delayed.json")
D_PRINCIPAL=$(json '["properties"]["principalId"]' <"$WORK/delayed.json")
arm PUT "$VM2" '{"location":"eastus","identity":{"type":"SystemAssigned, UserAssigned","userAssignedIdentities":{"'"$DELAYED"'":{}}},"properties":{"hardwareProfile":{"vmSize":"Standard_B1s"}}}' \
  | json '["properties"]["provisioningState"]' | grep -qx Succeeded && ok "delayed-id attached to vm2" || bad "attaching delayed-id to vm2"
expect_not_found "vm2 asks for delayed-id at once: Identity not found (still settling)" vm2 --client-id "$D_CLIENT"
T=$(tok vm2) && [ "$(claim oid <<<"$T")" = "$S2" ] && ok "vm2's own SAMI (not new) is served meanwhile" || bad "vm2 SAMI during the delay: $(cat "$WORK/err")"
ctl clock advance 10m >/dev/null && ok "misim clock advance 10m (every service's clock)" || bad "clock advance 10m"
if got=$(scen_read) && [ "$got" = hello-from-a-scenario ]; then ok "then vm1 reads scenkv: the assignment is in effect"
else bad "vm1 reads scenkv after the delay: $got"; fi
T=$(tok vm2 --client-id "$D_CLIENT") && [ "$(claim oid <<<"$T")" = "$D_PRINCIPAL" ] \
  && ok "then vm2 gets delayed-id's token" || bad "vm2 delayed-id after the delay: $T $(cat "$WORK/err")"

echo "compose smoke: $PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
