//! Bidirectional byte copy for L4 proxying, with buffers that start small
//! and grow when the traffic is bulk (after ztunnel's `copy.rs`): an idle or
//! chatty connection costs 16 KiB per direction, a bulk transfer gets up to
//! 256 KiB reads and so few syscalls per byte.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

const INITIAL: usize = 16 * 1024;
const MAX: usize = 256 * 1024;

/// One direction: read into `buf`, write it all out, repeat; on EOF shut
/// the writer down (the half-close travels on).
struct OneWay {
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    read_done: bool,
    need_flush: bool,
    done: bool,
    total: u64,
}

impl OneWay {
    fn new() -> OneWay {
        OneWay {
            buf: vec![0; INITIAL],
            pos: 0,
            filled: 0,
            read_done: false,
            need_flush: false,
            done: false,
            total: 0,
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(self.total));
        }
        loop {
            if self.pos == self.filled && !self.read_done {
                let mut rb = ReadBuf::new(&mut self.buf);
                match reader.as_mut().poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing to read now: push out what writers buffer.
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
                let n = rb.filled().len();
                if n == 0 {
                    self.read_done = true;
                } else {
                    self.pos = 0;
                    self.filled = n;
                }
            }
            while self.pos < self.filled {
                let n = ready!(
                    writer
                        .as_mut()
                        .poll_write(cx, &self.buf[self.pos..self.filled])
                )?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "peer accepts no more bytes",
                    )));
                }
                self.pos += n;
                self.total += n as u64;
                self.need_flush = true;
            }
            // A read that filled the buffer says more is waiting: read more
            // at once next time.
            if self.filled == self.buf.len() && self.buf.len() < MAX {
                let grown = (self.buf.len() * 2).min(MAX);
                self.buf.resize(grown, 0);
            }
            if self.read_done {
                ready!(writer.as_mut().poll_flush(cx))?;
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(self.total));
            }
        }
    }
}

/// Copies `a` to `b` and `b` to `a` until both directions reach EOF, or
/// until no byte has moved either way for `idle` (Envoy's idle timeout:
/// then `TimedOut`). Returns the bytes sent each way (a→b, b→a).
pub async fn bidirectional<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Option<Duration>,
) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut a_to_b, mut b_to_a) = (OneWay::new(), OneWay::new());
    let mut watch = idle.map(IdleWatch::new);
    poll_fn(|cx| {
        let ab = a_to_b.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let ba = b_to_a.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        match (ab, ba) {
            (Poll::Ready(x), Poll::Ready(y)) => Poll::Ready(Ok((x, y))),
            _ => match &mut watch {
                Some(w) => w.poll(cx, a_to_b.total + b_to_a.total),
                None => Poll::Pending,
            },
        }
    })
    .await
}

/// The idle timeout of a copy: a timer made once and moved on lazily,
/// so that a busy connection reads the clock only when it has moved bytes
/// and touches the timer once an idle period.
struct IdleWatch {
    idle: Duration,
    moved: u64,
    last: Instant,
    timer: Pin<Box<Sleep>>,
    /// Whether the timer has been polled (holds this task's waker).
    polled: bool,
}

impl IdleWatch {
    fn new(idle: Duration) -> IdleWatch {
        let last = Instant::now();
        IdleWatch {
            idle,
            moved: 0,
            last,
            timer: Box::pin(tokio::time::sleep_until(last + idle)),
            polled: false,
        }
    }

    fn poll<T>(&mut self, cx: &mut Context<'_>, moved: u64) -> Poll<io::Result<T>> {
        if moved != self.moved {
            self.moved = moved;
            self.last = Instant::now();
            // The timer, polled before by this task, still wakes it when
            // due: a busy connection does not touch it.
            if self.polled {
                return Poll::Pending;
            }
        }
        self.polled = true;
        while self.timer.as_mut().poll(cx).is_ready() {
            let due = self.last + self.idle;
            if Instant::now() >= due {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no bytes moved for {:?} (idle timeout)", self.idle),
                )));
            }
            self.timer.as_mut().reset(due);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_and_passes_half_close_on() {
        let (mut client, mut proxy_down) = tokio::io::duplex(64 * 1024);
        let (mut proxy_up, mut server) = tokio::io::duplex(64 * 1024);
        let proxy =
            tokio::spawn(async move { bidirectional(&mut proxy_down, &mut proxy_up, None).await });

        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = payload.clone();
        let server_task = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap(); // ends when the client's half-close arrives
            server.write_all(b"bye").await.unwrap();
            server.shutdown().await.unwrap();
            got
        });
        client.write_all(&payload).await.unwrap();
        client.shutdown().await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();

        assert_eq!(reply, b"bye");
        assert!(
            server_task.await.unwrap() == expected,
            "bytes changed on the way"
        );
        let (up, down) = proxy.await.unwrap().unwrap();
        assert_eq!((up, down), (3_000_000, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_with_nothing_moving_ends_at_the_idle_timeout() {
        let (mut client, mut proxy_down) = tokio::io::duplex(1024);
        let (mut proxy_up, mut server) = tokio::io::duplex(1024);
        let idle = Duration::from_secs(3600);
        let started = Instant::now();
        let proxy =
            tokio::spawn(
                async move { bidirectional(&mut proxy_down, &mut proxy_up, Some(idle)).await },
            );
        // Bytes at 30 min keep it open past the first hour.
        tokio::time::sleep(Duration::from_secs(1800)).await;
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        let err = proxy.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(1800) + idle && took < Duration::from_secs(1801) + idle,
            "{took:?}"
        );
    }
}
