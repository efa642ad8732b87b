//! One server session and what pgtenant knows of its state: the tenant
//! context on it, the client settings applied, the prepared statements it
//! holds, the switching secret installed with its last verified context, and
//! whether a client left session state the next one must not inherit.
//!
//! The state changes only through this API, which queues the exchanges that
//! bring it about and records their effect in the same step, so what is
//! recorded and what was sent cannot drift apart. The frontend asks for
//! outcomes ("this client's settings", "this tenant's context"), never edits
//! a field.

use std::time::Instant;

use bytes::BytesMut;
use rand::RngCore;

use super::connect::{CancelTarget, ServerConnection};
use super::server_statements::ServerStatements;
use super::settings::{self, Settings};
use super::stream::ServerStream;
use crate::protocol::backend::{put_cstr, write_message};
use crate::protocol::messages::client;
use crate::tenancy::TenantContext;

/// How to install a tenant context, decided by [`ServerSession::begin_context`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ContextTicket {
    /// The switching secret the exchange carries: a verified context
    /// installs it, a later context on the same session presents it to
    /// switch tenant cheaply.
    pub secret: [u8; 16],
    /// True: the secret is the one already installed (a switch). False: a
    /// fresh one, which only a verified context may install.
    pub switch: bool,
}

/// What a queued setting exchange does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SettingExchange {
    /// Gives a setting a value.
    Set,
    /// Resets a setting to the server's default.
    Reset,
}

/// One server session, idle in a pool or leased to a client.
#[derive(Debug)]
pub(crate) struct ServerSession {
    stream: ServerStream,
    cancel: CancelTarget,
    /// The server's reported settings (ParameterStatus), kept current.
    parameters: Vec<(String, String)>,
    /// The tenant whose context is installed, if any.
    tenant: Option<String>,
    /// The verified identity installed with it (token sessions): a session
    /// of the same tenant with another identity needs its own context.
    identity: String,
    /// The visible field installed with it: a tenant placed on another
    /// upstream signs its subtree there, and a session signed before the
    /// subtree changed must not serve a client of the same tenant after.
    visible: String,
    /// The tenant tree's version this process knew when it installed the
    /// context (sql/0009): a newer one means the context is installed again,
    /// so that the server counts the tenant's descendants anew.
    hierarchy_version: i64,
    /// The client (its cancel-key id) that used it last.
    last_client: Option<i32>,
    /// A client left session state (settings, prepared statements, cursors,
    /// LISTEN, …) that the next client must not inherit.
    dirty: bool,
    /// The client settings applied on it.
    applied: Settings,
    /// Prepared statements on it (transaction pooling).
    statements: ServerStatements,
    /// The switching secret installed with its last verified context (None:
    /// the next context must be verified).
    switch_secret: Option<[u8; 16]>,
    /// The oid of the switch function, for switches by FunctionCall.
    switch_function: Option<u32>,
    pub(super) created: Instant,
    pub(super) idle_since: Instant,
}

impl ServerSession {
    /// A session just opened and logged in: no context, nothing applied.
    pub(super) fn opened(server: ServerConnection) -> ServerSession {
        let now = Instant::now();
        ServerSession {
            stream: server.stream,
            cancel: server.cancel,
            parameters: server.parameters,
            tenant: None,
            identity: String::new(),
            visible: String::new(),
            hierarchy_version: 0,
            last_client: None,
            dirty: false,
            applied: Settings::new(),
            statements: ServerStatements::default(),
            switch_secret: None,
            switch_function: server.switch_function,
            created: now,
            idle_since: now,
        }
    }

    pub(crate) fn stream(&mut self) -> &mut ServerStream {
        &mut self.stream
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.stream.is_closed()
    }

    /// Where a CancelRequest for this session goes.
    pub(crate) fn cancel_target(&self) -> &CancelTarget {
        &self.cancel
    }

    /// The server backend's process id.
    pub(crate) fn backend_pid(&self) -> i32 {
        self.cancel.process_id
    }

    /// The oid of `pgtenant.switch_context(text, text, text)` on this
    /// session's database, looked up when it opened.
    pub(crate) fn switch_function(&self) -> Option<u32> {
        self.switch_function
    }

    /// Every setting the server reported (ParameterStatus), in order.
    pub(crate) fn parameters(&self) -> &[(String, String)] {
        &self.parameters
    }

    /// The value the server last reported for `name` (ParameterStatus).
    pub(crate) fn reported(&self, name: &str) -> Option<&str> {
        self.parameters.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Records a ParameterStatus the server sent.
    pub(crate) fn note_parameter(&mut self, name: &str, value: &str) {
        match self.parameters.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => {
                v.clear();
                v.push_str(value);
            }
            None => self.parameters.push((name.to_owned(), value.to_owned())),
        }
    }

