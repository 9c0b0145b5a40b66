//! Each instance's own connection besides the pool: it LISTENs to the
//! change feed and holds the leader's advisory lock. PostgreSQL releases
//! the lock when the connection ends, so a leader that dies (even by
//! SIGKILL: its socket closes) hands over within a campaign interval.

use std::time::Duration;

use futures::StreamExt;
use koguma_api::ResourceType;
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::Change;

/// The advisory lock whose holder leads.
const LEADER_LOCK: i64 = 0x6b6f_6775_6d61_0002;
/// How often a follower tries to take the lead, and a leader checks that
/// it still holds it.
const CAMPAIGN_INTERVAL: Duration = Duration::from_millis(500);
/// Changes queued for the catalog before the feed waits for it.
const QUEUE: usize = 4096;

pub fn start(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
) -> (mpsc::Receiver<Change>, watch::Receiver<bool>) {
    let (changes_tx, changes) = mpsc::channel(QUEUE);
    let (leader_tx, leader) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let reason = session(&config, tls.clone(), &changes_tx, &leader_tx).await;
            leader_tx.send_if_modified(|l| std::mem::replace(l, false));
            if changes_tx.is_closed() {
                return;
            }
            tracing::warn!(%reason, "lost the store's change feed; reconnecting (the catalog is read again then)");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    (changes, leader)
}

/// One connection's life: returns why it ended.
async fn session(
    config: &tokio_postgres::Config,
    tls: MakeRustlsConnect,
    changes: &mpsc::Sender<Change>,
    leader: &watch::Sender<bool>,
) -> String {
    let (client, mut connection) = match config.connect(tls).await {
        Ok(c) => c,
        Err(e) => return super::describe(&e),
    };
    // Notifications arrive only to whoever polls the connection.
    let (note_tx, mut notes) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = note_tx.send(n.payload().to_string());
                }
                Ok(_) => {}
                Err(e) => return super::describe(&e),
            }
        }
        "the server closed the connection".to_string()
    });
    let _abort = AbortOnDrop(driver.abort_handle());
    if let Err(e) = client.batch_execute("LISTEN koguma_changes").await {
        return super::describe(&e);
    }
    // Whatever changed while nobody listened.
    if changes.send(Change::Everything).await.is_err() {
        return "stopping".into();
    }
    let mut campaign = tokio::time::interval(CAMPAIGN_INTERVAL);
    loop {
        tokio::select! {
            note = notes.recv() => {
                let Some(payload) = note else {
                    return match driver.await {
                        Ok(reason) => reason,
                        Err(e) => e.to_string(),
                    };
                };
                match parse(&payload) {
                    Some(change) => {
                        if changes.send(change).await.is_err() {
                            return "stopping".into();
                        }
                    }
                    None => tracing::warn!(payload, "a change notice koguma-cp cannot read"),
                }
            }
            _ = campaign.tick() => {
                let leading = *leader.borrow();
                let held = if leading {
                    client.simple_query("SELECT 1").await.map(|_| true)
                } else {
                    client
                        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
                        .await
                        .map(|r| r.get::<_, bool>(0))
                };
                match held {
                    Ok(held) => {
                        if held && !leading {
                            tracing::info!("this instance is the leader now");
                        }
                        leader.send_if_modified(|l| std::mem::replace(l, held) != held);
                    }
                    Err(e) => return super::describe(&e),
                }
            }
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(serde::Deserialize)]
struct Notice {
    table: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    mesh: String,
    name: String,
}

fn parse(payload: &str) -> Option<Change> {
    let n: Notice = serde_json::from_str(payload).ok()?;
    match n.table.as_str() {
        "resources" => {
            let rtype = ResourceType::from_kind(n.kind.as_deref()?)?;
            Some(Change::Resource((rtype, n.mesh, n.name)))
        }
        "secrets" => Some(Change::Secret {
            mesh: n.mesh,
            name: n.name,
        }),
        "sessions" => Some(Change::Session((n.mesh, n.name))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_name_what_changed() {
        assert_eq!(
            parse(r#"{"table":"resources","type":"MeshTimeout","mesh":"default","name":"t"}"#),
            Some(Change::Resource((
                ResourceType::MeshTimeout,
                "default".into(),
                "t".into()
            )))
        );
        assert_eq!(
            parse(r#"{"table":"secrets","type":null,"mesh":"m","name":"ca"}"#),
            Some(Change::Secret {
                mesh: "m".into(),
                name: "ca".into()
            })
        );
        assert_eq!(
            parse(r#"{"table":"sessions","type":"Dataplane","mesh":"m","name":"d"}"#),
            Some(Change::Session(("m".into(), "d".into())))
        );
        assert_eq!(
            parse(r#"{"table":"resources","type":"Nope","mesh":"","name":"x"}"#),
            None
        );
    }
}
