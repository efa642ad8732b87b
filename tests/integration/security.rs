//! Attack tests: a hostile tenant client tries to see or change another
//! tenant's data, its own tenant context, the catalog, or other sessions.
//! Each test is one attempt; each asserts the refusal (SQLSTATE and words)
//! and that no row of another tenant reached the client.

use pgtenant::config::PoolMode;
use tokio_postgres::{AsyncMessage, Client};

use crate::common::raw::{self, first_column};
use crate::common::*;

const CONTEXT: &str = "tenant context is managed by pgtenant";

/// The hsbc-hk login still sees exactly its own rows and context.
async fn assert_isolated(hk: &Client) {
    assert_eq!(account_ids(hk).await, vec![3, 4], "hsbc-hk sees its own accounts only");
    let row = hk
        .query_one(
            "SELECT pgtenant.current_tenant()::text, current_setting('app.tenant_id'), \
                    (SELECT count(*) FROM transactions WHERE tenant_id <> pgtenant.current_tenant())",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), HSBC_HK);
    assert_eq!(row.get::<_, String>(1), HSBC_HK);
    assert_eq!(row.get::<_, i64>(2), 0);
}

/// Sends `sql` as a simple query from hk_teller; expects `code` with `words`
/// in the message, then checks isolation.
async fn refused(sql: &str, code: &str, words: &str) {
    let env = shared_env().await;
    let hk = env.connect("hk_teller").await;
    let err = match hk.simple_query(sql).await {
        Ok(rows) => panic!("{sql} must be refused, returned {} messages", rows.len()),
        Err(e) => e,
    };
    assert_eq!(sqlstate(&err), code, "{sql}: {}", message(&err));
    assert!(message(&err).contains(words), "{sql}: {}", message(&err));
    assert_isolated(&hk).await;
}

fn b() -> &'static str {
    BARCLAYS
}

// ---- changing the context with SQL (guard, L3) ------------------------------

#[tokio::test]
async fn set_tenant_setting() {
    refused(&format!("SET app.tenant_id = '{}'", b()), "42501", CONTEXT).await;
}

#[tokio::test]
async fn set_tenant_setting_other_spelling() {
    refused(&format!("SET \"app\".\"tenant_id\" TO '{}'", b()), "42501", CONTEXT).await;
}

#[tokio::test]
async fn set_local_inside_transaction() {
    let env = TestEnv::start().await;
    let hk = env.connect("hk_teller").await;
    hk.batch_execute("BEGIN").await.unwrap();
    let err = hk.batch_execute(&format!("SET LOCAL app.tenant_id = '{}'", b())).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    assert!(message(&err).contains(CONTEXT));
    let err = hk.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&err), "25P02", "the refusal aborts the transaction as PostgreSQL would");
    hk.batch_execute("ROLLBACK").await.unwrap();
    assert_isolated(&hk).await;
}

#[tokio::test]
async fn reset_tenant_setting() {
    refused("RESET app.tenant_id", "42501", CONTEXT).await;
}

#[tokio::test]
async fn set_pgtenant_context_directly() {
    refused("SET pgtenant.context = 'v1.1.2.x.y.z'", "42501", CONTEXT).await;
}

#[tokio::test]
async fn set_config_in_select_list() {
    refused(
        &format!("SELECT set_config('app.tenant_id', '{}', false), (SELECT count(*) FROM accounts)", b()),
        "42501",
        CONTEXT,
    )
    .await;
}

#[tokio::test]
async fn set_config_hidden_in_where_clause() {
    refused(
        &format!("SELECT id FROM accounts WHERE length(pg_catalog.set_config('app.tenant_id', '{}', false)) > 0", b()),
        "42501",
        CONTEXT,
    )
    .await;
}

#[tokio::test]
async fn set_config_quoted_identifier() {
    refused(&format!("SELECT \"set_config\"('app.tenant_id', '{}', false)", b()), "42501", CONTEXT).await;
}

#[tokio::test]
async fn set_config_unicode_escaped_identifier() {
    refused(&format!("SELECT U&\"\\0073et_config\"('app.tenant_id', '{}', false)", b()), "42501", CONTEXT).await;
}

#[tokio::test]
async fn set_config_inside_prepare() {
    refused(&format!("PREPARE p AS SELECT set_config('app.tenant_id', '{}', false)", b()), "42501", CONTEXT).await;
}

#[tokio::test]
async fn set_config_inside_copy_query() {
    refused(&format!("COPY (SELECT set_config('app.tenant_id', '{}', false)) TO STDOUT", b()), "42501", CONTEXT).await;
}

