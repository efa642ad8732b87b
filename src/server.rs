//! Wiring: binds the proxy and the sidecar, runs them until told to stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::shutdown::{Shutdown, Trigger};
use anyhow::Context;
use rand::RngCore;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::cancel::CancelRegistry;
use crate::config::Config;
use crate::error::{sqlstate, ClientError};
use crate::frontend::listener;
use crate::proxy::tls::TlsSetup;
use crate::proxy::ProxyState;
use crate::routing::Routes;
use crate::sessions::{SessionRegistry, SessionState};
use crate::tenancy::catalog::Catalog;
use crate::tenancy::provision::{Provisioner, TenantMigration};
use crate::upstream::pool::PoolConfig;

/// A running proxy and sidecar.
pub struct Server {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub state: Arc<ProxyState>,
    shutdown: Trigger,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds both listeners and starts serving.
    pub async fn start(config: &Config) -> anyhow::Result<Server> {
        let connect_timeout = Duration::from_secs(config.upstream.connect_timeout_secs);
        let pool_config = PoolConfig {
            max_size: config.pool.size,
            min_idle: config.pool.min_idle,
            max_lifetime: Duration::from_secs(config.pool.max_lifetime_secs),
            idle_timeout: Duration::from_secs(config.pool.idle_timeout_secs),
            checkout_timeout: Duration::from_secs(config.pool.checkout_timeout_secs),
        };
        let mut decoy_secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut decoy_secret);
        let catalog = Catalog::new(&config.control.url, config.control.pool_size).context("control.url")?;
        catalog.check_migrated().await.context("control.url")?;
        let context_key = catalog.context_key().await.context("cannot load the context key through control.url")?;
        let placements = config.placements();
        let routes = Routes::new(&placements, pool_config, connect_timeout, context_key.clone())
            .map_err(|(key, e)| anyhow::anyhow!(e).context(key))?;
        let migrations = match &config.provisioning.migrations {
            Some(folder) => TenantMigration::load_folder(folder)
                .map_err(|problem| anyhow::anyhow!("provisioning.migrations: {problem}"))?,
            None => Vec::new(),
        };
        let provisioner = Provisioner::new(
            catalog.clone(),
            placements,
            migrations,
            config.provisioning.template.clone(),
            context_key.clone(),
            connect_timeout,
        );
        let tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => {
                Some(TlsSetup::load(cert, key, config.tls.required, config.tls.cleartext_password)?)
            }
            _ => None,
        };
        let cancel_listener = TcpListener::bind(config.proxy.cancel_listen)
            .await
            .with_context(|| format!("cannot listen on proxy.cancel_listen {}", config.proxy.cancel_listen))?;
        let fleet = crate::fleet::Fleet::join(catalog.clone(), crate::fleet::advertised(cancel_listener.local_addr()?))
            .await
            .context("cannot register this process in pgtenant.proxy_processes")?;
        let fleet = Arc::new(fleet);
        let console_verifier = crate::blocking::scram_verifier(&config.admin.token)
            .await
            .context("cannot make the admin console's verifier")?;
        let tokens =
            crate::tokens::TokenVerifier::from_config(&config.jwt).map_err(|e| anyhow::anyhow!("{e}"))?.map(Arc::new);
        if let Some(tokens) = &tokens {
            tokens.load_remote_keys().await;
        }
        let state = Arc::new(ProxyState {
            tokens,
            tls,
            auth_throttle: Default::default(),
            tenant_setting: config.proxy.tenant_setting.as_str().into(),
            database: config.served_database(),
            max_message_bytes: config.proxy.max_message_bytes,
            startup_timeout: Duration::from_secs(config.proxy.startup_timeout_secs),
            catalog,
            context_key: context_key.into(),
            routes,
            provisioner,
            pool_mode: config.pool.mode,
            limits: std::sync::RwLock::new(Arc::new(config.clone())),
            session_features: config.pool.session_features,
            cancels: Arc::new(CancelRegistry::default()),
            sessions: Arc::new(SessionRegistry::default()),
            decoy_secret,
            guard: Arc::new(if config.proxy.statement_guard {
                crate::guard::Guard::new(&config.proxy.tenant_setting)
            } else {
                tracing::warn!("proxy.statement_guard is off: for measuring its cost only");
                crate::guard::Guard::disabled(&config.proxy.tenant_setting)
            }),
            marker_prefix: format!("pgtenant_refused_{:016x}_", rand::random::<u64>()),
            statement_secret: rand::random(),
            tenant_stats: crate::tenant_stats::TenantStats::new(config.metrics.tenant_labels),
            fleet: Arc::clone(&fleet),
            console_verifier,
            reload_requests: Default::default(),
            pause: Default::default(),
            reloadable: Default::default(),
            audit: crate::audit::AuditLog::start(&config.audit).context("cannot open audit.path")?,
            notifiers: Default::default(),
            hierarchy: Default::default(),
        });

        let proxy = bind_proxy(config.proxy.listen, config.proxy.reuse_port)
            .with_context(|| format!("cannot listen on proxy.listen {}", config.proxy.listen))?;
        let admin = TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("cannot listen on admin.listen {}", config.admin.listen))?;
        let proxy_addr = proxy.local_addr()?;
        let admin_addr = admin.local_addr()?;

        let (shutdown, watcher) = crate::shutdown::channel();
        let mut tasks = vec![
            tokio::spawn(reap_pools(Arc::clone(&state), watcher.clone())),
            tokio::spawn(listener::run(
                proxy,
                Arc::clone(&state),
                config.proxy.max_client_connections,
                watcher.clone(),
            )),
            tokio::spawn(crate::fleet::run(cancel_listener, fleet, Arc::clone(&state.cancels), watcher.clone())),
            tokio::spawn(crate::tenancy::events::run(
                config.control.url.clone(),
                Arc::clone(&state.sessions),
                state.hierarchy.clone(),
                watcher.clone(),
            )),
        ];
        let router = crate::admin::router(Arc::clone(&state), &config.admin.token);
        let mut admin_watcher = watcher.clone();
        tasks.push(tokio::spawn(async move {
            let stop = async move { admin_watcher.requested().await };
            if let Err(e) = axum::serve(admin, router).with_graceful_shutdown(stop).await {
                tracing::error!(error = %e, "admin sidecar failed");
            }
        }));
        tracing::info!(%proxy_addr, %admin_addr, database = %state.database, "pgtenant is listening");
        Ok(Server { proxy_addr, admin_addr, state, shutdown, tasks })
    }

    /// Stops accepting; ends sessions as they become idle (between
    /// transactions) for up to `drain`, then ends the rest.
    /// Takes the per-tenant limits of a reloaded configuration (`[tenants.*]`
    /// and `pool.mode`, `pool.max_per_tenant`, `pool.statement_timeout_ms`):
    /// sessions that start from now on get them; open sessions keep theirs.
    /// Every other key needs a restart.
    pub fn reload(&self, config: Config) {
        let tenants = config.tenants.len();
        if let Some(audit) = &self.state.audit {
            audit.reopen();
        }
        let mut limits = self.state.limits.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *limits = Arc::new(config);
        tracing::info!(
            tenants,
            "configuration reloaded: per-tenant limits apply to new sessions; other keys need a restart"
        );
    }

    /// Resolves when the admin console asks for a RELOAD; from the first
    /// call on, RELOAD is accepted.
    pub async fn reload_requested(&self) {
        self.state.reloadable.store(true, std::sync::atomic::Ordering::Relaxed);
        self.state.reload_requests.notified().await;
    }

    pub async fn stop(self, drain: Duration) {
        self.shutdown.fire();
        for task in self.tasks {
            let _ = task.await;
        }
        let shutting_down =
            || ClientError::fatal(sqlstate::ADMIN_SHUTDOWN, "terminating connection due to administrator command");
        let deadline = tokio::time::Instant::now() + drain;
        while !self.state.sessions.is_empty() && tokio::time::Instant::now() < deadline {
            for session in self.state.sessions.list() {
                if session.state == SessionState::Idle {
                    self.state.sessions.terminate(session.id, shutting_down());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.state.sessions.terminate_where(|_| true, shutting_down());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while !self.state.sessions.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The proxy's listener; with `reuse_port`, several processes may listen on
/// the same address (SO_REUSEPORT: the kernel spreads new connections
/// among them; cancels find their session through the fleet).
fn bind_proxy(address: std::net::SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(address)?;
    socket.listen(1024)
}

/// Every second: closes expired idle server sessions and keeps `min_idle` open.
async fn reap_pools(state: Arc<ProxyState>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.requested() => return,
        }
        for entry in state.routes.pools() {
            entry.pool.reap();
            if entry.tenant_id.is_none() {
                entry.pool.fill_min_idle().await;
            }
        }
        state.routes.drop_empty_tenant_pools();
    }
}
