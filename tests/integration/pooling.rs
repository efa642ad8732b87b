//! The upstream pool: server sessions shared across clients and tenants,
//! with nothing carried from one client to the next.

use pgtenant::config::{PoolMode, SessionFeatures, TenantOverrides};
use tokio_postgres::Client;

use crate::common::raw;
use crate::common::*;

/// A test database served with transaction pooling over `size` server sessions.
async fn transaction_env(size: usize) -> TestEnv {
    TestEnv::start_with(|c| {
        c.pool.size = size;
        c.pool.mode = PoolMode::Transaction;
    })
    .await
}

async fn backend_pid(client: &Client) -> i32 {
    value(client, "SELECT pg_backend_pid()").await.parse().unwrap()
}

async fn tenant(client: &Client) -> String {
    value(client, "SELECT pgtenant.current_tenant()").await
}

async fn ids(client: &Client) -> String {
    value(client, "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM accounts").await
}

#[tokio::test]
async fn session_mode_reuse_carries_nothing_to_the_next_tenant() {
    let env = TestEnv::start_with(|c| c.pool.size = 1).await;
    let barclays = env.connect("barclays_ops").await;
    let pid = backend_pid(&barclays).await;
    barclays
        .batch_execute(
            "DECLARE leak CURSOR WITH HOLD FOR SELECT * FROM accounts; \
             PREPARE leak_stmt AS SELECT * FROM accounts; \
             SET statement_timeout = '1234s'; LISTEN leak_channel",
        )
        .await
        .unwrap();
    drop(barclays);

    let hk = env.connect("hk_teller").await;
    assert_eq!(backend_pid(&hk).await, pid, "the one server session is reused");
    assert_eq!(tenant(&hk).await, HSBC_HK);
    assert_eq!(account_ids(&hk).await, vec![3, 4]);
    let err = hk.simple_query("FETCH ALL FROM leak").await.unwrap_err();
    assert_eq!(sqlstate(&err), "34000", "the cursor is gone");
    let err = hk.simple_query("EXECUTE leak_stmt").await.unwrap_err();
    assert_eq!(sqlstate(&err), "26000", "the prepared statement is gone");
    let timeout: String = hk.query_one("SHOW statement_timeout", &[]).await.unwrap().get(0);
    assert_eq!(timeout, "0", "settings are reset");
    let channels: i64 = hk.query_one("SELECT count(*) FROM pg_listening_channels()", &[]).await.unwrap().get(0);
    assert_eq!(channels, 0, "LISTEN is gone");
}

#[tokio::test]
async fn transaction_mode_tenants_take_turns_on_one_server_session() {
    let env = transaction_env(1).await;
    let hk = env.connect("hk_teller").await;
    let barclays = env.connect("barclays_ops").await;
    let hsbc = env.connect("hsbc_admin").await;
    let pid = backend_pid(&hk).await;
    for _ in 0..3 {
        assert_eq!(ids(&hk).await, "3,4");
        assert_eq!(ids(&barclays).await, "7,8,9");
        assert_eq!(ids(&hsbc).await, "1,2,3,4,5,6");
        assert_eq!(tenant(&barclays).await, BARCLAYS);
    }
    assert_eq!(backend_pid(&barclays).await, pid, "all three share the one server session");
    // A transaction holds the server session until it ends.
    hk.batch_execute("BEGIN; UPDATE accounts SET balance = balance WHERE id = 3").await.unwrap();
    assert_eq!(ids(&hk).await, "3,4");
    hk.batch_execute("COMMIT").await.unwrap();
    assert_eq!(ids(&barclays).await, "7,8,9");
    let pools = env.server.state.routes.default_placement().readwrite.figures();
    assert!(pools.context_switches >= 6, "{pools:?}");
    assert_eq!(pools.created, 1);
}

#[tokio::test]
async fn transaction_mode_startup_settings_follow_the_client() {
    let env = transaction_env(1).await;
    let a = connect_url(&format!("{}?application_name=client-a", env.url("hk_teller", PASSWORD))).await;
    let b = connect_url(&format!("{}?application_name=client-b", env.url("barclays_ops", PASSWORD))).await;
    for _ in 0..3 {
        assert_eq!(value(&a, "SHOW application_name").await, "client-a");
        assert_eq!(value(&b, "SHOW application_name").await, "client-b");
        assert_eq!(ids(&a).await, "3,4");
    }
    assert_eq!(backend_pid(&a).await, backend_pid(&b).await);
}

