//! Readonly tenants on a hot standby: `upstream.readonly_url` points at a
//! streaming replica of the test cluster (`pg_basebackup -R`), and readonly
//! logins read there with the full guarantee — strict context, which writes
//! nothing, so the standby can install it, and without it the fallback of
//! sql/0016, which verifies the signed context on every statement. The
//! context attacks run against the standby, through pgtenant in both pool
//! modes and straight to it, with every store.

use jsonwebtoken::Algorithm;
use pgtenant::config::{Config, PoolMode};
use pgtenant::dev::cluster::{Cluster, SUPERUSER};
use pgtenant::dev::APP_READONLY_ROLE;
use pgtenant::tenancy::catalog::Catalog;
use pgtenant::tenancy::Access;
use tokio::sync::OnceCell;
use tokio_postgres::Client;

use crate::assume::{assume, service_env};
use crate::common::http::Admin;
use crate::common::*;
use crate::isolation::{home, login, migrations_folder, tenant_with_logins, NOTES};
use crate::security::mint_token;
use crate::tokens::signing::sign;
use crate::tokens::{claims, with_tokens, SECRET};

/// The stores without strict context: a standby can record nothing, and
/// verifies the context's MAC per statement instead.
const FALLBACK_STORES: [ContextStore; 2] = [ContextStore::Sequences, ContextStore::PlPgSql];

/// The binary's hot standby of the test cluster, started at first use.
async fn replica() -> &'static Cluster {
    static REPLICA: OnceCell<Cluster> = OnceCell::const_new();
    REPLICA
        .get_or_init(|| async {
            let primary = cluster().await;
            tokio::task::spawn_blocking(move || primary.start_replica())
                .await
                .expect("replica task")
                .expect("start the hot standby (pg_basebackup -R)")
        })
        .await
}

/// A test database whose readonly sessions go to the standby, once the
/// standby has replayed everything the primary wrote for it.
async fn start_on_replica(mode: PoolMode) -> TestEnv {
    start_on_replica_with(mode, ContextStore::Strict, |_| {}, false).await
}

/// As start_on_replica, with the verified tenant kept in `store`, the
/// config changed by `configure` and, when `service`, a readonly service
/// login `reports_api`.
async fn start_on_replica_with(
    mode: PoolMode,
    store: ContextStore,
    configure: impl FnOnce(&mut Config),
    service: bool,
) -> TestEnv {
    let primary = cluster().await;
    let replica = replica().await;
    let (from, to) = (primary.url(APP_READONLY_ROLE, ""), replica.url(APP_READONLY_ROLE, ""));
    let on_replica = move |c: &mut Config| {
        configure(c);
        c.pool.mode = mode;
        // Transaction pooling: one standby session that the tenants take turns on.
        c.pool.size = if mode == PoolMode::Transaction { 1 } else { 4 };
        let readonly = c.upstream.readonly_url.take().expect("the dev config has a readonly URL");
        c.upstream.readonly_url = Some(readonly.replacen(&from, &to, 1));
    };
    let env = if service { service_env(on_replica).await } else { TestEnv::start_with(on_replica).await };
    env.use_context_store(store).await;
    let catalog = Catalog::new(&env.config.control.url, 1).expect("catalog");
    catalog.upsert_login("barclays_reader", "barclays", PASSWORD, Access::Readonly).await.expect("a readonly login");
    catalog.upsert_login("hsbc_reader", "hsbc", PASSWORD, Access::Readonly).await.expect("a readonly parent login");
    if service {
        let admin = Admin::new(env.server.admin_addr, &env.config.admin.token);
        let created = admin
            .post(
                "/v1/logins",
                &serde_json::json!({"username": "reports_api", "password": SERVICE_PASSWORD, "service": true}),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text());
        let readonly = admin.patch("/v1/logins/reports_api", &serde_json::json!({"access": "readonly"})).await;
        assert_eq!(readonly.status, 200, "{}", readonly.text());
    }
    caught_up(&env).await;
    env
}

const SERVICE_PASSWORD: &str = "reports-password-1234";

