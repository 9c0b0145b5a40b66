"""What is measured: the application alone (direct), a Koguma sidecar pair
configured by koguma-cp over its stream, and an Envoy pair with an
equivalent static bootstrap. Each pair is: client -> outbound proxy
(127.0.0.1:10001) -> inbound proxy (127.0.0.2:18081) -> the application:
nginx over HTTP/1.1 (127.0.0.1:18080) or h2c (127.0.0.1:18084), or a gRPC
server (127.0.0.1:18085). With mesh mTLS, the two proxies speak mTLS to
each other as Kuma configures it."""
import json
import subprocess
from pathlib import Path

from meshtls import MESH, cli, downstream_tls, upstream_tls
from procs import Proc, http_status, wait_until

NGINX = ("127.0.0.1", 18080)
NGINX_H2 = ("127.0.0.1", 18084)
GRPC = ("127.0.0.1", 18085)
# Where the application listens, by the protocol it speaks.
APP = {"tcp": NGINX, "http": NGINX, "http2": NGINX_H2, "grpc": GRPC}
OUTBOUND = ("127.0.0.1", 10001)
INBOUND = ("127.0.0.2", 18081)
SMALL_BODY = "x" * 100


class Nginx:
    def __init__(self, nginx, work: Path, bulk_mib: int):
        root = work / "www"
        root.mkdir(parents=True, exist_ok=True)
        (root / "64k").write_bytes(bytes(range(256)) * 256)
        with open(root / "bulk", "wb") as f:
            f.truncate(bulk_mib * 1024 * 1024)
        conf = work / "nginx.conf"
        conf.write_text(f"""
user root;
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  http2_max_requests 1000000;
  server {{
    listen {NGINX[0]}:{NGINX[1]} reuseport;
    listen {NGINX_H2[0]}:{NGINX_H2[1]} http2;
    location = / {{ default_type text/plain; return 200 "{SMALL_BODY}"; }}
    location / {{ root {root}; }}
  }}
}}
""")
        self.procs = [Proc("nginx", [nginx, "-p", str(work), "-c", str(conf), "-e", str(work / "nginx-error.log")], work)]
        wait_until("nginx", lambda: http_status(f"http://{NGINX[0]}:{NGINX[1]}/")[0] == 200, 10, self.procs)

    def stop(self):
        for p in self.procs:
            p.stop()


class GrpcUpstream:
    """The gRPC scenario's application: unary calls answered with a message
    and the grpc-status trailer (bench/loadgen/src/bin/grpc_upstream.rs)."""

    def __init__(self, bins: Path, work: Path):
        self.proc = Proc("grpc-upstream", [str(bins / "koguma-grpc-upstream"), "--listen", f"{GRPC[0]}:{GRPC[1]}"], work)

        def listening():
            import socket
            try:
                socket.create_connection(GRPC, timeout=0.2).close()
                return True
            except OSError:
                return False
        wait_until("the gRPC upstream", listening, 10, [self.proc])

    def stop(self):
        self.proc.stop()


class Direct:
    name = "direct"

    def __init__(self, protocol, work):
        app = APP[protocol]
        self.url_base = f"http://{app[0]}:{app[1]}"
        self.procs = []
        self.ready_ms = 0.0

    def stop(self):
        pass


def _dataplane(name, address, inbound, outbound, protocol):
    dp = {"type": "Dataplane", "mesh": "default", "name": name, "networking": {"address": address, "inbound": [inbound]}}
    inbound["tags"]["kuma.io/protocol"] = protocol
    if outbound:
        dp["networking"]["outbound"] = [outbound]
    return json.dumps(dp)


# The routing load of the `http-routes` scenario: rules a request to "/"
# is checked against (and misses) before the catch-all that takes it.
ROUTE_RULES = 20


