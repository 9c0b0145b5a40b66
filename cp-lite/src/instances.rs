//! This instance among the others on one store: it says it is alive, and
//! when it leads, it does the work that must happen once. On a store with
//! one writer (SQLite) it always leads.
//!
//! The leader's work: VIPs for services that came through any instance
//! (`Resources` allocates them as changes arrive), and dataplanes whose
//! instance died: after the deregistration delay, those the agent
//! registered are deregistered and the others stop getting traffic, unless
//! their agent has reconnected to a live instance by then.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::catalog::DataplaneKey;
use crate::resources::Resources;
use crate::store::Session;

/// How often an instance says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long an instance may be silent before it counts as dead.
pub const INSTANCE_SILENCE: Duration = Duration::from_secs(5);

pub async fn run(resources: Arc<Resources>, deregistration_delay: Duration) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    // On a store with one writer `Resources::open` did the new leader's
    // work already; a shared store's leader is not known until the
    // campaign is won.
    let mut was_leader = resources.leadership().is_none();
    // Dataplanes of dead instances, and since when the leader knows it.
    let mut orphans: HashMap<DataplaneKey, Instant> = HashMap::new();
    loop {
        tick.tick().await;
        if let Err(e) = resources.heartbeat().await {
            tracing::warn!(error = %e, "cannot record this instance's heartbeat in the store");
        }
        let leader = resources.is_leader();
        if leader && !was_leader {
            if resources.leadership().is_some() {
                tracing::info!(
                    instance = resources.instance(),
                    "leading: VIP allocation and cleanup of dead instances' dataplanes run here"
                );
            }
            if let Err(e) = resources.allocate_all_vips().await {
                tracing::warn!(error = %e, "cannot allocate VIPs");
            }
        }
        was_leader = leader;
        if !leader {
            orphans.clear();
            continue;
        }
        if let Err(e) = clean_up(&resources, &mut orphans, deregistration_delay).await {
            tracing::warn!(error = %e, "cannot clean up the dataplanes of dead instances");
        }
    }
}

async fn clean_up(
    resources: &Resources,
    orphans: &mut HashMap<DataplaneKey, Instant>,
    delay: Duration,
) -> Result<(), crate::resources::ResourceError> {
    let live = resources.live_instances(INSTANCE_SILENCE).await?;
    resources.forget_instances(INSTANCE_SILENCE).await?;
    let sessions: Vec<Session> = resources
        .sessions()
        .await?
        .into_iter()
        .filter(|s| !live.contains(&s.instance))
        .collect();
    let now = Instant::now();
    orphans.retain(|k, _| sessions.iter().any(|s| &s.key == k));
    for session in sessions {
        let since = *orphans.entry(session.key.clone()).or_insert(now);
        if now.duration_since(since) < delay {
            continue;
        }
        let key = &session.key;
        if resources
            .deregister(session.rtype, key, &session.instance)
            .await?
        {
            tracing::info!(kind = session.rtype.kind(), mesh = %key.0, name = %key.1, instance = %session.instance, "deregistered: its control-plane instance died and its agent did not come back");
        } else if !session.draining {
            resources.orphaned(&session).await?;
            tracing::info!(kind = session.rtype.kind(), mesh = %key.0, name = %key.1, instance = %session.instance, "out of its peers' endpoints: its control-plane instance died and its agent did not come back");
        }
        orphans.remove(key);
    }
    Ok(())
}

/// Runs `work` while this instance leads: started when it becomes the
/// leader, dropped when it stops being it (another instance takes over),
/// started again should it lead again. Returns what `work` returns when it
/// ends on its own.
pub async fn while_leading<T, F, Fut>(resources: &Resources, what: &str, mut work: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let Some(mut leadership) = resources.leadership() else {
        return work().await;
    };
    loop {
        if leadership.wait_for(|l| *l).await.is_err() {
            return std::future::pending().await;
        }
        tracing::info!(what, "leading: starting");
        tokio::select! {
            done = work() => return done,
            _ = leadership.wait_for(|l| !*l) => {
                tracing::info!(what, "no longer leading: stopped here; the new leader runs it");
            }
        }
    }
}

/// Resolves when this instance becomes the leader (never, when it always is).
pub async fn became_leader(leadership: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    let Some(rx) = leadership else {
        return std::future::pending().await;
    };
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        if *rx.borrow_and_update() {
            return;
        }
    }
}
