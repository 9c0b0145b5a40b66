"""One run of one scenario against one target: throughput, latency at a
fixed rate, CPU per request, memory, start-up time.

Kinds of load: `rq` (wrk, 32 keep-alive HTTP/1.1 connections, then the
open-loop latency run), `conn` (wrk sending `Connection: close`: a new
connection, and through a TCP pair a new mTLS handshake, per request),
`h2` (h2load: 8 HTTP/2 connections x 4 streams), `grpc` (the same, unary
gRPC calls: POST of a framed message with gRPC's headers), `bulk` (one
large download with curl)."""
import json
import re
import statistics
import subprocess
import time
from pathlib import Path

from procs import cpu_seconds, memory_kib, pinned

CONNECTIONS = 32
H2_CONNECTIONS, H2_STREAMS = 8, 4
# An empty grpc.health.v1.HealthCheckRequest, length-prefixed.
GRPC_REQUEST = b"\x00\x00\x00\x00\x00"
CLIENTS = {
    "rq": f"wrk, 1 thread, {CONNECTIONS} keep-alive HTTP/1.1 connections; latency: koguma-loadgen, open loop",
    "conn": f"wrk, 1 thread, {CONNECTIONS} connections, `Connection: close` (a new connection per request)",
    "h2": f"h2load, 1 thread, {H2_CONNECTIONS} HTTP/2 connections x {H2_STREAMS} concurrent streams",
    "grpc": f"h2load, 1 thread, {H2_CONNECTIONS} HTTP/2 connections x {H2_STREAMS} concurrent unary gRPC calls",
    "bulk": "curl, one download, median of 3",
}


def wrk(url, seconds, close=False):
    cmd = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", url]
    if close:
        cmd[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(pinned("client", cmd), capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(errors.group(1)) if errors else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return {"requests": requests, "rps": rps, "errors": failed}


def h2load(url, seconds, grpc_body: Path = None):
    cmd = ["h2load", "-t1", f"-c{H2_CONNECTIONS}", f"-m{H2_STREAMS}", f"-D{seconds}", url]
    if grpc_body:
        cmd[1:1] = ["-d", str(grpc_body), "-H", "content-type: application/grpc", "-H", "te: trailers"]
    out = subprocess.run(pinned("client", cmd), capture_output=True, text=True, check=True).stdout
    counts = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, \d+ succeeded, (\d+) failed", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not counts or not codes:
        raise RuntimeError(f"h2load said:\n{out}")
    done = int(counts.group(2))
    failed = int(counts.group(3)) + sum(int(codes.group(i)) for i in (2, 3, 4))
    rps = float(re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out).group(1))
    return {"requests": done, "rps": rps, "errors": failed}


def loadgen(loadgen_bin, url, rate, seconds):
    out = subprocess.run(pinned("client", [str(loadgen_bin), "--url", url, "--rate", str(rate), "--duration", f"{seconds}s",
                                           "--connections", str(CONNECTIONS)]), capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def bulk_gbps(url, tries=3):
    speeds = []
    for _ in range(tries):
        out = subprocess.run(pinned("client", ["curl", "-sf", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url]),
                             capture_output=True, text=True, check=True).stdout.split()
        size, secs = int(out[0]), float(out[1])
        speeds.append(size * 8 / secs / 1e9)
    return statistics.median(speeds)


def run(target, scenario, args, loadgen_bin, work: Path):
    """Measures `scenario` through an already started `target`."""
    pids = [p.pid for p in target.procs]
    time.sleep(0.5)
    result = {"ready_ms": target.ready_ms, "rss_idle_kib": sum(memory_kib(p, "VmRSS") for p in pids)}
    url = target.url_base + scenario["path"]
    kind = scenario["kind"]
    if kind == "bulk":
        result["gbps"] = bulk_gbps(url)
    else:
        if kind in ("h2", "grpc"):
            body = None
            if kind == "grpc":
                body = work / "grpc-request.bin"
                body.write_bytes(GRPC_REQUEST)
            load = lambda seconds: h2load(url, seconds, body)  # noqa: E731
        else:
            load = lambda seconds: wrk(url, seconds, close=kind == "conn")  # noqa: E731
        load(1)  # warm up: pools, caches, lazy allocations
        cpu_before = sum(cpu_seconds(p) for p in pids)
        result.update(load(args.duration))
        cpu = sum(cpu_seconds(p) for p in pids) - cpu_before
        result["cpu_s_per_10k"] = cpu / max(result["requests"], 1) * 10_000 if pids else 0.0
        if kind == "rq":
            result["latency"] = loadgen(loadgen_bin, url, args.rate, args.duration)
    result["rss_peak_kib"] = sum(memory_kib(p, "VmHWM") for p in pids)
    return result
