"""bench/RESULTS.md and the latency chart, from the runs' medians."""
import platform
import statistics
import subprocess
from pathlib import Path

TARGETS = ("direct", "koguma", "envoy")
CHART_PERCENTILES = (50, 75, 90, 99, 99.9, 99.99)
COLORS = {"direct": "#888888", "koguma": "#c0392b", "envoy": "#2471a3"}


def median(runs, key, sub=None):
    values = [(r[key][sub] if sub else r[key]) for r in runs if key in r]
    return statistics.median(values) if values else None


def spread(runs, key, sub=None):
    """(min, max) over the runs, or None."""
    values = [(r[key][sub] if sub else r[key]) for r in runs if key in r]
    return (min(values), max(values)) if len(values) > 1 else None


def machine():
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return f"{cpu}, {len(__import__('os').sched_getaffinity(0))} cores, {int(mem) // 1024 // 1024} GiB, Linux {platform.release()}"


def fmt(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b not in (None, 0) else "–"


ROWS = [
    ("max requests/s", "rps", None, 0, "higher"),
    ("p50 latency, ms (open loop)", "latency", "p50_us", 3, "lower"),
    ("p99 latency, ms", "latency", "p99_us", 3, "lower"),
    ("p99.9 latency, ms", "latency", "p999_us", 3, "lower"),
    ("errors (wrk + open loop)", "errors", None, 0, "lower"),
    ("CPU s per 10k requests (all proxies)", "cpu_s_per_10k", None, 3, "lower"),
    ("RSS idle, MiB (all proxies)", "rss_idle_kib", None, 1, "lower"),
    ("RSS peak, MiB (all proxies)", "rss_peak_kib", None, 1, "lower"),
    ("start to ready, ms (slowest proxy)", "ready_ms", None, 0, "lower"),
    ("bulk transfer, Gbit/s", "gbps", None, 2, "higher"),
]


def scaled(v, key, sub):
    if v is None:
        return None
    if sub and sub.endswith("_us"):
        return v / 1000
    if key.endswith("_kib"):
        return v / 1024
    return v


def value(runs, key, sub):
    return scaled(median(runs, key, sub), key, sub)


def cell(runs, key, sub, digits):
    """The median, and the range over the repetitions when there are several."""
    v = value(runs, key, sub)
    r = spread(runs, key, sub)
    if v is None or r is None or r[0] == r[1]:
        return fmt(v, digits)
    lo, hi = scaled(r[0], key, sub), scaled(r[1], key, sub)
    return f"{fmt(v, digits)} <sub>({fmt(lo, digits)}–{fmt(hi, digits)})</sub>"


def policy_cost(results, scenario="http-routes"):
    """What the policies cost each proxy: its requests/s with them against
    its plain HTTP pair's (scenario 2) in the same run."""
    out = []
    for target, label in (("koguma", "Koguma"), ("envoy", "Envoy")):
        with_p = value(results.get(target, {}).get(scenario, []), "rps", None)
        plain = value(results.get(target, {}).get("http", []), "rps", None)
        if with_p and plain:
            out.append(f"- {label} with these policies: {100 * with_p / plain:.1f} % of its plain HTTP pair's requests/s"
                       f" ({fmt(with_p)} vs {fmt(plain)}).")
        runs = results.get(target, {}).get(scenario, [])
        if runs and all("log_lines" in r for r in runs):
            lines = sum(r["log_lines"] for r in runs)
            sent = sum(r["requests"] for r in runs)
            out.append(f"- {label}'s access log: {lines:,} lines, for the {sent:,} requests of the throughput runs"
                       f" and those of the warm-up and latency runs.")
    return (out + [""]) if out else []


def write(results, scenarios, args, command, out_dir: Path, versions):
    from measure import CLIENTS
    from procs import PIN
    pinning = (f" The load generators run on CPU {PIN['client']}, the proxies, their control planes and the applications"
               f" on CPU {PIN['server']} (taskset)." if PIN else " Nothing is pinned to a CPU.")
    lines = [
        "# Koguma vs Envoy: benchmark results",
        "",
        f"- Date: {versions['date']}",
        f"- Command: `{command}`",
        f"- Machine: {machine()}",
        f"- Versions: koguma {versions['koguma']}, {versions['envoy']}, nginx {versions['nginx']}",
        f"- Method: each pair is client → outbound proxy → inbound proxy → application (nginx with 1 worker, keep-alive,"
        f" HTTP/1.1 or h2c; for gRPC a one-thread Rust server answering unary calls with a message and the grpc-status"
        f" trailer) on loopback;"
        f" one worker thread per proxy (Envoy `--concurrency 1`, koguma-dp `--concurrency 1`). Koguma runs as users run it"
        f" (koguma-cp plus two koguma-dp configured over the stream); Envoy gets an equivalent static bootstrap."
        f" With mesh mTLS, Koguma's mesh has a builtin CA and an allow-all MeshTrafficPermission; the Envoys get"
        f" certificates of one mesh CA (`koguma-cp generate workload-certificate`) and what Kuma configures: TLS 1.3,"
        f" ALPN `kuma`, SAN checks, HTTP/2 between the proxies for every HTTP protocol."
        f" {args.reps} interleaved repetitions (direct, Koguma, Envoy, ...); figures are medians, with the range over"
        f" the repetitions in brackets; ratios are of medians.{pinning}"
        f" Throughput: the client named under each scenario, {args.duration} s. Latency: koguma-loadgen, open loop at"
        f" {args.rate} requests/s for {args.duration} s over 32 connections, measured from each request's intended send time."
        f" CPU: utime+stime of the proxies from /proc during the throughput run. The cross-zone scenario adds a zone ingress between"
        f" the two sidecars (three proxies each side; Koguma with a global and two zone CPs, mesh mTLS between the sidecars;"
        f" Envoy with an SNI filter-chain TCP proxy as Kuma configures an ingress). The machine is shared by the client, nginx"
        f" and the proxies: read ratios, not absolute numbers.",
        "",
    ]
    for sc in scenarios:
        name = sc["name"]
        lines += [f"## {sc['title']}", "", f"Client: {CLIENTS[sc['kind']]}.", "",
                  "| metric | direct | Koguma | Envoy | Koguma/Envoy | Koguma/direct | Envoy/direct |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for label, key, sub, digits, _ in ROWS:
            vals = {t: value(results.get(t, {}).get(name, []), key, sub) for t in TARGETS}
            if all(v is None for v in vals.values()):
                continue
            if key in ("cpu_s_per_10k", "rss_idle_kib", "rss_peak_kib", "ready_ms") :
                vals["direct"] = None
            cells = {t: cell(results.get(t, {}).get(name, []), key, sub, digits) if vals[t] is not None else "–"
                     for t in TARGETS}
            lines.append(f"| {label} | {cells['direct']} | {cells['koguma']} | {cells['envoy']} "
                         f"| {ratio(vals['koguma'], vals['envoy'])} | {ratio(vals['koguma'], vals['direct'])} | {ratio(vals['envoy'], vals['direct'])} |")
        lines.append("")
        if sc.get("policies"):
            lines += policy_cost(results, name)
    lines += ["## Latency distribution", "", "![latency percentiles per scenario](latency.svg)", ""]
    notes = Path(__file__).resolve().parent / "NOTES.md"
    if notes.exists():
        # Findings from profiling are written by people; each run carries them along.
        lines += [notes.read_text().rstrip(), ""]
    (out_dir / "RESULTS.md").write_text("\n".join(lines) + "\n")
    (out_dir / "latency.svg").write_text(chart(results, scenarios))


def chart(results, scenarios):
    """Latency percentile curves (ms, log scale) per scenario, one panel each."""
    import math
    panels = [s for s in scenarios if s["kind"] == "rq"]
    w, h, pad = 420, 260, 50
    width = w * max(len(panels), 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h + 40}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{h + 40}" fill="white"/>']
    for i, sc in enumerate(panels):
        x0 = i * w
        curves = {}
        for t in TARGETS:
            runs = results.get(t, {}).get(sc["name"], [])
            if runs and all("latency" in r for r in runs):
                # Each point is the median of that percentile over the runs,
                # as in the tables (one run's tail spike would misrepresent).
                per_q = {}
                for r in runs:
                    for q, us in r["latency"]["percentiles_us"]:
                        if q in CHART_PERCENTILES:
                            per_q.setdefault(q, []).append(us / 1000)
                curves[t] = [(q, statistics.median(v)) for q, v in sorted(per_q.items())]
        all_ms = [ms for c in curves.values() for _, ms in c] or [1]
        lo, hi = math.log10(max(min(all_ms), 0.01)), math.log10(max(all_ms) * 1.2)
        hi = hi if hi > lo else lo + 1
        qs = [q for q, _ in next(iter(curves.values()), [])]
        def px(j):
            return x0 + pad + j * (w - pad - 20) / max(len(qs) - 1, 1)
        def py(ms):
            return 20 + (h - 40) * (1 - (math.log10(max(ms, 0.01)) - lo) / (hi - lo))
        out.append(f'<text x="{x0 + pad}" y="14" font-weight="bold">{sc["title"]}</text>')
        out.append(f'<line x1="{x0 + pad}" y1="{h - 20}" x2="{x0 + w - 20}" y2="{h - 20}" stroke="#333"/>')
        out.append(f'<line x1="{x0 + pad}" y1="20" x2="{x0 + pad}" y2="{h - 20}" stroke="#333"/>')
        for j, q in enumerate(qs):
            out.append(f'<text x="{px(j)}" y="{h - 6}" text-anchor="middle">p{q:g}</text>')
        ticks = [m * 10 ** e for e in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)]
        for ms in ticks:
            if lo <= math.log10(ms) <= hi:
                out.append(f'<text x="{x0 + pad - 4}" y="{py(ms) + 4}" text-anchor="end">{ms:g} ms</text>')
                out.append(f'<line x1="{x0 + pad}" y1="{py(ms)}" x2="{x0 + w - 20}" y2="{py(ms)}" stroke="#eee"/>')
        for k, (t, c) in enumerate(curves.items()):
            pts = " ".join(f"{px(j):.1f},{py(ms):.1f}" for j, (_, ms) in enumerate(c))
            out.append(f'<polyline points="{pts}" fill="none" stroke="{COLORS[t]}" stroke-width="2"/>')
            out.append(f'<text x="{x0 + pad + 10 + 70 * k}" y="{h + 25}" fill="{COLORS[t]}">■ {t}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def versions(bins: Path, envoy: str, nginx: str, date: str):
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "unknown"
    sha = first_line(["git", "rev-parse", "--short", "HEAD"])
    return {"date": date, "koguma": f"{first_line([str(bins / 'koguma-dp'), '--version'])} ({sha})",
            "envoy": "Envoy " + first_line([envoy, "--version"]).split("version:")[-1].strip().split("/")[1]
            if "/" in first_line([envoy, "--version"]) else first_line([envoy, "--version"]),
            "nginx": first_line([nginx, "-v"]).split("/")[-1]}
