//! The registry of open client sessions: what `GET /v1/sessions` lists, and
//! the switch that ends a session from outside (admin API, a disabled login,
//! a suspended tenant).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::Notify;

use crate::access::Access;
use crate::error::ClientError;

/// What a session is doing, as the relay last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SessionState {
    /// Waiting for the client.
    Idle,
    /// A query or exchange is in flight.
    Active,
    /// Between statements of an open transaction.
    IdleInTransaction,
    /// Between statements of a failed transaction.
    IdleInFailedTransaction,
}

impl SessionState {
    /// As `/v1/sessions` spells it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SessionState::Idle => "idle",
            SessionState::Active => "active",
            SessionState::IdleInTransaction => "idle_in_transaction",
            SessionState::IdleInFailedTransaction => "idle_in_failed_transaction",
        }
    }

    fn from_u8(v: u8) -> SessionState {
        match v {
            1 => SessionState::Active,
            2 => SessionState::IdleInTransaction,
            3 => SessionState::IdleInFailedTransaction,
            _ => SessionState::Idle,
        }
    }
}

/// Who a session is, fixed at login.
#[derive(Debug, Clone)]
pub struct SessionIdentity {
    pub username: String,
    pub tenant_id: String,
    pub tenant_slug: String,
    /// The login's access level: which upstream role serves the session.
    pub access: Access,
    /// The visible field of the session's context: the tenant itself, or, for a
    /// tenant placed on another upstream, its signed subtree (comma-separated).
    pub visible_tenants: String,
    /// The session logged in with a token: no login row stands behind it,
    /// the catalog re-checks its tenant only.
    pub via_token: bool,
    /// A token login's verified subject.
    pub subject: Option<String>,
    pub client_addr: SocketAddr,
    pub application_name: String,
    pub connected_at: SystemTime,
}

/// One live session as the registry holds it.
pub(crate) struct SessionEntry {
    pub id: i32,
    pub identity: SessionIdentity,
    state: AtomicU8,
    /// Why the session was ended, once someone ends it.
    end: Mutex<Option<ClientError>>,
    /// Wakes the session's relay (a Notify, not a watch channel: an idle
    /// session should not carry a channel's eight wait lists).
    ending: Notify,
}

impl SessionEntry {
    fn end_with(&self, reason: ClientError) {
        *self.end.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(reason);
        self.ending.notify_one();
    }

    fn end_reason(&self) -> Option<ClientError> {
        self.end.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub(crate) fn state(&self) -> SessionState {
        SessionState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub(crate) fn set_state(&self, state: SessionState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }
}

/// A point-in-time copy of a session, for listings.
#[derive(Debug, Clone)]
pub struct SessionSnapshot {
    pub id: i32,
    pub identity: SessionIdentity,
    pub(crate) state: SessionState,
}

/// All live sessions of this process.
#[derive(Default)]
pub struct SessionRegistry {
    sessions: Mutex<HashMap<i32, Arc<SessionEntry>>>,
}

impl SessionRegistry {
    /// Adds a session under `id` (its cancel key's process id, unique while live).
    pub(crate) fn register(self: &Arc<Self>, id: i32, identity: SessionIdentity) -> SessionHandle {
        let entry = Arc::new(SessionEntry {
            id,
            identity,
            state: AtomicU8::new(0),
            end: Mutex::new(None),
            ending: Notify::new(),
        });
        self.lock().insert(id, Arc::clone(&entry));
        SessionHandle { registry: Arc::clone(self), entry }
    }

    /// Every live session, ordered by id.
    pub fn list(&self) -> Vec<SessionSnapshot> {
        let mut out: Vec<SessionSnapshot> = self
            .lock()
            .values()
            .map(|e| SessionSnapshot { id: e.id, identity: e.identity.clone(), state: e.state() })
            .collect();
        out.sort_by_key(|s| s.id);
        out
    }

    /// Ends session `id` with `reason`; false when no such session is live.
    pub(crate) fn terminate(&self, id: i32, reason: ClientError) -> bool {
        let entry = self.lock().get(&id).cloned();
        match entry {
            Some(entry) => {
                entry.end_with(reason);
                true
            }
            None => false,
        }
    }

    /// Ends every session for which `matches` holds; returns how many.
    pub fn terminate_where(&self, matches: impl Fn(&SessionIdentity) -> bool, reason: ClientError) -> usize {
        let doomed: Vec<Arc<SessionEntry>> = self.lock().values().filter(|e| matches(&e.identity)).cloned().collect();
        for entry in &doomed {
            entry.end_with(reason.clone());
        }
        doomed.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Arc<SessionEntry>>> {
        // Entries are replaced whole; a poisoned map is still consistent.
        self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A session's own view of its registry entry; deregisters on drop.
pub(crate) struct SessionHandle {
    registry: Arc<SessionRegistry>,
    entry: Arc<SessionEntry>,
}

impl SessionHandle {
    pub(crate) fn entry(&self) -> &Arc<SessionEntry> {
        &self.entry
    }

    /// Resolves with the reason once someone ends this session.
    pub(crate) async fn ended(&self) -> ClientError {
        loop {
            if let Some(reason) = self.entry.end_reason() {
                return reason;
            }
            // notify_one keeps a permit when the relay is not waiting yet:
            // an end between the check and this wait is not missed.
            self.entry.ending.notified().await;
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.entry.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::sqlstate;

    fn identity(user: &str) -> SessionIdentity {
        SessionIdentity {
            username: user.into(),
            tenant_id: "t".into(),
            tenant_slug: "t".into(),
            access: Access::Readwrite,
            visible_tenants: "{}".into(),
            via_token: false,
            subject: None,
            client_addr: "127.0.0.1:1".parse().unwrap(),
            application_name: String::new(),
            connected_at: SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn terminate_where_reaches_only_matching_sessions() {
        let registry = Arc::new(SessionRegistry::default());
        let alice = registry.register(1, identity("alice"));
        let bob = registry.register(2, identity("bob"));
        let reason = ClientError::fatal(sqlstate::ADMIN_SHUTDOWN, "bye");
        assert_eq!(registry.terminate_where(|i| i.username == "alice", reason.clone()), 1);
        assert_eq!(alice.ended().await, reason);
        assert!(bob.entry.end_reason().is_none());
        assert_eq!(registry.list().len(), 2);
        drop(alice);
        assert_eq!(registry.list().iter().map(|s| s.id).collect::<Vec<_>>(), vec![2]);
        assert!(!registry.terminate(1, reason));
    }

    #[tokio::test]
    async fn a_session_waiting_for_its_end_is_woken_with_the_reason() {
        let registry = Arc::new(SessionRegistry::default());
        let carol = registry.register(3, identity("carol"));
        let waiting = tokio::spawn(async move { carol.ended().await });
        tokio::task::yield_now().await;
        let reason = ClientError::fatal(sqlstate::ADMIN_SHUTDOWN, "tenant suspended");
        assert!(registry.terminate(3, reason.clone()));
        assert_eq!(waiting.await.unwrap(), reason);
    }
}
