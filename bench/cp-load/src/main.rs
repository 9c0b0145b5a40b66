//! koguma-cp-load: how the control plane holds up at scale. Against a
//! running koguma-cp (started with `--dp-auth none`), it registers M
//! dataplanes over REST, opens N config streams as koguma-dp does, makes
//! changes of three kinds and reports, for each: how long until every
//! affected stream has the new config, the CP's CPU seconds, the bytes sent,
//! and streams sent a config they did not need. Also: the registration rate
//! with the streams connected, and the CP's memory.

mod fleet;
mod proc_stats;
mod rest;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use serde_json::{Value, json};

use fleet::Log;
use rest::Api;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:5681")]
    api: String,
    #[arg(long, default_value = "https://127.0.0.1:5678")]
    cp: String,
    /// The DP server's CA (koguma-cp writes `<data-dir>/tls/ca.crt`).
    #[arg(long)]
    ca_file: std::path::PathBuf,
    /// The koguma-cp process, for its CPU time and memory.
    #[arg(long)]
    cp_pid: u32,
    /// Dataplanes registered in all.
    #[arg(long, default_value_t = 10_000)]
    dataplanes: usize,
    /// Config streams opened (for the first N dataplanes).
    #[arg(long, default_value_t = 2_000)]
    streams: usize,
    /// Each service has dataplanes/services instances.
    #[arg(long, default_value_t = 1_000)]
    services: usize,
    /// Times each kind of change is made.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Turn mesh mTLS on (streams send CSRs, the CP signs certificates).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    mtls: bool,
    #[arg(long, default_value_t = 16)]
    register_concurrency: usize,
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Where to write the results as JSON.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

fn dataplane(i: usize, services: usize, with_outbounds: bool) -> Value {
    let mut dp = json!({
        "type": "Dataplane", "mesh": "default", "name": format!("dp-{i}"),
        "networking": {
            "address": format!("127.1.{}.{}", i / 250, i % 250 + 1),
            "inbound": [{"port": 8080, "servicePort": 18080,
                         "tags": {"kuma.io/service": format!("svc-{}", i % services), "kuma.io/protocol": "http"}}],
        }
    });
    if with_outbounds {
        // Everyone calls svc-0 (the popular one) and two others.
        let calls = [0, (i * 7 + 1) % services, (i * 13 + 2) % services];
        dp["networking"]["outbound"] = calls
            .iter()
            .enumerate()
            .map(|(k, s)| json!({"port": 10001 + k, "tags": {"kuma.io/service": format!("svc-{s}")}}))
            .collect();
    }
    dp
}

async fn register(
    api: &Api,
    items: Vec<(String, Value)>,
    concurrency: usize,
) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(items)
        .map(|(path, body)| async move { api.put(&path, &body).await })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Waits until no stream has received anything for `quiet`.
