//! Where records go. Each sink owns a bounded queue and a writer of its
//! own: a thread for a file (a slow disk blocks nobody else), a task for a
//! TCP or OTLP collector. `send` never waits: a full queue drops the
//! record and counts it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{LogItem, render};
use crate::config::SinkConfig;
use crate::stats::SinkStats;

/// Records waiting for their writer, per sink.
const QUEUE: usize = 8192;
/// Records a TCP writer takes at once.
const BATCH: usize = 1024;
/// A writer with lines in hand gathers more for this long before it
/// looks again.
const GATHER: Duration = Duration::from_millis(10);
/// Buffered lines are written at this size, or after this long.
const FLUSH_BYTES: usize = 64 * 1024;
const FLUSH_AFTER: Duration = Duration::from_secs(1);

/// Bumped by SIGHUP: file sinks reopen their file (after rotation).
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// Makes every file sink reopen its file (`logrotate`'s postrotate HUP).
pub fn reopen_files() {
    REOPEN.fetch_add(1, Ordering::Relaxed);
}

pub struct Sink {
    queue: Queue,
    pub stats: Arc<SinkStats>,
}

enum Queue {
    Thread(std_mpsc::SyncSender<LogItem>),
    Task(mpsc::Sender<LogItem>),
}

impl Sink {
    /// Starts the sink's writer (a tokio runtime must be running).
    pub fn start(cfg: &SinkConfig, stats: Arc<SinkStats>) -> Sink {
        let queue = match cfg {
            SinkConfig::File(path) => {
                let (tx, rx) = std_mpsc::sync_channel(QUEUE);
                let (path, stats) = (path.clone(), stats.clone());
                let spawned = std::thread::Builder::new()
                    .name("access-log-file".into())
                    .spawn(move || write_file(&path, rx, &stats));
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "access log: cannot start the file writer");
                }
                Queue::Thread(tx)
            }
            SinkConfig::Tcp(addr) => {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(write_tcp(addr.clone(), rx, stats.clone()));
                Queue::Task(tx)
            }
            SinkConfig::Otel { endpoint, resource } => {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(super::otlp::export(
                    endpoint.clone(),
                    resource.clone(),
                    rx,
                    stats.clone(),
                ));
                Queue::Task(tx)
            }
        };
        Sink { queue, stats }
    }

    pub fn send(&self, item: LogItem) {
        let queued = match &self.queue {
            Queue::Thread(tx) => tx.try_send(item).is_ok(),
            Queue::Task(tx) => tx.try_send(item).is_ok(),
        };
        if !queued {
            self.stats.dropped.inc();
        }
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    // Lines can carry paths and headers: readable by the owner's group,
    // not by everyone.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Whether `path` no longer names `file` (moved away or deleted).
fn rotated(path: &Path, file: &File) -> bool {
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(now), Ok(open)) => now.ino() != open.ino() || now.dev() != open.dev(),
        _ => true,
    }
}

/// Lines are buffered and written when 64 KiB have gathered or the oldest
/// has waited a second (Envoy's file access log does the same), so that a
/// busy listener costs a write now and then, not one per request. While
/// lines are buffered the writer sleeps rather than waits on the queue:
/// senders then never have to wake it.
fn write_file(path: &Path, rx: std_mpsc::Receiver<LogItem>, stats: &SinkStats) {
    let mut file: Option<File> = None;
    let mut seen_reopen = REOPEN.load(Ordering::Relaxed);
    let mut buf = String::with_capacity(FLUSH_BYTES + 4096);
    let mut lines = 0u64;
    let mut oldest = std::time::Instant::now();
    loop {
        if lines == 0 {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(item) => {
                    render::line(item.format(), &item.log, &item.record, &mut buf);
                    lines = 1;
                    oldest = std::time::Instant::now();
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            std::thread::sleep(GATHER);
        }
        for item in rx.try_iter() {
            render::line(item.format(), &item.log, &item.record, &mut buf);
            lines += 1;
            if buf.len() >= FLUSH_BYTES {
                break;
            }
        }
        // Rotation: a HUP, or the path naming another file (checked before
        // each write, and every second when idle).
        let reopen = REOPEN.load(Ordering::Relaxed);
        if reopen != seen_reopen || file.as_ref().is_some_and(|f| rotated(path, f)) {
            seen_reopen = reopen;
            file = None;
        }
        if lines == 0 || (buf.len() < FLUSH_BYTES && oldest.elapsed() < FLUSH_AFTER) {
            continue;
        }
        if file.is_none() {
            match open(path) {
                Ok(f) => file = Some(f),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "access log: cannot open the file; lines are dropped until it opens");
                }
            }
        }
        match file.as_mut().map(|f| f.write_all(buf.as_bytes())) {
            Some(Ok(())) => stats.written.add(lines),
            Some(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "access log: write failed");
                stats.dropped.add(lines);
                file = None;
            }
            None => stats.dropped.add(lines),
        }
        buf.clear();
        lines = 0;
    }
}

/// A line per record to a TCP collector, over one connection reopened
/// (at most once a second) when it breaks. A collector that stops reading
/// for 5 s loses its connection and the lines in flight.
async fn write_tcp(addr: String, mut rx: mpsc::Receiver<LogItem>, stats: Arc<SinkStats>) {
    const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
    let mut conn: Option<TcpStream> = None;
    let mut retry_at = tokio::time::Instant::now();
    let mut buf = String::new();
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // More lines gather while this batch is written: one write for
        // many requests, and senders need not wake this task each time.
        let gather = tokio::time::sleep(GATHER);
        buf.clear();
        let n = batch.len() as u64;
        for item in batch.drain(..) {
            render::line(item.format(), &item.log, &item.record, &mut buf);
        }
        if conn.is_none() && tokio::time::Instant::now() >= retry_at {
            match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&addr)).await {
                Ok(Ok(s)) => conn = Some(s),
                Ok(Err(e)) => {
                    tracing::warn!(%addr, error = %e, "access log: cannot reach the TCP collector")
                }
                Err(_) => {
                    tracing::warn!(%addr, "access log: connecting to the TCP collector timed out")
                }
            }
            if conn.is_none() {
                retry_at = tokio::time::Instant::now() + Duration::from_secs(1);
            }
        }
        let Some(s) = conn.as_mut() else {
            stats.dropped.add(n);
            continue;
        };
        match tokio::time::timeout(WRITE_TIMEOUT, s.write_all(buf.as_bytes())).await {
            Ok(Ok(())) => {
                stats.written.add(n);
                gather.await;
            }
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "the collector stopped reading".to_string(),
                };
                tracing::warn!(%addr, error = %why, "access log: TCP collector connection dropped");
                stats.dropped.add(n);
                conn = None;
            }
        }
    }
}
