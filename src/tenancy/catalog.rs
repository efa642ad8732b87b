//! Reads and writes of the pgtenant catalog (`pgtenant.tenants`,
//! `pgtenant.logins`) through a pool of `control.url` connections.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use super::{Access, Isolation, TenantContext};

/// The visible field of a tenant's context, from its row `t`. On the
/// catalog's own database (the default upstream) the tenant alone: its
/// descendants are resolved there from `pgtenant.tenant_ancestry`, whatever
/// their number (sql/0009). A tenant placed elsewhere carries its subtree,
/// signed, since that database has no catalog to resolve it from.
macro_rules! visible_field {
    () => {
        "CASE WHEN t.upstream = 'default' THEN t.id::text ELSE pgtenant.tenant_subtree(t.id)::text END"
    };
}

/// Catalog access failed (the control database is unreachable or refused).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("control database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("control database query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("invalid control.url: {0}")]
    Config(String),
    #[error("{0}")]
    Invalid(String),
    #[error("pgtenant is shutting down")]
    ShuttingDown,
}

/// What authentication needs to know about a login.
#[derive(Debug, Clone)]
pub(crate) struct LoginRecord {
    pub username: String,
    /// SCRAM-SHA-256 verifier in PostgreSQL's text form.
    pub verifier: String,
    pub access: Access,
    pub enabled: bool,
    pub tenant_slug: String,
    pub tenant_active: bool,
    pub context: TenantContext,
    pub isolation: Isolation,
    /// The upstream the tenant is placed on.
    pub upstream: String,
    /// Set when the login presented a verified token instead of a password.
    pub token: Option<TokenLogin>,
    /// A service login: no tenant; its sessions carry the "no tenant" context.
    pub service: bool,
    /// The tenant's limits from the catalog (the admin API's), over the config's.
    pub limits: crate::config::TenantOverrides,
}

/// What a token login carries beyond a password login.
#[derive(Debug, Clone)]
pub(crate) struct TokenLogin {
    /// The token's verified subject.
    pub subject: Option<String>,
    /// When the token expires.
    pub expires_at: std::time::SystemTime,
}

/// A tenant's `limits` column (sql/0012; none for a service login).
fn parse_limits(text: Option<String>) -> Result<crate::config::TenantOverrides, CatalogError> {
    match text {
        None => Ok(Default::default()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| CatalogError::Invalid(format!("a tenant's limits cannot be read ({e}): {text}"))),
    }
}

/// A pool of connections to the control database.
#[derive(Clone)]
pub struct Catalog {
    pool: Pool,
}

impl Catalog {
    /// Builds the pool; connections are opened lazily.
    pub fn new(url: &str, size: usize) -> Result<Catalog, CatalogError> {
        let (pg, tls) = crate::pg_client::parse_url(url).map_err(CatalogError::Config)?;
        let manager = Manager::from_config(
            pg,
            crate::pg_client::make_connect(&tls),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| CatalogError::Config(e.to_string()))?;
        Ok(Catalog { pool })
    }