async fn settle(log: &Log, quiet: Duration, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let last = log.last_arrival().unwrap_or(start);
        if last.elapsed() >= quiet {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("streams still receiving configs after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

struct Change {
    kind: &'static str,
    path: String,
    body: Value,
    affected: BTreeSet<usize>,
}

/// Makes one change and measures what it costs until the streams are quiet.
async fn measure(
    api: &Api,
    log: &Log,
    pid: u32,
    idle_cpu_per_s: f64,
    change: Change,
) -> anyhow::Result<Value> {
    let before = log.counts();
    let cpu0 = proc_stats::sample(pid)?;
    let t0 = Instant::now();
    api.put(&change.path, &change.body).await?;
    // Every affected stream has something new, or 30 s passed.
    let deadline = t0 + Duration::from_secs(30);
    while Instant::now() < deadline {
        let now = log.counts();
        if change.affected.iter().all(|&i| now[i] > before[i]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Whatever else follows: quiet for 300 ms (at least one batching window
    // plus the slowest stream's turn).
    tokio::time::sleep(Duration::from_millis(300)).await;
    settle(log, Duration::from_millis(300), Duration::from_secs(30)).await?;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = proc_stats::sample(pid)?;
    let mut latencies = Vec::new();
    let mut missing = 0;
    let mut bytes = 0;
    let mut unneeded = 0;
    for (i, &skip) in before.iter().enumerate() {
        let new = log.since(i, skip);
        bytes += new.iter().map(|e| e.1).sum::<usize>();
        match (change.affected.contains(&i), new.first()) {
            (true, Some((at, _))) => latencies.push(at.duration_since(t0).as_secs_f64() * 1000.0),
            (true, None) => missing += 1,
            (false, Some(_)) => unneeded += 1,
            (false, None) => {}
        }
    }
    latencies.sort_by(f64::total_cmp);
    let cpu = cpu1.cpu - cpu0.cpu;
    Ok(json!({
        "kind": change.kind,
        "affected_streams": change.affected.len(),
        "missing": missing,
        "unaffected_streams_sent_a_config": unneeded,
        "p50_ms": percentile(&latencies, 0.5),
        "p99_ms": percentile(&latencies, 0.99),
        "max_ms": latencies.last().copied().unwrap_or(0.0),
        "cp_cpu_s": cpu,
        "cp_cpu_s_above_idle": (cpu - idle_cpu_per_s * elapsed).max(0.0),
        "window_s": elapsed,
        "bytes_sent": bytes,
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let api = Api::new(&args.api);
    let (m, n, s) = (
        args.dataplanes,
        args.streams.min(args.dataplanes),
        args.services.max(1),
    );
    let ca_pem = std::fs::read(&args.ca_file)
        .with_context(|| format!("--ca-file {}", args.ca_file.display()))?;
    if args.mtls {
        api.put(
            "/meshes/default",
            &json!({"type": "Mesh", "name": "default",
            "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}),
        )
        .await?;
        // Everyone may call everyone: what the permission changes below alter.
        api.put("/meshes/default/meshtrafficpermissions/allow-all", &json!({
            "type": "MeshTrafficPermission", "mesh": "default", "name": "allow-all",
            "spec": {"targetRef": {"kind": "Mesh"}, "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}}))
            .await?;
    }
    let path = |i: usize| format!("/meshes/default/dataplanes/dp-{i}");
    let t = Instant::now();
    register(
        &api,
        (0..n).map(|i| (path(i), dataplane(i, s, true))).collect(),
        args.register_concurrency,
    )
    .await?;
    eprintln!(
        "registered the {n} streaming dataplanes in {:.1?}",
        t.elapsed()
    );

    let t = Instant::now();
    let target = fleet::Target {
        cp_url: args.cp.clone(),
        ca_pem,
        mesh: "default".into(),
    };
    let log = fleet::open(
        target,
        (0..n).map(|i| format!("dp-{i}")).collect(),
        args.mtls,
        args.connect_concurrency,
    )
    .await?;
    while log.configured.load(Ordering::Relaxed) < n {
        if t.elapsed() > Duration::from_secs(180) {
            bail!(
                "only {} of {n} streams got a config in 180 s: {:?}",
                log.configured.load(Ordering::Relaxed),
                log.errors
                    .lock()
                    .map(|e| e.iter().take(3).cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_s = t.elapsed().as_secs_f64();
    eprintln!("{n} streams connected and configured in {connect_s:.1} s");

    let t = Instant::now();
    register(
        &api,
        (n..m).map(|i| (path(i), dataplane(i, s, false))).collect(),
        args.register_concurrency,
    )
    .await?;
    let reg_s = t.elapsed().as_secs_f64();
    let rate = (m - n) as f64 / reg_s;
    eprintln!(
        "registered {} more dataplanes with the streams connected: {rate:.0} PUT/s",
        m - n
    );
    settle(&log, Duration::from_secs(1), Duration::from_secs(120)).await?;
    let settled = proc_stats::sample(args.cp_pid)?;

    let idle0 = proc_stats::sample(args.cp_pid)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_cpu_per_s = (proc_stats::sample(args.cp_pid)?.cpu - idle0.cpu) / 2.0;

    let all: BTreeSet<usize> = (0..n).collect();
    let mut changes = Vec::new();
    for r in 0..args.repeat {
        // An instance added to the service every stream calls.
        let i = m + r;
        let mut dp = dataplane(i, s, false);
        dp["networking"]["inbound"][0]["tags"]["kuma.io/service"] = json!("svc-0");
        changes.push(Change {
            kind: "instance added to a popular service",
            path: path(i),
            body: dp,
            affected: all.clone(),
        });
        // A service nobody calls.
        let i = m + args.repeat + r;
        let mut dp = dataplane(i, s, false);
        dp["networking"]["inbound"][0]["tags"]["kuma.io/service"] = json!(format!("unrelated-{r}"));
        changes.push(Change {
            kind: "unrelated service added",
            path: path(i),
            body: dp,
            affected: BTreeSet::new(),
        });
        if args.mtls {
            // Who may call svc-(r+1) changes: its instances' inbounds.
            let target = r + 1;
            let name = format!("deny-svc-{target}-from-svc-0");
            changes.push(Change {
                kind: "permission changed",
                path: format!("/meshes/default/meshtrafficpermissions/{name}"),
                body: json!({"type": "MeshTrafficPermission", "mesh": "default", "name": name,
                    "spec": {"targetRef": {"kind": "MeshService", "name": format!("svc-{target}")},
                             "from": [{"targetRef": {"kind": "MeshService", "name": "svc-0"}, "default": {"action": "Deny"}}]}}),
                affected: (0..n).filter(|i| i % s == target).collect(),
            });
        }
    }
    let mut results = Vec::new();
    for change in changes {
        let r = measure(&api, &log, args.cp_pid, idle_cpu_per_s, change).await?;
        eprintln!("{r}");
        results.push(r);
    }
    let end = proc_stats::sample(args.cp_pid)?;
    let summary = json!({
        "dataplanes": m, "streams": n, "services": s, "mtls": args.mtls,
        "streams_configured": log.configured.load(Ordering::Relaxed),
        "streams_closed": log.closed.load(Ordering::Relaxed),
        "connect_and_configure_s": connect_s,
        "registration_put_per_s": rate,
        "cp_idle_cpu_per_s": idle_cpu_per_s,
        "cp_rss_mb_settled": settled.rss_mb,
        "cp_rss_mb_end": end.rss_mb,
        "changes": results,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(out) = &args.json_out {
        std::fs::write(out, serde_json::to_string_pretty(&summary)?)?;
    }
    let closed = log.closed.load(Ordering::Relaxed);
    if closed > 0 {
        bail!(
            "{closed} streams were closed: {:?}",
            log.errors
                .lock()
                .map(|e| e.iter().take(3).cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        );
    }
    Ok(())
}
