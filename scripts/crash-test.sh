#!/usr/bin/env bash
# Crash test (the misim-crash driver in crates/crash): misim-entra, misim-arm
# and misim-imds as separate processes; a random mix of create/assign/remove/
# delete operations through ARM from three concurrent workers (one resource
# group each) while one service at a time is SIGKILLed at random points and
# restarted; then zero drift from doctor, every acknowledged effect present,
# exactly one principal and key credential per existing identity, none for
# deleted ones; then every service restarts 46 days later (clock offset) and
# ARM, killed while it renews every certificate, converges again with two key
# credentials (old and new) per principal. The reduced form runs in about 35 s on two cores (plus the
# build).
#
#   scripts/crash-test.sh            # CI form: MISIM_CRASH_KILLS=30
#   scripts/crash-test.sh --full     # 210 kills (70 per service)
#
# Tunables: MISIM_CRASH_KILLS, MISIM_CRASH_SEED (reproduce a run),
# MISIM_CRASH_TIMEOUT_SECS (time budget, default 900).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--full" ]; then
  export MISIM_CRASH_KILLS=${MISIM_CRASH_KILLS:-210}
fi
export MISIM_CRASH_KILLS=${MISIM_CRASH_KILLS:-30}
cargo build --quiet -p misim-arm -p misim-entra -p misim-imds -p misim-crash --bins
exec target/debug/misim-crash
