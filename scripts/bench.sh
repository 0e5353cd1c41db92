#!/usr/bin/env bash
# Performance benchmarks, reported as ratios to baselines measured in the same run
# (see README "Benchmarks"). Arguments go to misim-bench, e.g.:
#   scripts/bench.sh --quick                      # short windows: does it still run? (CI)
#   scripts/bench.sh --duration-secs 5 --concurrency 64 --bench imds
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p misim-bench
exec target/release/misim-bench "$@"
