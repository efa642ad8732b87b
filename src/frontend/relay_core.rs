//! The relay's core, without I/O: the four buffers between a client and a
//! server session and what moves bytes between them. Client frames go to the
//! server's queue (the few the policy must read are read whole, the rest
//! stream through unread); server frames go to the client's queue, minus the
//! replies to pgtenant's own exchanges, with every ReadyForQuery noted. What
//! the core needs of the server session it runs on comes through
//! [`ServerSide`], so tests and the fuzzer drive it with bytes alone;
//! `relay.rs` is the async loop around it.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Buf, BytesMut};

use super::attach::OwnExchange;
use super::failures;
use super::listening::SessionListens;
use super::policy::{ClientPolicy, FrameStep};
pub use super::server_side::{ScriptedServerSide, ServerSide, SCRIPTED_CONTEXT_EXCHANGE};
use super::statements::Edit;
use crate::audit::AuditTrail;
use crate::error::{sqlstate, ClientError};
use crate::protocol::backend::write_message;
use crate::protocol::frame::{peek_header, FrameError};
use crate::protocol::messages::{self, client, parameter_status, server};
use crate::setting_rules;
use crate::tenant_stats::TenantSession;

/// Transaction state of the server session, from its last ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TxnStatus {
    fn from_byte(b: u8) -> Option<TxnStatus> {
        match b {
            b'I' => Some(TxnStatus::Idle),
            b'T' => Some(TxnStatus::InTransaction),
            b'E' => Some(TxnStatus::Failed),
            _ => None,
        }
    }
}

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// The client sent Terminate.
    ClientTerminated,
    /// The client's socket closed or failed.
    ClientGone,
    /// The server's socket closed or failed.
    ServerGone,
    /// pgtenant ended the session with this error (already sent when possible).
    Fatal(ClientError),
}

/// The buffers and the frame state of one client's relay.
pub struct RelayCore {
    pub client_in: BytesMut,
    pub server_in: BytesMut,
    pub to_client: BytesMut,
    pub to_server: BytesMut,
    /// Bytes of a client frame still to pass through unread.
    pub client_frame_left: usize,
    /// Bytes of a server frame still to pass through (or drop) unread.
    pub server_frame_left: usize,
    server_frame_dropped: bool,
    /// pgtenant's own exchanges sent and not yet answered (each by one
    /// ReadyForQuery that is not the client's), in order.
    pub own_pending: VecDeque<OwnExchange>,
    last_server_tag: u8,
    /// The last frame queued for the client is a ReadyForQuery: the server waits.
    pub to_client_ends_ready: bool,
    pub status: TxnStatus,
    max_message_bytes: usize,
    pub policy: ClientPolicy,
    /// Client messages wait for a server session to be attached.
    pub wants_server: bool,
    /// The token a service login's assume presented, for the relay to
    /// verify before the frame that carries it is taken.
    pub verification: Option<String>,
    /// The server sent the client an error since its last ReadyForQuery.
    error_in_batch: bool,
    /// The tenant's counters (none for a service login's session).
    pub(crate) stats: Option<TenantSession>,
    /// What the session tells the audit log, when there is one (boxed:
    /// most sessions have none, and idle sessions should cost little).
    pub(crate) audit: Option<Box<AuditTrail>>,
    /// When the client's current transaction began (its first message since
    /// the server was last idle), while counting.
    transaction_began: Option<Instant>,
    /// In transaction pooling, from the client's first LISTEN/UNLISTEN: its
    /// channels, which the pool's listen hub serves (boxed: most sessions
    /// never listen, and idle sessions should cost little).
    pub(crate) listens: Option<Box<SessionListens>>,
}

impl RelayCore {
    /// A core whose first bytes to each side are queued: `to_server` holds
    /// pgtenant's own `exchanges`, which the server answers first.
    pub fn new(
        policy: ClientPolicy,
        max_message_bytes: usize,
        to_client: BytesMut,
        to_server: BytesMut,
        exchanges: Vec<OwnExchange>,
    ) -> RelayCore {
        RelayCore {
            client_in: BytesMut::new(),
            server_in: BytesMut::new(),
            to_client,
            to_server,
            client_frame_left: 0,
            server_frame_left: 0,
            server_frame_dropped: false,
            own_pending: exchanges.into(),
            last_server_tag: 0,
            to_client_ends_ready: false,
            status: TxnStatus::Idle,
            max_message_bytes,
            policy,
            wants_server: false,
            verification: None,
            error_in_batch: false,
            stats: None,
            audit: None,
            transaction_began: None,
            listens: None,
        }
    }

