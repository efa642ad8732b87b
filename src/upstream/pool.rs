//! The upstream pool: server sessions of one session role, shared by the
//! clients of every tenant, with tenant affinity.
//!
//! A server session remembers the tenant context it carries and whether a
//! client left session state on it (`dirty`). Checkout prefers the session
//! this client used last, then a clean one of the same tenant (no work at
//! all), then any; the caller pipelines a reset and the new context ahead of
//! the client's messages. A session that is not handed back in a known-clean,
//! idle state is closed, never reused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::connect::{connect, query_value, ServerConnection, UpstreamError, UpstreamTarget};
use super::listen_hub::ListenHub;
use super::server_session::ServerSession;

/// Sizes and timeouts of one pool.
#[derive(Debug, Clone)]
pub(crate) struct PoolConfig {
    /// Server sessions at most (checked out + idle).
    pub max_size: usize,
    /// Idle server sessions the reaper keeps open.
    pub min_idle: usize,
    /// Server sessions older than this are closed when they come back.
    pub max_lifetime: Duration,
    /// Idle server sessions beyond `min_idle` are closed after this.
    pub idle_timeout: Duration,
    /// A client waits at most this long for a server session.
    pub checkout_timeout: Duration,
}

/// Why no server session could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    #[error("no server connection became free within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Connect(#[from] UpstreamError),
}

/// Counters for `/v1/pools` and `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct PoolCounters {
    pub created: AtomicU64,
    pub closed: AtomicU64,
    pub checkouts: AtomicU64,
    pub waits: AtomicU64,
    pub wait_micros: AtomicU64,
    pub context_switches: AtomicU64,
    pub resets: AtomicU64,
}

/// A snapshot of a pool's figures.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct PoolFigures {
    /// Server connections serving a client now.
    pub active: usize,
    /// Server connections open and waiting for a client.
    pub idle: usize,
    /// Clients waiting for a server connection.
    pub waiting: usize,
    /// The most server connections the pool opens (`pool.size`).
    pub max_size: usize,
    /// Server connections opened and closed since start.
    pub created: u64,
    pub closed: u64,
    /// Checkouts, and how many of them had to wait, for how long in all.
    pub checkouts: u64,
    pub waits: u64,
    pub wait_seconds_total: f64,
    /// Checkouts that installed another tenant's context, and that reset a dirty session.
    pub context_switches: u64,
    pub resets: u64,
}

impl PoolFigures {
    /// Adds another pool's figures to these.
    pub(crate) fn add(&mut self, other: &PoolFigures) {
        self.active += other.active;
        self.idle += other.idle;
        self.waiting += other.waiting;
        self.max_size += other.max_size;
        self.created += other.created;
        self.closed += other.closed;
        self.checkouts += other.checkouts;
        self.waits += other.waits;
        self.wait_seconds_total += other.wait_seconds_total;
        self.context_switches += other.context_switches;
        self.resets += other.resets;
    }
}

#[derive(Default)]
struct State {
    /// Boxed, as leases hold them: a checkout moves a pointer, and a
    /// client between transactions keeps no room for a session.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<ServerSession>>,
    /// Checked out plus idle plus being opened.
    total: usize,
    leased_by_tenant: HashMap<String, usize>,
    waiting: usize,
}

struct Inner {
    target: UpstreamTarget,
    config: PoolConfig,
    state: Mutex<State>,
    freed: Notify,
    counters: PoolCounters,
    /// The connection that listens for this pool's clients in transaction
    /// pooling, started by the first LISTEN.
    listen_hub: OnceLock<ListenHub>,
}

/// A pool of server sessions for one upstream role.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

/// A checked-out server session. Dropped without [`Pool::checkin`], it is closed.
pub(crate) struct Lease {
    pool: Pool,
    tenant: String,
    conn: Option<Box<ServerSession>>,
}

impl Lease {
    pub(crate) fn session(&mut self) -> &mut ServerSession {
        // Present from checkout until checkin or drop.
        self.conn.as_mut().expect("a lease holds its session until it is returned")
    }

    pub(crate) fn session_ref(&self) -> &ServerSession {
        self.conn.as_ref().expect("a lease holds its session until it is returned")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn);
            self.pool.inner.counters.closed.fetch_add(1, Ordering::Relaxed);
            self.pool.release_slot(&self.tenant, true);
        }
    }
}