#[tokio::test]
async fn set_config_inside_cursor_with_hold() {
    refused(
        &format!("DECLARE c CURSOR WITH HOLD FOR SELECT set_config('app.tenant_id', '{}', false)", b()),
        "42501",
        CONTEXT,
    )
    .await;
}

#[tokio::test]
async fn set_config_inside_array_and_values() {
    refused(&format!("VALUES (ARRAY[set_config('app.tenant_id', '{}', false)])", b()), "42501", CONTEXT).await;
}

#[tokio::test]
async fn multi_statement_harmless_then_attack() {
    refused(&format!("SELECT 1; SET app.tenant_id = '{}'; SELECT * FROM accounts", b()), "42501", CONTEXT).await;
}

#[tokio::test]
async fn extended_protocol_parse_of_an_attack() {
    let env = TestEnv::start().await;
    let hk = env.connect("hk_teller").await;
    let err = hk.prepare(&format!("SELECT set_config('app.tenant_id', '{}', false)", b())).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    assert!(message(&err).contains(CONTEXT));
    let err = hk.query("SELECT pg_catalog.set_config($1, $2, false)", &[&"app.tenant_id", &b()]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    assert_isolated(&hk).await;
}

#[tokio::test]
async fn set_role_to_the_owner() {
    refused("SET ROLE pgtenant_owner", "42501", CONTEXT).await;
}

#[tokio::test]
async fn reset_role() {
    refused("RESET ROLE", "42501", CONTEXT).await;
}

#[tokio::test]
async fn set_session_authorization() {
    refused("SET SESSION AUTHORIZATION postgres", "42501", CONTEXT).await;
}

#[tokio::test]
async fn do_block_with_dynamic_sql() {
    refused(
        &format!("DO $$ BEGIN EXECUTE 'SE' || 'T app.tenant_id = ''{}'''; END $$", b()),
        "42501",
        "runs SQL that pgtenant cannot inspect",
    )
    .await;
}

#[tokio::test]
async fn create_function_wrapping_set_config() {
    refused(
        "CREATE FUNCTION f(t text) RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$",
        "42501",
        "runs SQL that pgtenant cannot inspect",
    )
    .await;
}

#[tokio::test]
async fn query_to_xml_with_set_config_in_a_string() {
    refused(
        &format!("SELECT query_to_xml('select set_config(''app.tenant_id'', ''{}'', false)', true, true, '')", b()),
        "42501",
        "",
    )
    .await;
}

#[tokio::test]
async fn alter_role_set_tenant_setting() {
    refused(&format!("ALTER ROLE CURRENT_USER SET app.tenant_id = '{}'", b()), "42501", CONTEXT).await;
}

#[tokio::test]
async fn calling_pgtenant_set_context_with_a_forged_token() {
    refused("SELECT pgtenant.set_context('v1.1.2.3.4.5', 'app.tenant_id')", "42501", CONTEXT).await;
}

#[tokio::test]
async fn unparsable_statement_fails_closed() {
    refused("SELECT 1 FROM accounts WHERE (", "42601", "syntax error").await;
}

// ---- startup packet and raw protocol (L2) -----------------------------------

#[tokio::test]
async fn startup_options_setting_the_context() {
    let env = TestEnv::start().await;
    let options = format!("-c app.tenant_id={}", b());
    let err = raw::login(env.server.proxy_addr, "hk_teller", PASSWORD, &env.database, &[("options", &options)])
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code().as_deref(), Some("42501"));
    assert!(err.field(b'M').unwrap().contains(CONTEXT));
}

#[tokio::test]
async fn startup_raw_key_for_pgtenant_context() {
    let env = TestEnv::start().await;
    let err = raw::login(env.server.proxy_addr, "hk_teller", PASSWORD, &env.database, &[("pgtenant.context", "x")])
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code().as_deref(), Some("42501"));
}

#[tokio::test]
async fn function_call_message_to_set_config_by_oid() {
    let env = TestEnv::start().await;
    let mut session = raw::login(env.server.proxy_addr, "hk_teller", PASSWORD, &env.database, &[]).await.unwrap();
    let oid: u32 = {
        let rows = session.query("SELECT 'pg_catalog.set_config'::regproc::oid").await;
        first_column(&rows)[0].parse().unwrap()
    };
    session.send(&raw::function_call(oid, &["app.tenant_id", b(), "false"])).await;
    let replies = session.until_ready().await;
    let error = replies.iter().find(|m| m.tag == b'E').expect("an ErrorResponse");
    assert_eq!(error.code().as_deref(), Some("42501"));
    assert!(error.field(b'M').unwrap().contains("FunctionCall"));
    let ids = first_column(&session.query("SELECT id FROM accounts ORDER BY id").await);
    assert_eq!(ids, vec!["3", "4"]);
}

