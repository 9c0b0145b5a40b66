"""Mesh mTLS for the benchmark: the Mesh that turns it on for Koguma, and
workload certificates of one mesh CA for the Envoys (issued by `koguma-cp
generate workload-certificate`), with the TLS contexts Kuma gives Envoy."""
import subprocess
from pathlib import Path

from procs import Proc, http_status, wait_until

MESH = """type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: builtin
---
type: MeshTrafficPermission
mesh: default
name: allow-all
spec:
  targetRef: {kind: Mesh}
  from:
  - targetRef: {kind: Mesh}
    default: {action: Allow}
"""


def cli(bins, *args, stdin=None):
    return subprocess.run([str(bins / "koguma-cp"), *args], input=stdin, check=True, capture_output=True).stdout


def cp(bins, work, name, ip, extra, api_port=5681, dp_port=5678):
    data = work / name
    return Proc(name, [str(bins / "koguma-cp"), "run", "--store", "memory", "--data-dir", str(data),
                       "--api-address", f"{ip}:{api_port}", "--dp-server-address", f"{ip}:{dp_port}", *extra], work)


def certificates(bins: Path, work: Path):
    """Workload certificates of one mesh CA for the Envoys: a short-lived
    standalone koguma-cp with mTLS on issues them."""
    out = work / "certs"
    out.mkdir(exist_ok=True)
    issuer = cp(bins, work, "cert-cp", "127.0.0.45", [])
    try:
        api = "http://127.0.0.45:5681"
        wait_until("cert CP", lambda: http_status(api + "/")[0] == 200, 20, [issuer])
        cli(bins, "apply", "-f", "-", "--api-url", api, stdin=MESH.encode())
        for service in ("client", "app"):
            cli(bins, "generate", "workload-certificate", "--service", service, "--valid-for", "24h",
                "--cert-file", str(out / f"{service}.crt"), "--key-file", str(out / f"{service}.key"),
                "--ca-file", str(out / "ca.crt"), "--api-url", api)
    finally:
        issuer.stop()
    return out


def _common(certs, service, san_matcher, alpn):
    ctx = {"tls_params": {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"},
           "tls_certificates": [{"certificate_chain": {"filename": str(certs / f"{service}.crt")},
                                 "private_key": {"filename": str(certs / f"{service}.key")}}],
           "validation_context": {"trusted_ca": {"filename": str(certs / "ca.crt")},
                                  "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": san_matcher}]}}
    if alpn:
        ctx["alpn_protocols"] = alpn
    return {"common_tls_context": ctx}


def upstream_tls(certs, sni=None):
    """What Kuma gives an outbound cluster: the client's certificate, ALPN
    `kuma`, the server checked to be `app` of the mesh."""
    ctx = _common(certs, "client", {"exact": "spiffe://default/app"}, ["kuma"])
    if sni:
        ctx["sni"] = sni
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", **ctx}}


def downstream_tls(certs):
    """What Kuma gives an inbound listener: the app's certificate, a client
    certificate of the mesh required, no ALPN of its own."""
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": True, **_common(certs, "app", {"prefix": "spiffe://default/"}, None)}}