#[tokio::test]
async fn transaction_mode_shares_prepared_statements_without_sharing_rows() {
    let env = transaction_env(1).await;
    let hk = env.connect("hk_teller").await;
    let barclays = env.connect("barclays_ops").await;
    let sql = "SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id";
    let hk_statement = hk.prepare(sql).await.unwrap();
    let barclays_statement = barclays.prepare(sql).await.unwrap();
    let all: Vec<i64> = (1..=9).collect();
    // A parameter-only text is one server-side statement for both tenants:
    // past five runs PostgreSQL plans it once and reuses that plan for both,
    // which must still evaluate the policy per tenant.
    for _ in 0..8 {
        let rows = hk.query(&hk_statement, &[&all]).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>(), vec![3, 4]);
        let rows = barclays.query(&barclays_statement, &[&all]).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>(), vec![7, 8, 9]);
    }
    assert_eq!(backend_pid(&hk).await, backend_pid(&barclays).await, "one server session, one server-side statement");
    // With a value in its text, each tenant has a statement of its own; the rows are each its own.
    let valued = "SELECT id FROM accounts WHERE id = ANY($1) AND balance > 0 ORDER BY id";
    let (hk_valued, barclays_valued) = (hk.prepare(valued).await.unwrap(), barclays.prepare(valued).await.unwrap());
    for _ in 0..8 {
        let rows = hk.query(&hk_valued, &[&all]).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>(), vec![3, 4]);
        let rows = barclays.query(&barclays_valued, &[&all]).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>(), vec![7, 8, 9]);
    }
    drop(hk_statement);
    let other = hk.prepare("SELECT count(*) FROM transactions").await.unwrap();
    let n: i64 = hk.query_one(&other, &[]).await.unwrap().get(0);
    assert_eq!(n, 2);
}

