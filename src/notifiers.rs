//! Who sent a notification. A NotificationResponse carries the process id of
//! the server backend that ran NOTIFY; a client must see the id pgtenant gave
//! the sending client in its BackendKeyData, whichever server session (and,
//! in transaction pooling, whichever turn on it) carried that NOTIFY.

use std::collections::HashMap;
use std::sync::Mutex;

/// Entries kept before the map starts over (server pids are reused, and a
/// forgotten entry only shows a server pid).
const CAPACITY: usize = 65_536;

/// Server backend pid → the client pid of the last client that sent NOTIFY through it.
#[derive(Default)]
pub struct Notifiers {
    senders: Mutex<HashMap<i32, i32>>,
}

impl Notifiers {
    /// `client_pid` sent a NOTIFY on the backend `server_pid`.
    pub(crate) fn record(&self, server_pid: i32, client_pid: i32) {
        let mut senders = self.lock();
        if senders.len() >= CAPACITY && !senders.contains_key(&server_pid) {
            senders.clear();
        }
        senders.insert(server_pid, client_pid);
    }

    /// The client pid behind notifications from the backend `server_pid`.
    pub(crate) fn client_of(&self, server_pid: i32) -> Option<i32> {
        self.lock().get(&server_pid).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, i32>> {
        // Entries are inserted whole; a poisoned map is still consistent.
        self.senders.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
