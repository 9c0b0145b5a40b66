//! `koguma-cp run`: the store, the REST API, the DP server and, in
//! multi-zone, the sync with the global (a zone) or with every zone (the
//! global).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tonic::transport::Server;

use crate::api_server::{self, ApiState};
use crate::dp_server::status::StatusRegistry;
use crate::dp_server::{
    DataplaneDiscoveryServer, DpAuth, DpServer, DpService, GlobalRefusesDataplanes,
};
use crate::kds::{
    self, LocalState,
    global::GlobalSync,
    global::MultizoneSyncServer,
    insights::{RemoteInsights, ZoneInsights},
    zone::ZoneSyncConfig,
};
use crate::mesh_ca::MeshCas;
use crate::proxy_config;
use crate::resources::Resources;
use crate::role::Role;
use crate::store::StoreArgs;
use crate::tls;
use futures::FutureExt;

/// Kuma's `KUMA_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Serves dataplanes; standalone unless --global-address is given.
    Zone,
    /// Owns meshes and policies for every zone; serves no dataplanes.
    Global,
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[arg(long, value_enum, default_value = "zone", env = "KUMA_MODE")]
    mode: Mode,
    /// This zone's name (zone mode, with --global-address).
    #[arg(long, env = "KUMA_MULTIZONE_ZONE_NAME")]
    zone: Option<String>,
    /// The global's sync address, grpcs://HOST:5685 (zone mode).
    #[arg(long, env = "KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS")]
    global_address: Option<String>,
    /// The CA that signed the global's certificate (its data dir's tls/ca.crt).
    #[arg(long, env = "KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE")]
    global_ca_file: Option<PathBuf>,
    /// Do not verify the global's certificate. Development only.
    #[arg(long, env = "KUMA_MULTIZONE_ZONE_KDS_TLS_SKIP_VERIFY")]
    skip_verify: bool,
    /// A token from `koguma-cp generate zone-token --zone NAME` on the global.
    #[arg(long, env = "KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_PATH")]
    zone_token_file: Option<PathBuf>,
    /// Where the global serves the sync with its zones (TLS).
    #[arg(long, default_value = "0.0.0.0:5685", env = "KOGUMA_KDS_ADDRESS")]
    kds_address: SocketAddr,
    /// Where the store and the DP server's CA live.
    #[arg(long, default_value = "./koguma-data", env = "KOGUMA_DATA_DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    /// How often an instance on a shared store reads it whole, besides
    /// following its change feed (a safety net for a lost notification).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, env = "KOGUMA_STORE_RESYNC_INTERVAL")]
    store_resync_interval: Duration,
    /// REST API (plain HTTP). Off loopback, callers need user tokens to
    /// change anything, and those cross the network unencrypted.
    #[arg(long, default_value = "127.0.0.1:5681", env = "KOGUMA_API_ADDRESS")]
    api_address: SocketAddr,
    /// Callers on this host are admins (Kuma's localhostIsAdmin). Turn it
    /// off when a proxy on this host forwards others' requests.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "KUMA_API_SERVER_AUTHN_LOCALHOST_IS_ADMIN")]
    api_localhost_is_admin: bool,
    /// A host name the REST API answers to besides IP addresses and
    /// localhost (repeat for more): others are refused (DNS rebinding).
    #[arg(
        long = "api-allowed-host",
        value_delimiter = ',',
        env = "KOGUMA_API_ALLOWED_HOSTS"
    )]
    api_allowed_hosts: Vec<String>,
    /// Dataplane server (gRPC over TLS).
    #[arg(long, default_value = "0.0.0.0:5678", env = "KOGUMA_DP_SERVER_ADDRESS")]
    dp_server_address: SocketAddr,
    /// Certificate (PEM) for the DP server instead of the generated one.
    #[arg(long)]
    tls_cert_file: Option<PathBuf>,
    #[arg(long)]
    tls_key_file: Option<PathBuf>,
    /// How long an agent-registered dataplane outlives its stream.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    dp_deregistration_delay: Duration,
    /// How dataplanes prove who they are. `none` lets any agent register
    /// any dataplane: for local experiments only.
    #[arg(long, value_enum, default_value = "dp-token", env = "KOGUMA_DP_AUTH")]
    dp_auth: DpAuth,
    /// How long a change waits for more before dataplane configs are
    /// recomputed: a burst of registrations costs one recomputation.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration, env = "KOGUMA_CONFIG_BATCH_WINDOW")]
    config_batch_window: Duration,
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the {what}"))
}

async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

