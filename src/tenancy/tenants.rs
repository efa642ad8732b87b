//! Tenant reads and writes of the admin API, on the catalog's pool.

use serde::{Deserialize, Serialize};
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::catalog::Catalog;
use super::store::{db_failure, rfc3339, StoreError};
use super::validate::{self, Invalid};
use super::Isolation;

/// Whether a tenant's logins may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TenantStatus {
    /// Logins connect as usual.
    Active,
    /// New connections are refused (28000) and open sessions end.
    Suspended,
    /// A schema or database tenant whose schema or database is being made.
    Provisioning,
    /// Making its schema or database failed; `POST /v1/tenants/{t}/provision` retries.
    ProvisioningFailed,
}

impl TenantStatus {
    /// The catalog's text for this status.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Provisioning => "provisioning",
            TenantStatus::ProvisioningFailed => "provisioning_failed",
        }
    }

    fn parse(text: &str) -> TenantStatus {
        match text {
            "active" => TenantStatus::Active,
            "provisioning" => TenantStatus::Provisioning,
            "provisioning_failed" => TenantStatus::ProvisioningFailed,
            // Anything else keeps logins out.
            _ => TenantStatus::Suspended,
        }
    }
}

/// A tenant as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Tenant {
    /// The tenant's uuid; rows carry it in their tenant column.
    #[schema(example = "a0000000-0000-4000-8000-000000000001")]
    pub id: String,
    /// Unique short name, `[a-z0-9][a-z0-9-]{0,62}`.
    #[schema(example = "hsbc")]
    pub slug: String,
    /// Display name.
    #[schema(example = "HSBC Holdings")]
    pub name: String,
    /// The parent tenant's id; null for a root.
    pub parent_id: Option<String>,
    /// `active`, `suspended`, `provisioning` or `provisioning_failed`.
    pub(crate) status: TenantStatus,
    /// How the tenant's rows are kept apart: `shared` (row-level security in
    /// shared tables), `schema` or `database` (one of its own).
    pub isolation: Isolation,
    /// The upstream server the tenant is placed on (`default`: `[upstream]`).
    #[schema(example = "default")]
    pub upstream: String,
    /// The newest tenant migration applied (schema and database tenants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration_version: Option<i32>,
    /// Limits set through the admin API; they win over the config file's
    /// `[tenants.<slug>]`, which win over `[pool]`.
    pub limits: crate::config::TenantOverrides,
    /// RFC 3339, UTC.
    #[schema(example = "2025-01-01T12:00:00.000000Z")]
    pub created_at: String,
    /// RFC 3339, UTC.
    #[schema(example = "2025-01-01T12:00:00.000000Z")]
    pub updated_at: String,
}

/// A tenant to create.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub slug: String,
    pub name: String,
    /// Parent by slug or id.
    pub parent: Option<String>,
    /// Keeps an existing uuid when adopting a database's tenant.
    pub id: Option<String>,
    pub isolation: Isolation,
    /// Placement; `None`: the default upstream.
    pub upstream: Option<String>,
}

/// Changes to a tenant; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub(crate) struct TenantChanges {
    pub name: Option<String>,
    /// `Some(None)` makes the tenant a root.
    pub parent: Option<Option<String>>,
    pub status: Option<TenantStatus>,
    /// A new placement (only while the tenant is suspended).
    pub upstream: Option<String>,
    /// Limits to set (`Some`) or clear (`None`), by key; others stay.
    pub limits: Option<LimitsChange>,
}

/// A change to a tenant's limits: `Some(value)` sets a key, `None` clears it.
#[derive(Debug, Clone, Default)]
pub(crate) struct LimitsChange {
    pub pool_mode: Option<Option<crate::config::PoolMode>>,
    pub statement_timeout_ms: Option<Option<u64>>,
    pub max_server_connections: Option<Option<usize>>,
    pub max_client_connections: Option<Option<usize>>,
}

/// Largest statement timeout the API accepts, as PostgreSQL's own (ms).
const MAX_TIMEOUT_MS: u64 = i32::MAX as u64;
/// Largest connection count the API accepts.
const MAX_CONNECTIONS: usize = 1_000_000;

