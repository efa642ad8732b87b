//! What applies to one tenant's sessions: `[pool]`'s defaults, under the
//! config file's `[tenants.<slug>]`, under the catalog's limits (the admin
//! API's) — merged key by key.

use serde::Deserialize;

use super::{Config, PoolMode};

/// What one tenant does differently from the `[pool]` defaults: in the
/// config file (`[tenants.<slug>]`) or in the catalog (the admin API's
/// `limits`, which win over the file's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TenantOverrides {
    /// `session` or `transaction`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_mode: Option<PoolMode>,
    /// Milliseconds a request of this tenant may keep its server session busy
    /// before pgtenant cancels it (0: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_timeout_ms: Option<u64>,
    /// Server sessions this tenant may hold at once (0: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_server_connections: Option<usize>,
    /// Client sessions this tenant may have open at once on one process (0: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_client_connections: Option<usize>,
}

impl TenantOverrides {
    /// These overrides, with `under`'s where these have none.
    pub(crate) fn over(&self, under: Option<&TenantOverrides>) -> TenantOverrides {
        let under = under.cloned().unwrap_or_default();
        TenantOverrides {
            pool_mode: self.pool_mode.or(under.pool_mode),
            statement_timeout_ms: self.statement_timeout_ms.or(under.statement_timeout_ms),
            max_server_connections: self.max_server_connections.or(under.max_server_connections),
            max_client_connections: self.max_client_connections.or(under.max_client_connections),
        }
    }
}

/// What applies to one tenant's sessions: `[pool]`, with its `[tenants.<slug>]` overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TenantLimits {
    pub pool_mode: PoolMode,
    pub statement_timeout: Option<std::time::Duration>,
    /// 0: no limit.
    pub max_server_connections: usize,
    /// Client sessions on this process; 0: no limit.
    pub max_client_connections: usize,
}

impl Config {
    /// The limits of the tenant `slug`'s new sessions: the catalog's
    /// (`catalog`), else its `[tenants.<slug>]`, else `[pool]`'s.
    pub(crate) fn tenant_limits(&self, slug: &str, catalog: &TenantOverrides) -> TenantLimits {
        let overrides = catalog.over(self.tenants.get(slug));
        let timeout_ms = overrides.statement_timeout_ms.unwrap_or(self.pool.statement_timeout_ms);
        TenantLimits {
            pool_mode: overrides.pool_mode.unwrap_or(self.pool.mode),
            statement_timeout: (timeout_ms > 0).then(|| std::time::Duration::from_millis(timeout_ms)),
            max_server_connections: overrides.max_server_connections.unwrap_or(self.pool.max_per_tenant),
            max_client_connections: overrides.max_client_connections.unwrap_or(0),
        }
    }
}
