//! Metric names, their descriptions, and the process-wide Prometheus
//! recorder that `GET /metrics` renders.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::error::{sqlstate, ClientError};

/// Gauge: client TCP connections open now (authenticated or not).
pub(crate) const CLIENT_CONNECTIONS: &str = "pgtenant_client_connections";
/// Counter: sessions that passed authentication and reached the relay.
pub(crate) const SESSIONS_STARTED: &str = "pgtenant_sessions_started_total";
/// Counter: failed logins (unknown user or wrong password: 28P01).
pub(crate) const AUTH_FAILURES: &str = "pgtenant_auth_failures_total";
/// Counter: connections refused after or during startup, by SQLSTATE.
pub(crate) const CONNECTIONS_REFUSED: &str = "pgtenant_connections_refused_total";
/// Gauge: sessions open now, by access level (set when /metrics is read).
pub(crate) const SESSIONS_OPEN: &str = "pgtenant_sessions_open";
/// Counter: admin API requests, by method and status.
pub(crate) const ADMIN_REQUESTS: &str = "pgtenant_admin_requests_total";
/// Client statements the guard refused.
pub(crate) const GUARD_REFUSALS: &str = "pgtenant_guard_refusals_total";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder once per process (tests start many servers in one
/// process) and returns its handle; `None` when another recorder was there first.
pub(crate) fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = match PrometheusBuilder::new().install_recorder() {
                Ok(handle) => handle,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    return None;
                }
            };
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    metrics::describe_gauge!(CLIENT_CONNECTIONS, "Client TCP connections open now");
    metrics::describe_counter!(SESSIONS_STARTED, "Sessions that passed authentication");
    metrics::describe_counter!(AUTH_FAILURES, "Failed logins: unknown user or wrong password (28P01)");
    metrics::describe_counter!(CONNECTIONS_REFUSED, "Connections refused during startup, by SQLSTATE");
    metrics::describe_gauge!(SESSIONS_OPEN, "Sessions open now, by access level");
    metrics::describe_counter!(ADMIN_REQUESTS, "Admin API requests, by method and status");
    metrics::describe_counter!(GUARD_REFUSALS, "Client statements refused by the statement guard, by SQLSTATE");
    metrics::describe_counter!(crate::audit::AUDIT_DROPPED, "Audit log lines dropped because the writer fell behind");
}

/// Counts one open client connection until dropped.
pub(crate) struct ClientConnectionGauge(());

impl ClientConnectionGauge {
    /// Counts a connection as open.
    pub(crate) fn open() -> ClientConnectionGauge {
        metrics::gauge!(CLIENT_CONNECTIONS).increment(1.0);
        ClientConnectionGauge(())
    }
}

impl Drop for ClientConnectionGauge {
    fn drop(&mut self) {
        metrics::gauge!(CLIENT_CONNECTIONS).decrement(1.0);
    }
}

/// Counts a session that reached the relay.
/// Pool gauges and counters, set from the pool's figures when /metrics is read.
pub(crate) fn record_pools(pools: &[crate::routing::PoolEntry]) {
    // Per upstream and access; the pools of tenants' own roles are summed
    // (`roles="tenant"`), so the label set stays bounded however many tenants there are.
    let mut sums: std::collections::BTreeMap<(String, &'static str, &'static str), crate::upstream::pool::PoolFigures> =
        Default::default();
    for entry in pools {
        let roles = if entry.tenant_id.is_some() { "tenant" } else { "shared" };
        let f = entry.pool.figures();
        sums.entry((entry.upstream.clone(), entry.access.as_str(), roles)).or_default().add(&f);
    }
    for ((upstream, access, roles), f) in sums {
        let labels = [("upstream", upstream), ("access", access.to_owned()), ("roles", roles.to_owned())];
        let with_state = |state: &'static str| {
            let mut l = labels.to_vec();
            l.push(("state", state.to_owned()));
            l
        };
        metrics::gauge!("pgtenant_pool_server_connections", &with_state("active")).set(f.active as f64);
        metrics::gauge!("pgtenant_pool_server_connections", &with_state("idle")).set(f.idle as f64);
        metrics::gauge!("pgtenant_pool_waiting_clients", &labels).set(f.waiting as f64);
        metrics::counter!("pgtenant_pool_connections_created_total", &labels).absolute(f.created);
        metrics::counter!("pgtenant_pool_connections_closed_total", &labels).absolute(f.closed);
        metrics::counter!("pgtenant_pool_checkouts_total", &labels).absolute(f.checkouts);
        metrics::counter!("pgtenant_pool_waits_total", &labels).absolute(f.waits);
        metrics::gauge!("pgtenant_pool_wait_seconds_total", &labels).set(f.wait_seconds_total);
        metrics::counter!("pgtenant_pool_context_switches_total", &labels).absolute(f.context_switches);
        metrics::counter!("pgtenant_pool_resets_total", &labels).absolute(f.resets);
    }
}

/// Counts one statement the guard refused.
pub(crate) fn guard_refusal(error: &ClientError) {
    metrics::counter!(GUARD_REFUSALS, "sqlstate" => error.code.code()).increment(1);
}

pub(crate) fn session_started() {
    metrics::counter!(SESSIONS_STARTED).increment(1);
}

/// Counts a refused connection, and an authentication failure when it is one.
pub(crate) fn connection_refused(error: &ClientError) {
    if error.code == sqlstate::INVALID_PASSWORD {
        metrics::counter!(AUTH_FAILURES).increment(1);
    }
    metrics::counter!(CONNECTIONS_REFUSED, "sqlstate" => error.code.code()).increment(1);
}
