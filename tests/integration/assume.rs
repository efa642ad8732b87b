//! Service logins that take a user's tenant per request with
//! `pgtenant.assume(token)` and give it back with `pgtenant.release()`: the
//! scope (session outside a transaction block, the transaction inside one),
//! RESET ALL / DISCARD ALL, both pool modes, the verified subject and claims
//! — and the attacks: forged and foreign tokens, non-service logins, the
//! call hidden where pgtenant cannot answer it, the database functions
//! called without pgtenant.

use jsonwebtoken::Algorithm;
use pgtenant::config::{Config, PoolMode};
use serde_json::json;
use tokio_postgres::Client;

use crate::common::http::Admin;
use crate::common::{
    account_ids, connect_url, message, sqlstate, value, TestEnv, BARCLAYS, BOTH_STORES, HSBC_HK, PASSWORD,
};
use crate::tokens::signing::{self, sign};
use crate::tokens::{claims, now, with_tokens, SECRET};

const SERVICE_PASSWORD: &str = "service-password-1234";
const NO_TENANT: &str = "00000000-0000-0000-0000-000000000000";

/// A proxy with token keys and a readwrite service login `orders_api`.
pub(crate) async fn service_env(configure: impl FnOnce(&mut Config)) -> TestEnv {
    let env = TestEnv::start_with(configure).await;
    let admin = Admin::new(env.server.admin_addr, &env.config.admin.token);
    let created = admin
        .post("/v1/logins", &json!({"username": "orders_api", "password": SERVICE_PASSWORD, "service": true}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    env
}

pub(crate) async fn service(env: &TestEnv) -> Client {
    env.try_connect("orders_api", SERVICE_PASSWORD).await.expect("the service login connects")
}

pub(crate) fn token(tenant: &str) -> String {
    sign(Algorithm::HS256, &claims(tenant), SECRET)
}

/// `SELECT pgtenant.assume($1)` with the token bound, as drivers send it.
pub(crate) async fn assume(client: &Client, token: &str) -> Result<String, tokio_postgres::Error> {
    let row = client.query_one("SELECT pgtenant.assume($1)", &[&token]).await?;
    Ok(row.get::<_, uuid_text::Uuid>(0).0)
}

/// uuid columns read as text without a uuid crate.
mod uuid_text {
    use tokio_postgres::types::{FromSql, Type};

    pub struct Uuid(pub String);

    impl<'a> FromSql<'a> for Uuid {
        fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            Ok(Uuid(format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])))
        }

        fn accepts(ty: &Type) -> bool {
            *ty == Type::UUID
        }
    }
}

#[tokio::test]
async fn a_service_login_assumes_a_tenant_for_the_session_in_both_pool_modes() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let env = service_env(|c| with_tokens(c, mode)).await;
        let service = service(&env).await;
        let barclays = env.connect("barclays_ops").await;
        assert!(account_ids(&service).await.is_empty(), "{mode:?}: no tenant before assume");

        assert_eq!(assume(&service, &token("hsbc-hk")).await.unwrap(), HSBC_HK, "{mode:?}");
        assert_eq!(account_ids(&service).await, vec![3, 4], "{mode:?}");
        // Another tenant's client uses the pool in between; each keeps its own.
        assert_eq!(account_ids(&barclays).await, vec![7, 8, 9]);
        assert_eq!(account_ids(&service).await, vec![3, 4], "{mode:?}: for the session");
        for reset in ["RESET ALL", "DISCARD ALL", "DISCARD SEQUENCES"] {
            service.batch_execute(reset).await.unwrap();
            assert_eq!(account_ids(&service).await, vec![3, 4], "{mode:?}: through {reset}");
        }
        assert_eq!(value(&service, "SELECT pgtenant.current_subject()").await, "alice@example.com");
        assert_eq!(value(&service, "SELECT pgtenant.claim('role')").await, "editor");

        // A literal in a simple query, the way psql sends it.
        let literal = format!("SELECT pgtenant.assume('{}') AS tenant", token(BARCLAYS));
        let answer = service.simple_query(&literal).await.unwrap();
        let row = answer
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            .expect("a row");
        assert_eq!((row.columns()[0].name(), row.get(0)), ("tenant", Some(BARCLAYS)));
        assert_eq!(account_ids(&service).await, vec![7, 8, 9], "{mode:?}");

        service.batch_execute("SELECT pgtenant.release()").await.unwrap();
        assert!(account_ids(&service).await.is_empty(), "{mode:?}: released");
        assert_eq!(value(&service, "SELECT pgtenant.current_tenant()").await, NO_TENANT);
        assert_eq!(value(&service, "SELECT pgtenant.current_subject()").await, "NULL");
        // Released for good: nothing comes back at the next transaction.
        assert!(account_ids(&service).await.is_empty(), "{mode:?}");
        assert_eq!(account_ids(&barclays).await, vec![7, 8, 9]);
    }
}