/// Waits until the standby has replayed the primary's WAL up to now: the
/// insert position, as the test cluster commits asynchronously (the write
/// position may still be short of the last commit).
async fn caught_up(env: &TestEnv) {
    let lsn: String =
        env.superuser().await.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).await.unwrap().get(0);
    // The database itself may not be there yet.
    let standby = connect_url(&replica().await.url(SUPERUSER, "postgres")).await;
    eventually("the standby to replay the primary's WAL", || async {
        standby
            .query_one("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", &[&lsn])
            .await
            .is_ok_and(|row| row.get::<_, bool>(0))
    })
    .await;
}

/// No rows, no tenant, nothing visible.
async fn assert_no_tenant(app: &Client, store: ContextStore) {
    assert!(account_ids(app).await.is_empty(), "{store:?}");
    let tenant: Option<String> = app.query_one("SELECT pgtenant.current_tenant()::text", &[]).await.unwrap().get(0);
    assert_eq!(tenant, None, "{store:?}");
    assert_eq!(value(app, "SELECT pgtenant.visible_tenants()::text").await, "{}", "{store:?}");
}

async fn in_recovery(client: &Client) -> bool {
    value(client, "SELECT pg_is_in_recovery()::text").await == "true"
}

#[tokio::test]
async fn readonly_logins_read_on_the_standby_with_their_tenant_enforced() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let env = start_on_replica(mode).await;
        let london = env.connect("london_auditor").await;
        let barclays = env.connect("barclays_reader").await;
        let hk = env.connect("hk_teller").await;
        assert!(in_recovery(&london).await, "{mode:?}: readonly sessions run on the standby");
        assert!(!in_recovery(&hk).await, "{mode:?}: readwrite sessions stay on the primary");
        // In transaction pooling, one standby session taking turns between two tenants.
        for _ in 0..3 {
            assert_eq!(account_ids(&london).await, vec![5, 6], "{mode:?}");
            assert_eq!(account_ids(&barclays).await, vec![7, 8, 9], "{mode:?}");
        }
        assert_eq!(value(&london, "SHOW pgtenant_native.tenant").await, HSBC_LONDON, "{mode:?}");
        assert_eq!(value(&london, "SELECT pgtenant.current_tenant()::text").await, HSBC_LONDON, "{mode:?}");
        let err = london.execute("UPDATE accounts SET holder = holder", &[]).await.unwrap_err();
        assert_eq!(sqlstate(&err), "25006", "{mode:?}: the standby refuses it: {}", message(&err));
        assert_eq!(account_ids(&london).await, vec![5, 6], "{mode:?}");
    }
}

#[tokio::test]
async fn the_context_attacks_fail_through_pgtenant_on_the_standby() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let env = start_on_replica(mode).await;
        let london = env.connect("london_auditor").await;
        assert!(in_recovery(&london).await);
        for attack in [
            format!("SET pgtenant_native.tenant = '{BARCLAYS}'"),
            format!("SELECT set_config('pgtenant_native.tenant', '{BARCLAYS}', false)"),
            format!("SET app.tenant_id = '{BARCLAYS}'"),
            "RESET pgtenant_native.tenant".to_owned(),
            "SET ROLE pgtenant_owner".to_owned(),
        ] {
            let err = london.simple_query(&attack).await.expect_err(&attack);
            assert_eq!(sqlstate(&err), "42501", "{mode:?}: {attack}: {}", message(&err));
            assert_eq!(account_ids(&london).await, vec![5, 6], "{mode:?}: {attack}");
        }
        for reset in ["RESET ALL", "DISCARD ALL", "BEGIN; RESET ALL; COMMIT"] {
            london.batch_execute(reset).await.unwrap();
            assert_eq!(account_ids(&london).await, vec![5, 6], "{mode:?}: {reset}");
        }
    }
}

