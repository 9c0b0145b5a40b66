//! koguma-cp: the control plane (`run`) and its command-line client
//! (`apply`, `get`, `delete`, `generate`).

mod api_server;
mod available_services;
mod catalog;
mod cli;
mod dp_server;
mod handshake_gate;
mod identity_api;
mod kds;
mod mesh_ca;
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
    Run(run::RunArgs),
    /// Create or update resources from a YAML/JSON file (several `---` documents; `-` for stdin).
    Apply {
        #[arg(short = 'f', long)]
        file: String,
        #[arg(long, default_value = cli::DEFAULT_API_URL, env = "KOGUMA_API_URL")]
        api_url: String,
    },
    /// Issue credentials: dataplane and zone tokens, workload certificates.
    Generate {
        #[command(subcommand)]
        what: cli::generate::Generate,
        #[arg(long, global = true, default_value = cli::DEFAULT_API_URL, env = "KOGUMA_API_URL")]
        api_url: String,
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
        #[arg(long, default_value = cli::DEFAULT_API_URL, env = "KOGUMA_API_URL")]
        api_url: String,
    },
    /// Delete a resource.
    Delete {
        /// mesh, dataplane, meshtrafficpermission, zone-ingress, ...
        kind: String,
        name: String,
        #[arg(long, short = 'm', default_value = "default")]
        mesh: String,
        #[arg(long, default_value = cli::DEFAULT_API_URL, env = "KOGUMA_API_URL")]
        api_url: String,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => {
            koguma_telemetry::init_logging(&cli.log_level);
            run::run(args).await
        }
        Command::Generate { what, api_url } => {
            async { cli::generate::run(&cli::ApiClient::new(&api_url)?, what).await }.await
        }
        Command::Apply { file, api_url } => {
            async { cli::apply::run(&cli::ApiClient::new(&api_url)?, &file).await }.await
        }
        Command::Get {
            kind,
            name,
            mesh,
            output,
            api_url,
        } => {
            async {
                cli::get::run(
                    &cli::ApiClient::new(&api_url)?,
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
            api_url,
        } => {
            async { cli::delete::run(&cli::ApiClient::new(&api_url)?, &kind, &name, &mesh).await }
                .await
        }
    };
    if let Err(e) = result {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