#[tokio::test]
async fn an_assume_inside_a_transaction_lasts_until_the_transaction_ends() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let env = service_env(|c| with_tokens(c, mode)).await;
        let service = service(&env).await;
        for end in ["COMMIT", "ROLLBACK"] {
            service.batch_execute("BEGIN").await.unwrap();
            assert!(account_ids(&service).await.is_empty());
            assume(&service, &token("hsbc-hk")).await.unwrap();
            assert_eq!(account_ids(&service).await, vec![3, 4], "{mode:?}: inside the transaction");
            service.batch_execute(end).await.unwrap();
            assert!(account_ids(&service).await.is_empty(), "{mode:?}: back to no tenant after {end}");
            assert_eq!(value(&service, "SELECT pgtenant.current_tenant()").await, NO_TENANT, "{mode:?} {end}");
        }
        // With a tenant assumed for the session, a transaction's own tenant
        // ends with it, and the session's comes back.
        assume(&service, &token("barclays")).await.unwrap();
        service.batch_execute("BEGIN").await.unwrap();
        assume(&service, &token("hsbc-hk")).await.unwrap();
        // A second assume in the same transaction switches cleanly.
        assume(&service, &token("barclays")).await.unwrap();
        assume(&service, &token("hsbc-hk")).await.unwrap();
        assert_eq!(account_ids(&service).await, vec![3, 4], "{mode:?}");
        let failed = service.batch_execute("SELECT 1/0").await.unwrap_err();
        assert_eq!(sqlstate(&failed), "22012");
        service.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(account_ids(&service).await, vec![7, 8, 9], "{mode:?}: the session's tenant");
        // An assume in a failed transaction is refused as any statement is.
        service.batch_execute("BEGIN").await.unwrap();
        service.batch_execute("SELECT 1/0").await.unwrap_err();
        let refused = assume(&service, &token("hsbc-hk")).await.unwrap_err();
        assert_eq!(sqlstate(&refused), "25P02");
        let literal = format!("SELECT pgtenant.assume('{}')", token("hsbc-hk"));
        assert_eq!(sqlstate(&service.simple_query(&literal).await.unwrap_err()), "25P02");
        service.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(account_ids(&service).await, vec![7, 8, 9], "{mode:?}");
    }
}

#[tokio::test]
async fn pipelined_assumes_wait_for_what_went_before() {
    let env = service_env(|c| with_tokens(c, PoolMode::Transaction)).await;
    let service = service(&env).await;
    // Sent back to back without waiting: the literal assume goes out once
    // the statements before it are answered, and each sees its own tenant.
    let literal = format!("SELECT pgtenant.assume('{}')", token(BARCLAYS));
    let count = "SELECT count(*) FROM accounts";
    let (before, assumed, after) =
        tokio::join!(value(&service, count), service.simple_query(&literal), value(&service, count));
    assert_eq!((before.as_str(), after.as_str()), ("0", "3"));
    assert!(assumed.is_ok());
    let literal = format!("SELECT pgtenant.assume('{}')", token("hsbc-hk"));
    let (assumed, after) = tokio::join!(service.simple_query(&literal), value(&service, count));
    assert!(assumed.is_ok());
    assert_eq!(after, "2");
}

