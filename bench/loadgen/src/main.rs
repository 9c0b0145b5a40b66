//! `koguma-loadgen`: sends GETs at a fixed rate, whatever the server does,
//! and measures each request's latency from the moment it *should* have
//! been sent. A server that stalls therefore shows its stall in the
//! percentiles instead of slowing the client down and hiding it
//! (coordinated omission; the reason wrk2 exists, which Debian lacks).
//!
//! Prints one JSON object: counts, achieved rate and latency percentiles.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "Open-loop HTTP/1.1 load at a fixed rate")]
struct Args {
    /// http://HOST:PORT/PATH
    #[arg(long)]
    url: String,
    /// Requests per second.
    #[arg(long)]
    rate: u64,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Keep-alive connections that share the schedule.
    #[arg(long, default_value_t = 32)]
    connections: usize,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

struct Outcome {
    latencies: Histogram<u64>,
    errors: u64,
}

/// One keep-alive connection taking scheduled requests off the shared queue.
async fn worker(uri: Uri, jobs: async_channel::Receiver<Instant>) -> Outcome {
    let mut out = Outcome {
        latencies: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        errors: 0,
    };
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let mut sender: Option<Sender> = None;
    while let Ok(intended) = jobs.recv().await {
        // A connection the server closed (keep-alive timeout, HTTP/1.0) is
        // replaced before the request goes out: that is no request error.
        if let Some(s) = sender.as_mut()
            && s.ready().await.is_err()
        {
            sender = None;
        }
        if sender.is_none() {
            sender = connect(&authority).await.ok();
        }
        let Some(s) = sender.as_mut() else {
            out.errors += 1;
            continue;
        };
        let req = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header("host", &authority)
            .body(Empty::<Bytes>::new())
            .expect("valid request");
        let ok = match s.send_request(req).await {
            Ok(resp) => resp.status().is_success() && resp.into_body().collect().await.is_ok(),
            Err(_) => false,
        };
        if ok {
            let us = intended.elapsed().as_micros() as u64;
            out.latencies.saturating_record(us.max(1));
        } else {
            out.errors += 1;
            sender = None;
        }
    }
    out
}

async fn connect(authority: &str) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let uri: Uri = args.url.parse().context("--url")?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        bail!("--url {}: expected http://HOST:PORT/PATH", args.url);
    }
    if args.rate == 0 || args.connections == 0 {
        bail!("--rate and --connections must be positive");
    }
    let (tx, rx) = async_channel::unbounded();
    let workers: Vec<_> = (0..args.connections)
        .map(|_| tokio::spawn(worker(uri.clone(), rx.clone())))
        .collect();
    drop(rx);

    let period = Duration::from_secs_f64(1.0 / args.rate as f64);
    let total = (args.rate as f64 * args.duration.as_secs_f64()).round() as u64;
    let start = Instant::now();
    // The schedule runs on a thread of its own: tokio's timer ticks in
    // milliseconds, which would add up to a millisecond of lateness to every
    // request. A plain thread sleep is accurate to tens of microseconds and,
    // unlike spinning, leaves the CPU to the proxies being measured.
    let std_start = start.into_std();
    let scheduler = std::thread::spawn(move || {
        for i in 0..total {
            let intended = std_start + period.mul_f64(i as f64);
            let now = std::time::Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            if tx.send_blocking(Instant::from_std(intended)).is_err() {
                break;
            }
        }
        tx.close();
    });
    let mut outcomes = Vec::new();
    for w in workers {
        outcomes.push(w.await?);
    }
    scheduler
        .join()
        .map_err(|_| anyhow::anyhow!("the scheduler thread panicked"))?;
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for o in outcomes {
        latencies.add(&o.latencies)?;
        errors += o.errors;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let curve: Vec<(f64, u64)> = [
        50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
    ]
    .iter()
    .map(|q| (*q, latencies.value_at_quantile(q / 100.0)))
    .collect();
    let report = serde_json::json!({
        "requests": latencies.len(),
        "errors": errors,
        "rate": args.rate,
        "achieved_rps": latencies.len() as f64 / elapsed,
        "p50_us": latencies.value_at_quantile(0.50),
        "p99_us": latencies.value_at_quantile(0.99),
        "p999_us": latencies.value_at_quantile(0.999),
        "max_us": latencies.max(),
        "percentiles_us": curve,
    });
    println!("{report}");
    Ok(())
}
