#!/usr/bin/env bash
# Control-plane scale benchmark: a release koguma-cp on its embedded SQLite
# store, and koguma-cp-load registering M dataplanes, holding N config
# streams and timing changes. Loopback only.
#   bench/cp-scale.sh [--dataplanes 10000] [--streams 2000] [...koguma-cp-load flags]
# Results: bench/cp-scale.json (and a summary on stdout).
# KOGUMA_CP_BIN=path measures another koguma-cp build (an older commit's, say)
# with the same load; KOGUMA_SCALE_OUT=file writes the results there.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p koguma-cp -p koguma-cp-load
work=$(mktemp -d)
ip=127.0.0.77
cp_bin=${KOGUMA_CP_BIN:-./target/release/koguma-cp}
"$cp_bin" run --data-dir "$work/cp" --dp-auth none \
  --api-address "$ip:5681" --dp-server-address "$ip:5678" \
  --log-level warn >"$work/cp.log" 2>&1 &
cp_pid=$!
trap 'kill $cp_pid 2>/dev/null; wait $cp_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  curl -sf "http://$ip:5681/" >/dev/null && break
  sleep 0.1
done
./target/release/koguma-cp-load --api "http://$ip:5681" --cp "https://$ip:5678" \
  --ca-file "$work/cp/tls/ca.crt" --cp-pid "$cp_pid" \
  --json-out "${KOGUMA_SCALE_OUT:-bench/cp-scale.json}" "$@"
echo "CP log lines (warn and above): $(wc -l <"$work/cp.log")"
tail -5 "$work/cp.log"