#[tokio::test]
async fn forged_cancel_key_cancels_nothing() {
    let env = TestEnv::start().await;
    let direct = env.superuser().await;
    let mut victim = raw::login(env.server.proxy_addr, "hk_teller", PASSWORD, &env.database, &[]).await.unwrap();
    // The superuser holds a row lock the victim's query will wait for.
    direct.batch_execute("BEGIN; SELECT * FROM accounts WHERE id = 3 FOR UPDATE").await.unwrap();
    victim.send_query("UPDATE accounts SET balance = balance WHERE id = 3").await;
    eventually("the victim to wait on the lock", || async {
        let n: i64 = direct
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'", &[])
            .await
            .unwrap()
            .get(0);
        n == 1
    })
    .await;
    let (pid, secret) = victim.key;
    for forged in [secret.wrapping_add(1), !secret, 0] {
        raw::send_cancel_request(env.server.proxy_addr, (pid, forged)).await;
    }
    direct.batch_execute("COMMIT").await.unwrap();
    let replies = victim.until_ready().await;
    assert!(replies.iter().all(|m| m.tag != b'E'), "the victim's query was not cancelled: {replies:?}");
}

// ---- the database does not trust the setting (L1) ---------------------------

/// A session as the tenant role straight to PostgreSQL: what a client could
/// do if every proxy-side check were bypassed.
pub(crate) async fn guard_bypassed(env: &TestEnv) -> Client {
    connect_url(&env.cluster.url("pgtenant_app", &env.database)).await
}

/// The error a session gets, with the verified tenant in sequences, when its
/// context setting was written by anything but a successful `pgtenant.set_context()`.
fn assert_no_verified_tenant(err: &tokio_postgres::Error) {
    assert_eq!(sqlstate(err), "55000", "{}", message(err));
    assert!(message(err).contains("\"verified_tenant_hi\" is not yet defined in this session"), "{}", message(err));
}

/// A session where set_context() never ran, whatever its context setting
/// says: an error with the tenant in sequences, no tenant in strict context.
async fn assert_never_verified(app: &Client, store: ContextStore) {
    match store {
        ContextStore::Sequences | ContextStore::PlPgSql => {
            assert_no_verified_tenant(&app.query("SELECT id FROM accounts", &[]).await.unwrap_err());
            assert_no_verified_tenant(&app.query_one("SELECT pgtenant.current_tenant()::text", &[]).await.unwrap_err());
        }
        ContextStore::Strict => {
            assert!(account_ids(app).await.is_empty());
            let tenant: Option<String> =
                app.query_one("SELECT pgtenant.current_tenant()::text", &[]).await.unwrap().get(0);
            assert_eq!(tenant, None);
        }
    }
}

#[tokio::test]
async fn forged_context_token_sees_nothing() {
    let env = TestEnv::start().await;
    for store in BOTH_STORES {
        env.use_context_store(store).await;
        forged_context_token_sees_nothing_in(&env, store).await;
    }
}

async fn forged_context_token_sees_nothing_in(env: &TestEnv, store: ContextStore) {
    let app = guard_bypassed(env).await;
    let pid: i32 = app.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let forged = format!("v1.{pid}.00.{}.{}.{}", b(), b(), "0".repeat(64));
    // A custom setting cannot be protected by privileges: the SET succeeds, the value is worthless.
    app.batch_execute(&format!("SET pgtenant.context = '{forged}'")).await.unwrap();
    assert_never_verified(&app, store).await;
    app.batch_execute("RESET pgtenant.context").await.unwrap();
    app.batch_execute(&format!("SET app.tenant_id = '{}'", b())).await.unwrap();
    assert!(account_ids(&app).await.is_empty(), "the plain setting alone grants nothing");
    let tenant: Option<String> = app.query_one("SELECT pgtenant.current_tenant()::text", &[]).await.unwrap().get(0);
    assert_eq!(tenant, None);
}

/// A token for `pid` signed with the database's key, as pgtenant would make it.
pub(crate) async fn mint_token(env: &TestEnv, pid: i32, tenant: &str, visible: &str) -> String {
    mint_token_with_nonce(env, pid, tenant, visible, "0123456789abcdef").await
}

