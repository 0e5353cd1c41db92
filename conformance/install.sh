#!/usr/bin/env bash
# Installs the real clients the conformance suite drives, each in its own
# virtualenv (the Azure CLI pins older azure-mgmt packages than the SDKs want).
# Idempotent: reruns only install what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
install() {  # install VENV REQUIREMENTS
  local venv=$1 req=$2 stamp=$1/.installed
  [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
  if ! cmp -s "$req" "$stamp" 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
  fi
}
install .venv-sdk conformance/requirements-sdk.txt
install .venv-az conformance/requirements-cli.txt

# The Rust conformance client's ClientCertificateCredential (azure_identity's
# `client_certificate` feature) links openssl.
if ! command -v pkg-config >/dev/null || ! pkg-config --exists openssl; then
  apt-get install -y libssl-dev pkg-config
fi

# Vaults are named by host name (https://{vault}.vault.localhost:{port}/), as on
# Azure. The resolver here does not map *.localhost to loopback, so the suite's
# vault names go into /etc/hosts (see docs/compatibility.md).
for v in $(seq 1 9); do
  name="kv$v.vault.localhost"
  if ! getent hosts "$name" >/dev/null; then
    if [ -w /etc/hosts ]; then
      echo "127.0.0.1 $name" >> /etc/hosts
    else
      echo "conformance: $name does not resolve; add '127.0.0.1 $name' to /etc/hosts" >&2
      exit 1
    fi
  fi
done
