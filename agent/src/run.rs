//! `koguma-dp run`: wire the pieces together, then drain on SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use koguma_forwarder::{Forwarder, Stats, drain};
use koguma_proto::v1::{Node, ProxyType, TransparentProxy};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::admin::AdminServer;
use crate::config_stream::ConfigStream;
use crate::config_stream::ControlPlane;
use crate::dns_proxy::{DnsProxy, DnsSettings};
use crate::identity::WorkloadKeys;
use crate::state::AgentState;
use crate::template;
use koguma_proto::channel as cp_channel;

/// How long peers get to learn that this dataplane is leaving before its
/// listeners stop accepting (a config push takes milliseconds).
const LEAVE_NOTICE: Duration = Duration::from_secs(1);

#[derive(clap::Args)]
pub struct RunArgs {
    /// The control plane's DP server; several instances of one control
    /// plane comma-separated: when one goes away the next is dialled.
    #[arg(
        long,
        default_value = "https://localhost:5678",
        env = "KOGUMA_CONTROL_PLANE_URL"
    )]
    cp_address: String,
    /// CA certificate (PEM) that signed the DP server's certificate.
    #[arg(long, env = "KOGUMA_CONTROL_PLANE_CA_CERT_FILE")]
    ca_cert_file: Option<PathBuf>,
    /// Do not verify the control plane's certificate. Development only.
    #[arg(long)]
    skip_verify: bool,
    /// Dataplane template (YAML or JSON; `-` for stdin), registered on connect.
    #[arg(long, short = 'd', env = "KOGUMA_DATAPLANE_RUNTIME_RESOURCE_PATH")]
    dataplane_file: Option<String>,
    /// key=value for `{{ key }}` in the template.
    #[arg(long = "dataplane-var", short = 'v')]
    dataplane_vars: Vec<String>,
    /// Name of a Dataplane that already exists on the CP (without a template).
    #[arg(long, env = "KOGUMA_DATAPLANE_NAME")]
    name: Option<String>,
    #[arg(long, env = "KOGUMA_DATAPLANE_MESH")]
    mesh: Option<String>,
    /// Dataplane token from `koguma-cp generate dataplane-token`.
    #[arg(long, env = "KOGUMA_DATAPLANE_TOKEN_FILE")]
    dataplane_token_file: Option<PathBuf>,
    /// Admin port on 127.0.0.1 (default: the template's networking.admin.port, else 9901).
    #[arg(long)]
    admin_port: Option<u16>,
    /// How long in-flight connections get to finish after SIGTERM.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, env = "KOGUMA_DATAPLANE_DRAIN_TIME")]
    drain_time: Duration,
    /// Transparent proxying: take the connections iptables redirects (see
    /// `koguma-dp install transparent-proxy`) on the Dataplane's
    /// transparentProxying ports, else 15006 and 15001. Run the agent as
    /// the UID the rules exclude (`--kuma-dp-user`, default 5678).
    #[arg(long, env = "KOGUMA_DATAPLANE_RUNTIME_TRANSPARENT_PROXY")]
    transparent_proxy: bool,
    /// Serve `<service>.mesh` on 127.0.0.1:<dns-port> under transparent proxying.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "KOGUMA_DNS_ENABLED")]
    dns_enabled: bool,
    #[arg(long, default_value_t = 15053, env = "KOGUMA_DNS_PORT")]
    dns_port: u16,
    /// Names outside the mesh go to this file's first nameserver.
    #[arg(
        long,
        default_value = "/etc/resolv.conf",
        env = "KOGUMA_DNS_RESOLV_CONF"
    )]
    resolv_conf: PathBuf,
    /// What this agent is: a sidecar beside an application, or a zone
    /// proxy (its --dataplane-file is then a ZoneIngress or ZoneEgress and
    /// its token a zone token with scope ingress or egress).
    #[arg(long, value_enum, default_value_t = ProxyKind::Dataplane, env = "KOGUMA_DATAPLANE_PROXY_TYPE")]
    proxy_type: ProxyKind,
    /// Worker threads.
    #[arg(
        long,
        default_value_t = 2,
        env = "KOGUMA_DATAPLANE_RUNTIME_CONCURRENCY"
    )]
    pub concurrency: usize,
}

/// Kuma's `--proxy-type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyKind {
    Dataplane,
    Ingress,
    Egress,
}

impl ProxyKind {
    fn resource_type(self) -> &'static str {
        match self {
            ProxyKind::Dataplane => "Dataplane",
            ProxyKind::Ingress => "ZoneIngress",
            ProxyKind::Egress => "ZoneEgress",
        }
    }

    fn wire(self) -> ProxyType {
        match self {
            ProxyKind::Dataplane => ProxyType::Sidecar,
            ProxyKind::Ingress => ProxyType::Ingress,
            ProxyKind::Egress => ProxyType::Egress,
        }
    }
}

