//! koguma-dp: the sidecar agent. One process: config stream to the control
//! plane, the forwarder that carries the traffic, and admin endpoints.

mod admin;
mod cluster_policy;
mod config_stream;
mod dns_proxy;
mod identity;
mod listener_traffic;
mod renewal;
mod route_config;
mod run;
mod state;
mod template;
mod translate;
mod transparent_proxy;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "koguma-dp",
    version,
    about = "Koguma sidecar: a Kuma-compatible data plane in one process"
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
    /// Run the sidecar.
    Run(run::RunArgs),
    /// Install something on this host.
    #[command(subcommand)]
    Install(InstallCommand),
    /// Remove what `install` put on this host.
    #[command(subcommand)]
    Uninstall(UninstallCommand),
}

#[derive(Subcommand)]
enum InstallCommand {
    /// iptables rules that send this host's traffic through koguma-dp
    /// (as `kumactl install transparent-proxy`).
    TransparentProxy(transparent_proxy::InstallArgs),
}

#[derive(Subcommand)]
enum UninstallCommand {
    /// Remove the transparent proxy rules, and only them.
    TransparentProxy(transparent_proxy::UninstallArgs),
}

fn main() {
    let cli = Cli::parse();
    koguma_telemetry::init_logging(&cli.log_level);
    let args = match cli.command {
        Command::Run(args) => args,
        Command::Install(InstallCommand::TransparentProxy(args)) => {
            exit_on_error(transparent_proxy::install(args))
        }
        Command::Uninstall(UninstallCommand::TransparentProxy(args)) => {
            exit_on_error(transparent_proxy::uninstall(args))
        }
    };
    // The multi-thread scheduler even for one worker: when one task wakes
    // another (a response body passed from the upstream connection to the
    // downstream one) it runs the woken task next, while the current-thread
    // scheduler queues it behind everything else. Measured: HTTP/1.1 with
    // 64 KiB bodies, 25% more CPU per request on a current-thread runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.concurrency.max(1))
        .thread_name("koguma-worker")
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(run::run(args)),
        Err(e) => Err(anyhow::anyhow!("cannot start the runtime: {e}")),
    };
    exit_on_error(result)
}

fn exit_on_error(result: anyhow::Result<()>) -> ! {
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::exit(1);
        }
    }
}
