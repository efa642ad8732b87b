//! Strict context (sql/0015, extension/strict_context.c): the verified
//! tenant lives in settings only the catalog owner may write. Attack tests
//! straight to PostgreSQL as the tenant role (every proxy-side check
//! bypassed) and through pgtenant in both pool modes; and the two things it
//! is for: parallel query on tenant tables, and a tenant that outlives
//! everything a client can reset.

use pgtenant::config::PoolMode;
use tokio_postgres::Client;

use crate::common::raw;
use crate::common::*;
use crate::security::{commitment, guard_bypassed, mint_token, mint_token_with_nonce};

const STRICT_SETTINGS: [&str; 3] = ["pgtenant_native.tenant", "pgtenant_native.scope", "pgtenant_native.visible"];

/// A direct session with hsbc-hk's context verified, as pgtenant leaves it.
async fn verified_hk(env: &TestEnv) -> Client {
    let app = guard_bypassed(env).await;
    let pid: i32 = app.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let token = mint_token(env, pid, HSBC_HK, HSBC_HK).await;
    app.query_one("SELECT pgtenant.set_context($1, 'app.tenant_id')", &[&token]).await.unwrap();
    app
}

async fn assert_still_hk(app: &Client, after: &str) {
    assert_eq!(account_ids(app).await, vec![3, 4], "after {after}");
    assert_eq!(value(app, "SELECT pgtenant.current_tenant()::text").await, HSBC_HK, "after {after}");
    assert_eq!(value(app, "SHOW pgtenant_native.tenant").await, HSBC_HK, "after {after}");
}

#[tokio::test]
async fn the_tenant_role_cannot_write_the_strict_settings_by_any_route() {
    let env = TestEnv::start().await;
    let app = verified_hk(&env).await;
    assert_still_hk(&app, "set_context").await;
    let mut attacks = Vec::new();
    for setting in STRICT_SETTINGS {
        attacks.push(format!("SET {setting} = '{BARCLAYS}'"));
        attacks.push(format!("SET SESSION {setting} = '{BARCLAYS}'"));
        attacks.push(format!("BEGIN; SET LOCAL {setting} = '{BARCLAYS}'"));
        attacks.push(format!("RESET {setting}"));
        attacks.push(format!("SELECT set_config('{setting}', '{BARCLAYS}', false)"));
        attacks.push(format!("SELECT set_config('{setting}', '', true)"));
        attacks.push(format!("DO $$ BEGIN PERFORM set_config('{setting}', '{BARCLAYS}', false); END $$"));
        attacks.push(format!("ALTER ROLE CURRENT_USER SET {setting} = '{BARCLAYS}'"));
        attacks.push(format!("ALTER DATABASE {} SET {setting} = '{BARCLAYS}'", env.database));
        attacks.push(format!("ALTER SYSTEM SET {setting} = '{BARCLAYS}'"));
        attacks.push(format!(
            "CREATE FUNCTION pg_temp.widen() RETURNS uuid LANGUAGE sql SET {setting} = '{BARCLAYS}' \
             AS 'SELECT pgtenant.current_tenant()'"
        ));
    }
    attacks.extend(
        [
            "SELECT pgtenant.native_install_context('b0000000-0000-4000-8000-000000000001', 0, NULL)",
            "SELECT pgtenant.record_verified_tenant('b0000000-0000-4000-8000-000000000001', NULL)",
            "SELECT pgtenant.native_install_secret('00112233445566778899aabbccddeeff')",
            "SELECT pgtenant.native_secret_matches('00112233445566778899aabbccddeeff')",
            "SELECT pgtenant.native_switching_secret()",
            "SELECT pgtenant.use_strict_context(false)",
            "CREATE OR REPLACE FUNCTION pgtenant.current_tenant() RETURNS uuid LANGUAGE sql \
             AS 'SELECT ''b0000000-0000-4000-8000-000000000001''::uuid'",
            "CREATE OR REPLACE FUNCTION pgtenant.native_strict_policy_tenants() RETURNS uuid[] LANGUAGE sql \
             AS 'SELECT NULL::uuid[]'",
            "ALTER EXTENSION pgtenant_native UPDATE TO '1.1'",
            "DROP EXTENSION pgtenant_native",
        ]
        .map(str::to_owned),
    );
    for attack in &attacks {
        let err = app.batch_execute(attack).await.expect_err(attack);
        assert_eq!(sqlstate(&err), "42501", "{attack}: {}", message(&err));
        if attack.starts_with("BEGIN") {
            app.batch_execute("ROLLBACK").await.unwrap();
        }
        assert_still_hk(&app, attack).await;
    }
    // No new setting can be made under the reserved prefix either.
    let err = app.batch_execute("SET pgtenant_native.tenant_override = 'x'").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42602", "{}", message(&err));
    // What a client can reset leaves the tenant as it is.
    for reset in ["RESET ALL", "DISCARD ALL", "DISCARD SEQUENCES", "BEGIN; RESET ALL; COMMIT", "RESET pgtenant.context"]
    {
        app.batch_execute(reset).await.unwrap();
        assert_still_hk(&app, reset).await;
    }
}

