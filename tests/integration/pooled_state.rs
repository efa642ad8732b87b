//! Attack tests on what a server session carries from one client to the
//! next: a client's settings replayed elsewhere must stay values (never SQL),
//! settings that change how the server reads text are refused, another
//! tenant's prepared statements stay out of reach, and pgtenant's own
//! exchange works whatever the previous client left.

use pgtenant::config::PoolMode;
use tokio_postgres::Client;

use crate::common::raw;
use crate::common::*;

async fn env_with(mode: PoolMode, size: usize) -> TestEnv {
    let env = TestEnv::start_with(|c| {
        c.pool.size = size;
        c.pool.mode = mode;
    })
    .await;
    // An existing schema's policy on the compatibility setting, the adoption
    // path that trusts `app.tenant_id` rather than `current_tenant()`.
    env.superuser()
        .await
        .batch_execute(&format!(
            "CREATE TABLE compat_notes (tenant_id uuid NOT NULL, note text NOT NULL);
             INSERT INTO compat_notes VALUES ('{HSBC_HK}', 'hk note'), ('{BARCLAYS}', 'barclays secret');
             ALTER TABLE compat_notes ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
             CREATE POLICY by_setting ON compat_notes
                 USING (tenant_id = current_setting('app.tenant_id')::uuid);
             GRANT SELECT ON compat_notes TO pgtenant_readwrite, pgtenant_readonly;"
        ))
        .await
        .unwrap();
    env
}

/// Every pool shape the attacks run in: session pooling, and transaction
/// pooling over one and two server sessions.
const SHAPES: &[(PoolMode, usize)] = &[(PoolMode::Session, 4), (PoolMode::Transaction, 1), (PoolMode::Transaction, 2)];

/// A client of hsbc-hk still has its own context, by every reading.
async fn assert_hk_context(client: &Client, shape: &str) {
    assert_eq!(value(client, "SELECT current_setting('app.tenant_id')").await, HSBC_HK, "{shape}");
    assert_eq!(value(client, "SELECT pgtenant.current_tenant()").await, HSBC_HK, "{shape}");
    assert_eq!(value(client, "SELECT string_agg(note, ',') FROM compat_notes").await, "hk note", "{shape}");
    assert_eq!(value(client, "SELECT string_agg(id::text, ',' ORDER BY id) FROM accounts").await, "3,4", "{shape}");
}

