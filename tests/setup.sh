#!/usr/bin/env bash
# Installs the Python clients the end-to-end tests drive (a WebSocket
# client and server library) into tests/.venv. Safe to run again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if ! "$here/.venv/bin/python3" -c 'import websockets' >/dev/null 2>&1; then
  python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install -q "websockets==15.0.1"
fi
"$here/.venv/bin/python3" -c 'import websockets; print("websockets", websockets.__version__)'
