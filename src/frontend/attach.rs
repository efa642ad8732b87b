//! Attaching a client to a pooled server session, and handing it back.
//!
//! On checkout, what the server session must do before the client's first
//! message is pipelined ahead of it, never waited for: DISCARD ALL when a
//! client left session state, the tenant context when it carries another
//! tenant's (or none), and the difference between the settings on it and this
//! client's own. The context exchange never runs under another client's
//! settings: those its outcome could depend on are reset first.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::cancel::CancelHandle;
use crate::config::PoolMode;
use crate::error::{sqlstate, ClientError};
use crate::protocol::messages::{parameter_status, server};

use super::assume::Assumptions;
use super::failures;
use super::relay_core::TxnStatus;
use crate::setting_rules;
use crate::tenancy::context::{self, ContextChange};
use crate::tenancy::events::HierarchyVersion;
use crate::tenancy::{TenantContext, NO_TENANT};
use crate::upstream::connect::read_message;
use crate::upstream::listen_hub::{NotificationQueue, Subscriber};
use crate::upstream::pool::{Lease, Pool};
use crate::upstream::server_session::{ServerSession, SettingExchange};
use crate::upstream::settings::Settings;

/// One client's claim on the pool.
pub(crate) struct Attachment {
    pool: Pool,
    pub mode: PoolMode,
    context: TenantContext,
    context_key: Arc<[u8]>,
    tenant_setting: Arc<str>,
    /// The client's cancel-key id, which also identifies it to the pool.
    client_id: i32,
    /// The client's settings now (what its session would show).
    /// Shared with `startup_settings` until the client changes one: a copy
    /// per idle client costs half a KiB.
    settings: Arc<Settings>,
    /// The settings of its startup packet: what RESET restores, as on PostgreSQL.
    startup_settings: Arc<Settings>,
    cancel: CancelHandle,
    /// In transaction mode: the client used a feature that needs its whole
    /// server session, so it keeps this one until it disconnects.
    pub pinned: bool,
    /// Server sessions this client's tenant may hold at once (0: no limit).
    tenant_cap: usize,
    /// A service login's assumed tenants (None for other logins).
    assumptions: Option<Assumptions>,
    /// The tenant tree's version as this process last published it.
    hierarchy: HierarchyVersion,
    /// The admin console's PAUSE gate, which checkouts pass first.
    pause: Option<std::sync::Arc<crate::proxy::pause::PauseGate>>,
}

/// What one of pgtenant's own exchanges (each ending with one
/// ReadyForQuery, which the relay swallows) is for: it decides what a
/// failure of it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnExchange {
    /// DISCARD ALL or the tenant context: a failure ends the session.
    Required,
    /// Resetting a setting another client left: one that never took effect
    /// (an unknown name, a value refused at the time) fails harmlessly.
    ResetSetting,
    /// One of the client's own settings: a failure refuses the login, and
    /// later is logged (the value is no longer accepted).
    ClientSetting,
    /// After a transaction that ran LISTEN/UNLISTEN (transaction pooling):
    /// reads what the server session listens on and UNLISTENs it all
    /// (`listening.rs`). A failure ends the session.
    ListenSync,
    /// Before a NOTIFY of a listening client's: the server session LISTENs on
    /// the client's channels. A failure (a failed transaction) is the
    /// client's NOTIFY's too, and harmless.
    ListenReplay,
    /// One of the client's startup settings put back after its RESET: like
    /// [`OwnExchange::ClientSetting`], and the client hears of the value
    /// (ParameterStatus), as it would from PostgreSQL's own RESET.
    RestoredSetting,
}

/// A checked-out server session and what must run on it first.
pub(crate) struct Attached {
    pub lease: Lease,
    /// Pipelined exchanges to send before the client's bytes.
    pub prefix: BytesMut,
    /// The exchanges in `prefix`, in order.
    pub exchanges: Vec<OwnExchange>,
}

