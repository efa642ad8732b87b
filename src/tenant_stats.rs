//! Per-tenant figures: each session bumps atomics on its tenant's
//! [`TenantCounters`] (held by the session, so no lookup per statement);
//! `/metrics` renders them at scrape time as Prometheus series labelled by
//! tenant slug, and `GET /v1/tenants/{t}/stats` as JSON.
//!
//! Label cardinality is capped (`metrics.tenant_labels`): the busiest
//! tenants get their own label, once labelled a tenant keeps its label (so
//! every series only grows, as counters must), and all the others are summed
//! under `tenant="other"`. A tenant's SQLSTATE breakdown is capped the same
//! way, since a server can raise codes of the client's choosing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

/// Distinct SQLSTATEs counted per tenant; more are counted as `other`.
const MAX_SQLSTATES_PER_TENANT: usize = 64;

/// What one tenant's sessions did on this process.
#[derive(Default)]
pub(crate) struct TenantCounters {
    slug: Mutex<String>,
    /// Sessions open now (each holds a [`TenantSession`]).
    sessions_open: AtomicUsize,
    sessions_started: AtomicU64,
    transactions: AtomicU64,
    queries: AtomicU64,
    received_bytes: AtomicU64,
    sent_bytes: AtomicU64,
    server_checkouts: AtomicU64,
    server_wait_micros: AtomicU64,
    transaction_micros: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl TenantCounters {
    /// A client message that runs statements (Query, Execute).
    pub(crate) fn query(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
    }

    /// A transaction ended (the server became idle for the client), after `took`.
    pub(crate) fn transaction(&self, took: Duration) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.transaction_micros.fetch_add(micros(took), Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.received_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A server connection was checked out for the tenant after `waited`.
    pub(crate) fn checkout(&self, waited: Duration) {
        self.server_checkouts.fetch_add(1, Ordering::Relaxed);
        self.server_wait_micros.fetch_add(micros(waited), Ordering::Relaxed);
    }

    /// The client got an error with this SQLSTATE.
    pub(crate) fn error(&self, sqlstate: &str) {
        let mut errors = lock(&self.errors);
        let known = errors.len() < MAX_SQLSTATES_PER_TENANT || errors.contains_key(sqlstate);
        let key = if known && is_sqlstate(sqlstate) { sqlstate } else { "other" };
        *errors.entry(key.to_owned()).or_default() += 1;
    }

    fn snapshot(&self) -> TenantFigures {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TenantFigures {
            slug: lock(&self.slug).clone(),
            sessions_open: self.sessions_open.load(Ordering::Relaxed) as u64,
            sessions_started: load(&self.sessions_started),
            transactions: load(&self.transactions),
            queries: load(&self.queries),
            errors: lock(&self.errors).clone(),
            received_bytes: load(&self.received_bytes),
            sent_bytes: load(&self.sent_bytes),
            server_checkouts: load(&self.server_checkouts),
            server_wait_seconds: load(&self.server_wait_micros) as f64 / 1e6,
            transaction_seconds: load(&self.transaction_micros) as f64 / 1e6,
        }
    }
}

/// A session of a tenant, counted open until dropped; what the relay bumps.
pub(crate) struct TenantSession(Arc<TenantCounters>);

impl std::ops::Deref for TenantSession {
    type Target = TenantCounters;

    fn deref(&self) -> &TenantCounters {
        &self.0
    }
}

impl Drop for TenantSession {
    fn drop(&mut self) {
        self.0.sessions_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One tenant's figures on this process, since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct TenantFigures {
    /// The tenant's slug when its last session started.
    #[schema(example = "hsbc-hk")]
    pub slug: String,
    /// Sessions open now.
    pub sessions_open: u64,
    /// Sessions that passed authentication.
    pub sessions_started: u64,
    /// Transactions ended: ReadyForQuery messages with the server idle (each
    /// statement outside BEGIN … COMMIT is one, and so is a lone Sync).
    pub transactions: u64,
    /// Client messages that ran statements: simple queries and Executes.
    pub queries: u64,
    /// Errors the tenant's clients got, by SQLSTATE (`other` past 64 distinct codes).
    pub errors: BTreeMap<String, u64>,
    /// Bytes of protocol messages from the tenant's clients.
    pub received_bytes: u64,
    /// Bytes of protocol messages to the tenant's clients.
    pub sent_bytes: u64,
    /// Server connections checked out for the tenant.
    pub server_checkouts: u64,
    /// Time spent waiting for those checkouts, in seconds.
    pub server_wait_seconds: f64,
    /// Time spent inside transactions, in seconds.
    pub transaction_seconds: f64,
}

impl TenantFigures {
    fn add(&mut self, other: &TenantFigures) {
        self.sessions_open += other.sessions_open;
        self.sessions_started += other.sessions_started;
        self.transactions += other.transactions;
        self.queries += other.queries;
        for (code, count) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += count;
        }
        self.received_bytes += other.received_bytes;
        self.sent_bytes += other.sent_bytes;
        self.server_checkouts += other.server_checkouts;
        self.server_wait_seconds += other.server_wait_seconds;
        self.transaction_seconds += other.transaction_seconds;
    }
}

/// Every tenant's counters on this process, keyed by tenant id.
pub(crate) struct TenantStats {
    label_limit: usize,
    inner: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    tenants: HashMap<String, Arc<TenantCounters>>,
    /// Tenants with their own label, for good.
    labelled: HashSet<String>,
}

impl TenantStats {
    pub(crate) fn new(label_limit: usize) -> TenantStats {
        TenantStats { label_limit, inner: Mutex::new(Registry::default()) }
    }

    /// A new session of `tenant_id`, unless it has `max_open` open on this
    /// process already (0: no limit).
    pub(crate) fn admit(&self, tenant_id: &str, slug: &str, max_open: usize) -> Option<TenantSession> {
        let counters = Arc::clone(lock(&self.inner).tenants.entry(tenant_id.to_owned()).or_default());
        counters
            .sessions_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (max_open == 0 || open < max_open).then_some(open + 1)
            })
            .ok()?;
        counters.sessions_started.fetch_add(1, Ordering::Relaxed);
        let mut known_slug = lock(&counters.slug);
        if *known_slug != slug {
            slug.clone_into(&mut known_slug);
        }
        drop(known_slug);
        Some(TenantSession(counters))
    }