#[tokio::test]
async fn refused_tokens_leave_the_tenant_as_it_was() {
    let env = service_env(|c| {
        with_tokens(c, PoolMode::Transaction);
        c.jwt.leeway_secs = 0;
    })
    .await;
    let admin = Admin::new(env.server.admin_addr, &env.config.admin.token);
    assert_eq!(admin.patch("/v1/tenants/hsbc-london", &json!({"status": "suspended"})).await.status, 200);
    let service = service(&env).await;
    assume(&service, &token("barclays")).await.unwrap();
    let mut expired = claims("hsbc-hk");
    expired["exp"] = json!(now() - 60);
    let mut wrong_audience = claims("hsbc-hk");
    wrong_audience["aud"] = json!("someone-else");
    let mut tampered = token("hsbc-hk").split('.').map(str::to_owned).collect::<Vec<_>>();
    tampered[1] = signing::b64(&claims("hsbc"));
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("{}.{}.", signing::b64(&json!({"alg": "none"})), signing::b64(&claims("hsbc-hk"))),
            "28000",
            "unsigned",
        ),
        (tampered.join("."), "28000", "signature"),
        (sign(Algorithm::HS256, &expired, SECRET), "28000", "expired"),
        (sign(Algorithm::HS256, &wrong_audience, SECRET), "28000", "audience"),
        (sign(Algorithm::HS256, &claims("hsbc-hk"), "another-secret-of-at-least-32-bytes!"), "28000", "signature"),
        (token("no-such-tenant"), "28000", "does not exist"),
        (token("hsbc-london"), "28000", "suspended"),
        ("not a token".to_owned(), "28000", "not a JSON Web Token"),
    ];
    for (bad, code, words) in cases {
        let err = assume(&service, &bad).await.expect_err(words);
        assert_eq!(sqlstate(&err), code, "{words}: {}", message(&err));
        assert!(message(&err).contains(words), "{words}: {}", message(&err));
        assert!(!message(&err).contains(&bad), "the token is not echoed");
        assert_eq!(account_ids(&service).await, vec![7, 8, 9], "{words}: the tenant is unchanged");
    }
    let null = service.query_one("SELECT pgtenant.assume($1)", &[&None::<String>]).await.unwrap_err();
    assert_eq!(sqlstate(&null), "22023");
    // Inside a transaction a refusal aborts it, as an error would.
    service.batch_execute("BEGIN").await.unwrap();
    assert_eq!(sqlstate(&assume(&service, &token("no-such-tenant")).await.unwrap_err()), "28000");
    assert_eq!(sqlstate(&service.batch_execute("SELECT 1").await.unwrap_err()), "25P02");
    service.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(account_ids(&service).await, vec![7, 8, 9]);
}

#[tokio::test]
async fn a_token_cannot_widen_a_service_logins_access_or_reach_past_its_upstream() {
    let env = service_env(|c| with_tokens(c, PoolMode::Transaction)).await;
    let service = service(&env).await;
    let mut viewer = claims("hsbc-hk");
    viewer["role"] = json!("viewer");
    let err = assume(&service, &sign(Algorithm::HS256, &viewer, SECRET)).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{}", message(&err));
    assert!(message(&err).contains("readonly service login"), "{}", message(&err));
    let admin = Admin::new(env.server.admin_addr, &env.config.admin.token);
    let created = admin.post("/v1/tenants", &json!({"slug": "own-schema", "name": "S", "isolation": "schema"})).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let err = assume(&service, &token("own-schema")).await.unwrap_err();
    assert_eq!(sqlstate(&err), "0A000", "{}", message(&err));
    assert!(account_ids(&service).await.is_empty());
}