#[tokio::test]
async fn transaction_mode_prepares_lazily_on_another_server_session() {
    let env = transaction_env(2).await;
    let hk = env.connect("hk_teller").await;
    let statement = hk.prepare("SELECT holder FROM accounts WHERE id = $1").await.unwrap();
    let first_pid = backend_pid(&hk).await;
    // Another client holds that server session in a transaction…
    let barclays = env.connect("barclays_ops").await;
    barclays.batch_execute("BEGIN").await.unwrap();
    assert_eq!(backend_pid(&barclays).await, first_pid);
    // …so the statement runs on the other one, prepared there on the fly.
    let holder: String = hk.query_one(&statement, &[&3i64]).await.unwrap().get(0);
    assert_eq!(holder, "Kowloon Trading Ltd");
    assert_ne!(backend_pid(&hk).await, first_pid);
    assert!(hk.query_opt(&statement, &[&7i64]).await.unwrap().is_none(), "barclays' row stays invisible");
    barclays.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn transaction_mode_settings_follow_the_client() {
    let env = transaction_env(1).await;
    let hk = env.connect("hk_teller").await;
    let barclays = env.connect("barclays_ops").await;
    hk.batch_execute("SET statement_timeout = '77s'; SET search_path = pg_catalog, public").await.unwrap();
    barclays.batch_execute("SET DateStyle = 'German'").await.unwrap();
    for _ in 0..3 {
        assert_eq!(value(&hk, "SHOW statement_timeout").await, "77s");
        assert_eq!(value(&hk, "SHOW search_path").await, "pg_catalog, public");
        assert_eq!(value(&hk, "SHOW DateStyle").await, "ISO, MDY");
        assert_eq!(value(&barclays, "SHOW statement_timeout").await, "0");
        assert_eq!(value(&barclays, "SHOW DateStyle").await, "German, DMY");
    }
    hk.batch_execute("RESET statement_timeout").await.unwrap();
    assert_eq!(value(&barclays, "SHOW DateStyle").await, "German, DMY");
    assert_eq!(value(&hk, "SHOW statement_timeout").await, "0");
    assert_eq!(backend_pid(&hk).await, backend_pid(&barclays).await, "no pinning");
    // A setting the server refuses is refused to the client, and forgotten.
    let err = hk.batch_execute("SET statement_timeout = 'soon'").await.unwrap_err();
    assert_eq!(sqlstate(&err), "22023");
    assert_eq!(value(&barclays, "SHOW DateStyle").await, "German, DMY");
    assert_eq!(ids(&hk).await, "3,4");
}

#[tokio::test]
async fn transaction_mode_set_config_follows_the_client_or_resets_the_server_session() {
    let env = transaction_env(1).await;
    let hk = env.connect("hk_teller").await;
    let barclays = env.connect("barclays_ops").await;
    // A constant set_config is a SET: it follows hk and stays off barclays.
    hk.batch_execute("SELECT set_config('work_mem', '3MB', false)").await.unwrap();
    assert_eq!(value(&barclays, "SHOW work_mem").await, "4MB");
    assert_eq!(value(&hk, "SHOW work_mem").await, "3MB");
    // A computed one cannot be followed: the server session is reset before
    // anyone uses it again, so nothing of it reaches barclays.
    hk.batch_execute("SELECT set_config('work_mem', '5' || 'MB', false)").await.unwrap();
    assert_eq!(value(&barclays, "SHOW work_mem").await, "4MB");
    assert_eq!(backend_pid(&hk).await, backend_pid(&barclays).await, "no pinning");
    assert_eq!(ids(&hk).await, "3,4");
    assert_eq!(ids(&barclays).await, "7,8,9");
}

#[tokio::test]
async fn transaction_mode_pins_a_client_that_needs_its_session() {
    let env = TestEnv::start_with(|c| {
        c.pool.size = 1;
        c.pool.mode = PoolMode::Transaction;
        c.pool.checkout_timeout_secs = 1;
    })
    .await;
    let hk = env.connect("hk_teller").await;
    hk.batch_execute("SET statement_timeout = '77s'; DECLARE c CURSOR WITH HOLD FOR SELECT 1").await.unwrap();
    let pid = backend_pid(&hk).await;
    let err = env.refused("barclays_ops", PASSWORD).await;
    assert_eq!(sqlstate(&err), "53300", "the pinned server session is not shared");
    assert_eq!(value(&hk, "SHOW statement_timeout").await, "77s");
    drop(hk);
    eventually("the pinned session to come back", || async {
        env.server.state.routes.default_placement().readwrite.figures().idle == 1
    })
    .await;
    let next = env.connect("hsbc_admin").await;
    assert_eq!(backend_pid(&next).await, pid, "the same server session");
    assert_eq!(value(&next, "SHOW statement_timeout").await, "0", "reset before it serves anyone else");
    assert_eq!(tenant(&next).await, HSBC);
}

#[tokio::test]
async fn transaction_mode_can_refuse_session_features() {
    let env = TestEnv::start_with(|c| {
        c.pool.mode = PoolMode::Transaction;
        c.pool.session_features = SessionFeatures::Refuse;
    })
    .await;
    let hk = env.connect("hk_teller").await;
    // Session-level SET is not among them: settings follow the client.
    hk.batch_execute("SET statement_timeout = '5s'").await.unwrap();
    for sql in ["PREPARE p AS SELECT 1", "DECLARE c CURSOR WITH HOLD FOR SELECT 1"] {
        let err = hk.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), "0A000", "{sql}");
        assert!(message(&err).contains("transaction pooling"), "{sql}");
    }
    // The pool's listening connection serves LISTEN: nothing to refuse.
    hk.batch_execute("LISTEN jobs").await.unwrap();
    hk.batch_execute("BEGIN; SET LOCAL statement_timeout = '5s'; COMMIT").await.unwrap();
    assert_eq!(ids(&hk).await, "3,4");
}

#[tokio::test]
async fn a_noisy_tenant_cannot_starve_the_others() {
    let env = TestEnv::start_with(|c| {
        c.pool.size = 3;
        c.pool.mode = PoolMode::Transaction;
        c.pool.max_per_tenant = 1;
        c.pool.checkout_timeout_secs = 1;
    })
    .await;
    let noisy = env.connect("barclays_ops").await;
    noisy.batch_execute("BEGIN; SELECT 1").await.unwrap();
    // Another tenant still gets a server session while barclays is at its limit.
    let hk = env.connect("hk_teller").await;
    assert_eq!(ids(&hk).await, "3,4");
    let err = env.refused("barclays_ops", PASSWORD).await;
    assert_eq!(sqlstate(&err), "53300");
    assert!(message(&err).contains("could not get a server connection"));
    noisy.batch_execute("COMMIT").await.unwrap();
    assert_eq!(ids(&env.connect("barclays_ops").await).await, "7,8,9");
}

fn overrides(
    pool_mode: Option<PoolMode>,
    statement_timeout_ms: Option<u64>,
    max_server_connections: Option<usize>,
) -> TenantOverrides {
    TenantOverrides { pool_mode, statement_timeout_ms, max_server_connections, max_client_connections: None }
}

