//! Unit tests of the parser pass (guard/inspect.rs).

use super::*;

#[test]
fn blank_text_is_judged_without_scanning() {
    for sql in ["", " ", "\n\t\r\x0b\x0c"] {
        assert_eq!(inspect(sql, "app.tenant_id"), Inspection::default(), "{sql:?}");
    }
}

#[test]
fn set_config_on_ordinary_settings_is_followed_or_flagged() {
    let followed = inspect("SELECT set_config('jit', 'off', false)", "app.tenant_id");
    assert_eq!(followed.setting_changes, vec![("jit".to_owned(), Some("off".to_owned()))]);
    assert!(!followed.untracked_settings && followed.denial.is_none());
    let local = inspect("SELECT set_config('jit', 'off', true)", "app.tenant_id");
    assert!(local.setting_changes.is_empty() && !local.untracked_settings);
    for sql in ["SELECT set_config('jit', $1, false)", "SELECT set_config('jit', 'off', $2)"] {
        let inspection = inspect(sql, "app.tenant_id");
        assert!(inspection.bound_set_configs.len() == 1 && inspection.denial.is_none(), "{sql}");
    }
    for sql in
        ["SELECT set_config('work_mem', '3' || 'MB', false)", "SET jit = on; SELECT set_config('jit', 'off', false)"]
    {
        let inspection = inspect(sql, "app.tenant_id");
        assert!(inspection.untracked_settings && inspection.denial.is_none(), "{sql}");
    }
}

fn denial(sql: &str) -> Option<String> {
    inspect(sql, "app.tenant_id").denial.map(|e| format!("{} {}", e.code, e.message))
}

#[test]
fn context_changes_are_refused_everywhere() {
    for sql in [
        "SET app.tenant_id = 'x'",
        "SET LOCAL app.tenant_id = 'x'",
        "set \"app.tenant_id\" to 'x'",
        "RESET app.tenant_id",
        "SET pgtenant.context = 'x'",
        "SET ROLE postgres",
        "RESET ROLE",
        "SET SESSION AUTHORIZATION postgres",
        "RESET SESSION AUTHORIZATION",
        "SELECT 1; SET app.tenant_id = 'x'",
        "SELECT set_config('app.tenant_id', 'x', false)",
        "SELECT pg_catalog.set_config('app.tenant_id', 'x', false)",
        "SELECT \"set_config\"('app.tenant_id', 'x', false)",
        "SELECT U&\"\\0073et_config\"('app.tenant_id', 'x', false)",
        "SELECT * FROM t WHERE length(set_config('app.tenant_id', 'b', false)) > 0",
        "PREPARE p AS SELECT set_config('app.tenant_id', 'b', false)",
        "DECLARE c CURSOR WITH HOLD FOR SELECT set_config('app.tenant_id', 'b', false)",
        "SELECT ARRAY[set_config('app.tenant_id', 'b', false)]",
        "VALUES (set_config('app.tenant_id', 'b', false))",
        "WITH x AS (SELECT set_config('app.tenant_id','b',false)) SELECT * FROM x",
        "COPY (SELECT set_config('app.tenant_id','b',false)) TO STDOUT",
        "SELECT set_config /* hidden */ ('app.tenant_id','b',false)",
        "SELECT set_config('APP.TENANT_ID', 'x', false)",
        "SELECT set_config('pgtenant.context', 'x', false)",
        "SELECT set_config('role', 'postgres', false)",
        "ALTER ROLE current_user SET app.tenant_id = 'x'",
        "ALTER DATABASE app SET app.tenant_id = 'x'",
    ] {
        let d = denial(sql).unwrap_or_else(|| panic!("allowed: {sql}"));
        assert!(d.starts_with("42501 the tenant context is managed by pgtenant"), "{sql}: {d}");
    }
}

#[test]
fn set_config_names_it_cannot_read_are_refused_and_bound_ones_wait_for_bind() {
    for sql in [
        "SELECT set_config('app.' || 'tenant_id', 'x', false)",
        "SELECT set_config(E'app.tenant_id', 'x', false)",
        "SELECT set_config(name, 'x', false) FROM pg_settings",
        "SELECT set_config(lower($1), 'x', false)",
    ] {
        let d = denial(sql).unwrap_or_else(|| panic!("allowed: {sql}"));
        assert!(d.starts_with("42501 set_config() with a computed setting name"), "{sql}: {d}");
    }
    let d = denial("PREPARE p AS SELECT set_config($1, 'x', false)").unwrap();
    assert!(d.contains("PREPARE parameter"), "{d}");
    let i = inspect("SELECT set_config($1, $2::text, false)", "app.tenant_id");
    assert_eq!(
        i.bound_set_configs,
        vec![BoundSetConfig { name: Arg::Param(1), value: Arg::Param(2), scope: Arg::Bool(false) }]
    );
    assert!(i.denial.is_none() && !i.untracked_settings);
    assert_eq!(inspect("EXECUTE evil('a', 'b')", "app.tenant_id").executes, vec!["evil".to_owned()]);
    assert_eq!(inspect("EXPLAIN EXECUTE \"Evil\"", "app.tenant_id").executes, vec!["evil".to_owned()]);
}

