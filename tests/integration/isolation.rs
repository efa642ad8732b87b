//! The isolation models: schema and database tenants made through the admin
//! API (roles, schema or database, migrations), reached through their own
//! logins in both pool modes, and kept apart by the database's privileges —
//! with the statement guard and without it.

use std::path::PathBuf;

use serde_json::{json, Value};
use tokio_postgres::{Client, NoTls};

use crate::common::http::Admin;
use crate::common::*;
use pgtenant::config::{Config, PoolMode};

const LOGIN_PASSWORD: &str = "isolation-password-1";

/// A tenant migrations folder of its own, with `files` (name, SQL).
pub fn migrations_folder(label: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgtenant-tenant-migrations-{}-{label}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, sql) in files {
        std::fs::write(dir.join(name), sql).unwrap();
    }
    dir
}

pub const NOTES: &str = "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);
     INSERT INTO notes (body) VALUES ('seed');
     CREATE FUNCTION secret() RETURNS text LANGUAGE sql AS $$ SELECT 'inside' $$;
     CREATE VIEW note_bodies AS SELECT body FROM notes;";

async fn env_with(label: &str, adjust: impl FnOnce(&mut Config)) -> TestEnv {
    let folder = migrations_folder(label, &[("0001_notes.sql", NOTES)]);
    TestEnv::start_with(|c| {
        c.provisioning.migrations = Some(folder);
        adjust(c);
    })
    .await
}

fn admin_api(env: &TestEnv) -> Admin {
    Admin::new(env.server.admin_addr, &env.config.admin.token)
}

/// `<slug>_rw` or `<slug>_ro`.
fn username(slug: &str, access: &str) -> String {
    let suffix = if access == "readonly" { "ro" } else { "rw" };
    format!("{}_{suffix}", slug.replace('-', "_"))
}

/// Creates a tenant of `isolation` with a readwrite and a readonly login
/// (`<slug>_rw`, `<slug>_ro`); returns the tenant's JSON.
pub async fn tenant_with_logins(admin: &Admin, slug: &str, isolation: &str) -> Value {
    let reply = admin.post("/v1/tenants", &json!({"slug": slug, "name": slug, "isolation": isolation})).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    for access in ["readwrite", "readonly"] {
        let body = json!({"username": username(slug, access), "password": LOGIN_PASSWORD, "access": access});
        let login = admin.post(&format!("/v1/tenants/{slug}/logins"), &body).await;
        assert_eq!(login.status, 201, "{}", login.text());
    }
    reply.json()
}

pub async fn login(env: &TestEnv, slug: &str, access: &str) -> Client {
    let username = username(slug, access);
    env.try_connect(&username, LOGIN_PASSWORD).await.unwrap_or_else(|e| panic!("connect as {username}: {e}"))
}

/// The tenant's schema or database name, as the server knows it.
pub fn home(tenant: &Value) -> String {
    format!("pgt_{}", tenant["id"].as_str().unwrap().replace('-', ""))
}

async fn rows(client: &Client, sql: &str) -> Vec<String> {
    client.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).iter().map(|r| r.get(0)).collect()
}

async fn refusal(client: &Client, sql: &str) -> (String, String) {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("{sql} must be refused"),
        Err(e) => (sqlstate(&e), message(&e)),
    }
}

#[tokio::test]
async fn schema_and_database_tenants_work_end_to_end_in_both_pool_modes() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let env = env_with(&format!("e2e-{mode:?}"), |c| c.pool.mode = mode).await;
        let admin = admin_api(&env);
        for (slug, isolation) in [("acme", "schema"), ("globex", "database")] {
            let tenant = tenant_with_logins(&admin, slug, isolation).await;
            assert_eq!(
                (&tenant["isolation"], &tenant["status"], &tenant["upstream"], &tenant["migration_version"]),
                (&json!(isolation), &json!("active"), &json!("default"), &json!(1)),
                "{tenant}"
            );
            let id = tenant["id"].as_str().unwrap().to_owned();
            // psql, as an analyst would.
            let (ok, out, err) = psql(
                &env.url(&username(slug, "readwrite"), LOGIN_PASSWORD),
                &["-c", "SELECT body FROM notes", "-c", "SELECT pgtenant.current_tenant()"],
            )
            .await;
            assert!(ok, "{err}");
            assert_eq!(out, format!("seed\n{id}\n"));
            let client = login(&env, slug, "readwrite").await;
            assert_eq!(rows(&client, "SELECT body FROM notes").await, ["seed"], "{mode:?} {isolation}");
            client.batch_execute("INSERT INTO notes (body) VALUES ('mine')").await.unwrap();
            assert_eq!(rows(&client, "SELECT body FROM notes ORDER BY id").await, ["seed", "mine"]);
            assert_eq!(rows(&client, "SELECT secret()").await, ["inside"]);
            assert_eq!(value(&client, "SELECT pgtenant.current_tenant()::text").await, id);
            assert_eq!(value(&client, "SELECT current_setting('app.tenant_id')").await, id);
            let schema = if isolation == "schema" { home(&tenant) } else { "public".to_owned() };
            assert_eq!(value(&client, "SELECT current_schema()::text").await, schema);
            // The pinned search_path and the context survive what drivers send on recycling.
            for reset in ["RESET ALL", "DISCARD ALL", "RESET search_path"] {
                client.batch_execute(reset).await.unwrap();
                assert_eq!(value(&client, "SELECT current_schema()::text").await, schema, "after {reset}");
                assert_eq!(value(&client, "SELECT pgtenant.current_tenant()::text").await, id, "after {reset}");
                assert_eq!(rows(&client, "SELECT count(*)::text FROM notes").await, ["2"]);
            }
            let reader = login(&env, slug, "readonly").await;
            assert_eq!(rows(&reader, "SELECT body FROM notes ORDER BY id").await, ["seed", "mine"]);
            let (code, text) = refusal(&reader, "INSERT INTO notes (body) VALUES ('no')").await;
            assert_eq!(code, "42501", "{text}");
            assert_eq!(value(&reader, "SELECT pgtenant.current_tenant()::text").await, id);
            let read = admin.get(&format!("/v1/tenants/{slug}")).await.json();
            assert_eq!(read["migration_version"], json!(1));
        }
        // Shared tenants are as before, beside them.
        let shared = env.connect("hk_teller").await;
        assert_eq!(value(&shared, "SELECT pgtenant.current_tenant()::text").await, HSBC_HK);
        assert!(!account_ids(&shared).await.is_empty());
        let pools = admin.get("/v1/pools").await.json();
        let owned = pools.as_array().unwrap().iter().filter(|p| p["tenant_id"].is_string()).count();
        assert!(owned >= 2, "the tenants' own pools are listed: {pools}");
    }
}