pub(crate) async fn mint_token_with_nonce(env: &TestEnv, pid: i32, tenant: &str, visible: &str, nonce: &str) -> String {
    let body = format!("v1.{pid}.{nonce}.{tenant}.{visible}");
    let admin = env.superuser().await;
    let mac: String = admin
        .query_one(
            "SELECT encode(sha256(opad || sha256(ipad || convert_to($1, 'UTF8'))), 'hex') FROM pgtenant.context_key",
            &[&body],
        )
        .await
        .unwrap()
        .get(0);
    format!("{body}.{mac}")
}

/// A session straight to PostgreSQL with hsbc-hk's context verified, as
/// pgtenant leaves it, and its own rows visible.
async fn verified_hk_session(env: &TestEnv) -> (Client, i32) {
    let app = guard_bypassed(env).await;
    let pid: i32 = app.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let token = mint_token(env, pid, HSBC_HK, HSBC_HK).await;
    app.query_one("SELECT pgtenant.set_context($1, 'app.tenant_id')", &[&token]).await.unwrap();
    assert_eq!(account_ids(&app).await, vec![3, 4]);
    (app, pid)
}

#[tokio::test]
async fn rewriting_the_setting_after_verification_changes_nothing() {
    let env = TestEnv::start().await;
    for store in BOTH_STORES {
        env.use_context_store(store).await;
        rewriting_the_setting_after_verification_changes_nothing_in(&env, store).await;
    }
}

async fn rewriting_the_setting_after_verification_changes_nothing_in(env: &TestEnv, store: ContextStore) {
    let (app, pid) = verified_hk_session(env).await;
    // Another tenant in both token fields. With the tenant in sequences the
    // setting and the verified tenant disagree, and the session has no tenant
    // at all (fail closed); in strict context the setting decides nothing.
    let forged = format!("v1.{pid}.00.{}.{}.{}", b(), b(), "0".repeat(64));
    app.batch_execute(&format!("SET pgtenant.context = '{forged}'")).await.unwrap();
    let (rows, tenant) = match store {
        ContextStore::Sequences | ContextStore::PlPgSql => (vec![], None),
        ContextStore::Strict => (vec![3, 4], Some(HSBC_HK.to_owned())),
    };
    assert_eq!(account_ids(&app).await, rows, "{store:?}");
    let current: Option<String> = app.query_one("SELECT pgtenant.current_tenant()::text", &[]).await.unwrap().get(0);
    assert_eq!(current, tenant, "{store:?}");
    if store == ContextStore::Strict {
        return;
    }
    // The verified tenant's own fields with a forged MAC: the record answers.
    let own = format!("v1.{pid}.00.{HSBC_HK}.{HSBC_HK}.{}", "0".repeat(64));
    app.batch_execute(&format!("SET pgtenant.context = '{own}'")).await.unwrap();
    assert_eq!(account_ids(&app).await, vec![3, 4]);
    // A wider visible set than the tenant's: checked against the key, refused whole.
    let forged = format!("v1.{pid}.00.{HSBC_HK}.{HSBC_HK},{},{HSBC}.{}", b(), "0".repeat(64));
    app.batch_execute(&format!("SET pgtenant.context = '{forged}'")).await.unwrap();
    assert!(account_ids(&app).await.is_empty());
}

#[tokio::test]
async fn genuine_token_of_another_tenant_in_the_setting_sees_nothing() {
    let env = TestEnv::start().await;
    for store in BOTH_STORES {
        env.use_context_store(store).await;
        let (app, pid) = verified_hk_session(&env).await;
        // A correctly signed token for this backend, of the parent tenant, written
        // into the setting without set_context(): it does not name the verified
        // tenant (sequences: no tenant), or decides nothing (strict context).
        let parent = mint_token(&env, pid, HSBC, &format!("{HSBC},{HSBC_HK},{HSBC_LONDON}")).await;
        app.batch_execute(&format!("SET pgtenant.context = '{parent}'")).await.unwrap();
        let rows = if store == ContextStore::Strict { vec![3, 4] } else { vec![] };
        assert_eq!(account_ids(&app).await, rows, "{store:?}");
    }
}

/// The nonce that commits a token to a switching secret (hex).
pub(crate) async fn commitment(env: &TestEnv, secret: &str) -> String {
    let admin = env.superuser().await;
    admin.query_one("SELECT left(encode(sha256(decode($1, 'hex')), 'hex'), 24)", &[&secret]).await.unwrap().get(0)
}

const SECRET: &str = "00112233445566778899aabbccddeeff";
const OTHER_SECRET: &str = "ffeeddccbbaa99887766554433221100";