fn role(args: &RunArgs) -> anyhow::Result<Role> {
    match (args.mode, &args.global_address, &args.zone) {
        (Mode::Global, Some(_), _) => {
            anyhow::bail!("--global-address is for zone control planes: a global has none")
        }
        (Mode::Global, None, _) => Ok(Role::Global),
        (Mode::Zone, Some(_), Some(zone)) => {
            let mut errs = koguma_api::ValidationError::default();
            koguma_api::validate_name("--zone", zone, &mut errs);
            errs.into_result()?;
            Ok(Role::Zone(zone.clone()))
        }
        (Mode::Zone, Some(_), None) => {
            anyhow::bail!("--zone NAME is required with --global-address")
        }
        (Mode::Zone, None, _) => Ok(Role::Standalone),
    }
}

fn instance_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "koguma-cp".into());
    format!("{host}-{}", std::process::id())
}

/// The DP server CA of every instance on this store: the first instance's,
/// or this one's when it is the first.
async fn share_dp_server_ca(
    resources: &Resources,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let local = tls::read_ca(data_dir)?;
    let stored = resources
        .secrets_or_insert(
            "",
            &["koguma-dp-server-ca-cert", "koguma-dp-server-ca-key"],
            || -> anyhow::Result<Vec<String>> {
                let (cert, key) = match local {
                    Some(pair) => pair,
                    None => tls::new_ca()?,
                };
                Ok(vec![cert, key])
            },
        )
        .await?;
    let [cert, key]: [String; 2] = stored
        .try_into()
        .map_err(|_| anyhow::anyhow!("the store returned no DP server CA"))?;
    tls::install_ca(data_dir, &cert, &key)?;
    Ok(())
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let role = role(&args)?;
    let instance_id = instance_id();
    let store = args
        .store
        .open(&args.data_dir, &instance_id)
        .await
        .context("the store")?;
    let resources = Arc::new(Resources::open(store, role.clone(), &instance_id).await?);
    tokio::spawn(resources.clone().follow(args.store_resync_interval));
    tokio::spawn(crate::instances::run(
        resources.clone(),
        args.dp_deregistration_delay,
    ));
    // A zone checks user tokens with its global's key; it makes none.
    if role.zone_name().is_none() {
        crate::tokens::user::ensure_admin_token(&resources, &args.data_dir).await?;
    }
    // Instances on a shared store share the DP server's CA through it, so
    // that agents trust whichever instance they reach.
    if resources.leadership().is_some() && args.tls_cert_file.is_none() {
        share_dp_server_ca(&resources, &args.data_dir).await?;
    }
    let identity = tls::prepare(
        &args.data_dir,
        args.tls_cert_file.as_deref(),
        args.tls_key_file.as_deref(),
        &[args.dp_server_address.ip(), args.kds_address.ip()],
    )?;
    let status = Arc::new(StatusRegistry::default());
    let cas = Arc::new(MeshCas::new(resources.clone(), role.zone_name().is_none()));
    let zone_insights = Arc::new(ZoneInsights::default());
    let interests = Arc::new(proxy_config::Interests::default());
    let snapshots = proxy_config::publish(
        resources.subscribe(),
        args.config_batch_window,
        interests.clone(),
    );
    let dp_server = DpServer::new(
        resources.clone(),
        snapshots.clone(),
        interests,
        status.clone(),
        cas.clone(),
        args.dp_auth,
        args.dp_deregistration_delay,
    );
    if args.dp_auth == DpAuth::None {
        tracing::warn!(
            "--dp-auth none: any agent can register as any dataplane; use it for local experiments only"
        );
    }

    let api_listener = bind(args.api_address, "REST API").await?;
    let dp_listener = bind(args.dp_server_address, "DP server").await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    if role != Role::Global {
        tokio::spawn(crate::available_services::run(resources.clone()));
    }
    let remote_insights = Arc::new(RemoteInsights::default());
    let local = Arc::new(LocalState {
        resources: resources.clone(),
        cas: cas.clone(),
        status: status.clone(),
        remote_insights: remote_insights.clone(),
    });
    let kds_listener = match role {
        Role::Global => Some(bind(args.kds_address, "multi-zone sync (KDS)").await?),
        _ => None,
    };

    if !args.api_address.ip().is_loopback() {
        // Not refused: changes need tokens either way. Said loudly, since
        // anyone who can reach it reads every resource, and tokens sent to
        // it travel in clear text.
        tracing::warn!(
            api = %args.api_address,
            "the REST API listens off loopback over plain HTTP: anyone who can reach it can read every resource, and user tokens cross the network unencrypted. Keep it on 127.0.0.1 and tunnel, or put a TLS proxy in front"
        );
    }
    let auth = api_server::auth::ApiAuth {
        localhost_is_admin: args.api_localhost_is_admin,
        allowed_hosts: args
            .api_allowed_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect(),
    };
    let api = axum::serve(
        api_listener,
        api_server::router(ApiState {
            resources: resources.clone(),
            status: status.clone(),
            cas: cas.clone(),
            snapshots,
            zones: zone_insights.clone(),
            remote_insights,
            auth,
        })
        .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopped());
    // TLS is ours rather than tonic's, for its bounds (`handshake_gate`).
    let tls = crate::handshake_gate::server_config(&identity.cert_pem, &identity.key_pem)
        .context("DP server TLS")?;
    let grpc = || {
        Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(15)))
            .http2_keepalive_timeout(Some(Duration::from_secs(15)))
    };
    let dp_incoming = crate::handshake_gate::incoming(dp_listener, tls.clone(), "DP server");
    let dp = if role == Role::Global {
        grpc()
            .add_service(DataplaneDiscoveryServer::new(GlobalRefusesDataplanes))
            .serve_with_incoming_shutdown(dp_incoming, stopped())
            .boxed()
    } else {
        grpc()
            .add_service(DataplaneDiscoveryServer::new(DpService(dp_server)))
            .serve_with_incoming_shutdown(dp_incoming, stopped())
            .boxed()
    };
    // The global serves its zones; a federated zone dials its global.
    let kds = match (&role, kds_listener) {
        (Role::Global, Some(listener)) => {
            let sync = GlobalSync::new(local.clone(), zone_insights.clone(), instance_id.clone());
            let server = grpc()
                .add_service(
                    MultizoneSyncServer::new(sync).max_decoding_message_size(kds::MAX_MESSAGE),
                )
                .serve_with_incoming_shutdown(
                    crate::handshake_gate::incoming(listener, tls.clone(), "multi-zone sync"),
                    stopped(),
                );
            async move { server.await.context("multi-zone sync server") }.boxed()
        }
        (Role::Zone(zone), _) => {
            match &args.zone_token_file {
                // Read now to fail early; read again at each connection so
                // that a renewed token needs no restart.
                Some(path) => {
                    std::fs::read_to_string(path).with_context(|| {
                        format!("cannot read --zone-token-file {}", path.display())
                    })?;
                }
                None => tracing::warn!("no --zone-token-file: the global will refuse this zone"),
            }
            let config = ZoneSyncConfig {
                zone: zone.clone(),
                global_address: args.global_address.clone().unwrap_or_default(),
                ca_file: args.global_ca_file.clone(),
                skip_verify: args.skip_verify,
                token_file: args.zone_token_file.clone(),
                instance_id: instance_id.clone(),
            };
            let local = local.clone();
            // One sync per zone: its instances' leader runs it.
            async move {
                let resources = local.resources.clone();
                crate::instances::while_leading(&resources, "the sync with the global", || {
                    kds::zone::run(local.clone(), config.clone())
                })
                .await
                .context("multi-zone sync")
            }
            .boxed()
        }
        _ => futures::future::pending().boxed(),
    };

    tracing::info!(
        mode = ?args.mode,
        role = ?role,
        kds = %match role {
            Role::Global => format!("grpcs://{}", args.kds_address),
            Role::Zone(_) => args.global_address.clone().unwrap_or_default(),
            Role::Standalone => "-".into(),
        },
        api = %format!("http://{}", args.api_address),
        dp_server = %format!("https://{}", args.dp_server_address),
        ca_cert = %identity.ca_file.as_ref().map_or("(provided certificate)".into(), |p| p.display().to_string()),
        store = %args.store.describe(&args.data_dir),
        instance = %instance_id,
        "koguma-cp is running"
    );
    let servers = async {
        let (a, d) = tokio::join!(api, dp);
        a.context("REST API server")?;
        d.context("DP server")?;
        anyhow::Ok(())
    };
    tokio::pin!(servers);
    tokio::select! {
        r = &mut servers => return r,
        r = kds => {
            // Only a refusal by the global (or a server that cannot run)
            // ends the sync: nothing this CP can fix by retrying.
            if let Err(e) = &r {
                tracing::error!(error = %format!("{e:#}"), "stopping");
            }
            let _ = stop_tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(2), servers).await;
            return r;
        }
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    let _ = stop_tx.send(true);
    // Open config streams never end on their own: give servers a moment.
    let _ = tokio::time::timeout(Duration::from_secs(2), servers).await;
    Ok(())
}
