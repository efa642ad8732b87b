//! `pgtenant migrate`: applies the versioned SQL in `sql/` in order, once
//! each, and grants the session group roles to the upstream login roles.

use anyhow::{bail, Context};
use tokio_postgres::Client;

use crate::access::Access;
use crate::config::Config;
use crate::pg_client::{connect, describe};
use crate::quote::quote_ident;

/// One versioned migration, embedded in the binary.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in the order they apply.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "catalog", sql: include_str!("../sql/0001_catalog.sql") },
    Migration { version: 2, name: "protected_context", sql: include_str!("../sql/0002_protected_context.sql") },
    Migration { version: 3, name: "catalog_events", sql: include_str!("../sql/0003_catalog_events.sql") },
    Migration { version: 4, name: "verified_tenant", sql: include_str!("../sql/0004_verified_tenant.sql") },
    Migration { version: 5, name: "isolation_models", sql: include_str!("../sql/0005_isolation_models.sql") },
    Migration { version: 6, name: "tenant_migrator_role", sql: include_str!("../sql/0006_tenant_migrator_role.sql") },
    Migration { version: 7, name: "service_logins", sql: include_str!("../sql/0007_service_logins.sql") },
    Migration { version: 8, name: "assumed_tenants", sql: include_str!("../sql/0008_assumed_tenants.sql") },
    Migration { version: 9, name: "tenant_hierarchy", sql: include_str!("../sql/0009_tenant_hierarchy.sql") },
    Migration { version: 10, name: "tenant_notify", sql: include_str!("../sql/0010_tenant_notify.sql") },
    Migration { version: 11, name: "native_descendants", sql: include_str!("../sql/0011_native_descendants.sql") },
    Migration { version: 12, name: "tenant_limits", sql: include_str!("../sql/0012_tenant_limits.sql") },
    Migration { version: 13, name: "proxy_processes", sql: include_str!("../sql/0013_proxy_processes.sql") },
    Migration { version: 14, name: "native_policy", sql: include_str!("../sql/0014_native_policy.sql") },
    Migration { version: 15, name: "strict_context", sql: include_str!("../sql/0015_strict_context.sql") },
    Migration { version: 16, name: "standby_fallback", sql: include_str!("../sql/0016_standby_fallback.sql") },
];

/// Database-level hardening `migrate` applies on every run.
pub const DATABASE_HARDENING_SQL: &str = include_str!("../sql/hardening/database.sql");

/// Cluster-level hardening a superuser applies (see the file's header).
pub(crate) const CLUSTER_HARDENING_SQL: &str = include_str!("../sql/hardening/cluster.sql");

/// The fintech demo of `pgtenant dev`.
pub(crate) const DEMO_SQL: &str = include_str!("../sql/demo/fintech.sql");

/// Serialises concurrent `migrate` runs on one database.
const MIGRATE_LOCK_KEY: i64 = 0x7067_7465_6e61_6e74; // "pgtenant"

/// What a run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MigrateReport {
    pub applied: Vec<i32>,
    pub granted: Vec<String>,
    /// The `[upstreams.<name>]` databases brought up to date.
    pub placements: Vec<String>,
    /// Whether policies check descendants with the C extension pgtenant_native.
    pub native_descendants: bool,
    /// Whether the verified tenant lives in pgtenant_native's settings (strict context).
    pub strict_context: bool,
}

/// Runs `migrate` for a config: the control URL and the users of both
/// upstream URLs; then, for each `[upstreams.<name>]`, the same schema in its
/// database (through its admin_url) with the catalog's context key.
pub async fn migrate_config(config: &Config) -> anyhow::Result<MigrateReport> {
    let placements = config.placements();
    let mut report = migrate(&config.control.url, &session_users(&placements[0])?).await?;
    let others = &placements[1..];
    if others.is_empty() {
        return Ok(report);
    }
    let control = connect(&config.control.url).await.context("cannot connect through control.url")?;
    let key: Vec<u8> = control.query_one("SELECT key FROM pgtenant.context_key WHERE id = 1", &[]).await?.get(0);
    for placement in others {
        let admin_url = placement
            .admin_url
            .as_deref()
            .with_context(|| format!("upstreams.{}.admin_url is needed to install pgtenant there", placement.name))?;
        let client = connect(admin_url)
            .await
            .with_context(|| format!("cannot connect through upstreams.{}.admin_url", placement.name))?;
        let placed = install_runtime(&client, &key, &session_users(placement)?)
            .await
            .with_context(|| format!("upstream {}", placement.name))?;
        report.granted.extend(placed.granted.into_iter().map(|g| format!("{g} on upstream {}", placement.name)));
        report.placements.push(placement.name.clone());
    }
    Ok(report)
}

