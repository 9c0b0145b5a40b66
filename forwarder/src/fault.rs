//! MeshFaultInjection on the request path: Envoy's fault filters in order,
//! each delaying, aborting or throttling its share of the requests, for
//! the callers its rule names.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::authz::Peer;
use crate::config::{Fault, FaultRule};
use crate::endpoints::random;
use crate::stats::ListenerStats;

/// The faults for `peer`: the first rule whose caller it is (any caller
/// for a rule that names none).
pub fn for_peer<'a>(rules: &'a [FaultRule], peer: &Peer) -> Option<&'a [Fault]> {
    rules
        .iter()
        .find(|r| match (&r.caller, peer) {
            (None, _) => true,
            (Some(want), Peer::Mesh { uris, .. }) => uris.iter().any(|u| u == want),
            (Some(_), Peer::Unauthenticated) => false,
        })
        .map(|r| r.faults.as_slice())
}

/// Whether a draw falls in `percent` (0–100, to a ten-thousandth).
fn drawn(percent: f64) -> bool {
    percent >= 100.0 || ((random() % 1_000_000) as f64) < percent * 10_000.0
}

/// What the faults came to for one request.
pub enum Injected {
    /// Answered here with this status.
    Abort(http::StatusCode),
    /// Goes on, perhaps delayed (Envoy's DI flag); its response body at
    /// most `bandwidth` bytes per second.
    Pass {
        delayed: bool,
        bandwidth: Option<u64>,
    },
}

/// Runs `faults` in order: a delay waits here, an abort ends the chain.
pub async fn inject(faults: &[Fault], stats: &ListenerStats) -> Injected {
    let (mut bandwidth, mut delayed) = (None, false);
    for fault in faults {
        if let Some((delay, percent)) = fault.delay
            && drawn(percent)
        {
            stats.fault_delays_injected.inc();
            delayed = true;
            tokio::time::sleep(delay).await;
        }
        if let Some((status, percent)) = fault.abort
            && drawn(percent)
        {
            stats.fault_aborts_injected.inc();
            return Injected::Abort(status);
        }
        if let Some((rate, percent)) = fault.bandwidth
            && drawn(percent)
        {
            stats.fault_response_rl_injected.inc();
            bandwidth = Some(bandwidth.map_or(rate, |r: u64| r.min(rate)));
        }
    }
    Injected::Pass { delayed, bandwidth }
}

/// A response body at most `rate` bytes per second: frames are cut into
/// 50 ms worth of bytes, each sent when the rate allows it.
pub struct Throttle {
    rate: u64,
    chunk: usize,
    start: Instant,
    sent: u64,
    pending: Option<Bytes>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Throttle {
    pub fn new(rate: u64) -> Throttle {
        let rate = rate.max(1);
        Throttle {
            rate,
            chunk: (rate / 20).max(1) as usize,
            start: Instant::now(),
            sent: 0,
            pending: None,
            timer: None,
        }
    }

    /// Polls `inner` through the throttle.
    pub fn poll_frame<B>(
        &mut self,
        mut inner: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>>
    where
        B: Body<Data = Bytes>,
    {
        if let Some(timer) = &mut self.timer {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.timer = None;
        }
        let mut data = match self.pending.take() {
            Some(d) => d,
            None => match inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) => d,
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
                other => return other,
            },
        };
        if data.len() > self.chunk {
            self.pending = Some(data.split_off(self.chunk));
        }
        self.sent += data.len() as u64;
        // The next bytes go when the rate has covered these.
        let due =
            self.start + Duration::from_micros(self.sent.saturating_mul(1_000_000) / self.rate);
        if due > Instant::now() {
            self.timer = Some(Box::pin(tokio::time::sleep_until(due)));
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    pub fn is_end_stream<B: Body>(&self, inner: &B) -> bool {
        self.pending.is_none() && inner.is_end_stream()
    }

    pub fn size_hint<B: Body>(&self, inner: &B) -> SizeHint {
        let mut hint = inner.size_hint();
        if let Some(p) = &self.pending {
            let extra = p.len() as u64;
            hint.set_lower(hint.lower() + extra);
            if let Some(u) = hint.upper() {
                hint.set_upper(u + extra);
            }
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_fall_in_their_share() {
        let hits = (0..20_000).filter(|_| drawn(25.0)).count();
        assert!((4_000..6_000).contains(&hits), "{hits} of 20000 at 25 %");
        assert!((0..1000).all(|_| drawn(100.0)));
        assert!((0..1000).all(|_| !drawn(0.0)));
    }

    #[test]
    fn rules_match_their_caller_first() {
        let rule = |caller: Option<&str>, status: u16| FaultRule {
            caller: caller.map(str::to_string),
            faults: vec![Fault {
                abort: Some((http::StatusCode::from_u16(status).unwrap(), 100.0)),
                ..Fault::default()
            }],
        };
        let rules = vec![rule(Some("spiffe://m/web"), 402), rule(None, 421)];
        let web = Peer::Mesh {
            uris: vec!["spiffe://m/web".into()],
            xfcc: None,
            sni: None,
        };
        let status = |p: &Peer| for_peer(&rules, p).map(|f| f[0].abort.unwrap().0.as_u16());
        assert_eq!(status(&web), Some(402));
        assert_eq!(status(&Peer::Unauthenticated), Some(421));
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_body_takes_its_size_over_its_rate() {
        let body = http_body_util::Full::new(Bytes::from(vec![0u8; 100_000]));
        let mut throttle = Throttle::new(50_000);
        let start = Instant::now();
        let mut body = std::pin::pin!(body);
        let mut got = 0;
        loop {
            let frame = std::future::poll_fn(|cx| throttle.poll_frame(body.as_mut(), cx)).await;
            match frame {
                Some(Ok(f)) => got += f.into_data().map_or(0, |d| d.len()),
                _ => break,
            }
        }
        assert_eq!(got, 100_000);
        let took = start.elapsed();
        assert!((1900..=2100).contains(&took.as_millis()), "{took:?}");
    }
}
