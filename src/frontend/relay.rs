//! The relay between one client and one server session.
//!
//! Frames are forwarded as raw bytes: only headers are decoded, plus the
//! bodies of the few messages pgtenant must read (ReadyForQuery for the
//! transaction state; replies to its own context exchange). Large frames
//! stream through without being buffered whole. One task polls both sockets
//! in both directions, so neither side can block the other into a deadlock,
//! and a full outbound buffer stops reading from the side that fills it.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;

use super::attach::{own_exchange_error, Attached, Attachment, OwnExchange};
use super::policy::ClientPolicy;
use super::request_timer::RequestTimer;
use super::statements::Edit;
use super::stream::{poll_drain, poll_read_some, ClientStream};
use crate::config::PoolMode;
use crate::error::{sqlstate, ClientError};
use crate::protocol::backend::parse_parameter_status;
use crate::protocol::frame::{peek_header, FrameError, HEADER_LEN};
use crate::sessions::{SessionHandle, SessionState};
use crate::setting_rules;
use crate::upstream::pool::Lease;

/// Stop reading from a side while this much is waiting to be written to the other.
const HIGH_WATER: usize = 256 * 1024;

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

/// Per-session relay state.
pub struct Relay<C> {
    client: C,
    /// The server session serving the client now; in transaction pooling,
    /// only between the first message of a transaction and its end.
    server: Option<Lease>,
    attachment: Attachment,
    client_in: BytesMut,
    server_in: BytesMut,
    to_client: BytesMut,
    to_server: BytesMut,
    /// Bytes of a client frame still to pass through unread.
    client_frame_left: usize,
    /// Bytes of a server frame still to pass through (or drop) unread.
    server_frame_left: usize,
    server_frame_dropped: bool,
    /// pgtenant's own exchanges sent and not yet answered (each by one
    /// ReadyForQuery that is not the client's), in order.
    own_pending: VecDeque<OwnExchange>,
    last_server_tag: u8,
    /// The last frame queued for the client is a ReadyForQuery: the server waits.
    to_client_ends_ready: bool,
    status: TxnStatus,
    max_message_bytes: usize,
    policy: ClientPolicy,
    /// Client messages wait for a server session to be attached.
    wants_server: bool,
    /// The tenant's limit on how long a request may keep the server busy.
    timer: RequestTimer,
}

#[derive(Default)]
struct Progress {
    client_data: bool,
    server_data: bool,
    client_closed: bool,
    server_closed: bool,
    request_timed_out: bool,
}

impl Relay<ClientStream> {
    /// A relay whose first bytes to each side are already queued; the server
    /// will answer the attachment's own exchanges before the client's.
    pub fn new(
        client: ClientStream,
        attached: Attached,
        attachment: Attachment,
        to_client: BytesMut,
        max_message_bytes: usize,
        mut policy: ClientPolicy,
    ) -> Self {
        let Attached { lease, prefix: to_server, exchanges } = attached;
        policy.set_server_pid(lease.conn_ref().cancel.process_id);
        Relay {
            client,
            server: Some(lease),
            attachment,
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
            timer: RequestTimer::default(),
        }
    }

    /// Cancels a request that keeps the server busy longer than `limit`.
    pub fn set_statement_timeout(&mut self, limit: Option<std::time::Duration>) {
        self.timer = RequestTimer::new(limit);
    }

    /// Starts the clock on a request just handed to the server.
    fn start_request_timer(&mut self) {
        if self.server.is_some() && !self.to_server.is_empty() {
            self.timer.start();
        }
    }

    /// The server answered everything the client sent: the clock stops.
    fn stop_request_timer_if_answered(&mut self) {
        if !self.timer.is_idle()
            && self.to_client_ends_ready
            && self.own_pending.is_empty()
            && self.server_frame_left == 0
            && self.policy.at_rest()
        {
            self.timer.stop();
        }
    }

