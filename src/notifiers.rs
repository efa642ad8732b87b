//! Who sent a notification. A NotificationResponse carries the process id of
//! the server backend that ran NOTIFY; a client must see the id pgtenant gave
//! the sending client in its BackendKeyData, whichever server session (and,
//! in transaction pooling, whichever turn on it) carried that NOTIFY.
//!
//! A notification is read after its transaction committed, possibly after
//! the next client's NOTIFY on the same backend: senders are kept per
//! backend *and tenant* (the channel prefix), so a late notification can at
//! worst show another client of its own tenant, never another tenant's.

use std::collections::HashMap;
use std::sync::Mutex;

/// Entries kept before the map starts over (server pids are reused, and a
/// forgotten entry only shows a server pid).
const CAPACITY: usize = 65_536;

/// (Server backend pid, tenant channel prefix) → the client pid of the last
/// client of that tenant that sent NOTIFY through it.
#[derive(Default)]
pub struct Notifiers {
    senders: Mutex<HashMap<(i32, String), i32>>,
}

impl Notifiers {
    /// `client_pid`, whose tenant's channels start with `prefix`, sent a
    /// NOTIFY on the backend `server_pid`.
    pub(crate) fn record(&self, server_pid: i32, prefix: &str, client_pid: i32) {
        let mut senders = self.lock();
        let key = (server_pid, prefix.to_owned());
        if senders.len() >= CAPACITY && !senders.contains_key(&key) {
            senders.clear();
        }
        senders.insert(key, client_pid);
    }

    /// The client pid behind notifications on the tenant's channels (`prefix`)
    /// from the backend `server_pid`.
    pub(crate) fn client_of(&self, server_pid: i32, prefix: &str) -> Option<i32> {
        self.lock().get(&(server_pid, prefix.to_owned())).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i32, String), i32>> {
        // Entries are inserted whole; a poisoned map is still consistent.
        self.senders.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_sender_of_another_tenant_does_not_take_over() {
        let notifiers = Notifiers::default();
        notifiers.record(100, "ta.", 1);
        notifiers.record(100, "tb.", 2);
        assert_eq!(notifiers.client_of(100, "ta."), Some(1));
        assert_eq!(notifiers.client_of(100, "tb."), Some(2));
        assert_eq!(notifiers.client_of(101, "ta."), None);
        notifiers.record(100, "ta.", 3);
        assert_eq!(notifiers.client_of(100, "ta."), Some(3));
    }
}