def policies_yaml():
    """A MeshHTTPRoute of ROUTE_RULES rules (each but the last a path prefix
    and a header the benchmark's requests do not carry), a MeshRetry and a
    MeshTimeout, all on the `app` service."""
    rules = "".join(
        f"    - matches: [{{path: {{type: PathPrefix, value: /r{i}}}, headers: [{{type: Exact, name: x-route, value: r{i}}}]}}]\n"
        f"      default: {{backendRefs: [{{kind: MeshService, name: app}}]}}\n"
        for i in range(ROUTE_RULES - 1))
    rules += "    - matches: [{path: {type: PathPrefix, value: /}}]\n      default: {backendRefs: [{kind: MeshService, name: app}]}\n"
    to = "  to:\n  - targetRef: {kind: MeshService, name: app}\n"
    return (f"type: MeshHTTPRoute\nmesh: default\nname: bench-routes\nspec:\n  targetRef: {{kind: Mesh}}\n{to}    rules:\n{rules}"
            f"---\ntype: MeshRetry\nmesh: default\nname: bench-retry\nspec:\n  targetRef: {{kind: Mesh}}\n{to}"
            f"    default:\n      http: {{numRetries: 2, retryOn: [5XX, Reset]}}\n"
            f"---\ntype: MeshTimeout\nmesh: default\nname: bench-timeout\nspec:\n  targetRef: {{kind: Mesh}}\n{to}"
            f"    default:\n      http: {{requestTimeout: 10s, streamIdleTimeout: 5m}}\n")


# A bucket no benchmark comes near: the rate limit is checked on every
# request and never answers one.
NEVER_LIMITED = 10_000_000

# Kuma's default HTTP access log format, its placeholders filled in as for
# the client's outbound to `app` (what Koguma's CP does, and Kuma's).
KUMA_HTTP_FORMAT = ('[%START_TIME%] default "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
                    '%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
                    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
                    '"%REQ(X-B3-TRACEID?X-DATADOG-TRACEID)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" '
                    '"client" "app" "127.0.0.3" "%UPSTREAM_HOST%"\n')


def observed_yaml(log: Path):
    """A MeshAccessLog of the client's outbound to a file, in Kuma's default
    format, and a MeshRateLimit on app's inbound that never triggers."""
    return (f"type: MeshAccessLog\nmesh: default\nname: bench-log\nspec:\n  targetRef: {{kind: Mesh}}\n"
            f"  to:\n  - targetRef: {{kind: MeshService, name: app}}\n    default:\n      backends:\n"
            f"      - type: File\n        file: {{path: {log}}}\n"
            f"---\ntype: MeshRateLimit\nmesh: default\nname: bench-limit\nspec:\n"
            f"  targetRef: {{kind: MeshService, name: app}}\n  from:\n  - targetRef: {{kind: Mesh}}\n    default:\n"
            f"      local:\n        http:\n          requestRate: {{num: {NEVER_LIMITED}, interval: 1s}}\n")


def envoy_access_log(log: Path):
    return [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(log), "log_format": {"text_format_source": {"inline_string": KUMA_HTTP_FORMAT}}}}]


def envoy_rate_limit():
    """Envoy's local rate limit filter as Kuma configures it (stat prefix
    `rate_limit`, token bucket of `num` refilled every interval)."""
    every = {"numerator": 100, "denominator": "HUNDRED"}
    return {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "rate_limit",
        "token_bucket": {"max_tokens": NEVER_LIMITED, "tokens_per_fill": NEVER_LIMITED, "fill_interval": "1s"},
        "filter_enabled": {"runtime_key": "local_rate_limit_enabled", "default_value": every},
        "filter_enforced": {"runtime_key": "local_rate_limit_enforced", "default_value": every}}}


def envoy_routes(cluster):
    """The same routes, retry and timeout as an Envoy route table."""
    action = {"cluster": cluster, "timeout": "10s", "idle_timeout": "300s",
              "retry_policy": {"retry_on": "5xx,reset", "num_retries": 2}}
    routes = [{"match": {"prefix": f"/r{i}", "headers": [{"name": "x-route", "string_match": {"exact": f"r{i}"}}]},
               "route": action} for i in range(ROUTE_RULES - 1)]
    return routes + [{"match": {"prefix": "/"}, "route": action}]


