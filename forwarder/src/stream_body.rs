//! Bodies as they cross the proxy, carrying what the timeouts need: when
//! the request body ended (Envoy's route timeout starts there), and when a
//! body last moved (the stream idle timeout).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::outlier::now_ms;

/// How far a request body has got, shared by the body (which moves it)
/// and the request waiting for its response.
#[derive(Default)]
pub struct RequestProgress {
    ended_at: OnceLock<Instant>,
    ended: Notify,
    /// `outlier::now_ms` of the last body frame; 0: none yet.
    last_ms: AtomicU64,
    /// Body bytes read from the downstream so far.
    bytes: AtomicU64,
}

impl RequestProgress {
    /// For a request whose body is already complete (none, or sent again).
    pub fn ended_now() -> RequestProgress {
        let p = RequestProgress::default();
        p.end();
        p
    }

    pub fn ended_at(&self) -> Option<Instant> {
        self.ended_at.get().copied()
    }

    /// Resolves once the body has ended.
    pub async fn wait_ended(&self) {
        loop {
            // Registered before the check: an end in between still wakes it.
            let signal = self.ended.notified();
            if self.ended_at.get().is_some() {
                return;
            }
            signal.await;
        }
    }

    /// When the body last moved, in `outlier::now_ms` time; 0: never.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn last_moved_ms(&self) -> u64 {
        self.last_ms.load(Ordering::Relaxed)
    }

    fn moved(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    fn end(&self) {
        if self.ended_at.set(Instant::now()).is_ok() {
            self.ended.notify_waiters();
        }
    }
}

/// The downstream request body on its way upstream.
pub struct RequestBody {
    inner: Incoming,
    progress: Arc<RequestProgress>,
}

impl RequestBody {
    pub fn new(inner: Incoming, progress: Arc<RequestProgress>) -> RequestBody {
        if inner.is_end_stream() {
            progress.end();
        }
        RequestBody { inner, progress }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.progress.moved();
                if let Some(data) = frame.data_ref() {
                    this.progress
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if this.inner.is_end_stream() {
                    this.progress.end();
                }
            }
            // An aborted body ends the request too: its upstream attempt
            // fails on its own, and must not wait for a deadline never set.
            Poll::Ready(None | Some(Err(_))) => this.progress.end(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The upstream response body on its way downstream, ended with an error
/// (a reset for the client) when it does not move for `idle`. The timer is
/// made only when the body first has to wait, and re-armed lazily: a body
/// that keeps moving costs a clock read per frame, no timer work.
pub struct ResponseBody<B = Incoming> {
    inner: B,
    idle: Duration,
    last: Instant,
    /// MeshTimeout's `maxStreamDuration`: the body ends with an error then.
    deadline: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the upstream response did not move for {0:?} (stream idle timeout)")]
pub struct StreamIdle(Duration);

#[derive(Debug, thiserror::Error)]
#[error("the stream lasted its maximum duration")]
pub struct MaxStreamDuration;

impl<B> ResponseBody<B> {
    pub fn new(inner: B, idle: Duration) -> ResponseBody<B> {
        ResponseBody {
            inner,
            idle,
            last: Instant::now(),
            deadline: None,
            timer: None,
        }
    }

    pub fn with_deadline(mut self, deadline: Option<Instant>) -> ResponseBody<B> {
        self.deadline = deadline;
        self
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.last = Instant::now();
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let (last, idle) = (this.last, this.idle);
        let due = this.deadline.map_or(last + idle, |d| d.min(last + idle));
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        // The timer may be older than the last frame: when it fires early,
        // it is moved to the real due time and waited on again.
        while timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if this.deadline.is_some_and(|d| now >= d) {
                return Poll::Ready(Some(Err(Box::new(MaxStreamDuration))));
            }
            if now >= last + idle {
                return Poll::Ready(Some(Err(Box::new(StreamIdle(idle)))));
            }
            timer.as_mut().reset(due);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// Sends `frames` data frames, then nothing, ever.
    struct Stalls {
        frames: usize,
    }

    impl Body for Stalls {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.frames == 0 {
                return Poll::Pending;
            }
            self.frames -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_that_stops_moving_ends_after_the_stream_idle_timeout() {
        let idle = Duration::from_secs(1800);
        let mut body = ResponseBody::new(Stalls { frames: 2 }, idle);
        let started = Instant::now();
        assert!(body.frame().await.is_some_and(|f| f.is_ok()));
        tokio::time::sleep(Duration::from_secs(600)).await;
        // Ten minutes later the second frame moves the deadline on.
        assert!(body.frame().await.is_some_and(|f| f.is_ok()));
        let err = body.frame().await.and_then(Result::err);
        assert!(err.is_some_and(|e| e.to_string().contains("stream idle timeout")));
        assert_eq!(started.elapsed(), Duration::from_secs(600) + idle);
    }

    #[tokio::test(start_paused = true)]
    async fn the_route_timeout_starts_when_the_request_body_ends() {
        let progress = RequestProgress::default();
        assert!(progress.ended_at().is_none());
        let waiter = async {
            progress.wait_ended().await;
            Instant::now()
        };
        let ender = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            progress.end();
        };
        let started = Instant::now();
        let (ended, ()) = tokio::join!(waiter, ender);
        assert_eq!(ended - started, Duration::from_secs(60));
        assert_eq!(progress.ended_at(), Some(ended));
    }
}
