//! A `koguma-dp run` process, and Dataplane YAML to give it.

use std::fmt::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::cp::ControlPlane;
use crate::process::Process;
use crate::{TestNet, binaries, client, eventually};

/// A Dataplane resource, written as a user would.
#[derive(Clone)]
pub struct DataplaneYaml {
    pub name: String,
    pub address: IpAddr,
    inbounds: Vec<(u16, u16, String, String)>,
    outbounds: Vec<(IpAddr, u16, String)>,
    /// Tags every inbound carries besides service and protocol.
    tags: Vec<(String, String)>,
}

impl DataplaneYaml {
    pub fn new(name: &str, address: IpAddr) -> Self {
        DataplaneYaml {
            name: name.into(),
            address,
            inbounds: vec![],
            outbounds: vec![],
            tags: vec![],
        }
    }

    /// A tag every inbound carries (`version: v2`).
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }

    /// Listens on `address:port`, forwards to the app on `address:service_port`.
    pub fn inbound(mut self, port: u16, service_port: u16, service: &str, protocol: &str) -> Self {
        self.inbounds
            .push((port, service_port, service.into(), protocol.into()));
        self
    }

    pub fn outbound(mut self, address: IpAddr, port: u16, service: &str) -> Self {
        self.outbounds.push((address, port, service.into()));
        self
    }

    pub fn to_yaml(&self) -> String {
        let mut y = format!(
            "type: Dataplane\nmesh: default\nname: {}\nnetworking:\n  address: {}\n  inbound:\n",
            self.name, self.address
        );
        for (port, sport, service, proto) in &self.inbounds {
            let _ = write!(
                y,
                "  - port: {port}\n    servicePort: {sport}\n    tags:\n      kuma.io/service: {service}\n      kuma.io/protocol: {proto}\n"
            );
            for (k, v) in &self.tags {
                let _ = writeln!(y, "      {k}: {v}");
            }
        }
        if !self.outbounds.is_empty() {
            y.push_str("  outbound:\n");
            for (addr, port, service) in &self.outbounds {
                let _ = write!(
                    y,
                    "  - address: {addr}\n    port: {port}\n    tags:\n      kuma.io/service: {service}\n"
                );
            }
        }
        y
    }
}

/// Give this among `start_with`'s args to start an agent without a token.
pub const NO_TOKEN: &str = "<no token>";

pub struct Dataplane {
    pub name: String,
    pub admin_port: u16,
    process: Process,
}

impl Dataplane {
    /// Starts koguma-dp registering `yaml` as a template.
    pub fn start(cp: &ControlPlane, dp: &DataplaneYaml, dir: &Path) -> Dataplane {
        let file = dir.join(format!("{}.yaml", dp.name));
        std::fs::write(&file, dp.to_yaml()).expect("write dataplane file");
        let mut args = vec!["--dataplane-file".to_string(), file.display().to_string()];
        args.extend(["--drain-time".into(), "5s".into()]);
        Self::start_with(cp, &dp.name, &args, dir)
    }

    pub fn start_with(cp: &ControlPlane, name: &str, args: &[String], dir: &Path) -> Dataplane {
        let n_args = args.len();
        let admin_port = TestNet::free_port();
        let mut cmd = Command::new(binaries::path("koguma-dp"));
        cmd.arg("run");
        // The test may name several instances of the control plane.
        if !args.iter().any(|a| a == "--cp-address") {
            cmd.args(["--cp-address", &cp.dp_url()]);
        }
        if !args.iter().any(|a| a == "--ca-cert-file") {
            cmd.arg("--ca-cert-file").arg(cp.ca_file());
        }
        // Every agent proves who it is, as users run it, unless the test
        // brings its own token (or deliberately none: NO_TOKEN).
        let args: Vec<&String> = args.iter().filter(|a| *a != NO_TOKEN).collect();
        let no_token = args.len() < n_args;
        if !no_token && !args.iter().any(|a| *a == "--dataplane-token-file") {
            let token = cp.token_file(name, &[], dir, &format!("{name}.token"));
            cmd.arg("--dataplane-token-file").arg(token);
        }
        cmd.args([
            "--admin-port",
            &admin_port.to_string(),
            "--concurrency",
            "1",
        ])
        .args(args);
        let process = Process::spawn(&format!("koguma-dp-{name}"), cmd, dir);
        Dataplane {
            name: name.to_string(),
            admin_port,
            process,
        }
    }

    fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    pub async fn ready_status(&self) -> Option<u16> {
        client::get(&self.admin("/ready"))
            .await
            .ok()
            .map(|r| r.status)
    }

    pub async fn wait_ready(&self) {
        eventually(
            &format!("{} to be ready", self.name),
            Duration::from_secs(20),
            || async { (self.ready_status().await == Some(200)).then_some(()) },
        )
        .await;
    }

    pub async fn config_dump(&self) -> Value {
        let r = client::get(&self.admin("/config_dump"))
            .await
            .expect("config_dump");
        serde_json::from_slice(&r.body).expect("config_dump JSON")
    }

    pub async fn metrics(&self) -> String {
        let r = client::get(&self.admin("/metrics")).await.expect("metrics");
        String::from_utf8_lossy(&r.body).into_owned()
    }

    /// The value of the series `name{labels}` exactly as written, or 0.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The sum of every series of metric `name`, whatever its labels.
    pub async fn metric_sum(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
            .sum()
    }

    /// The agent's /certs: its workload certificate in force.
    pub async fn cert(&self) -> Option<Value> {
        let r = client::get(&self.admin("/certs")).await.ok()?;
        let v: Value = serde_json::from_slice(&r.body).ok()?;
        v["certificates"].get(0).cloned()
    }

    /// Waits until the dataplane's outbound `listener` has `n` endpoints.
    pub async fn wait_endpoints(&self, listener: &str, n: usize) {
        eventually(
            &format!("{} to see {n} endpoints on {listener}", self.name),
            Duration::from_secs(10),
            || async {
                let dump = self.config_dump().await;
                let outbounds = dump["config"]["outbounds"].as_array()?.clone();
                let o = outbounds.iter().find(|o| o["name"] == listener)?;
                (o["endpoints"].as_array()?.len() == n).then_some(())
            },
        )
        .await;
    }

    /// SIGKILL: the agent vanishes without telling anyone.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    pub fn sigterm(&self) {
        self.process.signal(Signal::SIGTERM);
    }

    /// Waits until the config dump shows `probe` (the CP pushed what was
    /// applied and the agent took it).
    pub async fn wait_config(&self, probe: &str) {
        crate::eventually(
            &format!("{}'s config to carry {probe}", self.name),
            Duration::from_secs(10),
            || async {
                self.config_dump()
                    .await
                    .to_string()
                    .contains(probe)
                    .then_some(())
            },
        )
        .await;
    }

    /// SIGHUP: access log files are reopened.
    pub fn sighup(&self) {
        self.process.signal(Signal::SIGHUP);
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait(timeout).await
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}