/// What one schema tenant tries against another, with the guard on or off.
async fn schema_attacks(env: &TestEnv, guard: bool) {
    let admin = admin_api(env);
    let victim = tenant_with_logins(&admin, "victim", "schema").await;
    let attacker = tenant_with_logins(&admin, "attacker", "schema").await;
    let victim_home = home(&victim);
    let own = home(&attacker);
    login(env, "victim", "readwrite")
        .await
        .batch_execute("INSERT INTO notes (body) VALUES ('victim-secret')")
        .await
        .unwrap();
    let client = login(env, "attacker", "readwrite").await;
    // The database's privileges, whatever the guard says.
    for sql in [
        format!("SELECT body FROM {victim_home}.notes"),
        format!("SELECT {victim_home}.secret()"),
        format!("SELECT * FROM {victim_home}.note_bodies"),
        format!("INSERT INTO {victim_home}.notes (body) VALUES ('x')"),
        "SELECT count(*) FROM public.accounts".to_owned(),
        "SELECT count(*) FROM pgtenant.tenants".to_owned(),
    ] {
        let (code, text) = refusal(&client, &sql).await;
        assert_eq!(code, "42501", "{sql}: {text}");
    }
    let spellings = [
        format!("SET search_path = {victim_home}"),
        format!("SET search_path TO public, \"{victim_home}\""),
        format!("SET SESSION search_path = '{victim_home}'"),
        format!("BEGIN; SET LOCAL search_path = {victim_home}; SELECT body FROM notes; COMMIT"),
        format!("SELECT set_config('search_path', '{victim_home}', false)"),
        format!("SELECT pg_catalog.set_config('search_path', '{victim_home}, public', true)"),
        format!("SET search_path = {}", victim_home.to_uppercase().replacen("PGT_", "pgt_", 1)),
    ];
    for sql in &spellings {
        let outcome = client.simple_query(&format!("{sql}; SELECT body FROM notes")).await;
        if guard {
            let Err(e) = &outcome else { panic!("{sql} must be refused by pgtenant") };
            assert_eq!(sqlstate(e), "42501", "{sql}: {e}");
            assert!(message(e).contains("belongs to another tenant"), "{sql}: {e}");
            assert_eq!(value(&client, "SELECT current_schema()::text").await, own, "after {sql}");
        }
        assert_no_victim_rows(outcome_rows(outcome), sql);
        client.batch_execute("ROLLBACK; RESET search_path").await.unwrap();
        assert_no_victim_rows(outcome_rows(client.simple_query("SELECT body FROM notes").await), sql);
    }
    // The value as a bind parameter.
    let bound = client.query("SELECT set_config('search_path', $1, false)", &[&victim_home]).await;
    if guard {
        let e = bound.expect_err("a bound search_path naming another tenant's schema is refused");
        assert_eq!(sqlstate(&e), "42501", "{e}");
    }
    assert_no_victim_rows(outcome_rows(client.simple_query("SELECT body FROM notes").await), "bound");
    client.batch_execute("RESET search_path").await.unwrap();
    // Its own schema and ordinary ones may be named.
    client.batch_execute(&format!("SET search_path = {own}, public")).await.unwrap();
    assert_eq!(rows(&client, "SELECT body FROM notes").await, ["seed"]);
    // Names tell nothing of other tenants.
    let names = rows(
        &client,
        "SELECT nspname::text FROM pg_namespace UNION ALL SELECT datname::text FROM pg_database \
         UNION ALL SELECT rolname::text FROM pg_roles",
    )
    .await
    .join(" ");
    for slug in ["victim", "attacker", "hsbc", "barclays"] {
        assert!(!names.contains(slug), "{slug} appears in the catalog's names: {names}");
    }
    // A startup search_path naming the victim's schema is refused before the session starts.
    let url = format!("{}?options=-c%20search_path%3D{victim_home}", env.url("attacker_ro", LOGIN_PASSWORD));
    let e = tokio_postgres::connect(&url, NoTls)
        .await
        .err()
        .expect("a startup search_path naming another tenant's schema is refused");
    assert_eq!(sqlstate(&e), "42501", "{e}");
    // The victim's rows are whole.
    let victim_client = login(env, "victim", "readwrite").await;
    assert_eq!(rows(&victim_client, "SELECT body FROM notes ORDER BY id").await, ["seed", "victim-secret"]);
}

