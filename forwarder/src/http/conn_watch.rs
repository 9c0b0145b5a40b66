//! What an HTTP connection is doing, for the two timers that close it:
//! no request at all soon after connecting (a client waiting for the
//! server to speak first, on a service tagged `http` by mistake), and
//! nothing moving for the idle timeout (Envoy's connection idle timeout).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How long a new connection may stay silent before it is taken for a
/// server-first protocol. HTTP clients send their request (or HTTP/2
/// preface) as soon as they connect.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters the connection's I/O and requests move; the watch reads them
/// a few times per period. Counting, not timestamping, keeps the I/O path
/// to one relaxed add.
#[derive(Default)]
pub struct Activity {
    reads: AtomicU64,
    moves: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    /// Held while a request is being answered.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why the watch ends a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing was received within `FIRST_REQUEST_TIMEOUT`.
    Silent,
    /// Nothing moved and nothing was in flight for the idle timeout.
    Idle,
}

/// Resolves when the connection should be closed. Activity is looked at a
/// quarter of `idle` at a time, so an idle connection goes within a
/// quarter of `idle` of the period.
pub async fn watch(activity: &Activity, first_request: Duration, idle: Duration) -> Verdict {
    tokio::time::sleep(first_request).await;
    if activity.reads.load(Ordering::Relaxed) == 0 {
        return Verdict::Silent;
    }
    let tick = (idle / 4).max(Duration::from_millis(10));
    let mut seen = activity.moves.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let now = activity.moves.load(Ordering::Relaxed);
        if now != seen || activity.in_flight.load(Ordering::Relaxed) > 0 {
            seen = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= idle {
            return Verdict::Idle;
        }
    }
}

/// A connection's I/O, counted into `Activity`.
pub struct WatchedIo<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> WatchedIo<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        WatchedIo { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WatchedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.reads.fetch_add(1, Ordering::Relaxed);
            self.activity.moves.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WatchedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moves.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moves.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_called_silent_at_the_first_request_timeout() {
        let activity = Activity::default();
        let started = Instant::now();
        let verdict = watch(&activity, FIRST_REQUEST_TIMEOUT, Duration::from_secs(3600)).await;
        assert_eq!(verdict, Verdict::Silent);
        assert_eq!(started.elapsed(), FIRST_REQUEST_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_last_move_and_never_while_a_request_is_in_flight() {
        let activity = Arc::new(Activity::default());
        activity.reads.store(1, Ordering::Relaxed);
        let idle = Duration::from_secs(60);
        let in_flight = activity.request();
        let started = Instant::now();
        let watched = activity.clone();
        let handle =
            tokio::spawn(async move { watch(&watched, Duration::from_secs(1), idle).await });
        // In flight for 10 minutes: not idle.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!handle.is_finished());
        drop(in_flight);
        let verdict = handle.await.unwrap();
        assert_eq!(verdict, Verdict::Idle);
        let waited = started.elapsed() - Duration::from_secs(600);
        assert!(
            // Seen a quarter of the period at a time.
            waited >= idle - idle / 4 && waited <= idle + idle / 4,
            "{waited:?}"
        );
    }
}