    /// Relays until either side ends; then hands the server session back
    /// (when it is idle and clean) or closes it.
    pub async fn run(&mut self, session: &mut SessionHandle) -> RelayEnd {
        let end = self.relay(session).await;
        if matches!(end, RelayEnd::Fatal(_)) {
            // Best effort: let the client read the error before the socket closes.
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(1), self.client.write_all(&self.to_client)).await;
        }
        if let Some(lease) = self.server.take() {
            let clean = !matches!(end, RelayEnd::ServerGone | RelayEnd::Fatal(_))
                && self.server_at_rest()
                && self.timer.take_session_reusable();
            // A session not known to be idle is closed: the backend rolls back
            // whatever the client left open and exits.
            let wiped = self.policy.take_settings_wiped();
            self.attachment.release(lease, clean, wiped);
        }
        end
    }

    /// The server session is idle and nothing is in flight either way.
    fn server_at_rest(&self) -> bool {
        self.status == TxnStatus::Idle
            && self.own_pending.is_empty()
            && self.policy.at_rest()
            && self.server_frame_left == 0
            && self.server_in.is_empty()
            && self.to_server.is_empty()
            && self.client_frame_left == 0
    }

    /// In transaction pooling, returns the server session at a transaction boundary.
    fn release_if_at_rest(&mut self) {
        if self.attachment.mode != PoolMode::Transaction || self.attachment.pinned || !self.server_at_rest() {
            return;
        }
        if let Some(lease) = self.server.take() {
            let wiped = self.policy.take_settings_wiped();
            let reusable = self.timer.take_session_reusable();
            self.attachment.release(lease, reusable, wiped);
        }
        self.shrink_idle_buffers();
    }

    /// Gives back buffer memory between transactions, so that thousands of
    /// idle clients cost little.
    fn shrink_idle_buffers(&mut self) {
        for buf in [&mut self.client_in, &mut self.server_in, &mut self.to_client, &mut self.to_server] {
            if buf.is_empty() && buf.capacity() > 0 {
                *buf = BytesMut::new();
            }
        }
    }

    /// Checks a server session out when the client has something to send.
    async fn attach_if_needed(&mut self) -> Result<(), RelayEnd> {
        if self.server.is_some() || (self.to_server.is_empty() && !self.wants_server) {
            return Ok(());
        }
        self.wants_server = false;
        if self.policy.take_settings_wiped() {
            self.attachment.reset_settings();
        }
        let attached = match self.attachment.acquire().await {
            Ok(attached) => attached,
            Err(error) => return Err(self.fatal(error)),
        };
        let Attached { lease, mut prefix, exchanges } = attached;
        self.policy.set_server_pid(lease.conn_ref().cancel.process_id);
        prefix.extend_from_slice(&self.to_server);
        self.to_server = prefix;
        self.policy.own_batches_sent(exchanges.len() as u32);
        self.own_pending.extend(exchanges);
        self.status = TxnStatus::Idle;
        self.server = Some(lease);
        if !self.client_in.is_empty() {
            self.take_client_frames()?;
        }
        self.start_request_timer();
        Ok(())
    }

    /// Queues bytes the client sent before the relay started.
    pub fn push_client_bytes(&mut self, bytes: &[u8]) {
        self.client_in.extend_from_slice(bytes);
    }

    async fn relay(&mut self, session: &mut SessionHandle) -> RelayEnd {
        let entry = Arc::clone(session.entry());
        // One waiter for the whole session: registering a fresh one on every
        // turn of the loop costs two lock round trips per message.
        let ended = session.ended();
        tokio::pin!(ended);
        if !self.client_in.is_empty() {
            if let Err(end) = self.take_client_frames() {
                return end;
            }
        }
        loop {
            self.release_if_at_rest();
            if self.server.is_none() {
                self.shrink_idle_buffers();
            }
            let needs_server = self.server.is_none() && (self.wants_server || !self.to_server.is_empty());
            if needs_server {
                if let Err(end) = self.attach_if_needed().await {
                    return end;
                }
            }
            // poll_io keeps no state between polls, so losing this race is harmless.
            let polled = tokio::select! {
                biased;
                reason = &mut ended => return self.fatal(reason),
                polled = poll_fn(|cx| self.poll_io(cx)) => polled,
            };
            let progress = match polled {
                Ok(progress) => progress,
                Err(end) => return end,
            };
            if progress.client_data {
                entry.set_state(SessionState::Active);
                if let Err(end) = self.take_client_frames() {
                    return end;
                }
                if self.policy.session_state_used() {
                    self.attachment.pinned = true;
                }
                self.start_request_timer();
            }
            if progress.request_timed_out {
                if let Some(lease) = &self.server {
                    self.timer.cancel(lease.conn_ref().cancel.clone());
                }
            }
            if progress.server_data {
                if let Err(end) = self.take_server_frames() {
                    return end;
                }
                // A ReadyForQuery may have released client messages held for a reset.
                if !self.policy.holding() && !self.client_in.is_empty() {
                    if let Err(end) = self.take_client_frames() {
                        return end;
                    }
                }
                if self.own_pending.is_empty() && self.server_frame_left == 0 && self.to_client_ends_ready {
                    entry.set_state(match self.status {
                        TxnStatus::Idle => SessionState::Idle,
                        TxnStatus::InTransaction => SessionState::IdleInTransaction,
                        TxnStatus::Failed => SessionState::IdleInFailedTransaction,
                    });
                }
                if self.policy.session_state_used() {
                    self.attachment.pinned = true;
                }
                self.stop_request_timer_if_answered();
                self.release_if_at_rest();
            }
            if progress.server_closed {
                self.server_closed_notice();
                let _ = self.client.write_all(&self.to_client).await;
                return RelayEnd::ServerGone;
            }
            if progress.client_closed {
                return RelayEnd::ClientGone;
            }
        }
    }

    /// Writes what it can, then reads what is there. Ready when something was read.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Result<Progress, RelayEnd>> {
        if let Some(lease) = self.server.as_mut() {
            if poll_drain(&mut lease.conn().stream, cx, &mut self.to_server).is_err() {
                return Poll::Ready(Err(RelayEnd::ServerGone));
            }
        }
        if poll_drain(&mut self.client, cx, &mut self.to_client).is_err() {
            return Poll::Ready(Err(RelayEnd::ClientGone));
        }
        let mut progress = Progress::default();
        // An idle client holds no read buffer: wait for readiness before allocating one.
        let client_ready = self.client_in.capacity() > 0 || self.client.poll_read_ready(cx).is_ready();
        if self.to_server.len() < HIGH_WATER && client_ready {
            match poll_read_some(&mut self.client, cx, &mut self.client_in) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => progress.client_closed = true,
                Poll::Ready(Ok(_)) => progress.client_data = true,
                Poll::Pending => {}
            }
        }
        if let Some(lease) = self.server.as_mut().filter(|_| self.to_client.len() < HIGH_WATER) {
            match poll_read_some(&mut lease.conn().stream, cx, &mut self.server_in) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => progress.server_closed = true,
                Poll::Ready(Ok(_)) => progress.server_data = true,
                Poll::Pending => {}
            }
        }
        progress.request_timed_out = self.timer.poll_expired(cx);
        if progress.client_data
            || progress.server_data
            || progress.client_closed
            || progress.server_closed
            || progress.request_timed_out
        {
            Poll::Ready(Ok(progress))
        } else {
            Poll::Pending
        }
    }

    /// Moves client frames to the server's queue: the few the policy reads
    /// whole, the rest streamed through unread.
    fn take_client_frames(&mut self) -> Result<(), RelayEnd> {
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
            if self.policy.holding() {
                return Ok(());
            }
            let header = match peek_header(&self.client_in, self.max_message_bytes) {
                Ok(Some(header)) => header,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fatal(client_frame_error(e))),
            };
            if header.tag == b'X' {
                return Err(RelayEnd::ClientTerminated);
            }
            if self.server.is_none() && self.attachment.mode == PoolMode::Transaction {
                // Messages are judged against the server session that will run
                // them; the relay loop attaches one first.
                self.wants_server = true;
                return Ok(());
            }
            if self.policy.inspects(header.tag) {
                if self.client_in.len() < header.frame_len {
                    return Ok(());
                }
                let frame = self.client_in.split_to(header.frame_len);
                let statements = self.server.as_mut().map(|lease| &mut lease.conn().statements);
                if let Err(error) = self.policy.client_frame(&frame, &mut self.to_server, statements) {
                    return Err(self.fatal(error));
                }
                let changes = self.policy.take_setting_changes();
                if let (false, Some(lease)) = (changes.is_empty(), self.server.as_mut()) {
                    if self.attachment.note_setting_changes(lease, changes) {
                        self.policy.restore_after(header.tag);
                    }
                }
                if let (true, Some(lease)) = (self.policy.take_settings_untracked(), self.server.as_mut()) {
                    lease.conn().dirty = true;
                }
                if self.policy.session_state_used() {
                    self.attachment.pinned = true;
                }
                continue;
            }
            self.policy.streamed(header.tag);
            self.client_frame_left = header.frame_len;
        }
    }

    /// Moves server frames to the client's queue, dropping the replies to
    /// pgtenant's own exchanges and noting each ReadyForQuery.
    fn take_server_frames(&mut self) -> Result<(), RelayEnd> {
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
                    return Err(self.fatal(ClientError::fatal(
                        sqlstate::CONNECTION_FAILURE,
                        "pgtenant received a malformed message from the upstream server",
                    )));
                }
            };
            let tracked_reply =
                matches!(header.tag, b'1' | b'3') && self.own_pending.is_empty() && self.policy.tracking_replies();
            let whole = tracked_reply
                || match header.tag {
                    b'Z' | b'A' | b'S' => true,
                    b'E' => {
                        !self.own_pending.is_empty()
                            || self.policy.reads_server_errors()
                            || self.timer.awaits_cancellation()
                    }
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
                        self.to_client.extend_from_slice(b"1\0\0\0\x04");
                        self.last_server_tag = b'1';
                        self.to_client_ends_ready = false;
                        continue;
                    }
                }
            }
            match header.tag {
                b'Z' => {
                    let status = self.server_in.get(HEADER_LEN).copied().and_then(TxnStatus::from_byte);
                    let Some(status) = status else {
                        return Err(self.fatal(ClientError::fatal(
                            sqlstate::CONNECTION_FAILURE,
                            "pgtenant received a malformed ReadyForQuery from the upstream server",
                        )));
                    };
                    self.status = status;
                    self.policy.batch_done();
                    if self.own_pending.pop_front().is_some() {
                        self.server_in.advance(header.frame_len);
                        continue;
                    }
                    // This ReadyForQuery goes to the client; a context exchange
                    // it releases is queued for the server behind it.
                    let released = self.policy.client_ready(status == TxnStatus::Failed);
                    self.server_frame_dropped = false;
                    self.server_frame_left = header.frame_len;
                    self.last_server_tag = b'Z';
                    self.to_client_ends_ready = true;
                    if released {
                        if let Some(lease) = self.server.as_mut() {
                            let wiped = self.policy.take_settings_wiped();
                            let in_transaction = status == TxnStatus::InTransaction;
                            let (exchange, exchanges) = self.attachment.context_exchange(lease, wiped, in_transaction);
                            self.to_server.extend_from_slice(&exchange);
                            self.policy.own_batches_sent(exchanges.len() as u32);
                            self.own_pending.extend(exchanges);
                        }
                    }
                    continue;
                }
                b'A' => {
                    let rewritten = self.policy.notification(&self.server_in[..header.frame_len]);
                    self.server_in.advance(header.frame_len);
                    if let Some(frame) = rewritten {
                        self.to_client.extend_from_slice(&frame);
                        self.last_server_tag = b'A';
                        self.to_client_ends_ready = false;
                    }
                    continue;
                }
                b'E' if self.own_pending.is_empty()
                    && self.timer.is_its_cancellation(&self.server_in[..header.frame_len]) =>
                {
                    self.server_in.advance(header.frame_len);
                    self.timer.timeout_error().encode(&mut self.to_client);
                    self.last_server_tag = b'E';
                    self.to_client_ends_ready = false;
                    continue;
                }
                b'E' if self.own_pending.is_empty() && self.policy.reads_server_errors() => {
                    if let Some(replacement) = self.policy.server_error(&self.server_in[..header.frame_len]) {
                        self.server_in.advance(header.frame_len);
                        self.to_client.extend_from_slice(&replacement);
                        self.last_server_tag = b'E';
                        self.to_client_ends_ready = false;
                        continue;
                    }
                }
                b'E' if !self.own_pending.is_empty() => {
                    let error = own_exchange_error(&self.server_in[HEADER_LEN..header.frame_len]);
                    match self.own_pending.front() {
                        Some(OwnExchange::Required) => return Err(self.fatal(error)),
                        Some(OwnExchange::ClientSetting | OwnExchange::RestoredSetting) => {
                            tracing::warn!(code = error.code, message = %error.message, "a client setting could not be replayed");
                        }
                        // A setting that never took effect has nothing to reset.
                        _ => tracing::debug!(code = error.code, message = %error.message, "resetting a setting failed"),
                    }
                }
                b'S' => {
                    let status = parse_parameter_status(&self.server_in[HEADER_LEN..header.frame_len]);
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
                        if let Some(lease) = self.server.as_mut() {
                            lease.conn().note_parameter(name, value);
                        }
                    }
                }
                _ => {}
            }
            // pgtenant's own replies are dropped, but for the ParameterStatus
            // of a startup setting put back after the client's RESET.
            let own = !self.own_pending.is_empty();
            self.server_frame_dropped =
                own && !(header.tag == b'S' && self.own_pending.front() == Some(&OwnExchange::RestoredSetting));
            self.server_frame_left = header.frame_len;
            if !own {
                self.last_server_tag = header.tag;
                self.to_client_ends_ready = header.tag == b'Z';
            }
        }
    }

    /// Queues `error` for the client unless a server frame is half-forwarded.
    fn fatal(&mut self, error: ClientError) -> RelayEnd {
        if self.server_frame_left == 0 || self.server_frame_dropped {
            error.encode(&mut self.to_client);
        }
        RelayEnd::Fatal(error)
    }

    /// Tells the client why the session ends when the server vanished without a word.
    fn server_closed_notice(&mut self) {
        let server_said_why = self.last_server_tag == b'E';
        if !server_said_why && (self.server_frame_left == 0 || self.server_frame_dropped) {
            ClientError::fatal(sqlstate::CONNECTION_FAILURE, "the upstream server closed the connection unexpectedly")
                .encode(&mut self.to_client);
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
