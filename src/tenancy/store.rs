//! What the admin reads and writes of tenants and logins share: their error
//! type and how catalog errors map onto it.

use tokio_postgres::error::SqlState;

use super::catalog::CatalogError;
use super::validate::Invalid;

/// Why a catalog read or write of the admin API did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such tenant or login.
    #[error("{0}")]
    NotFound(String),
    /// The change collides with what is there (duplicate, cycle, children).
    #[error("{0}")]
    Conflict(String),
    /// A field breaks its rule.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The control database is unreachable.
    #[error("control database unavailable")]
    Unavailable(#[source] CatalogError),
    /// The control database failed in a way that is not the caller's fault.
    #[error("control database error")]
    Internal(#[source] CatalogError),
}

impl From<CatalogError> for StoreError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Pool(_) => StoreError::Unavailable(e),
            _ => StoreError::Internal(e),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.is_closed() || e.as_db_error().is_none() && e.code().is_none() {
            return StoreError::Unavailable(CatalogError::Query(e));
        }
        StoreError::Internal(CatalogError::Query(e))
    }
}

/// The SQLSTATE of a server error and the constraint it names, if any.
pub(super) fn db_failure(e: &tokio_postgres::Error) -> Option<(&SqlState, Option<&str>)> {
    e.as_db_error().map(|db| (db.code(), db.constraint()))
}

/// SQL rendering a timestamptz column as RFC 3339 in UTC.
macro_rules! rfc3339 {
    ($column:literal) => {
        concat!("to_char(", $column, " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    };
}
pub(super) use rfc3339;
