#!/usr/bin/env bash
# Two koguma-cp instances on one PostgreSQL database, and web and backend
# sidecars told of both. It starts a private PostgreSQL server (Debian's
# `postgresql` package) on 127.0.0.1:15432 with Kuma's default settings
# (user, password and database `kuma`), migrates it, starts the instances
# on 127.0.0.11 and 127.0.0.12, then kills the first one and shows traffic
# still flowing and the sidecars served by the second.
# `run.sh stop` stops it all. State and logs are in ./.koguma-production.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work="$root/.koguma-production"
pids="$work/pids"

# shellcheck source=../lib.sh
. "$here/../lib.sh"
stop() { stop_all "production example"; }
if [ "${1:-}" = "stop" ]; then stop; exit 0; fi
stop >/dev/null

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
  echo "PostgreSQL's server is not installed: apt-get install postgresql" >&2
  exit 1
fi
# PostgreSQL does not run as root: then it runs as Debian's postgres user
# (setpriv execs it, so the PID recorded below is the server's).
as_db_user=()
[ "$(id -u)" = 0 ] && as_db_user=(setpriv --reuid=postgres --regid=postgres --init-groups --)

echo "==> building koguma-cp and koguma-dp (release)"
(cd "$root" && cargo build --release --quiet -p koguma-cp -p koguma-dp)
bin="$root/target/release"
rm -rf "$work"
mkdir -p "$work/pg"
: > "$pids"

echo "==> starting PostgreSQL on 127.0.0.1:15432 (data in $work/pg)"
echo kuma > "$work/pg/password"
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$work/pg"
"${as_db_user[@]}" "$pg_bin/initdb" -D "$work/pg/data" -U kuma --pwfile="$work/pg/password" \
  --auth-host=scram-sha-256 --auth-local=trust -E UTF8 > "$work/initdb.log" 2>&1
"${as_db_user[@]}" "$pg_bin/postgres" -D "$work/pg/data" -p 15432 -k "$work/pg" \
  -c listen_addresses=127.0.0.1 > "$work/postgres.log" 2>&1 &
echo $! >> "$pids"
for _ in $(seq 1 100); do
  PGPASSWORD=kuma "$pg_bin/psql" -h 127.0.0.1 -p 15432 -U kuma -d postgres -qAtc 'SELECT 1' >/dev/null 2>&1 && break
  sleep 0.2
done
PGPASSWORD=kuma "$pg_bin/psql" -h 127.0.0.1 -p 15432 -U kuma -d postgres -qc 'CREATE DATABASE kuma'

# Kuma's variables; the other settings keep Kuma's defaults (127.0.0.1:15432).
export KUMA_STORE_TYPE=postgres KUMA_STORE_POSTGRES_USER=kuma \
       KUMA_STORE_POSTGRES_PASSWORD=kuma KUMA_STORE_POSTGRES_DB_NAME=kuma
echo "==> koguma-cp migrate up"
"$bin/koguma-cp" migrate up

echo "==> starting two koguma-cp instances on the database"
for i in 1 2; do
  ip="127.0.0.1$i"
  "$bin/koguma-cp" run --data-dir "$work/cp-$i" --api-address "$ip:5681" \
    --dp-server-address "$ip:5678" > "$work/koguma-cp-$i.log" 2>&1 &
  echo $! >> "$pids"
  echo $! > "$work/cp-$i.pid"
  wait_for "http://$ip:5681/" "koguma-cp instance $i"
done
api1=http://127.0.0.11:5681 api2=http://127.0.0.12:5681

echo "==> the sample apps and a koguma-dp beside each, told of both instances"
python3 "$root/examples/quickstart/app.py" backend 18091 > "$work/backend-app.log" 2>&1 &
echo $! >> "$pids"
python3 "$root/examples/quickstart/app.py" web 18090 http://127.0.0.1:10011/ > "$work/web-app.log" 2>&1 &
echo $! >> "$pids"
cat > "$work/web.yaml" <<'YAML'
type: Dataplane
mesh: default
name: web-1
networking:
  address: 127.0.0.1
  admin: {port: 9911}
  inbound:
  - {port: 8090, servicePort: 18090, tags: {kuma.io/service: web, kuma.io/protocol: http}}
  outbound:
  - {port: 10011, tags: {kuma.io/service: backend}}