impl Attachment {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        pool: Pool,
        mode: PoolMode,
        tenant_cap: usize,
        context: TenantContext,
        context_key: Arc<[u8]>,
        tenant_setting: Arc<str>,
        settings: Settings,
        cancel: CancelHandle,
        hierarchy: HierarchyVersion,
    ) -> Attachment {
        let client_id = cancel.key().process_id;
        let settings = Arc::new(settings);
        Attachment {
            pool,
            mode,
            context,
            context_key,
            tenant_setting,
            client_id,
            startup_settings: Arc::clone(&settings),
            settings,
            cancel,
            pinned: false,
            tenant_cap,
            assumptions: None,
            hierarchy,
            pause: None,
        }
    }

    /// Joins the pool's listen hub (transaction pooling's LISTEN).
    pub(crate) fn join_listen_hub(&self) -> (Subscriber, NotificationQueue) {
        self.pool.listen_hub().join(self.client_id)
    }

    /// Checkouts wait at `gate` while the admin console has paused them.
    pub(crate) fn pause_at(&mut self, gate: std::sync::Arc<crate::proxy::pause::PauseGate>) {
        self.pause = Some(gate);
    }

    /// A service login's session: it may assume tenants, starting from its
    /// own context (no tenant).
    pub(crate) fn allow_assume(&mut self) {
        self.assumptions = Some(Assumptions::new(self.context.clone()));
    }

    /// A verified tenant a service login assumes on the server session in
    /// `lease`, installed exactly as at checkout: returns pgtenant's request
    /// for `pgtenant.assume(request)` on the server (sql/0008).
    pub(crate) fn assume(&mut self, lease: &mut Lease, context: TenantContext) -> String {
        let session = lease.session();
        let ticket = session.begin_context(&context, true, self.hierarchy.current());
        let token = context::sign_token(&self.context_key, &context, session.backend_pid(), &ticket.secret);
        let change = if ticket.switch { "switch" } else { "verify" };
        self.context = context;
        if let Some(assumptions) = self.assumptions.as_mut() {
            assumptions.assumed();
        }
        format!("{change} {} {} {token}", crate::hex::hex(&ticket.secret), self.tenant_setting)
    }

    /// The service login's `pgtenant.release()` went out on the server
    /// session in `lease`: no tenant, for the session.
    pub(crate) fn released(&mut self, lease: &mut Lease) {
        lease.session().note_server_context(NO_TENANT);
        self.context = TenantContext::no_tenant();
        if let Some(assumptions) = self.assumptions.as_mut() {
            assumptions.released();
        }
    }

    /// A batch of the client's ended: true when the tenant the session
    /// returns to must be installed again (see `assume.rs`).
    pub(crate) fn batch_ended(&mut self, status: TxnStatus, error: bool) -> bool {
        match self.assumptions.as_mut() {
            Some(assumptions) => assumptions.batch_ended(status, error, &mut self.context),
            None => false,
        }
    }

    /// The tenant the client's statements run as now.
    pub(crate) fn tenant_id(&self) -> &str {
        &self.context.tenant_id
    }

    /// The current tenant was assumed for the open transaction only.
    pub(crate) fn transaction_scoped(&self) -> bool {
        self.assumptions.as_ref().is_some_and(Assumptions::transaction_scoped)
    }

    /// Checks a server session out for this client.
    pub(crate) async fn acquire(&mut self) -> Result<Attached, ClientError> {
        if let Some(gate) = &self.pause {
            gate.pass().await;
        }
        let mut lease = self
            .pool
            .checkout(&self.context.tenant_id, self.client_id, self.tenant_cap)
            .await
            .map_err(failures::pool)?;
        let counters = self.pool.counters();
        let session = lease.session();
        let mut prefix = BytesMut::with_capacity(512);
        let mut exchanges = Vec::new();
        if session.queue_discard_if_dirty(&mut prefix) {
            exchanges.push(OwnExchange::Required);
            counters.resets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if !session.carries_context(&self.context, self.hierarchy.current()) {
            self.put_context_exchange(session, &mut prefix, &mut exchanges, Exchange::AtCheckout);
            counters.context_switches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            self.put_settings(session, &mut prefix, &mut exchanges, OwnExchange::ClientSetting);
        }
        session.serve_client(self.client_id);
        self.cancel.set_target(Some(session.cancel_target().clone()));
        Ok(Attached { lease, prefix, exchanges })
    }

    /// Checks a server session out and runs the prefix to completion, so that a
    /// bad startup setting or a context failure ends the login as PostgreSQL
    /// would. Used once, at login.
    pub(crate) async fn acquire_ready(&mut self) -> Result<Lease, ClientError> {
        let Attached { mut lease, prefix, exchanges } = self.acquire().await?;
        if exchanges.is_empty() {
            return Ok(lease);
        }
        let session = lease.session();
        let lost = |_| failures::server_closed();
        session.stream().write_all(&prefix).await.map_err(lost)?;
        let mut inbuf = BytesMut::with_capacity(1024);
        let mut pending = exchanges.iter();
        let mut current = pending.next();
        let mut failure = None;
        while let Some(exchange) = current {
            let (tag, body) = read_message(session.stream(), &mut inbuf)
                .await
                .map_err(lost)?
                .map_err(|e| ClientError::fatal(sqlstate::CONNECTION_FAILURE, e.to_string()))?;
            match tag {
                server::ERROR_RESPONSE if failure.is_none() && *exchange != OwnExchange::ResetSetting => {
                    failure = Some(failures::own_exchange(&body));
                }
                server::PARAMETER_STATUS => {
                    if let Some((name, value)) = parameter_status(&body) {
                        session.note_parameter(name, value);
                    }
                }
                server::READY_FOR_QUERY => current = pending.next(),
                _ => {}
            }
        }
        match failure {
            // The lease is dropped, closing the session: its state is unknown.
            Some(error) => Err(error),
            None => Ok(lease),
        }
    }

    /// True when the server session in `lease` holds this client's context
    /// from before the tenant tree last changed.
    pub(crate) fn context_outdated(&self, lease: &Lease) -> bool {
        !lease.session_ref().carries_context(&self.context, self.hierarchy.current())
    }

    /// The exchange that installs this client's context again on the
    /// session in `lease` after the tenant tree changed: the server records
    /// the tenant's descendants anew (sql/0009); nothing else changes.
    pub(crate) fn context_refresh(&mut self, lease: &mut Lease) -> (BytesMut, Vec<OwnExchange>) {
        let mut out = BytesMut::with_capacity(256);
        self.put_context(lease.session(), &mut out, Exchange::AtCheckout);
        (out, vec![OwnExchange::Required])
    }

    /// The exchange that restores the context and the client's settings on
    /// the server session in `lease` after the client reset them: RESET ALL
    /// / DISCARD ALL (`settings_wiped`: every setting is back to its startup
    /// value), RESET of a startup setting, DISCARD SEQUENCES.
    /// `in_client_transaction`: the client's transaction block is open.
    pub(crate) fn context_exchange(
        &mut self,
        lease: &mut Lease,
        settings_wiped: bool,
        in_client_transaction: bool,
    ) -> (BytesMut, Vec<OwnExchange>) {
        let session = lease.session();
        if settings_wiped {
            session.forget_settings();
            self.settings = self.startup_settings.clone();
        }
        let mut out = BytesMut::with_capacity(256);
        let mut exchanges = Vec::new();
        let exchange = if in_client_transaction { Exchange::InClientTransaction } else { Exchange::AfterReset };
        self.put_context_exchange(session, &mut out, &mut exchanges, exchange);
        (out, exchanges)
    }

    /// Queues this client's context on `session` with no other client's
    /// setting in force that it could depend on: those are reset first, and
    /// the client's own applied after it.
    fn put_context_exchange(
        &self,
        session: &mut ServerSession,
        out: &mut BytesMut,
        exchanges: &mut Vec<OwnExchange>,
        exchange: Exchange,
    ) {
        // Inside the client's transaction a failed reset would abort it; the
        // settings there are the client's own.
        if exchange != Exchange::InClientTransaction {
            let resets = session.queue_resets_except(out, setting_rules::leaves_own_exchanges_alone);
            exchanges.extend(std::iter::repeat_n(OwnExchange::ResetSetting, resets));
        }
        self.put_context(session, out, exchange);
        exchanges.push(OwnExchange::Required);
        let set =
            if exchange == Exchange::AtCheckout { OwnExchange::ClientSetting } else { OwnExchange::RestoredSetting };
        self.put_settings(session, out, exchanges, set);
    }

    /// Queues the changes that give `session` this client's settings; `set`
    /// is what a change that sets a value means.
    fn put_settings(
        &self,
        session: &mut ServerSession,
        out: &mut BytesMut,
        exchanges: &mut Vec<OwnExchange>,
        set: OwnExchange,
    ) {
        session.queue_settings(&self.settings, out, |change| {
            exchanges.push(match change {
                SettingExchange::Set => set,
                SettingExchange::Reset => OwnExchange::ResetSetting,
            })
        });
    }

    /// Queues the exchange that gives `session` this client's context: a
    /// switch at checkout when the session holds a switching secret, else
    /// (also after a client's reset, which may have dropped the secret) a
    /// verified context that installs a fresh secret.
    fn put_context(&self, session: &mut ServerSession, out: &mut BytesMut, exchange: Exchange) {
        let ticket = session.begin_context(&self.context, exchange == Exchange::AtCheckout, self.hierarchy.current());
        let install = context::Installation {
            backend_pid: session.backend_pid(),
            secret: ticket.secret,
            change: if ticket.switch { ContextChange::Switch } else { ContextChange::Verify },
            // A transaction of its own only where the session could be read
            // only: PostgreSQL 14+ reports default_transaction_read_only. Not
            // on a hot standby, which refuses a read-write one (strict
            // context writes nothing there; the sequences cannot work at all).
            own_transaction: exchange != Exchange::InClientTransaction
                && session.reported("default_transaction_read_only") != Some("off")
                && session.reported("in_hot_standby") != Some("on"),
            switch_function: session.switch_function(),
        };
        context::encode_set_context(out, &self.context_key, &self.context, &self.tenant_setting, &install);
    }

    /// Session-level SET/RESET the client just sent on the server session in
    /// `lease`: they become the client's settings, applied there already.
    /// True when a RESET named a setting of the startup packet, whose value
    /// pgtenant must now put back (the server reset it to its own default).
    pub(crate) fn note_setting_changes(&mut self, lease: &mut Lease, changes: Vec<(String, Option<String>)>) -> bool {
        lease.session().note_client_settings(&changes);
        let mut restore = false;
        for (name, value) in changes {
            match value {
                Some(value) => {
                    Arc::make_mut(&mut self.settings).insert(name, value);
                }
                // The server reset it to its own default; the client's is its startup value.
                None => match self.startup_settings.get(&name) {
                    Some(startup) => {
                        Arc::make_mut(&mut self.settings).insert(name, startup.clone());
                        restore = true;
                    }
                    None => {
                        Arc::make_mut(&mut self.settings).remove(&name);
                    }
                },
            }
        }
        restore
    }

    /// The client reset all its settings: their startup values from now on.
    pub(crate) fn reset_settings(&mut self) {
        self.settings = self.startup_settings.clone();
    }

    /// Hands the server session back. `clean_idle`: it is idle with nothing in
    /// flight; otherwise it is closed. `client_settings_wiped`: the client
    /// reset its settings on it (RESET ALL / DISCARD ALL).
    pub(crate) fn release(&mut self, mut lease: Lease, clean_idle: bool, client_settings_wiped: bool) {
        self.cancel.set_target(None);
        let session = lease.session();
        if self.mode == PoolMode::Session || self.pinned {
            // What the client did with a whole session is unknown: reset it.
            session.mark_dirty();
        }
        if client_settings_wiped {
            session.forget_settings();
            self.settings = self.startup_settings.clone();
        }
        self.pool.checkin(lease, clean_idle);
    }
}

/// Where a context exchange runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exchange {
    /// At checkout, between clients: a switch may take the session's secret.
    AtCheckout,
    /// After the client's reset, with the server idle.
    AfterReset,
    /// After the client's reset, inside its open transaction block: no
    /// transaction of pgtenant's own, nothing that could fail and abort it.
    InClientTransaction,
}
