//! A driver must not tell pgtenant from PostgreSQL: regression tests for
//! behaviour that differed, each asserting what PostgreSQL itself does.

use pgtenant::config::PoolMode;
use tokio_postgres::AsyncMessage;

use crate::common::raw;
use crate::common::*;

async fn env_in(mode: PoolMode, size: usize) -> TestEnv {
    TestEnv::start_with(|c| {
        c.pool.mode = mode;
        c.pool.size = size;
    })
    .await
}

/// PostgreSQL keeps startup-packet values as the session's reset values:
/// RESET, SET … TO DEFAULT, RESET ALL and DISCARD ALL go back to them.
#[tokio::test]
async fn resets_go_back_to_the_startup_values() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let env = env_in(mode, 2).await;
        let url = format!(
            "{}?application_name=ledger&options=-c%20search_path%3Dpg_catalog,public",
            env.url("hk_teller", PASSWORD)
        );
        let client = connect_url(&url).await;
        let other = env.connect("barclays_ops").await;
        let startup = [("application_name", "ledger"), ("search_path", "pg_catalog,public")];
        for reset in [
            "RESET ALL",
            "DISCARD ALL",
            "RESET search_path; RESET application_name",
            "SET search_path TO DEFAULT; SET application_name TO DEFAULT",
        ] {
            client.simple_query("SET search_path = public; SET application_name = 'changed'").await.unwrap();
            assert_eq!(value(&client, "SHOW application_name").await, "changed");
            // Simple and extended protocol.
            for via_parse in [false, true] {
                if via_parse {
                    for statement in reset.split("; ") {
                        client.execute(statement, &[]).await.unwrap();
                    }
                } else {
                    client.simple_query(reset).await.unwrap();
                }
                // Another tenant takes the server sessions in between.
                value(&other, "SELECT 1").await;
                for (name, expected) in startup {
                    assert_eq!(value(&client, &format!("SHOW {name}")).await, expected, "{mode:?}: {reset}");
                }
                assert_eq!(value(&client, "SELECT string_agg(id::text, ',' ORDER BY id) FROM accounts").await, "3,4");
                client.simple_query("SET search_path = public; SET application_name = 'changed'").await.unwrap();
            }
        }
    }
}

/// A reset inside a transaction block is undone by ROLLBACK, and the
/// context pgtenant puts back meanwhile must not commit the client's work.
#[tokio::test]
async fn a_reset_inside_a_transaction_does_not_commit_it() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let env = env_in(mode, 1).await;
        let hk = env.connect("hk_teller").await;
        for reset in ["RESET ALL", "DISCARD SEQUENCES", "RESET application_name"] {
            hk.simple_query("BEGIN").await.unwrap();
            hk.simple_query("UPDATE accounts SET holder = 'uncommitted' WHERE id = 3").await.unwrap();
            hk.simple_query(reset).await.unwrap();
            assert_eq!(
                value(&hk, "SELECT holder FROM accounts WHERE id = 3").await,
                "uncommitted",
                "{mode:?}: {reset}: the transaction goes on, with the context"
            );
            hk.simple_query("ROLLBACK").await.unwrap();
            let holder: String =
                env.superuser().await.query_one("SELECT holder FROM accounts WHERE id = 3", &[]).await.unwrap().get(0);
            assert_eq!(holder, "Kowloon Trading Ltd", "{mode:?}: {reset}: rolled back");
            assert_eq!(value(&hk, "SELECT pgtenant.current_tenant()").await, HSBC_HK);
        }
    }
}

/// A notification from another session carries the process id that session
/// was given in its BackendKeyData, as on PostgreSQL.
#[tokio::test]
async fn notifications_carry_the_senders_client_pid() {
    for (mode, size) in [(PoolMode::Session, 3), (PoolMode::Transaction, 2)] {
        let env = env_in(mode, size).await;
        let (listener, mut messages) = env.connect_listening("hk_teller").await;
        listener.batch_execute("LISTEN jobs").await.unwrap();
        let mut sender =
            raw::login(env.server.proxy_addr, "hk_teller", PASSWORD, &env.database, &[]).await.expect("login");
        for round in 0..3 {
            let replies = sender.query(&format!("NOTIFY jobs, 'round {round}'")).await;
            assert!(replies.iter().all(|m| m.tag != b'E'), "{replies:?}");
            let notification = loop {
                match next_message(&mut messages).await {
                    AsyncMessage::Notification(n) => break n,
                    _ => continue,
                }
            };
            assert_eq!(notification.payload(), format!("round {round}"));
            assert_eq!(notification.channel(), "jobs");
            assert_eq!(notification.process_id(), sender.key.0, "{mode:?}: the sender's own pid");
        }
    }
}