#[tokio::test]
async fn switching_tenants_takes_the_sessions_secret() {
    let env = TestEnv::start().await;
    let app = guard_bypassed(&env).await;
    let pid: i32 = app.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let nonce = commitment(&env, SECRET).await;
    let token = mint_token_with_nonce(&env, pid, HSBC_HK, HSBC_HK, &nonce).await;
    app.query_one("SELECT pgtenant.set_context($1, 'app.tenant_id', $2)", &[&token, &SECRET]).await.unwrap();
    assert_eq!(account_ids(&app).await, vec![3, 4]);
    let unsigned = format!("v1.{pid}.{nonce}.{}.{}.{}", b(), b(), "0".repeat(64));
    // Without the secret: refused, nothing changes.
    for guess in [OTHER_SECRET, "", "not hex at all"] {
        let err = app
            .query_one("SELECT pgtenant.switch_context($1, 'app.tenant_id', $2)", &[&unsigned, &guess])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{guess}: {}", message(&err));
        assert_eq!(account_ids(&app).await, vec![3, 4]);
    }
    // Its own token with a secret of the client's choosing installs nothing:
    // the token commits to pgtenant's secret.
    let err = app
        .query_one("SELECT pgtenant.set_context($1, 'app.tenant_id', $2)", &[&token, &OTHER_SECRET])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    // The secret cannot be read back.
    for sql in ["SELECT currval('pgtenant.backend_secret_hi')", "SELECT last_value FROM pgtenant.backend_secret_lo"] {
        let err = app.query_one(sql, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}");
    }
    // Whoever holds it (pgtenant) switches without a signature check.
    app.query_one("SELECT pgtenant.switch_context($1, 'app.tenant_id', $2)", &[&unsigned, &SECRET]).await.unwrap();
    assert_eq!(account_ids(&app).await, vec![7, 8, 9]);
}

#[tokio::test]
async fn switching_without_an_installed_secret_fails() {
    let env = TestEnv::start().await;
    for store in BOTH_STORES {
        env.use_context_store(store).await;
        switching_without_an_installed_secret_fails_in(&env, store).await;
    }
}

