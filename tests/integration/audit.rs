//! The audit log (`[audit]`, src/audit.rs): one JSON line per request that
//! runs statements, or per transaction; literals redacted by the parser;
//! errors, refusals and rows; reopened on reload (logrotate).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::*;
use pgtenant::config::AuditLevel;

fn audit_path(purpose: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pgtenant-audit-{purpose}-{}-{}.jsonl", std::process::id(), rand_suffix()))
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// The log's lines, each parsed as JSON (a line that is not fails the test).
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

async fn lines_when(path: &Path, count: usize) -> Vec<Value> {
    eventually(&format!("{count} audit lines in {}", path.display()), || async { lines(path).len() >= count }).await;
    lines(path)
}

#[tokio::test]
async fn every_statement_is_logged_with_who_ran_it_and_its_literals_redacted() {
    let path = audit_path("statements");
    let env = TestEnv::start_with(|c| {
        c.audit.enabled = true;
        c.audit.path = Some(path.clone());
    })
    .await;
    let hk = env.connect("hk_teller").await;
    hk.simple_query("SELECT id FROM accounts WHERE holder <> 'SECRET-HOLDER-NAME' ORDER BY id").await.unwrap();
    let rows = hk.query("SELECT id FROM accounts WHERE id = $1", &[&3i64]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(sqlstate(&hk.simple_query("SELECT 1/0").await.unwrap_err()), "22012");
    assert_eq!(sqlstate(&hk.simple_query("SET ROLE postgres").await.unwrap_err()), "42501");
    let updated = hk.execute("UPDATE accounts SET holder = holder WHERE id IN (3, 4)", &[]).await.unwrap();
    assert_eq!(updated, 2);
    let barclays = env.connect("barclays_ops").await;
    barclays.simple_query("SELECT 42").await.unwrap();

    let log = lines_when(&path, 6).await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("SECRET-HOLDER-NAME"), "a literal reached the log: {text}");
    let of = |needle: &str| {
        log.iter()
            .find(|l| l["statement"].as_str().is_some_and(|s| s.contains(needle)))
            .unwrap_or_else(|| panic!("no line for {needle}: {text}"))
            .clone()
    };
    let select = of("holder <>");
    assert_eq!(select["statement"], "SELECT id FROM accounts WHERE holder <> $1 ORDER BY id");
    assert_eq!(select["rows"], 2);
    assert_eq!(select["tenant"], "hsbc-hk");
    assert_eq!(select["tenant_id"], HSBC_HK);
    assert_eq!(select["login"], "hk_teller");
    assert_eq!(select["sqlstate"], Value::Null);
    assert_eq!(select["refused"], false);
    assert!(select["client_addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{select}");
    assert!(select["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{select}");
    assert!(select["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{select}");
    assert_eq!(select["process"].as_u64(), Some(u64::from(std::process::id())));
    let sessions = crate::common::http::Admin::new(env.server.admin_addr, &env.config.admin.token)
        .get("/v1/sessions")
        .await
        .json();
    let hk_session = sessions.as_array().unwrap().iter().find(|s| s["username"] == "hk_teller").unwrap()["id"].clone();
    assert_eq!(select["session"], hk_session, "the id /v1/sessions shows");

    let bound = of("id = $1");
    assert_eq!(bound["rows"], 1, "an Execute of a prepared statement: {bound}");
    let failed = of("$1/$2");
    assert_eq!((failed["sqlstate"].as_str(), failed["refused"].as_bool()), (Some("22012"), Some(false)));
    let refused = of("SET ROLE");
    assert_eq!((refused["sqlstate"].as_str(), refused["refused"].as_bool()), (Some("42501"), Some(true)), "{text}");
    assert_eq!(of("UPDATE accounts")["rows"], 2);
    let barclays_lines: Vec<&Value> = log.iter().filter(|l| l["tenant"] == "barclays").collect();
    assert_eq!(barclays_lines.len(), 1, "{text}");
    assert_eq!(barclays_lines[0]["statement"], "SELECT $1");
    assert_eq!(barclays_lines[0]["login"], "barclays_ops");
    let _ = std::fs::remove_file(&path);
}

/// Queries a client pipelines ahead of a ReadyForQuery are each logged with
/// their own outcome: the first one's ReadyForQuery does not close the next.
#[tokio::test]
async fn pipelined_queries_keep_their_own_outcomes() {
    let path = audit_path("pipelined");
    let env = TestEnv::start_with(|c| {
        c.audit.enabled = true;
        c.audit.path = Some(path.clone());
    })
    .await;
    let mut session =
        crate::common::raw::login(env.server.proxy_addr, "hk_teller", PASSWORD, &env.database, &[]).await.unwrap();
    let mut batch = bytes::BytesMut::new();
    for sql in ["SELECT 1/0", "SET ROLE postgres", "SELECT id FROM accounts"] {
        postgres_protocol::message::frontend::query(sql, &mut batch).unwrap();
    }
    session.send(&batch).await;
    for _ in 0..3 {
        session.until_ready().await;
    }
    let log = lines_when(&path, 3).await;
    // statement, sqlstate, refused, rows
    let outcomes: Vec<Value> =
        log.iter().map(|l| serde_json::json!([l["statement"], l["sqlstate"], l["refused"], l["rows"]])).collect();
    assert_eq!(
        outcomes,
        vec![
            serde_json::json!(["SELECT $1/$2", "22012", false, 0]),
            serde_json::json!(["SET ROLE $1", "42501", true, 0]),
            serde_json::json!(["SELECT id FROM accounts", null, false, 2]),
        ]
    );
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_transaction_is_one_line_and_the_file_is_reopened_on_reload() {
    let path = audit_path("transactions");
    let env = TestEnv::start_with(|c| {
        c.audit.enabled = true;
        c.audit.path = Some(path.clone());
        c.audit.level = AuditLevel::Transaction;
    })
    .await;
    let hk = env.connect("hk_teller").await;
    for statement in ["BEGIN", "UPDATE accounts SET holder = holder WHERE id = 3", "SELECT id FROM accounts", "COMMIT"]
    {
        hk.simple_query(statement).await.unwrap();
    }
    let log = lines_when(&path, 1).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        log[0]["statement"],
        "BEGIN; UPDATE accounts SET holder = holder WHERE id = $1; SELECT id FROM accounts; COMMIT"
    );
    assert_eq!(log[0]["rows"], 3, "one updated, two read");

    // logrotate moves the file; a reload (SIGHUP) opens a new one.
    let rotated = path.with_extension("jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    env.server.reload(env.config.clone());
    hk.simple_query("SELECT 1").await.unwrap();
    let log = lines_when(&path, 1).await;
    assert_eq!(log[0]["statement"], "SELECT $1");
    assert_eq!(lines(&rotated).len(), 1, "the rotated file keeps what it had");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&rotated);
}

/// A service login's lines name the tenant each statement ran as: the one
/// it assumed, then none again after release().
#[tokio::test]
async fn a_service_logins_lines_name_the_tenant_it_assumed() {
    use crate::assume::{assume, service, service_env, token};
    let path = audit_path("service");
    let log_path = path.clone();
    let env = service_env(move |c| {
        crate::tokens::with_tokens(c, pgtenant::config::PoolMode::Transaction);
        c.audit.enabled = true;
        c.audit.path = Some(log_path);
    })
    .await;
    let orders = service(&env).await;
    orders.simple_query("SELECT 'before'").await.unwrap();
    assume(&orders, &token("hsbc-hk")).await.unwrap();
    orders.simple_query("SELECT count(*) FROM accounts").await.unwrap();
    orders.simple_query("SELECT pgtenant.release()").await.unwrap();
    orders.simple_query("SELECT 'after'").await.unwrap();

    let log = lines_when(&path, 5).await;
    let tenant_of = |statement: &str| {
        let line = log.iter().find(|l| l["statement"] == statement).unwrap_or_else(|| panic!("{statement}: {log:?}"));
        assert_eq!((line["login"].as_str(), line["tenant"].as_str()), (Some("orders_api"), Some("")), "{line}");
        line["tenant_id"].as_str().unwrap_or_default().to_owned()
    };
    const NO_TENANT: &str = "00000000-0000-0000-0000-000000000000";
    assert_eq!(tenant_of("SELECT $1"), NO_TENANT, "before any assume");
    assert_eq!(tenant_of("SELECT count(*) FROM accounts"), HSBC_HK);
    let after = log.iter().rev().find(|l| l["statement"] == "SELECT $1").unwrap();
    assert_eq!(after["tenant_id"], NO_TENANT, "after release(): {after}");
    let _ = std::fs::remove_file(&path);
}