/// A statement that, if it ever ran, would give the session barclays' id in
/// the compatibility setting (the reproduction).
fn hostile_value() -> String {
    format!(
        "\\';do $d$begin execute $x$set app.$x$ || $y$tenant_id = $y$ || quote_literal($z${BARCLAYS}$z$); \
         end$d$;-- /* */ $$ \\\\ ''"
    )
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Percent-encodes every byte that is not alphanumeric (URL query values).
fn url_encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[tokio::test]
async fn turning_standard_conforming_strings_off_is_refused() {
    for &(mode, size) in SHAPES {
        let shape = format!("{mode:?} pool of {size}");
        let env = env_with(mode, size).await;
        let a = env.connect("hk_teller").await;
        for sql in [
            "SET standard_conforming_strings = off",
            "SET SESSION standard_conforming_strings TO false",
            "BEGIN; SET LOCAL standard_conforming_strings = off",
            "SELECT set_config('standard_conforming_strings', 'off', false)",
            "SELECT set_config('standard_conforming_strings', lower('OFF'), true)",
        ] {
            let err = a.simple_query(sql).await.unwrap_err();
            assert_eq!(sqlstate(&err), "42501", "{shape}: {sql}");
            assert!(message(&err).contains("standard_conforming_strings cannot be turned off"), "{}", message(&err));
            a.simple_query("ROLLBACK").await.unwrap();
        }
        assert_eq!(value(&a, "SHOW standard_conforming_strings").await, "on", "{shape}");
        // Through the startup packet, as a key or in options: the login is refused.
        for param in [("standard_conforming_strings", "off"), ("options", "-c standard_conforming_strings=off")] {
            let refused = raw::login(env.server.proxy_addr, "hk_teller", PASSWORD, &env.database, &[param]).await;
            let err = refused.err().unwrap_or_else(|| panic!("{shape}: {param:?} must be refused"));
            assert_eq!(err.code().as_deref(), Some("42501"), "{shape}: {param:?}");
        }
        assert_hk_context(&a, &shape).await;
    }
}

#[tokio::test]
async fn encodings_that_hide_quote_bytes_are_refused() {
    let env = env_with(PoolMode::Transaction, 1).await;
    let a = env.connect("hk_teller").await;
    for sql in
        ["SET client_encoding = 'SJIS'", "SET NAMES 'GBK'", "SELECT set_config('client_encoding', 'BIG5', false)"]
    {
        let err = a.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}");
        assert!(message(&err).contains("use UTF8"), "{}", message(&err));
    }
    let err = match tokio_postgres::connect(
        &format!("{}?options=-c%20client_encoding%3DWIN932", env.url("hk_teller", PASSWORD)),
        tokio_postgres::NoTls,
    )
    .await
    {
        Ok(_) => panic!("a SJIS client encoding must be refused at login"),
        Err(e) => e,
    };
    assert_eq!(sqlstate(&err), "42501");
    // An ASCII-safe encoding is an ordinary setting, and follows the client.
    a.simple_query("SET client_encoding = 'LATIN1'").await.unwrap();
    let b = env.connect("barclays_ops").await;
    assert_eq!(value(&b, "SHOW client_encoding").await, "UTF8");
    assert_eq!(value(&a, "SHOW client_encoding").await, "LATIN1");
    a.simple_query("RESET client_encoding").await.unwrap();
    assert_hk_context(&a, "transaction pool of 1").await;
}

/// With the statement guard off (a measuring switch), the server itself
/// reports the change; pgtenant ends the session rather than pool a server
/// session that reads statements differently from the guard.
#[tokio::test]
async fn a_server_session_that_stops_conforming_is_closed() {
    let env = TestEnv::start_with(|c| {
        c.pool.size = 1;
        c.pool.mode = PoolMode::Transaction;
        c.proxy.statement_guard = false;
    })
    .await;
    let a = env.connect("hk_teller").await;
    let pid = value(&a, "SELECT pg_backend_pid()").await;
    let err = a.simple_query("SET standard_conforming_strings = off").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    assert!(message(&err).contains("standard_conforming_strings was changed"), "{}", message(&err));
    let b = env.connect("hk_teller").await;
    assert_ne!(value(&b, "SELECT pg_backend_pid()").await, pid, "that server session was not pooled again");
    assert_eq!(value(&b, "SHOW standard_conforming_strings").await, "on");
}

