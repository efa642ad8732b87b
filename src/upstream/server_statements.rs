//! The prepared statements one server session holds (transaction pooling):
//! their names, oldest first, so the oldest can be closed past the cache's
//! capacity. The frontend (`frontend/statements.rs`) decides what to prepare.

use std::collections::{HashSet, VecDeque};

/// Server-side statements kept per server session before the oldest is closed.
pub(crate) const SERVER_CACHE_CAPACITY: usize = 1024;
/// The statements prepared on one server session.
#[derive(Debug, Default)]
pub struct ServerStatements {
    names: HashSet<String>,
    order: VecDeque<String>,
}

impl ServerStatements {
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Records a new statement; returns the one to close when over capacity.
    pub(crate) fn insert(&mut self, name: &str) -> Option<String> {
        if self.names.insert(name.to_owned()) {
            self.order.push_back(name.to_owned());
        }
        if self.order.len() > SERVER_CACHE_CAPACITY {
            let oldest = self.order.pop_front()?;
            self.names.remove(&oldest);
            return Some(oldest);
        }
        None
    }

    pub(crate) fn clear(&mut self) {
        self.names.clear();
        self.order.clear();
    }
}