#[test]
fn dynamic_sql_and_side_channels_are_refused() {
    for sql in [
        "DO $$ BEGIN PERFORM 1; END $$",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
        "CREATE PROCEDURE p() LANGUAGE sql AS 'select 1'",
        "SELECT query_to_xml('select 1', true, true, '')",
        "SELECT pg_cancel_backend(123)",
        "SELECT pg_terminate_backend(123)",
        "SELECT * FROM pg_stat_activity",
        "SELECT * FROM pg_catalog.pg_locks",
        "SELECT lo_import('/etc/passwd')",
        "SELECT lo_get(1234)",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_read_file('/etc/passwd')",
        "COPY accounts TO PROGRAM 'cat'",
        "COPY accounts FROM '/etc/passwd'",
        "EXPLAIN ANALYZE SELECT * FROM accounts",
        "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM accounts",
        "SELECT public.pg_notify('c', 'x')",
        "LOAD 'plpgsql'",
        "SELECT U&\"!0073et_config\" UESCAPE '!' ('a','b',false)",
    ] {
        let d = denial(sql).unwrap_or_else(|| panic!("allowed: {sql}"));
        assert!(d.starts_with("42501 "), "{sql}: {d}");
    }
}

#[test]
fn ordinary_sql_passes() {
    for sql in [
        "SET search_path = public",
        "SET statement_timeout = '5s'",
        "SET application_name = 'x'",
        "SET DateStyle = ISO",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "UPDATE accounts SET balance = 1 WHERE id = 3",
        "SELECT current_setting('app.tenant_id')",
        "EXPLAIN SELECT * FROM accounts",
        "EXPLAIN (ANALYZE false) SELECT 1",
        "COPY accounts TO STDOUT",
        "SELECT 'set_config(' AS text_only",
        "SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new",
        "SELECT set_config('jit', $1, false)",
        "SELECT lower('X')",
    ] {
        assert_eq!(denial(sql), None, "{sql}");
    }
}

#[test]
fn resets_and_channels_are_noted() {
    assert!(inspect("RESET ALL", "app.tenant_id").resets_context);
    assert!(inspect("DISCARD ALL", "app.tenant_id").resets_context);
    assert!(!inspect("DISCARD PLANS", "app.tenant_id").resets_context);
    let sequences = inspect("DISCARD SEQUENCES", "app.tenant_id");
    assert!(sequences.resets_context && !sequences.wipes_settings);
    assert!(inspect("RESET ALL", "app.tenant_id").wipes_settings);
    let i = inspect("SELECT 1; NOTIFY jobs, 'it''s done'; LISTEN \"Mixed\"", "app.tenant_id");
    assert_eq!(i.channel_statements.len(), 2);
    assert_eq!(i.channel_statements[0].kind, ChannelCommand::Notify);
    assert_eq!(i.channel_statements[0].payload, "it's done");
    assert_eq!(i.channel_statements[1].channel, "Mixed");
}

#[test]
fn pg_notify_calls_are_rewritten_to_the_tenant_scoped_wrapper() {
    for (sql, rewritten) in [
        ("SELECT pg_notify('c', 'x')", "SELECT pgtenant.notify('c', 'x')"),
        ("SELECT pg_catalog.pg_notify($1, $2)", "SELECT pgtenant.notify($1, $2)"),
        ("select PG_CATALOG . \"pg_notify\" ('a' || 'b', 'x')", "select pgtenant.notify ('a' || 'b', 'x')"),
        (
            "SELECT pg_notify(channel, body) FROM outbox; NOTIFY jobs; SELECT pg_notify('c', pg_notify_payload())",
            "SELECT pgtenant.notify(channel, body) FROM outbox; NOTIFY \"t0.jobs\"; SELECT pgtenant.notify('c', pg_notify_payload())",
        ),
    ] {
        let i = inspect(sql, "app.tenant_id");
        assert!(i.denial.is_none(), "{sql}: {:?}", i.denial);
        assert_eq!(crate::guard::rewrite_channels(sql, &i.channel_statements, "t0."), rewritten, "{sql}");
    }
    // A pg_notify of another schema is not PostgreSQL's.
    assert!(denial("SELECT other.pg_notify('c', 'x')").unwrap().starts_with("42501 "));
}

