//! Readonly tenants on a hot standby: `upstream.readonly_url` points at a
//! streaming replica of the test cluster (`pg_basebackup -R`), and readonly
//! logins read there with the full guarantee — strict context, which writes
//! nothing, so the standby can install it. The context attacks run against
//! the standby, through pgtenant in both pool modes and straight to it.

use pgtenant::config::PoolMode;
use pgtenant::dev::cluster::{Cluster, SUPERUSER};
use pgtenant::dev::APP_READONLY_ROLE;
use pgtenant::tenancy::catalog::Catalog;
use pgtenant::tenancy::Access;
use tokio::sync::OnceCell;
use tokio_postgres::Client;

use crate::common::*;
use crate::security::mint_token;

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
    let primary = cluster().await;
    let replica = replica().await;
    let (from, to) = (primary.url(APP_READONLY_ROLE, ""), replica.url(APP_READONLY_ROLE, ""));
    let env = TestEnv::start_with(move |c| {
        c.pool.mode = mode;
        // Transaction pooling: one standby session that the tenants take turns on.
        c.pool.size = if mode == PoolMode::Transaction { 1 } else { 4 };
        let readonly = c.upstream.readonly_url.take().expect("the dev config has a readonly URL");
        c.upstream.readonly_url = Some(readonly.replacen(&from, &to, 1));
    })
    .await;
    let catalog = Catalog::new(&env.config.control.url, 1).expect("catalog");
    catalog.upsert_login("barclays_reader", "barclays", PASSWORD, Access::Readonly).await.expect("a readonly login");
    caught_up(&env).await;
    env
}

/// Waits until the standby has replayed the primary's WAL up to now.
async fn caught_up(env: &TestEnv) {
    let lsn: String = env.superuser().await.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.unwrap().get(0);
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
async fn without_strict_context_a_standby_session_is_refused_with_the_reason() {
    let env = start_on_replica(PoolMode::Transaction).await;
    env.use_context_store(ContextStore::Sequences).await;
    caught_up(&env).await;
    let err = env.try_connect("london_auditor", PASSWORD).await.err();
    let err = match err {
        Some(err) => err,
        // The context is installed at the first statement's checkout.
        None => env.connect("london_auditor").await.simple_query("SELECT id FROM accounts").await.unwrap_err(),
    };
    let db = err.as_db_error().unwrap_or_else(|| panic!("a server error: {err:?}"));
    assert!(db.message().contains("hot standby cannot record the verified tenant"), "{db:?}");
    // The readwrite logins on the primary are unaffected.
    assert_eq!(account_ids(&env.connect("hk_teller").await).await, vec![3, 4]);
}