async fn switching_without_an_installed_secret_fails_in(env: &TestEnv, store: ContextStore) {
    let (app, pid) = verified_hk_session(env).await;
    // No secret on the session: the switch verifies the token, which is forged.
    let token = format!("v1.{pid}.00.{}.{}.{}", b(), b(), "0".repeat(64));
    let err =
        app.query_one("SELECT pgtenant.switch_context($1, 'app.tenant_id', $2)", &[&token, &SECRET]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{store:?}: {}", message(&err));
    assert_eq!(account_ids(&app).await, vec![3, 4]);
    // A genuine token committed to the secret: verified, and the secret installed.
    let nonce = commitment(env, SECRET).await;
    let signed = mint_token_with_nonce(env, pid, HSBC_HK, HSBC_HK, &nonce).await;
    app.query_one("SELECT pgtenant.switch_context($1, 'app.tenant_id', $2)", &[&signed, &SECRET]).await.unwrap();
    assert_eq!(account_ids(&app).await, vec![3, 4]);
    app.batch_execute("DISCARD ALL").await.unwrap();
    if store == ContextStore::Strict {
        // Settings only the catalog owner may write: DISCARD ALL keeps the tenant.
        assert_eq!(account_ids(&app).await, vec![3, 4]);
        return;
    }
    // DISCARD ALL forgets the installed secret and the tenant with everything else.
    let err =
        app.query_one("SELECT pgtenant.switch_context($1, 'app.tenant_id', $2)", &[&token, &SECRET]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    assert!(account_ids(&app).await.is_empty());
}

#[tokio::test]
async fn the_verified_tenant_cannot_be_written_by_a_tenant_role() {
    let env = TestEnv::start().await;
    let (app, _) = verified_hk_session(&env).await;
    for sql in [
        "SELECT setval('pgtenant.verified_tenant_hi', -5764607523034234880)",
        "SELECT nextval('pgtenant.verified_tenant_lo')",
        "ALTER SEQUENCE pgtenant.verified_tenant_hi RESTART WITH 1",
    ] {
        let err = app.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}: {}", message(&err));
    }
    assert_eq!(account_ids(&app).await, vec![3, 4]);
    // Through pgtenant the same statements fail the same way.
    let hk = env.connect("hk_teller").await;
    let err = hk.batch_execute("SELECT setval('pgtenant.verified_tenant_hi', 1)").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{}", message(&err));
    assert_isolated(&hk).await;
}

#[tokio::test]
async fn discard_sequences_forgets_the_verified_tenant_and_pgtenant_restores_it() {
    let env = TestEnv::start().await;
    for store in BOTH_STORES {
        env.use_context_store(store).await;
        let (app, _) = verified_hk_session(&env).await;
        app.batch_execute("DISCARD SEQUENCES").await.unwrap();
        match store {
            ContextStore::Sequences | ContextStore::PlPgSql => {
                assert_no_verified_tenant(&app.query("SELECT id FROM accounts", &[]).await.unwrap_err())
            }
            // Strict context keeps nothing in sequences.
            ContextStore::Strict => assert_eq!(account_ids(&app).await, vec![3, 4]),
        }
        let hk = env.connect("hk_teller").await;
        hk.batch_execute("DISCARD SEQUENCES").await.unwrap();
        assert_isolated(&hk).await;
    }
}

#[tokio::test]
async fn genuine_token_from_another_backend_sees_nothing() {
    let env = TestEnv::start().await;
    let barclays = env.connect("barclays_ops").await;
    // A tenant can read its own token; it is bound to its backend.
    let token: String = barclays.query_one("SELECT current_setting('pgtenant.context')", &[]).await.unwrap().get(0);
    let app = guard_bypassed(&env).await;
    let result = app.query_one("SELECT pgtenant.set_context($1, 'app.tenant_id')", &[&token]).await;
    let err = result.expect_err("a token from another backend is refused");
    assert_eq!(sqlstate(&err), "42501");
    assert_eq!(message(&err), "invalid tenant context");
    assert!(account_ids(&app).await.is_empty());
}

#[tokio::test]
async fn tampered_token_on_its_own_backend_sees_nothing() {
    let env = TestEnv::start().await;
    let app = guard_bypassed(&env).await;
    let hk = env.connect("hk_teller").await;
    let token: String = hk.query_one("SELECT current_setting('pgtenant.context')", &[]).await.unwrap().get(0);
    // Same backend pid as `app`, tenant swapped, MAC kept.
    let pid: i32 = app.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = pid.to_string();
    parts[3] = b().to_string();
    parts[4] = b().to_string();
    let err = app.query_one("SELECT pgtenant.set_context($1, 'app.tenant_id')", &[&parts.join(".")]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    assert!(account_ids(&app).await.is_empty());
}

#[tokio::test]
async fn no_context_means_no_rows_and_no_inserts() {
    let env = TestEnv::start().await;
    let app = guard_bypassed(&env).await;
    assert!(account_ids(&app).await.is_empty());
    let err = app
        .execute("INSERT INTO accounts (iban, holder, currency) VALUES ('NOCTX', 'x', 'GBP')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "a row without a visible tenant is refused");
}

#[tokio::test]
async fn reset_all_and_discard_all_keep_the_context() {
    let env = TestEnv::start().await;
    let hk = env.connect("hk_teller").await;
    hk.batch_execute("SET search_path = pg_catalog, public; SET application_name = 'mine'").await.unwrap();
    hk.batch_execute("RESET ALL").await.unwrap();
    let app_name: String = hk.query_one("SHOW application_name", &[]).await.unwrap().get(0);
    assert_eq!(app_name, "", "the client's own settings are reset");
    assert_isolated(&hk).await;
    hk.batch_execute("DISCARD ALL").await.unwrap();
    assert_isolated(&hk).await;
    hk.batch_execute("BEGIN; RESET ALL; COMMIT").await.unwrap();
    assert_isolated(&hk).await;
}

#[tokio::test]
async fn reset_all_pipelined_with_a_query_leaks_nothing() {
    let env = TestEnv::start().await;
    let hk = env.connect("hk_teller").await;
    let messages = hk.simple_query("RESET ALL; SELECT id FROM accounts").await.unwrap();
    let foreign = messages.iter().any(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => !matches!(r.get(0), Some("3") | Some("4")),
        _ => false,
    });
    assert!(!foreign, "no row of another tenant in the same batch as the reset");
    assert_isolated(&hk).await;
}

// ---- the catalog (least privilege) ------------------------------------------

#[tokio::test]
async fn read_login_verifiers() {
    refused("SELECT username, verifier FROM pgtenant.logins", "42501", "permission denied").await;
}

#[tokio::test]
async fn read_tenant_catalog() {
    refused("SELECT * FROM pgtenant.tenants", "42501", "permission denied").await;
}

#[tokio::test]
async fn read_the_context_key() {
    refused("SELECT key FROM pgtenant.context_key", "42501", "permission denied").await;
}

#[tokio::test]
async fn read_role_passwords() {
    refused("SELECT rolname, rolpassword FROM pg_authid", "42501", "permission denied").await;
}

// ---- other sessions and side channels ---------------------------------------

#[tokio::test]
async fn read_other_sessions_query_text() {
    refused("SELECT query FROM pg_stat_activity", "42501", "reaches other sessions").await;
}

#[tokio::test]
async fn read_activity_through_the_function() {
    refused("SELECT * FROM pg_stat_get_activity(NULL)", "42501", "reaches other sessions").await;
}

#[tokio::test]
async fn cancel_another_tenants_backend() {
    refused("SELECT pg_cancel_backend(pid) FROM generate_series(1, 1) pid", "42501", "reaches other sessions").await;
}

#[tokio::test]
async fn terminate_another_tenants_backend() {
    refused("SELECT pg_terminate_backend(1)", "42501", "reaches other sessions").await;
}

#[tokio::test]
async fn advisory_locks_across_tenants() {
    refused("SELECT pg_advisory_lock(42)", "42501", "reaches other sessions").await;
}

#[tokio::test]
async fn large_object_create_and_read() {
    refused("SELECT lo_from_bytea(0, 'secret')", "42501", "large objects").await;
}

#[tokio::test]
async fn large_object_read_by_oid() {
    refused("SELECT lo_get(16384)", "42501", "large objects").await;
}

#[tokio::test]
async fn pg_read_file() {
    refused("SELECT pg_read_file('/etc/passwd')", "42501", "server files").await;
}

#[tokio::test]
async fn copy_to_program() {
    refused("COPY accounts TO PROGRAM 'cat > /tmp/x'", "42501", "file or program").await;
}

#[tokio::test]
async fn copy_from_server_file() {
    refused("COPY accounts FROM '/etc/passwd'", "42501", "file or program").await;
}

#[tokio::test]
async fn explain_analyze_counts_other_tenants_rows() {
    refused("EXPLAIN ANALYZE SELECT * FROM accounts", "42501", "other tenants' rows").await;
}

/// pg_notify() is scoped like NOTIFY, at run time: a bound, a computed, a
/// qualified channel name all stay the tenant's; a name spelled as another
/// tenant's scoped channel is still under the sender's own prefix.
#[tokio::test]
async fn pg_notify_never_reaches_another_tenant() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let env = TestEnv::start_with(|c| c.pool.mode = mode).await;
        let (barclays_listener, mut barclays_rx) = env.connect_listening("barclays_ops").await;
        barclays_listener.batch_execute("LISTEN ledger").await.unwrap();
        let (hk_listener, mut hk_rx) = env.connect_listening("hk_teller").await;
        hk_listener.batch_execute("LISTEN ledger").await.unwrap();
        let hk = env.connect("hk_teller").await;
        hk.execute("SELECT pg_notify($1, $2)", &[&"ledger", &"bound"]).await.unwrap();
        hk.batch_execute("SELECT pg_notify('led' || 'ger', 'computed')").await.unwrap();
        hk.batch_execute("SELECT pg_catalog.pg_notify('ledger', 'qualified')").await.unwrap();
        // A payload that would end the wrapper's NOTIFY if it were pasted in unquoted.
        let hostile = "it's \\ \"x\"'); NOTIFY ledger, 'forged";
        hk.execute("SELECT pg_notify('ledger', $1)", &[&hostile]).await.unwrap();
        // Barclays' channel on the server, as hk could compute it.
        let barclays_scoped = format!("t{}.ledger", &sha256_hex(BARCLAYS)[..12]);
        hk.execute("SELECT pg_notify($1, 'escaped')", &[&barclays_scoped]).await.unwrap();
        let err = hk.batch_execute("SELECT pg_notify('', 'x')").await.unwrap_err();
        assert_eq!(sqlstate(&err), "22023", "{mode:?}: {}", message(&err));
        let barclays = env.connect("barclays_ops").await;
        barclays.batch_execute("SELECT pg_notify('ledger', 'from barclays')").await.unwrap();
        for expected in ["bound", "computed", "qualified", hostile] {
            match next_message(&mut hk_rx).await {
                AsyncMessage::Notification(n) => {
                    assert_eq!((n.channel(), n.payload()), ("ledger", expected), "{mode:?}")
                }
                other => panic!("{mode:?}: expected a notification, got {other:?}"),
            }
        }
        // Had any of hk's crossed over, it would come before barclays' own.
        match next_message(&mut barclays_rx).await {
            AsyncMessage::Notification(n) => {
                assert_eq!((n.channel(), n.payload()), ("ledger", "from barclays"), "{mode:?}")
            }
            other => panic!("{mode:?}: expected a notification, got {other:?}"),
        }
        assert_isolated(&hk).await;
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn temporary_table_to_shadow_or_carry_data() {
    refused("CREATE TEMP TABLE accounts (id bigint)", "42501", "permission denied").await;
}

#[tokio::test]
async fn create_objects_in_public() {
    refused("CREATE TABLE public.trap (id int)", "42501", "permission denied").await;
}

#[tokio::test]
async fn notify_never_reaches_another_tenant() {
    let env = TestEnv::start().await;
    let (listener, mut rx) = env.connect_listening("barclays_ops").await;
    listener.batch_execute("LISTEN ledger").await.unwrap();
    let hk = env.connect("hk_teller").await;
    hk.batch_execute("NOTIFY ledger, 'from hsbc-hk'").await.unwrap();
    // Barclays' own notification, sent after: if hk's crossed over, it would come first.
    let barclays = env.connect("barclays_ops").await;
    barclays.batch_execute("NOTIFY ledger, 'from barclays'").await.unwrap();
    match next_message(&mut rx).await {
        AsyncMessage::Notification(n) => {
            assert_eq!(n.channel(), "ledger");
            assert_eq!(n.payload(), "from barclays");
        }
        other => panic!("expected a notification, got {other:?}"),
    }
    assert_isolated(&hk).await;
}

/// The cursor's server connection is the next client's (one server session,
/// asserted by backend pid), so a leak could show.
#[tokio::test]
async fn with_hold_cursor_does_not_cross_clients() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let env = TestEnv::start_with(|c| {
            c.pool.size = 1;
            c.pool.mode = mode;
        })
        .await;
        let (barclays, connection) = env.connect_abortable("barclays_ops").await;
        barclays.batch_execute("DECLARE secrets CURSOR WITH HOLD FOR SELECT * FROM accounts").await.unwrap();
        let pid = value(&barclays, "SELECT pg_backend_pid()").await;
        drop(barclays);
        let _ = connection.await;
        let hk = env.connect("hk_teller").await;
        assert_eq!(value(&hk, "SELECT pg_backend_pid()").await, pid, "{mode:?}: the same server session");
        let err = hk.simple_query("FETCH ALL FROM secrets").await.unwrap_err();
        assert_eq!(sqlstate(&err), "34000", "{mode:?}");
        assert_isolated(&hk).await;
    }
}