#[tokio::test]
async fn only_a_service_login_may_assume_and_only_as_a_statement_of_its_own() {
    for guard in [true, false] {
        let env = service_env(|c| {
            with_tokens(c, PoolMode::Transaction);
            c.proxy.statement_guard = guard;
        })
        .await;
        let hk = env.connect("hk_teller").await;
        for attempt in [
            hk.query_one("SELECT pgtenant.assume($1)", &[&token(BARCLAYS)]).await.unwrap_err(),
            hk.simple_query(&format!("SELECT pgtenant.assume('{}')", token(BARCLAYS))).await.unwrap_err(),
            hk.simple_query("SELECT pgtenant.release()").await.unwrap_err(),
        ] {
            assert_eq!(sqlstate(&attempt), "42501", "guard {guard}: {}", message(&attempt));
            assert!(message(&attempt).contains("service logins"), "{}", message(&attempt));
        }
        assert_eq!(account_ids(&hk).await, vec![3, 4], "guard {guard}");
        let service = service(&env).await;
        assume(&service, &token("hsbc-hk")).await.unwrap();
        assert_eq!(account_ids(&service).await, vec![3, 4], "guard {guard}: intercepted either way");
        let barclays = token(BARCLAYS);
        for hidden in [
            format!("WITH t AS (SELECT pgtenant.assume('{barclays}')) SELECT * FROM t"),
            format!("SELECT (SELECT pgtenant.assume('{barclays}'))"),
            format!("SELECT pgtenant.assume('{barclays}'); SELECT 1"),
            format!("SELECT pgtenant.assume('{barclays}') FROM accounts"),
            format!("DO $$ BEGIN PERFORM pgtenant.assume('{barclays}'); END $$"),
            format!("PREPARE p AS SELECT pgtenant.assume('{barclays}'); EXECUTE p"),
            format!("SELECT \"pgtenant\".\"assume\"('{barclays}'), 1"),
        ] {
            let err = service.simple_query(&hidden).await.expect_err(&hidden);
            // With the guard on pgtenant refuses it; without, the server gets
            // the user's token where it wants pgtenant's request.
            assert_eq!(sqlstate(&err), "42501", "guard {guard}: {hidden}: {}", message(&err));
            assert_eq!(account_ids(&service).await, vec![3, 4], "guard {guard}: {hidden}");
        }
        // Only narrowing is left to a hidden release: refused by the guard;
        // without it, the server drops the session's tenant (pgtenant, not
        // told, installs nothing until the next assume).
        match service.simple_query("SELECT pgtenant.release(), 1").await {
            Err(refused) => assert!(guard && sqlstate(&refused) == "42501", "{}", message(&refused)),
            Ok(_) => {
                assert!(!guard);
                assert!(account_ids(&service).await.is_empty());
                assume(&service, &token(BARCLAYS)).await.unwrap();
                assume(&service, &token("hsbc-hk")).await.unwrap();
            }
        }
        assert_eq!(account_ids(&service).await, vec![3, 4], "guard {guard}");
        let literal = service.prepare(&format!("SELECT pgtenant.assume('{barclays}')")).await.unwrap_err();
        assert_eq!(sqlstate(&literal), "0A000", "{}", message(&literal));
        for attempt in [
            format!("SET app.tenant_id = '{BARCLAYS}'"),
            format!("SELECT set_config('app.tenant_id', '{BARCLAYS}', false)"),
        ] {
            if guard {
                assert_eq!(sqlstate(&service.simple_query(&attempt).await.unwrap_err()), "42501", "{attempt}");
            }
            assert_eq!(account_ids(&service).await, vec![3, 4], "guard {guard}: {attempt}");
        }
    }
}

