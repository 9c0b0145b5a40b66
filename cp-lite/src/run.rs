//! `koguma-cp run`: the store, the REST API and the DP server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::api_server::{self, ApiState};
use crate::dp_server::status::StatusRegistry;
use crate::dp_server::{DataplaneDiscoveryServer, DpAuth, DpServer, DpService};
use crate::mesh_ca::MeshCas;
use crate::proxy_config;
use crate::resources::Resources;
use crate::role::Role;
use crate::store::{ResourceStore, SqliteStore};
use crate::tls;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StoreKind {
    /// SQLite file in --data-dir: resources survive restarts.
    Sqlite,
    /// In memory: everything is gone when the CP stops.
    Memory,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Where the store and the DP server's CA live.
    #[arg(long, default_value = "./koguma-data", env = "KOGUMA_DATA_DIR")]
    data_dir: PathBuf,
    #[arg(long, value_enum, default_value = "sqlite", env = "KOGUMA_STORE")]
    store: StoreKind,
    /// REST API (plain HTTP; keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:5681", env = "KOGUMA_API_ADDRESS")]
    api_address: SocketAddr,
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

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let store: Box<dyn ResourceStore> = match args.store {
        StoreKind::Sqlite => Box::new(SqliteStore::open(&args.data_dir)?),
        StoreKind::Memory => Box::new(SqliteStore::in_memory()?),
    };
    let resources = Arc::new(Resources::open(store, Role::Standalone)?);
    let identity = tls::prepare(
        &args.data_dir,
        args.tls_cert_file.as_deref(),
        args.tls_key_file.as_deref(),
        &[args.dp_server_address.ip()],
    )?;
    let status = Arc::new(StatusRegistry::default());
    let cas = Arc::new(MeshCas::new(resources.clone()));
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

    let api = axum::serve(
        api_listener,
        api_server::router(ApiState {
            resources,
            status,
            cas,
            snapshots,
        }),
    )
    .with_graceful_shutdown(stopped());
    let tls =
        ServerTlsConfig::new().identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem));
    let dp = Server::builder()
        .tls_config(tls)
        .context("DP server TLS")?
        .http2_keepalive_interval(Some(Duration::from_secs(15)))
        .http2_keepalive_timeout(Some(Duration::from_secs(15)))
        .add_service(DataplaneDiscoveryServer::new(DpService(dp_server)))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(dp_listener),
            stopped(),
        );

    tracing::info!(
        api = %format!("http://{}", args.api_address),
        dp_server = %format!("https://{}", args.dp_server_address),
        ca_cert = %identity.ca_file.as_ref().map_or("(provided certificate)".into(), |p| p.display().to_string()),
        store = ?args.store,
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
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    let _ = stop_tx.send(true);
    // Open config streams never end on their own: give servers a moment.
    let _ = tokio::time::timeout(Duration::from_secs(2), servers).await;
    Ok(())
}
