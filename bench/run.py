#!/usr/bin/env python3
"""Koguma against Envoy on this machine, side by side, in one run.

Usually started through `bash bench/run.sh`, which installs the tools and
builds Koguma first. Every process it starts is stopped before it exits, and
all traffic stays on loopback."""
import argparse
import datetime
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure  # noqa: E402
import procs  # noqa: E402
import report  # noqa: E402
from crosszone import EnvoyCrossZone, KogumaCrossZone  # noqa: E402
from meshtls import certificates  # noqa: E402
from targets import APP, Direct, EnvoyPair, GrpcUpstream, KogumaPair, Nginx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "tcp": {"name": "tcp", "title": "1. TCP through a sidecar pair", "protocol": "tcp", "path": "/", "kind": "rq"},
    "http": {"name": "http", "title": "2. HTTP/1.1 through a sidecar pair", "protocol": "http", "path": "/", "kind": "rq"},
    "http-routes": {"name": "http-routes", "title": "2c. HTTP/1.1 with a MeshHTTPRoute of 20 rules, a MeshRetry and a MeshTimeout"
                    " in force (Envoy: the same route table, retry policy and timeouts)", "protocol": "http", "path": "/",
                    "kind": "rq", "policies": "routes"},
    "http-observed": {"name": "http-observed", "title": "2d. HTTP/1.1 with a MeshAccessLog to a file (Kuma's default format)"
                      " and a MeshRateLimit that never triggers (Envoy: the same file access log and local rate limit)",
                      "protocol": "http", "path": "/", "kind": "rq", "policies": "observed"},
    "http-64k": {"name": "http-64k", "title": "2b. HTTP/1.1, 64 KiB responses", "protocol": "http", "path": "/64k", "kind": "rq"},
    "mtls-http": {"name": "mtls-http", "title": "3. HTTP/1.1 through a sidecar pair, mesh mTLS", "protocol": "http",
                  "path": "/", "kind": "rq", "mtls": True},
    "mtls-h2": {"name": "mtls-h2", "title": "3b. HTTP/2 (h2c client and application) through a sidecar pair, mesh mTLS",
                "protocol": "http2", "path": "/", "kind": "h2", "mtls": True},
    "mtls-grpc": {"name": "mtls-grpc", "title": "3c. gRPC unary calls through a sidecar pair, mesh mTLS", "protocol": "grpc",
                  "path": "/grpc.health.v1.Health/Check", "kind": "grpc", "mtls": True},
    "mtls-conn": {"name": "mtls-conn", "title": "4. A new connection per request: TCP through a sidecar pair, mesh mTLS "
                  "(one mTLS handshake between the proxies per request)", "protocol": "tcp", "path": "/", "kind": "conn",
                  "mtls": True},
    "bulk": {"name": "bulk", "title": "5. Bulk TCP transfer (plaintext)", "protocol": "tcp", "path": "/bulk", "kind": "bulk"},
    "mtls-bulk": {"name": "mtls-bulk", "title": "5b. Bulk TCP transfer, mesh mTLS", "protocol": "tcp", "path": "/bulk",
                  "kind": "bulk", "mtls": True},
    "cross-zone": {"name": "cross-zone", "title": "6. Cross-zone: sidecar -> zone ingress (SNI passthrough) -> sidecar, TCP over mTLS",
                   "protocol": "tcp", "path": "/", "kind": "rq", "cross_zone": True},
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default 3)")
    p.add_argument("--duration", type=int, default=10, help="seconds per throughput and per latency run (default 10)")
    p.add_argument("--rate", type=int, default=2000, help="fixed request rate for the latency runs (default 2000/s)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: " + ",".join(SCENARIOS))
    p.add_argument("--targets", default="direct,koguma,envoy",
                   help="which of direct, koguma, envoy to measure (default all three; fewer for quick A/B runs)")
    p.add_argument("--bulk-mib", type=int, default=1024, help="size of the bulk transfer (default 1024 MiB)")
    p.add_argument("--bin-dir", default=str(ROOT / "target" / "release"), help="where koguma-cp, koguma-dp, koguma-loadgen are")
    p.add_argument("--envoy", default=str(ROOT / "bench" / ".venv" / "bin" / "envoy"))
    p.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    p.add_argument("--out-dir", default=str(ROOT / "bench"), help="where RESULTS.md, latency.svg and results.json go")
    cpus = len(os.sched_getaffinity(0))
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=cpus >= 2,
                   help="client on CPU 0, proxies and applications on the others (default: on with 2 or more CPUs)")
    p.add_argument("--smoke", action="store_true", help="very short runs of the http, http-routes, http-observed and mtls-grpc scenarios (for the test suite)")
    args = p.parse_args()
    if args.smoke:
        args.reps, args.duration, args.rate, args.scenarios, args.bulk_mib = 1, 1, 200, "http,http-routes,http-observed,mtls-grpc", 1
    if args.pin:
        procs.pin(cpus)
    return args


