//! MeshRateLimit's local limits: Envoy's token bucket with `max_tokens =
//! tokens_per_fill = num`, i.e. `num` tokens per `interval`, refilled whole
//! at each interval since the bucket was made. One atomic word; no lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimitConfig;

pub struct TokenBucket {
    num: u32,
    interval_ms: u64,
    start: Instant,
    /// The interval the tokens were last taken in (high 32 bits) and how
    /// many were taken in it (low 32).
    state: AtomicU64,
}

impl TokenBucket {
    pub fn new(num: u32, interval: Duration) -> TokenBucket {
        TokenBucket {
            num,
            interval_ms: (interval.as_millis() as u64).max(1),
            start: Instant::now(),
            state: AtomicU64::new(0),
        }
    }

    /// Takes a token; false when none is left in this interval.
    pub fn try_take(&self) -> bool {
        let window = (self.start.elapsed().as_millis() as u64 / self.interval_ms) & 0xffff_ffff;
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let taken = if current >> 32 == window {
                current & 0xffff_ffff
            } else {
                0
            };
            if taken >= u64::from(self.num) {
                return false;
            }
            let next = (window << 32) | (taken + 1);
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }
}

/// An inbound's HTTP limit: its bucket and the answer beyond it.
pub struct HttpRateLimit {
    pub bucket: std::sync::Arc<TokenBucket>,
    pub config: RateLimitConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn num_tokens_per_interval_then_a_full_bucket_again() {
        let bucket = TokenBucket::new(10, Duration::from_secs(1));
        let taken = (0..25).filter(|_| bucket.try_take()).count();
        assert_eq!(taken, 10);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(!bucket.try_take(), "no refill within the interval");
        tokio::time::advance(Duration::from_millis(500)).await;
        let taken = (0..25).filter(|_| bucket.try_take()).count();
        assert_eq!(taken, 10, "refilled whole at the next interval");
    }
}
