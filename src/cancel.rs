//! Cancel keys: pgtenant hands each client its own BackendKeyData and maps
//! it to the server session currently running that client's queries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::Rng;
use subtle::ConstantTimeEq;

use crate::upstream::CancelTarget;

/// The key a client presents in a CancelRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CancelKey {
    pub process_id: i32,
    pub secret_key: i32,
}

struct Entry {
    secret_key: i32,
    target: Option<CancelTarget>,
}

/// All live cancel keys of this process.
#[derive(Default)]
pub(crate) struct CancelRegistry {
    entries: Mutex<HashMap<i32, Entry>>,
}

impl CancelRegistry {
    /// Issues a fresh key, unique among live sessions, for a new client session.
    pub(crate) fn issue(self: &Arc<Self>) -> CancelHandle {
        let mut rng = rand::thread_rng();
        let mut entries = self.lock();
        loop {
            // Positive ids look like PostgreSQL pids to tools that print them.
            let process_id = rng.gen_range(1..i32::MAX);
            if entries.contains_key(&process_id) {
                continue;
            }
            let secret_key = rng.gen();
            entries.insert(process_id, Entry { secret_key, target: None });
            return CancelHandle { registry: Arc::clone(self), key: CancelKey { process_id, secret_key } };
        }
    }

    /// The server session a key currently cancels, if the key is live and its
    /// secret matches (compared in constant time).
    pub(crate) fn lookup(&self, key: CancelKey) -> Option<CancelTarget> {
        let entries = self.lock();
        let entry = entries.get(&key.process_id)?;
        let matches: bool = entry.secret_key.to_be_bytes().ct_eq(&key.secret_key.to_be_bytes()).into();
        if matches {
            entry.target.clone()
        } else {
            None
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One session's key; removed from the registry when dropped.
pub(crate) struct CancelHandle {
    registry: Arc<CancelRegistry>,
    key: CancelKey,
}

impl CancelHandle {
    pub(crate) fn key(&self) -> CancelKey {
        self.key
    }

    /// Points the key at the server session now serving this client (or none).
    pub(crate) fn set_target(&self, target: Option<CancelTarget>) {
        if let Some(entry) = self.registry.lock().get_mut(&self.key.process_id) {
            entry.target = target;
        }
    }
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.key.process_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::connect::UpstreamAddress;

    fn target(pid: i32) -> CancelTarget {
        CancelTarget { address: UpstreamAddress::Tcp { host: "h".into(), port: 1 }, process_id: pid, secret_key: 9 }
    }

    #[test]
    fn only_the_exact_key_finds_its_target() {
        let registry = Arc::new(CancelRegistry::default());
        let handle = registry.issue();
        handle.set_target(Some(target(42)));
        let key = handle.key();
        assert_eq!(registry.lookup(key), Some(target(42)));
        let forged = CancelKey { secret_key: key.secret_key.wrapping_add(1), ..key };
        assert_eq!(registry.lookup(forged), None);
        drop(handle);
        assert_eq!(registry.lookup(key), None);
        assert!(registry.lock().is_empty(), "a dropped handle leaves no key behind");
    }
}