    /// The server session is idle and nothing is in flight either way: it may
    /// go back to the pool.
    pub(crate) fn at_rest(&self) -> bool {
        self.status == TxnStatus::Idle
            && self.own_pending.is_empty()
            && self.policy.at_rest()
            && self.server_frame_left == 0
            && self.server_in.is_empty()
            && self.to_server.is_empty()
            && self.client_frame_left == 0
    }

    /// Everything sent to the server has been answered to the client.
    pub(crate) fn answered(&self) -> bool {
        self.to_client_ends_ready && self.own_pending.is_empty() && self.server_frame_left == 0 && self.policy.at_rest()
    }

    /// Gives back buffer memory between transactions, so that thousands of
    /// idle clients cost little.
    pub(crate) fn shrink_idle_buffers(&mut self) {
        for buf in [&mut self.client_in, &mut self.server_in, &mut self.to_client, &mut self.to_server] {
            if buf.is_empty() && buf.capacity() > 0 {
                *buf = BytesMut::new();
            }
        }
    }

    /// A newly attached server session: its own exchanges (`prefix`) go
    /// ahead of what the client queued.
    pub(crate) fn attached(&mut self, mut prefix: BytesMut, exchanges: Vec<OwnExchange>) {
        prefix.extend_from_slice(&self.to_server);
        self.to_server = prefix;
        self.policy.own_batches_sent(exchanges.len() as u32);
        self.own_pending.extend(exchanges);
        self.status = TxnStatus::Idle;
    }

