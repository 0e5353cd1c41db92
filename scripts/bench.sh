#!/usr/bin/env bash
# Performance benchmarks, reported as ratios to baselines measured in the same run
# (see README "Benchmarks"). Arguments go to misim-bench, e.g.:
#   scripts/bench.sh --quick                      # short windows: does it still run? (CI)
#   scripts/bench.sh --duration-secs 5 --concurrency 64 --bench imds
set -euo pipefail
cd "$(dirname "$0")/.."
# misim-bench, and the misim binary the scale benchmark runs as a child.
cargo build --release --quiet -p misim-bench --bin misim-bench -p misim-sandbox --bin misim
exec target/release/misim-bench "$@"