#[tokio::test]
async fn a_tenant_cap_in_the_config_overrides_the_default() {
    let env = TestEnv::start_with(|c| {
        c.pool.size = 3;
        c.pool.mode = PoolMode::Transaction;
        c.pool.checkout_timeout_secs = 1;
        c.tenants.insert("barclays".into(), overrides(None, None, Some(1)));
    })
    .await;
    let noisy = env.connect("barclays_ops").await;
    noisy.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let err = env.refused("barclays_ops", PASSWORD).await;
    assert_eq!(sqlstate(&err), "53300");
    // No cap by default: hsbc-hk takes two server sessions at once.
    let (hk1, hk2) = (env.connect("hk_teller").await, env.connect("hk_teller").await);
    hk1.batch_execute("BEGIN; SELECT 1").await.unwrap();
    hk2.batch_execute("BEGIN; SELECT 1").await.unwrap();
    assert_eq!(ids(&hk2).await, "3,4");
    hk1.batch_execute("COMMIT").await.unwrap();
    noisy.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn a_tenant_in_session_mode_keeps_its_server_session() {
    let env = TestEnv::start_with(|c| {
        c.pool.size = 1;
        c.pool.mode = PoolMode::Transaction;
        c.pool.checkout_timeout_secs = 1;
        c.pool.session_features = SessionFeatures::Refuse;
        c.tenants.insert("hsbc-hk".into(), overrides(Some(PoolMode::Session), None, None));
    })
    .await;
    let hk = env.connect("hk_teller").await;
    assert_eq!(ids(&hk).await, "3,4");
    // Between hsbc-hk's transactions its server session is still its own.
    let err = env.refused("barclays_ops", PASSWORD).await;
    assert_eq!(sqlstate(&err), "53300");
    // Transaction mode would refuse a PREPARE here (session_features = refuse); session mode runs it.
    hk.batch_execute("PREPARE mine AS SELECT 1; EXECUTE mine").await.unwrap();
    drop(hk);
    eventually("hsbc-hk's server session to go back to the pool", || async {
        env.server.state.routes.default_placement().readwrite.figures().idle == 1
    })
    .await;
    // barclays, in transaction mode, shares the one server session with others.
    let (b1, b2) = (env.connect("barclays_ops").await, env.connect("barclays_ops").await);
    assert_eq!(ids(&b1).await, "7,8,9");
    assert_eq!(ids(&b2).await, "7,8,9");
}

#[tokio::test]
async fn a_tenant_statement_timeout_cancels_its_long_requests_only() {
    let env = TestEnv::start_with(|c| {
        c.pool.size = 2;
        c.pool.mode = PoolMode::Transaction;
        c.tenants.insert("hsbc-hk".into(), overrides(None, Some(200), None));
    })
    .await;
    let hk = env.connect("hk_teller").await;
    let err = hk.simple_query("SELECT pg_sleep(30)").await.unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    assert_eq!(
        message(&err),
        "canceling statement due to statement timeout (pgtenant limits this tenant's requests to 200 ms)"
    );
    // The session goes on, in its own tenant, on a fresh server session.
    assert_eq!(ids(&hk).await, "3,4");
    assert_eq!(tenant(&hk).await, HSBC_HK);
    // Inside a transaction the cancellation aborts it, as PostgreSQL's own timeout would.
    hk.batch_execute("BEGIN").await.unwrap();
    let err = hk.simple_query("SELECT pg_sleep(30)").await.unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    let err = hk.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&err), "25P02");
    hk.batch_execute("ROLLBACK").await.unwrap();
    // Another tenant has no limit.
    let barclays = env.connect("barclays_ops").await;
    barclays.simple_query("SELECT pg_sleep(0.5)").await.unwrap();
}

#[tokio::test]
async fn reloaded_limits_apply_to_new_sessions() {
    let env = TestEnv::start_with(|c| c.pool.mode = PoolMode::Transaction).await;
    let before = env.connect("hk_teller").await;
    let mut reloaded = env.config.clone();
    reloaded.tenants.insert("hsbc-hk".into(), overrides(None, Some(100), None));
    env.server.reload(reloaded);
    let after = env.connect("hk_teller").await;
    let err = after.simple_query("SELECT pg_sleep(30)").await.unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    // A session opened before the reload keeps the limits it started with.
    before.simple_query("SELECT pg_sleep(0.3)").await.unwrap();
    assert_eq!(ids(&before).await, "3,4");
}

