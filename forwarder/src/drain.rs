//! Graceful drain: a trigger that tells every holder of a [`DrainWatch`] to
//! wind down, then waits until all of them have let go (or a deadline).
//! Each connection task holds a watch; the process exits when none is left.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

pub struct DrainTrigger {
    signal: watch::Sender<bool>,
    released: mpsc::Receiver<()>,
}

#[derive(Clone)]
pub struct DrainWatch {
    signal: watch::Receiver<bool>,
    // Never sent on: its only purpose is to be dropped, which is how the
    // trigger learns that this holder is done.
    _held: mpsc::Sender<()>,
}

pub fn channel() -> (DrainTrigger, DrainWatch) {
    let (signal, signal_rx) = watch::channel(false);
    let (held, released) = mpsc::channel(1);
    (
        DrainTrigger { signal, released },
        DrainWatch {
            signal: signal_rx,
            _held: held,
        },
    )
}

impl DrainTrigger {
    /// Signals the drain without waiting for it.
    pub fn signal(&self) {
        self.signal.send_replace(true);
    }

    /// Signals the drain and waits until every watch is dropped or `deadline`
    /// passes. Returns whether everyone finished in time.
    pub async fn drain(mut self, deadline: Duration) -> bool {
        self.signal();
        tokio::time::timeout(deadline, self.released.recv())
            .await
            .is_ok()
    }
}

impl DrainWatch {
    /// Resolves once the drain has been signalled (at once if it already was,
    /// and also if the trigger is gone).
    pub async fn signaled(&self) {
        let mut rx = self.signal.clone();
        let _ = rx.wait_for(|draining| *draining).await;
    }

    pub fn is_signaled(&self) -> bool {
        *self.signal.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_holders() {
        let (trigger, watch) = channel();
        let held = watch.clone();
        drop(watch);
        let task = tokio::spawn(async move {
            held.signaled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(held);
        });
        assert!(trigger.drain(Duration::from_secs(5)).await);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn drain_gives_up_at_the_deadline() {
        let (trigger, watch) = channel();
        assert!(!trigger.drain(Duration::from_millis(20)).await);
        assert!(watch.is_signaled());
    }
}
