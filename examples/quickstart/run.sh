#!/usr/bin/env bash
# Brings up a local mesh on this host: koguma-cp on its embedded store, and
# two sample services (web and backend), each behind its own koguma-dp.
# `run.sh stop` stops it all. State and logs are in ./.koguma-quickstart.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work="$root/.koguma-quickstart"
pids="$work/pids"

# shellcheck source=../lib.sh
. "$here/../lib.sh"
stop() { stop_all "quick start mesh"; }
if [ "${1:-}" = "stop" ]; then stop; exit 0; fi
stop >/dev/null

echo "==> building koguma-cp and koguma-dp (release)"
(cd "$root" && cargo build --release --quiet -p koguma-cp -p koguma-dp)
bin="$root/target/release"
mkdir -p "$work"
: > "$pids"

echo "==> starting koguma-cp (store: SQLite in $work/cp-data)"
"$bin/koguma-cp" run --data-dir "$work/cp-data" > "$work/koguma-cp.log" 2>&1 &
echo $! >> "$pids"
wait_for http://127.0.0.1:5681/ "koguma-cp"
# The store outlives runs: start from the plain mesh this script describes,
# whatever an earlier run applied (mtls.yaml, say).
printf 'type: Mesh\nname: default\n' | "$bin/koguma-cp" apply -f - > /dev/null

echo "==> starting the sample apps"
python3 "$here/app.py" backend 18081 > "$work/backend-app.log" 2>&1 &
echo $! >> "$pids"
python3 "$here/app.py" web 18080 http://127.0.0.1:10001/ > "$work/web-app.log" 2>&1 &
echo $! >> "$pids"

echo "==> a dataplane token for each sidecar: it may register only its own dataplane"
for svc in backend web; do
  "$bin/koguma-cp" generate dataplane-token --name "$svc-1" --tag "kuma.io/service=$svc" \
    --valid-for 24h > "$work/$svc.token"
done

echo "==> starting a koguma-dp beside each app"
for svc in backend web; do
  "$bin/koguma-dp" run --cp-address https://127.0.0.1:5678 --ca-cert-file "$work/cp-data/tls/ca.crt" \
    --dataplane-file "$here/$svc.yaml" --dataplane-token-file "$work/$svc.token" \
    > "$work/koguma-dp-$svc.log" 2>&1 &
  echo $! >> "$pids"
done
wait_for http://127.0.0.1:9902/ready "backend's koguma-dp"
wait_for http://127.0.0.1:9901/ready "web's koguma-dp"

echo
echo "==> a request to web's sidecar (127.0.0.1:8080): web calls backend through both sidecars"
python3 - <<'PY'
import urllib.request
print(urllib.request.urlopen("http://127.0.0.1:8080/", timeout=5).read().decode(), end="")
PY
echo
echo "==> the dataplanes, as the control plane sees them"
"$bin/koguma-cp" get dataplanes
cat <<TXT

The mesh is running. What to look at next:
  curl http://127.0.0.1:8080/                      # web -> backend through both sidecars
  curl http://127.0.0.1:9901/metrics               # web's sidecar: Envoy-named Prometheus metrics
  curl http://127.0.0.1:9901/config_dump           # the config web's sidecar runs
  $bin/koguma-cp get dataplanes -o yaml
  curl http://127.0.0.1:5681/meshes/default/dataplanes/web-1/_config
  $bin/koguma-cp apply -f $here/policies.yaml       # timeouts, retries, breaker, health checks, ring hash, a route
  curl -i http://127.0.0.1:10001/                  # through web's outbound: x-routed-by shows the route
  $bin/koguma-cp apply -f $here/mtls.yaml           # zero trust: mesh mTLS, only web may call backend
  curl http://127.0.0.1:18080/                     # web app -> its sidecar -> mTLS -> backend's sidecar
  curl http://127.0.0.1:9902/certs                 # backend's SPIFFE certificate (its key never left it)
  (with mTLS on, the sidecars' inbounds such as :8080 take mesh mTLS only)
  logs: $work/*.log
Stop it all with: $here/run.sh stop
TXT
