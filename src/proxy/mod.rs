//! What every client session of the proxy and the admin API share: the
//! catalog, the pools and their routes, the guard, the keys, the registries
//! of sessions and cancel keys, client TLS and the login throttle. `server`
//! builds it; `frontend` and `admin` read it.

pub(crate) mod pause;
pub(crate) mod throttle;
pub(crate) mod tls;

use std::sync::Arc;
use std::time::Duration;

use crate::cancel::CancelRegistry;
use crate::sessions::SessionRegistry;
use crate::tenancy::catalog::Catalog;

/// What every client session of a proxy shares.
pub struct ProxyState {
    /// Shared by every session (one copy, however many clients).
    pub tenant_setting: Arc<str>,
    /// The database name clients must ask for.
    pub database: String,
    pub max_message_bytes: usize,
    pub startup_timeout: Duration,
    pub catalog: Catalog,
    /// Every upstream pool, and which one a login uses.
    pub routes: crate::routing::Routes,
    /// Makes and removes schema and database tenants (the admin API's).
    pub provisioner: crate::tenancy::provision::Provisioner,
    /// The default pool mode (`pool.mode`); tenants may override it.
    pub pool_mode: crate::config::PoolMode,
    pub session_features: crate::config::SessionFeatures,
    /// The configuration per-tenant limits are read from; SIGHUP replaces it.
    pub limits: std::sync::RwLock<Arc<crate::config::Config>>,
    pub(crate) cancels: Arc<CancelRegistry>,
    pub sessions: Arc<SessionRegistry>,
    /// Failure counts per client address, to slow password guessing.
    pub(crate) auth_throttle: throttle::AuthThrottle,
    /// Client TLS, when `tls.cert` and `tls.key` are set.
    pub(crate) tls: Option<tls::TlsSetup>,
    /// The statement guard shared by every session.
    pub guard: Arc<crate::guard::Guard>,
    /// Random per process: names the marker statements that stand in for refused ones.
    pub marker_prefix: String,
    /// Verifies the tokens of token logins (`[jwt]` with a key), if configured.
    pub(crate) tokens: Option<Arc<crate::tokens::TokenVerifier>>,
    /// The tenant tree's version as the catalog listener last published it.
    pub(crate) hierarchy: crate::tenancy::events::HierarchyVersion,
    /// Key that signs tenant contexts (from `pgtenant.context_key`).
    pub context_key: Arc<[u8]>,
    /// The admin console's PAUSE / RESUME.
    pub(crate) pause: Arc<pause::PauseGate>,
    /// The admin console's RELOAD: `serve` re-reads its configuration as on
    /// SIGHUP when woken here (`Server::reload_requested`).
    pub(crate) reload_requests: tokio::sync::Notify,
    /// Someone listens on `reload_requests` (`serve`; not `pgtenant dev` or tests).
    pub(crate) reloadable: std::sync::atomic::AtomicBool,
    /// The SCRAM-SHA-256 verifier of `admin.token`, the admin console's password.
    pub(crate) console_verifier: String,
    /// Key for the decoy verifiers of unknown users; random per process.
    pub decoy_secret: [u8; 32],
    /// Which client sent NOTIFY through which server backend.
    pub(crate) notifiers: Arc<crate::notifiers::Notifiers>,
    /// The other pgtenant processes on this catalog, for cancels.
    pub(crate) fleet: Arc<crate::fleet::Fleet>,
    /// The audit log, when `[audit] enabled`.
    pub(crate) audit: Option<Arc<crate::audit::AuditLog>>,
    /// Per-tenant figures for /metrics and the admin API.
    pub(crate) tenant_stats: crate::tenant_stats::TenantStats,
    /// Key of server-side statement names (transaction pooling), random per
    /// process: no client can compute another tenant's statement names.
    pub statement_secret: [u8; 32],
}

impl ProxyState {
    /// The limits of a tenant's new session: its catalog limits (`catalog`,
    /// read with the login), over the configuration's.
    pub(crate) fn limits_for(
        &self,
        slug: &str,
        catalog: &crate::config::TenantOverrides,
    ) -> crate::config::TenantLimits {
        // A poisoned lock only means a reload panicked; the config it holds is whole.
        let config = self.limits.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        config.tenant_limits(slug, catalog)
    }
}