#[tokio::test]
async fn dead_server_sessions_are_replaced() {
    let env = TestEnv::start_with(|c| c.pool.size = 2).await;
    let hk = env.connect("hk_teller").await;
    assert_eq!(account_ids(&hk).await, vec![3, 4]);
    drop(hk);
    let direct = env.superuser().await;
    eventually("the session to go back to the pool", || async {
        env.server.state.routes.default_placement().readwrite.figures().idle == 1
    })
    .await;
    // The upstream loses every server session (as in a restart).
    direct
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
              WHERE usename = 'pgtenant_app' AND datname = current_database()",
        )
        .await
        .unwrap();
    eventually("the backends to exit", || async {
        let n: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'pgtenant_app' AND datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n == 0
    })
    .await;
    let hk = env.connect("hk_teller").await;
    assert_eq!(account_ids(&hk).await, vec![3, 4], "a new server session serves the next client");
}

#[tokio::test]
async fn excess_clients_get_53300_at_once() {
    let env = TestEnv::start_with(|c| c.proxy.max_client_connections = 1).await;
    let _first = env.connect("hk_teller").await;
    let err = env.refused("barclays_ops", PASSWORD).await;
    assert_eq!(sqlstate(&err), "53300");
}

/// A server session dropped without being handed back (here: a login whose
/// startup setting the server refuses) counts as closed, so created − closed
/// is what the pool holds.
#[tokio::test]
async fn a_dropped_server_session_counts_as_closed() {
    let env = TestEnv::start_with(|c| c.pool.size = 2).await;
    let url = format!("{}?options=-c%20work_mem%3Dlots", env.url("hk_teller", PASSWORD));
    assert!(tokio_postgres::connect(&url, tokio_postgres::NoTls).await.is_err(), "the bad setting refuses the login");
    let figures = env.server.state.routes.default_placement().readwrite.figures();
    assert_eq!(figures.created, 1, "{figures:?}");
    assert_eq!(figures.closed, 1, "{figures:?}");
    assert_eq!(figures.active + figures.idle, 0, "{figures:?}");
}

