//! What the relay does to the few client messages it must read: the guard's
//! verdict applied in stream order — refusals become marker statements
//! (`markers.rs`), channel names are scoped to the tenant (`channels.rs`),
//! setting changes and resets are noted, and where the stream stands
//! (`batches.rs`) decides when the context is re-established after RESET ALL
//! / DISCARD ALL and when the server session may go back to the pool.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use super::batches::Batches;
use super::bind_effects::{judge_bound_set_config, BindValues, PreparedEffects};
use super::channels::TenantChannels;
use super::listening::ChannelOp;
use super::markers::Markers;
use super::statements::{ClientStatements, Edit, ServerStatements, StatementNamespaces};
use crate::config::SessionFeatures;
use crate::error::ClientError;
use crate::guard::context_calls;
use crate::guard::{self, Guard, Inspection};
use crate::notifiers::Notifiers;
use crate::protocol::backend::{put_cstr, write_message};
use crate::protocol::messages::{client, Bind, Parse, Query};

mod assume_calls;
mod channel_ops;

pub(crate) use assume_calls::FrameStep;
use assume_calls::StatementCall;

/// Per-session state of the message policy.
pub struct ClientPolicy {
    guard: Arc<Guard>,
    /// The refusals waiting for their marker statement's error.
    markers: Markers,
    /// The tenant's notification channels.
    channels: TenantChannels,
    /// In transaction pooling: what to do with features that need a session.
    session_features: Option<SessionFeatures>,
    /// In transaction pooling: the client's named prepared statements.
    statements: Option<ClientStatements>,
    /// The client used such a feature (the relay pins it to its server session).
    session_state_used: bool,
    /// The client reset its own settings (RESET ALL / DISCARD ALL).
    settings_wiped: bool,
    /// The client changed a setting in a way pgtenant cannot follow.
    settings_untracked: bool,
    /// Session-level setting changes sent since the relay last took them.
    setting_changes: Vec<(String, Option<String>)>,
    /// A Parse of DISCARD ALL / DEALLOCATE ALL: statements go at its Sync.
    statements_discarded_on_sync: bool,
    /// What prepared statements (by name) do to the context and the
    /// settings each time they are executed.
    prepared_effects: HashMap<String, PreparedEffects>,
    /// Where the client's message stream stands.
    batches: Batches,
    /// The session's own tenant schema (schema tenants), the one `pgt_…`
    /// schema its search_path may name.
    own_schema: Option<String>,
    /// A service login: it may assume tenants (`assume.rs`).
    service: bool,
    /// Prepared statements (by name) that are `pgtenant.assume($1)` or
    /// `pgtenant.release()`.
    context_statements: HashMap<String, StatementCall>,
    /// The outcome of verifying the token of the frame at hand: the request
    /// for `pgtenant.assume(request)` on the server, or the refusal.
    verified: Option<Result<String, ClientError>>,
    /// pgtenant's own exchanges this policy queued (each ends with one ReadyForQuery).
    own_exchanges: usize,
    /// A release went out.
    released: bool,
    /// In transaction pooling: the pool's listening connection serves LISTEN
    /// (`listening.rs`), which then needs no whole server session.
    listen_hub: bool,
    /// LISTEN/UNLISTEN statements sent since the relay last took them.
    channel_ops: Vec<ChannelOp>,
}

impl ClientPolicy {
    pub fn new(
        guard: Arc<Guard>,
        marker_prefix: String,
        channel_prefix: String,
        session_features: Option<SessionFeatures>,
        statement_namespaces: StatementNamespaces,
        notifiers: Arc<Notifiers>,
        client_pid: i32,
    ) -> Self {
        ClientPolicy {
            guard,
            markers: Markers::new(marker_prefix),
            channels: TenantChannels::new(channel_prefix, notifiers, client_pid),
            session_features,
            statements: session_features.map(|_| ClientStatements::new(statement_namespaces)),
            session_state_used: false,
            settings_wiped: false,
            settings_untracked: false,
            statements_discarded_on_sync: false,
            setting_changes: Vec::new(),
            prepared_effects: HashMap::new(),
            batches: Batches::default(),
            own_schema: None,
            service: false,
            context_statements: HashMap::new(),
            verified: None,
            own_exchanges: 0,
            released: false,
            listen_hub: false,
            channel_ops: Vec::new(),
        }
    }