/// The session login roles of a placement, with the access each serves.
fn session_users(placement: &crate::config::Placement) -> anyhow::Result<Vec<(String, Access)>> {
    let url_user = |url: &str| crate::pg_client::url_user(url).map_err(|e| anyhow::anyhow!(e));
    let mut users = vec![(url_user(&placement.url)?, Access::Readwrite)];
    if let Some(url) = &placement.readonly_url {
        users.push((url_user(url)?, Access::Readonly));
    }
    Ok(users)
}

/// Connects to `control_url` and brings the schema up to date; grants the
/// session group role for each `(login role, access)`.
pub(crate) async fn migrate(control_url: &str, session_users: &[(String, Access)]) -> anyhow::Result<MigrateReport> {
    let client = connect(control_url).await.context("cannot connect through control.url")?;
    let owner: String = client.query_one("SELECT current_user::text", &[]).await?.get(0);
    for (user, _) in session_users {
        if *user == owner {
            bail!("the upstream role {user} must not be the catalog owner (control.url)");
        }
    }
    migrate_locked(&client, session_users).await
}

async fn migrate_locked(client: &Client, session_users: &[(String, Access)]) -> anyhow::Result<MigrateReport> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK_KEY]).await?;
    let result = apply(client, session_users).await;
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK_KEY]).await;
    result
}

/// Installs pgtenant's schema in a tenant's own database (through a
/// provisioning connection to it) with the catalog's context key, so the
/// context exchange and `pgtenant.current_tenant()` work there as in the
/// catalog database. Its catalog tables stay empty.
pub(crate) async fn install_runtime(
    client: &Client,
    context_key: &[u8],
    session_users: &[(String, Access)],
) -> anyhow::Result<MigrateReport> {
    let report = migrate_locked(client, session_users).await?;
    let ipad: Vec<u8> = context_key.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = context_key.iter().map(|b| b ^ 0x5c).collect();
    client
        .execute(
            "UPDATE pgtenant.context_key SET key = $1, ipad = $2, opad = $3 WHERE id = 1",
            &[&context_key, &ipad, &opad],
        )
        .await
        .map_err(|e| anyhow::anyhow!(describe(&e)))
        .context("cannot install the context key")?;
    Ok(report)
}

async fn apply(client: &Client, session_users: &[(String, Access)]) -> anyhow::Result<MigrateReport> {
    client
        .batch_execute(
            "SET client_min_messages = warning;
             CREATE SCHEMA IF NOT EXISTS pgtenant;
             CREATE TABLE IF NOT EXISTS pgtenant.schema_migrations (
                 version     integer PRIMARY KEY,
                 name        text NOT NULL,
                 applied_at  timestamptz NOT NULL DEFAULT now()
             );",
        )
        .await
        .context("cannot create the pgtenant schema")?;
    let applied: Vec<i32> = client
        .query("SELECT version FROM pgtenant.schema_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut report = MigrateReport::default();
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let sql = format!(
            "BEGIN;\n{}\n;INSERT INTO pgtenant.schema_migrations (version, name) VALUES ({}, '{}');\nCOMMIT;",
            migration.sql, migration.version, migration.name
        );
        if let Err(e) = client.batch_execute(&sql).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(anyhow::anyhow!(describe(&e)))
                .with_context(|| format!("migration {:04}_{} failed", migration.version, migration.name));
        }
        tracing::info!(version = migration.version, name = migration.name, "migration applied");
        report.applied.push(migration.version);
    }
    client
        .batch_execute(DATABASE_HARDENING_SQL)
        .await
        .map_err(|e| anyhow::anyhow!(describe(&e)))
        .context("database hardening failed")?;
    (report.native_descendants, report.strict_context) = use_native_extension(client).await?;
    for (user, access) in session_users {
        let group = match access {
            Access::Readwrite => "pgtenant_readwrite",
            Access::Readonly => "pgtenant_readonly",
        };
        let is_member: bool = client
            .query_one("SELECT pg_has_role($1, $2, 'MEMBER')", &[user, &group])
            .await
            .with_context(|| format!("role {user} does not exist"))?
            .get(0);
        if !is_member {
            client
                .batch_execute(&format!("GRANT {group} TO {}", quote_ident(user)))
                .await
                .map_err(|e| anyhow::anyhow!(describe(&e)))
                .with_context(|| format!("cannot grant {group} to {user}"))?;
            report.granted.push(format!("{group} to {user}"));
        }
    }
    Ok(report)
}