/// The reproduction and its variants: a hostile value in every kind
/// of setting, set by SQL, by set_config() and in the startup packet, while
/// another client of the same tenant tries to leave the server session in a
/// state where replaying it would run it.
#[tokio::test]
async fn replayed_settings_never_run_as_sql() {
    let hostile = hostile_value();
    for &(mode, size) in SHAPES {
        let shape = format!("{mode:?} pool of {size}");
        let env = env_with(mode, size).await;
        let fresh = env.connect("barclays_ops").await;
        let default_name = value(&fresh, "SHOW application_name").await;
        drop(fresh);

        let a = env.connect("hk_teller").await;
        let err = a.simple_query("SET standard_conforming_strings = off").await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{shape}");
        value(&a, "SELECT 1").await;

        let b = env.connect("hk_teller").await;
        let search_path = format!("public, {}", pgtenant::quote::quote_ident(&hostile));
        b.simple_query(&format!(
            "SET application_name = {}; SET myapp.note = {}; SET search_path = {search_path}",
            literal(&hostile),
            literal(&hostile)
        ))
        .await
        .unwrap();
        b.simple_query(&format!("SELECT set_config('myapp.other', {}, false)", literal(&hostile))).await.unwrap();
        // Values the server refuses: refused as PostgreSQL refuses them, and nothing runs.
        for setting in ["DateStyle", "TimeZone"] {
            let err = b.simple_query(&format!("SET {setting} = {}", literal(&hostile))).await.unwrap_err();
            assert_eq!(sqlstate(&err), "22023", "{shape}: {setting}");
        }
        let startup = connect_url(&format!(
            "{}?application_name={}&options={}",
            env.url("hk_teller", PASSWORD),
            url_encoded(&hostile),
            url_encoded("-c myapp.note=\\';select$$--/*")
        ))
        .await;

        // PostgreSQL keeps the first 63 bytes of an application name (and of an identifier).
        let hostile_name = &hostile[..63];
        for round in 0..3 {
            // A takes the server session(s) between B's transactions.
            value(&a, "SELECT 1").await;
            let shape = format!("{shape}, round {round}");
            assert_eq!(value(&b, "SHOW application_name").await, hostile_name, "{shape}");
            assert_eq!(value(&b, "SELECT current_setting('myapp.note')").await, hostile, "{shape}");
            assert_eq!(value(&b, "SELECT current_setting('myapp.other')").await, hostile, "{shape}");
            assert_eq!(value(&b, "SHOW search_path").await, format!("public, \"{hostile_name}\""));
            assert_hk_context(&b, &shape).await;
            value(&a, "SELECT 1").await;
            assert_eq!(value(&startup, "SHOW application_name").await, hostile_name, "{shape}");
            assert_eq!(value(&startup, "SELECT current_setting('myapp.note')").await, "';select$$--/*", "{shape}");
            assert_hk_context(&startup, &shape).await;
            assert_hk_context(&a, &shape).await;
        }

        // The next client of each server session sees none of it.
        drop((a, b, startup));
        let next = env.connect("barclays_ops").await;
        for _ in 0..size {
            assert_eq!(value(&next, "SHOW application_name").await, default_name, "{shape}");
            assert_eq!(value(&next, "SELECT coalesce(current_setting('myapp.note', true), '')").await, "");
            assert_eq!(value(&next, "SHOW search_path").await, "\"$user\", public", "{shape}");
            assert_eq!(value(&next, "SELECT current_setting('app.tenant_id')").await, BARCLAYS, "{shape}");
            assert_eq!(value(&next, "SELECT string_agg(note, ',') FROM compat_notes").await, "barclays secret");
        }
    }
}

