//! The statement guard (layer L3): refuses client SQL that could change the
//! tenant context or reach across tenants, with clear 42501 errors.
//!
//! It is defence in depth, not the boundary: the database verifies the
//! context itself (L1) and the session roles lack the privileges (L0). Order
//! of work: a token pre-scan (µs) → PostgreSQL's parser only when a risky
//! token appears → verdict cached by statement text.

pub(crate) mod context_calls;
pub(crate) mod denylist;
pub mod inspect;
pub mod prescan;
pub(crate) mod set_config;
pub(crate) mod set_statement;
pub(crate) mod syntax_error;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub(crate) use inspect::{ChannelCommand, ChannelStatement, Inspection};

use crate::quote::{quote_ident, quote_literal};

/// Verdicts kept; the cache is cleared when it grows past this.
const CACHE_CAPACITY: usize = 16_384;
/// Longer statements are judged every time rather than cached.
const CACHE_MAX_STATEMENT: usize = 4096;

/// The guard of one proxy process.
pub struct Guard {
    enabled: bool,
    tenant_setting: String,
    allow: Arc<Inspection>,
    cache: Mutex<HashMap<Box<str>, Arc<Inspection>>>,
}

impl Guard {
    /// A guard protecting `tenant_setting` besides pgtenant's own settings.
    pub fn new(tenant_setting: &str) -> Guard {
        Guard {
            enabled: true,
            tenant_setting: tenant_setting.to_ascii_lowercase(),
            allow: Arc::new(Inspection::default()),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A guard that allows everything (`proxy.statement_guard = false`).
    pub(crate) fn disabled(tenant_setting: &str) -> Guard {
        Guard { enabled: false, ..Guard::new(tenant_setting) }
    }

    /// The tenant setting it protects (lower case).
    pub(crate) fn tenant_setting(&self) -> &str {
        &self.tenant_setting
    }

    /// Judges one query string (all its statements).
    pub fn check(&self, sql: &str) -> Arc<Inspection> {
        if !self.enabled || !prescan::needs_parse(sql) {
            return Arc::clone(&self.allow);
        }
        if sql.len() > CACHE_MAX_STATEMENT {
            return Arc::new(inspect::inspect(sql, &self.tenant_setting));
        }
        if let Some(hit) = self.lock().get(sql) {
            return Arc::clone(hit);
        }
        let verdict = Arc::new(inspect::inspect(sql, &self.tenant_setting));
        let mut cache = self.lock();
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(sql.into(), Arc::clone(&verdict));
        verdict
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<Inspection>>> {
        // Entries are inserted whole; a poisoned map is still consistent.
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// True when PostgreSQL's grammar (pg_query) accepts `sql`: a statement
/// pgtenant answers for without the server (a Parse outside a transaction)
/// fails at its first use, not at Parse, only for reasons past the grammar.
pub(crate) fn parses(sql: &str) -> bool {
    pg_query::parse(sql, 0).is_ok()
}

/// The channel name a tenant's LISTEN/NOTIFY uses on the server: a prefix
/// derived from the tenant keeps tenants' channels apart in the shared database.
pub(crate) fn scoped_channel(prefix: &str, channel: &str) -> String {
    format!("{prefix}{channel}")
}

/// Rewrites the LISTEN/UNLISTEN/NOTIFY statements of `sql` onto the tenant's
/// channels; other statements are kept byte for byte.
pub fn rewrite_channels(sql: &str, statements: &[ChannelStatement], prefix: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 32);
    let mut at = 0;
    for statement in statements {
        out.push_str(&sql[at..statement.range.start]);
        let channel = quote_ident(&scoped_channel(prefix, &statement.channel));
        match statement.kind {
            ChannelCommand::Listen => out.push_str(&format!("LISTEN {channel}")),
            ChannelCommand::Unlisten if statement.channel.is_empty() => out.push_str("UNLISTEN *"),
            ChannelCommand::Unlisten => out.push_str(&format!("UNLISTEN {channel}")),
            ChannelCommand::Notify if statement.payload.is_empty() => out.push_str(&format!("NOTIFY {channel}")),
            ChannelCommand::Notify => out.push_str(&format!("NOTIFY {channel}, {}", quote_literal(&statement.payload))),
            ChannelCommand::NotifyCall => out.push_str("pgtenant.notify"),
        }
        at = statement.range.end;
    }
    out.push_str(&sql[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_cached_and_allow_is_shared() {
        let guard = Guard::new("app.tenant_id");
        let a = guard.check("SET app.tenant_id = 'x'");
        let b = guard.check("SET app.tenant_id = 'x'");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a.denial.is_some());
        let c = guard.check("SELECT 1");
        assert!(c.denial.is_none() && !c.resets_context);
    }

    #[test]
    fn channels_are_rewritten_in_place() {
        let guard = Guard::new("app.tenant_id");
        let sql = "SELECT 1; LISTEN jobs; NOTIFY jobs, 'it''s'; UNLISTEN *";
        let verdict = guard.check(sql);
        let rewritten = rewrite_channels(sql, &verdict.channel_statements, "t1.");
        assert_eq!(rewritten, "SELECT 1; LISTEN \"t1.jobs\"; NOTIFY \"t1.jobs\", E'it''s'; UNLISTEN *");
    }
}