impl LimitsChange {
    /// The keys to set (a JSON object) and the keys to clear.
    fn split(&self) -> Result<(serde_json::Value, Vec<String>), Invalid> {
        let mut set = serde_json::Map::new();
        let mut clear = Vec::new();
        let mut put = |key: &str, value: Option<serde_json::Value>| match value {
            Some(value) => {
                set.insert(key.to_owned(), value);
            }
            None => clear.push(key.to_owned()),
        };
        if let Some(mode) = &self.pool_mode {
            put("pool_mode", mode.map(|m| serde_json::json!(m)));
        }
        if let Some(timeout) = self.statement_timeout_ms {
            if timeout.is_some_and(|t| t > MAX_TIMEOUT_MS) {
                return Err(Invalid::new("limits.statement_timeout_ms", format!("is at most {MAX_TIMEOUT_MS}")));
            }
            put("statement_timeout_ms", timeout.map(|t| serde_json::json!(t)));
        }
        for (key, field, value) in [
            ("max_server_connections", "limits.max_server_connections", self.max_server_connections),
            ("max_client_connections", "limits.max_client_connections", self.max_client_connections),
        ] {
            if let Some(value) = value {
                if value.is_some_and(|n| n > MAX_CONNECTIONS) {
                    return Err(Invalid::new(field, format!("is at most {MAX_CONNECTIONS}")));
                }
                put(key, value.map(|n| serde_json::json!(n)));
            }
        }
        Ok((serde_json::Value::Object(set), clear))
    }
}

const COLUMNS: &str = concat!(
    "id::text, slug, name, parent_id::text, status, isolation, upstream, migration_version, ",
    rfc3339!("created_at"),
    ", ",
    rfc3339!("updated_at"),
    ", limits::text"
);

fn tenant_from_row(row: &Row) -> Tenant {
    let status: String = row.get(4);
    Tenant {
        id: row.get(0),
        slug: row.get(1),
        name: row.get(2),
        parent_id: row.get(3),
        status: TenantStatus::parse(&status),
        isolation: Isolation::parse(row.get(5)).unwrap_or(Isolation::Shared),
        upstream: row.get(6),
        migration_version: row.get(7),
        created_at: row.get(8),
        updated_at: row.get(9),
        // The column's CHECK (sql/0012) admits only what this reads.
        limits: serde_json::from_str(row.get(10)).unwrap_or_default(),
    }
}

/// Maps a failed tenant write onto what the caller did wrong.
fn write_error(e: tokio_postgres::Error) -> StoreError {
    match db_failure(&e) {
        Some((code, constraint)) if *code == SqlState::UNIQUE_VIOLATION => match constraint {
            Some("tenants_pkey") => StoreError::Conflict("a tenant with this id exists".into()),
            _ => StoreError::Conflict("a tenant with this slug exists".into()),
        },
        // The parent trigger raises without a constraint; the row CHECK forbids self-parenting.
        Some((code, None | Some("tenants_check"))) if *code == SqlState::CHECK_VIOLATION => {
            StoreError::Conflict("the new parent would make the tenant its own ancestor".into())
        }
        Some((code, Some(constraint))) if *code == SqlState::CHECK_VIOLATION => {
            StoreError::Invalid(Invalid::new("tenant", format!("violates {constraint}")))
        }
        Some((code, _)) if *code == SqlState::FOREIGN_KEY_VIOLATION => {
            StoreError::Conflict("the tenant has child tenants; delete or move them first".into())
        }
        _ => e.into(),
    }
}

impl Catalog {
    /// The tenant named by `key` (its id or its slug), if any.
    pub(crate) async fn find_tenant(&self, key: &str) -> Result<Option<Tenant>, StoreError> {
        let client = self.client().await?;
        let row = if validate::is_uuid(key) {
            let sql = format!("SELECT {COLUMNS} FROM pgtenant.tenants WHERE id = $1::text::uuid");
            client.query_opt(&sql, &[&key]).await?
        } else {
            let sql = format!("SELECT {COLUMNS} FROM pgtenant.tenants WHERE slug = $1");
            client.query_opt(&sql, &[&key]).await?
        };
        Ok(row.as_ref().map(tenant_from_row))
    }

    /// The tenant named by `key`, or NotFound.
    pub(crate) async fn get_tenant(&self, key: &str) -> Result<Tenant, StoreError> {
        self.find_tenant(key).await?.ok_or_else(|| StoreError::NotFound(format!("no tenant {key:?}")))
    }

