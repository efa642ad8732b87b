//! The admin console (src/frontend/admin_console.rs): psql to database
//! `pgtenant` as user `pgtenant` with the admin token; PgBouncer's SHOW
//! commands and KILL_CLIENT; no tenant login can reach it.

use serde_json::json;

use crate::common::*;

fn console_url(env: &TestEnv, password: &str) -> String {
    format!("postgres://pgtenant:{password}@{}/pgtenant", env.server.proxy_addr)
}

/// Rows of a console command as psql prints them unaligned (`|` between columns).
async fn console(env: &TestEnv, command: &str) -> Vec<Vec<String>> {
    let (ok, out, err) = psql(&console_url(env, &env.config.admin.token), &["-c", command]).await;
    assert!(ok, "{command}: {err}");
    out.lines().map(|line| line.split('|').map(str::to_owned).collect()).collect()
}

#[tokio::test]
async fn psql_reads_pools_clients_stats_tenants_and_config_and_kills_a_client() {
    let env = TestEnv::start().await;
    let hk = env.connect("hk_teller").await;
    hk.simple_query("SELECT 1").await.unwrap();

    let version = console(&env, "SHOW VERSION").await;
    assert_eq!(version, [[format!("pgtenant {}", env!("CARGO_PKG_VERSION"))]]);
    let clients = console(&env, "show clients;").await;
    let hk_row = clients.iter().find(|r| r[1] == "hk_teller").expect("hk_teller among the clients");
    assert_eq!((hk_row[0].as_str(), hk_row[8].as_str()), ("C", "hsbc-hk"));
    let stats = console(&env, "SHOW STATS").await;
    let hk_stats = stats.iter().find(|r| r[0] == "hsbc-hk").expect("hsbc-hk's figures");
    assert!(hk_stats[2].parse::<u64>().unwrap() >= 1, "total_query_count: {hk_stats:?}");
    let tenants = console(&env, "SHOW TENANTS").await;
    assert!(tenants.iter().any(|r| r[0] == HSBC_HK && r[1] == "hsbc-hk"), "{tenants:?}");
    let pools = console(&env, "SHOW POOLS").await;
    assert!(pools.iter().any(|r| r[8] == "default" && r[9] == "readwrite"), "{pools:?}");
    assert!(!console(&env, "SHOW SERVERS").await.is_empty());
    let config = console(&env, "SHOW CONFIG").await;
    assert!(config.iter().any(|r| r[0] == "pool.mode"), "{config:?}");
    let all: String = config.iter().flatten().cloned().collect::<Vec<_>>().join(" ");
    assert!(!all.contains(&env.config.admin.token) && !all.contains("postgres://"), "no secrets: {all}");
    assert!(console(&env, "SHOW HELP").await.len() >= 8);

    // KILL_CLIENT ends a session as DELETE /v1/sessions/{id} does.
    let id = hk_row[7].clone();
    assert_eq!(console(&env, &format!("KILL_CLIENT {id}")).await, [["KILL_CLIENT"]]);
    let err = hk.simple_query("SELECT 1").await.unwrap_err();
    assert!(err.is_closed() || err.code().is_some_and(|c| c.code() == "57P01"), "{err}");
    let (ok, _, err) = psql(&console_url(&env, &env.config.admin.token), &["-c", "KILL_CLIENT 424242"]).await;
    assert!(!ok && err.contains("no client session"), "{err}");
}

