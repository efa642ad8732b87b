//! Real drivers through pgtenant in transaction pooling: asyncpg (its pool
//! sends RESET ALL on release and uses named prepared statements) and pgjdbc
//! (server-side prepared statements from the first use, metadata, batches).

use std::process::Command;

use pgtenant::config::PoolMode;

use crate::common::*;

#[tokio::test]
async fn asyncpg_pool_and_prepared_statements_in_transaction_mode() {
    let env = TestEnv::start_with(|c| {
        c.pool.size = 2;
        c.pool.mode = PoolMode::Transaction;
    })
    .await;
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/asyncpg_check.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .arg(env.url("hk_teller", PASSWORD))
        .arg(env.url("barclays_ops", PASSWORD))
        .args(["3,4", "7,8,9"]);
    let out = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("python3 on PATH");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "asyncpg failed:\n{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "ok");
    let pool = env.server.state.readwrite.figures();
    assert!(pool.created <= 2, "four asyncpg connections share two server sessions: {pool:?}");
}

#[tokio::test]
async fn pgjdbc_server_prepared_statements_in_transaction_mode() {
    let env = TestEnv::start_with(|c| {
        c.pool.size = 1;
        c.pool.mode = PoolMode::Transaction;
    })
    .await;
    let source = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/JdbcCheck.java");
    let url = format!("jdbc:postgresql://{}/{}?sslmode=disable", env.server.proxy_addr, env.database);
    let run = |user: &'static str, expected: &'static str| {
        let mut command = Command::new("java");
        command
            .args(["-cp", "/usr/share/java/postgresql.jar"])
            .arg(&source)
            .arg(&url)
            .arg(user)
            .arg(PASSWORD)
            .arg(expected);
        command
    };
    // Two tenants at once on one server session.
    let (a, b) = (run("hk_teller", "3,4"), run("barclays_ops", "7,8,9"));
    let (a, b) = tokio::join!(
        tokio::task::spawn_blocking(move || {
            let mut a = a;
            a.output()
        }),
        tokio::task::spawn_blocking(move || {
            let mut b = b;
            b.output()
        })
    );
    for out in [a.unwrap().expect("java on PATH"), b.unwrap().expect("java on PATH")] {
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "pgjdbc failed:\n{stdout}\n{stderr}");
        assert_eq!(stdout.trim(), "ok");
    }
    assert_eq!(env.server.state.readwrite.figures().created, 1, "both ran on one server session");
}