#[tokio::test]
async fn a_value_set_before_the_extension_loads_is_dropped_when_it_loads() {
    let env = TestEnv::start().await;
    // A fresh backend has not loaded pgtenant_native: the name is free, and
    // PostgreSQL keeps the value as a placeholder, in a transaction and out.
    let app = guard_bypassed(&env).await;
    app.batch_execute(&format!("SET pgtenant_native.tenant = '{BARCLAYS}'; SET pgtenant_native.scope = '2'"))
        .await
        .unwrap();
    // The first policy loads the extension, whose settings take no value the
    // session role set: no tenant, no rows.
    assert!(account_ids(&app).await.is_empty());
    let tenant: Option<String> = app.query_one("SELECT pgtenant.current_tenant()::text", &[]).await.unwrap().get(0);
    assert_eq!(tenant, None);
    assert_eq!(value(&app, "SHOW pgtenant_native.tenant").await, "");
    assert_eq!(value(&app, "SHOW pgtenant_native.scope").await, "");

    // Through startup options the same: the connection opens, the value is gone.
    let options = format!("-c pgtenant_native.tenant={BARCLAYS}");
    let url = format!("{}?options={}", env.cluster.url("pgtenant_app", &env.database), options.replace(' ', "%20"));
    let app = connect_url(&url).await;
    assert!(account_ids(&app).await.is_empty());
    assert_eq!(value(&app, "SHOW pgtenant_native.tenant").await, "");
    // And pgtenant installs the tenant there as anywhere.
    let pid: i32 = app.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let token = mint_token(&env, pid, HSBC_HK, HSBC_HK).await;
    app.query_one("SELECT pgtenant.set_context($1, 'app.tenant_id')", &[&token]).await.unwrap();
    assert_still_hk(&app, "set_context").await;
}

#[tokio::test]
async fn a_rolled_back_context_change_leaves_the_tenant_before_it() {
    let env = TestEnv::start().await;
    let app = verified_hk(&env).await;
    let pid: i32 = app.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let barclays = mint_token(&env, pid, BARCLAYS, BARCLAYS).await;
    app.batch_execute("BEGIN").await.unwrap();
    app.query_one("SELECT pgtenant.set_context($1, 'app.tenant_id')", &[&barclays]).await.unwrap();
    assert_eq!(account_ids(&app).await, vec![7, 8, 9]);
    app.batch_execute("ROLLBACK").await.unwrap();
    assert_still_hk(&app, "ROLLBACK").await;
    assert_eq!(value(&app, "SELECT current_setting('app.tenant_id')").await, HSBC_HK);
}