/// The rows of a simple query's outcome (none when it failed).
fn outcome_rows(outcome: Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error>) -> Vec<String> {
    outcome
        .map(|messages| {
            messages
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn assert_no_victim_rows(rows: Vec<String>, what: &str) {
    assert!(!rows.iter().any(|r| r == "victim-secret"), "{what} read the victim's rows: {rows:?}");
}

#[tokio::test]
async fn a_schema_tenant_cannot_reach_another_schema_in_either_pool_mode() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let env = env_with(&format!("schema-attacks-{mode:?}"), |c| c.pool.mode = mode).await;
        schema_attacks(&env, true).await;
    }
}

#[tokio::test]
async fn without_the_guard_the_database_alone_keeps_schema_tenants_apart() {
    let env = env_with("schema-attacks-no-guard", |c| c.proxy.statement_guard = false).await;
    schema_attacks(&env, false).await;
}

#[tokio::test]
async fn a_database_tenant_cannot_reach_another_database() {
    for (mode, guard) in [(PoolMode::Session, true), (PoolMode::Transaction, true), (PoolMode::Session, false)] {
        let env = env_with(&format!("database-attacks-{mode:?}-{guard}"), |c| {
            c.proxy.statement_guard = guard;
            c.pool.mode = mode;
        })
        .await;
        let admin = admin_api(&env);
        let victim = tenant_with_logins(&admin, "vault", "database").await;
        let attacker = tenant_with_logins(&admin, "thief", "database").await;
        let client = login(&env, "thief", "readwrite").await;
        // Through pgtenant the client names the served database only.
        let url = format!("postgres://thief_ro:{LOGIN_PASSWORD}@{}/{}", env.server.proxy_addr, home(&victim));
        let e = tokio_postgres::connect(&url, NoTls).await.err().expect("another database is refused");
        assert_eq!(sqlstate(&e), "3D000", "{e}");
        // Cross-database references do not exist in PostgreSQL.
        let (code, _) = refusal(&client, &format!("SELECT body FROM {}.public.notes", home(&victim))).await;
        assert_eq!(code, "0A000");
        let (code, _) = refusal(&client, "SELECT count(*) FROM pgtenant.tenants").await;
        assert_eq!(code, "42501");
        // No way out through an extension: the tenant's role may not install one that opens connections.
        for extension in ["dblink", "postgres_fdw"] {
            let (code, text) = refusal(&client, &format!("CREATE EXTENSION IF NOT EXISTS {extension}")).await;
            assert!(["42501", "0A000", "58P01"].contains(&code.as_str()), "{extension}: {code} {text}");
        }
        // The database's own privileges: the attacker's role cannot even connect to the victim's database.
        let direct = env.cluster.url(&home(&attacker), &home(&victim));
        let e = tokio_postgres::connect(&direct, NoTls).await.err().expect("CONNECT is the victim's alone");
        assert_eq!(sqlstate(&e), "42501", "{e}");
        let public_role = env.cluster.url("pgtenant_app", &home(&victim));
        let e = tokio_postgres::connect(&public_role, NoTls).await.err().expect("CONNECT is revoked from PUBLIC");
        assert_eq!(sqlstate(&e), "42501", "{e}");
        let victim_client = login(&env, "vault", "readwrite").await;
        assert_eq!(rows(&victim_client, "SELECT body FROM notes").await, ["seed"]);
    }
}

#[tokio::test]
async fn the_admin_api_refuses_what_the_models_do_not_support() {
    let env = env_with("refusals", |_| {}).await;
    let admin = admin_api(&env);
    tenant_with_logins(&admin, "solo", "schema").await;
    let cases = [
        (json!({"slug": "x1", "name": "x", "isolation": "cluster"}), 422),
        (json!({"slug": "x2", "name": "x", "isolation": "schema", "upstream": "nowhere"}), 422),
        (json!({"slug": "x3", "name": "x", "upstream": "Not A Name"}), 422),
        (json!({"slug": "x4", "name": "x", "isolation": "schema", "parent": "hsbc"}), 422),
        (json!({"slug": "x5", "name": "x", "parent": "solo"}), 422),
        (json!({"slug": "solo", "name": "again", "isolation": "database"}), 409),
    ];
    for (body, status) in cases {
        let reply = admin.post("/v1/tenants", &body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text());
        assert!(!reply.problem(status).is_empty());
    }
    for (patch, status) in [
        (json!({"parent": "hsbc"}), 422),
        (json!({"upstream": "elsewhere"}), 409),
        (json!({"status": "provisioning"}), 422),
        (json!({"isolation": "shared"}), 409),
        (json!({"isolation": "schema", "name": "still solo"}), 200),
    ] {
        let reply = admin.patch("/v1/tenants/solo", &patch).await;
        assert_eq!(reply.status, status, "{patch}: {}", reply.text());
    }
    let reply = admin.post("/v1/tenants/solo/provision", &json!({})).await;
    assert_eq!(reply.status, 409, "an active tenant is not provisioned again: {}", reply.text());
}

#[tokio::test]
async fn a_failed_provisioning_leaves_nothing_half_made_and_can_be_retried() {
    // A migration with a syntax error: 502 naming the file and the server's error.
    let broken = migrations_folder(
        "broken",
        &[("0001_notes.sql", NOTES), ("0002_broken.sql", "CREATE TABLE half (id int);\nCREATE TABLE oops (;")],
    );
    let env = TestEnv::start_with(|c| c.provisioning.migrations = Some(broken)).await;
    let admin = admin_api(&env);
    let superuser = env.superuser().await;
    for isolation in ["schema", "database"] {
        let slug = format!("broken-{isolation}");
        let reply = admin.post("/v1/tenants", &json!({"slug": slug, "name": "b", "isolation": isolation})).await;
        let detail = reply.problem(502);
        assert!(detail.contains("0002_broken.sql") && detail.contains("42601"), "{detail}");
        let tenant = admin.get(&format!("/v1/tenants/{slug}")).await.json();
        assert_eq!(tenant["status"], json!("provisioning_failed"), "{tenant}");
        let name = home(&tenant);
        let left: i64 = superuser
            .query_one(
                "SELECT (SELECT count(*) FROM pg_roles WHERE rolname LIKE $1 || '%') \
                      + (SELECT count(*) FROM pg_namespace WHERE nspname = $1) \
                      + (SELECT count(*) FROM pg_database WHERE datname = $1)",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "nothing of {name} is left");
        let login = admin
            .post(
                &format!("/v1/tenants/{slug}/logins"),
                &json!({"username": format!("u_{isolation}"), "password": LOGIN_PASSWORD}),
            )
            .await;
        assert_eq!(login.status, 201);
        let e = env.refused(&format!("u_{isolation}"), LOGIN_PASSWORD).await;
        assert_eq!(sqlstate(&e), "28000", "{e}");
        // Retrying fails the same way, and leaves nothing either.
        let retry = admin.post(&format!("/v1/tenants/{slug}/provision"), &json!({})).await;
        assert!(retry.problem(502).contains("0002_broken.sql"));
    }

    // A server that refuses CREATE DATABASE: a provisioning role without CREATEDB.
    superuser
        .batch_execute(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgt_test_no_createdb') THEN
                     CREATE ROLE pgt_test_no_createdb LOGIN CREATEROLE;
                 END IF;
             END $$;
             ALTER ROLE pgt_test_no_createdb NOCREATEDB;",
        )
        .await
        .unwrap();
    let folder = migrations_folder("retry", &[("0001_notes.sql", NOTES)]);
    let env = TestEnv::start_with(|c| {
        c.provisioning.migrations = Some(folder);
        c.upstream.admin_url = Some(c.control.url.replace("pgtenant_owner@", "pgt_test_no_createdb@"));
    })
    .await;
    let admin = admin_api(&env);
    let reply = admin.post("/v1/tenants", &json!({"slug": "later", "name": "later", "isolation": "database"})).await;
    let detail = reply.problem(502);
    assert!(detail.contains("create the tenant's database") && detail.contains("42501"), "{detail}");
    let tenant = admin.get("/v1/tenants/later").await.json();
    assert_eq!(tenant["status"], json!("provisioning_failed"));
    let roles: i64 = superuser
        .query_one("SELECT count(*) FROM pg_roles WHERE rolname LIKE $1 || '%'", &[&home(&tenant)])
        .await
        .unwrap()
        .get(0);
    assert_eq!(roles, 0, "the roles made before the refusal are dropped");
    // The operator fixes the server; the documented retry finishes the tenant.
    superuser.batch_execute("ALTER ROLE pgt_test_no_createdb CREATEDB").await.unwrap();
    let retried = admin.post("/v1/tenants/later/provision", &json!({})).await;
    assert_eq!(retried.status, 200, "{}", retried.text());
    assert_eq!((&retried.json()["status"], &retried.json()["migration_version"]), (&json!("active"), &json!(1)));
    let login =
        admin.post("/v1/tenants/later/logins", &json!({"username": "later_rw", "password": LOGIN_PASSWORD})).await;
    assert_eq!(login.status, 201);
    let client = env.try_connect("later_rw", LOGIN_PASSWORD).await.unwrap();
    assert_eq!(rows(&client, "SELECT body FROM notes").await, ["seed"]);
}

#[tokio::test]
async fn deleting_keeps_the_data_unless_asked_to_drop_it_and_the_same_id_adopts_it() {
    let env = env_with("delete", |_| {}).await;
    let admin = admin_api(&env);
    let superuser = env.superuser().await;
    let exists = |name: String| {
        let superuser = &superuser;
        async move {
            let row = superuser
                .query_one(
                    "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1), \
                            (SELECT rolcanlogin FROM pg_roles WHERE rolname = $1)",
                    &[&name],
                )
                .await
                .unwrap();
            (row.get::<_, bool>(0), row.get::<_, Option<bool>>(1))
        }
    };
    let tenant = tenant_with_logins(&admin, "keeper", "database").await;
    let id = tenant["id"].as_str().unwrap().to_owned();
    let client = login(&env, "keeper", "readwrite").await;
    client.batch_execute("INSERT INTO notes (body) VALUES ('kept')").await.unwrap();
    drop(client);
    assert_eq!(admin.delete("/v1/tenants/keeper").await.status, 204);
    assert_eq!(exists(home(&tenant)).await, (true, Some(false)), "data kept, role disabled");
    // A new tenant with the same id adopts what was kept.
    let again = admin
        .post("/v1/tenants", &json!({"slug": "keeper-again", "name": "k", "isolation": "database", "id": id}))
        .await;
    assert_eq!(again.status, 201, "{}", again.text());
    let login_reply = admin
        .post("/v1/tenants/keeper-again/logins", &json!({"username": "keeper2", "password": LOGIN_PASSWORD}))
        .await;
    assert_eq!(login_reply.status, 201);
    let client = env.try_connect("keeper2", LOGIN_PASSWORD).await.unwrap();
    assert_eq!(rows(&client, "SELECT body FROM notes ORDER BY id").await, ["seed", "kept"]);
    drop(client);
    assert_eq!(admin.delete("/v1/tenants/keeper-again?drop=true").await.status, 204);
    assert_eq!(exists(home(&tenant)).await, (false, None), "database and roles dropped");
}

/// `pgtenant migrate --tenants` with the env's catalog and `folder`.
fn migrate_tenants_command(env: &TestEnv, folder: &std::path::Path, jobs: &str) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pgtenant"));
    command
        .args(["migrate", "--tenants", "--jobs", jobs])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PGTENANT_ADMIN__TOKEN", "0123456789abcdef0123")
        .env("PGTENANT_UPSTREAM__URL", env.cluster.url("pgtenant_app", &env.database))
        .env("PGTENANT_CONTROL__URL", env.cluster.url("pgtenant_owner", &env.database))
        .env("PGTENANT_PROVISIONING__MIGRATIONS", folder)
        .current_dir(std::env::temp_dir());
    command
}