    /// One tenant's figures (zero when it had no session on this process).
    pub(crate) fn figures(&self, tenant_id: &str, slug: &str) -> TenantFigures {
        let counters = lock(&self.inner).tenants.get(tenant_id).cloned();
        let mut figures = counters.map_or_else(TenantFigures::default, |c| c.snapshot());
        slug.clone_into(&mut figures.slug);
        figures
    }

    /// Every tenant's figures on this process, by slug.
    pub(crate) fn all(&self) -> Vec<TenantFigures> {
        let mut all: Vec<TenantFigures> = lock(&self.inner).tenants.values().map(|c| c.snapshot()).collect();
        all.sort_by(|a, b| a.slug.cmp(&b.slug));
        all
    }

    /// The Prometheus text of every tenant's figures.
    pub(crate) fn render(&self) -> String {
        let (labelled, other) = self.labelled_figures();
        let mut text = String::new();
        let series = |text: &mut String, name: &str, kind: &str, help: &str, value: &dyn Fn(&TenantFigures) -> f64| {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (slug, figures) in labelled.iter().chain(std::iter::once(&("other".to_owned(), other.clone()))) {
                let _ = writeln!(text, "{name}{{tenant=\"{}\"}} {}", escape_label(slug), value(figures));
            }
        };
        series(&mut text, "pgtenant_tenant_sessions_open", "gauge", "Sessions open now, by tenant", &|f| {
            f.sessions_open as f64
        });
        series(&mut text, "pgtenant_tenant_sessions_started_total", "counter", "Sessions started, by tenant", &|f| {
            f.sessions_started as f64
        });
        series(&mut text, "pgtenant_tenant_transactions_total", "counter", "Transactions ended, by tenant", &|f| {
            f.transactions as f64
        });
        series(&mut text, "pgtenant_tenant_queries_total", "counter", "Simple queries and Executes, by tenant", &|f| {
            f.queries as f64
        });
        series(&mut text, "pgtenant_tenant_received_bytes_total", "counter", "Bytes from clients, by tenant", &|f| {
            f.received_bytes as f64
        });
        series(&mut text, "pgtenant_tenant_sent_bytes_total", "counter", "Bytes to clients, by tenant", &|f| {
            f.sent_bytes as f64
        });
        series(
            &mut text,
            "pgtenant_tenant_server_checkouts_total",
            "counter",
            "Server connections checked out, by tenant",
            &|f| f.server_checkouts as f64,
        );
        series(
            &mut text,
            "pgtenant_tenant_server_wait_seconds_total",
            "counter",
            "Time waiting for a server connection, by tenant",
            &|f| f.server_wait_seconds,
        );
        series(
            &mut text,
            "pgtenant_tenant_transaction_seconds_total",
            "counter",
            "Time inside transactions, by tenant",
            &|f| f.transaction_seconds,
        );
        let name = "pgtenant_tenant_errors_total";
        let _ = writeln!(text, "# HELP {name} Errors clients got, by tenant and SQLSTATE\n# TYPE {name} counter");
        for (slug, figures) in labelled.iter().chain(std::iter::once(&("other".to_owned(), other.clone()))) {
            for (code, count) in &figures.errors {
                let _ = writeln!(
                    text,
                    "{name}{{tenant=\"{}\",sqlstate=\"{}\"}} {count}",
                    escape_label(slug),
                    escape_label(code)
                );
            }
        }
        text
    }

