//! Schema and database tenants: the upstream roles, schema or database that
//! make them, and their tenant migrations.
//!
//! Every name comes from the tenant id (`pgt_<32 hex>`), never the slug:
//! `pg_roles`, `pg_namespace` and `pg_database` are readable by every role.
//! A tenant has two LOGIN roles, `pgt_<hex>` (readwrite: uses and creates in
//! its schema or database) and `pgt_<hex>_ro` (reads only). Their passwords
//! are derived from the context key (HMAC with a label of their own), so
//! nothing new is stored and only the catalog owner — who alone can read the
//! key — and pgtenant know them; the server gets a SCRAM verifier, never the
//! password. The schema or database belongs to the provisioning role; the
//! tenant roles get privileges on it and nothing else: CONNECT on a tenant
//! database is revoked from PUBLIC, and no role but the tenant's has USAGE on
//! its schema. So the database alone keeps tenants apart, guard or no guard.
//!
//! Migrations run as the tenant's readwrite role, each in its own
//! transaction that also records its version in the tenant's database
//! (`pgtenant.record_tenant_migration`), so an interrupted run resumes at the
//! first migration not recorded. An advisory lock per tenant, taken on the
//! provisioning connection, keeps two processes from migrating one tenant.

use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_postgres::Client;

use super::Isolation;
use crate::config::Placement;
use crate::quote::{quote_ident, quote_literal};

/// Attempts at dropping what a failed provisioning made.
const UNDO_ATTEMPTS: u32 = 4;

/// One versioned tenant migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TenantMigration {
    pub version: i32,
    /// The file name, as errors and logs name it.
    pub file: String,
    pub sql: String,
}

impl TenantMigration {
    /// The migrations of a folder: every `NNNN_name.sql`, by version. Other
    /// files are ignored; two files of one version are an error.
    pub(crate) fn load_folder(folder: &Path) -> Result<Vec<TenantMigration>, String> {
        let entries = std::fs::read_dir(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        let mut migrations = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", folder.display()))?;
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = file.strip_suffix(".sql") else { continue };
            let Some((number, _name)) = stem.split_once('_') else { continue };
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let version: i32 = number.parse().map_err(|_| format!("{file}: version out of range"))?;
            if version == 0 {
                return Err(format!("{file}: versions start at 1"));
            }
            let sql = std::fs::read_to_string(entry.path()).map_err(|e| format!("{file}: {e}"))?;
            migrations.push(TenantMigration { version, file, sql });
        }
        migrations.sort_by_key(|m| m.version);
        if let Some(pair) = migrations.windows(2).find(|w| w[0].version == w[1].version) {
            return Err(format!("{} and {} have the same version", pair[0].file, pair[1].file));
        }
        Ok(migrations)
    }
}

/// The upstream objects of a schema or database tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TenantObjects {
    /// Readwrite role; also the name of the tenant's schema or database.
    pub role: String,
    pub readonly_role: String,
}

impl TenantObjects {
    pub(crate) fn of(tenant_id: &str) -> TenantObjects {
        let hex: String = tenant_id.chars().filter(char::is_ascii_hexdigit).collect::<String>().to_ascii_lowercase();
        let role = format!("pgt_{hex}");
        TenantObjects { readonly_role: format!("{role}_ro"), role }
    }

    /// The schema (schema tenants) or database (database tenants).
    pub(crate) fn home(&self) -> &str {
        &self.role
    }

    /// The role a login of `access` uses.
    pub(crate) fn role_for(&self, access: super::Access) -> &str {
        match access {
            super::Access::Readwrite => &self.role,
            super::Access::Readonly => &self.readonly_role,
        }
    }
}

/// The password of a tenant role: a keyed hash of its name.
pub(crate) fn role_password(context_key: &[u8], role: &str) -> String {
    // Any key length is valid for HMAC.
    let mut mac = Hmac::<Sha256>::new_from_slice(context_key).expect("HMAC takes keys of any length");
    mac.update(b"pgtenant tenant role password\0");
    mac.update(role.as_bytes());
    crate::hex::hex(&mac.finalize().into_bytes())
}

/// Why provisioning or migrating a tenant did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("upstream {upstream} is not configured on this pgtenant")]
    UnknownUpstream { upstream: String },
    #[error("upstream {upstream} has no admin_url to provision tenants with")]
    NoAdmin { upstream: String },
    #[error("cannot reach upstream {upstream}: {detail}")]
    Unreachable { upstream: String, detail: String },
    #[error("upstream {upstream} refused to {step}: {detail}")]
    Refused { upstream: String, step: &'static str, detail: String },
    #[error("tenant migration {file} failed: {detail}")]
    Migration { file: String, detail: String },
    #[error("another process is migrating this tenant")]
    Busy,
}