#[tokio::test]
async fn the_standby_itself_trusts_only_a_verified_context() {
    let env = start_on_replica(PoolMode::Transaction).await;
    let standby_url = replica().await.url(APP_READONLY_ROLE, &env.database);
    // A fresh backend: a value set before the extension loads is dropped.
    let app = connect_url(&standby_url).await;
    assert!(in_recovery(&app).await);
    app.batch_execute(&format!("SET pgtenant_native.tenant = '{BARCLAYS}'")).await.unwrap();
    assert!(account_ids(&app).await.is_empty());
    for attack in [
        format!("SET pgtenant_native.tenant = '{BARCLAYS}'"),
        format!("SELECT set_config('pgtenant_native.tenant', '{BARCLAYS}', false)"),
        format!("SELECT pgtenant.native_install_context('{BARCLAYS}', 0, NULL)"),
    ] {
        let err = app.batch_execute(&attack).await.expect_err(&attack);
        assert_eq!(sqlstate(&err), "42501", "{attack}: {}", message(&err));
    }
    // A forged token: refused; the session still has no tenant.
    let pid: i32 = app.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let forged = format!("v1.{pid}.00.{BARCLAYS}.{BARCLAYS}.{}", "0".repeat(64));
    let err = app.query_one("SELECT pgtenant.set_context($1, 'app.tenant_id')", &[&forged]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{}", message(&err));
    assert!(account_ids(&app).await.is_empty());
    // A context pgtenant signed for this standby backend installs there, writing nothing.
    let token = mint_token(&env, pid, HSBC_LONDON, HSBC_LONDON).await;
    app.query_one("SELECT pgtenant.set_context($1, 'app.tenant_id')", &[&token]).await.unwrap();
    assert_eq!(account_ids(&app).await, vec![5, 6]);
    app.batch_execute("RESET ALL").await.unwrap();
    app.batch_execute("DISCARD ALL").await.unwrap();
    assert_eq!(account_ids(&app).await, vec![5, 6]);
}

#[tokio::test]
async fn without_strict_context_readonly_logins_read_on_the_standby_verified_per_statement() {
    for store in FALLBACK_STORES {
        for mode in [PoolMode::Session, PoolMode::Transaction] {
            let env = start_on_replica_with(mode, store, |_| {}, false).await;
            let london = env.connect("london_auditor").await;
            let barclays = env.connect("barclays_reader").await;
            let group = env.connect("hsbc_reader").await;
            let hk = env.connect("hk_teller").await;
            assert!(in_recovery(&london).await, "{store:?} {mode:?}: readonly sessions run on the standby");
            assert!(!in_recovery(&hk).await, "{store:?} {mode:?}: readwrite sessions stay on the primary");
            for _ in 0..3 {
                assert_eq!(account_ids(&london).await, vec![5, 6], "{store:?} {mode:?}");
                assert_eq!(account_ids(&barclays).await, vec![7, 8, 9], "{store:?} {mode:?}");
                // A parent reads its descendants' rows: listed live, as the standby records no scope.
                assert_eq!(account_ids(&group).await, vec![1, 2, 3, 4, 5, 6], "{store:?} {mode:?}");
            }
            assert_eq!(value(&london, "SELECT pgtenant.current_tenant()::text").await, HSBC_LONDON, "{store:?}");
            assert_eq!(value(&london, "SELECT pgtenant.visible_tenants()::text").await, format!("{{{HSBC_LONDON}}}"));
            assert_eq!(
                value(&group, "SELECT pgtenant.visible_tenants()::text").await,
                format!("{{{HSBC},{HSBC_HK},{HSBC_LONDON}}}"),
                "{store:?} {mode:?}"
            );
            let err = london.execute("UPDATE accounts SET holder = holder", &[]).await.unwrap_err();
            assert_eq!(sqlstate(&err), "25006", "{store:?} {mode:?}: the standby refuses it: {}", message(&err));
            assert_eq!(account_ids(&hk).await, vec![3, 4], "{store:?} {mode:?}");
        }
    }
}

#[tokio::test]
async fn without_strict_context_the_context_attacks_fail_through_pgtenant_on_the_standby() {
    for store in FALLBACK_STORES {
        for mode in [PoolMode::Session, PoolMode::Transaction] {
            let env = start_on_replica_with(mode, store, |_| {}, false).await;
            let london = env.connect("london_auditor").await;
            // The other tenant takes turns on the same standby session in transaction pooling.
            let barclays = env.connect("barclays_reader").await;
            assert!(in_recovery(&london).await);
            let forged = format!("v1.0.00.{BARCLAYS}.{BARCLAYS}.{}", "0".repeat(64));
            for attack in [
                format!("SET pgtenant.context = '{forged}'"),
                format!("SELECT set_config('pgtenant.context', '{forged}', false)"),
                format!("SET app.tenant_id = '{BARCLAYS}'"),
                "RESET pgtenant.context".to_owned(),
                "SET ROLE pgtenant_owner".to_owned(),
            ] {
                let err = london.simple_query(&attack).await.expect_err(&attack);
                assert_eq!(sqlstate(&err), "42501", "{store:?} {mode:?}: {attack}: {}", message(&err));
                assert_eq!(account_ids(&london).await, vec![5, 6], "{store:?} {mode:?}: {attack}");
                assert_eq!(account_ids(&barclays).await, vec![7, 8, 9], "{store:?} {mode:?}: {attack}");
            }
            for reset in ["RESET ALL", "DISCARD ALL", "BEGIN; RESET ALL; COMMIT", "BEGIN; RESET ALL; ROLLBACK"] {
                london.batch_execute(reset).await.unwrap();
                assert_eq!(account_ids(&london).await, vec![5, 6], "{store:?} {mode:?}: {reset}");
                assert_eq!(account_ids(&barclays).await, vec![7, 8, 9], "{store:?} {mode:?}: {reset}");
            }
        }
    }
}

#[tokio::test]
async fn without_strict_context_the_standby_itself_trusts_only_a_context_signed_for_the_backend() {
    for store in FALLBACK_STORES {
        let env = start_on_replica_with(PoolMode::Transaction, store, |_| {}, false).await;
        let app = connect_url(&replica().await.url(APP_READONLY_ROLE, &env.database)).await;
        assert!(in_recovery(&app).await);
        assert_no_tenant(&app, store).await;
        let pid: i32 = app.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
        // A MAC that does not verify, written straight into the setting or handed to set_context().
        let forged = format!("v1.{pid}.00.{BARCLAYS}.{BARCLAYS}.{}", "0".repeat(64));
        app.batch_execute(&format!("SET pgtenant.context = '{forged}'")).await.unwrap();
        assert_no_tenant(&app, store).await;
        let err = app.query_one("SELECT pgtenant.set_context($1, 'app.tenant_id')", &[&forged]).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{store:?}: {}", message(&err));
        // A context pgtenant signed for another backend.
        let elsewhere = mint_token(&env, pid + 1, BARCLAYS, BARCLAYS).await;
        let err = app.query_one("SELECT pgtenant.set_context($1, 'app.tenant_id')", &[&elsewhere]).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{store:?}: {}", message(&err));
        app.batch_execute(&format!("SET pgtenant.context = '{elsewhere}'")).await.unwrap();
        assert_no_tenant(&app, store).await;
        // One signed for this backend installs there, writing nothing.
        let token = mint_token(&env, pid, HSBC_LONDON, HSBC_LONDON).await;
        app.query_one("SELECT pgtenant.set_context($1, 'app.tenant_id')", &[&token]).await.unwrap();
        assert_eq!(account_ids(&app).await, vec![5, 6], "{store:?}");
        assert_eq!(value(&app, "SELECT pgtenant.current_tenant()::text").await, HSBC_LONDON, "{store:?}");
        // Its tenant field rewritten: the MAC no longer verifies, and nothing is visible.
        let rewritten = token.replace(HSBC_LONDON, BARCLAYS);
        app.batch_execute(&format!("SET pgtenant.context = '{rewritten}'")).await.unwrap();
        assert_no_tenant(&app, store).await;
        app.query_one("SELECT pgtenant.set_context($1, 'app.tenant_id')", &[&token]).await.unwrap();
        // The plain tenant setting decides nothing.
        app.batch_execute(&format!("SET app.tenant_id = '{BARCLAYS}'")).await.unwrap();
        assert_eq!(account_ids(&app).await, vec![5, 6], "{store:?}");
        // A switch with a secret the backend never installed verifies the whole token, and refuses a forged one.
        let secret = "00112233445566778899aabbccddeeff";
        let err = app
            .query_one("SELECT pgtenant.switch_context($1, 'app.tenant_id', $2)", &[&forged, &secret])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{store:?}: {}", message(&err));
        assert_eq!(account_ids(&app).await, vec![5, 6], "{store:?}");
        // Assumed tenants need strict context on a standby (sql/0016's header).
        let request = format!("verify {secret} app.tenant_id {token}");
        let err = app.query_one("SELECT pgtenant.assume($1)", &[&request]).await.unwrap_err();
        assert_eq!(sqlstate(&err), "0A000", "{store:?}: {}", message(&err));
        assert!(message(&err).contains("needs strict context on a hot standby"), "{}", message(&err));
        // Without pgtenant to restore it, a reset leaves the session with no tenant.
        app.batch_execute("RESET ALL").await.unwrap();
        assert_no_tenant(&app, store).await;
    }
}

#[tokio::test]
async fn a_readonly_service_login_assumes_tenants_on_the_standby_only_with_strict_context() {
    for store in [ContextStore::Strict, ContextStore::PlPgSql] {
        let mode = PoolMode::Transaction;
        let env = start_on_replica_with(mode, store, move |c| with_tokens(c, mode), true).await;
        let reports = env.try_connect("reports_api", SERVICE_PASSWORD).await.expect("the service login connects");
        assert!(in_recovery(&reports).await, "{store:?}: a readonly service login reads on the standby");
        let mut viewer = claims("barclays");
        viewer["role"] = serde_json::json!("viewer");
        let assumed = assume(&reports, &sign(Algorithm::HS256, &viewer, SECRET)).await;
        match store {
            ContextStore::Strict => {
                assert_eq!(assumed.expect("assumed on the standby"), BARCLAYS);
                assert_eq!(account_ids(&reports).await, vec![7, 8, 9]);
            }
            _ => {
                let err = assumed.expect_err("refused without strict context");
                assert_eq!(sqlstate(&err), "0A000", "{}", message(&err));
                assert!(message(&err).contains("needs strict context on a hot standby"), "{}", message(&err));
                assert!(account_ids(&reports).await.is_empty());
            }
        }
    }
}

#[tokio::test]
async fn schema_and_database_tenants_read_on_the_standby_kept_apart_by_their_roles() {
    for (store, mode) in [
        (ContextStore::Strict, PoolMode::Session),
        (ContextStore::Strict, PoolMode::Transaction),
        (ContextStore::PlPgSql, PoolMode::Transaction),
    ] {
        let folder = migrations_folder(&format!("replica-{store:?}-{mode:?}"), &[("0001_notes.sql", NOTES)]);
        let env = start_on_replica_with(mode, store, move |c| c.provisioning.migrations = Some(folder), false).await;
        let admin = Admin::new(env.server.admin_addr, &env.config.admin.token);
        let acme = tenant_with_logins(&admin, "acme", "schema").await;
        let globex = tenant_with_logins(&admin, "globex", "database").await;
        let initech = tenant_with_logins(&admin, "initech", "schema").await;
        let writer = login(&env, "acme", "readwrite").await;
        assert!(!in_recovery(&writer).await, "{store:?} {mode:?}: readwrite logins stay on the primary");
        writer.batch_execute("INSERT INTO notes (body) VALUES ('acme only')").await.unwrap();
        caught_up(&env).await;
        for (slug, tenant, notes) in [
            ("acme", &acme, vec!["seed", "acme only"]),
            ("globex", &globex, vec!["seed"]),
            ("initech", &initech, vec!["seed"]),
        ] {
            let reader = login(&env, slug, "readonly").await;
            assert!(in_recovery(&reader).await, "{store:?} {mode:?} {slug}: readonly logins read on the standby");
            let read: Vec<String> = reader
                .query("SELECT body FROM notes ORDER BY id", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(read, notes, "{store:?} {mode:?} {slug}");
            let id = tenant["id"].as_str().unwrap();
            assert_eq!(value(&reader, "SELECT pgtenant.current_tenant()::text").await, id, "{store:?} {mode:?} {slug}");
            let err = reader.batch_execute("INSERT INTO notes (body) VALUES ('no')").await.unwrap_err();
            assert_eq!(sqlstate(&err), "25006", "{store:?} {mode:?} {slug}: {}", message(&err));
        }
        // One schema tenant's reader reaching into another's schema: the standby refuses as the primary does.
        let reader = login(&env, "initech", "readonly").await;
        for attack in [format!("SELECT body FROM {}.notes", home(&acme)), format!("SET search_path = {}", home(&acme))]
        {
            let err = reader.batch_execute(&attack).await.unwrap_err();
            assert_eq!(sqlstate(&err), "42501", "{store:?} {mode:?}: {attack}: {}", message(&err));
        }
        assert_eq!(value(&reader, "SELECT count(*)::text FROM notes").await, "1", "{store:?} {mode:?}");
    }
}