/// Limits set through the admin API (sql/0012) apply to the tenant's next
/// sessions at once, key by key over the config file's.
#[tokio::test]
async fn limits_set_through_the_admin_api_apply_to_the_next_sessions() {
    use serde_json::json;
    let env = TestEnv::start_with(|c| {
        c.pool.size = 3;
        c.pool.mode = PoolMode::Transaction;
        c.pool.checkout_timeout_secs = 1;
        c.tenants.insert("hsbc-hk".into(), overrides(None, Some(60_000), None));
    })
    .await;
    let admin = crate::common::http::Admin::new(env.server.admin_addr, &env.config.admin.token);
    let reply = admin
        .patch("/v1/tenants/hsbc-hk", &json!({"limits": {"max_client_connections": 1, "statement_timeout_ms": 200}}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["limits"], json!({"statement_timeout_ms": 200, "max_client_connections": 1}));
    assert_eq!(admin.get("/v1/tenants/hsbc-hk").await.json()["limits"], reply.json()["limits"]);

    // One client session at a time for hsbc-hk; others are not limited.
    let hk = env.connect("hk_teller").await;
    let err = env.refused("hk_teller", PASSWORD).await;
    assert_eq!(sqlstate(&err), "53300");
    assert_eq!(message(&err), "too many connections for tenant \"hsbc-hk\"");
    let (_b1, _b2) = (env.connect("barclays_ops").await, env.connect("barclays_ops").await);
    // The API's 200 ms, not the file's 60 s.
    let err = hk.simple_query("SELECT pg_sleep(30)").await.unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    assert!(message(&err).contains("200 ms"), "{}", message(&err));
    drop(hk);

    // Cleared key by key: the file's timeout applies again; the cap stays.
    let reply = admin.patch("/v1/tenants/hsbc-hk", &json!({"limits": {"statement_timeout_ms": null}})).await;
    assert_eq!(reply.json()["limits"], json!({"max_client_connections": 1}), "{}", reply.text());
    let hk = std::cell::RefCell::new(None);
    eventually("hsbc-hk's first session to end and free its place", || async {
        *hk.borrow_mut() = env.try_connect("hk_teller", PASSWORD).await.ok();
        hk.borrow().is_some()
    })
    .await;
    let hk = hk.into_inner().expect("connected");
    hk.simple_query("SELECT pg_sleep(0.5)").await.expect("the file's 60 s apply again");

    // A server-connection cap and a pool mode for barclays, set live.
    let reply = admin
        .patch("/v1/tenants/barclays", &json!({"limits": {"max_server_connections": 1, "pool_mode": "session"}}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let barclays = env.connect("barclays_ops").await;
    barclays.batch_execute("PREPARE mine AS SELECT 1; EXECUTE mine").await.expect("session mode keeps statements");
    let err = env.refused("barclays_ops", PASSWORD).await;
    assert_eq!(sqlstate(&err), "53300", "its one server session is held by its session-mode client");

    // Bad limits are 422 and change nothing.
    for bad in [
        json!({"limits": {"pool_mode": "statement"}}),
        json!({"limits": {"statement_timeout_ms": -1}}),
        json!({"limits": {"statement_timeout_ms": 9_999_999_999u64}}),
        json!({"limits": {"max_client_connections": "ten"}}),
        json!({"limits": {"max_client_connections": 2_000_000}}),
        json!({"limits": {"max_sessions": 3}}),
        json!({"limits": [1]}),
    ] {
        let reply = admin.patch("/v1/tenants/hsbc-hk", &bad).await;
        assert_eq!(reply.status, 422, "{bad}: {}", reply.text());
    }
    assert_eq!(admin.get("/v1/tenants/hsbc-hk").await.json()["limits"], json!({"max_client_connections": 1}));
    // Written by hand, a malformed value is refused by the catalog itself.
    let err = env
        .superuser()
        .await
        .batch_execute("UPDATE pgtenant.tenants SET limits = '{\"pool_mode\": \"x\"}' WHERE slug = 'hsbc'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23514");
}

fn parse_and_sync(name: &str, sql: &str) -> Vec<u8> {
    use postgres_protocol::message::frontend;
    let mut out = bytes::BytesMut::new();
    frontend::parse(name, sql, [], &mut out).unwrap();
    frontend::sync(&mut out);
    out.to_vec()
}

fn bind_execute_sync(name: &str) -> Vec<u8> {
    use postgres_protocol::message::frontend;
    let mut out = bytes::BytesMut::new();
    frontend::bind("", name, [], std::iter::empty::<i32>(), |_, _| Ok(postgres_protocol::IsNull::No), [], &mut out)
        .map_err(|_| "bind")
        .unwrap();
    frontend::execute("", 0, &mut out).unwrap();
    frontend::sync(&mut out);
    out.to_vec()
}

fn tags(messages: &[raw::Message]) -> String {
    messages.iter().map(|m| m.tag as char).collect()
}

/// pgbench -M prepared prepares with Parse + Sync and waits: in transaction
/// pooling that needs no server connection (the one there is is held by a
/// client mid-transaction), and the statement is prepared on whichever
/// connection runs it. A statement the grammar refuses still fails at Parse,
/// as on PostgreSQL; one that fails past the grammar fails at first use.
#[tokio::test]
async fn a_parse_between_transactions_is_answered_without_a_server_connection() {
    let env = TestEnv::start_with(|c| {
        c.pool.mode = PoolMode::Transaction;
        c.pool.size = 1;
        c.pool.checkout_timeout_secs = 30;
    })
    .await;
    let mut client = raw::login(env.server.proxy_addr, "hk_teller", PASSWORD, &env.database, &[]).await.unwrap();
    let holder = env.connect("barclays_ops").await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    client.send(&parse_and_sync("ids", "SELECT count(*) FROM accounts")).await;
    assert_eq!(tags(&client.until_ready().await), "1Z", "answered while the only server connection is held");
    client.send(&parse_and_sync("missing", "SELECT * FROM no_such_table")).await;
    assert_eq!(tags(&client.until_ready().await), "1Z");
    // Past the grammar's reach: waits for a server connection and fails at Parse.
    client.send(&parse_and_sync("broken", "SELEC 1")).await;
    holder.batch_execute("COMMIT").await.unwrap();
    let replies = client.until_ready().await;
    assert_eq!((tags(&replies), replies[0].code()), ("EZ".into(), Some("42601".into())));
    client.send(&bind_execute_sync("ids")).await;
    let replies = client.until_ready().await;
    assert_eq!(tags(&replies), "2DCZ", "{replies:?}");
    assert_eq!(raw::first_column(&replies), ["2"], "hk's rows only");
    client.send(&bind_execute_sync("missing")).await;
    let replies = client.until_ready().await;
    assert_eq!((tags(&replies), replies[0].code()), ("EZ".into(), Some("42P01".into())));
}
