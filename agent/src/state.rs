//! What the agent's admin endpoints report: the config in force, readiness
//! and whether the control plane is reachable. Written by the config stream
//! and the signal handler; read lock-free.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwapOption;

use crate::identity::CertInfo;

pub struct AppliedConfig {
    pub version: String,
    pub config: serde_json::Value,
    pub applied_at: SystemTime,
}

pub struct AgentState {
    applied: ArcSwapOption<AppliedConfig>,
    terminating: AtomicBool,
    cp_connected: AtomicBool,
    cert: ArcSwapOption<CertInfo>,
    /// When the next CSR goes (`RenewalClock`), for /certs.
    renew_at: ArcSwapOption<SystemTime>,
    /// Why this agent must not take traffic although it is configured.
    problem: ArcSwapOption<String>,
    pub started: Instant,
}

impl Default for AgentState {
    fn default() -> Self {
        AgentState {
            applied: ArcSwapOption::empty(),
            terminating: AtomicBool::new(false),
            cp_connected: AtomicBool::new(false),
            cert: ArcSwapOption::empty(),
            renew_at: ArcSwapOption::empty(),
            problem: ArcSwapOption::empty(),
            started: Instant::now(),
        }
    }
}

impl AgentState {
    pub fn applied(&self) -> Option<Arc<AppliedConfig>> {
        self.applied.load_full()
    }

    pub fn applied_version(&self) -> Option<String> {
        self.applied.load().as_ref().map(|a| a.version.clone())
    }

    pub fn set_applied(&self, version: String, config: serde_json::Value) {
        self.applied.store(Some(Arc::new(AppliedConfig {
            version,
            config,
            applied_at: SystemTime::now(),
        })));
    }

    /// The workload certificate in force, if mesh mTLS is on.
    pub fn cert(&self) -> Option<Arc<CertInfo>> {
        self.cert.load_full()
    }

    pub fn set_cert(&self, cert: Option<CertInfo>) {
        self.cert.store(cert.map(Arc::new));
    }

    /// When the agent will ask for the next certificate.
    pub fn renew_at(&self) -> Option<SystemTime> {
        self.renew_at.load().as_deref().copied()
    }

    pub fn set_renew_at(&self, at: SystemTime) {
        self.renew_at.store(Some(Arc::new(at)));
    }

    pub fn problem(&self) -> Option<Arc<String>> {
        self.problem.load_full()
    }

    pub fn set_problem(&self, problem: String) {
        self.problem.store(Some(Arc::new(problem)));
    }

    pub fn set_terminating(&self) {
        self.terminating.store(true, Ordering::Relaxed);
    }

    pub fn is_terminating(&self) -> bool {
        self.terminating.load(Ordering::Relaxed)
    }

    pub fn set_cp_connected(&self, connected: bool) {
        self.cp_connected.store(connected, Ordering::Relaxed);
    }

    pub fn cp_connected(&self) -> bool {
        self.cp_connected.load(Ordering::Relaxed)
    }
}