    /// Moves client frames to the server's queue: the few the policy reads
    /// whole, the rest streamed through unread.
    pub fn take_client_frames(&mut self, side: &mut impl ServerSide) -> Result<(), RelayEnd> {
        loop {
            if self.client_frame_left > 0 {
                let n = self.client_frame_left.min(self.client_in.len());
                self.to_server.extend_from_slice(&self.client_in[..n]);
                self.client_in.advance(n);
                self.client_frame_left -= n;
                if self.client_frame_left > 0 {
                    return Ok(());
                }
            }
            if self.policy.holding() || self.listens.as_ref().is_some_and(|l| l.syncing()) {
                // A ReadyForQuery brings the relay back here; after a sync the
                // client's channels are settled before its next statement.
                return Ok(());
            }
            let header = match peek_header(&self.client_in, self.max_message_bytes) {
                Ok(Some(header)) => header,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fatal(client_frame_error(e))),
            };
            if header.tag == client::TERMINATE {
                return Err(RelayEnd::ClientTerminated);
            }
            if !side.attached() && side.transaction_pooling() {
                if self.answer_parse_without_server() {
                    continue;
                }
                // Messages are judged against the server session that will run
                // them; the relay loop attaches one first.
                self.wants_server = true;
                return Ok(());
            }
            if self.policy.inspects(header.tag) {
                if self.client_in.len() < header.frame_len {
                    return Ok(());
                }
                let quiet = self.own_pending.is_empty() && self.policy.quiet();
                let failed = self.status == TxnStatus::Failed;
                match self.policy.before_frame(&self.client_in[..header.frame_len], quiet, failed) {
                    FrameStep::Ready => {}
                    // A ReadyForQuery brings the relay back here.
                    FrameStep::WaitForQuiet => return Ok(()),
                    FrameStep::Verify(token) => {
                        self.verification = Some(token);
                        return Ok(());
                    }
                }
                let frame = self.client_in.split_to(header.frame_len);
                // Own exchanges queued ahead (a context refresh at checkout)
                // keep their place: nothing of the client's is in flight.
                if self.policy.quiet() && header.tag == client::QUERY {
                    self.replay_listens_for_notify(&frame);
                }
                self.count_client_message(header.tag, header.frame_len);
                if let Some(audit) = &mut self.audit {
                    audit.client_message(header.tag, &frame, || side.tenant_id());
                }
                if let Err(error) = self.policy.client_frame(&frame, &mut self.to_server, side.statements()) {
                    return Err(self.fatal(error));
                }
                if self.policy.take_released() {
                    side.assumption_released();
                }
                let own = self.policy.take_own_exchanges();
                self.own_pending.extend(std::iter::repeat_n(OwnExchange::Required, own));
                let channel_ops = self.policy.take_channel_ops();
                if !channel_ops.is_empty() {
                    self.listens.get_or_insert_with(Box::default).sent(channel_ops);
                }
                let changes = self.policy.take_setting_changes();
                if !changes.is_empty() && side.settings_changed(changes) {
                    self.policy.restore_after(header.tag);
                }
                if self.policy.take_settings_untracked() {
                    side.mark_dirty();
                }
                if self.policy.session_state_used() {
                    side.pin();
                }
                continue;
            }
            if let Some(audit) = &mut self.audit {
                if matches!(header.tag, client::BIND | client::EXECUTE) {
                    // The audit log needs the names in it: the frame is read whole.
                    if self.client_in.len() < header.frame_len {
                        return Ok(());
                    }
                    audit.client_message(header.tag, &self.client_in[..header.frame_len], || side.tenant_id());
                } else if matches!(header.tag, client::SYNC | client::FUNCTION_CALL) {
                    audit.batch_sent();
                }
            }
            self.policy.streamed(header.tag);
            self.count_client_message(header.tag, header.frame_len);
            self.client_frame_left = header.frame_len;
        }
    }

    /// Moves server frames to the client's queue, dropping the replies to
    /// pgtenant's own exchanges and noting each ReadyForQuery.
    pub fn take_server_frames(&mut self, side: &mut impl ServerSide) -> Result<(), RelayEnd> {
        loop {
            if self.server_frame_left > 0 {
                let n = self.server_frame_left.min(self.server_in.len());
                if !self.server_frame_dropped {
                    self.to_client.extend_from_slice(&self.server_in[..n]);
                }
                self.server_in.advance(n);
                self.server_frame_left -= n;
                if self.server_frame_left > 0 {
                    return Ok(());
                }
            }
            let header = match peek_header(&self.server_in, usize::MAX) {
                Ok(Some(header)) => header,
                Ok(None) => return Ok(()),
                Err(e) => {
                    tracing::error!(error = ?e, "malformed frame from upstream");
                    return Err(self.fatal(failures::server_malformed("message")));
                }
            };
            let tracked_reply = matches!(header.tag, server::PARSE_COMPLETE | server::CLOSE_COMPLETE)
                && self.own_pending.is_empty()
                && self.policy.tracking_replies();
            let whole = tracked_reply
                || match header.tag {
                    server::READY_FOR_QUERY | server::NOTIFICATION_RESPONSE | server::PARAMETER_STATUS => true,
                    server::ERROR_RESPONSE => {
                        !self.own_pending.is_empty()
                            || self.policy.reads_server_errors()
                            || side.awaits_cancellation()
                            || self.stats.is_some()
                            || self.audit.is_some()
                    }
                    server::COMMAND_COMPLETE => self.audit.is_some() || self.listens.is_some(),
                    server::DATA_ROW => self.own_pending.front() == Some(&OwnExchange::ListenSync),
                    _ => false,
                };
            if whole && self.server_in.len() < header.frame_len {
                return Ok(());
            }
            if tracked_reply {
                match self.policy.reply_edit(header.tag) {
                    Edit::Forward => {}
                    Edit::Drop => {
                        self.server_in.advance(header.frame_len);
                        continue;
                    }
                    Edit::ToParseComplete => {
                        self.server_in.advance(header.frame_len);
                        write_message(&mut self.to_client, server::PARSE_COMPLETE, |_| {});
                        self.last_server_tag = server::PARSE_COMPLETE;
                        self.to_client_ends_ready = false;
                        continue;
                    }
                }
            }
            if header.tag == server::ERROR_RESPONSE && self.own_pending.is_empty() {
                self.error_in_batch = true;
                if let Some(listens) = self.listens.as_mut() {
                    listens.note_error();
                }
            }
            match header.tag {
                server::READY_FOR_QUERY => {
                    let frame = &self.server_in[..header.frame_len];
                    let status = messages::ready_status(frame).and_then(TxnStatus::from_byte);
                    let Some(status) = status else {
                        return Err(self.fatal(failures::server_malformed("ReadyForQuery")));
                    };
                    self.status = status;
                    self.policy.batch_done();
                    if let Some(own) = self.own_pending.pop_front() {
                        if own == OwnExchange::ListenSync {
                            if let Some(listens) = self.listens.as_mut() {
                                listens.synced();
                            }
                        }
                        self.server_in.advance(header.frame_len);
                        continue;
                    }
                    // This ReadyForQuery goes to the client; a context exchange
                    // it releases is queued for the server behind it.
                    observe::to_client(
                        self.stats.as_ref(),
                        None,
                        &self.server_in[..header.frame_len],
                        header.frame_len,
                        false,
                    );
                    self.count_client_ready(status);
                    if let Some(audit) = &mut self.audit {
                        audit.ready(status == TxnStatus::Idle);
                    }
                    let released = self.policy.client_ready(status == TxnStatus::Failed);
                    let reverted = side.batch_ended(status, std::mem::take(&mut self.error_in_batch));
                    self.policy.hold_each_batch(side.transaction_scoped());
                    self.server_frame_dropped = false;
                    self.server_frame_left = header.frame_len;
                    self.last_server_tag = server::READY_FOR_QUERY;
                    self.to_client_ends_ready = true;
                    let exchange = if (released || reverted) && side.attached() {
                        let wiped = released && self.policy.take_settings_wiped();
                        side.context_exchange(wiped, status == TxnStatus::InTransaction)
                    } else if status == TxnStatus::Idle && self.policy.quiet() && side.attached() {
                        // Nothing of the client's is in flight: the exchange's
                        // ReadyForQuery is the next one the server sends.
                        side.context_refresh()
                    } else {
                        None
                    };
                    if let Some((exchange, exchanges)) = exchange {
                        self.to_server.extend_from_slice(&exchange);
                        self.policy.own_batches_sent(exchanges.len() as u32);
                        self.own_pending.extend(exchanges);
                    }
                    if status == TxnStatus::Idle {
                        self.queue_listen_sync(side.attached());
                    }
                    continue;
                }
                // The pool's listen hub delivers this client's notifications;
                // the server session listens only for a moment, and what it
                // delivers (the client's own NOTIFY) the hub's copy does not repeat.
                server::NOTIFICATION_RESPONSE if self.listens.is_some() => {
                    self.server_session_notification(header.frame_len);
                    continue;
                }
                server::DATA_ROW if self.own_pending.front() == Some(&OwnExchange::ListenSync) => {
                    let channel = messages::first_column(&self.server_in[..header.frame_len]).map(str::to_owned);
                    if let (Some(listens), Some(channel)) = (self.listens.as_mut(), channel) {
                        listens.server_listened(channel);
                    }
                }
                // Read only for a session with channel statements in flight: a
                // transaction's COMMIT or ROLLBACK settles its UNLISTENs.
                server::COMMAND_COMPLETE if self.listens.is_some() && self.own_pending.is_empty() => {
                    let frame = &self.server_in[..header.frame_len.min(self.server_in.len())];
                    if let (Some(listens), Some(verb)) = (self.listens.as_mut(), messages::command_verb(frame)) {
                        listens.note_command(verb);
                    }
                }
                server::NOTIFICATION_RESPONSE => {
                    let rewritten = self.policy.notification(&self.server_in[..header.frame_len]);
                    self.server_in.advance(header.frame_len);
                    if let Some(frame) = rewritten {
                        observe::to_client(self.stats.as_ref(), None, &frame, frame.len(), false);
                        self.to_client.extend_from_slice(&frame);
                        self.last_server_tag = server::NOTIFICATION_RESPONSE;
                        self.to_client_ends_ready = false;
                    }
                    continue;
                }
                // Only read whole when a cancel is awaited (see `whole`): an error
                // that arrives in pieces otherwise streams through.
                server::ERROR_RESPONSE
                    if self.own_pending.is_empty()
                        && side.awaits_cancellation()
                        && side.is_its_cancellation(&self.server_in[..header.frame_len]) =>
                {
                    self.server_in.advance(header.frame_len);
                    let error = side.timeout_error();
                    observe::error(
                        self.stats.as_ref(),
                        self.audit.as_deref_mut(),
                        Some(error.code.code().to_owned()),
                        false,
                    );
                    error.encode(&mut self.to_client);
                    self.last_server_tag = server::ERROR_RESPONSE;
                    self.to_client_ends_ready = false;
                    continue;
                }
                server::ERROR_RESPONSE if self.own_pending.is_empty() && self.policy.reads_server_errors() => {
                    if let Some(replacement) = self.policy.server_error(&self.server_in[..header.frame_len]) {
                        observe::to_client(
                            self.stats.as_ref(),
                            self.audit.as_deref_mut(),
                            &replacement,
                            replacement.len(),
                            true,
                        );
                        self.server_in.advance(header.frame_len);
                        self.to_client.extend_from_slice(&replacement);
                        self.last_server_tag = server::ERROR_RESPONSE;
                        self.to_client_ends_ready = false;
                        continue;
                    }
                }
                server::ERROR_RESPONSE if !self.own_pending.is_empty() => {
                    let error =
                        failures::own_exchange(messages::body(&self.server_in[..header.frame_len]).unwrap_or_default());
                    match self.own_pending.front() {
                        Some(OwnExchange::Required | OwnExchange::ListenSync) => return Err(self.fatal(error)),
                        Some(OwnExchange::ClientSetting | OwnExchange::RestoredSetting) => {
                            tracing::warn!(code = %error.code, message = %error.message, "a client setting could not be replayed");
                        }
                        Some(OwnExchange::ListenReplay) => {
                            tracing::debug!(code = %error.code, "listening before the client's NOTIFY failed")
                        }
                        // A setting that never took effect has nothing to reset.
                        _ => {
                            tracing::debug!(code = %error.code, message = %error.message, "resetting a setting failed")
                        }
                    }
                }
                server::PARAMETER_STATUS => {
                    let status = messages::body(&self.server_in[..header.frame_len]).and_then(parameter_status);
                    if let Some((name, value)) = status {
                        if !setting_rules::lexing_is_safe(name, value) {
                            // Something the guard did not see changed how the
                            // server reads text: this server session is done.
                            tracing::error!(
                                setting = name,
                                value,
                                "the server session now reads statements differently"
                            );
                            let error = ClientError::fatal(
                                sqlstate::INSUFFICIENT_PRIVILEGE,
                                format!("{name} was changed to \"{value}\", which pgtenant does not allow"),
                            );
                            return Err(self.fatal(error));
                        }
                        side.note_parameter(name, value);
                    }
                }
                _ => {}
            }
            // pgtenant's own replies are dropped, but for the ParameterStatus
            // of a startup setting put back after the client's RESET.
            let own = !self.own_pending.is_empty();
            self.server_frame_dropped = own
                && !(header.tag == server::PARAMETER_STATUS
                    && self.own_pending.front() == Some(&OwnExchange::RestoredSetting));
            self.server_frame_left = header.frame_len;
            if !self.server_frame_dropped {
                // What of it is here: all of an ErrorResponse or CommandComplete (read whole above).
                let here = &self.server_in[..header.frame_len.min(self.server_in.len())];
                observe::to_client(self.stats.as_ref(), self.audit.as_deref_mut(), here, header.frame_len, false);
            }
            if !own {
                self.last_server_tag = header.tag;
                self.to_client_ends_ready = header.tag == server::READY_FOR_QUERY;
            }
        }
    }

    /// Queues `error` for the client unless a server frame is half-forwarded.
    pub(crate) fn fatal(&mut self, error: ClientError) -> RelayEnd {
        if self.server_frame_left == 0 || self.server_frame_dropped {
            error.encode(&mut self.to_client);
        }
        RelayEnd::Fatal(error)
    }

    /// Tells the client why the session ends when the server vanished without a word.
    pub(crate) fn server_closed_notice(&mut self) {
        let server_said_why = self.last_server_tag == server::ERROR_RESPONSE;
        if !server_said_why && (self.server_frame_left == 0 || self.server_frame_dropped) {
            failures::server_closed().encode(&mut self.to_client);
        }
    }
}

fn client_frame_error(e: FrameError) -> ClientError {
    match e {
        FrameError::BadLength(len) => ClientError::protocol_violation(format!("invalid message length {len}")),
        FrameError::TooLarge { tag, frame_len } => ClientError::protocol_violation(format!(
            "message of type {:?} is {frame_len} bytes, more than this server accepts",
            tag as char
        )),
    }
}

// What the relay notes on its way for the tenant's counters and the audit log.
#[path = "relay_observe.rs"]
mod observe;

// Transaction pooling's LISTEN through the pool's listen hub, and the Parse
// answered without a server session.
#[path = "relay_hub.rs"]
mod hub;

#[cfg(test)]
#[path = "relay_core_tests.rs"]
mod tests;