    /// Tenants ordered by slug; only the children of `parent` when given.
    pub(crate) async fn list_tenants(&self, parent: Option<&str>) -> Result<Vec<Tenant>, StoreError> {
        let parent_id = match parent {
            Some(key) => Some(self.get_tenant(key).await?.id),
            None => None,
        };
        let client = self.client().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM pgtenant.tenants \
              WHERE $1::text IS NULL OR parent_id = $1::text::uuid ORDER BY slug"
        );
        let rows = client.query(&sql, &[&parent_id]).await?;
        Ok(rows.iter().map(tenant_from_row).collect())
    }

    /// Creates a tenant; the parent must exist.
    pub async fn create_tenant(&self, new: &NewTenant) -> Result<Tenant, StoreError> {
        validate::slug(&new.slug)?;
        validate::name(&new.name)?;
        if let Some(id) = &new.id {
            if !validate::is_uuid(id) {
                return Err(Invalid::new("id", "must be a uuid").into());
            }
            if id.eq_ignore_ascii_case(super::NO_TENANT) {
                return Err(Invalid::new("id", "the nil uuid means \"no tenant\" and cannot name one").into());
            }
        }
        let upstream = new.upstream.as_deref().unwrap_or(crate::config::DEFAULT_UPSTREAM);
        if !crate::config::is_upstream_name(upstream) {
            return Err(Invalid::new("upstream", "is not an upstream name").into());
        }
        let parent_id = match &new.parent {
            Some(_) if new.isolation != Isolation::Shared => {
                return Err(Invalid::new(
                    "parent",
                    "schema and database tenants have no parent: a parent's sessions read shared tables, where \
                     their rows are not",
                )
                .into())
            }
            Some(key) => Some(self.shared_parent_id(key).await?),
            None => None,
        };
        // A schema or database tenant waits for its provisioning before any login may connect.
        let status = match new.isolation {
            Isolation::Shared => TenantStatus::Active,
            _ => TenantStatus::Provisioning,
        };
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO pgtenant.tenants (id, slug, name, parent_id, isolation, upstream, status) \
             VALUES (coalesce($1::text::uuid, gen_random_uuid()), $2, $3, $4::text::uuid, $5, $6, $7) \
             RETURNING {COLUMNS}"
        );
        let row = client
            .query_one(
                &sql,
                &[&new.id, &new.slug, &new.name, &parent_id, &new.isolation.as_str(), &upstream, &status.as_str()],
            )
            .await
            .map_err(write_error)?;
        Ok(tenant_from_row(&row))
    }

    /// Applies `changes` to the tenant named by `key`.
    pub(crate) async fn update_tenant(&self, key: &str, changes: &TenantChanges) -> Result<Tenant, StoreError> {
        if let Some(name) = &changes.name {
            validate::name(name)?;
        }
        let current = self.get_tenant(key).await?;
        let id = current.id.clone();
        if matches!(changes.parent, Some(Some(_))) && current.isolation != Isolation::Shared {
            return Err(Invalid::new("parent", "schema and database tenants have no parent").into());
        }
        if let Some(status) = changes.status {
            if !matches!(status, TenantStatus::Active | TenantStatus::Suspended) {
                return Err(Invalid::new("status", "may be set to active or suspended only").into());
            }
            if matches!(current.status, TenantStatus::Provisioning | TenantStatus::ProvisioningFailed) {
                return Err(StoreError::Conflict(format!(
                    "tenant {key:?} is {}; POST /v1/tenants/{key}/provision finishes it",
                    current.status.as_str()
                )));
            }
        }
        if let Some(upstream) = &changes.upstream {
            if !crate::config::is_upstream_name(upstream) {
                return Err(Invalid::new("upstream", "is not an upstream name").into());
            }
            let suspended_after = changes.status.unwrap_or(current.status) == TenantStatus::Suspended;
            if *upstream != current.upstream && !(current.status == TenantStatus::Suspended && suspended_after) {
                return Err(StoreError::Conflict(
                    "a tenant moves to another upstream only while it is suspended (and after its data was moved)"
                        .into(),
                ));
            }
        }
        let new_parent = match &changes.parent {
            Some(Some(parent)) => Some(Some(self.shared_parent_id(parent).await?)),
            Some(None) => Some(None),
            None => None,
        };
        let (set_limits, clear_limits) = match &changes.limits {
            Some(limits) => limits.split()?,
            None => (serde_json::json!({}), Vec::new()),
        };
        let client = self.client().await?;
        // Limits change key by key in the statement itself, so two changes
        // to different keys at once both stay.
        let sql = format!(
            "UPDATE pgtenant.tenants \
                SET name = coalesce($2, name), \
                    parent_id = CASE WHEN $3 THEN $4::text::uuid ELSE parent_id END, \
                    status = coalesce($5, status), \
                    upstream = coalesce($6, upstream), \
                    limits = (limits || $7::text::jsonb) - $8::text[] \
              WHERE id = $1::text::uuid RETURNING {COLUMNS}"
        );
        let row = client
            .query_opt(
                &sql,
                &[
                    &id,
                    &changes.name,
                    &new_parent.is_some(),
                    &new_parent.flatten(),
                    &changes.status.map(TenantStatus::as_str),
                    &changes.upstream,
                    &set_limits.to_string(),
                    &clear_limits,
                ],
            )
            .await
            .map_err(write_error)?;
        row.as_ref().map(tenant_from_row).ok_or_else(|| StoreError::NotFound(format!("no tenant {key:?}")))
    }

    /// Deletes the tenant named by `key` (its logins go with it); returns it as it was.
    pub(crate) async fn delete_tenant(&self, key: &str) -> Result<Tenant, StoreError> {
        let tenant = self.get_tenant(key).await?;
        let client = self.client().await?;
        let deleted = client
            .execute("DELETE FROM pgtenant.tenants WHERE id = $1::text::uuid", &[&tenant.id])
            .await
            .map_err(write_error)?;
        if deleted == 0 {
            return Err(StoreError::NotFound(format!("no tenant {key:?}")));
        }
        Ok(tenant)
    }

    /// The id of a tenant named as a parent; a missing one, or a schema or
    /// database tenant, is the caller's mistake (422).
    async fn shared_parent_id(&self, key: &str) -> Result<String, StoreError> {
        let parent =
            self.find_tenant(key).await?.ok_or_else(|| Invalid::new("parent", format!("no tenant {key:?}")))?;
        if parent.isolation != Isolation::Shared {
            return Err(Invalid::new(
                "parent",
                format!("tenant {key:?} is a {} tenant; only shared tenants have children", parent.isolation.as_str()),
            )
            .into());
        }
        Ok(parent.id)
    }

    /// Records how a provisioning or migration ended: `Some(version)` makes
    /// the tenant active at that version, `None` marks it failed.
    pub async fn finish_provisioning(&self, tenant_id: &str, version: Option<i32>) -> Result<Tenant, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "UPDATE pgtenant.tenants \
                SET status = CASE WHEN $2::int IS NULL THEN 'provisioning_failed' \
                                  WHEN status IN ('provisioning', 'provisioning_failed') THEN 'active' ELSE status END, \
                    migration_version = coalesce($2::int, migration_version) \
              WHERE id = $1::text::uuid RETURNING {COLUMNS}"
        );
        let row = client.query_opt(&sql, &[&tenant_id, &version]).await.map_err(write_error)?;
        row.as_ref().map(tenant_from_row).ok_or_else(|| StoreError::NotFound(format!("no tenant {tenant_id:?}")))
    }

    /// Marks a failed tenant as being provisioned again; Conflict unless it failed.
    pub(crate) async fn restart_provisioning(&self, key: &str) -> Result<Tenant, StoreError> {
        let tenant = self.get_tenant(key).await?;
        if tenant.status != TenantStatus::ProvisioningFailed {
            return Err(StoreError::Conflict(format!(
                "tenant {key:?} is {}; only a tenant whose provisioning failed is provisioned again",
                tenant.status.as_str()
            )));
        }
        let client = self.client().await?;
        client
            .execute(
                "UPDATE pgtenant.tenants SET status = 'provisioning' WHERE id = $1::text::uuid AND status = 'provisioning_failed'",
                &[&tenant.id],
            )
            .await?;
        Ok(Tenant { status: TenantStatus::Provisioning, ..tenant })
    }

    /// Schema and database tenants, for `migrate --tenants`.
    pub(crate) async fn isolated_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM pgtenant.tenants WHERE isolation <> 'shared' \
                AND status NOT IN ('provisioning', 'provisioning_failed') ORDER BY slug"
        );
        Ok(client.query(&sql, &[]).await?.iter().map(tenant_from_row).collect())
    }
}