class KogumaPair:
    """koguma-cp plus two koguma-dp, as users run them: configured over the
    stream; with `mtls`, the mesh has a builtin CA and an allow-all
    MeshTrafficPermission; with `policies` "routes", `policies_yaml()` is in
    force, with "observed", `observed_yaml()`."""

    name = "koguma"

    def __init__(self, protocol, work: Path, bins: Path, mtls=False, policies=None):
        self.url_base = f"http://{OUTBOUND[0]}:{OUTBOUND[1]}"
        self.policies = policies
        self.log = work / "access.log"
        cp_dir = work / "koguma-cp"
        self.cp = Proc("koguma-cp", [str(bins / "koguma-cp"), "run", "--store", "memory", "--data-dir", str(cp_dir),
                                     "--api-address", "127.0.0.1:25681", "--dp-server-address", "127.0.0.1:25678"], work)
        self.procs = []
        try:
            self._start_dataplanes(protocol, work, bins, cp_dir, mtls)
        except BaseException:
            self.stop()  # nothing started here outlives a failed start
            raise

    def _start_dataplanes(self, protocol, work, bins, cp_dir, mtls):
        wait_until("koguma-cp", lambda: http_status("http://127.0.0.1:25681/")[0] == 200, 20, [self.cp])
        if mtls:
            cli(bins, "apply", "-f", "-", "--api-url", "http://127.0.0.1:25681", stdin=MESH.encode())
        if self.policies:
            yaml = policies_yaml() if self.policies == "routes" else observed_yaml(self.log)
            cli(bins, "apply", "-f", "-", "--api-url", "http://127.0.0.1:25681", stdin=yaml.encode())
        app = APP[protocol]
        inbound = _dataplane("app-1", INBOUND[0], {"port": INBOUND[1], "servicePort": app[1], "serviceAddress": app[0],
                                                    "tags": {"kuma.io/service": "app"}}, None, protocol)
        outbound = _dataplane("client-1", "127.0.0.3", {"port": 18082, "servicePort": 18083, "tags": {"kuma.io/service": "client"}},
                              {"address": OUTBOUND[0], "port": OUTBOUND[1], "tags": {"kuma.io/service": "app"}}, protocol)
        for name, spec, admin in (("app-1", inbound, 9911), ("client-1", outbound, 9912)):
            path = work / f"{name}.json"
            path.write_text(spec)
            token = work / f"{name}.token"
            token.write_bytes(subprocess.run(
                [str(bins / "koguma-cp"), "generate", "dataplane-token", "--name", name,
                 "--api-url", "http://127.0.0.1:25681"], check=True, capture_output=True).stdout)
            self.procs.append(Proc(f"koguma-dp-{name}", [
                str(bins / "koguma-dp"), "run", "--cp-address", "https://127.0.0.1:25678",
                "--ca-cert-file", str(cp_dir / "tls" / "ca.crt"), "--dataplane-file", str(path),
                "--dataplane-token-file", str(token),
                "--admin-port", str(admin), "--concurrency", "1", "--drain-time", "1s", "--log-level", "warn"], work))
        ready = [wait_until(f"{p.name} ready", lambda a=a: http_status(f"http://127.0.0.1:{a}/ready")[0] == 200, 30, [p, self.cp])
                 for p, a in zip(self.procs, (9911, 9912))]
        self.ready_ms = max((r - p.started) * 1000 for r, p in zip(ready, self.procs))

        def has_endpoint():
            dump = json.loads(http_status("http://127.0.0.1:9912/config_dump")[1] or b"{}")
            config = dump.get("config") or {}
            outs = config.get("outbounds") or []
            routed = self.policies != "routes" or bool(outs and len(outs[0].get("httpRoutes") or []) == ROUTE_RULES)
            logged = self.policies != "observed" or bool(outs and (outs[0].get("listenerPolicy") or {}).get("accessLogs"))
            return bool(outs and outs[0]["endpoints"] and (not mtls or outs[0].get("identity")) and routed and logged)
        wait_until("client-1 to know app-1", has_endpoint, 10, self.procs)

    def stop(self):
        for p in self.procs + [self.cp]:
            p.stop()