def main():
    # SIGTERM becomes an ordinary exit, so that the `finally` blocks stop
    # every process this run started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    args = parse_args()
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        sys.exit(f"--scenarios: unknown {unknown}; choose from {list(SCENARIOS)}")
    scenarios = [SCENARIOS[n] for n in names]
    bins = Path(args.bin_dir)
    for tool in [bins / "koguma-cp", bins / "koguma-dp", bins / "koguma-loadgen", bins / "koguma-grpc-upstream",
                 Path(args.envoy), Path(args.nginx)]:
        if not tool.exists():
            sys.exit(f"{tool} is missing: run `bash bench/run.sh`, which installs and builds everything")
    for tool in ("wrk", "curl", "h2load") + (("taskset",) if args.pin else ()):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run `bash bench/setup.sh`")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = {"direct": {}, "koguma": {}, "envoy": {}}
    with tempfile.TemporaryDirectory(prefix="koguma-bench-") as tmp:
        work = Path(tmp)
        apps = [Nginx(args.nginx, work / "nginx", args.bulk_mib)]
        try:
            if any(sc["protocol"] == "grpc" for sc in scenarios):
                apps.append(GrpcUpstream(bins, work))
            certs = certificates(bins, work) if any(sc.get("cross_zone") or sc.get("mtls") for sc in scenarios) else None
            for rep in range(args.reps):
                direct_done = {}
                for kind in [t for t in ("direct", "koguma", "envoy") if t in args.targets.split(",")]:
                    for sc in scenarios:
                        # The application alone is measured once per rep for
                        # each way of loading it (mtls-http's is http's).
                        same = (APP[sc["protocol"]], sc["path"], sc["kind"])
                        if kind == "direct" and same in direct_done:
                            results[kind].setdefault(sc["name"], []).append(direct_done[same])
                            continue
                        run_dir = work / f"{rep}-{kind}-{sc['name']}"
                        run_dir.mkdir()
                        print(f"[rep {rep + 1}/{args.reps}] {kind:6} {sc['name']}", flush=True)
                        if kind == "direct":
                            target = Direct(sc["protocol"], run_dir)
                        elif sc.get("cross_zone"):
                            target = (KogumaCrossZone(sc["protocol"], run_dir, bins) if kind == "koguma"
                                      else EnvoyCrossZone(sc["protocol"], run_dir, args.envoy, certs))
                        elif kind == "koguma":
                            target = KogumaPair(sc["protocol"], run_dir, bins, mtls=sc.get("mtls", False),
                                                policies=sc.get("policies"))
                        else:
                            target = EnvoyPair(sc["protocol"], run_dir, args.envoy, certs if sc.get("mtls") else None,
                                               policies=sc.get("policies"))
                        try:
                            r = measure.run(target, sc, args, bins / "koguma-loadgen", run_dir)
                        finally:
                            target.stop()
                        if sc.get("policies") == "observed" and kind != "direct":
                            # The proof that every request was logged, not dropped.
                            log = run_dir / "access.log"
                            r["log_lines"] = sum(1 for _ in log.open("rb")) if log.exists() else 0
                        if "latency" in r:
                            r["errors"] += r["latency"]["errors"]
                        results[kind].setdefault(sc["name"], []).append(r)
                        if kind == "direct":
                            direct_done[same] = r
                        print("         " + summary(r), flush=True)
        finally:
            for app in apps:
                app.stop()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "bash bench/run.sh" + "".join(f" {a}" for a in sys.argv[1:])
    versions = report.versions(bins, args.envoy, args.nginx, date)
    (out_dir / "results.json").write_text(json.dumps({"versions": versions, "args": vars(args), "results": results}, indent=1))
    report.write(results, scenarios, args, command, out_dir, versions)
    print(f"done in {time.monotonic() - started:.0f} s: {out_dir / 'RESULTS.md'}")


def summary(r):
    if "gbps" in r:
        return f"{r['gbps']:.2f} Gbit/s"
    lat = r.get("latency")
    lat = f", p50 {lat['p50_us'] / 1000:.2f} ms, p99 {lat['p99_us'] / 1000:.2f} ms" if lat else ""
    return (f"{r['rps']:.0f} rq/s{lat}, "
            f"cpu/10k {r['cpu_s_per_10k']:.3f} s, rss peak {r['rss_peak_kib'] / 1024:.1f} MiB, errors {r['errors']}")


if __name__ == "__main__":
    main()
