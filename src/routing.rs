//! Which pool a login's sessions use. Shared tenants use the session roles
//! of the upstream they are placed on (`upstream.url` / `readonly_url`, or an
//! `[upstreams.<name>]` section); schema and database tenants use their own
//! roles, one pool per (server, database, role), opened on first use — on
//! the readonly server for their readonly logins when there is one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::Placement;
use crate::error::{sqlstate, ClientError};
use crate::tenancy::catalog::LoginRecord;
use crate::tenancy::provision::{role_password, TenantObjects};
use crate::tenancy::{Access, Isolation};
use crate::upstream::pool::{Pool, PoolConfig};
use crate::upstream::{UpstreamError, UpstreamTarget};

/// The pools of one upstream server's shared session roles.
pub struct PlacementPools {
    pub name: String,
    pub readwrite: Pool,
    pub readonly: Option<Pool>,
    /// Sizes of every pool on this server, the tenant roles' too.
    pool_config: PoolConfig,
}

/// A pool as `/v1/pools` and `/metrics` show it.
pub(crate) struct PoolEntry {
    pub upstream: String,
    pub access: Access,
    /// The tenant whose own role the pool logs in as (schema and database tenants).
    pub tenant_id: Option<String>,
    pub pool: Pool,
}

/// Every pool of the process.
pub struct Routes {
    placements: Vec<PlacementPools>,
    /// (upstream, role) → pool of a schema or database tenant's role.
    tenant_pools: Mutex<HashMap<(String, String), TenantPool>>,
    context_key: Vec<u8>,
}

struct TenantPool {
    tenant_id: String,
    access: Access,
    pool: Pool,
}

impl Routes {
    /// Pools for every placement; `placements[0]` is the default upstream.
    pub(crate) fn new(
        placements: &[Placement],
        pool_config: PoolConfig,
        connect_timeout: Duration,
        context_key: Vec<u8>,
    ) -> Result<Routes, (String, UpstreamError)> {
        let mut pools = Vec::new();
        for placement in placements {
            let key = |field: &str| match placement.name.as_str() {
                crate::config::DEFAULT_UPSTREAM => format!("upstream.{field}"),
                name => format!("upstreams.{name}.{field}"),
            };
            let readwrite = UpstreamTarget::from_url(&placement.url, connect_timeout).map_err(|e| (key("url"), e))?;
            let readonly = match &placement.readonly_url {
                Some(url) => {
                    Some(UpstreamTarget::from_url(url, connect_timeout).map_err(|e| (key("readonly_url"), e))?)
                }
                None => None,
            };
            let config =
                PoolConfig { max_size: placement.pool_size.unwrap_or(pool_config.max_size), ..pool_config.clone() };
            pools.push(PlacementPools {
                name: placement.name.clone(),
                readwrite: Pool::new(readwrite, config.clone()),
                readonly: readonly.map(|target| Pool::new(target, config.clone())),
                pool_config: config,
            });
        }
        Ok(Routes { placements: pools, tenant_pools: Mutex::new(HashMap::new()), context_key })
    }

    /// The default upstream's pools (`[upstream]`).
    pub fn default_placement(&self) -> &PlacementPools {
        &self.placements[0]
    }

    /// Every placement's shared-role pools.
    pub fn placements(&self) -> &[PlacementPools] {
        &self.placements
    }

    /// The pool a login's session uses.
    pub(crate) fn pool_for(&self, login: &LoginRecord) -> Result<Pool, ClientError> {
        let Some(placement) = self.placements.iter().find(|p| p.name == login.upstream) else {
            // A catalog shared by processes with different configs: refuse, never route elsewhere.
            tracing::warn!(upstream = %login.upstream, "tenant placed on an upstream this process does not know");
            return Err(ClientError::fatal(
                sqlstate::CONNECTION_FAILURE,
                format!("tenant \"{}\" is placed on an upstream this pgtenant does not serve", login.tenant_slug),
            ));
        };
        if login.isolation == Isolation::Shared {
            return match login.access {
                Access::Readwrite => Ok(placement.readwrite.clone()),
                Access::Readonly => placement.readonly.clone().ok_or_else(|| {
                    ClientError::fatal(
                        sqlstate::INVALID_AUTHORIZATION,
                        "readonly logins are not enabled on this pgtenant (upstream.readonly_url is not set)",
                    )
                }),
            };
        }
        let objects = TenantObjects::of(&login.context.tenant_id);
        let role = objects.role_for(login.access).to_owned();
        let mut pools = self.lock();
        let key = (placement.name.clone(), role);
        if let Some(entry) = pools.get(&key) {
            return Ok(entry.pool.clone());
        }
        let database = (login.isolation == Isolation::Database).then_some(objects.home());
        // Readonly logins read where the shared tenants' do: on `readonly_url`
        // when it is set (a hot standby, say), as the tenant's readonly role.
        let server = match (&placement.readonly, login.access) {
            (Some(readonly), Access::Readonly) => readonly.target(),
            _ => placement.readwrite.target(),
        };
        let target = server.as_role(&key.1, &role_password(&self.context_key, &key.1), database);
        let pool = Pool::new(target, placement.pool_config.clone());
        pools.insert(
            key,
            TenantPool { tenant_id: login.context.tenant_id.clone(), access: login.access, pool: pool.clone() },
        );
        Ok(pool)
    }

    /// Forgets the pools of a tenant's own roles (deleted, moved): their idle
    /// server sessions close; leased ones close when their client lets go.
    pub(crate) fn forget_tenant(&self, tenant_id: &str) {
        self.lock().retain(|_, entry| entry.tenant_id != tenant_id);
    }

    /// Every pool, shared-role pools first.
    pub(crate) fn pools(&self) -> Vec<PoolEntry> {
        let mut entries = Vec::new();
        for placement in &self.placements {
            entries.push(PoolEntry {
                upstream: placement.name.clone(),
                access: Access::Readwrite,
                tenant_id: None,
                pool: placement.readwrite.clone(),
            });
            if let Some(pool) = &placement.readonly {
                entries.push(PoolEntry {
                    upstream: placement.name.clone(),
                    access: Access::Readonly,
                    tenant_id: None,
                    pool: pool.clone(),
                });
            }
        }
        let tenant_pools = self.lock();
        let mut owned: Vec<PoolEntry> = tenant_pools
            .iter()
            .map(|((upstream, _), entry)| PoolEntry {
                upstream: upstream.clone(),
                access: entry.access,
                tenant_id: Some(entry.tenant_id.clone()),
                pool: entry.pool.clone(),
            })
            .collect();
        owned.sort_by(|a, b| (&a.upstream, &a.tenant_id).cmp(&(&b.upstream, &b.tenant_id)));
        entries.extend(owned);
        entries
    }

    /// Drops tenant-role pools that hold no server session, so a process
    /// serving many tenants keeps no empty pools.
    pub(crate) fn drop_empty_tenant_pools(&self) {
        self.lock().retain(|_, entry| {
            let figures = entry.pool.figures();
            figures.active + figures.idle + figures.waiting > 0
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), TenantPool>> {
        // Every update leaves the map whole; a poisoned lock is still usable.
        self.tenant_pools.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
