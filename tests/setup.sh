#!/usr/bin/env bash
# Installs the Python libraries the end-to-end tests drive (a WebSocket
# client and server library, an OTLP receiver) into tests/.venv. Safe to run again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# grpcio and opentelemetry-proto: an OTLP logs receiver of the tests' own
# (the OpenTelemetry project's generated service), for MeshAccessLog.
check='import websockets, grpc, opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc'
if ! "$here/.venv/bin/python3" -c "$check" >/dev/null 2>&1; then
  python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install -q "websockets==15.0.1" "grpcio==1.68.1" "opentelemetry-proto==1.29.0"
fi
"$here/.venv/bin/python3" -c 'import websockets, grpc; print("websockets", websockets.__version__, "grpcio", grpc.__version__)'
