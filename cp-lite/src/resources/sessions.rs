//! Which instance serves each dataplane's stream, and whether its peers
//! send it traffic: stored, so that every instance knows, and written only
//! when it changes (not at every ACK).

use std::time::Duration;

use koguma_api::ResourceType;

use super::{ResourceError, Resources};
use crate::catalog::DataplaneKey;
use crate::store::Session;

impl Resources {
    /// A stream of the dataplane connected here: this instance serves it
    /// now, whoever did before.
    pub async fn claim(&self, rtype: ResourceType, key: &DataplaneKey, draining: bool) {
        self.write_session(self.new_session(rtype, key, draining))
            .await;
    }

    /// A session this instance starts serving now.
    fn new_session(&self, rtype: ResourceType, key: &DataplaneKey, draining: bool) -> Session {
        Session {
            rtype,
            key: key.clone(),
            instance: self.instance.clone(),
            draining,
            connect_time: crate::store::now_rfc3339(),
        }
    }

    /// Whether the dataplane's peers send it traffic, as this instance
    /// (which serves its stream) says.
    pub async fn set_draining(&self, rtype: ResourceType, key: &DataplaneKey, draining: bool) {
        let written = self.own_sessions().get(key).cloned();
        let session = match written {
            Some(s) if s.draining == draining => return self.show_draining(key, draining).await,
            Some(s) => Session { draining, ..s },
            None => self.new_session(rtype, key, draining),
        };
        self.write_session(session).await;
    }

    async fn write_session(&self, session: Session) {
        let key = session.key.clone();
        let draining = session.draining;
        match self.store.put_session(&session).await {
            Ok(()) => {
                self.own_sessions().insert(key.clone(), session);
            }
            Err(e) => {
                tracing::warn!(mesh = %key.0, name = %key.1, error = %e, "cannot store the dataplane's session; other instances learn of it at their next resync");
            }
        }
        self.show_draining(&key, draining).await;
    }

    /// Publishes the draining state if the catalog does not show it yet.
    async fn show_draining(&self, key: &DataplaneKey, draining: bool) {
        if self.catalog().draining.contains(key) == draining {
            return;
        }
        let _guard = self.lock().await;
        self.publish_if(|c| c.set_draining(key, draining));
    }

    pub(super) fn own_sessions(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<DataplaneKey, Session>> {
        self.own_sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the dataplane's stream was last served by `instance` (or by
    /// none that anyone recorded).
    pub(super) async fn served_by(
        &self,
        key: &DataplaneKey,
        instance: &str,
    ) -> Result<bool, ResourceError> {
        Ok(self
            .store
            .session(key)
            .await?
            .is_none_or(|s| s.instance == instance))
    }

    /// This instance no longer serves the dataplane's stream: its peers
    /// stop sending it traffic, unless its agent is served by another
    /// instance by now. Returns whether it was still this instance's.
    pub async fn release(&self, rtype: ResourceType, key: &DataplaneKey) -> bool {
        match self.served_by(key, &self.instance).await {
            Ok(true) => {
                self.set_draining(rtype, key, true).await;
                true
            }
            Ok(false) => {
                self.own_sessions().remove(key);
                false
            }
            Err(e) => {
                tracing::warn!(mesh = %key.0, name = %key.1, error = %e, "cannot read the dataplane's session; leaving it in its peers' endpoints");
                false
            }
        }
    }

    /// A dataplane whose instance died and whose agent did not come back:
    /// out of its peers' endpoints, its session still the dead instance's.
    pub async fn orphaned(&self, session: &Session) -> Result<(), ResourceError> {
        let session = Session {
            draining: true,
            ..session.clone()
        };
        self.store.put_session(&session).await?;
        self.show_draining(&session.key, true).await;
        Ok(())
    }

    /// The stored sessions: which instance serves which dataplane.
    pub async fn sessions(&self) -> Result<Vec<Session>, ResourceError> {
        Ok(self.store.sessions().await?)
    }

    pub async fn heartbeat(&self) -> Result<(), ResourceError> {
        Ok(self.store.heartbeat(&self.instance).await?)
    }

    pub async fn live_instances(&self, within: Duration) -> Result<Vec<String>, ResourceError> {
        Ok(self.store.live_instances(within).await?)
    }

    pub async fn forget_instances(&self, silent_for: Duration) -> Result<(), ResourceError> {
        Ok(self.store.forget_instances(silent_for).await?)
    }
}
