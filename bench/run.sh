#!/usr/bin/env bash
# The benchmark, in one command: Koguma against Envoy 1.40 on this machine,
# side by side, interleaved. Writes bench/RESULTS.md and bench/latency.svg.
# Options go to bench/run.py (--help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/setup.sh
cargo build --release --quiet -p koguma-cp -p koguma-dp -p koguma-loadgen
python3 bench/run.py "$@"