/// `set_config(name, value, is_local)` with bind parameters (psycopg:
/// `SELECT set_config(%s, %s, false)`) is judged with the bound values:
/// ordinary settings work and follow the client, reserved ones are refused
/// with a message that names them.
#[tokio::test]
async fn set_config_with_bind_parameters_is_judged_at_bind() {
    for (mode, size) in [(PoolMode::Session, 2), (PoolMode::Transaction, 1)] {
        let env = env_in(mode, size).await;
        let hk = env.connect("hk_teller").await;
        let other = env.connect("barclays_ops").await;
        let row = hk
            .query_one("SELECT set_config($1, $2, false)", &[&"default_transaction_isolation", &"serializable"])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "serializable");
        hk.query_one("SELECT set_config($1, $2, $3)", &[&"work_mem", &"7MB", &true]).await.unwrap();
        hk.query_one("SELECT set_config('application_name', $1, false)", &[&"bound-name"]).await.unwrap();
        value(&other, "SELECT 1").await;
        assert_eq!(value(&hk, "SHOW default_transaction_isolation").await, "serializable", "{mode:?}");
        assert_eq!(value(&hk, "SHOW application_name").await, "bound-name", "{mode:?}");
        assert_eq!(value(&hk, "SHOW work_mem").await, "4MB", "{mode:?}: a local one lasted its transaction");
        assert_eq!(value(&other, "SHOW default_transaction_isolation").await, "read committed", "{mode:?}");

        for (name, value) in [
            ("app.tenant_id", BARCLAYS),
            ("APP.TENANT_ID", BARCLAYS),
            ("pgtenant.context", "v1.1.2.3.4.5"),
            ("role", "pgtenant_owner"),
            ("standard_conforming_strings", "off"),
            ("client_encoding", "SJIS"),
        ] {
            for is_local in [false, true] {
                let err =
                    hk.query("SELECT set_config($1, $2, $3)", &[&name, &value, &is_local]).await.expect_err("refused");
                assert_eq!(sqlstate(&err), "42501", "{mode:?}: {name}");
                let text = message(&err);
                assert!(text.contains(&name.to_ascii_lowercase()) || text.contains(name), "{mode:?}: {text}");
            }
        }
        let err = hk
            .query("SELECT set_config('standard_conforming_strings', $1, false)", &[&"off"])
            .await
            .expect_err("refused");
        assert_eq!(sqlstate(&err), "42501");
        // The refusal fails the Bind where it stands; the session goes on.
        assert_eq!(value(&hk, "SELECT current_setting('app.tenant_id')").await, HSBC_HK);
        assert_eq!(value(&hk, "SELECT string_agg(id::text, ',' ORDER BY id) FROM accounts").await, "3,4");
    }
}

/// A statement prepared with a bound set_config() could be run by SQL
/// EXECUTE with values the Bind check never sees: refused.
#[tokio::test]
async fn execute_cannot_bypass_the_bind_check() {
    use bytes::BytesMut;
    use postgres_protocol::message::frontend;
    let env = env_in(PoolMode::Session, 2).await;
    let mut raw = raw::login(env.server.proxy_addr, "hk_teller", PASSWORD, &env.database, &[]).await.unwrap();
    let mut out = BytesMut::new();
    frontend::parse("Evil", "SELECT set_config($1, $2, false)", [], &mut out).unwrap();
    frontend::sync(&mut out);
    raw.send(&out).await;
    let replies = raw.until_ready().await;
    assert!(replies.iter().all(|m| m.tag != b'E'), "{replies:?}");
    for sql in [
        format!("EXECUTE \"Evil\"('app.tenant_id', '{BARCLAYS}')"),
        format!("EXPLAIN EXECUTE \"Evil\"('app.tenant_id', '{BARCLAYS}')"),
        "execute \"Evil\"('pgtenant.context', '')".to_owned(),
    ] {
        let replies = raw.query(&sql).await;
        let error = replies.iter().find(|m| m.tag == b'E').unwrap_or_else(|| panic!("{sql} ran: {replies:?}"));
        assert_eq!(error.code().as_deref(), Some("42501"), "{sql}");
        assert!(error.field(b'M').unwrap().contains("judges those parameters"), "{error:?}");
    }
    let rows = raw.query("SELECT current_setting('app.tenant_id')").await;
    assert_eq!(raw::first_column(&rows), vec![HSBC_HK.to_owned()]);
    let err = env
        .connect("hk_teller")
        .await
        .simple_query("PREPARE p AS SELECT set_config($1, 'x', false)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
}

/// A syntax error the guard finds carries what PostgreSQL's carries: the
/// same message and position, and the parser's file and routine.
#[tokio::test]
async fn syntax_errors_carry_position_and_source() {
    let env = TestEnv::start().await;
    let hk = env.connect("hk_teller").await;
    let direct = env.superuser().await;
    for sql in ["SELECT 1; SELEKT 2", "SELECT 'unterminated", "SELECT set_config('a.b', 'c', false) FROM (", "DO $$"] {
        let ours = hk.simple_query(sql).await.unwrap_err();
        let theirs = direct.simple_query(sql).await.unwrap_err();
        let (ours, theirs) = (ours.as_db_error().unwrap(), theirs.as_db_error().unwrap());
        assert_eq!(ours.code(), theirs.code(), "{sql}");
        assert_eq!(ours.message(), theirs.message(), "{sql}");
        assert_eq!(ours.position(), theirs.position(), "{sql}");
        assert_eq!(ours.file(), theirs.file(), "{sql}");
        assert_eq!(ours.routine(), theirs.routine(), "{sql}");
        assert!(ours.line().is_some(), "{sql}");
    }
}

/// After RESET ALL the client hears the startup value of a reported
/// setting (ParameterStatus), as PostgreSQL tells it.
#[tokio::test]
async fn reset_reports_the_startup_value_back() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let env = env_in(mode, 1).await;
        let mut raw =
            raw::login(env.server.proxy_addr, "hk_teller", PASSWORD, &env.database, &[("application_name", "ledger")])
                .await
                .unwrap();
        raw.query("SET application_name = 'changed'").await;
        let mut seen = raw.query("RESET ALL").await;
        seen.extend(raw.query("SELECT 1").await);
        let reported: Vec<String> = seen
            .iter()
            .filter(|m| m.tag == b'S')
            .map(|m| String::from_utf8_lossy(&m.body).replace('\0', "="))
            .collect();
        assert_eq!(reported.last().map(String::as_str), Some("application_name=ledger="), "{mode:?}: {reported:?}");
        let shown = raw::first_column(&raw.query("SHOW application_name").await);
        assert_eq!(shown, vec!["ledger".to_owned()], "{mode:?}");
    }
}