#[tokio::test]
async fn the_strict_settings_are_refused_through_pgtenant_in_both_pool_modes() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let env = TestEnv::start_with(|c| c.pool.mode = mode).await;
        let hk = env.connect("hk_teller").await;
        for attack in [
            format!("SET pgtenant_native.tenant = '{BARCLAYS}'"),
            format!("SELECT set_config('pgtenant_native.tenant', '{BARCLAYS}', false)"),
            "RESET pgtenant_native.scope".to_owned(),
            format!("SELECT set_config('pgtenant_native.visible', '{BARCLAYS}', false)"),
        ] {
            let err = hk.simple_query(&attack).await.expect_err(&attack);
            assert_eq!(sqlstate(&err), "42501", "{mode:?}: {attack}: {}", message(&err));
            assert_eq!(account_ids(&hk).await, vec![3, 4], "{mode:?}: {attack}");
            assert_eq!(value(&hk, "SHOW pgtenant_native.tenant").await, HSBC_HK, "{mode:?}");
        }
        // In the startup packet, refused before any server session is involved.
        let options = format!("-c pgtenant_native.tenant={BARCLAYS}");
        let err = raw::login(env.server.proxy_addr, "hk_teller", PASSWORD, &env.database, &[("options", &options)])
            .await
            .err()
            .expect("refused");
        assert_eq!(err.code().as_deref(), Some("42501"), "{mode:?}");
        // RESET ALL / DISCARD ALL, and the next client of the same server session.
        hk.batch_execute("RESET ALL").await.unwrap();
        hk.batch_execute("DISCARD ALL").await.unwrap();
        assert_eq!(account_ids(&hk).await, vec![3, 4], "{mode:?}");
        drop(hk);
        let barclays = env.connect("barclays_ops").await;
        assert_eq!(account_ids(&barclays).await, vec![7, 8, 9], "{mode:?}");
        assert_eq!(value(&barclays, "SHOW pgtenant_native.tenant").await, BARCLAYS, "{mode:?}");
    }
}