#[test]
fn set_values_are_kept_as_set_config_takes_them() {
    let value = |sql: &str| {
        let i = inspect(sql, "app.tenant_id");
        assert!(i.denial.is_none() && !i.session_state, "{sql}: {i:?}");
        i.setting_changes.into_iter().next().and_then(|(_, v)| v)
    };
    assert_eq!(value("SET application_name = 'it''s'").as_deref(), Some("it's"));
    assert_eq!(value(r"SET application_name = E'a\\'';do'").as_deref(), Some(r"a\';do"));
    assert_eq!(value("SET statement_timeout = 5").as_deref(), Some("5"));
    assert_eq!(value("SET extra_float_digits = -1").as_deref(), Some("-1"));
    assert_eq!(value("SET seed = 0.5").as_deref(), Some("0.5"));
    assert_eq!(value("SET DateStyle = ISO, DMY").as_deref(), Some("iso, dmy"));
    assert_eq!(
        value("SET search_path = public, \"My Schema\", 'a, b'").as_deref(),
        Some("public, \"My Schema\", \"a, b\"")
    );
    assert_eq!(
        value("SET search_path TO \"$user\", public, \"select\"").as_deref(),
        Some("\"$user\", public, \"select\"")
    );
    assert_eq!(value("SET SCHEMA 'x'").as_deref(), Some("x"));
    assert_eq!(value("SET TIME ZONE 'UTC'").as_deref(), Some("UTC"));
    assert_eq!(value("SET work_mem TO DEFAULT"), None);
    assert!(inspect("SET TIME ZONE INTERVAL '+02:00' HOUR TO MINUTE", "app.tenant_id").session_state);
    // Transaction-scoped settings are not session state to carry.
    let i = inspect("SET transaction_read_only = on; SET LOCAL work_mem = '1MB'", "app.tenant_id");
    assert!(i.setting_changes.is_empty() && !i.session_state, "{i:?}");
}

#[test]
fn settings_that_change_how_text_is_read_are_refused() {
    for sql in [
        "SET standard_conforming_strings = off",
        "SET standard_conforming_strings TO false",
        "SET LOCAL standard_conforming_strings = 0",
        "SET client_encoding = 'SJIS'",
        "SET NAMES 'BIG5'",
        "SET client_encoding = GBK",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        "SELECT set_config('standard_conforming_strings', 'off', true)",
        "SELECT set_config('standard_conforming_strings', lower('OFF'), false)",
        "SELECT set_config('CLIENT_ENCODING', 'win932', false)",
    ] {
        let d = denial(sql).unwrap_or_else(|| panic!("allowed: {sql}"));
        assert!(d.starts_with("42501 "), "{sql}: {d}");
    }
    for sql in [
        "SET standard_conforming_strings = on",
        "RESET standard_conforming_strings",
        "SET client_encoding = 'UTF8'",
        "SET NAMES 'LATIN1'",
        "SELECT set_config('client_encoding', 'UTF8', false)",
    ] {
        assert_eq!(denial(sql), None, "{sql}");
    }
}

#[test]
fn prepared_transactions_and_shared_session_views() {
    for sql in [
        "PREPARE TRANSACTION 'x'",
        "COMMIT PREPARED 'x'",
        "ROLLBACK PREPARED 'x'",
        "SELECT gid FROM pg_prepared_xacts",
        "SELECT * FROM pg_prepared_xact()",
        "ALTER FUNCTION f() SET search_path = x",
        "ALTER FUNCTION f() RESET ALL",
    ] {
        assert!(denial(sql).is_some_and(|d| d.starts_with("42501 ")), "{sql}");
    }
    for sql in [
        "SELECT name, statement FROM pg_prepared_statements",
        "SELECT * FROM pg_catalog.\"pg_prepared_statements\"",
        "SELECT * FROM pg_prepared_statement()",
        "CREATE VIEW v AS SELECT * FROM pg_prepared_statements",
    ] {
        let i = inspect(sql, "app.tenant_id");
        assert!(i.reads_pooled_statements && i.denial.is_none(), "{sql}");
    }
    assert!(!inspect("SELECT * FROM pg_cursors", "app.tenant_id").reads_pooled_statements);
}

#[test]
fn unparsable_sql_is_refused() {
    let d = denial("SELEKT 1").unwrap();
    assert!(d.starts_with("42601 syntax error"), "{d}");
}

mod session_state {
    use super::*;

    #[test]
    fn statements_that_need_a_whole_session() {
        for sql in [
            "PREPARE p AS SELECT 1",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        ] {
            assert!(inspect(sql, "app.tenant_id").session_state, "{sql}");
        }
        for sql in [
            "SET statement_timeout = 5",
            "BEGIN; SET LOCAL statement_timeout = 5; COMMIT",
            "DECLARE c CURSOR FOR SELECT 1",
            // The pool's listening connection serves it (frontend/listening.rs).
            "LISTEN jobs",
        ] {
            assert!(!inspect(sql, "app.tenant_id").session_state, "{sql}");
        }
        assert!(inspect("SELECT 1; LISTEN jobs", "app.tenant_id").listens());
        assert!(!inspect("UNLISTEN jobs", "app.tenant_id").listens());
        assert!(inspect("DISCARD ALL", "app.tenant_id").unlistens_all);
        assert!(!inspect("RESET ALL; DEALLOCATE ALL", "app.tenant_id").unlistens_all);
        let i = inspect("SET statement_timeout = '5s'; RESET search_path", "app.tenant_id");
        assert_eq!(
            i.setting_changes,
            vec![("statement_timeout".into(), Some("5s".into())), ("search_path".into(), None)]
        );
    }
}
