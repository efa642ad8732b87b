//! Real drivers through pgtenant in transaction pooling: asyncpg (its pool
//! sends RESET ALL on release and uses named prepared statements; its
//! add_listener, with psycopg's notifies()) and pgjdbc
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
    let pool = env.server.state.routes.default_placement().readwrite.figures();
    assert!(pool.created <= 2, "four asyncpg connections share two server sessions: {pool:?}");
}

/// asyncpg's add_listener and psycopg's notifies() in transaction pooling
/// over one server session: listeners hold none between transactions.
#[tokio::test]
async fn asyncpg_and_psycopg_listen_in_transaction_mode() {
    let env = TestEnv::start_with(|c| {
        c.pool.size = 1;
        c.pool.mode = PoolMode::Transaction;
        c.pool.checkout_timeout_secs = 5;
    })
    .await;
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/listen_check.py");
    let mut command = Command::new("python3");
    command.arg(script).arg(env.url("hk_teller", PASSWORD)).arg(env.url("barclays_ops", PASSWORD));
    let out = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("python3 on PATH");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "listen_check.py failed:\n{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "ok");
    let pool = env.server.state.routes.default_placement().readwrite.figures();
    assert_eq!(pool.created, 1, "every client shared the one server session: {pool:?}");
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
    assert_eq!(
        env.server.state.routes.default_placement().readwrite.figures().created,
        1,
        "both ran on one server session"
    );
}

/// psycopg's own test suite (vendored, tests/drivers/psycopg-*-tests.tar.gz)
/// passes through pgtenant wherever it passes against PostgreSQL directly,
/// in session and in transaction pooling, except the refusals by design in
/// tests/drivers/psycopg_refusals.txt. The subset by default;
/// `PGTENANT_PSYCOPG_SUITE=full` (scripts/driver-suites) runs all of it.
#[tokio::test]
async fn psycopg_suite_passes_through_pgtenant_as_directly() {
    let scope = std::env::var("PGTENANT_PSYCOPG_SUITE").unwrap_or_else(|_| "subset".to_owned());
    let session = TestEnv::start_with(|c| {
        c.pool.size = 20;
        c.pool.mode = PoolMode::Session;
    })
    .await;
    let transaction = TestEnv::start_with(|c| {
        c.pool.size = 10;
        c.pool.mode = PoolMode::Transaction;
    })
    .await;
    // The direct run's database of its own: some tests look at the whole catalog.
    let direct_env = TestEnv::start().await;
    // Each run gets a schema where the session role may create the tables
    // the suite makes; the direct run logs in as that role.
    for (env, schema) in
        [(&direct_env, "psycopg_direct"), (&session, "psycopg_through"), (&transaction, "psycopg_through")]
    {
        env.superuser()
            .await
            .batch_execute(&format!(
                "CREATE SCHEMA {schema} AUTHORIZATION pgtenant_owner;
                 GRANT USAGE, CREATE ON SCHEMA {schema} TO pgtenant_readwrite;"
            ))
            .await
            .unwrap();
    }
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/drivers");
    let work = std::env::temp_dir().join(format!("pgtenant-psycopg-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let unpacked = Command::new("tar")
        .arg("-xzf")
        .arg(root.join("psycopg-3.2.13-tests.tar.gz"))
        .arg("-C")
        .arg(&work)
        .status()
        .expect("tar on PATH");
    assert!(unpacked.success());
    let through = |env: &TestEnv| {
        format!(
            "host={} port={} dbname={} user=hk_teller password={PASSWORD} options='-c search_path=psycopg_through'",
            env.server.proxy_addr.ip(),
            env.server.proxy_addr.port(),
            env.database
        )
    };
    let direct = format!(
        "host={} port={} dbname={} user={} options='-c search_path=psycopg_direct'",
        direct_env.cluster.socket_dir.display(),
        direct_env.cluster.socket_port(),
        direct_env.database,
        pgtenant::dev::APP_ROLE
    );
    let mut command = Command::new("python3");
    command
        .arg(root.join("psycopg_suite.py"))
        .arg(work.join("psycopg-3.2.13-tests"))
        .arg(&scope)
        .arg(direct)
        .arg(format!("session={}", through(&session)))
        .arg(format!("transaction={}", through(&transaction)));
    let out = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("python3 on PATH");
    let _ = std::fs::remove_dir_all(&work);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    assert!(out.status.success(), "psycopg's suite differs through pgtenant:\n{stdout}\n{stderr}");
}