    /// In transaction pooling, a named Parse that is followed by Sync outside a
    /// transaction: remembered without a server session when its statement
    /// is plain (the guard has nothing to say, the grammar accepts it, no
    /// effects, a new name), so the caller answers ParseComplete itself.
    /// pgbench's PQprepare then never waits for a server connection that its
    /// own thread's clients hold mid-transaction. Errors past the grammar (an
    /// unknown table) come at the statement's first Bind or Describe.
    pub(crate) fn parse_without_server(&mut self, frame: &[u8]) -> bool {
        let Some(parse) = Parse::read(frame) else { return false };
        let Ok(sql) = std::str::from_utf8(parse.sql) else { return false };
        if parse.name.is_empty() || self.statements.is_none() || context_calls::recognize(sql).is_some() {
            return false;
        }
        let verdict = self.guard.check(sql);
        if *verdict != Inspection::default() || self.refusal(&verdict).is_some() || !guard::parses(sql) {
            return false;
        }
        let Some(statements) = self.statements.as_mut() else { return false };
        if !statements.remember(parse.name, parse.sql_and_types) {
            return false;
        }
        self.prepared_effects.remove(parse.name);
        self.context_statements.remove(parse.name);
        true
    }

    /// The session is a service login's: it may assume tenants.
    pub(crate) fn allow_assume(&mut self) {
        self.service = true;
    }

    /// While a tenant is assumed for a transaction, each batch waits for its
    /// answer before the next goes out, so that the session's tenant is back
    /// before anything after the transaction runs.
    pub(crate) fn hold_each_batch(&mut self, on: bool) {
        self.batches.hold_each_batch(on);
    }

    /// The session's tenant has a schema of its own: its search_path may name it.
    pub(crate) fn own_schema(&mut self, schema: String) {
        self.own_schema = Some(schema);
    }

    /// 42501 when a search_path the client sets names another tenant's schema.
    fn check_search_paths(&self, search_paths: &[String]) -> Result<(), ClientError> {
        for path in search_paths {
            if let Some(schema) = crate::setting_rules::foreign_tenant_schema(path, self.own_schema.as_deref()) {
                return Err(foreign_schema(&schema));
            }
        }
        Ok(())
    }

    /// True while client messages must wait (a context reset is pending).
    pub(crate) fn holding(&self) -> bool {
        self.batches.holding()
    }

    /// Every client message sent so far has been answered: a transaction
    /// boundary where the server session may go back to the pool.
    pub(crate) fn at_rest(&self) -> bool {
        self.batches.at_rest()
    }

    /// Every client message has been answered and none waits for its Sync.
    pub(crate) fn quiet(&self) -> bool {
        self.batches.quiet()
    }

    /// Notes a client message streamed through without inspection.
    pub(crate) fn streamed(&mut self, tag: u8) {
        self.batches.streamed(tag);
    }

    /// True once the client used a feature that needs a whole server session.
    pub(crate) fn session_state_used(&self) -> bool {
        self.session_state_used
    }

    /// Takes the session-level setting changes the client sent.
    pub(crate) fn take_setting_changes(&mut self) -> Vec<(String, Option<String>)> {
        std::mem::take(&mut self.setting_changes)
    }

    /// Takes the "client reset its settings" flag.
    pub(crate) fn take_settings_wiped(&mut self) -> bool {
        std::mem::take(&mut self.settings_wiped)
    }

    /// The client changed a setting pgtenant cannot replay: its server
    /// session must be reset before anyone uses it again.
    pub(crate) fn take_settings_untracked(&mut self) -> bool {
        std::mem::take(&mut self.settings_untracked)
    }

    /// The server backend now serving the client (for notification pids).
    pub fn set_server_pid(&mut self, pid: i32) {
        self.channels.set_server_pid(pid);
    }

    /// True when `tag` is a client message this policy reads whole.
    pub(crate) fn inspects(&self, tag: u8) -> bool {
        matches!(tag, client::QUERY | client::PARSE | client::FUNCTION_CALL | client::SYNC)
            || (self.statements.is_some() && matches!(tag, client::BIND | client::DESCRIBE | client::CLOSE))
            || (tag == client::BIND && !(self.prepared_effects.is_empty() && self.context_statements.is_empty()))
    }

