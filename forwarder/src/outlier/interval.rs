//! The interval detectors: every `interval`, the success rate and the
//! failure percentage of each endpoint over that interval, against its
//! peers' (Envoy's `success_rate` and `failure_percentage`). Evaluated by
//! whichever request finishes first after the interval is up, so no task
//! runs for a cluster nobody uses.

use std::sync::atomic::Ordering::Relaxed;

use super::{Ejection, EndpointHealth, HealthRegistry, ms};
use crate::config::OutlierDetection;

impl HealthRegistry {
    /// Whether this caller is the one to evaluate now (one per interval).
    pub fn evaluation_due(&self, cfg: &OutlierDetection, now: u64) -> bool {
        if !cfg.enabled || (cfg.success_rate.is_none() && cfg.failure_percentage.is_none()) {
            return false;
        }
        let next = self.next_evaluation.load(Relaxed);
        if next == 0 {
            // The first interval starts now.
            let _ =
                self.next_evaluation
                    .compare_exchange(0, now + ms(cfg.interval), Relaxed, Relaxed);
            return false;
        }
        now >= next
            && self
                .next_evaluation
                .compare_exchange(next, now + ms(cfg.interval), Relaxed, Relaxed)
                .is_ok()
    }
}

/// Which of `endpoints` the interval's outcomes single out, and why. Every
/// endpoint's counts start again.
pub fn evaluate(cfg: &OutlierDetection, endpoints: &[&EndpointHealth]) -> Vec<(usize, Ejection)> {
    let windows: Vec<(u32, u32)> = endpoints.iter().map(|e| e.take_window()).collect();
    let mut out = Vec::new();
    if let Some(sr) = &cfg.success_rate {
        let rates: Vec<(usize, f64)> = windows
            .iter()
            .enumerate()
            .filter(|(_, (total, _))| *total >= sr.request_volume.max(1))
            .map(|(i, (total, failed))| (i, 100.0 * f64::from(total - failed) / f64::from(*total)))
            .collect();
        if !rates.is_empty() && rates.len() >= sr.minimum_hosts as usize {
            let n = rates.len() as f64;
            let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / n;
            let var = rates.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
            let limit = mean - sr.stdev_factor * var.sqrt();
            out.extend(
                rates
                    .iter()
                    .filter(|(_, r)| *r < limit)
                    .map(|(i, _)| (*i, Ejection::SuccessRate)),
            );
        }
    }
    if let Some(fp) = &cfg.failure_percentage {
        let eligible: Vec<(usize, f64)> = windows
            .iter()
            .enumerate()
            .filter(|(_, (total, _))| *total >= fp.request_volume.max(1))
            .map(|(i, (total, failed))| (i, 100.0 * f64::from(*failed) / f64::from(*total)))
            .collect();
        if !eligible.is_empty() && eligible.len() >= fp.minimum_hosts as usize {
            for (i, pct) in eligible {
                if pct >= f64::from(fp.threshold) && !out.iter().any(|(j, _)| *j == i) {
                    out.push((i, Ejection::FailurePercentage));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FailurePercentageDetector, SuccessRateDetector};
    use crate::outlier::Outcome;

    fn cfg() -> OutlierDetection {
        OutlierDetection {
            success_rate: Some(SuccessRateDetector {
                minimum_hosts: 3,
                request_volume: 10,
                stdev_factor: 1.0,
            }),
            failure_percentage: Some(FailurePercentageDetector {
                minimum_hosts: 3,
                request_volume: 10,
                threshold: 90,
            }),
            ..OutlierDetection::default()
        }
    }

    fn with(total: u32, failed: u32) -> EndpointHealth {
        let h = EndpointHealth::default();
        let c = OutlierDetection {
            consecutive_gateway: None,
            ..cfg()
        };
        for i in 0..total {
            let status = if i < failed { 500 } else { 200 };
            h.record(&c, Outcome::Response(status), 1);
        }
        h
    }

    #[test]
    fn an_endpoint_far_below_its_peers_success_rate_is_singled_out() {
        let hs = [with(20, 0), with(20, 1), with(20, 0), with(20, 12)];
        let refs: Vec<&EndpointHealth> = hs.iter().collect();
        assert_eq!(evaluate(&cfg(), &refs), vec![(3, Ejection::SuccessRate)]);
        // The counts started again: nothing this time.
        assert!(evaluate(&cfg(), &refs).is_empty());
    }

    #[test]
    fn too_few_requests_or_hosts_decide_nothing() {
        let hs = [with(5, 5), with(20, 0), with(20, 0)];
        let refs: Vec<&EndpointHealth> = hs.iter().collect();
        assert!(evaluate(&cfg(), &refs).is_empty());
    }

    #[test]
    fn failure_percentage_needs_no_peer_to_compare_with_beyond_the_minimum() {
        let c = OutlierDetection {
            success_rate: None,
            ..cfg()
        };
        let hs = [with(20, 19), with(20, 18), with(20, 20)];
        let refs: Vec<&EndpointHealth> = hs.iter().collect();
        let out = evaluate(&c, &refs);
        assert_eq!(
            out,
            vec![
                (0, Ejection::FailurePercentage),
                (1, Ejection::FailurePercentage),
                (2, Ejection::FailurePercentage)
            ]
        );
    }
}
