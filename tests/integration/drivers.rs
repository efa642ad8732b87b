//! Real drivers through pgtenant in transaction pooling: asyncpg (its pool
//! sends RESET ALL on release and uses named prepared statements).

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