    /// True when ParseComplete/CloseComplete replies must be read.
    pub(crate) fn tracking_replies(&self) -> bool {
        self.statements.as_ref().is_some_and(|s| s.edits.tracking())
    }

    /// The edit for one ParseComplete ('1') or CloseComplete ('3').
    pub(crate) fn reply_edit(&mut self, tag: u8) -> Edit {
        self.statements.as_mut().map_or(Edit::Forward, |s| s.edits.reply(tag))
    }

    /// pgtenant sent `n` batches of its own.
    pub fn own_batches_sent(&mut self, n: u32) {
        if let Some(s) = self.statements.as_mut() {
            s.edits.batches_sent(u64::from(n));
        }
    }

    /// A ReadyForQuery arrived (the client's or pgtenant's own).
    pub(crate) fn batch_done(&mut self) {
        if let Some(s) = self.statements.as_mut() {
            s.edits.batch_done();
        }
    }

    fn client_batch_sent(&mut self) {
        if let Some(s) = self.statements.as_mut() {
            s.edits.batches_sent(1);
        }
    }

    /// Applies the policy to one whole client frame, appending what the server
    /// should receive instead to `to_server`.
    pub(crate) fn client_frame(
        &mut self,
        frame: &[u8],
        to_server: &mut BytesMut,
        server: Option<&mut ServerStatements>,
    ) -> Result<(), ClientError> {
        let judged = self.judge_frame(frame, to_server, server);
        // A verification serves the frame it was made for, never a later one.
        self.verified = None;
        judged
    }

    fn judge_frame(
        &mut self,
        frame: &[u8],
        to_server: &mut BytesMut,
        server: Option<&mut ServerStatements>,
    ) -> Result<(), ClientError> {
        let tag = frame.first().copied().unwrap_or_default();
        match tag {
            client::QUERY => {
                self.client_batch_sent();
                self.query(frame, to_server, server)?
            }
            client::PARSE => self.parse(frame, to_server, server)?,
            client::BIND | client::DESCRIBE | client::CLOSE => {
                self.batches.extended_sent();
                let replaced;
                let mut frame = frame;
                if tag == client::BIND {
                    if let Err(refusal) = self.bind_effects(frame) {
                        self.markers.bind(refusal, to_server);
                        return Ok(());
                    }
                    match self.bind_context_call(frame) {
                        Ok(Some(rewritten)) => {
                            replaced = rewritten;
                            frame = &replaced;
                        }
                        Ok(None) => {}
                        Err(refusal) => {
                            self.markers.bind(refusal, to_server);
                            return Ok(());
                        }
                    }
                }
                let rewritten = match (self.statements.as_mut(), server) {
                    (Some(statements), Some(server)) => match tag {
                        client::BIND => statements.bind(frame, server, to_server),
                        client::DESCRIBE => statements.describe(frame, server, to_server),
                        _ => statements.close(frame, to_server),
                    },
                    _ => false,
                };
                if !rewritten {
                    to_server.extend_from_slice(frame);
                }
            }
            client::FUNCTION_CALL => {
                self.client_batch_sent();
                self.markers.query(
                    ClientError::error(
                        crate::error::sqlstate::INSUFFICIENT_PRIVILEGE,
                        "the FunctionCall protocol message is not allowed through pgtenant",
                    ),
                    to_server,
                );
                self.batches.simple_sent();
            }
            client::SYNC => {
                self.client_batch_sent();
                if std::mem::take(&mut self.statements_discarded_on_sync) {
                    self.forget_statements(server);
                }
                to_server.extend_from_slice(frame);
                self.batches.sync_sent();
            }
            _ => to_server.extend_from_slice(frame),
        }
        Ok(())
    }

