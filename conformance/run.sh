#!/usr/bin/env bash
# Runs the conformance suite: real Azure clients (Python SDKs, Azure CLI) against
# `misim up` on loopback. Installs the clients first. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
conformance/install.sh
cargo build --quiet -p misim-sandbox --bin misim
export MISIM_BIN="$PWD/target/debug/misim"
# The Rust azure_identity client (its own Cargo workspace; see conformance/rust).
cargo build --quiet --manifest-path conformance/rust/Cargo.toml
export MISIM_RUST_CLIENT="$PWD/conformance/rust/target/debug/misim-rust-client"
DATA=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$DATA"; }
trap cleanup EXIT
"$MISIM_BIN" up --random-ports --data-dir "$DATA" >"$DATA/up.log" 2>&1 &
PID=$!
for _ in $(seq 600); do
  [ -s "$DATA/misim.env" ] && break
  kill -0 "$PID" 2>/dev/null || { cat "$DATA/up.log"; echo "misim up died"; exit 1; }
  sleep 0.1
done
[ -s "$DATA/misim.env" ] || { cat "$DATA/up.log"; echo "misim up did not start"; exit 1; }
export MISIM_DATA_DIR="$DATA"
set -a; . "$DATA/misim.env"; set +a
# The documented way to make requests-based clients trust a private CA.
export REQUESTS_CA_BUNDLE="$MISIM_CA_BUNDLE" SSL_CERT_FILE="$MISIM_CA_BUNDLE"
# Safety net: anything a client tries to fetch from outside loopback goes to a
# dead proxy and fails at once instead of leaving the machine.
export HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 NO_PROXY=localhost,127.0.0.0/8,.localhost
status=0
.venv-sdk/bin/python -m pytest -p no:cacheprovider -q --junitxml="$DATA/junit.xml" conformance/python "$@" || status=$?
# A full run (no pytest filters) must match the compatibility matrix row for row.
if [ $# -eq 0 ] && [ $status -eq 0 ]; then
  .venv-sdk/bin/python conformance/check_matrix.py "$DATA/junit.xml" docs/compatibility.md || status=$?
fi
if [ $status -ne 0 ]; then echo "--- misim log (tail)"; tail -n 80 "$DATA/up.log"; fi
exit $status