async fn run_to_the_end(mut command: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("run pgtenant")
}

#[tokio::test]
async fn a_hundred_tenants_each_reached_by_its_login_and_migrated_by_migrate_tenants_which_resumes() {
    let folder = migrations_folder("hundred", &[("0001_notes.sql", NOTES)]);
    let env = {
        let folder = folder.clone();
        TestEnv::start_with(move |c| {
            c.provisioning.migrations = Some(folder);
            c.pool.mode = PoolMode::Transaction;
            // A hundred tenant pools must not keep a hundred idle server connections.
            c.pool.idle_timeout_secs = 1;
        })
        .await
    };
    let admin = admin_api(&env);
    let mut created = tokio::task::JoinSet::new();
    for n in 0..100 {
        let admin = Admin::new(env.server.admin_addr, &env.config.admin.token);
        let isolation = if n % 2 == 0 { "schema" } else { "database" };
        created.spawn(async move {
            let slug = format!("t{n:03}");
            let reply = admin.post("/v1/tenants", &json!({"slug": slug, "name": slug, "isolation": isolation})).await;
            assert_eq!(reply.status, 201, "{}", reply.text());
            let body = json!({"username": username(&slug, "readwrite"), "password": LOGIN_PASSWORD});
            assert_eq!(admin.post(&format!("/v1/tenants/{slug}/logins"), &body).await.status, 201);
            (slug, reply.json())
        });
        // Four provisionings at a time.
        while created.len() >= 4 {
            created.join_next().await.unwrap().unwrap();
        }
    }
    while created.join_next().await.is_some() {}
    let tenants: Vec<Value> = admin.get("/v1/tenants").await.json().as_array().unwrap().clone();
    let ours: Vec<&Value> = tenants.iter().filter(|t| t["slug"].as_str().unwrap().starts_with('t')).collect();
    assert_eq!(ours.len(), 100);
    for tenant in &ours {
        let slug = tenant["slug"].as_str().unwrap();
        let client = login(&env, slug, "readwrite").await;
        assert_eq!(value(&client, "SELECT pgtenant.current_tenant()::text").await, tenant["id"].as_str().unwrap());
        client.batch_execute(&format!("INSERT INTO notes (body) VALUES ('{slug}')")).await.unwrap();
        assert_eq!(rows(&client, "SELECT body FROM notes ORDER BY id").await, ["seed", slug]);
    }

    // A new migration; one tenant is broken behind pgtenant's back.
    std::fs::write(folder.join("0002_tags.sql"), "ALTER TABLE notes ADD COLUMN tag text DEFAULT 'v2';").unwrap();
    let broken = ours.iter().find(|t| t["isolation"] == json!("schema")).unwrap();
    let superuser = env.superuser().await;
    superuser.batch_execute(&format!("ALTER TABLE {}.notes RENAME TO notes_moved", home(broken))).await.unwrap();

    // Interrupted after ten tenants.
    let mut first = migrate_tenants_command(&env, &folder, "1");
    first.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let mut child = first.spawn().expect("run pgtenant");
    let stderr = child.stderr.take().unwrap();
    let finished = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.starts_with("tenant "))
            .take(10)
            .count()
    })
    .await
    .unwrap();
    assert_eq!(finished, 10, "ten tenants reported before the interruption");
    child.kill().unwrap();
    child.wait().unwrap();
    let versions = |tenants: Vec<Value>| {
        tenants
            .iter()
            .filter(|t| t["slug"].as_str().unwrap().starts_with('t'))
            .map(|t| t["migration_version"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let after_kill = versions(admin.get("/v1/tenants").await.json().as_array().unwrap().clone());
    let at_two = after_kill.iter().filter(|v| **v == 2).count();
    assert!((9..100).contains(&at_two), "the interrupted run migrated some tenants, not all: {at_two}");

    // Resumed: every tenant but the broken one reaches 2; the run names it and exits 1.
    let out = run_to_the_end(migrate_tenants_command(&env, &folder, "4")).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("99 tenant(s) at the newest migration, 1 failed"), "{stdout}");
    assert!(stdout.contains(&format!("tenant {} failed", broken["slug"].as_str().unwrap())), "{stdout}");
    superuser.batch_execute(&format!("ALTER TABLE {}.notes_moved RENAME TO notes", home(broken))).await.unwrap();
    let out = run_to_the_end(migrate_tenants_command(&env, &folder, "4")).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let all = versions(admin.get("/v1/tenants").await.json().as_array().unwrap().clone());
    assert!(all.iter().all(|v| *v == 2), "{all:?}");
    let client = login(&env, broken["slug"].as_str().unwrap(), "readwrite").await;
    assert_eq!(rows(&client, "SELECT tag FROM notes ORDER BY id LIMIT 1").await, ["v2"]);
}

#[tokio::test]
async fn tenants_placed_on_a_second_server_are_routed_there_by_every_process() {
    let east = tokio::task::spawn_blocking(|| pgtenant::dev::cluster::Cluster::start(None)).await.unwrap().unwrap();
    let east_config = pgtenant::dev::prepare_database(&east, "app").await.unwrap();
    let east_superuser = connect_url(&east.url(pgtenant::dev::cluster::SUPERUSER, "app")).await;
    east_superuser
        .batch_execute(
            "CREATE TABLE public.whereami (name text); INSERT INTO public.whereami VALUES ('east');
             GRANT SELECT ON public.whereami TO pgtenant_readwrite, pgtenant_readonly;",
        )
        .await
        .unwrap();
    let down_url = format!("postgres://pgtenant_app@{}/app", refusing_addr());
    let folder = migrations_folder("placement", &[("0001_notes.sql", NOTES)]);
    let env = TestEnv::start_with(|c| {
        c.provisioning.migrations = Some(folder);
        c.upstreams.insert(
            "east".into(),
            pgtenant::config::PlacementUpstream {
                url: east_config.upstream.url.clone(),
                readonly_url: east_config.upstream.readonly_url.clone(),
                admin_url: Some(east_config.control.url.clone()),
                pool_size: Some(4),
            },
        );
        c.upstreams.insert(
            "down".into(),
            pgtenant::config::PlacementUpstream {
                url: down_url.clone(),
                readonly_url: None,
                admin_url: Some(down_url.clone()),
                pool_size: None,
            },
        );
    })
    .await;
    env.superuser()
        .await
        .batch_execute(
            "CREATE TABLE public.whereami (name text); INSERT INTO public.whereami VALUES ('default');
             GRANT SELECT ON public.whereami TO pgtenant_readwrite, pgtenant_readonly;",
        )
        .await
        .unwrap();
    // `migrate` installs pgtenant on east with the catalog's context key; the unreachable upstream fails it.
    let mut reachable = env.config.clone();
    reachable.upstreams.remove("down");
    let report = pgtenant::migrate::migrate_config(&reachable).await.unwrap();
    assert_eq!(report.placements, ["east"]);
    assert!(pgtenant::migrate::migrate_config(&env.config).await.is_err());

    let admin = admin_api(&env);
    let readyz = admin.get("/readyz").await;
    assert_eq!(readyz.status, 503);
    assert!(readyz.text().contains("upstream east: reachable") && readyz.text().contains("upstream down: unreachable"));

    // A second pgtenant process on the same catalog.
    let second = pgtenant::server::Server::start(&env.config).await.unwrap();
    let east_pool = second.state.routes.placements().iter().find(|p| p.name == "east").unwrap().readwrite.figures();
    assert_eq!(east_pool.max_size, 4, "upstreams.east.pool_size sizes its pools");
    let through_second =
        |user: &str| format!("postgres://{user}:{LOGIN_PASSWORD}@{}/{}", second.proxy_addr, env.database);
    for isolation in ["database", "schema"] {
        let slug = format!("east-{isolation}");
        let reply = admin
            .post("/v1/tenants", &json!({"slug": slug, "name": "e", "isolation": isolation, "upstream": "east"}))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        let tenant = reply.json();
        assert_eq!(tenant["upstream"], json!("east"));
        let body = json!({"username": username(&slug, "readwrite"), "password": LOGIN_PASSWORD});
        assert_eq!(admin.post(&format!("/v1/tenants/{slug}/logins"), &body).await.status, 201);
        // At once through the other process too.
        let client = connect_url(&through_second(&username(&slug, "readwrite"))).await;
        assert_eq!(rows(&client, "SELECT body FROM notes").await, ["seed"]);
        assert_eq!(value(&client, "SELECT pgtenant.current_tenant()::text").await, tenant["id"].as_str().unwrap());
        let on_east: bool = east_superuser
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1) OR EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)",
                &[&home(&tenant)],
            )
            .await
            .unwrap()
            .get(0);
        assert!(on_east, "{isolation} tenant made on east");
    }

    // A shared tree on east, whose database has no catalog: a parent's subtree
    // travels signed in its context (sql/0009's list path), verified by the
    // policy against the key; it shrinking ends the parent's open sessions.
    east_superuser
        .batch_execute(
            "CREATE TABLE public.ledger (n int, tenant_id uuid NOT NULL); SELECT pgtenant.enable_tenancy('public.ledger');",
        )
        .await
        .unwrap();
    let mut tree = Vec::new();
    for (slug, parent) in [("east-group", None), ("east-branch", Some("east-group"))] {
        let mut body = json!({"slug": slug, "name": slug, "upstream": "east"});
        if let Some(parent) = parent {
            body["parent"] = json!(parent);
        }
        let reply = admin.post("/v1/tenants", &body).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        let id = reply.json()["id"].as_str().unwrap().to_owned();
        east_superuser
            .execute("INSERT INTO public.ledger VALUES ($1, $2::text::uuid)", &[&(tree.len() as i32 + 1), &id])
            .await
            .unwrap();
        let body = json!({"username": username(slug, "readwrite"), "password": LOGIN_PASSWORD});
        assert_eq!(admin.post(&format!("/v1/tenants/{slug}/logins"), &body).await.status, 201);
        tree.push(id);
    }
    let ledger = "SELECT string_agg(n::text, ',' ORDER BY n) FROM ledger";
    let (group, group_watch) = connect_watched(&through_second(&username("east-group", "readwrite"))).await;
    assert_eq!(value(&group, ledger).await, "1,2");
    assert_eq!(value(&connect_url(&through_second(&username("east-branch", "readwrite"))).await, ledger).await, "2");
    assert_eq!(admin.patch("/v1/tenants/east-branch", &json!({"parent": null})).await.status, 200);
    let (code, message) = ended(group_watch).await;
    assert_eq!(code, "57P01");
    assert!(message.contains("hierarchy"), "{message}");
    let group = connect_url(&through_second(&username("east-group", "readwrite"))).await;
    assert_eq!(value(&group, ledger).await, "1");

    // An upstream that is down: provisioning is 503, a shared tenant's login 08006, the others unaffected.
    let reply = admin
        .post("/v1/tenants", &json!({"slug": "nowhere", "name": "n", "isolation": "database", "upstream": "down"}))
        .await;
    assert!(reply.problem(503).contains("cannot reach upstream down"));
    let reply = admin.post("/v1/tenants", &json!({"slug": "stranded", "name": "s", "upstream": "down"})).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let body = json!({"username": "stranded_rw", "password": LOGIN_PASSWORD});
    assert_eq!(admin.post("/v1/tenants/stranded/logins", &body).await.status, 201);
    let e = env.refused("stranded_rw", LOGIN_PASSWORD).await;
    assert_eq!(sqlstate(&e), "08006", "{e}");
    assert_eq!(value(&env.connect("hk_teller").await, "SELECT name FROM whereami").await, "default");

    // A placement change, only while suspended, reaches the other process live.
    let reply = admin.post("/v1/tenants", &json!({"slug": "mover", "name": "m"})).await;
    assert_eq!(reply.status, 201);
    let body = json!({"username": "mover_rw", "password": LOGIN_PASSWORD});
    assert_eq!(admin.post("/v1/tenants/mover/logins", &body).await.status, 201);
    let (before, watched) = {
        let (client, connection) = tokio_postgres::connect(&through_second("mover_rw"), NoTls).await.unwrap();
        (client, tokio::spawn(connection))
    };
    assert_eq!(value(&before, "SELECT name FROM whereami").await, "default");
    assert_eq!(admin.patch("/v1/tenants/mover", &json!({"upstream": "east"})).await.status, 409);
    assert_eq!(admin.patch("/v1/tenants/mover", &json!({"status": "suspended"})).await.status, 200);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), watched).await;
    assert!(ended.is_ok(), "the other process ends the suspended tenant's session");
    let moved = admin.patch("/v1/tenants/mover", &json!({"upstream": "east"})).await;
    assert_eq!(moved.status, 200, "{}", moved.text());
    assert_eq!(admin.patch("/v1/tenants/mover", &json!({"status": "active"})).await.status, 200);
    let after = connect_url(&through_second("mover_rw")).await;
    assert_eq!(value(&after, "SELECT name FROM whereami").await, "east");
    assert_eq!(value(&after, "SELECT pgtenant.current_tenant()::text").await, moved.json()["id"].as_str().unwrap());
    second.stop(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_database_tenant_starts_from_the_template_database() {
    let template = format!("tenant_template_{}", std::process::id());
    let cluster = cluster().await;
    let superuser = connect_url(&cluster.url(pgtenant::dev::cluster::SUPERUSER, "postgres")).await;
    superuser.batch_execute(&format!("CREATE DATABASE {template} OWNER pgtenant_owner")).await.unwrap();
    connect_url(&cluster.url(pgtenant::dev::cluster::SUPERUSER, &template))
        .await
        .batch_execute(
            "CREATE TABLE from_template (v text); INSERT INTO from_template VALUES ('templated');
                        GRANT SELECT ON from_template TO PUBLIC;",
        )
        .await
        .unwrap();
    let env = env_with("template", |c| c.provisioning.template = Some(template.clone())).await;
    let admin = admin_api(&env);
    tenant_with_logins(&admin, "cloned", "database").await;
    let client = login(&env, "cloned", "readwrite").await;
    assert_eq!(rows(&client, "SELECT v FROM from_template").await, ["templated"]);
    assert_eq!(rows(&client, "SELECT body FROM notes").await, ["seed"], "migrations still apply");
}

/// A connection whose notifications arrive on the returned queue.
async fn listening_login(
    env: &TestEnv,
    slug: &str,
) -> (Client, tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>) {
    use futures_util::StreamExt;
    let url = env.url(&username(slug, "readwrite"), LOGIN_PASSWORD);
    let (client, mut connection) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            let _ = tx.send(message);
        }
    });
    (client, rx)
}