    fn query(
        &mut self,
        frame: &[u8],
        to_server: &mut BytesMut,
        server: Option<&mut ServerStatements>,
    ) -> Result<(), ClientError> {
        let query =
            Query::read(frame).ok_or_else(|| ClientError::protocol_violation("Query string is not terminated"))?;
        self.batches.simple_sent();
        let sql = match statement_text(query.sql) {
            Ok(sql) => sql,
            Err(None) => {
                to_server.extend_from_slice(frame);
                return Ok(());
            }
            Err(Some(refusal)) => {
                self.markers.query(refusal, to_server);
                return Ok(());
            }
        };
        if let Some(call) = context_calls::recognize(sql) {
            self.query_context_call(call, frame, to_server);
            return Ok(());
        }
        let verdict = self.guard.check(sql);
        if let Some(refusal) = self.refusal(&verdict) {
            self.markers.query(refusal, to_server);
            return Ok(());
        }
        if verdict.channel_statements.is_empty() {
            to_server.extend_from_slice(frame);
        } else {
            let rewritten = guard::rewrite_channels(sql, &verdict.channel_statements, self.channels.prefix());
            write_message(to_server, client::QUERY, |b| put_cstr(b, &rewritten));
        }
        self.note_settings(&verdict);
        self.channels.note_notify(&verdict);
        let ops = self.channel_ops_of(&verdict);
        self.channel_ops.extend(ops);
        if verdict.discards_statements {
            self.forget_statements(server);
        }
        self.batches.query_done(verdict.resets_context);
        Ok(())
    }

    /// The guard's refusal, or in transaction pooling the refusal of a
    /// feature that needs a whole session.
    fn refusal(&mut self, verdict: &Inspection) -> Option<ClientError> {
        let foreign_path = self.check_search_paths(&verdict.search_paths).err();
        match &verdict.denial {
            Some(denial) => Some(denial.clone()),
            None if foreign_path.is_some() => foreign_path,
            None if verdict.reads_pooled_statements && self.statements.is_some() => Some(ClientError::error(
                crate::error::sqlstate::INSUFFICIENT_PRIVILEGE,
                "pg_prepared_statements is not available in transaction pooling: the prepared statements of a \
                 pooled server connection belong to clients of every tenant",
            )),
            // Names compared without case: a false match only refuses a harmless EXECUTE.
            None if verdict.executes.iter().any(|name| {
                self.prepared_effects.iter().any(|(prepared, effects)| {
                    !effects.bound_set_configs.is_empty() && prepared.to_lowercase() == *name
                })
            }) =>
            {
                Some(ClientError::error(
                    crate::error::sqlstate::INSUFFICIENT_PRIVILEGE,
                    "EXECUTE of a statement that calls set_config() with bind parameters is not allowed through \
                     pgtenant: it judges those parameters when the statement is bound",
                ))
            }
            None => self.session_feature(verdict.session_state || (verdict.listens() && !self.listen_hub)),
        }
    }

    /// Notes what a statement does to the client's own settings (in session
    /// pooling too: the context exchange after DISCARD SEQUENCES must not run
    /// under them).
    fn note_settings(&mut self, verdict: &Inspection) {
        self.setting_changes.extend(verdict.setting_changes.iter().cloned());
        if verdict.wipes_settings {
            self.settings_wiped = true;
        }
        if verdict.untracked_settings {
            self.settings_untracked = true;
        }
    }

