//! Service logins: an app server's login that belongs to no tenant. Its
//! sessions carry a verified "no tenant" context, so they see no tenant rows,
//! and cannot give themselves a tenant by setting one.

use pgtenant::config::PoolMode;
use serde_json::json;

use crate::common::http::Admin;
use crate::common::{account_ids, connect_watched, ended, sqlstate, value, TestEnv};

const SERVICE_PASSWORD: &str = "service-password-1234";

#[tokio::test]
async fn a_service_login_sees_no_tenant_rows_and_cannot_claim_a_tenant() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let env = TestEnv::start_with(|c| c.pool.mode = mode).await;
        let admin = Admin::new(env.server.admin_addr, &env.config.admin.token);
        let created = admin
            .post("/v1/logins", &json!({"username": "orders_api", "password": SERVICE_PASSWORD, "service": true}))
            .await;
        assert_eq!(created.status, 201, "{}", created.text());
        let login = created.json();
        assert_eq!((login["service"].clone(), login["tenant_id"].clone()), (json!(true), json!(null)));
        assert_eq!(admin.get("/v1/logins/orders_api").await.json()["service"], true);

        let service = env.try_connect("orders_api", SERVICE_PASSWORD).await.expect("a service login connects");
        assert!(account_ids(&service).await.is_empty(), "{mode:?}: no tenant, no rows");
        assert_eq!(value(&service, "SELECT count(*) FROM transactions").await, "0");
        assert_eq!(value(&service, "SELECT pgtenant.current_tenant()").await, "00000000-0000-0000-0000-000000000000");
        let hk = value(&env.connect("hk_teller").await, "SELECT pgtenant.current_tenant()").await;
        for attempt in [
            format!("SET app.tenant_id = '{hk}'"),
            format!("SELECT set_config('app.tenant_id', '{hk}', false)"),
            format!("SELECT pgtenant.set_context('v1.0.0.{hk}.{hk}.00', 'app.tenant_id')"),
        ] {
            let refused = service.simple_query(&attempt).await.expect_err(&attempt);
            assert_eq!(sqlstate(&refused), "42501", "{attempt}");
            assert!(account_ids(&service).await.is_empty(), "{mode:?}: {attempt}");
        }
        // A catalog re-check leaves the service session alone: once the
        // suspension has ended the auditor's session, the re-check has run.
        let (_london, london) = connect_watched(&env.url("london_auditor", crate::common::PASSWORD)).await;
        assert_eq!(admin.patch("/v1/tenants/hsbc-london", &json!({"status": "suspended"})).await.status, 200);
        assert_eq!(ended(london).await.0, "57P01", "the re-check ended the suspended tenant's session");
        assert_eq!(value(&service, "SELECT 1").await, "1", "{mode:?}: the service session goes on");
    }
}

#[tokio::test]
async fn service_logins_are_made_only_through_their_route() {
    let env = TestEnv::start().await;
    let admin = Admin::new(env.server.admin_addr, &env.config.admin.token);
    let not_service =
        admin.post("/v1/logins", &json!({"username": "x_api", "password": SERVICE_PASSWORD, "service": false})).await;
    assert_eq!(not_service.status, 422, "{}", not_service.text());
    let missing = admin.post("/v1/logins", &json!({"username": "x_api", "password": SERVICE_PASSWORD})).await;
    assert_eq!(missing.status, 422, "{}", missing.text());
    let nil = admin
        .post("/v1/tenants", &json!({"slug": "nobody", "name": "Nobody", "id": "00000000-0000-0000-0000-000000000000"}))
        .await;
    assert_eq!(nil.status, 422, "the nil uuid is no tenant's id: {}", nil.text());
}
