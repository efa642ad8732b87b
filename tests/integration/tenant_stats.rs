//! Per-tenant figures (src/tenant_stats.rs): `/metrics`'s `pgtenant_tenant_*`
//! series, parsed as Prometheus text, and `GET /v1/tenants/{t}/stats`, in both
//! pool modes; the cap on how many tenants get their own label.

use std::collections::HashMap;

use serde_json::Value;

use crate::common::http::{request, Admin};
use crate::common::*;
use pgtenant::config::PoolMode;

/// Prometheus text exposition → value by series (`name{labels}` as written).
/// Every line is a comment or `series value`; anything else fails the test.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut series = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(series.insert(name.to_owned(), value).is_none(), "{name} twice");
    }
    series
}

async fn scrape(env: &TestEnv) -> HashMap<String, f64> {
    let reply = request(env.server.admin_addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(reply.status, 200);
    parse_prometheus(&reply.text())
}

async fn figures(admin: &Admin, tenant: &str) -> Value {
    let reply = admin.get(&format!("/v1/tenants/{tenant}/stats")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

fn count(figures: &Value, key: &str) -> u64 {
    figures[key].as_u64().unwrap_or_else(|| panic!("{key} in {figures}"))
}

#[tokio::test]
async fn a_tenants_statements_errors_and_transactions_are_counted_as_its_own() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let env = TestEnv::start_with(|c| c.pool.mode = mode).await;
        let admin = Admin::new(env.server.admin_addr, &env.config.admin.token);
        let hk = env.connect("hk_teller").await;
        let barclays = env.connect("barclays_ops").await;
        barclays.simple_query("SELECT 1").await.unwrap();
        let before = figures(&admin, "hsbc-hk").await;
        let barclays_before = figures(&admin, "barclays").await;

        // Eight messages that run statements, six transactions, two errors.
        hk.simple_query("SELECT 1").await.unwrap();
        let err = hk.simple_query("SELECT 1/0").await.unwrap_err();
        assert_eq!(sqlstate(&err), "22012");
        hk.simple_query("BEGIN; SELECT 1; COMMIT").await.unwrap();
        for statement in ["BEGIN", "SELECT 1", "COMMIT"] {
            hk.simple_query(statement).await.unwrap();
        }
        let err = hk.simple_query("SET ROLE postgres").await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "the guard's refusal counts too");
        // A client gets an error before the ReadyForQuery that ends its
        // transaction: one more statement makes sure that one went by.
        hk.simple_query("SELECT 1").await.unwrap();

        let after = figures(&admin, "hsbc-hk").await;
        let delta = |key: &str| count(&after, key) - count(&before, key);
        assert_eq!(delta("queries"), 8, "{mode:?}: {after}");
        assert_eq!(delta("transactions"), 6, "{mode:?}: {after}");
        assert_eq!(after["errors"]["22012"].as_u64(), Some(1), "{mode:?}: {after}");
        assert_eq!(after["errors"]["42501"].as_u64(), Some(1), "{mode:?}: {after}");
        assert!(delta("received_bytes") > 0 && delta("sent_bytes") > 0, "{mode:?}: {after}");
        assert_eq!(count(&after, "sessions_open"), 1);
        assert_eq!(count(&after, "sessions_started"), 1);
        assert_eq!(after["slug"], "hsbc-hk");
        if mode == PoolMode::Transaction {
            // A server connection per transaction (the first may still be the one the session started with).
            assert!(delta("server_checkouts") >= 5, "{mode:?}: {after}");
        } else {
            assert_eq!(delta("server_checkouts"), 0, "session pooling keeps its first one: {after}");
        }
        assert!(after["transaction_seconds"].as_f64().is_some_and(|s| s > 0.0), "{after}");
        // Nothing of it is barclays'.
        assert_eq!(figures(&admin, "barclays").await["queries"], barclays_before["queries"], "{mode:?}");

        // The same figures on /metrics, labelled by slug.
        let metrics = scrape(&env).await;
        let series = |name: &str, tenant: &str| metrics.get(&format!("{name}{{tenant=\"{tenant}\"}}")).copied();
        assert_eq!(series("pgtenant_tenant_queries_total", "hsbc-hk"), Some(count(&after, "queries") as f64));
        assert_eq!(series("pgtenant_tenant_transactions_total", "hsbc-hk"), Some(count(&after, "transactions") as f64));
        assert_eq!(series("pgtenant_tenant_sessions_open", "hsbc-hk"), Some(1.0));
        assert_eq!(series("pgtenant_tenant_sessions_open", "barclays"), Some(1.0));
        assert_eq!(metrics.get("pgtenant_tenant_errors_total{tenant=\"hsbc-hk\",sqlstate=\"22012\"}"), Some(&1.0));
        assert_eq!(series("pgtenant_tenant_queries_total", "other"), Some(0.0));

        // A tenant no session of this process served: all zero; an unknown one: 404.
        assert_eq!(count(&figures(&admin, "hsbc-london").await, "queries"), 0);
        admin.get("/v1/tenants/no-such-tenant/stats").await.problem(404);
    }
}

#[tokio::test]
async fn only_the_busiest_tenants_get_a_label_and_keep_it() {
    let env = TestEnv::start_with(|c| c.metrics.tenant_labels = 1).await;
    let hk = env.connect("hk_teller").await;
    let barclays = env.connect("barclays_ops").await;
    for _ in 0..3 {
        hk.simple_query("SELECT 1").await.unwrap();
    }
    barclays.simple_query("SELECT 1").await.unwrap();
    let metrics = scrape(&env).await;
    let queries = |metrics: &HashMap<String, f64>, tenant: &str| {
        metrics.get(&format!("pgtenant_tenant_queries_total{{tenant=\"{tenant}\"}}")).copied()
    };
    assert_eq!(queries(&metrics, "hsbc-hk"), Some(3.0), "the busiest tenant has its label");
    assert_eq!(queries(&metrics, "barclays"), None, "one label only");
    assert_eq!(queries(&metrics, "other"), Some(1.0));

    // barclays overtakes: the labels stay as they are, so no series goes down.
    for _ in 0..10 {
        barclays.simple_query("SELECT 1").await.unwrap();
    }
    let metrics = scrape(&env).await;
    assert_eq!(queries(&metrics, "hsbc-hk"), Some(3.0));
    assert_eq!(queries(&metrics, "barclays"), None);
    assert_eq!(queries(&metrics, "other"), Some(11.0));
    let labelled = metrics.keys().filter(|k| k.starts_with("pgtenant_tenant_queries_total{")).count();
    assert_eq!(labelled, 2, "one tenant and other");
}
