#!/usr/bin/env bash
# Brings up a multi-zone mesh on this host: a global koguma-cp (127.0.0.2)
# and two zone CPs (zone-1 on 127.0.0.3, zone-2 on 127.0.0.4), each on the
# default ports of its own address as if on hosts of their own. The mesh
# has mTLS on; each zone runs a backend app behind a koguma-dp and a zone
# ingress (koguma-dp --proxy-type ingress); web in zone-1 calls backend and
# reaches both zones' instances. `run.sh stop` stops it all. State and logs
# are in ./.koguma-multizone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work="$root/.koguma-multizone"
pids="$work/pids"
GLOBAL=127.0.0.2

# shellcheck source=../lib.sh
. "$here/../lib.sh"
stop() { stop_all "multi-zone mesh"; }
if [ "${1:-}" = "stop" ]; then stop; exit 0; fi
stop >/dev/null

echo "==> building koguma-cp and koguma-dp (release)"
(cd "$root" && cargo build --release --quiet -p koguma-cp -p koguma-dp)
cp="$root/target/release/koguma-cp"
dp="$root/target/release/koguma-dp"
mkdir -p "$work"
: > "$pids"

echo "==> the global control plane: meshes and policies live here; zones dial it on :5685"
"$cp" run --mode global --data-dir "$work/global" --api-address $GLOBAL:5681 \
  --dp-server-address $GLOBAL:5678 --kds-address $GLOBAL:5685 > "$work/global.log" 2>&1 &
echo $! >> "$pids"
wait_for http://$GLOBAL:5681/ "the global"
echo "==> mesh mTLS and a permission for web to call backend, on the global"
"$cp" apply -f "$root/examples/quickstart/mtls.yaml" --api-url http://$GLOBAL:5681 > /dev/null

i=0
for zone in zone-1 zone-2; do
  i=$((i + 1))
  ip=127.0.0.$((i + 2))
  echo "==> $zone on $ip: a zone token from the global, then the zone CP"
  "$cp" generate zone-token --zone $zone --api-url http://$GLOBAL:5681 > "$work/$zone.token"
  "$cp" run --zone $zone --global-address grpcs://$GLOBAL:5685 \
    --global-ca-file "$work/global/tls/ca.crt" --zone-token-file "$work/$zone.token" \
    --data-dir "$work/$zone" --api-address $ip:5681 --dp-server-address $ip:5678 \
    > "$work/$zone.log" 2>&1 &
  echo $! >> "$pids"
  wait_for http://$ip:5681/meshes/default "$zone to receive the default mesh from the global"

  echo "==> $zone: a backend app and its koguma-dp"
  python3 "$root/examples/quickstart/app.py" "backend-$i" $((18090 + i)) > "$work/backend-$i-app.log" 2>&1 &
  echo $! >> "$pids"
  cat > "$work/backend-$i.yaml" <<YAML
type: Dataplane
mesh: default
name: backend-$i
networking:
  address: 127.0.0.1
  admin:
    port: $((9910 + i))
  inbound:
  - port: $((8090 + i))
    servicePort: $((18090 + i))
    tags:
      kuma.io/service: backend
      kuma.io/protocol: http
YAML
  # Dataplane tokens are signed with the global's key, synced to every zone.
  "$cp" generate dataplane-token --name backend-$i --api-url http://$ip:5681 > "$work/backend-$i.token"
  "$dp" run --cp-address https://$ip:5678 --ca-cert-file "$work/$zone/tls/ca.crt" \
    --dataplane-file "$work/backend-$i.yaml" --dataplane-token-file "$work/backend-$i.token" \
    > "$work/koguma-dp-backend-$i.log" 2>&1 &
  echo $! >> "$pids"
  echo "==> $zone: its zone ingress, a koguma-dp of its own (SNI passthrough on $ip:10001)"
  printf 'type: ZoneIngress\nname: ingress\nnetworking:\n  address: %s\n  port: 10001\n  advertisedAddress: %s\n  advertisedPort: 10001\n' \
    "$ip" "$ip" > "$work/ingress-$i.yaml"
  # The zone token's default scopes (cp, ingress, egress) cover the ingress.
  "$dp" run --proxy-type ingress --cp-address https://$ip:5678 --ca-cert-file "$work/$zone/tls/ca.crt" \
    --dataplane-file "$work/ingress-$i.yaml" --dataplane-token-file "$work/$zone.token" \
    --admin-port $((9920 + i)) > "$work/koguma-dp-ingress-$i.log" 2>&1 &
  echo $! >> "$pids"
done
wait_for http://127.0.0.1:9911/ready "backend-1's koguma-dp"
wait_for http://127.0.0.1:9912/ready "backend-2's koguma-dp"
wait_for http://127.0.0.1:9921/ready "zone-1's ingress"
wait_for http://127.0.0.1:9922/ready "zone-2's ingress"

echo "==> zone-1: web's koguma-dp, with backend on 127.0.0.1:10010"
cat > "$work/web-1.yaml" <<YAML
type: Dataplane
mesh: default
name: web-1
networking:
  address: 127.0.0.1
  admin:
    port: 9931
  inbound:
  - port: 8099
    servicePort: 18099
    tags:
      kuma.io/service: web
      kuma.io/protocol: http
  outbound:
  - port: 10010
    tags:
      kuma.io/service: backend
YAML
"$cp" generate dataplane-token --name web-1 --api-url http://127.0.0.3:5681 > "$work/web-1.token"
"$dp" run --cp-address https://127.0.0.3:5678 --ca-cert-file "$work/zone-1/tls/ca.crt" \
  --dataplane-file "$work/web-1.yaml" --dataplane-token-file "$work/web-1.token" \
  > "$work/koguma-dp-web-1.log" 2>&1 &
echo $! >> "$pids"
wait_for http://127.0.0.1:9931/ready "web-1's koguma-dp"
# Until zone-1 has zone-2's ingress (through the global), backend-2 is not
# one of web-1's endpoints.
for _ in $(seq 1 100); do
  curl -sf http://127.0.0.1:9931/config_dump | grep -q '"127.0.0.4"' && break
  sleep 0.1
done
sleep 1

echo
echo "==> zones, as the global sees them"
"$cp" get zones --api-url http://$GLOBAL:5681
echo
echo "==> dataplanes on the global: each zone's, under hashed names, with kuma.io/zone"
"$cp" get dataplanes --api-url http://$GLOBAL:5681
echo
echo "==> zone ingresses as zone-2 sees them (zone-1's comes through the global)"
"$cp" get zone-ingresses --api-url http://127.0.0.4:5681
echo
echo "==> web-1 (zone-1) calls backend 6 times: zone-1's instance directly, zone-2's through its ingress"
for _ in 1 2 3 4 5 6; do curl -s http://127.0.0.1:10010/; done
cat <<TXT

The multi-zone mesh is running. What to try next:
  curl -s http://127.0.0.1:10010/                                                  # backend-1 or backend-2
  curl -s http://127.0.0.1:9922/metrics | grep default_backend                     # zone-2's ingress at work
  $cp get meshtrafficpermissions --api-url http://127.0.0.3:5681                    # the global's, in every zone
  $cp apply -f $root/examples/quickstart/mtls.yaml --api-url http://127.0.0.3:5681  # refused: the global owns it
  curl http://$GLOBAL:5681/zones+insights
  curl http://$GLOBAL:5681/meshes/default/dataplanes+insights
  logs: $work/*.log
Stop it all with: $here/run.sh stop
TXT
