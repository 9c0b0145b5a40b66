//! koguma-dp: the sidecar agent. One process: config stream to the control
//! plane, the forwarder that carries the traffic, and admin endpoints.

mod admin;
mod config_stream;
mod cp_channel;
mod identity;
mod run;
mod state;
mod template;
mod translate;

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
}

fn main() {
    let cli = Cli::parse();
    koguma_telemetry::init_logging(&cli.log_level);
    let Command::Run(args) = cli.command;
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
    if let Err(e) = result {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
