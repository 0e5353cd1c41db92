#!/usr/bin/env bash
# The whole test suite: unit, component and system tests of every crate.
# Uses cargo-nextest when installed (faster, one process per test), else cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