    /// The prepared statements this session holds.
    pub(crate) fn statements(&mut self) -> &mut ServerStatements {
        &mut self.statements
    }

    pub(super) fn last_client(&self) -> Option<i32> {
        self.last_client
    }

    pub(super) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// True when a context of `tenant` is installed (the pool prefers such sessions).
    pub(crate) fn carries(&self, tenant: &str) -> bool {
        self.tenant.as_deref() == Some(tenant)
    }

    /// True when exactly `context` is installed (its tenant, its visible
    /// field and its identity) at the tenant tree's `hierarchy_version`.
    pub(crate) fn carries_context(&self, context: &TenantContext, hierarchy_version: i64) -> bool {
        // The integer first: between a session-pooled client's transactions
        // this runs after every ReadyForQuery.
        self.hierarchy_version == hierarchy_version
            && self.carries(&context.tenant_id)
            && self.visible == context.visible_tenants
            && self.identity == context.identity
    }

    /// Records which client uses the session now (checkout prefers it for
    /// the same client next time).
    pub(crate) fn serve_client(&mut self, client: i32) {
        self.last_client = Some(client);
    }

    /// A client left session state on it: the next one gets it reset.
    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Queues DISCARD ALL when a client left session state, and forgets
    /// everything it undoes: settings, statements, the context and its
    /// secret (kept in the sequences' session state). True when queued; the
    /// server answers with one ReadyForQuery.
    pub(crate) fn queue_discard_if_dirty(&mut self, out: &mut BytesMut) -> bool {
        if !self.dirty {
            return false;
        }
        write_message(out, client::QUERY, |b| put_cstr(b, "DISCARD ALL"));
        self.dirty = false;
        self.applied.clear();
        self.statements.clear();
        self.tenant = None;
        self.switch_secret = None;
        true
    }

    /// Queues a reset of every applied setting `keep` does not keep, one
    /// exchange each. Returns how many.
    pub(crate) fn queue_resets_except(&mut self, out: &mut BytesMut, keep: impl Fn(&str) -> bool) -> usize {
        let resets: Vec<String> = self.applied.keys().filter(|name| !keep(name)).cloned().collect();
        for name in &resets {
            settings::encode_change(out, (name, None));
            self.applied.remove(name);
        }
        resets.len()
    }

    /// Queues the changes that give the session exactly `wanted`, one
    /// exchange each, in order; `each` hears what each one does.
    pub(crate) fn queue_settings(
        &mut self,
        wanted: &Settings,
        out: &mut BytesMut,
        mut each: impl FnMut(SettingExchange),
    ) {
        let changes = settings::transition(&self.applied, wanted);
        if changes.is_empty() {
            return;
        }
        for change in changes {
            settings::encode_change(out, change);
            each(if change.1.is_some() { SettingExchange::Set } else { SettingExchange::Reset });
        }
        self.applied = wanted.clone();
    }

    /// The client itself changed settings on the session (SET / RESET it
    /// sent): `None` means reset to the server's default.
    pub(crate) fn note_client_settings(&mut self, changes: &[(String, Option<String>)]) {
        for (name, value) in changes {
            match value {
                Some(value) => {
                    self.applied.insert(name.clone(), value.clone());
                }
                None => {
                    self.applied.remove(name);
                }
            }
        }
    }

    /// The client reset every setting (RESET ALL / DISCARD ALL it sent).
    pub(crate) fn forget_settings(&mut self) {
        self.applied.clear();
    }

    /// The server installed `tenant`'s context itself, with the switching
    /// secret already on it (`pgtenant.release()`).
    pub(crate) fn note_server_context(&mut self, tenant: &str) {
        self.tenant = Some(tenant.to_owned());
        self.visible = tenant.to_owned();
        self.identity.clear();
    }

    /// Starts installing `context`: the secret already installed
    /// when `may_switch` and there is one, else a fresh secret for a
    /// verified context. Records the tenant, secret and tree version as sent
    /// — a failed exchange ends the client's session and closes this one.
    pub(crate) fn begin_context(
        &mut self,
        context: &TenantContext,
        may_switch: bool,
        hierarchy_version: i64,
    ) -> ContextTicket {
        let ticket = match self.switch_secret.filter(|_| may_switch) {
            Some(secret) => ContextTicket { secret, switch: true },
            None => {
                let mut secret = [0u8; 16];
                rand::thread_rng().fill_bytes(&mut secret);
                ContextTicket { secret, switch: false }
            }
        };
        self.switch_secret = Some(ticket.secret);
        self.tenant = Some(context.tenant_id.clone());
        self.visible.clone_from(&context.visible_tenants);
        self.identity.clone_from(&context.identity);
        self.hierarchy_version = hierarchy_version;
        ticket
    }
}
