//! Transparent proxying and `.mesh` DNS on hosts of their own: four network
//! namespaces on a bridge (the CP; web and backend, each with an application
//! and a koguma-dp under installed iptables rules; an outside host with a
//! DNS server and a web server that are not in the mesh). Applications run
//! as an ordinary UID and call names, never the proxy.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use koguma_e2e::binaries;
use koguma_e2e::netns::{Lan, Netns, root_or_skip};
use koguma_e2e::process::Process;

/// The UID the rules exclude: koguma-dp runs as it.
const DP_UID: u32 = 5678;
/// An application user.
const APP_UID: u32 = 1000;
const CP: usize = 0;
const WEB: usize = 1;
const BACKEND: usize = 2;
const OUTSIDE: usize = 3;

fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `curl` as the application user: (status code, body); code 0 when no
/// HTTP answer came.
fn curl(ns: &Netns, url: &str) -> (u16, String) {
    let out = ns.output_as(
        Some(APP_UID),
        &["curl", "-s", "-m", "5", "-w", "\n%{http_code}", url],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn dig(ns: &Netns, args: &[&str]) -> String {
    let mut all = vec!["dig", "+short", "+time=3", "+tries=1"];
    all.extend_from_slice(args);
    let out = ns.output_as(Some(APP_UID), &all);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The sum of the series of `name` whose labels contain `label`.
fn metric(ns: &Netns, name: &str, label: &str) -> f64 {
    let text = ns.run(&["curl", "-s", "http://127.0.0.1:9901/metrics"]);
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

struct Mesh {
    procs: Vec<Process>,
    dir: tempfile::TempDir,
    // Last: namespaces go once every process in them is gone.
    lan: Lan,
}

impl Mesh {
    fn cp_url(&self) -> String {
        format!("http://{}:5681", self.lan.addr(CP))
    }

    fn spawn(&mut self, name: &str, cmd: Command) {
        let p = Process::spawn(name, cmd, self.dir.path());
        self.procs.push(p);
    }

    fn cli(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut cmd = self.lan.ns(CP).command(binaries::path("koguma-cp"), None);
        // The CP listens on its LAN address, not loopback: the CLI is not a
        // local admin there, and uses the admin token the CP keeps.
        let admin_token = self.dir.path().join("cp-data/admin-user-token");
        cmd.args(args)
            .args(["--api-url", &self.cp_url()])
            .arg("--api-token-file")
            .arg(admin_token);
        let out = match stdin {
            Some(input) => {
                let path = self.dir.path().join("stdin.yaml");
                std::fs::write(&path, input).expect("write resource");
                cmd.stdin(std::fs::File::open(&path).expect("open resource"));
                cmd.output()
            }
            None => cmd.output(),
        }
        .expect("run koguma-cp");
        assert!(
            out.status.success(),
            "koguma-cp {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, yaml: &str) {
        self.cli(&["apply", "-f", "-"], Some(yaml));
    }

    fn start_cp(&mut self) {
        let ip = self.lan.addr(CP);
        let mut cmd = self.lan.ns(CP).command(binaries::path("koguma-cp"), None);
        cmd.args(["run", "--data-dir"])
            .arg(self.dir.path().join("cp-data"))
            .args(["--api-address", &format!("{ip}:5681")])
            .args(["--dp-server-address", &format!("{ip}:5678")]);
        self.spawn("koguma-cp", cmd);
        let url = format!("{}/", self.cp_url());
        wait_for("the CP API", Duration::from_secs(20), || {
            curl_root_ok(self.lan.ns(CP), &url).then_some(())
        });
        // The agents run as another user: they get their own copy of the
        // CA certificate, not the CP's data directory.
        std::fs::copy(
            self.dir.path().join("cp-data/tls/ca.crt"),
            self.dir.path().join("ca.crt"),
        )
        .expect("copy the CP's CA certificate");
    }

    /// The outside host: a nameserver answering outside.test, and a web
    /// server on :8000, neither in the mesh.
    fn start_outside(&mut self) {
        let ns = self.lan.ns(OUTSIDE);
        let ip = self.lan.addr(OUTSIDE);
        let mut dns = ns.command("dnsmasq", None);
        dns.args([
            "-k",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            "--pid-file=",
        ])
        .arg(format!("--listen-address={ip}"))
        .arg(format!("--address=/outside.test/{ip}"));
        let root = self.dir.path().join("outside-www");
        std::fs::create_dir_all(&root).expect("www dir");
        std::fs::write(root.join("index.html"), "outside\n").expect("index");
        let www = python_server(ns, 8000, &root);
        self.spawn("dnsmasq", dns);
        self.spawn("outside-www", www);
    }

    /// An application on :8080 (and an undeclared one on :9000), the rules,
    /// and koguma-dp as DP_UID with the Dataplane `name` of `service`.
    fn start_host(&mut self, host: usize, name: &str, service: &str) {
        let ns_name = self.lan.ns(host).name.clone();
        let ip = self.lan.addr(host);
        let ns = self.lan.ns(host);
        ns.set_resolv_conf(&format!("nameserver {}\n", self.lan.addr(OUTSIDE)));
        ns.run(&[
            binaries::path("koguma-dp").to_str().expect("path"),
            "install",
            "transparent-proxy",
            "--redirect-dns",
        ]);
        let root = self.dir.path().join(format!("{name}-www"));
        std::fs::create_dir_all(&root).expect("www dir");
        std::fs::write(root.join("index.html"), format!("{service}\n")).expect("index");
        let app = python_server(ns, 8080, &root);
        let other = python_server(ns, 9000, &root);
        let yaml = format!(
            "type: Dataplane\nmesh: default\nname: {name}\nnetworking:\n  address: {ip}\n  inbound:\n  - port: 8080\n    tags:\n      kuma.io/service: {service}\n      kuma.io/protocol: http\n  transparentProxying:\n    redirectPortInbound: 15006\n    redirectPortOutbound: 15001\n"
        );
        let dp_file = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&dp_file, yaml).expect("dataplane file");
        let token = self.cli(&["generate", "dataplane-token", "--name", name], None);
        let token_file = self.dir.path().join(format!("{name}.token"));
        std::fs::write(&token_file, token).expect("token file");
        let mut agent = ns.command(binaries::path("koguma-dp"), Some(DP_UID));
        agent
            .args(["run", "--transparent-proxy", "--cp-address"])
            .arg(format!("https://{}:5678", self.lan.addr(CP)))
            .arg("--ca-cert-file")
            .arg(self.dir.path().join("ca.crt"))
            .arg("--dataplane-file")
            .arg(&dp_file)
            .arg("--dataplane-token-file")
            .arg(&token_file);
        self.spawn(&format!("{name}-app"), app);
        self.spawn(&format!("{name}-other-app"), other);
        self.spawn(&format!("{name}-dp"), agent);
        let ns = self.lan.ns(host);
        wait_for(
            &format!("{ns_name}'s koguma-dp /ready"),
            Duration::from_secs(30),
            || curl_root_ok(ns, "http://127.0.0.1:9901/ready").then_some(()),
        );
    }
}

fn curl_root_ok(ns: &Netns, url: &str) -> bool {
    ns.output_as(None, &["curl", "-sf", "-m", "2", "-o", "/dev/null", url])
        .status
        .success()
}

fn python_server(ns: &Netns, port: u16, root: &Path) -> Command {
    let mut cmd = ns.command("python3", None);
    cmd.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "0.0.0.0",
        "--directory",
    ])
    .arg(root);
    cmd
}

fn world_readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn mesh() -> Mesh {
    let dir = tempfile::tempdir().expect("temp dir");
    world_readable(dir.path());
    let mut m = Mesh {
        procs: Vec::new(),
        dir,
        lan: Lan::new(&["cp", "web", "be", "out"]),
    };
    m.start_cp();
    m.start_outside();
    m.start_host(BACKEND, "backend-1", "backend");
    m.start_host(WEB, "web-1", "web");
    m
}

/// The VIP web's DNS gives backend.mesh, once backend is known to it.
fn backend_vip(m: &Mesh) -> String {
    let web = m.lan.ns(WEB);
    wait_for(
        "backend.mesh to resolve on web's host",
        Duration::from_secs(15),
        || {
            let a = dig(web, &["@127.0.0.1", "-p", "15053", "backend.mesh"]);
            a.starts_with("240.").then_some(a)
        },
    )
}

#[test]
fn applications_call_mesh_names_through_both_proxies() {
    if !root_or_skip("applications_call_mesh_names_through_both_proxies") {
        return;
    }
    let mut m = mesh();
    let vip = backend_vip(&m);
    let (web, backend) = (m.lan.ns(WEB), m.lan.ns(BACKEND));

    // DNS: the agent's own server, the same through the redirect of the
    // host's nameserver, and names outside the mesh from that nameserver.
    assert_eq!(
        dig(web, &["backend.mesh"]),
        vip,
        "plain dig goes through the DNS redirect"
    );
    assert_eq!(
        dig(web, &["@127.0.0.1", "-p", "15053", "backend.mesh", "AAAA"]),
        format!("::ffff:{vip}")
    );
    assert_eq!(dig(web, &["outside.test"]), m.lan.addr(OUTSIDE).to_string());
    assert!(metric(web, "kuma_dp_dns_queries_total", "source=\"local\"") >= 2.0);
    assert!(metric(web, "kuma_dp_dns_queries_total", "source=\"upstream\"") >= 1.0);

    // Port 80 of the VIP and the service's own port both reach backend,
    // through web's outbound and backend's inbound.
    let before_out = metric(
        web,
        "envoy_cluster_upstream_rq_total",
        "envoy_cluster_name=\"backend\"",
    );
    let before_in = metric(backend, "envoy_http_downstream_rq_total", "localhost_8080");
    assert_eq!(curl(web, "http://backend.mesh/"), (200, "backend\n".into()));
    assert_eq!(
        curl(web, "http://backend.mesh:8080/"),
        (200, "backend\n".into())
    );
    assert_eq!(
        metric(
            web,
            "envoy_cluster_upstream_rq_total",
            "envoy_cluster_name=\"backend\""
        ) - before_out,
        2.0
    );
    assert_eq!(
        metric(backend, "envoy_http_downstream_rq_total", "localhost_8080") - before_in,
        2.0
    );

    // Outside the mesh: passed through, counted as Kuma's passthrough.
    let outside = format!("http://{}:8000/", m.lan.addr(OUTSIDE));
    assert_eq!(curl(web, &outside), (200, "outside\n".into()));
    assert!(
        metric(
            web,
            "envoy_cluster_upstream_cx_total",
            "outbound_passthrough_ipv4"
        ) >= 1.0
    );
    // MeshAccessLog covers passthrough connections: Kuma's TCP format, with
    // `external` for the destination. The agent runs as its own user: the
    // log directory is writable by it.
    let logs = m.dir.path().join("logs");
    std::fs::create_dir(&logs).expect("log dir");
    std::fs::set_permissions(&logs, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let log = logs.join("passthrough.log");
    m.apply(&format!("type: MeshAccessLog\nmesh: default\nname: everything\nspec:\n  to:\n  - targetRef:\n      kind: Mesh\n    default:\n      backends:\n      - type: File\n        file:\n          path: {}\n", log.display()));
    let outside_addr = format!("{}:8000", m.lan.addr(OUTSIDE));
    let line = wait_for(
        "a passthrough connection in web's access log",
        Duration::from_secs(15),
        || {
            let _ = curl(web, &outside);
            let text = std::fs::read_to_string(&log).ok()?;
            text.lines()
                .find(|l| l.contains("(external)"))
                .map(str::to_string)
        },
    );
    println!("passthrough, Kuma's default TCP format:\n{line}");
    assert!(
        line.contains(&format!("(web)->{outside_addr}(external) took ")),
        "{line}"
    );
    // A port no inbound declares on backend's host passes through too (no mTLS yet).
    let undeclared = format!("http://{}:9000/", m.lan.addr(BACKEND));
    assert_eq!(curl(web, &undeclared), (200, "backend\n".into()));
    assert!(
        metric(
            backend,
            "envoy_cluster_upstream_cx_total",
            "inbound_passthrough_ipv4"
        ) >= 1.0
    );
    // An application talking to its own loopback is left alone.
    assert_eq!(curl(web, "http://127.0.0.1:8080/"), (200, "web\n".into()));

    // Mesh mTLS, Strict: names still work, now over mTLS; the undeclared
    // port is refused.
    m.apply("type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n");
    m.apply("type: MeshTrafficPermission\nmesh: default\nname: allow-all\nspec:\n  targetRef:\n    kind: Mesh\n  from:\n  - targetRef:\n      kind: Mesh\n    default:\n      action: Allow\n");
    wait_for(
        "backend's certificate-secured inbound to answer web",
        Duration::from_secs(20),
        || {
            let handshakes = metric(backend, "envoy_listener_ssl_handshake", "10_77_0_3_8080");
            (curl(web, "http://backend.mesh/") == (200, "backend\n".into()) && handshakes >= 1.0)
                .then_some(())
        },
    );
    assert_eq!(curl(web, "http://backend.mesh:8080/").0, 200);
    assert!(metric(backend, "envoy_rbac_allowed", "10_77_0_3_8080") >= 2.0);
    assert_eq!(
        curl(web, &undeclared).0,
        0,
        "Strict mTLS refuses ports no inbound declares"
    );

    // Reachable services: with allow-all, web may call web too and has its
    // name. Allowed to call backend alone, it loses web.mesh (no name, no
    // VIP listener, nothing for the service in its config) and keeps backend.
    let own = ["@127.0.0.1", "-p", "15053", "web.mesh"];
    assert!(
        dig(web, &own).starts_with("240."),
        "web.mesh before: {}",
        dig(web, &own)
    );
    m.apply("type: MeshTrafficPermission\nmesh: default\nname: backend-from-web\nspec:\n  targetRef:\n    kind: MeshService\n    name: backend\n  from:\n  - targetRef:\n      kind: MeshService\n      name: web\n    default:\n      action: Allow\n");
    m.cli(
        &[
            "delete",
            "meshtrafficpermission",
            "allow-all",
            "--mesh",
            "default",
        ],
        None,
    );
    wait_for(
        "web.mesh to be trimmed from web's names",
        Duration::from_secs(15),
        || dig(web, &own).is_empty().then_some(()),
    );
    let dump = web.output_as(None, &["curl", "-s", "http://127.0.0.1:9901/config_dump"]);
    let dump: serde_json::Value = serde_json::from_slice(&dump.stdout).expect("config_dump JSON");
    let services: Vec<&str> = dump["config"]["outbounds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["service"].as_str())
        .collect();
    assert!(
        !services.contains(&"web") && services.contains(&"backend"),
        "{services:?}"
    );
    assert_eq!(
        dig(web, &["@127.0.0.1", "-p", "15053", "backend.mesh"]),
        vip
    );
    assert_eq!(curl(web, "http://backend.mesh/"), (200, "backend\n".into()));

    // Passthrough off: outside addresses are refused; the mesh still works.
    m.apply("type: Mesh\nname: default\nnetworking:\n  outbound:\n    passthrough: false\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n");
    wait_for("passthrough to be refused", Duration::from_secs(15), || {
        (curl(web, &outside).0 == 0).then_some(())
    });
    assert_eq!(curl(web, "http://backend.mesh/"), (200, "backend\n".into()));

    // An agent run as a UID the rules do not exclude (root here) would see
    // its own connections come back to it. Reinstalled with the CP's port
    // excluded so that it can get a config at all, it finds out, says so on
    // /ready and refuses to pass anything through.
    let dp = binaries::path("koguma-dp");
    web.run(&[
        dp.to_str().expect("path"),
        "install",
        "transparent-proxy",
        "--redirect-dns",
        "--exclude-outbound-ports",
        "5678",
    ]);
    assert!(web.iptables_state("iptables-save").contains("--dport 5678"));
    if let Some(old) = m.procs.iter_mut().find(|p| p.name == "web-1-dp") {
        old.kill();
    }
    let mut root_agent = m.lan.ns(WEB).command(&dp, None);
    root_agent
        .args(["run", "--transparent-proxy", "--cp-address"])
        .arg(format!("https://{}:5678", m.lan.addr(CP)))
        .arg("--ca-cert-file")
        .arg(m.dir.path().join("ca.crt"))
        .arg("--dataplane-file")
        .arg(m.dir.path().join("web-1.yaml"))
        .arg("--dataplane-token-file")
        .arg(m.dir.path().join("web-1.token"));
    m.spawn("web-1-dp-as-root", root_agent);
    let web = m.lan.ns(WEB);
    wait_for(
        "the root agent to report its own traffic redirected",
        Duration::from_secs(20),
        || {
            let out = web.output_as(None, &["curl", "-s", "http://127.0.0.1:9901/ready"]);
            String::from_utf8_lossy(&out.stdout)
                .contains("NOT_READY: iptables redirects this process's own connections")
                .then_some(())
        },
    );
}
