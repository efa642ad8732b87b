//! Rows seen and written through the proxy, per tenant and hierarchy.

use crate::common::*;

#[tokio::test]
async fn each_login_sees_its_tenant_and_descendants_only() {
    let env = TestEnv::start().await;
    let hsbc = env.connect("hsbc_admin").await;
    let hk = env.connect("hk_teller").await;
    let london = env.connect("london_auditor").await;
    let barclays = env.connect("barclays_ops").await;

    assert_eq!(account_ids(&hsbc).await, vec![1, 2, 3, 4, 5, 6], "hsbc sees hsbc, hsbc-hk and hsbc-london");
    assert_eq!(account_ids(&hk).await, vec![3, 4], "hsbc-hk sees only its own");
    assert_eq!(account_ids(&london).await, vec![5, 6], "hsbc-london sees only its own");
    assert_eq!(account_ids(&barclays).await, vec![7, 8, 9], "barclays sees only its own");

    assert_eq!(transaction_tenants(&hsbc).await, vec![HSBC, HSBC_HK, HSBC_LONDON]);
    assert_eq!(transaction_tenants(&barclays).await, vec![BARCLAYS]);
}

async fn transaction_tenants(client: &tokio_postgres::Client) -> Vec<String> {
    let rows = client.query("SELECT DISTINCT tenant_id::text FROM transactions ORDER BY 1", &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn context_functions_report_the_session_tenant() {
    let env = TestEnv::start().await;
    let hsbc = env.connect("hsbc_admin").await;
    let row = hsbc
        .query_one(
            "SELECT pgtenant.current_tenant()::text, pgtenant.visible_tenants()::text[], current_setting('app.tenant_id')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), HSBC);
    assert_eq!(row.get::<_, Vec<String>>(1), vec![HSBC, HSBC_HK, HSBC_LONDON]);
    assert_eq!(row.get::<_, String>(2), HSBC);

    let direct = env.superuser().await;
    let row = direct
        .query_one("SELECT pgtenant.current_tenant() IS NULL, pgtenant.visible_tenants() = '{}'", &[])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0) && row.get::<_, bool>(1), "outside pgtenant there is no tenant");
}

#[tokio::test]
async fn insert_without_tenant_id_gets_the_login_tenant() {
    let env = TestEnv::start().await;
    let hk = env.connect("hk_teller").await;
    let id: i64 = hk
        .query_one(
            "INSERT INTO accounts (iban, holder, currency) VALUES ('HK00TEST1', 'New Co', 'HKD') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let direct = env.superuser().await;
    let tenant: String =
        direct.query_one("SELECT tenant_id::text FROM accounts WHERE id = $1", &[&id]).await.unwrap().get(0);
    assert_eq!(tenant, HSBC_HK);
    assert!(account_ids(&hk).await.contains(&id));
    let barclays = env.connect("barclays_ops").await;
    assert!(!account_ids(&barclays).await.contains(&id));
}

#[tokio::test]
async fn another_tenants_rows_cannot_be_inserted_updated_or_deleted() {
    let env = TestEnv::start().await;
    let hk = env.connect("hk_teller").await;

    let err = hk
        .execute(
            &format!(
                "INSERT INTO accounts (tenant_id, iban, holder, currency) VALUES ('{BARCLAYS}', 'X1', 'Forged', 'GBP')"
            ),
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    assert!(message(&err).contains("row-level security"), "{}", message(&err));

    assert_eq!(hk.execute("UPDATE accounts SET balance = 0 WHERE id = 7", &[]).await.unwrap(), 0);
    assert_eq!(hk.execute("DELETE FROM transactions WHERE tenant_id = $1::text::uuid", &[&BARCLAYS]).await.unwrap(), 0);
    assert_eq!(hk.execute("DELETE FROM accounts WHERE id = 8", &[]).await.unwrap(), 0);
    // Its own row cannot be handed to another tenant either.
    let err = hk.execute(&format!("UPDATE accounts SET tenant_id = '{BARCLAYS}' WHERE id = 3"), &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501");

    let direct = env.superuser().await;
    let row = direct
        .query_one(
            "SELECT balance::text, (SELECT count(*) FROM accounts WHERE id IN (7, 8, 9)) FROM accounts WHERE id = 7",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "7700000.00");
    assert_eq!(row.get::<_, i64>(1), 3);
    let owner: String =
        direct.query_one("SELECT tenant_id::text FROM accounts WHERE id = 3", &[]).await.unwrap().get(0);
    assert_eq!(owner, HSBC_HK);
}

#[tokio::test]
async fn a_parent_may_write_its_descendants_rows() {
    let env = TestEnv::start().await;
    let hsbc = env.connect("hsbc_admin").await;
    assert_eq!(hsbc.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 3", &[]).await.unwrap(), 1);
    let hk = env.connect("hk_teller").await;
    assert_eq!(
        hk.execute("UPDATE accounts SET balance = 0 WHERE id = 1", &[]).await.unwrap(),
        0,
        "a child cannot write its parent's rows"
    );
}

#[tokio::test]
async fn readonly_login_cannot_write_because_postgres_refuses() {
    let env = TestEnv::start().await;
    let london = env.connect("london_auditor").await;
    assert_eq!(account_ids(&london).await, vec![5, 6]);
    let err = london.execute("UPDATE accounts SET balance = 0 WHERE id = 5", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    assert!(message(&err).contains("permission denied"), "{}", message(&err));
    let err = london
        .execute("INSERT INTO accounts (iban, holder, currency) VALUES ('RO1', 'x', 'GBP')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    let role: String = london.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(role, "pgtenant_app_ro", "readonly sessions run as the read-only role");
}

#[tokio::test]
async fn unscoped_reference_table_is_shared_and_read_only() {
    let env = TestEnv::start().await;
    let hk = env.connect("hk_teller").await;
    let n: i64 = hk.query_one("SELECT count(*) FROM fx_rates", &[]).await.unwrap().get(0);
    assert_eq!(n, 4);
    let err = hk.execute("DELETE FROM fx_rates", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
}

#[tokio::test]
async fn serve_refuses_a_catalog_that_is_not_migrated() {
    let env = TestEnv::start().await;
    let admin = env.superuser().await;
    let newest = pgtenant::migrate::MIGRATIONS.len();
    admin.execute("DELETE FROM pgtenant.schema_migrations WHERE version = $1", &[&(newest as i32)]).await.unwrap();
    let error = match pgtenant::server::Server::start(&env.config).await {
        Ok(_) => panic!("a catalog one migration behind must be refused"),
        Err(e) => format!("{e:#}"),
    };
    let expected =
        format!("the catalog is at migration {}, this pgtenant needs {newest}; run `pgtenant migrate`", newest - 1);
    assert!(error.contains(&expected), "{error}");
}