    /// The labelled tenants' figures by slug, and the rest summed. Free
    /// labels go to the busiest unlabelled tenants first.
    fn labelled_figures(&self) -> (Vec<(String, TenantFigures)>, TenantFigures) {
        let mut registry = lock(&self.inner);
        let free = self.label_limit.saturating_sub(registry.labelled.len());
        if free > 0 {
            let mut candidates: Vec<(u64, String)> = registry
                .tenants
                .iter()
                .filter(|(id, _)| !registry.labelled.contains(*id))
                .map(|(id, c)| (c.queries.load(Ordering::Relaxed), id.clone()))
                .collect();
            candidates.sort_unstable_by(|a, b| b.cmp(a));
            for (_, id) in candidates.into_iter().take(free) {
                registry.labelled.insert(id);
            }
        }
        let mut labelled = Vec::new();
        let mut other = TenantFigures::default();
        for (id, counters) in &registry.tenants {
            let figures = counters.snapshot();
            if registry.labelled.contains(id) {
                labelled.push((figures.slug.clone(), figures));
            } else {
                other.add(&figures);
            }
        }
        labelled.sort_by(|a, b| a.0.cmp(&b.0));
        (labelled, other)
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn is_sqlstate(code: &str) -> bool {
    code.len() == 5 && code.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_tenants_get_labels_and_keep_them() {
        let stats = TenantStats::new(1);
        let quiet = stats.admit("id-quiet", "quiet", 0).unwrap();
        let busy = stats.admit("id-busy", "busy", 0).unwrap();
        busy.query();
        busy.query();
        quiet.query();
        let text = stats.render();
        assert!(text.contains("pgtenant_tenant_queries_total{tenant=\"busy\"} 2"), "{text}");
        assert!(text.contains("pgtenant_tenant_queries_total{tenant=\"other\"} 1"), "{text}");
        assert!(!text.contains("tenant=\"quiet\""), "{text}");
        // The quiet one overtakes: labels stay where they are, so no series shrinks.
        for _ in 0..5 {
            quiet.query();
        }
        let text = stats.render();
        assert!(text.contains("pgtenant_tenant_queries_total{tenant=\"busy\"} 2"), "{text}");
        assert!(text.contains("pgtenant_tenant_queries_total{tenant=\"other\"} 6"), "{text}");
    }

    #[test]
    fn a_tenant_admits_up_to_its_cap_of_open_sessions() {
        let stats = TenantStats::new(10);
        let first = stats.admit("id", "t", 2).unwrap();
        let second = stats.admit("id", "t", 2).unwrap();
        assert!(stats.admit("id", "t", 2).is_none(), "a third");
        assert!(stats.admit("other", "o", 2).is_some(), "another tenant's own count");
        drop(first);
        let third = stats.admit("id", "t", 2).unwrap();
        assert_eq!(stats.figures("id", "t").sessions_open, 2);
        assert_eq!(stats.figures("id", "t").sessions_started, 3);
        drop((second, third));
        assert_eq!(stats.figures("id", "t").sessions_open, 0);
    }

    #[test]
    fn sqlstates_are_capped_and_checked() {
        let stats = TenantStats::new(10);
        let counters = stats.admit("id", "t", 0).unwrap();
        for n in 0..100 {
            counters.error(&format!("X{n:04}"));
        }
        counters.error("bad\"code");
        let figures = stats.figures("id", "t");
        assert_eq!(figures.errors.len(), MAX_SQLSTATES_PER_TENANT + 1);
        assert_eq!(figures.errors["other"], 100 - MAX_SQLSTATES_PER_TENANT as u64 + 1);
        assert_eq!(figures.sessions_started, 1);
    }
}
