#!/usr/bin/env bash
# The seven-step managed-identity flow by hand, with curl only, against
# `misim up` — exactly the README recipe. Starts its own sandbox in a temp dir
# on random loopback ports, restarts it once, and stops it. Exits non-zero on
# the first failed step.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p misim-sandbox --bin misim
MISIM="$PWD/target/debug/misim"
DATA=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$DATA"; }
trap cleanup EXIT

start() {
  rm -f "$DATA/misim.env"
  "$MISIM" up --random-ports --data-dir "$DATA" >"$DATA/up.log" 2>&1 &
  PID=$!
  # misim.env is written once every service accepts requests; wait up to 60 s.
  for _ in $(seq 600); do
    [ -s "$DATA/misim.env" ] && break
    kill -0 "$PID" 2>/dev/null || { cat "$DATA/up.log"; echo "misim up died"; exit 1; }
    sleep 0.1
  done
  [ -s "$DATA/misim.env" ] || { cat "$DATA/up.log"; echo "misim up did not start"; exit 1; }
  set -a; . "$DATA/misim.env"; set +a
}
stop() { kill "$PID"; wait "$PID" || true; PID=; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d'+sys.argv[1]))" "$1"; }
step() { echo "-- $*"; }

start
CURL=(curl -sS --fail-with-body --cacert "$MISIM_CA_BUNDLE")
KV="kv1.vault.localhost:$MISIM_KEYVAULT_PORT"
KVCURL=("${CURL[@]}" --resolve "$KV:127.0.0.1")
SUB=/subscriptions/$MISIM_SUBSCRIPTION_ID
RG=$SUB/resourceGroups/myResourceGroup

token() {  # client-credentials token for the bootstrap admin
  "${CURL[@]}" "$MISIM_ENTRA_URL/$MISIM_TENANT_ID/oauth2/v2.0/token" \
    -d grant_type=client_credentials -d "client_id=$MISIM_ADMIN_CLIENT_ID" \
    --data-urlencode "client_secret=$MISIM_ADMIN_CLIENT_SECRET" -d "scope=$1/.default" | json '["access_token"]'
}
ARM_TOKEN=$(token https://management.azure.com)
arm() {  # arm METHOD PATH [JSON]
  "${CURL[@]}" -X "$1" "$MISIM_ARM_URL$2?api-version=2024-11-01" -H "Authorization: Bearer $ARM_TOKEN" \
    -H 'Content-Type: application/json' ${3:+-d "$3"}
}

step "resource group, vault, secret"
arm PUT "$RG" '{"location":"eastus"}' >/dev/null
arm PUT "$RG/providers/Microsoft.KeyVault/vaults/kv1" \
  '{"location":"eastus","properties":{"tenantId":"'"$MISIM_TENANT_ID"'","sku":{"family":"A","name":"standard"},"enableRbacAuthorization":true}}' >/dev/null
KV_TOKEN=$(token https://vault.azure.net)
"${KVCURL[@]}" -X PUT "https://$KV/secrets/db-password?api-version=7.4" -H "Authorization: Bearer $KV_TOKEN" \
  -H 'Content-Type: application/json' -d '{"value":"s3cret"}' >/dev/null

step "1-3. VM with a system-assigned identity: SP in Entra, identity in IMDS"
PRINCIPAL=$(arm PUT "$RG/providers/Microsoft.Compute/virtualMachines/myVM" \
  '{"location":"eastus","identity":{"type":"SystemAssigned"},"properties":{"hardwareProfile":{"vmSize":"Standard_B1s"}}}' \
  | json '["identity"]["principalId"]')
echo "principalId $PRINCIPAL"

step "4. Key Vault Secrets User for the VM on kv1"
arm PUT "$RG/providers/Microsoft.KeyVault/vaults/kv1/providers/Microsoft.Authorization/roleAssignments/$(python3 -c 'import uuid; print(uuid.uuid4())')" \
  '{"properties":{"principalId":"'"$PRINCIPAL"'","roleDefinitionId":"'"$SUB"'/providers/Microsoft.Authorization/roleDefinitions/4633458b-17de-408a-b874-0445c86b69e6"}}' >/dev/null

step "5-6. inside the VM: token from IMDS"
VM_TOKEN=$("$MISIM" vm exec myVM --data-dir "$DATA" -- sh -c \
  'curl -sS --fail-with-body -H Metadata:true "$AZURE_POD_IDENTITY_AUTHORITY_HOST/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"' \
  | json '["access_token"]')

step "7. Key Vault answers with the secret"
VALUE=$("${KVCURL[@]}" "https://$KV/secrets/db-password/?api-version=7.4" -H "Authorization: Bearer $VM_TOKEN" | json '["value"]')
[ "$VALUE" = s3cret ] || { echo "unexpected secret value $VALUE"; exit 1; }

step "restart on the same data dir: the old token and a new one both work"
stop
start
KV="kv1.vault.localhost:$MISIM_KEYVAULT_PORT"
KVCURL=("${CURL[@]}" --resolve "$KV:127.0.0.1")
"${KVCURL[@]}" "https://$KV/secrets/db-password?api-version=7.4" -H "Authorization: Bearer $VM_TOKEN" >/dev/null
NEW_TOKEN=$("$MISIM" vm exec myVM --data-dir "$DATA" -- sh -c \
  'curl -sS --fail-with-body -H Metadata:true "$AZURE_POD_IDENTITY_AUTHORITY_HOST/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"' \
  | json '["access_token"]')
"${KVCURL[@]}" "https://$KV/secrets/db-password?api-version=7.4" -H "Authorization: Bearer $NEW_TOKEN" >/dev/null
echo "curl flow: every step passed"