/// Installs the optional C extension pgtenant_native when the server has it
/// (`make -C extension install`) and points the policies' per-row descendant
/// check at it; without it, or when it cannot be installed, they keep the
/// PL/pgSQL check, which gives the same answers more slowly.
async fn use_native_extension(client: &Client) -> anyhow::Result<(bool, bool)> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pgtenant_native'),
                    EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'pgtenant_native')",
            &[],
        )
        .await?;
    let (installed, available): (bool, bool) = (row.get(0), row.get(1));
    let native = installed
        || (available
            && match client.batch_execute("CREATE EXTENSION pgtenant_native SCHEMA pgtenant").await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %describe(&e), "the server has pgtenant_native but it cannot be installed: parents with many descendants use the slower PL/pgSQL check");
                    false
                }
            });
    client
        .execute("SELECT pgtenant.use_native_descendants($1)", &[&native])
        .await
        .map_err(|e| anyhow::anyhow!(describe(&e)))
        .context("cannot choose the descendant check")?;
    // 1.1 added the policy's first arm; an older build installed on the server keeps PL/pgSQL for it.
    if native {
        if let Err(e) = client.batch_execute("ALTER EXTENSION pgtenant_native UPDATE").await {
            tracing::warn!(error = %describe(&e), "pgtenant_native could not be updated");
        }
    }
    let native_policy: bool = client
        .query_one(
            "SELECT $1::bool AND EXISTS (SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                                          WHERE n.nspname = 'pgtenant' AND p.proname = 'native_policy_tenants')",
            &[&native],
        )
        .await?
        .get(0);
    client
        .execute("SELECT pgtenant.use_native_policy($1)", &[&native_policy])
        .await
        .map_err(|e| anyhow::anyhow!(describe(&e)))
        .context("cannot choose the policy's first arm")?;
    // Last: in strict mode it points the policy functions at its own readers.
    let strict: bool = client
        .query_one(
            "SELECT CASE WHEN $1::bool AND EXISTS (SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                                                    WHERE n.nspname = 'pgtenant' AND p.proname = 'native_install_context')
                         THEN pg_catalog.has_function_privilege('pgtenant.native_install_context(uuid, bigint, uuid[])', 'EXECUTE')
                         ELSE false END",
            &[&native],
        )
        .await?
        .get(0);
    if native && !strict {
        tracing::warn!("pgtenant_native 1.2 is not installed by the catalog owner: the verified tenant stays in sequences (no strict context)");
    }
    client
        .execute("SELECT pgtenant.use_strict_context($1)", &[&strict])
        .await
        .map_err(|e| anyhow::anyhow!(describe(&e)))
        .context("cannot choose where the verified tenant lives")?;
    tracing::info!(native, native_policy, strict, "descendant check, policy functions and context store chosen");
    Ok((native, strict))
}

/// Loads the fintech demo unless it is already there. Returns whether it loaded.
pub async fn load_demo(control_url: &str) -> anyhow::Result<bool> {
    let client = connect(control_url).await?;
    let present: bool =
        client.query_one("SELECT EXISTS (SELECT 1 FROM pgtenant.tenants WHERE slug = 'hsbc')", &[]).await?.get(0);
    if present {
        return Ok(false);
    }
    client
        .batch_execute(&format!("BEGIN;\n{DEMO_SQL}\n;COMMIT;"))
        .await
        .map_err(|e| anyhow::anyhow!(describe(&e)))
        .context("loading the demo failed")?;
    Ok(true)
}

/// Applies [`CLUSTER_HARDENING_SQL`] through a superuser connection to the
/// pgtenant database, granting the revoked functions back to `owner`.
pub(crate) async fn apply_cluster_hardening(superuser: &Client, owner: &str) -> anyhow::Result<()> {
    let sql = CLUSTER_HARDENING_SQL
        .replace(":'owner'", &crate::quote::quote_literal(owner))
        .replace(":\"owner\"", &quote_ident(owner));
    superuser.batch_execute(&sql).await.map_err(|e| anyhow::anyhow!(describe(&e))).context("cluster hardening failed")
}