    /// Looks a login up by username, with its tenant and the tenant's visible field.
    pub(crate) async fn find_login(&self, username: &str) -> Result<Option<LoginRecord>, CatalogError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(concat!(
                "SELECT l.verifier, l.access, l.enabled, t.id::text, t.slug, t.status = 'active', ",
                visible_field!(),
                ", t.isolation, t.upstream, l.service, t.limits::text \
                   FROM pgtenant.logins l LEFT JOIN pgtenant.tenants t ON t.id = l.tenant_id \
                  WHERE l.username = $1"
            ))
            .await?;
        let Some(row) = client.query_opt(&statement, &[&username]).await? else {
            return Ok(None);
        };
        let access: String = row.get(1);
        let access = Access::parse(&access)
            .ok_or_else(|| CatalogError::Invalid(format!("login {username} has access {access:?}")))?;
        let service: bool = row.get(9);
        // A service login has no tenant row: the "no tenant" context, on the default server.
        let (context, tenant_slug, tenant_active, isolation, upstream) = if service {
            (
                TenantContext::no_tenant(),
                String::new(),
                true,
                Isolation::Shared,
                crate::config::DEFAULT_UPSTREAM.to_owned(),
            )
        } else {
            let context = TenantContext::of(row.get(3), without_braces(row.get(6)));
            let isolation = Isolation::parse(row.get(7))
                .ok_or_else(|| CatalogError::Invalid(format!("login {username}'s tenant has an unknown isolation")))?;
            (context, row.get(4), row.get(5), isolation, row.get(8))
        };
        Ok(Some(LoginRecord {
            username: username.to_owned(),
            verifier: row.get(0),
            access,
            enabled: row.get(2),
            context,
            tenant_slug,
            tenant_active,
            isolation,
            upstream,
            token: None,
            service,
            limits: parse_limits(row.get(10))?,
        }))
    }

    /// The tenant a verified token names (its id or slug), as a login record
    /// of `username` with the token's access: `None` when no such tenant exists.
    pub(crate) async fn find_token_tenant(
        &self,
        username: &str,
        tenant: &str,
        access: Access,
        token: TokenLogin,
    ) -> Result<Option<LoginRecord>, CatalogError> {
        let client = self.pool.get().await?;
        const BY_ID: &str = concat!(
            "SELECT t.id::text, t.slug, t.status = 'active', ",
            visible_field!(),
            ", t.isolation, t.upstream, t.limits::text FROM pgtenant.tenants t WHERE t.id = $1::text::uuid"
        );
        const BY_SLUG: &str = concat!(
            "SELECT t.id::text, t.slug, t.status = 'active', ",
            visible_field!(),
            ", t.isolation, t.upstream, t.limits::text FROM pgtenant.tenants t WHERE t.slug = $1"
        );
        let statement = client.prepare_cached(if super::validate::is_uuid(tenant) { BY_ID } else { BY_SLUG }).await?;
        let Some(row) = client.query_opt(&statement, &[&tenant]).await? else {
            return Ok(None);
        };
        Ok(Some(LoginRecord {
            username: username.to_owned(),
            verifier: String::new(),
            access,
            enabled: true,
            context: TenantContext::of(row.get(0), without_braces(row.get(3))),
            tenant_slug: row.get(1),
            tenant_active: row.get(2),
            isolation: Isolation::parse(row.get(4))
                .ok_or_else(|| CatalogError::Invalid(format!("tenant {tenant} has an unknown isolation")))?,
            upstream: row.get(5),
            token: Some(token),
            service: false,
            limits: parse_limits(row.get(6))?,
        }))
    }

    /// Creates or replaces a login with a fresh SCRAM-SHA-256 verifier of `password`.
    pub async fn upsert_login(
        &self,
        username: &str,
        tenant_slug: &str,
        password: &str,
        access: Access,
    ) -> Result<(), CatalogError> {
        let verifier = crate::blocking::scram_verifier(password).await.ok_or(CatalogError::ShuttingDown)?;
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                "INSERT INTO pgtenant.logins (username, tenant_id, verifier, access) \
                 SELECT $1, id, $3, $4 FROM pgtenant.tenants WHERE slug = $2 \
                 ON CONFLICT (username) DO UPDATE \
                    SET tenant_id = EXCLUDED.tenant_id, verifier = EXCLUDED.verifier, \
                        access = EXCLUDED.access, enabled = true",
                &[&username, &tenant_slug, &verifier, &access.as_str()],
            )
            .await?;
        if changed == 0 {
            return Err(CatalogError::Invalid(format!("no tenant with slug {tenant_slug}")));
        }
        Ok(())
    }

    /// The key pgtenant signs tenant contexts with (see sql/0002).
    pub(crate) async fn context_key(&self) -> Result<Vec<u8>, CatalogError> {
        let client = self.pool.get().await?;
        let row = client.query_opt("SELECT key FROM pgtenant.context_key WHERE id = 1", &[]).await?;
        row.map(|r| r.get(0))
            .ok_or_else(|| CatalogError::Invalid("no context key in the catalog; run `pgtenant migrate`".into()))
    }

    /// Fails unless every migration this binary knows has been applied: it
    /// calls the SQL functions of the newest one.
    pub(crate) async fn check_migrated(&self) -> Result<(), CatalogError> {
        let client = self.pool.get().await?;
        let applied: Option<i32> =
            client.query_one("SELECT max(version) FROM pgtenant.schema_migrations", &[]).await?.get(0);
        let needed = crate::migrate::MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
        match applied {
            Some(version) if version >= needed => Ok(()),
            applied => Err(CatalogError::Invalid(format!(
                "the catalog is at migration {}, this pgtenant needs {needed}; run `pgtenant migrate`",
                applied.unwrap_or(0)
            ))),
        }
    }

    /// A pooled connection, for the admin reads and writes beside this file.
    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object, CatalogError> {
        Ok(self.pool.get().await?)
    }

    /// Succeeds when the catalog answers a query.
    pub(crate) async fn ping(&self) -> Result<(), CatalogError> {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }
}

/// The visible field as the context carries it: the tenant's id, or
/// `pgtenant.tenant_subtree()`'s array text without its braces.
fn without_braces(array_text: String) -> String {
    array_text.trim_matches(|c| c == '{' || c == '}').to_owned()
}
