//! The admin console's PAUSE and RESUME: while paused, no server connection
//! is checked out — clients' next transactions (and new logins) wait at the
//! gate — so that maintenance can have the servers to itself; RESUME lets
//! them through in order of arrival.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::watch;

/// Open, or closed while paused.
pub(crate) struct PauseGate {
    paused: watch::Sender<bool>,
    waiting: AtomicUsize,
}

impl Default for PauseGate {
    fn default() -> Self {
        PauseGate { paused: watch::Sender::new(false), waiting: AtomicUsize::new(0) }
    }
}

impl PauseGate {
    /// Closes the gate; false when it already was.
    pub(crate) fn pause(&self) -> bool {
        !self.paused.send_replace(true)
    }

    /// Opens the gate; false when it was open.
    pub(crate) fn resume(&self) -> bool {
        self.paused.send_replace(false)
    }

    /// Clients waiting at the gate now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Returns at once while open; while paused, when RESUME opens it.
    pub(crate) async fn pass(&self) {
        let mut paused = self.paused.subscribe();
        if !*paused.borrow_and_update() {
            return;
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _ = paused.wait_for(|paused| !paused).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_paused_gate_holds_until_resumed() {
        let gate = std::sync::Arc::new(PauseGate::default());
        gate.pass().await;
        assert!(gate.pause());
        assert!(!gate.pause(), "already paused");
        let waiter = tokio::spawn({
            let gate = std::sync::Arc::clone(&gate);
            async move { gate.pass().await }
        });
        while gate.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        assert!(gate.resume());
        waiter.await.unwrap();
        assert_eq!(gate.waiting(), 0);
        assert!(!gate.resume(), "already open");
    }
}
