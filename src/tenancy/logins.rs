//! Login reads and writes of the admin API. Passwords become SCRAM-SHA-256
//! verifiers here, each with a fresh salt, and never leave this file.

use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::catalog::{Catalog, CatalogError};
use super::store::{db_failure, rfc3339, StoreError};
use super::validate;
use super::Access;

/// A login as the admin API shows it: never its password or verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct Login {
    /// Unique across tenants, `[a-z0-9_][a-z0-9_.-]{0,62}`.
    #[schema(example = "hk_teller")]
    pub username: String,
    /// The login's tenant; null for a service login.
    pub tenant_id: Option<String>,
    /// A service login (an app server's): no tenant, no tenant rows until it
    /// presents a verified token.
    pub service: bool,
    /// `readwrite` or `readonly`.
    pub access: Access,
    /// A disabled login cannot connect.
    pub enabled: bool,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// Changes to a login; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoginChanges {
    pub password: Option<String>,
    pub access: Option<Access>,
    pub enabled: Option<bool>,
}

const COLUMNS: &str = concat!("username, tenant_id::text, access, enabled, ", rfc3339!("created_at"), ", service");

fn login_from_row(row: &Row) -> Login {
    let access: String = row.get(2);
    Login {
        username: row.get(0),
        tenant_id: row.get(1),
        access: Access::parse(&access).unwrap_or(Access::Readonly),
        enabled: row.get(3),
        created_at: row.get(4),
        service: row.get(5),
    }
}

fn not_found(username: &str) -> StoreError {
    StoreError::NotFound(format!("no login {username:?}"))
}

/// A verifier with a fresh random salt (computed off the async workers).
async fn verifier(password: &str) -> Result<String, StoreError> {
    crate::blocking::scram_verifier(password).await.ok_or(StoreError::Unavailable(CatalogError::ShuttingDown))
}

impl Catalog {
    /// Creates a login of the tenant named by `tenant` (id or slug).
    pub(crate) async fn create_login(
        &self,
        tenant: &str,
        username: &str,
        password: &str,
        access: Access,
    ) -> Result<Login, StoreError> {
        validate::username(username)?;
        validate::password(password)?;
        let tenant_id = self.get_tenant(tenant).await?.id;
        let verifier = verifier(password).await?;
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO pgtenant.logins (username, tenant_id, verifier, access) \
             VALUES ($1, $2::text::uuid, $3, $4) RETURNING {COLUMNS}"
        );
        let row = client.query_one(&sql, &[&username, &tenant_id, &verifier, &access.as_str()]).await.map_err(|e| {
            match db_failure(&e) {
                Some((code, _)) if *code == SqlState::UNIQUE_VIOLATION => {
                    StoreError::Conflict(format!("a login {username:?} exists"))
                }
                Some((code, _)) if *code == SqlState::FOREIGN_KEY_VIOLATION => {
                    StoreError::NotFound(format!("no tenant {tenant:?}"))
                }
                _ => e.into(),
            }
        })?;
        Ok(login_from_row(&row))
    }

    /// Creates a service login: no tenant, readwrite.
    pub(crate) async fn create_service_login(&self, username: &str, password: &str) -> Result<Login, StoreError> {
        validate::username(username)?;
        validate::password(password)?;
        let verifier = verifier(password).await?;
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO pgtenant.logins (username, tenant_id, verifier, access, service) \
             VALUES ($1, NULL, $2, 'readwrite', true) RETURNING {COLUMNS}"
        );
        let row = client.query_one(&sql, &[&username, &verifier]).await.map_err(|e| match db_failure(&e) {
            Some((code, _)) if *code == SqlState::UNIQUE_VIOLATION => {
                StoreError::Conflict(format!("a login {username:?} exists"))
            }
            _ => e.into(),
        })?;
        Ok(login_from_row(&row))
    }

    /// The logins of the tenant named by `tenant`, ordered by username.
    pub(crate) async fn list_logins(&self, tenant: &str) -> Result<Vec<Login>, StoreError> {
        let tenant_id = self.get_tenant(tenant).await?.id;
        let client = self.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM pgtenant.logins WHERE tenant_id = $1::text::uuid ORDER BY username");
        let rows = client.query(&sql, &[&tenant_id]).await?;
        Ok(rows.iter().map(login_from_row).collect())
    }

    /// One login by username.
    pub(crate) async fn get_login(&self, username: &str) -> Result<Login, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM pgtenant.logins WHERE username = $1");
        let row = client.query_opt(&sql, &[&username]).await?;
        row.as_ref().map(login_from_row).ok_or_else(|| not_found(username))
    }

    /// Applies `changes` to a login; a new password gets a new verifier.
    pub(crate) async fn update_login(&self, username: &str, changes: &LoginChanges) -> Result<Login, StoreError> {
        if let Some(password) = &changes.password {
            validate::password(password)?;
        }
        let verifier = match changes.password.as_deref() {
            Some(password) => Some(verifier(password).await?),
            None => None,
        };
        let client = self.client().await?;
        let sql = format!(
            "UPDATE pgtenant.logins \
                SET verifier = coalesce($2, verifier), access = coalesce($3, access), \
                    enabled = coalesce($4, enabled) \
              WHERE username = $1 RETURNING {COLUMNS}"
        );
        let row = client
            .query_opt(&sql, &[&username, &verifier, &changes.access.map(Access::as_str), &changes.enabled])
            .await?;
        row.as_ref().map(login_from_row).ok_or_else(|| not_found(username))
    }

    /// Deletes a login.
    pub(crate) async fn delete_login(&self, username: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        let deleted = client.execute("DELETE FROM pgtenant.logins WHERE username = $1", &[&username]).await?;
        if deleted == 0 {
            return Err(not_found(username));
        }
        Ok(())
    }
}
