//! Who gets in, as whom, and what the others are told.

use tokio_postgres::NoTls;

use crate::common::*;

async fn refusal(env: &TestEnv, url: &str) -> tokio_postgres::Error {
    let _ = env;
    match tokio_postgres::connect(url, NoTls).await {
        Ok(_) => panic!("{url} must be refused"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_error() {
    let env = TestEnv::start().await;
    let wrong = env.refused("hsbc_admin", "not-the-password").await;
    let unknown = env.refused("nobody_here", PASSWORD).await;
    assert_eq!(sqlstate(&wrong), "28P01");
    assert_eq!(sqlstate(&unknown), "28P01");
    assert_eq!(message(&wrong), "password authentication failed for user \"hsbc_admin\"");
    assert_eq!(message(&unknown), "password authentication failed for user \"nobody_here\"");
    assert_eq!(wrong.as_db_error().unwrap().severity(), unknown.as_db_error().unwrap().severity(),);
}

#[tokio::test]
async fn another_database_name_is_refused() {
    let env = TestEnv::start().await;
    let url = format!("postgres://hsbc_admin:{PASSWORD}@{}/postgres", env.server.proxy_addr);
    let err = refusal(&env, &url).await;
    assert_eq!(sqlstate(&err), "3D000");
    assert_eq!(message(&err), "database \"postgres\" does not exist");
}

#[tokio::test]
async fn disabled_login_and_suspended_tenant_are_refused() {
    let env = TestEnv::start().await;
    let direct = env.superuser().await;
    direct.batch_execute("UPDATE pgtenant.logins SET enabled = false WHERE username = 'hk_teller'").await.unwrap();
    let err = env.refused("hk_teller", PASSWORD).await;
    assert_eq!(sqlstate(&err), "28000");
    assert_eq!(message(&err), "login \"hk_teller\" is disabled");

    direct.batch_execute("UPDATE pgtenant.tenants SET status = 'suspended' WHERE slug = 'barclays'").await.unwrap();
    let err = env.refused("barclays_ops", PASSWORD).await;
    assert_eq!(sqlstate(&err), "28000");
    assert_eq!(message(&err), "tenant \"barclays\" is suspended");

    // A disabled login with a wrong password learns nothing about its state.
    let err = env.refused("hk_teller", "wrong-password").await;
    assert_eq!(sqlstate(&err), "28P01");
}

#[tokio::test]
async fn readonly_login_is_refused_without_a_readonly_upstream() {
    let env = TestEnv::start_with(|config| config.upstream.readonly_url = None).await;
    let err = env.refused("london_auditor", PASSWORD).await;
    assert_eq!(sqlstate(&err), "28000");
    assert!(message(&err).contains("upstream.readonly_url"), "{}", message(&err));
    env.connect("hk_teller").await;
}

#[tokio::test]
async fn startup_settings_reach_the_server_but_not_the_context() {
    let env = TestEnv::start().await;
    let url = format!(
        "{}?application_name=ledger-ui&options=-c%20search_path%3Dpg_catalog,public%20-c%20statement_timeout%3D7s",
        env.url("hk_teller", PASSWORD)
    );
    let client = connect_url(&url).await;
    let row = client
        .query_one("SELECT current_setting('application_name'), current_setting('search_path'), current_setting('statement_timeout')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "ledger-ui");
    // As PostgreSQL keeps a startup value: verbatim.
    assert_eq!(row.get::<_, String>(1), "pg_catalog,public");
    assert_eq!(row.get::<_, String>(2), "7s");

    for options in [
        "-c%20app.tenant_id%3Db0000000-0000-4000-8000-000000000001",
        "-c%20pgtenant.visible_tenants%3D%7B%7D",
        "-c%20role%3Dpostgres",
    ] {
        let url = format!("{}?options={options}", env.url("hk_teller", PASSWORD));
        let err = refusal(&env, &url).await;
        assert_eq!(sqlstate(&err), "42501", "{options}");
        assert!(message(&err).contains("tenant context is managed by pgtenant"));
    }
    let url = format!("{}?options=-c%20no_such_setting%3D1", env.url("hk_teller", PASSWORD));
    let err = refusal(&env, &url).await;
    assert_eq!(sqlstate(&err), "42704");
    assert_eq!(message(&err), "unrecognized configuration parameter \"no_such_setting\"");
}

#[tokio::test]
async fn oversized_message_is_a_protocol_violation() {
    let env = TestEnv::start_with(|config| config.proxy.max_message_bytes = 4096).await;
    let client = env.connect("hk_teller").await;
    let big = format!("SELECT '{}'", "x".repeat(8000));
    let err = client.simple_query(&big).await.unwrap_err();
    assert_eq!(sqlstate(&err), "08P01");
    assert!(client.is_closed() || client.simple_query("SELECT 1").await.is_err(), "the connection closes");
    // Others are untouched.
    let other = env.connect("hk_teller").await;
    assert_eq!(account_ids(&other).await, vec![3, 4]);
}
