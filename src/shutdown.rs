//! Stopping: the signals that stop the process, and the one flag every
//! long-running task watches.

use tokio::sync::watch;

/// Fires the stop flag (held by the server).
pub(crate) struct Trigger(watch::Sender<bool>);

/// A task's view of the stop flag.
#[derive(Clone)]
pub(crate) struct Shutdown(watch::Receiver<bool>);

/// A fresh, unfired flag.
pub(crate) fn channel() -> (Trigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (Trigger(sender), Shutdown(receiver))
}

impl Trigger {
    /// Tells every task to stop.
    pub(crate) fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Resolves once the flag is fired (or its trigger is gone).
    pub(crate) async fn requested(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