/// Makes, migrates and removes schema and database tenants.
#[derive(Clone)]
pub struct Provisioner {
    catalog: super::catalog::Catalog,
    placements: Vec<Placement>,
    migrations: std::sync::Arc<Vec<TenantMigration>>,
    template: Option<String>,
    context_key: Vec<u8>,
    connect_timeout: Duration,
}

impl Provisioner {
    pub(crate) fn new(
        catalog: super::catalog::Catalog,
        placements: Vec<Placement>,
        migrations: Vec<TenantMigration>,
        template: Option<String>,
        context_key: Vec<u8>,
        connect_timeout: Duration,
    ) -> Provisioner {
        Provisioner { catalog, placements, migrations: migrations.into(), template, context_key, connect_timeout }
    }

    /// Whether `name` is a configured upstream.
    pub(crate) fn knows_upstream(&self, name: &str) -> bool {
        self.placements.iter().any(|p| p.name == name)
    }

    /// Makes the tenant's roles and its schema or database, and applies every
    /// migration; returns the version reached. Safe to run again on a tenant
    /// made in part (a retry) or kept by a delete (an adoption).
    /// On failure, what this call made is dropped again (what was there
    /// before — a kept schema or database being adopted — stays).
    pub async fn provision(
        &self,
        tenant_id: &str,
        isolation: Isolation,
        upstream: &str,
    ) -> Result<i32, ProvisionError> {
        if isolation == Isolation::Shared {
            return Ok(0);
        }
        let mut made = Made::default();
        let result = self.provision_steps(tenant_id, isolation, upstream, &mut made).await;
        if result.is_err() && made.roles + usize::from(made.home) > 0 {
            // The failed migration's server session may still be exiting (a
            // terminated backend holds its locks until it is gone): try again
            // a few times before leaving the objects for a retry or a delete.
            for attempt in 1..=UNDO_ATTEMPTS {
                match self.undo(tenant_id, isolation, upstream, &made).await {
                    Ok(()) => break,
                    Err(e) if attempt == UNDO_ATTEMPTS => {
                        tracing::warn!(error = %e, tenant = tenant_id, "could not drop a failed provisioning's objects")
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, attempt, "dropping a failed provisioning's objects failed; again");
                        tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
                    }
                }
            }
        }
        result
    }

    /// Drops what a failed provisioning made.
    async fn undo(
        &self,
        tenant_id: &str,
        isolation: Isolation,
        upstream: &str,
        made: &Made,
    ) -> Result<(), ProvisionError> {
        if made.home {
            // Everything: the roles cannot be older than a home this call made.
            return self.remove(tenant_id, isolation, upstream, true).await;
        }
        if made.roles == 2 {
            return self.remove(tenant_id, Isolation::Shared, upstream, true).await;
        }
        Ok(())
    }

    async fn provision_steps(
        &self,
        tenant_id: &str,
        isolation: Isolation,
        upstream: &str,
        made: &mut Made,
    ) -> Result<i32, ProvisionError> {
        let placement = self.placement(upstream)?;
        let objects = TenantObjects::of(tenant_id);
        let admin = self.admin(placement, None).await?;
        let refused = |step| move |e: tokio_postgres::Error| refusal(upstream, step, &e);
        for role in [&objects.role, &objects.readonly_role] {
            let exists = admin
                .query_opt("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", &[role])
                .await
                .map_err(refused("look up roles"))?;
            let verifier = crate::blocking::scram_verifier(&role_password(&self.context_key, role)).await.ok_or(
                ProvisionError::Refused {
                    upstream: upstream.into(),
                    step: "create roles",
                    detail: "pgtenant is shutting down".into(),
                },
            )?;
            let statement = if exists.is_none() {
                format!(
                    "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS \
                     IN ROLE pgtenant_context PASSWORD {}",
                    quote_ident(role),
                    quote_literal(&verifier)
                )
            } else {
                format!("ALTER ROLE {} LOGIN PASSWORD {}", quote_ident(role), quote_literal(&verifier))
            };
            admin.batch_execute(&statement).await.map_err(refused("create the tenant's roles"))?;
            made.roles += usize::from(exists.is_none());
        }
        let (rw, ro) = (quote_ident(&objects.role), quote_ident(&objects.readonly_role));
        match isolation {
            Isolation::Shared => {}
            Isolation::Schema => {
                if placement.name != crate::config::DEFAULT_UPSTREAM {
                    // The catalog database has pgtenant's schema; another server's database gets it here.
                    crate::migrate::install_runtime(&admin, &self.context_key, &[]).await.map_err(|e| {
                        ProvisionError::Refused {
                            upstream: upstream.into(),
                            step: "install pgtenant's context functions",
                            detail: format!("{e:#}"),
                        }
                    })?;
                }
                let home = quote_ident(objects.home());
                let exists = admin
                    .query_opt("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1", &[&objects.home()])
                    .await
                    .map_err(refused("look up schemas"))?;
                if exists.is_none() {
                    admin
                        .batch_execute(&format!("CREATE SCHEMA {home}"))
                        .await
                        .map_err(refused("create the tenant's schema"))?;
                    made.home = true;
                }
                admin
                    .batch_execute(&format!(
                        "REVOKE ALL ON SCHEMA {home} FROM PUBLIC;
                         GRANT USAGE, CREATE ON SCHEMA {home} TO {rw};
                         GRANT USAGE ON SCHEMA {home} TO {ro};
                         GRANT pgtenant_migrator TO {rw};"
                    ))
                    .await
                    .map_err(refused("create the tenant's schema"))?;
            }
            Isolation::Database => {
                let home = quote_ident(objects.home());
                let exists = admin
                    .query_opt("SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1", &[&objects.home()])
                    .await
                    .map_err(refused("look up databases"))?;
                if exists.is_none() {
                    let template =
                        self.template.as_deref().map(|t| format!(" TEMPLATE {}", quote_ident(t))).unwrap_or_default();
                    admin
                        .batch_execute(&format!("CREATE DATABASE {home}{template}"))
                        .await
                        .map_err(refused("create the tenant's database"))?;
                    made.home = true;
                }
                admin
                    .batch_execute(&format!(
                        "REVOKE ALL ON DATABASE {home} FROM PUBLIC;
                         GRANT CONNECT, CREATE ON DATABASE {home} TO {rw};
                         GRANT CONNECT ON DATABASE {home} TO {ro};"
                    ))
                    .await
                    .map_err(refused("grant the tenant's database"))?;
                let inside = self.admin(placement, Some(objects.home())).await?;
                crate::migrate::install_runtime(&inside, &self.context_key, &[]).await.map_err(|e| {
                    ProvisionError::Refused {
                        upstream: upstream.into(),
                        step: "install pgtenant's context functions in the tenant's database",
                        detail: format!("{e:#}"),
                    }
                })?;
                inside
                    .batch_execute(&format!(
                        "REVOKE CREATE ON SCHEMA public FROM PUBLIC;
                         GRANT USAGE, CREATE ON SCHEMA public TO {rw};
                         GRANT USAGE ON SCHEMA public TO {ro};
                         GRANT pgtenant_migrator TO {rw};"
                    ))
                    .await
                    .map_err(refused("grant the tenant's database"))?;
            }
        }
        self.migrate(tenant_id, isolation, upstream).await
    }

    /// Applies the tenant's pending migrations; returns the version reached.
    pub(crate) async fn migrate(
        &self,
        tenant_id: &str,
        isolation: Isolation,
        upstream: &str,
    ) -> Result<i32, ProvisionError> {
        let placement = self.placement(upstream)?;
        let objects = TenantObjects::of(tenant_id);
        let refused = |step| move |e: tokio_postgres::Error| refusal(upstream, step, &e);
        // The lock lives in the catalog, which every process shares, on the
        // catalog owner's connection: the hardening leaves advisory locks to it.
        let control = self
            .catalog
            .client()
            .await
            .map_err(|e| ProvisionError::Unreachable { upstream: "control".into(), detail: e.to_string() })?;
        let lock_key = tenant_lock_key(&objects.role);
        let locked: bool = control
            .query_one("SELECT pg_catalog.pg_try_advisory_lock($1)", &[&lock_key])
            .await
            .map_err(refused("lock the tenant for migration"))?
            .get(0);
        if !locked {
            return Err(ProvisionError::Busy);
        }
        let result = self.apply_migrations(placement, &objects, isolation).await;
        if control.execute("SELECT pg_catalog.pg_advisory_unlock($1)", &[&lock_key]).await.is_err() {
            // A session lock must not outlive its holder on a pooled connection.
            drop(deadpool_postgres::Object::take(control));
        }
        result
    }

    async fn apply_migrations(
        &self,
        placement: &Placement,
        objects: &TenantObjects,
        isolation: Isolation,
    ) -> Result<i32, ProvisionError> {
        let upstream = placement.name.as_str();
        let refused = |step| move |e: tokio_postgres::Error| refusal(upstream, step, &e);
        let database = match isolation {
            Isolation::Database => Some(objects.home()),
            _ => None,
        };
        let tenant = self.connect_as(placement, &objects.role, database).await?;
        let schema = match isolation {
            Isolation::Schema => quote_ident(objects.home()),
            _ => "public".to_owned(),
        };
        if isolation == Isolation::Schema {
            tenant
                .execute("SELECT pg_catalog.set_config('search_path', $1, false)", &[&schema])
                .await
                .map_err(refused("set the tenant's search_path"))?;
        }
        tenant
            .batch_execute(&format!(
                "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {ro};
                 ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON SEQUENCES TO {ro};",
                ro = quote_ident(&objects.readonly_role)
            ))
            .await
            .map_err(refused("grant the readonly role"))?;
        let applied: i32 = tenant
            .query_one("SELECT pgtenant.tenant_migration_version()", &[])
            .await
            .map_err(refused("read the tenant's migration version"))?
            .get(0);
        let mut version = applied;
        for migration in self.migrations.iter().filter(|m| m.version > applied) {
            let script = format!(
                "BEGIN;\n{}\n;SELECT pgtenant.record_tenant_migration({});\nCOMMIT;",
                migration.sql, migration.version
            );
            if let Err(e) = tenant.batch_execute(&script).await {
                let _ = tenant.batch_execute("ROLLBACK").await;
                return Err(ProvisionError::Migration {
                    file: migration.file.clone(),
                    detail: crate::pg_client::describe(&e),
                });
            }
            version = migration.version;
        }
        Ok(version)
    }

    /// Removes a tenant's upstream objects. Without `drop_data` its roles
    /// lose LOGIN and its schema or database stays (adopt it again with a new
    /// tenant of the same id); with it, the schema or database and the roles go.
    pub(crate) async fn remove(
        &self,
        tenant_id: &str,
        isolation: Isolation,
        upstream: &str,
        drop_data: bool,
    ) -> Result<(), ProvisionError> {
        let placement = self.placement(upstream)?;
        let objects = TenantObjects::of(tenant_id);
        let admin = self.admin(placement, None).await?;
        let refused = |step| move |e: tokio_postgres::Error| refusal(upstream, step, &e);
        let (rw, ro) = (quote_ident(&objects.role), quote_ident(&objects.readonly_role));
        let roles: Vec<String> = admin
            .query(
                "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname = ANY($1)",
                &[&vec![objects.role.clone(), objects.readonly_role.clone()]],
            )
            .await
            .map_err(refused("look up roles"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // Open server sessions of the tenant end now, as its client sessions do.
        let terminate =
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = ANY($1)";
        if !drop_data {
            for role in &roles {
                admin
                    .batch_execute(&format!("ALTER ROLE {} NOLOGIN", quote_ident(role)))
                    .await
                    .map_err(refused("disable the tenant's roles"))?;
            }
            let _ = admin.execute(terminate, &[&roles]).await;
            return Ok(());
        }
        let home = quote_ident(objects.home());
        match isolation {
            Isolation::Database => {
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {home} WITH (FORCE)"))
                    .await
                    .map_err(refused("drop the tenant's database"))?;
            }
            Isolation::Schema => {
                let _ = admin.execute(terminate, &[&roles]).await;
                admin
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {home} CASCADE"))
                    .await
                    .map_err(refused("drop the tenant's schema"))?;
            }
            Isolation::Shared => {}
        }
        if !roles.is_empty() {
            let _ = admin.execute(terminate, &[&roles]).await;
            // DROP OWNED needs the roles' privileges; a CREATEROLE role may grant them to itself.
            admin
                .batch_execute(&format!(
                    "GRANT {rw}, {ro} TO CURRENT_USER; DROP OWNED BY {rw}, {ro}; DROP ROLE {rw}, {ro};"
                ))
                .await
                .map_err(refused("drop the tenant's roles"))?;
        }
        Ok(())
    }

    fn placement(&self, upstream: &str) -> Result<&Placement, ProvisionError> {
        self.placements
            .iter()
            .find(|p| p.name == upstream)
            .ok_or_else(|| ProvisionError::UnknownUpstream { upstream: upstream.into() })
    }

    /// A provisioning connection to the upstream's tenant database (`None`:
    /// the database its sessions use).
    async fn admin(&self, placement: &Placement, database: Option<&str>) -> Result<Client, ProvisionError> {
        self.connect(placement, None, database).await
    }

    /// A connection as a tenant role, to its database (`None`: the database
    /// the upstream's sessions use).
    async fn connect_as(
        &self,
        placement: &Placement,
        role: &str,
        database: Option<&str>,
    ) -> Result<Client, ProvisionError> {
        let password = role_password(&self.context_key, role);
        self.connect(placement, Some((role, &password)), database).await
    }

    /// A connection through the placement's admin_url, as `login` when given,
    /// to `database` (`None`: the database the upstream's sessions use).
    async fn connect(
        &self,
        placement: &Placement,
        login: Option<(&str, &str)>,
        database: Option<&str>,
    ) -> Result<Client, ProvisionError> {
        let upstream = placement.name.as_str();
        let url =
            placement.admin_url.as_deref().ok_or_else(|| ProvisionError::NoAdmin { upstream: upstream.into() })?;
        let session_database = crate::pg_client::url_database(&placement.url);
        let database = database.or(session_database.as_deref());
        let unreachable = |detail: String| ProvisionError::Unreachable { upstream: upstream.into(), detail };
        let (mut config, tls) = crate::pg_client::parse_url(url).map_err(unreachable)?;
        config.connect_timeout(self.connect_timeout);
        if let Some((user, password)) = login {
            config.user(user).password(password);
        }
        if let Some(database) = database {
            config.dbname(database);
        }
        crate::pg_client::connect_config(&config, &tls, self.connect_timeout).await.map_err(|e| {
            if e.is_refusal() {
                ProvisionError::Refused {
                    upstream: upstream.into(),
                    step: "open a provisioning session",
                    detail: e.to_string(),
                }
            } else {
                unreachable(e.to_string())
            }
        })
    }
}

/// What one provisioning call created (and must drop if it fails).
#[derive(Debug, Default)]
struct Made {
    roles: usize,
    home: bool,
}

fn refusal(upstream: &str, step: &'static str, e: &tokio_postgres::Error) -> ProvisionError {
    ProvisionError::Refused { upstream: upstream.into(), step, detail: crate::pg_client::describe(e) }
}

/// The advisory lock key of a tenant's migrations (distinct from `migrate`'s).
fn tenant_lock_key(role: &str) -> i64 {
    use sha2::Digest;
    let digest = Sha256::digest(format!("pgtenant tenant migrations\0{role}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setting_rules::is_tenant_object_name;

    #[test]
    fn names_come_from_the_id_alone() {
        let objects = TenantObjects::of("A0000000-0000-4000-8000-000000000001");
        assert_eq!(objects.role, "pgt_a0000000000040008000000000000001");
        assert_eq!(objects.readonly_role, "pgt_a0000000000040008000000000000001_ro");
        assert!(is_tenant_object_name(&objects.role) && is_tenant_object_name(&objects.readonly_role));
        assert!(!is_tenant_object_name("pgt_public") && !is_tenant_object_name("public"));
    }

    #[test]
    fn role_passwords_differ_per_role_and_key() {
        let a = role_password(b"key one", "pgt_a");
        assert_eq!(a.len(), 64);
        assert_ne!(a, role_password(b"key one", "pgt_b"));
        assert_ne!(a, role_password(b"key two", "pgt_a"));
    }

    #[test]
    fn a_folder_gives_migrations_by_version() {
        let dir = std::env::temp_dir().join(format!("pgtenant-migrations-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0002_more.sql"), "SELECT 2").unwrap();
        std::fs::write(dir.join("0001_init.sql"), "SELECT 1").unwrap();
        std::fs::write(dir.join("README.md"), "not a migration").unwrap();
        let loaded = TenantMigration::load_folder(&dir).unwrap();
        assert_eq!(
            loaded.iter().map(|m| (m.version, m.file.as_str())).collect::<Vec<_>>(),
            [(1, "0001_init.sql"), (2, "0002_more.sql")]
        );
        std::fs::write(dir.join("2_again.sql"), "SELECT 2").unwrap();
        let error = TenantMigration::load_folder(&dir).unwrap_err();
        assert!(error.contains("same version"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