    fn parse(
        &mut self,
        frame: &[u8],
        to_server: &mut BytesMut,
        server: Option<&mut ServerStatements>,
    ) -> Result<(), ClientError> {
        let parse = Parse::read(frame).ok_or_else(|| ClientError::protocol_violation("malformed Parse message"))?;
        let name = parse.name;
        // Whatever happens below, this batch now waits for its Sync.
        self.batches.extended_sent();
        let sql = match statement_text(parse.sql) {
            Ok(sql) => sql,
            Err(None) => {
                to_server.extend_from_slice(frame);
                return Ok(());
            }
            Err(Some(refusal)) => {
                self.markers.parse(name, refusal, to_server);
                return Ok(());
            }
        };
        let call = context_calls::recognize(sql);
        let verdict = match &call {
            Some(call) => {
                if let Err(refusal) = self.parse_context_call(name, call) {
                    self.markers.parse(name, refusal, to_server);
                    return Ok(());
                }
                Arc::new(Inspection::default())
            }
            None => {
                self.context_statements.remove(name);
                self.guard.check(sql)
            }
        };
        if let Some(refusal) = self.refusal(&verdict) {
            self.markers.parse(name, refusal, to_server);
            return Ok(());
        }
        let mut query_and_types = BytesMut::new();
        if verdict.channel_statements.is_empty() {
            query_and_types.extend_from_slice(parse.sql_and_types);
        } else {
            let rewritten = guard::rewrite_channels(sql, &verdict.channel_statements, self.channels.prefix());
            put_cstr(&mut query_and_types, &rewritten);
            query_and_types.put_slice(parse.types);
        }
        match (self.statements.as_mut(), server) {
            (Some(statements), Some(server)) if !name.is_empty() => {
                statements.parse(name, &query_and_types, server, to_server);
            }
            _ if verdict.channel_statements.is_empty() => to_server.extend_from_slice(frame),
            _ => write_message(to_server, client::PARSE, |b| {
                put_cstr(b, name);
                b.put_slice(&query_and_types);
            }),
        }
        // Resets and setting changes take effect when the statement is
        // executed (at Bind), not when it is prepared: it may run many
        // times, or never.
        let effects = PreparedEffects {
            bound_set_configs: verdict.bound_set_configs.clone(),
            discards_statements: verdict.discards_statements,
            resets_context: verdict.resets_context,
            wipes_settings: verdict.wipes_settings,
            setting_changes: verdict.setting_changes.clone(),
            channel_ops: self.channel_ops_of(&verdict),
        };
        if effects.any() {
            self.prepared_effects.insert(name.to_owned(), effects);
        } else if !self.prepared_effects.is_empty() {
            self.prepared_effects.remove(name);
        }
        if verdict.untracked_settings {
            self.settings_untracked = true;
        }
        self.channels.note_notify(&verdict);
        Ok(())
    }

    /// A Bind of a prepared statement with effects: a reset restores the
    /// context after the batch's Sync; setting changes are noted;
    /// set_config() calls with bind parameters are judged with their values.
    fn bind_effects(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        if self.prepared_effects.is_empty() {
            return Ok(());
        }
        let Some(bind) = Bind::read(frame) else { return Ok(()) };
        let Some(effects) = self.prepared_effects.get(bind.statement) else { return Ok(()) };
        let mut bound = Inspection::default();
        if !effects.bound_set_configs.is_empty() {
            let values =
                BindValues::read(bind.rest).ok_or_else(|| ClientError::protocol_violation("malformed Bind message"))?;
            for call in &effects.bound_set_configs {
                judge_bound_set_config(call, &values, self.guard.tenant_setting(), &mut bound)?;
            }
        }
        self.check_search_paths(&bound.search_paths)?;
        self.statements_discarded_on_sync |= effects.discards_statements;
        if effects.resets_context {
            self.batches.reset_at_sync();
        }
        self.settings_wiped |= effects.wipes_settings;
        self.setting_changes.extend(effects.setting_changes.iter().cloned());
        self.setting_changes.extend(bound.setting_changes);
        self.settings_untracked |= bound.untracked_settings;
        self.channel_ops.extend(effects.channel_ops.iter().cloned());
        Ok(())
    }

    /// The client's statements are gone (DISCARD ALL, DEALLOCATE ALL), and so
    /// are the server session's.
    fn forget_statements(&mut self, server: Option<&mut ServerStatements>) {
        // Their effects go with them: Binds need no reading any more.
        self.prepared_effects.clear();
        self.context_statements.clear();
        if let Some(statements) = self.statements.as_mut() {
            statements.clear();
        }
        if let Some(server) = server {
            server.clear();
        }
    }

    /// In transaction pooling, a statement that needs a whole session either
    /// pins the client or is refused.
    fn session_feature(&mut self, needs_session: bool) -> Option<ClientError> {
        match (needs_session, self.session_features) {
            (true, Some(SessionFeatures::Refuse)) => Some(ClientError::error(
                crate::error::sqlstate::FEATURE_NOT_SUPPORTED,
                "this statement needs a whole server session, which transaction pooling does not give \
                 (pool.session_features = \"refuse\")",
            )),
            (true, Some(SessionFeatures::Pin)) => {
                self.session_state_used = true;
                None
            }
            _ => None,
        }
    }

