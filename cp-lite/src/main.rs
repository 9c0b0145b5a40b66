//! koguma-cp: the control plane (`run`) and its command-line client
//! (`apply`, `get`, `delete`, `generate`).

mod api_server;
mod available_services;
mod catalog;
mod cli;
mod dp_server;
mod handshake_gate;
mod identity_api;
mod instances;
mod kds;
mod mesh_ca;
mod private_files;
mod proxy_config;
mod resources;
mod role;
mod run;
mod store;
mod tls;
mod tokens;
mod vips;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "koguma-cp",
    version,
    about = "Koguma control plane: Kuma-compatible resources and config for koguma-dp"
)]
struct Cli {
    /// off, error, warn, info, debug or trace (RUST_LOG, when set, wins).
    #[arg(long, global = true, default_value = "info", env = "KOGUMA_LOG_LEVEL")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane.
    Run(Box<run::RunArgs>),
    /// Bring the PostgreSQL store's schema to this version's.
    Migrate {
        #[command(subcommand)]
        what: cli::migrate::Migrate,
    },
    /// Create or update resources from a YAML/JSON file (several `---` documents; `-` for stdin).
    Apply {
        #[arg(short = 'f', long)]
        file: String,
        #[command(flatten)]
        api: cli::ApiTarget,
    },
    /// Issue credentials: dataplane and zone tokens, workload certificates.
    Generate {
        #[command(subcommand)]
        what: cli::generate::Generate,
        #[command(flatten)]
        api: cli::ApiTarget,
    },
    /// Show resources of one type.
    Get {
        /// meshes, dataplanes, meshtrafficpermissions, zones, zone-ingresses, zone-egresses
        kind: String,
        name: Option<String>,
        #[arg(long, short = 'm', default_value = "default")]
        mesh: String,
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: cli::get::Output,
        #[command(flatten)]
        api: cli::ApiTarget,
    },
    /// Delete a resource.
    Delete {
        /// mesh, dataplane, meshtrafficpermission, zone-ingress, ...
        kind: String,
        name: String,
        #[arg(long, short = 'm', default_value = "default")]
        mesh: String,
        #[command(flatten)]
        api: cli::ApiTarget,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => {
            koguma_telemetry::init_logging(&cli.log_level);
            run::run(*args).await
        }
        Command::Migrate { what } => {
            koguma_telemetry::init_logging(&cli.log_level);
            cli::migrate::run(what).await
        }
        Command::Generate { what, api } => {
            async { cli::generate::run(&cli::ApiClient::new(&api)?, what).await }.await
        }
        Command::Apply { file, api } => {
            async { cli::apply::run(&cli::ApiClient::new(&api)?, &file).await }.await
        }
        Command::Get {
            kind,
            name,
            mesh,
            output,
            api,
        } => {
            async {
                cli::get::run(
                    &cli::ApiClient::new(&api)?,
                    &kind,
                    name.as_deref(),
                    &mesh,
                    output,
                )
                .await
            }
            .await
        }
        Command::Delete {
            kind,
            name,
            mesh,
            api,
        } => {
            async { cli::delete::run(&cli::ApiClient::new(&api)?, &kind, &name, &mesh).await }.await
        }
    };
    if let Err(e) = result {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