/// Settings one tenant leaves on a pooled server session cannot break the
/// next tenant's context exchange, nor reach its session.
#[tokio::test]
async fn another_tenants_settings_do_not_reach_the_next_tenant() {
    let settings: &[(&str, &str)] = &[
        ("default_transaction_read_only", "on"),
        ("transaction_read_only", "on"),
        ("statement_timeout", "'1s'"),
        ("lock_timeout", "'1ms'"),
        ("idle_in_transaction_session_timeout", "'1ms'"),
        ("default_transaction_isolation", "'serializable'"),
        ("search_path", "pg_catalog"),
        ("plpgsql.extra_warnings", "'all'"),
        ("plpgsql.extra_errors", "'all'"),
        ("check_function_bodies", "off"),
        ("row_security", "off"),
        ("DateStyle", "'SQL, DMY'"),
        ("IntervalStyle", "'sql_standard'"),
        ("client_encoding", "'LATIN1'"),
        ("bytea_output", "'escape'"),
        ("extra_float_digits", "-15"),
        ("TimeZone", "'Pacific/Chatham'"),
    ];
    for size in [1, 2] {
        let env = env_with(PoolMode::Transaction, size).await;
        let probe = env.connect("barclays_ops").await;
        let mut defaults = Vec::new();
        for (name, _) in settings {
            defaults.push(value(&probe, &format!("SELECT current_setting('{name}', true)")).await);
        }
        drop(probe);
        for ((name, attack), default) in settings.iter().zip(&defaults) {
            let shape = format!("pool of {size}, {name} = {attack}");
            let acme = env.connect("hk_teller").await;
            acme.simple_query(&format!("SET {name} = {attack}")).await.unwrap_or_else(|e| panic!("{shape}: {e}"));
            let _ = acme.simple_query("SELECT 1").await;
            // globex connects (its login runs the context exchange on acme's
            // server session) and works as if acme had never been there.
            let globex = env.connect("barclays_ops").await;
            assert_eq!(value(&globex, "SELECT pgtenant.current_tenant()").await, BARCLAYS, "{shape}");
            assert_eq!(value(&globex, "SELECT string_agg(id::text, ',' ORDER BY id) FROM accounts").await, "7,8,9");
            assert_eq!(value(&globex, "SELECT string_agg(note, ',') FROM compat_notes").await, "barclays secret");
            globex.simple_query("UPDATE accounts SET balance = balance WHERE id = 7").await.unwrap();
            for _ in 0..size {
                let seen = value(&globex, &format!("SELECT current_setting('{name}', true)")).await;
                assert_eq!(&seen, default, "{shape}");
                let _ = acme.simple_query("SELECT 1").await;
            }
            acme.simple_query(&format!("RESET {name}")).await.unwrap();
        }
    }
}

/// A read-only default of the session role itself (an operator's choice for
/// readonly logins) does not stop pgtenant's own exchange.
#[tokio::test]
async fn a_read_only_role_default_does_not_stop_the_context_exchange() {
    let env = env_with(PoolMode::Transaction, 1).await;
    env.superuser()
        .await
        .batch_execute(&format!(
            "ALTER ROLE {} IN DATABASE {} SET default_transaction_read_only = on",
            pgtenant::dev::APP_READONLY_ROLE,
            env.database
        ))
        .await
        .unwrap();
    let auditor = env.connect("london_auditor").await;
    assert_eq!(value(&auditor, "SELECT string_agg(id::text, ',' ORDER BY id) FROM accounts").await, "5,6");
    assert_eq!(value(&auditor, "SHOW default_transaction_read_only").await, "on");
}

/// DISCARD SEQUENCES makes pgtenant install the context again, under the
/// client's own settings, which must not stop it.
#[tokio::test]
async fn the_context_comes_back_after_discard_sequences_under_a_read_only_default() {
    for &(mode, size) in SHAPES {
        let env = env_with(mode, size).await;
        let hk = env.connect("hk_teller").await;
        hk.simple_query("SET default_transaction_read_only = on; SET statement_timeout = '1min'").await.unwrap();
        hk.simple_query("DISCARD SEQUENCES").await.unwrap();
        assert_hk_context(&hk, &format!("{mode:?} pool of {size}")).await;
        assert_eq!(value(&hk, "SHOW default_transaction_read_only").await, "on");
        assert_eq!(value(&hk, "SHOW statement_timeout").await, "1min");
    }
}

const SECRET_STATEMENT: &str = "SELECT holder FROM accounts WHERE iban = 'GB-SECRET-IBAN-7' AND balance > $1::int";

