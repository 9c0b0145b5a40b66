# Shared by the example scripts (sourced): stopping what a script started
# and waiting for what it starts. Expects $pids (a file of PIDs) and $work.

# stop_all WHAT: SIGTERM lets sidecars drain; wait for them (their drain
# time is 30 s) so that a new start finds their ports free, then insist.
stop_all() {
  [ -f "$pids" ] || return 0
  local all
  all=$(cat "$pids")
  for pid in $all; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 350); do
    local alive=0
    for pid in $all; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in $all; do kill -9 "$pid" 2>/dev/null || true; done
  rm -f "$pids"
  echo "$1 stopped"
}

# wait_for URL WHAT: until URL answers, at most 20 s.
wait_for() {
  for _ in $(seq 1 100); do
    if python3 - "$1" <<'PY' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=1)
PY
    sleep 0.2
  done
  echo "timed out waiting for $2 ($1); logs are in $work" >&2
  exit 1
}