fn node(args: &RunArgs) -> anyhow::Result<(Node, Option<u16>)> {
    let version = env!("CARGO_PKG_VERSION").to_string();
    let zone_proxy = args.proxy_type != ProxyKind::Dataplane;
    if zone_proxy && args.dataplane_file.is_none() {
        bail!(
            "--proxy-type {:?} needs --dataplane-file: a {} resource",
            args.proxy_type,
            args.proxy_type.resource_type()
        );
    }
    if zone_proxy && args.transparent_proxy {
        bail!("--transparent-proxy is for sidecars, not zone proxies");
    }
    let Some(file) = &args.dataplane_file else {
        let Some(name) = &args.name else {
            bail!(
                "give --dataplane-file (a Dataplane template), or --name for a Dataplane that exists on the CP"
            );
        };
        let mesh = args.mesh.clone().unwrap_or_else(|| "default".into());
        return Ok((
            Node {
                mesh,
                name: name.clone(),
                dataplane_json: String::new(),
                agent_version: version,
                transparent_proxy: announced_tp(args),
                ..Default::default()
            },
            None,
        ));
    };
    if args.name.is_some() || args.mesh.is_some() {
        bail!(
            "--name and --mesh are taken from the template: do not give them with --dataplane-file"
        );
    }
    let text = koguma_api::read_source(file).with_context(|| {
        let what = if file == "-" {
            "the template from stdin".to_string()
        } else {
            format!("--dataplane-file {file}")
        };
        format!("cannot read {what}")
    })?;
    let vars = template::parse_vars(&args.dataplane_vars)?;
    let t = template::load(&text, &vars, args.proxy_type.resource_type())?;
    let (dataplane_json, zone_proxy_json) = if zone_proxy {
        (String::new(), t.json)
    } else {
        (t.json, String::new())
    };
    let mut node = Node {
        mesh: t.mesh,
        name: t.name,
        dataplane_json,
        agent_version: version,
        transparent_proxy: announced_tp(args),
        zone_proxy_json,
        ..Default::default()
    };
    node.set_proxy_type(args.proxy_type.wire());
    Ok((node, t.admin_port))
}

/// `--transparent-proxy` tells the CP that this dataplane runs under the
/// rules; the ports (0 here) come from the Dataplane or Kuma's defaults.
fn announced_tp(args: &RunArgs) -> Option<TransparentProxy> {
    args.transparent_proxy.then_some(TransparentProxy {
        redirect_port_inbound: 0,
        redirect_port_outbound: 0,
        ipv6: true,
        passthrough: false,
    })
}

/// SIGTERM and SIGINT, either of which asks the agent to stop.
struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    fn new() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let (node, template_admin_port) = node(&args)?;
    let mut control_planes = Vec::new();
    for address in args.cp_address.split(',').map(str::trim) {
        let cp = cp_channel::parse_address(address, 5678).context("--cp-address")?;
        let channel = cp_channel::connect(&cp, args.ca_cert_file.as_deref(), args.skip_verify)
            .context("the channel to the control plane (--ca-cert-file, --skip-verify)")?;
        control_planes.push(ControlPlane {
            address: address.to_string(),
            channel,
        });
    }
    let mut signals = StopSignals::new().context("cannot install signal handlers")?;
    // SIGHUP: access log files are reopened (after logrotate moved them).
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reopening access log files");
            koguma_forwarder::access_log::reopen_files();
        }
    });
    let token = match &args.dataplane_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --dataplane-token-file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let keys = Arc::new(WorkloadKeys::new()?);

    let stats = Arc::new(Stats::default());
    let (drain_trigger, drain_watch) = drain::channel();
    let forwarder = Arc::new(Forwarder::new(stats.clone(), drain_watch));
    let state = Arc::new(AgentState::default());
    let dns = Arc::new(DnsProxy::new(DnsSettings {
        enabled: args.dns_enabled,
        port: args.dns_port,
        resolv_conf: args.resolv_conf.clone(),
    }));

    let admin_port = args
        .admin_port
        .or(template_admin_port)
        .unwrap_or(koguma_api::DEFAULT_ADMIN_PORT);
    let admin_addr = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let admin_listener = AdminServer::bind(admin_addr).await?;
    tokio::spawn(
        Arc::new(AdminServer {
            state: state.clone(),
            stats,
            dns: dns.clone(),
        })
        .serve(admin_listener),
    );

    let (leaving_tx, leaving) = watch::channel(false);
    tracing::info!(mesh = %node.mesh, dataplane = %node.name, cp = %args.cp_address, admin = %admin_addr, "koguma-dp starting");
    let stream = ConfigStream {
        control_planes,
        current: 0,
        node,
        forwarder: forwarder.clone(),
        state: state.clone(),
        leaving,
        keys,
        token,
        dns,
        own_traffic_checked: AtomicBool::new(false),
        in_force: std::sync::Mutex::new(None),
    };
    let stream_task = tokio::spawn(stream.run());

    tokio::select! {
        result = stream_task => {
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(anyhow::anyhow!("config stream task failed: {e}")),
            };
        }
        _ = signals.next() => {}
    }

    tracing::info!(drain_time = ?args.drain_time, "draining: readiness fails, peers are told, then listeners stop");
    state.set_terminating();
    let _ = leaving_tx.send(true);
    let drain = async {
        let notice = LEAVE_NOTICE.min(args.drain_time);
        tokio::time::sleep(notice).await;
        forwarder.begin_drain();
        drain_trigger
            .drain(args.drain_time.saturating_sub(notice))
            .await
    };
    tokio::select! {
        finished = drain => {
            if finished {
                tracing::info!("drained: all connections finished");
            } else {
                tracing::warn!("drain time is over: closing the connections still open");
            }
        }
        _ = signals.next() => tracing::warn!("second signal: exiting without waiting for connections"),
    }
    Ok(())
}
