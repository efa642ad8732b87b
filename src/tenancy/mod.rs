//! Tenants, logins and the tenant context: the catalog (read through
//! `control.url`) and the statement that puts a tenant on a server session.

pub mod catalog;
pub mod context;
pub(crate) mod events;
pub(crate) mod logins;
pub(crate) mod processes;
pub(crate) mod provision;
pub(crate) mod store;
pub mod tenants;
pub(crate) mod validate;

pub use crate::access::Access;

/// How a tenant's rows are kept apart from other tenants'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Rows in shared tables, under row-level security.
    Shared,
    /// Tables in a schema of the tenant's own.
    Schema,
    /// A database of the tenant's own.
    Database,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Shared => "shared",
            Isolation::Schema => "schema",
            Isolation::Database => "database",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Isolation> {
        match text {
            "shared" => Some(Isolation::Shared),
            "schema" => Some(Isolation::Schema),
            "database" => Some(Isolation::Database),
            _ => None,
        }
    }
}

/// The tenant a session acts for, as pgtenant puts it on the server session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantContext {
    /// The tenant's uuid, in text form.
    pub tenant_id: String,
    /// The tenant and all its descendants, comma-separated.
    pub visible_tenants: String,
    /// The verified identity of a token session (base64 of a JSON object,
    /// sql/0008), signed with the rest; empty when the session has none.
    pub identity: String,
}

/// The tenant id of "no tenant": the nil uuid, which no tenant may have
/// (sql/0007), so a context naming it matches no rows.
pub(crate) const NO_TENANT: &str = "00000000-0000-0000-0000-000000000000";

impl TenantContext {
    /// The context of a service login's session: verified like any other,
    /// it names no tenant, so row-level security shows no tenant rows.
    pub(crate) fn no_tenant() -> TenantContext {
        TenantContext::of(NO_TENANT.to_owned(), NO_TENANT.to_owned())
    }

    /// A tenant and its visible set, without an identity.
    pub fn of(tenant_id: String, visible_tenants: String) -> TenantContext {
        TenantContext { tenant_id, visible_tenants, identity: String::new() }
    }
}
