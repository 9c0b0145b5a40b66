//! A listener's faults, rate limits and access log, as its route holds
//! them; and what is kept of them across configs: sinks (their open files
//! and connections) and rate limit buckets (their tokens), so that a
//! config update neither reopens the one nor refills the other.

use std::collections::HashMap;
use std::sync::Arc;

use crate::access_log::{ListenerLog, Sink};
use crate::config::{FaultRule, ListenerTrafficConfig, RateLimitConfig, SinkConfig};
use crate::rate_limit::{HttpRateLimit, TokenBucket};
use crate::stats::Stats;

#[derive(Default)]
pub struct ListenerTraffic {
    pub faults: Vec<FaultRule>,
    pub http_limit: Option<HttpRateLimit>,
    pub tcp_limit: Option<Arc<TokenBucket>>,
    pub log: Option<Arc<ListenerLog>>,
}

/// Sinks by where they write; buckets by listener and limit.
#[derive(Default, Clone)]
pub struct TrafficState {
    pub sinks: HashMap<SinkConfig, Arc<Sink>>,
    pub buckets: HashMap<String, Arc<TokenBucket>>,
}

impl TrafficState {
    /// The sink for `cfg`: the running one, else a new one.
    pub fn sink(&mut self, running: &TrafficState, cfg: &SinkConfig, stats: &Stats) -> Arc<Sink> {
        if let Some(s) = self.sinks.get(cfg).or_else(|| running.sinks.get(cfg)) {
            let s = s.clone();
            self.sinks.insert(cfg.clone(), s.clone());
            return s;
        }
        let name = match cfg {
            SinkConfig::File(p) => format!("file:{}", p.display()),
            SinkConfig::Tcp(a) => format!("tcp:{a}"),
            SinkConfig::Otel { endpoint, .. } => format!("otel:{endpoint}"),
        };
        let s = Arc::new(Sink::start(cfg, stats.sink(&name)));
        self.sinks.insert(cfg.clone(), s.clone());
        s
    }

    fn bucket(
        &mut self,
        running: &TrafficState,
        key: String,
        cfg: &RateLimitConfig,
    ) -> Arc<TokenBucket> {
        let key = format!("{key}|{}|{:?}", cfg.num, cfg.interval);
        let b = running
            .buckets
            .get(&key)
            .cloned()
            .unwrap_or_else(|| Arc::new(TokenBucket::new(cfg.num, cfg.interval)));
        self.buckets.insert(key, b.clone());
        b
    }

    /// What listener `name` (whose traffic goes to `cluster`) does with
    /// its traffic under `cfg`.
    pub fn listener(
        &mut self,
        running: &TrafficState,
        name: &str,
        cluster: &str,
        cfg: &ListenerTrafficConfig,
        stats: &Stats,
    ) -> ListenerTraffic {
        let log = (!cfg.access_logs.is_empty()).then(|| {
            let entries = cfg
                .access_logs
                .iter()
                .map(|a| (self.sink(running, &a.sink, stats), a.format.clone()))
                .collect();
            Arc::new(ListenerLog::new(entries, cluster))
        });
        ListenerTraffic {
            faults: cfg.faults.clone(),
            http_limit: cfg.http_rate_limit.as_ref().map(|c| HttpRateLimit {
                bucket: self.bucket(running, format!("{name}|http"), c),
                config: c.clone(),
            }),
            tcp_limit: cfg
                .tcp_rate_limit
                .as_ref()
                .map(|c| self.bucket(running, format!("{name}|tcp"), c)),
            log,
        }
    }
}