    /// True when server ErrorResponses must be read whole (a marker may answer).
    pub(crate) fn reads_server_errors(&self) -> bool {
        self.markers.pending()
    }

    /// Replaces the server's error for a marker with pgtenant's refusal.
    /// `None` means forward the frame unchanged.
    pub(crate) fn server_error(&mut self, frame: &[u8]) -> Option<BytesMut> {
        self.markers.server_error(frame)
    }

    /// The client's last Query or Parse reset a setting pgtenant must put
    /// back (a startup value): handled like a context reset, before the
    /// client's next statement.
    pub(crate) fn restore_after(&mut self, tag: u8) {
        self.batches.restore_after(tag);
    }

    /// Accounts for one ReadyForQuery answering the client. True when the
    /// context must be sent now because a reset wiped it.
    pub(crate) fn client_ready(&mut self, failed_transaction: bool) -> bool {
        self.batches.client_ready(failed_transaction)
    }

    /// A NotificationResponse as the client sees it (`None`: not its tenant's).
    pub(crate) fn notification(&self, frame: &[u8]) -> Option<BytesMut> {
        self.channels.notification(frame)
    }
}

/// The text of a Query or Parse. `Err(None)`: not UTF-8 but harmless by the
/// pre-scan, forward it unread; `Err(Some(_))`: not UTF-8 and risky, refuse it.
fn statement_text(bytes: &[u8]) -> Result<&str, Option<ClientError>> {
    match std::str::from_utf8(bytes) {
        Ok(sql) => Ok(sql),
        Err(_) if guard::prescan::needs_parse(&String::from_utf8_lossy(bytes)) => Err(Some(ClientError::error(
            crate::error::sqlstate::UNTRANSLATABLE_CHARACTER,
            "pgtenant can only inspect statements sent as UTF-8",
        ))),
        Err(_) => Err(None),
    }
}

/// The refusal of a search_path that names another tenant's schema.
pub(crate) fn foreign_schema(schema: &str) -> ClientError {
    ClientError::error(
        crate::error::sqlstate::INSUFFICIENT_PRIVILEGE,
        format!(
            "search_path may not name schema \"{schema}\": it belongs to another tenant, and pgtenant keeps \
             each tenant's schema to its own sessions"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(sql: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        write_message(&mut out, client::QUERY, |b| put_cstr(b, sql));
        out.to_vec()
    }

    #[test]
    fn an_assume_literals_column_alias_goes_back_quoted() {
        let guard = Arc::new(Guard::new("app.tenant_id"));
        let mut policy = ClientPolicy::new(
            guard,
            "m_".into(),
            "t.".into(),
            None,
            StatementNamespaces::of(&[0; 32], "t"),
            Default::default(),
            1,
        );
        policy.allow_assume();
        let hostile = "SELECT pgtenant.assume('ey.x.y') AS \"t\"\" FROM accounts; --\"";
        assert_eq!(policy.before_frame(&query(hostile), true, false), FrameStep::Verify("ey.x.y".into()));
        policy.set_verified(Ok("switch 00 app.tenant_id v2.token".into()));
        let mut out = BytesMut::new();
        policy.client_frame(&query(hostile), &mut out, None).unwrap();
        assert_eq!(policy.take_own_exchanges(), 1);
        let sent = String::from_utf8_lossy(&out);
        assert!(
            sent.ends_with("SELECT pgtenant.current_tenant() AS \"t\"\" FROM accounts; --\"\0"),
            "the alias stays one identifier: {sent:?}"
        );
        assert!(!sent.contains("ey.x.y"), "the user's token never reaches the server");
    }

    #[test]
    fn refuse_mode_replaces_session_features_with_a_marker() {
        let guard = Arc::new(Guard::new("app.tenant_id"));
        let mut policy = ClientPolicy::new(
            guard,
            "m_".into(),
            "t.".into(),
            Some(SessionFeatures::Refuse),
            StatementNamespaces::of(&[0; 32], "t"),
            Default::default(),
            1,
        );
        let mut out = BytesMut::new();
        policy.client_frame(&query("PREPARE p AS SELECT 1"), &mut out, None).unwrap();
        assert!(String::from_utf8_lossy(&out).contains("SELECT m_1"), "{out:?}");
        assert!(policy.reads_server_errors());
    }
}