/// Plans and runs `sql` with every parallel cost at zero and the query
/// forced into a worker; returns the plan.
async fn forced_parallel(app: &Client, sql: &str) -> String {
    app.batch_execute(
        "SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; \
         SET min_parallel_table_scan_size = 0; SET force_parallel_mode = on",
    )
    .await
    .unwrap();
    let rows = app.simple_query(&format!("EXPLAIN (COSTS OFF) {sql}")).await.unwrap();
    rows.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn tenant_tables_stay_open_to_parallel_query_and_workers_see_the_verified_tenant() {
    let env = TestEnv::start().await;
    for store in [ContextStore::Sequences, ContextStore::Strict] {
        env.use_context_store(store).await;
        let app = verified_hk(&env).await;
        let plan = forced_parallel(&app, "SELECT id FROM accounts").await;
        match store {
            // currval() is PARALLEL RESTRICTED: the scan stays in the leader.
            ContextStore::Sequences | ContextStore::PlPgSql => assert!(!plan.contains("Gather"), "{plan}"),
            ContextStore::Strict => assert!(plan.contains("Gather"), "{plan}"),
        }
        // Forced into a worker, the answers are the leader's: the settings travel with the query.
        assert_eq!(account_ids(&app).await, vec![3, 4], "{store:?}");
        if store == ContextStore::Strict {
            let plan = forced_parallel(&app, "SELECT pgtenant.current_tenant()").await;
            assert!(plan.contains("Gather"), "{plan}");
        }
        assert_eq!(value(&app, "SELECT pgtenant.current_tenant()::text").await, HSBC_HK, "{store:?}");
        assert_eq!(value(&app, "SELECT pgtenant.visible_tenants()::text").await, format!("{{{HSBC_HK}}}"));
    }
}

#[tokio::test]
async fn isolation_policies_name_the_functions_of_the_store_in_use() {
    let env = TestEnv::start().await;
    let policy = "SELECT pg_get_expr(polqual, polrelid) FROM pg_policy \
                  WHERE polrelid = 'public.accounts'::regclass AND polname = 'pgtenant_isolation'";
    let mut switch_oid = None;
    for store in [ContextStore::Strict, ContextStore::Sequences, ContextStore::Strict] {
        env.use_context_store(store).await;
        let expression = value(&env.superuser().await, policy).await;
        // Strict context: the C functions themselves, no SQL wrapper to inline at every planning.
        let (named, absent) = match store {
            ContextStore::Strict => ("pgtenant.native_strict_policy_tenants()", "pgtenant.policy_tenants()"),
            ContextStore::Sequences | ContextStore::PlPgSql => ("pgtenant.policy_tenants()", "native_strict"),
        };
        assert!(expression.contains(named) && !expression.contains(absent), "{store:?}: {expression}");
        let switch =
            value(&env.superuser().await, "SELECT pg_get_functiondef('pgtenant.switch_context'::regproc)").await;
        let switch_callee =
            if store == ContextStore::Strict { "native_strict_switch" } else { "switch_context_by_store" };
        assert!(switch.contains(switch_callee), "{store:?}: {switch}");
        // PL/pgSQL, whose compiled body a FunctionCall reuses, under the oid pgtenant looked up once.
        assert!(switch.contains("LANGUAGE plpgsql"), "{store:?}: {switch}");
        let oid =
            value(&env.superuser().await, "SELECT 'pgtenant.switch_context(text,text,text)'::regprocedure::oid::text")
                .await;
        assert_eq!(*switch_oid.get_or_insert_with(|| oid.clone()), oid, "{store:?}: the same function");
        let hk = verified_hk(&env).await;
        assert_eq!(account_ids(&hk).await, vec![3, 4], "{store:?}");
    }
}

/// The switch in C (`native_strict_switch`) records what the verified way
/// records, and sends every caller without the session's secret that way.
#[tokio::test]
async fn a_switch_records_what_a_verified_context_records() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    let env = TestEnv::start().await;
    let app = guard_bypassed(&env).await;
    let pid: i32 = app.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let nonce = commitment(&env, SECRET).await;
    let hk = mint_token_with_nonce(&env, pid, HSBC_HK, HSBC_HK, &nonce).await;
    app.query_one("SELECT pgtenant.set_context($1, 'app.tenant_id', $2)", &[&hk, &SECRET]).await.unwrap();
    assert_still_hk(&app, "set_context").await;
    let switch = "SELECT pgtenant.switch_context($1, $2, $3)::text";

    // pgtenant holds the secret: the token's tenant, unsigned, and its scope as tenant_scope() has it.
    let unsigned = format!("v2.{pid}.{nonce}.{HSBC}.{HSBC}..{}", "0".repeat(64));
    let tenant: String = app.query_one(switch, &[&unsigned, &"app.tenant_id", &SECRET]).await.unwrap().get(0);
    assert_eq!(tenant, HSBC);
    assert_eq!(account_ids(&app).await, vec![1, 2, 3, 4, 5, 6], "hsbc and its two children");
    let scope = value(&env.superuser().await, &format!("SELECT pgtenant.tenant_scope('{HSBC}')::text")).await;
    assert_eq!(value(&app, "SHOW pgtenant_native.scope").await, scope);
    assert_eq!(value(&app, "SELECT current_setting('app.tenant_id')").await, HSBC);
    assert_eq!(value(&app, "SELECT current_setting('pgtenant.context')").await, unsigned);

    // Refused, and nothing changes: a setting name set_context() refuses (22023);
    // an unsigned visible list, or a wrong secret (the verified way: 42501).
    let list = format!("v2.{pid}.{nonce}.{HSBC}.{HSBC},{BARCLAYS}..{}", "0".repeat(64));
    let wrong = "ffffffffffffffffffffffffffffffff";
    for (token, setting, secret, code) in [
        (unsigned.as_str(), "pgtenant_native.tenant", SECRET, "22023"),
        (unsigned.as_str(), "no_dot", SECRET, "22023"),
        (list.as_str(), "app.tenant_id", SECRET, "42501"),
        (unsigned.as_str(), "app.tenant_id", wrong, "42501"),
        (unsigned.as_str(), "app.tenant_id", "not hex", "42501"),
    ] {
        let err = app.query_one(switch, &[&token, &setting, &secret]).await.unwrap_err();
        assert_eq!(sqlstate(&err), code, "{setting} {secret}: {}", message(&err));
        assert_eq!(account_ids(&app).await, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(value(&app, "SHOW pgtenant_native.tenant").await, HSBC);
    }
}

/// What pgtenant does at checkout, by hand on a direct session as the
/// session role: the switch function's oid from the query a pool runs on
/// every server session it opens, then a FunctionCall of it with the token,
/// the tenant setting and the session's switching secret — in either store.
#[tokio::test]
async fn a_switch_by_function_call_as_the_session_role_needs_the_sessions_secret() {
    let env = TestEnv::start().await;
    let socket = env.cluster.socket_dir.join(format!(".s.PGSQL.{}", env.cluster.socket_port()));
    let key: Vec<u8> =
        env.superuser().await.query_one("SELECT key FROM pgtenant.context_key", &[]).await.unwrap().get(0);
    for store in BOTH_STORES {
        env.use_context_store(store).await;
        let mut session = raw::login_unix(&socket, pgtenant::dev::APP_ROLE, &env.database, &[]).await.expect("login");
        let oid: u32 = raw::first_column(&session.query(pgtenant::tenancy::context::SWITCH_FUNCTION_SQL).await)[0]
            .parse()
            .expect("the lookup answers an oid");
        let pid: i32 = raw::first_column(&session.query("SELECT pg_backend_pid()").await)[0].parse().unwrap();
        let secret = [7u8; 16];
        let hk = pgtenant::tenancy::TenantContext::of(HSBC_HK.into(), HSBC_HK.into());
        let token = pgtenant::tenancy::context::sign_token(&key, &hk, pid, &secret);
        let secret = pgtenant::hex::hex(&secret);
        session.query(&format!("SELECT pgtenant.set_context('{token}', 'app.tenant_id', '{secret}')")).await;
        let ids = |replies: Vec<raw::Message>| raw::first_column(&replies).join(",");
        assert_eq!(ids(session.query("SELECT id FROM accounts ORDER BY id").await), "3,4", "{store:?}");
        let barclays = pgtenant::tenancy::TenantContext::of(BARCLAYS.into(), BARCLAYS.into());
        let switch = pgtenant::tenancy::context::sign_token(&key, &barclays, pid, &[7u8; 16]);
        session.send(&raw::function_call(oid, &[&switch, "app.tenant_id", &secret])).await;
        let replies = session.until_ready().await;
        assert!(replies.iter().any(|m| m.tag == b'V') && replies.iter().all(|m| m.tag != b'E'), "{replies:?}");
        assert_eq!(ids(session.query("SELECT id FROM accounts ORDER BY id").await), "7,8,9", "{store:?}");
        // Another secret: the switch is verified instead, and an unsigned token is refused.
        let unsigned = format!("v2.{pid}.x.{HSBC_HK}.{HSBC_HK}..{}", "0".repeat(64));
        session.send(&raw::function_call(oid, &[&unsigned, "app.tenant_id", &"ab".repeat(16)])).await;
        let replies = session.until_ready().await;
        let error = replies.iter().find(|m| m.tag == b'E').unwrap_or_else(|| panic!("{store:?}: refused: {replies:?}"));
        assert_eq!(error.code().as_deref(), Some("42501"), "{store:?}");
        assert_eq!(ids(session.query("SELECT id FROM accounts ORDER BY id").await), "7,8,9", "{store:?}");
    }
}