/// The service's session role straight to PostgreSQL: what it could do if
/// every proxy-side check were bypassed.
#[tokio::test]
async fn the_database_installs_nothing_a_client_asks_for_itself() {
    let env = service_env(|c| with_tokens(c, PoolMode::Transaction)).await;
    for store in BOTH_STORES {
        env.use_context_store(store).await;
        let direct = connect_url(&env.cluster.url("pgtenant_app", &env.database)).await;
        let pid: i32 = direct.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
        let forged = format!("v2.{pid}.00.{BARCLAYS}.{BARCLAYS}..{}", "0".repeat(64));
        // No switching secret on this backend: the switch verifies the token, which is forged.
        for (request, code) in [
            (token(BARCLAYS), "42501"),
            (format!("verify {} app.tenant_id {forged}", "0".repeat(32)), "42501"),
            (format!("switch {} app.tenant_id {forged}", "0".repeat(32)), "42501"),
            (String::new(), "42501"),
        ] {
            let err = direct.query_one("SELECT pgtenant.assume($1)", &[&request]).await.unwrap_err();
            assert_eq!(sqlstate(&err), code, "{store:?}: {request}: {}", message(&err));
        }
        let err = direct.query_one("SELECT pgtenant.release()", &[]).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501");
        assert!(account_ids(&direct).await.is_empty());

        // A token login's own tenant cannot be released at the database either.
        let tokened = env.try_connect("jwt", &token("hsbc-hk")).await.unwrap();
        let token_text = value(&tokened, "SELECT current_setting('pgtenant.context')").await;
        assert!(token_text.starts_with("v2."), "{token_text}");
        // Its identity is signed: a forged one in the setting answers nothing.
        let identity = signing::b64(&json!({"sub": "root", "claims": {"role": "admin"}}));
        let mut parts: Vec<String> = token_text.split('.').map(str::to_owned).collect();
        parts[1] = pid.to_string();
        parts[5] = identity;
        direct.batch_execute(&format!("SET pgtenant.context = '{}'", parts.join("."))).await.unwrap();
        let subject: Option<String> =
            direct.query_one("SELECT pgtenant.current_subject()", &[]).await.ok().and_then(|r| r.get(0));
        assert_eq!(subject, None);
    }
}

#[tokio::test]
async fn token_sessions_show_their_verified_subject_and_claims() {
    let env = service_env(|c| with_tokens(c, PoolMode::Transaction)).await;
    let mut nested = claims("hsbc-hk");
    nested["org"] = json!({"id": "org-7", "name": "HK"});
    nested["https://example.com/roles"] = json!(["teller", "auditor"]);
    let tokened = env.try_connect("jwt", &sign(Algorithm::HS256, &nested, SECRET)).await.unwrap();
    let row = tokened
        .query_one(
            "SELECT pgtenant.current_subject(), pgtenant.claim('org')::jsonb ->> 'id', \
             pgtenant.claim('https://example.com/roles'), pgtenant.claim('missing')",
            &[],
        )
        .await
        .unwrap();
    let got: (Option<String>, Option<String>, Option<String>, Option<String>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        got,
        (Some("alice@example.com".into()), Some("org-7".into()), Some(r#"["teller", "auditor"]"#.into()), None)
    );
    let password = env.try_connect("hk_teller", PASSWORD).await.unwrap();
    assert_eq!(value(&password, "SELECT pgtenant.current_subject()").await, "NULL");
    // A policy narrows rows to the user within the tenant (README's example).
    env.superuser()
        .await
        .batch_execute(&format!(
            "CREATE TABLE notes (id int PRIMARY KEY, tenant_id uuid NOT NULL, owner text NOT NULL);
             SELECT pgtenant.enable_tenancy('notes');
             CREATE POLICY notes_owner ON notes AS RESTRICTIVE USING (owner = (SELECT pgtenant.current_subject()));
             INSERT INTO notes VALUES (1, '{HSBC_HK}', 'alice@example.com'), (2, '{HSBC_HK}', 'bob@example.com'),
                                      (3, '{BARCLAYS}', 'alice@example.com');"
        ))
        .await
        .unwrap();
    let notes = "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM notes";
    assert_eq!(value(&tokened, notes).await, "1");
    let mut bob = claims("hsbc-hk");
    bob["sub"] = json!("bob@example.com");
    let bob = env.try_connect("jwt", &sign(Algorithm::HS256, &bob, SECRET)).await.unwrap();
    assert_eq!(value(&bob, notes).await, "2");
    assert_eq!(value(&password, notes).await, "", "no subject, no note");
    let service = service(&env).await;
    assume(&service, &sign(Algorithm::HS256, &claims(BARCLAYS), SECRET)).await.unwrap();
    assert_eq!(value(&service, notes).await, "3", "an assumed token's subject too");
}