/// Another tenant's prepared statement texts cannot be read through any of
/// the routes that show a server session's prepared statements.
#[tokio::test]
async fn another_tenants_statement_texts_are_unreadable() {
    for size in [1, 2] {
        let env = env_with(PoolMode::Transaction, size).await;
        let barclays = env.connect("barclays_ops").await;
        let statement = barclays.prepare(SECRET_STATEMENT).await.unwrap();
        for _ in 0..size {
            barclays.query(&statement, &[&0i32]).await.unwrap();
        }
        let hsbc = env.connect("hsbc_admin").await;
        for sql in [
            "SELECT name, statement FROM pg_prepared_statements",
            "TABLE pg_prepared_statements",
            "SELECT * FROM pg_catalog . \"pg_prepared_statements\"",
            "SELECT * FROM U&\"pg_prepared_statement\\0073\"",
            "SELECT statement FROM pg_prepared_statement()",
            "SELECT * FROM pg_catalog.pg_prepared_statement() AS s(name, statement, prepare_time, types, fromsql, \
             generic_plans, custom_plans)",
            "WITH s AS (SELECT statement FROM pg_prepared_statements) SELECT * FROM s",
            "CREATE VIEW peek AS SELECT statement FROM pg_prepared_statements",
        ] {
            for _ in 0..size {
                let err = hsbc.simple_query(sql).await.unwrap_err();
                assert_eq!(sqlstate(&err), "42501", "pool of {size}: {sql}");
                assert!(message(&err).contains("pg_prepared_statements is not available"), "{}", message(&err));
                // Extended protocol too.
                let err = hsbc.query(sql, &[]).await.unwrap_err();
                assert_eq!(sqlstate(&err), "42501", "pool of {size}: {sql}");
            }
        }
        // Names are keyed per tenant and process: the name a shared,
        // text-derived scheme would give barclays' statement does not exist.
        use sha2::{Digest, Sha256};
        let mut parse_body = SECRET_STATEMENT.as_bytes().to_vec();
        parse_body.extend_from_slice(&[0, 0, 0]);
        let guess = format!("pgt_{}", pgtenant::hex::hex(&Sha256::digest(&parse_body)[..10]));
        for _ in 0..size {
            let err = hsbc.simple_query(&format!("EXECUTE {guess}(0)")).await.unwrap_err();
            assert_eq!(sqlstate(&err), "26000", "pool of {size}");
        }
        // Prepared transactions are seen and finished across tenants: refused.
        for sql in ["SELECT gid FROM pg_prepared_xacts", "COMMIT PREPARED 'x'", "ROLLBACK PREPARED 'x'"] {
            let err = hsbc.simple_query(sql).await.unwrap_err();
            assert_eq!(sqlstate(&err), "42501", "{sql}");
        }
        // barclays' statement still works for barclays, with its rows only.
        assert!(barclays.query(&statement, &[&0i32]).await.unwrap().is_empty());
        let rows = hsbc.query("SELECT count(*) FROM accounts", &[]).await.unwrap();
        assert_eq!(rows[0].get::<_, i64>(0), 6);
    }
}

/// In session pooling the view shows the client's own statements only, as
/// on PostgreSQL.
#[tokio::test]
async fn session_pooling_shows_a_client_its_own_statements() {
    let env = env_with(PoolMode::Session, 1).await;
    let barclays = env.connect("barclays_ops").await;
    barclays.prepare(SECRET_STATEMENT).await.unwrap();
    drop(barclays);
    let hsbc = env.connect("hsbc_admin").await;
    hsbc.simple_query("PREPARE mine AS SELECT 1").await.unwrap();
    assert_eq!(value(&hsbc, "SELECT string_agg(name, ',') FROM pg_prepared_statements").await, "mine");
}

/// Issue: a server session reset once (after a pinned client) was reset
/// before every later transaction.
#[tokio::test]
async fn a_reset_server_session_is_reset_once() {
    let env = env_with(PoolMode::Transaction, 1).await;
    let pinned = env.connect("hk_teller").await;
    pinned.simple_query("PREPARE pinning AS SELECT 1").await.unwrap();
    drop(pinned);
    let next = env.connect("barclays_ops").await;
    let before = env.server.state.routes.default_placement().readwrite.figures().resets;
    for _ in 0..20 {
        value(&next, "SELECT 1").await;
    }
    let resets = env.server.state.routes.default_placement().readwrite.figures().resets - before;
    assert!(resets <= 1, "{resets} resets for 20 statements");
}