async fn next_payload(rx: &mut tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>) -> String {
    loop {
        if let tokio_postgres::AsyncMessage::Notification(n) = next_message(rx).await {
            return format!("{}: {}", n.channel(), n.payload());
        }
    }
}

/// Attack, in both pool modes (transaction pooling: the listen hub of each
/// tenant's own pool): schema and database tenants on one channel name hear
/// only their own notifications, whatever the other sends or listens on.
#[tokio::test]
async fn listen_and_notify_stay_within_each_isolation_model() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let env = env_with(&format!("listen-{mode:?}"), |c| c.pool.mode = mode).await;
        let admin = admin_api(&env);
        for isolation in ["schema", "database"] {
            let (victim, thief) = (format!("quiet-{isolation}"), format!("loud-{isolation}"));
            tenant_with_logins(&admin, &victim, isolation).await;
            tenant_with_logins(&admin, &thief, isolation).await;
            let (victim_listener, mut victim_rx) = listening_login(&env, &victim).await;
            victim_listener.batch_execute("LISTEN jobs").await.unwrap();
            let (thief_listener, mut thief_rx) = listening_login(&env, &thief).await;
            thief_listener.batch_execute("LISTEN jobs").await.unwrap();
            let attacker = login(&env, &thief, "readwrite").await;
            attacker.batch_execute("NOTIFY jobs, 'forged'").await.unwrap();
            attacker.execute("SELECT pg_notify($1, 'bound')", &[&"jobs"]).await.unwrap();
            let victim_sender = login(&env, &victim, "readwrite").await;
            victim_sender.batch_execute("NOTIFY jobs, 'genuine'").await.unwrap();
            // Had the attacker's crossed over, they would come first.
            assert_eq!(next_payload(&mut victim_rx).await, "jobs: genuine", "{mode:?} {isolation}");
            assert_eq!(next_payload(&mut thief_rx).await, "jobs: forged", "{mode:?} {isolation}");
            assert_eq!(next_payload(&mut thief_rx).await, "jobs: bound", "{mode:?} {isolation}");
            assert_eq!(value(&attacker, "SELECT count(*) FROM pg_listening_channels()").await, "0");
        }
    }
}
