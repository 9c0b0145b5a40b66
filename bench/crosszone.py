"""The cross-zone scenario: client -> sidecar in zone-a (127.0.0.1:10001)
-> zone-b's ingress (INGRESS) -> sidecar in zone-b (127.0.0.2:18081) ->
nginx, mesh mTLS end to end between the sidecars, the ingress routing by
SNI without terminating it.

Koguma: a global and two zone CPs (their own addresses, default ports),
three koguma-dp configured over their streams. Envoy: three Envoys with
static bootstraps doing what Kuma configures for the same path (upstream
TLS with SNI; an ingress listener with the TLS inspector and one filter
chain per server name, a TCP proxy each; the inbound terminating mTLS),
with certificates of the same mesh CA (`koguma-cp generate
workload-certificate`)."""
import json
from pathlib import Path

from meshtls import MESH, cli as _cli, cp as _cp, downstream_tls, upstream_tls
from procs import Proc, http_status, wait_until
from targets import INBOUND, NGINX, OUTBOUND, envoy_cluster, envoy_tcp_proxy, start_envoys

GLOBAL, ZONE_A, ZONE_B = "127.0.0.41", "127.0.0.42", "127.0.0.43"
INGRESS = ("127.0.0.44", 10001)

class KogumaCrossZone:
    name = "koguma"

    def __init__(self, protocol, work: Path, bins: Path):
        self.url_base = f"http://{OUTBOUND[0]}:{OUTBOUND[1]}"
        self.cps, self.procs = [], []
        try:
            self._start(protocol, work, bins)
        except BaseException:
            self.stop()
            raise

    def _start(self, protocol, work, bins):
        api = f"http://{GLOBAL}:5681"
        self.cps.append(_cp(bins, work, "global", GLOBAL, ["--mode", "global", "--kds-address", f"{GLOBAL}:5685"]))
        wait_until("global", lambda: http_status(api + "/")[0] == 200, 20, self.cps)
        _cli(bins, "apply", "-f", "-", "--api-url", api, stdin=MESH.encode())
        tokens = {}
        for zone, ip in (("zone-a", ZONE_A), ("zone-b", ZONE_B)):
            tokens[zone] = work / f"{zone}.token"
            tokens[zone].write_bytes(_cli(bins, "generate", "zone-token", "--zone", zone, "--api-url", api))
            self.cps.append(_cp(bins, work, zone, ip, [
                "--zone", zone, "--global-address", f"grpcs://{GLOBAL}:5685",
                "--global-ca-file", str(work / "global" / "tls" / "ca.crt"), "--zone-token-file", str(tokens[zone])]))
            wait_until(f"{zone} to get the mesh", lambda ip=ip: http_status(f"http://{ip}:5681/meshes/default")[0] == 200,
                       20, self.cps)

        def dp(name, zone_ip, zone, args, admin):
            ca = work / zone / "tls" / "ca.crt"
            self.procs.append(Proc(f"koguma-dp-{name}", [
                str(bins / "koguma-dp"), "run", "--cp-address", f"https://{zone_ip}:5678", "--ca-cert-file", str(ca),
                *args, "--admin-port", str(admin), "--concurrency", "1", "--drain-time", "1s", "--log-level", "warn"], work))

        def template(name, spec):
            path = work / f"{name}.json"
            path.write_text(json.dumps(spec))
            return path

        def dp_token(name, ip):
            path = work / f"{name}.token"
            path.write_bytes(_cli(bins, "generate", "dataplane-token", "--name", name, "--api-url", f"http://{ip}:5681"))
            return path

        app = template("app-1", {"type": "Dataplane", "mesh": "default", "name": "app-1", "networking": {
            "address": INBOUND[0], "inbound": [{"port": INBOUND[1], "servicePort": NGINX[1], "serviceAddress": NGINX[0],
                                                "tags": {"kuma.io/service": "app", "kuma.io/protocol": protocol}}]}})
        ingress = template("ingress-b", {"type": "ZoneIngress", "name": "ingress-b", "networking": {
            "address": INGRESS[0], "port": INGRESS[1], "advertisedAddress": INGRESS[0], "advertisedPort": INGRESS[1]}})
        client = template("client-1", {"type": "Dataplane", "mesh": "default", "name": "client-1", "networking": {
            "address": "127.0.0.3", "inbound": [{"port": 18082, "servicePort": 18083, "tags": {"kuma.io/service": "client"}}],
            "outbound": [{"address": OUTBOUND[0], "port": OUTBOUND[1], "tags": {"kuma.io/service": "app"}}]}})
        dp("app-1", ZONE_B, "zone-b", ["--dataplane-file", str(app), "--dataplane-token-file", str(dp_token("app-1", ZONE_B))], 9911)
        dp("ingress-b", ZONE_B, "zone-b", ["--proxy-type", "ingress", "--dataplane-file", str(ingress),
                                           "--dataplane-token-file", str(tokens["zone-b"])], 9913)
        dp("client-1", ZONE_A, "zone-a", ["--dataplane-file", str(client),
                                          "--dataplane-token-file", str(dp_token("client-1", ZONE_A))], 9912)
        ready = [wait_until(f"{p.name} ready", lambda a=a: http_status(f"http://127.0.0.1:{a}/ready")[0] == 200, 30,
                            self.procs + self.cps) for p, a in zip(self.procs, (9911, 9913, 9912))]
        self.ready_ms = max((r - p.started) * 1000 for r, p in zip(ready, self.procs))

        def through_ingress():
            dump = json.loads(http_status("http://127.0.0.1:9912/config_dump")[1] or b"{}")
            outs = (dump.get("config") or {}).get("outbounds") or []
            return bool(outs and any(e["address"] == INGRESS[0] for e in outs[0]["endpoints"]))
        wait_until("client-1 to reach app through zone-b's ingress", through_ingress, 20, self.procs)

    def stop(self):
        for p in self.procs + self.cps:
            p.stop()


SNI = "a0000000000000000.app.default.ks"


def _listener(name, addr, chains, inspector=False):
    listener = {"name": name, "address": {"socket_address": {"address": addr[0], "port_value": addr[1]}},
                "filter_chains": chains}
    if inspector:
        listener["listener_filters"] = [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}]
    return listener


class EnvoyCrossZone:
    name = "envoy"

    def __init__(self, protocol, work: Path, envoy: str, certs: Path):
        self.url_base = f"http://{OUTBOUND[0]}:{OUTBOUND[1]}"
        sides = [
            ("inbound", [_listener("inbound", INBOUND, [{"transport_socket": downstream_tls(certs),
                                                          "filters": [envoy_tcp_proxy("inbound", "local_app")]}])],
             [envoy_cluster("local_app", NGINX, "tcp")], 9921),
            ("ingress", [_listener("ingress", INGRESS, [{"filter_chain_match": {"server_names": [SNI],
                                                                                "transport_protocol": "tls"},
                                                         "filters": [envoy_tcp_proxy("ingress", "default_app")]}], inspector=True)],
             [envoy_cluster("default_app", INBOUND, "tcp")], 9923),
            ("outbound", [_listener("outbound", OUTBOUND, [{"filters": [envoy_tcp_proxy("outbound", "app")]}])],
             [envoy_cluster("app", INGRESS, "tcp", upstream_tls(certs, SNI))], 9922),
        ]
        self.procs, self.ready_ms = start_envoys(sides, work, envoy)

    def stop(self):
        for p in self.procs:
            p.stop()