def envoy_tcp_proxy(stat, cluster):
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": stat, "cluster": cluster}}


def _envoy_listener(name, addr, protocol, cluster, routes=None, access_log=None, filters=()):
    if protocol == "tcp":
        filt = envoy_tcp_proxy(name, cluster)
    else:
        filt = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": name, "codec_type": "AUTO",
            "route_config": {"name": name, "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes or [
                {"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "15s"}}]}]},
            "http_filters": list(filters) + [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}
        if access_log:
            filt["typed_config"]["access_log"] = access_log
    return {"name": name, "address": {"socket_address": {"address": addr[0], "port_value": addr[1]}},
            "filter_chains": [{"filters": [filt]}]}


def envoy_cluster(name, addr, protocol, transport=None):
    c = {"name": name, "type": "STATIC", "connect_timeout": "5s", "lb_policy": "ROUND_ROBIN",
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
             {"endpoint": {"address": {"socket_address": {"address": addr[0], "port_value": addr[1]}}}}]}]}}
    if protocol in ("http2", "grpc"):
        c["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}
    if transport:
        c["transport_socket"] = transport
    return c


def start_envoys(sides, work: Path, envoy: str):
    """Envoys with static bootstraps, one per (name, listeners, clusters,
    admin port); returns them once all are ready, and how long the slowest
    took."""
    procs, ready = [], []
    for side, listeners, clusters, admin in sides:
        boot = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
                "static_resources": {"listeners": listeners, "clusters": clusters}}
        path = work / f"envoy-{side}.json"
        path.write_text(json.dumps(boot))
        p = Proc(f"envoy-{side}", [envoy, "-c", str(path), "--concurrency", "1", "--disable-hot-restart",
                                    "--log-level", "warn"], work)
        procs.append(p)
        ready.append((p, admin))
    times = [wait_until(f"{p.name} ready", lambda a=a: http_status(f"http://127.0.0.1:{a}/ready")[0] == 200, 30, procs)
             for p, a in ready]
    return procs, max((t - p.started) * 1000 for t, (p, _) in zip(times, ready))


class EnvoyPair:
    """Two Envoys with static bootstraps doing what the Koguma pair does.
    With `certs` (mesh mTLS), what Kuma configures: the outbound cluster
    speaks HTTP/2 to the other sidecar over mTLS for every HTTP protocol,
    the inbound listener requires a mesh client certificate and speaks the
    application's protocol to it."""

    name = "envoy"

    def __init__(self, protocol, work: Path, envoy: str, certs=None, policies=None):
        self.url_base = f"http://{OUTBOUND[0]}:{OUTBOUND[1]}"
        app = APP[protocol]
        observed = policies == "observed"
        inbound = _envoy_listener(f"inbound:{INBOUND[0]}:{INBOUND[1]}", INBOUND, protocol, "localhost",
                                  filters=[envoy_rate_limit()] if observed else ())
        between = protocol
        if certs:
            inbound["filter_chains"][0]["transport_socket"] = downstream_tls(certs)
            between = "tcp" if protocol == "tcp" else "http2"
        sides = [("inbound", [inbound], [envoy_cluster("localhost", app, protocol)], 9921),
                 ("outbound", [_envoy_listener(f"outbound:{OUTBOUND[0]}:{OUTBOUND[1]}", OUTBOUND, protocol, "app",
                                               envoy_routes("app") if policies == "routes" else None,
                                               access_log=envoy_access_log(work / "access.log") if observed else None)],
                  [envoy_cluster("app", INBOUND, between, upstream_tls(certs) if certs else None)], 9922)]
        self.procs, self.ready_ms = start_envoys(sides, work, envoy)

    def stop(self):
        for p in self.procs:
            p.stop()
