//! A listener's faults, rate limits and access log, as its route holds
//! them; and what is kept of them across configs: sinks (their open files
//! and connections) and rate limit buckets (their tokens), so that a
//! config update neither reopens the one nor refills the other.

use std::collections::HashMap;
use std::sync::Arc;

use crate::access_log::{ListenerLog, Sink};
use crate::config::{
    AccessLogConfig, FaultRule, ListenerTrafficConfig, RateLimitConfig, SinkConfig,
};
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
    /// The sink for `cfg`: this config's or the running one, else a new
    /// one.
    fn sink(&mut self, running: &TrafficState, cfg: &SinkConfig, stats: &Stats) -> Arc<Sink> {
        if let Some(s) = self.sinks.get(cfg) {
            return s.clone();
        }
        let s = running.sinks.get(cfg).cloned().unwrap_or_else(|| {
            let name = match cfg {
                SinkConfig::File(p) => format!("file:{}", p.display()),
                SinkConfig::Tcp(a) => format!("tcp:{a}"),
                SinkConfig::Otel { endpoint, .. } => format!("otel:{endpoint}"),
            };
            Arc::new(Sink::start(cfg, stats.sink(&name)))
        });
        self.sinks.insert(cfg.clone(), s.clone());
        s
    }

    /// The access log of a listener whose traffic goes to `cluster`;
    /// `None` without sinks.
    pub fn log(
        &mut self,
        running: &TrafficState,
        cluster: &str,
        logs: &[AccessLogConfig],
        stats: &Stats,
    ) -> Option<Arc<ListenerLog>> {
        if logs.is_empty() {
            return None;
        }
        let entries = logs
            .iter()
            .map(|a| (self.sink(running, &a.sink, stats), a.format.clone()))
            .collect();
        Some(Arc::new(ListenerLog::new(entries, cluster)))
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
        let log = self.log(running, cluster, &cfg.access_logs, stats);
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
