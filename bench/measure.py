"""One run of one scenario against one target: throughput, latency at a
fixed rate, CPU per request, memory, start-up time."""
import json
import re
import statistics
import subprocess
import time

from procs import cpu_seconds, memory_kib

CONNECTIONS = 32


def wrk(url, seconds):
    out = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", url],
                         capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(errors.group(1)) if errors else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return {"requests": requests, "rps": rps, "errors": failed}


def loadgen(loadgen_bin, url, rate, seconds):
    out = subprocess.run([str(loadgen_bin), "--url", url, "--rate", str(rate), "--duration", f"{seconds}s",
                          "--connections", str(CONNECTIONS)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def bulk_gbps(url, tries=3):
    speeds = []
    for _ in range(tries):
        out = subprocess.run(["curl", "-sf", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url],
                             capture_output=True, text=True, check=True).stdout.split()
        size, secs = int(out[0]), float(out[1])
        speeds.append(size * 8 / secs / 1e9)
    return statistics.median(speeds)


def run(target, scenario, args, loadgen_bin):
    """Measures `scenario` through an already started `target`."""
    pids = [p.pid for p in target.procs]
    time.sleep(0.5)
    result = {"ready_ms": target.ready_ms, "rss_idle_kib": sum(memory_kib(p, "VmRSS") for p in pids)}
    url = target.url_base + scenario["path"]
    if scenario["kind"] == "bulk":
        result["gbps"] = bulk_gbps(url)
    else:
        wrk(url, 1)  # warm up: pools, caches, lazy allocations
        cpu_before = sum(cpu_seconds(p) for p in pids)
        result.update(wrk(url, args.duration))
        cpu = sum(cpu_seconds(p) for p in pids) - cpu_before
        result["cpu_s_per_10k"] = cpu / max(result["requests"], 1) * 10_000 if pids else 0.0
        result["latency"] = loadgen(loadgen_bin, url, args.rate, args.duration)
    result["rss_peak_kib"] = sum(memory_kib(p, "VmHWM") for p in pids)
    return result