#[tokio::test]
async fn only_the_admin_token_opens_it_and_only_its_commands_run() {
    let env = TestEnv::start().await;
    let token = env.config.admin.token.clone();
    // A wrong token, a tenant's password: the same refusal as any login.
    for password in ["wrong-token-0123456789", PASSWORD] {
        let (ok, _, err) = psql(&console_url(&env, password), &["-c", "SHOW POOLS"]).await;
        assert!(!ok);
        assert!(err.contains("password authentication failed for user \"pgtenant\""), "{err}");
    }
    // A tenant login asking for the console's database; the console's user asking for the tenants'.
    let (ok, _, err) =
        psql(&format!("postgres://hk_teller:{PASSWORD}@{}/pgtenant", env.server.proxy_addr), &["-c", "SHOW POOLS"])
            .await;
    assert!(!ok && err.contains("database \"pgtenant\" does not exist"), "{err}");
    let err = env.refused("pgtenant", &token).await;
    assert_eq!(sqlstate(&err), "28P01", "user pgtenant is no tenant login");
    // No login may take the console's name.
    let admin = crate::common::http::Admin::new(env.server.admin_addr, &token);
    let reply = admin
        .post("/v1/tenants/hsbc-hk/logins", &json!({"username": "pgtenant", "password": "a-long-enough-password"}))
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text());

    // SQL is not the console's language; the extended protocol is refused.
    for command in ["SELECT 1", "SHOW pool_mode", "DROP TABLE accounts", "SHOW POOLS; SHOW CLIENTS"] {
        let (ok, _, err) = psql(&console_url(&env, &token), &["-c", command]).await;
        assert!(!ok && err.contains("ERROR:"), "{command}: {err}");
    }
    let (client, connection) =
        tokio_postgres::connect(&console_url(&env, &token), tokio_postgres::NoTls).await.expect("the console");
    tokio::spawn(connection);
    let err = client.query("SHOW POOLS", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "0A000");
    let rows = client.simple_query("SHOW VERSION").await.expect("the simple protocol works after it");
    assert!(!rows.is_empty());
}

/// PAUSE waits for the server connections in use to come back and then holds
/// every new checkout; RESUME lets the held clients go on (transaction pooling).
#[tokio::test]
async fn pause_holds_new_transactions_until_resume() {
    let env = TestEnv::start_with(|c| c.pool.mode = pgtenant::config::PoolMode::Transaction).await;
    let token = env.config.admin.token.clone();
    let console_client = || async {
        let (client, connection) =
            tokio_postgres::connect(&console_url(&env, &token), tokio_postgres::NoTls).await.expect("the console");
        tokio::spawn(connection);
        client
    };
    let hk = env.connect("hk_teller").await;
    // Logged in before the pause (a login checks a server connection out too).
    let barclays = env.connect("barclays_ops").await;
    hk.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let pausing = console_client().await;
    let pause = tokio::spawn(async move { pausing.simple_query("PAUSE").await.map(|_| ()) });
    // The open transaction keeps its server connection; PAUSE returns once it is back.
    hk.batch_execute("COMMIT").await.unwrap();
    pause.await.unwrap().expect("PAUSE");

    let held = tokio::spawn(async move { barclays.simple_query("SELECT 7").await.map(|m| m.len()) });
    let watching = console_client().await;
    eventually("barclays to wait at the gate", || async {
        let rows = watching.simple_query("SHOW POOLS").await.unwrap();
        rows.iter().any(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get("cl_waiting").is_some_and(|n| n != "0"),
            _ => false,
        })
    })
    .await;
    watching.simple_query("RESUME").await.expect("RESUME");
    assert!(held.await.unwrap().expect("the held query runs after RESUME") > 0);
    let err = watching.simple_query("PAUSE other_db").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42704");
}

/// A message larger than the console reads ends that connection with an
/// error; the console and the proxy go on.
#[tokio::test]
async fn malformed_console_traffic_ends_that_connection_only() {
    let env = TestEnv::start().await;
    let token = env.config.admin.token.clone();
    let (client, connection) =
        tokio_postgres::connect(&console_url(&env, &token), tokio_postgres::NoTls).await.expect("the console");
    let watched = tokio::spawn(connection);
    let huge = format!("SHOW {}", "X".repeat(100_000));
    assert!(client.simple_query(&huge).await.is_err(), "a 100 kB command is more than the console reads");
    let _ = watched.await;
    let (ok, out, err) = psql(&console_url(&env, &token), &["-c", "SHOW VERSION"]).await;
    assert!(ok && out.starts_with("pgtenant "), "{err}");
    let hk = env.connect("hk_teller").await;
    assert_eq!(account_ids(&hk).await, vec![3, 4]);
}