impl Pool {
    pub(crate) fn new(target: UpstreamTarget, config: PoolConfig) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                target,
                config,
                state: Mutex::new(State::default()),
                freed: Notify::new(),
                counters: PoolCounters::default(),
                listen_hub: OnceLock::new(),
            }),
        }
    }

    pub(crate) fn target(&self) -> &UpstreamTarget {
        &self.inner.target
    }

    pub(crate) fn counters(&self) -> &PoolCounters {
        &self.inner.counters
    }

    /// The pool's listening connection (one task, started on first use).
    pub(crate) fn listen_hub(&self) -> &ListenHub {
        self.inner.listen_hub.get_or_init(|| ListenHub::start(self.inner.target.clone()))
    }

    /// A server session for `client` of `tenant`, which may hold at most
    /// `tenant_cap` at once (0: no limit), waiting up to the checkout timeout.
    pub(crate) async fn checkout(&self, tenant: &str, client: i32, tenant_cap: usize) -> Result<Lease, PoolError> {
        let config = &self.inner.config;
        let deadline = tokio::time::Instant::now() + config.checkout_timeout;
        let started = Instant::now();
        let mut waited = false;
        // The first look is unregistered: most checkouts find a session at
        // once and need no place in the wait list.
        let mut registered = false;
        loop {
            // Registered before looking, so a checkin between the look and the wait is not missed.
            let freed = self.inner.freed.notified();
            tokio::pin!(freed);
            if registered {
                freed.as_mut().enable();
            }
            let decision = {
                let mut state = self.lock();
                let tenant_full =
                    tenant_cap > 0 && state.leased_by_tenant.get(tenant).copied().unwrap_or(0) >= tenant_cap;
                if tenant_full {
                    Decision::Wait
                } else if let Some(conn) = take_idle(&mut state.idle, tenant, client) {
                    count_lease(&mut state.leased_by_tenant, tenant);
                    Decision::Reuse(conn)
                } else if state.total < config.max_size {
                    state.total += 1;
                    count_lease(&mut state.leased_by_tenant, tenant);
                    Decision::Open
                } else {
                    Decision::Wait
                }
            };
            match decision {
                Decision::Reuse(conn) => {
                    if conn.is_closed() || conn.created.elapsed() >= config.max_lifetime {
                        // Dead (e.g. the server restarted) or too old: close it, look again.
                        drop(conn);
                        self.inner.counters.closed.fetch_add(1, Ordering::Relaxed);
                        self.release_slot(tenant, true);
                        continue;
                    }
                    return Ok(self.leased(tenant, conn, started, waited));
                }
                // Boxed: an upstream handshake's state would otherwise size every
                // client's task (idle clients included) for the rare checkout that connects.
                Decision::Open => match Box::pin(open_session(&self.inner.target)).await {
                    Ok(server) => {
                        let conn = self.opened(server);
                        return Ok(self.leased(tenant, conn, started, waited));
                    }
                    Err(e) => {
                        self.release_slot(tenant, true);
                        return Err(e.into());
                    }
                },
                Decision::Wait if !registered => registered = true,
                Decision::Wait => {
                    if !waited {
                        waited = true;
                        self.inner.counters.waits.fetch_add(1, Ordering::Relaxed);
                    }
                    self.lock().waiting += 1;
                    let woke = tokio::time::timeout_at(deadline, freed).await;
                    self.lock().waiting -= 1;
                    if woke.is_err() {
                        return Err(PoolError::Timeout(config.checkout_timeout));
                    }
                }
            }
        }
    }

    /// A freshly opened server session, counted.
    fn opened(&self, server: super::connect::ServerConnection) -> Box<ServerSession> {
        self.inner.counters.created.fetch_add(1, Ordering::Relaxed);
        Box::new(ServerSession::opened(server))
    }

    fn leased(&self, tenant: &str, conn: Box<ServerSession>, started: Instant, waited: bool) -> Lease {
        let counters = &self.inner.counters;
        counters.checkouts.fetch_add(1, Ordering::Relaxed);
        if waited {
            counters.wait_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        Lease { pool: self.clone(), tenant: tenant.to_owned(), conn: Some(conn) }
    }

    /// Hands a server session back; `reusable` only when it is idle with no
    /// half-sent message in either direction.
    pub(crate) fn checkin(&self, mut lease: Lease, reusable: bool) {
        let Some(mut conn) = lease.conn.take() else { return };
        let config = &self.inner.config;
        if !reusable || conn.created.elapsed() >= config.max_lifetime {
            drop(conn);
            self.inner.counters.closed.fetch_add(1, Ordering::Relaxed);
            self.release_slot(&lease.tenant, true);
            return;
        }
        conn.idle_since = Instant::now();
        {
            let mut state = self.lock();
            decrement(&mut state.leased_by_tenant, &lease.tenant);
            state.idle.push(conn);
        }
        self.inner.freed.notify_one();
    }

    /// Frees the slot of a session that is gone; `leased` when it was checked out.
    fn release_slot(&self, tenant: &str, leased: bool) {
        {
            let mut state = self.lock();
            state.total = state.total.saturating_sub(1);
            if leased {
                decrement(&mut state.leased_by_tenant, tenant);
            }
        }
        self.inner.freed.notify_one();
    }

    /// Closes idle sessions past `idle_timeout` (keeping `min_idle`) or
    /// `max_lifetime`, and dead ones. Returns how many it closed.
    pub(crate) fn reap(&self) -> usize {
        let config = &self.inner.config;
        let closed = {
            let mut state = self.lock();
            let mut keep = Vec::with_capacity(state.idle.len());
            let mut closed = Vec::new();
            // Newest first, so the ones kept for min_idle are the freshest.
            state.idle.sort_by_key(|c| std::cmp::Reverse(c.idle_since));
            for conn in state.idle.drain(..) {
                let expired = conn.created.elapsed() >= config.max_lifetime
                    || (keep.len() >= config.min_idle && conn.idle_since.elapsed() >= config.idle_timeout)
                    || conn.is_closed();
                if expired {
                    closed.push(conn);
                } else {
                    keep.push(conn);
                }
            }
            state.idle = keep;
            state.total -= closed.len();
            closed
        };
        let n = closed.len();
        if n > 0 {
            self.inner.counters.closed.fetch_add(n as u64, Ordering::Relaxed);
            for _ in 0..n {
                self.inner.freed.notify_one();
            }
        }
        n
    }

    /// Opens sessions until `min_idle` are idle (bounded by `max_size`).
    pub(crate) async fn fill_min_idle(&self) {
        loop {
            {
                let mut state = self.lock();
                if state.idle.len() >= self.inner.config.min_idle || state.total >= self.inner.config.max_size {
                    return;
                }
                state.total += 1;
            }
            match open_session(&self.inner.target).await {
                Ok(server) => {
                    let conn = self.opened(server);
                    self.lock().idle.push(conn);
                    self.inner.freed.notify_one();
                }
                Err(e) => {
                    self.lock().total -= 1;
                    tracing::warn!(error = %e, "cannot open an idle server connection");
                    return;
                }
            }
        }
    }

    /// The pool's figures now.
    pub fn figures(&self) -> PoolFigures {
        let state = self.lock();
        let c = &self.inner.counters;
        PoolFigures {
            active: state.total - state.idle.len(),
            idle: state.idle.len(),
            waiting: state.waiting,
            max_size: self.inner.config.max_size,
            created: c.created.load(Ordering::Relaxed),
            closed: c.closed.load(Ordering::Relaxed),
            checkouts: c.checkouts.load(Ordering::Relaxed),
            waits: c.waits.load(Ordering::Relaxed),
            wait_seconds_total: c.wait_micros.load(Ordering::Relaxed) as f64 / 1e6,
            context_switches: c.context_switches.load(Ordering::Relaxed),
            resets: c.resets.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update leaves the state consistent; a poisoned lock is still usable.
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

enum Decision {
    Reuse(Box<ServerSession>),
    Open,
    Wait,
}

/// Opens and logs in a server session for a pool, and looks up the function
/// its tenant switches call by FunctionCall (one round trip, once per session).
async fn open_session(target: &UpstreamTarget) -> Result<ServerConnection, UpstreamError> {
    let mut server = connect(target, &[]).await?;
    let oid = query_value(target, &mut server, crate::tenancy::context::SWITCH_FUNCTION_SQL).await?;
    server.switch_function = oid.and_then(|oid| oid.parse().ok());
    Ok(server)
}

fn decrement(map: &mut HashMap<String, usize>, tenant: &str) {
    if let Some(n) = map.get_mut(tenant) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(tenant);
        }
    }
}

/// One more server session leased by `tenant` (no allocation when it holds some already).
fn count_lease(leased: &mut HashMap<String, usize>, tenant: &str) {
    match leased.get_mut(tenant) {
        Some(count) => *count += 1,
        None => {
            leased.insert(tenant.to_owned(), 1);
        }
    }
}

/// The best idle session: this client's last, else a clean one already
/// carrying the tenant, else the most recently used.
#[allow(clippy::vec_box)] // the sessions move between the idle list and leases boxed
fn take_idle(idle: &mut Vec<Box<ServerSession>>, tenant: &str, client: i32) -> Option<Box<ServerSession>> {
    let pick = idle
        .iter()
        .position(|c| c.last_client() == Some(client))
        .or_else(|| idle.iter().position(|c| !c.is_dirty() && c.carries(tenant)))
        .or_else(|| idle.iter().rposition(|c| !c.is_dirty()))
        .or(if idle.is_empty() { None } else { Some(idle.len() - 1) })?;
    Some(idle.swap_remove(pick))
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