// ---- writes ---------------------------------------------------------------

#[tokio::test]
async fn readonly_login_cannot_truncate_or_copy_in() {
    let env = TestEnv::start().await;
    let london = env.connect("london_auditor").await;
    for sql in ["TRUNCATE accounts", "DELETE FROM accounts", "UPDATE transactions SET amount = 0"] {
        let err = london.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}");
    }
    assert_eq!(account_ids(&london).await, vec![5, 6]);
}

#[tokio::test]
async fn insert_into_another_tenant_through_a_cte() {
    refused(
        &format!(
            "WITH moved AS (UPDATE accounts SET tenant_id = '{}' WHERE id = 3 RETURNING id) SELECT * FROM moved",
            b()
        ),
        "42501",
        "row-level security",
    )
    .await;
}

#[tokio::test]
async fn startup_options_cannot_replace_the_upstream_user_or_database() {
    let env = TestEnv::start().await;
    for options in ["-c user=postgres", "--user=postgres", "-c database=postgres", "-c replication=database"] {
        let err = raw::login(env.server.proxy_addr, "hk_teller", PASSWORD, &env.database, &[("options", options)])
            .await
            .err()
            .unwrap_or_else(|| panic!("{options} must be refused"));
        assert_eq!(err.code().as_deref(), Some("42704"), "{options}");
    }
    let hk = env.connect("hk_teller").await;
    let role: String = hk.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(role, "pgtenant_app");
    assert_isolated(&hk).await;
}

#[tokio::test]
async fn set_config_with_a_computed_setting_name() {
    let sql = format!("SELECT set_config('app.' || 'tenant_id', '{}', false)", b());
    refused(&sql, "42501", "set_config() with a computed setting name is not allowed").await;
}

#[tokio::test]
async fn set_config_on_an_ordinary_setting_is_allowed() {
    // Drivers do this (asyncpg turns jit off around type introspection).
    let env = TestEnv::start().await;
    let hk = env.connect("hk_teller").await;
    let row = hk.query_one("SELECT current_setting('jit'), set_config('jit', 'off', false)", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(1), "off");
    assert_isolated(&hk).await;
}