YAML
cat > "$work/backend.yaml" <<'YAML'
type: Dataplane
mesh: default
name: backend-1
networking:
  address: 127.0.0.1
  admin: {port: 9912}
  inbound:
  - {port: 8091, servicePort: 18091, tags: {kuma.io/service: backend, kuma.io/protocol: http}}
YAML
for svc in backend web; do
  # A token from instance 2 is good on instance 1: the signing key is shared.
  "$bin/koguma-cp" generate dataplane-token --name "$svc-1" --api-url "$api2" > "$work/$svc.token"
  # One CA for both instances: it is in the database.
  "$bin/koguma-dp" run --cp-address https://127.0.0.11:5678,https://127.0.0.12:5678 \
    --ca-cert-file "$work/cp-1/tls/ca.crt" --dataplane-file "$work/$svc.yaml" \
    --dataplane-token-file "$work/$svc.token" > "$work/koguma-dp-$svc.log" 2>&1 &
  echo $! >> "$pids"
done
wait_for http://127.0.0.1:9912/ready "backend's koguma-dp"
wait_for http://127.0.0.1:9911/ready "web's koguma-dp"

get() { python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip())' "$1"; }
served_by() {
  python3 - "$1" "$2" <<'PY'
import json, sys, urllib.request
d = json.load(urllib.request.urlopen(f"{sys.argv[1]}/meshes/default/dataplanes+insights/{sys.argv[2]}", timeout=5))
i = d["dataplaneInsight"]
print(i["subscriptions"][0]["controlPlaneInstanceId"] if i.get("online") else "offline")
PY
}
echo
echo "==> web -> backend: $(get http://127.0.0.1:8090/)"
echo "==> a policy applied through instance 2 reaches web's sidecar, served by instance 1"
printf 'type: MeshTimeout\nmesh: default\nname: example\nspec:\n  targetRef: {kind: Mesh}\n  to:\n  - targetRef: {kind: Mesh}\n    default: {connectionTimeout: 7s}\n' \
  | "$bin/koguma-cp" apply -f - --api-url "$api2"
for _ in $(seq 1 50); do get http://127.0.0.1:9911/config_dump | grep -Eq '"connectMs": ?7000' && break; sleep 0.1; done
get http://127.0.0.1:9911/config_dump | grep -Eq '"connectMs": ?7000'
echo "    web's config carries it; web is served by $(served_by "$api2" web-1)"

echo "==> killing instance 1 (SIGKILL)"
cp1=$(cat "$work/cp-1.pid")
{ kill -9 "$cp1"; wait "$cp1"; } 2>/dev/null || true
for _ in $(seq 1 50); do
  [ "$(served_by "$api2" web-1)" = "$(get "$api2/" | python3 -c 'import json,sys; print(json.load(sys.stdin)["instanceId"])')" ] && break
  sleep 0.1
done
echo "==> web -> backend: $(get http://127.0.0.1:8090/)"
echo "    web is served by $(served_by "$api2" web-1), backend by $(served_by "$api2" backend-1)"
echo "    instance 2: $(get "$api2/")"
cat <<TXT

Running: PostgreSQL on 127.0.0.1:15432, koguma-cp instance 2 on 127.0.0.12
(instance 1 was killed), web and backend sidecars. What to look at next:
  curl http://127.0.0.1:8090/                                  # web -> backend
  curl $api2/meshes/default/dataplanes+insights/web-1          # subscriptions[].controlPlaneInstanceId
  KUMA_STORE_TYPE=postgres KUMA_STORE_POSTGRES_USER=kuma KUMA_STORE_POSTGRES_PASSWORD=kuma \\
    $bin/koguma-cp run --data-dir $work/cp-1 --api-address 127.0.0.11:5681 --dp-server-address 127.0.0.11:5678
                                                               # instance 1 back (in another terminal)
  logs: $work/*.log
Stop it all with: $here/run.sh stop
TXT
