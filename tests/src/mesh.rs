//! The topology most tests need: a control plane, `web-1` calling the
//! `backend` service through its outbound `<web>:10001`, and backend
//! instances `backend-<i>`, each an app (answering `b<i>`) behind its own
//! sidecar on an address of its own.

use std::net::{IpAddr, SocketAddr};

use crate::dp::DataplaneYaml;
use crate::{ControlPlane, Dataplane, TestNet, apps};

pub struct Backend {
    pub app: apps::Server,
    pub dp: Dataplane,
}

/// A TCP echo service (`echo-1` on host 6) and web's outbound to it.
pub struct Echo {
    pub app: apps::Server,
    pub dp: Dataplane,
    /// web's outbound for echo: `<web>:10002`.
    pub addr: SocketAddr,
    /// echo's sidecar inbound.
    pub inbound: SocketAddr,
}

pub struct WebToBackend {
    pub net: TestNet,
    pub dir: tempfile::TempDir,
    pub cp: ControlPlane,
    pub web: Dataplane,
    pub web_ip: IpAddr,
    pub backends: Vec<Backend>,
}

impl WebToBackend {
    /// Starts everything with `n` backends and waits until web is ready and
    /// sees all of them.
    pub async fn start(n: u8) -> WebToBackend {
        let net = TestNet::new();
        let dir = tempfile::tempdir().expect("temp dir");
        let cp = ControlPlane::start(net.host(0), dir.path()).await;
        let web_ip = net.host(1);
        let web = Dataplane::start(&cp, &Self::web_yaml_for(web_ip), dir.path());
        let mut mesh = WebToBackend {
            net,
            dir,
            cp,
            web,
            web_ip,
            backends: Vec::new(),
        };
        for _ in 0..n {
            mesh.add_backend().await;
        }
        mesh.web.wait_ready().await;
        mesh.web
            .wait_endpoints(&mesh.listener(), usize::from(n))
            .await;
        mesh
    }

    fn web_yaml_for(web_ip: IpAddr) -> DataplaneYaml {
        DataplaneYaml::new("web-1", web_ip)
            .inbound(8080, 18080, "web", "http")
            .outbound(web_ip, 10001, "backend")
    }

    /// web's Dataplane as it was registered, to be changed and re-applied.
    pub fn web_yaml(&self) -> DataplaneYaml {
        Self::web_yaml_for(self.web_ip)
    }

    /// The Dataplane of backend `i` (1-based).
    pub fn backend_yaml(&self, i: u8) -> DataplaneYaml {
        DataplaneYaml::new(&format!("backend-{i}"), self.net.host(1 + i))
            .inbound(8081, 18081, "backend", "http")
    }

    /// Starts the next backend (app and sidecar) without waiting for it.
    pub async fn add_backend(&mut self) -> &Backend {
        let i = self.backends.len() as u8 + 1;
        let app = apps::http(
            SocketAddr::new(self.net.host(1 + i), 18081),
            &format!("b{i}"),
        )
        .await;
        let dp = Dataplane::start(&self.cp, &self.backend_yaml(i), self.dir.path());
        self.backends.push(Backend { app, dp });
        &self.backends[usize::from(i) - 1]
    }

    /// Starts the echo service and gives web an outbound to it, once it is
    /// ready.
    pub async fn add_echo(&self) -> Echo {
        let ip = self.net.host(6);
        let app = apps::tcp_echo(SocketAddr::new(ip, 18082)).await;
        let yaml = DataplaneYaml::new("echo-1", ip).inbound(8082, 18082, "echo", "tcp");
        let dp = Dataplane::start(&self.cp, &yaml, self.dir.path());
        dp.wait_ready().await;
        self.cp
            .apply(
                &self
                    .web_yaml()
                    .outbound(self.web_ip, 10002, "echo")
                    .to_yaml(),
            )
            .await;
        Echo {
            app,
            dp,
            addr: SocketAddr::new(self.web_ip, 10002),
            inbound: SocketAddr::new(ip, 8082),
        }
    }

    /// Applies `yaml` and waits until `dp`'s config shows `probe`.
    pub async fn apply_and_see(&self, dp: &Dataplane, yaml: &str, probe: &str) {
        self.cp.apply(yaml).await;
        dp.wait_config(probe).await;
    }

    /// The name of web's outbound listener for `backend`.
    pub fn listener(&self) -> String {
        format!("outbound:{}:10001", self.web_ip)
    }

    /// A URL through web's outbound for `backend`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}:10001{path}", self.web_ip)
    }
}
