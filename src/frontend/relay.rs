//! The relay between one client and one server session: the async loop
//! around [`RelayCore`] (`relay_core.rs`, where bytes move and frames are
//! judged). It polls both sockets in both directions in one task, so neither
//! side can block the other into a deadlock, and a full outbound buffer stops
//! reading from the side that fills it; it checks server sessions out and
//! back in (transaction pooling) and runs the tenant's statement timeout.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::assume::Assumer;
use super::attach::{Attached, Attachment, OwnExchange};
use super::failures;
use super::policy::ClientPolicy;
use super::relay_core::{RelayCore, ServerSide};
pub(crate) use super::relay_core::{RelayEnd, TxnStatus};
use super::request_timer::RequestTimer;
use super::statements::ServerStatements;
use super::stream::{poll_drain, poll_read_some, ClientStream};
use crate::config::PoolMode;
use crate::error::ClientError;
use crate::sessions::{SessionHandle, SessionState};
use crate::upstream::listen_hub::{NotificationQueue, Subscriber};
use crate::upstream::pool::Lease;

/// Stop reading from a side while this much is waiting to be written to the other.
const HIGH_WATER: usize = 256 * 1024;

/// Per-session relay state.
pub(crate) struct Relay<C> {
    client: C,
    /// The server session serving the client now; in transaction pooling,
    /// only between the first message of a transaction and its end.
    server: Option<Lease>,
    attachment: Attachment,
    core: RelayCore,
    /// The tenant's limit on how long a request may keep the server busy.
    timer: RequestTimer,
    /// A token session ends when its token expires (`jwt.on_expiry = "end"`).
    expires_at: Option<std::time::SystemTime>,
    /// A service login's: verifies the tokens of its `pgtenant.assume()`.
    assumer: Option<Assumer>,
    /// In transaction pooling, from the client's first LISTEN: its
    /// membership of the pool's listen hub and the queue its notifications
    /// arrive on.
    hub: Option<(Subscriber, NotificationQueue)>,
}

#[derive(Default)]
struct Progress {
    client_data: bool,
    server_data: bool,
    client_closed: bool,
    server_closed: bool,
    request_timed_out: bool,
    /// Notifications arrived from the listen hub.
    notifications: bool,
    /// More notifications wait than the session keeps.
    notifications_overflow: bool,
    /// The listen hub's connection closed.
    hub_lost: bool,
}

/// The server side of the core, as the relay has it now.
struct Attachments<'a> {
    server: Option<&'a mut Lease>,
    attachment: &'a mut Attachment,
    timer: &'a mut RequestTimer,
}

impl ServerSide for Attachments<'_> {
    fn attached(&self) -> bool {
        self.server.is_some()
    }

    fn transaction_pooling(&self) -> bool {
        self.attachment.mode == PoolMode::Transaction
    }

    fn statements(&mut self) -> Option<&mut ServerStatements> {
        self.server.as_mut().map(|lease| lease.session().statements())
    }

    fn settings_changed(&mut self, changes: Vec<(String, Option<String>)>) -> bool {
        match self.server.as_mut() {
            Some(lease) => self.attachment.note_setting_changes(lease, changes),
            None => false,
        }
    }

    fn mark_dirty(&mut self) {
        if let Some(lease) = self.server.as_mut() {
            lease.session().mark_dirty();
        }
    }

    fn pin(&mut self) {
        self.attachment.pinned = true;
    }

    fn context_exchange(&mut self, wiped: bool, in_transaction: bool) -> Option<(BytesMut, Vec<OwnExchange>)> {
        let lease = self.server.as_mut()?;
        Some(self.attachment.context_exchange(lease, wiped, in_transaction))
    }

    fn context_refresh(&mut self) -> Option<(BytesMut, Vec<OwnExchange>)> {
        // In transaction pooling the next checkout installs it.
        if self.attachment.mode == PoolMode::Transaction && !self.attachment.pinned {
            return None;
        }
        let lease = self.server.as_mut()?;
        self.attachment.context_outdated(lease).then(|| self.attachment.context_refresh(lease))
    }

    fn assumption_released(&mut self) {
        if let Some(lease) = self.server.as_mut() {
            self.attachment.released(lease);
        }
    }

    fn batch_ended(&mut self, status: TxnStatus, error: bool) -> bool {
        self.attachment.batch_ended(status, error)
    }

    fn transaction_scoped(&self) -> bool {
        self.attachment.transaction_scoped()
    }

    fn note_parameter(&mut self, name: &str, value: &str) {
        if let Some(lease) = self.server.as_mut() {
            lease.session().note_parameter(name, value);
        }
    }

    fn tenant_id(&self) -> String {
        self.attachment.tenant_id().to_owned()
    }

    fn awaits_cancellation(&self) -> bool {
        self.timer.awaits_cancellation()
    }

    fn is_its_cancellation(&self, frame: &[u8]) -> bool {
        self.timer.is_its_cancellation(frame)
    }

    fn timeout_error(&mut self) -> ClientError {
        self.timer.timeout_error()
    }
}

impl Relay<ClientStream> {
    /// A relay whose first bytes to each side are already queued; the server
    /// will answer the attachment's own exchanges before the client's.
    pub(crate) fn new(
        client: ClientStream,
        attached: Attached,
        attachment: Attachment,
        to_client: BytesMut,
        max_message_bytes: usize,
        mut policy: ClientPolicy,
    ) -> Self {
        let Attached { lease, prefix: to_server, exchanges } = attached;
        policy.set_server_pid(lease.session_ref().backend_pid());
        let mut core = RelayCore::new(policy, max_message_bytes, to_client, to_server, exchanges);
        if attachment.mode == PoolMode::Transaction {
            core.listen_through_hub();
        }
        Relay {
            client,
            server: Some(lease),
            attachment,
            core,
            timer: RequestTimer::default(),
            expires_at: None,
            assumer: None,
            hub: None,
        }
    }

    /// A service login's session: `pgtenant.assume()` verifies tokens with `assumer`.
    pub(crate) fn allow_assume(&mut self, assumer: Assumer) {
        self.attachment.allow_assume();
        self.core.policy.allow_assume();
        self.assumer = Some(assumer);
    }

    /// Ends the session at `at`, once the client is between transactions.
    pub(crate) fn set_expiry(&mut self, at: std::time::SystemTime) {
        self.expires_at = Some(at);
    }

    /// Counts what the session does for its tenant.
    pub(crate) fn count_for(&mut self, stats: Option<crate::tenant_stats::TenantSession>) {
        self.core.stats = stats;
    }

    /// Tells the audit log what the session runs.
    pub(crate) fn audit_with(&mut self, trail: crate::audit::AuditTrail) {
        self.core.audit = Some(Box::new(trail));
    }

    /// Cancels a request that keeps the server busy longer than `limit`.
    pub(crate) fn set_statement_timeout(&mut self, limit: Option<std::time::Duration>) {
        self.timer = RequestTimer::new(limit);
    }

    /// Starts the clock on a request just handed to the server.
    fn start_request_timer(&mut self) {
        if self.server.is_some() && !self.core.to_server.is_empty() {
            self.timer.start();
        }
    }

    /// The server answered everything the client sent: the clock stops.
    fn stop_request_timer_if_answered(&mut self) {
        if !self.timer.is_idle() && self.core.answered() {
            self.timer.stop();
        }
    }

    /// The core, with the server side it runs on.
    fn split(&mut self) -> (&mut RelayCore, Attachments<'_>) {
        (
            &mut self.core,
            Attachments { server: self.server.as_mut(), attachment: &mut self.attachment, timer: &mut self.timer },
        )
    }

    /// Takes what client frames it can; the token of a service login's
    /// assume is verified on the way, before the frame that carries it.
    async fn take_client_frames(&mut self) -> Result<(), RelayEnd> {
        loop {
            let (core, mut side) = self.split();
            core.take_client_frames(&mut side)?;
            self.register_listens().await?;
            let Some(token) = self.core.verification.take() else { return Ok(()) };
            let verified = match &self.assumer {
                // Boxed: the verification's state (2 KiB) lives only while it runs.
                Some(assumer) => Box::pin(assumer.verify(&token)).await,
                None => Err(ClientError::error(
                    crate::error::sqlstate::INSUFFICIENT_PRIVILEGE,
                    "pgtenant.assume() is for service logins",
                )),
            };
            let request = match (verified, self.server.as_mut()) {
                (Ok(context), Some(lease)) => Ok(self.attachment.assume(lease, context)),
                (Ok(_), None) => Err(failures::server_closed()),
                (Err(refusal), _) => Err(refusal),
            };
            self.core.policy.set_verified(request);
        }
    }

    async fn take_server_frames(&mut self) -> Result<(), RelayEnd> {
        let (core, mut side) = self.split();
        core.take_server_frames(&mut side)?;
        self.settle_listens().await
    }

    /// Has the pool's listen hub listen on the channels the client's
    /// statements are about to LISTEN on, before they go out: a notification
    /// sent once the client's LISTEN has committed is not missed.
    async fn register_listens(&mut self) -> Result<(), RelayEnd> {
        let Some(listens) = self.core.listens.as_mut() else { return Ok(()) };
        let channels = listens.take_to_register();
        // A failure here is the upstream's: the client's LISTEN meets it too,
        // and the sync after its transaction settles what committed.
        self.hub_listen(channels, false).await
    }

    /// After the server's replies: the hub follows what the client's
    /// transaction settled, and notifications go out if the client is between
    /// transactions.
    async fn settle_listens(&mut self) -> Result<(), RelayEnd> {
        let Some(listens) = self.core.listens.as_mut() else { return Ok(()) };
        let leaving = listens.take_leaving();
        let missing = if listens.syncing() { Vec::new() } else { listens.unregistered() };
        if let Some((subscriber, _)) = &self.hub {
            for channel in &leaving {
                subscriber.unlisten(channel);
            }
        }
        self.hub_listen(missing, true).await?;
        self.core.deliver_notifications();
        Ok(())
    }

    async fn hub_listen(&mut self, channels: Vec<String>, required: bool) -> Result<(), RelayEnd> {
        if channels.is_empty() {
            return Ok(());
        }
        if self.hub.is_none() {
            self.hub = Some(self.attachment.join_listen_hub());
        }
        for channel in channels {
            let listened = match &self.hub {
                Some((subscriber, _)) => subscriber.listen(&channel).await,
                None => Err("no listen hub".into()),
            };
            match listened {
                Ok(()) => {
                    if let Some(listens) = self.core.listens.as_mut() {
                        listens.registered(channel);
                    }
                }
                Err(why) if required => return Err(self.fatal(failures::listen_failed(&why))),
                Err(why) => tracing::warn!(%channel, error = why, "the listen hub could not listen yet"),
            }
        }
        Ok(())
    }

    fn fatal(&mut self, error: ClientError) -> RelayEnd {
        self.core.fatal(error)
    }

    /// Relays until either side ends; then hands the server session back
    /// (when it is idle and clean) or closes it.
    pub(crate) async fn run(&mut self, session: &SessionHandle) -> RelayEnd {
        let end = self.relay(session).await;
        if matches!(end, RelayEnd::Fatal(_)) {
            // Best effort: let the client read the error before the socket closes.
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(1), self.client.write_all(&self.core.to_client))
                    .await;
        }
        if let Some(lease) = self.server.take() {
            let clean = !matches!(end, RelayEnd::ServerGone | RelayEnd::Fatal(_))
                && self.core.at_rest()
                && self.timer.take_session_reusable();
            // A session not known to be idle is closed: the backend rolls back
            // whatever the client left open and exits.
            let wiped = self.core.policy.take_settings_wiped();
            self.attachment.release(lease, clean, wiped);
        }
        end
    }

    /// In transaction pooling, returns the server session at a transaction boundary.
    fn release_if_at_rest(&mut self) {
        if self.attachment.mode != PoolMode::Transaction || self.attachment.pinned || !self.core.at_rest() {
            return;
        }
        if let Some(lease) = self.server.take() {
            let wiped = self.core.policy.take_settings_wiped();
            let reusable = self.timer.take_session_reusable();
            self.attachment.release(lease, reusable, wiped);
        }
    }

    /// Checks a server session out when the client has something to send,
    /// then takes what the client queued meanwhile.
    async fn attach_if_needed(&mut self) -> Result<(), RelayEnd> {
        if self.server.is_some() || (self.core.to_server.is_empty() && !self.core.wants_server) {
            return Ok(());
        }
        self.core.wants_server = false;
        if self.core.policy.take_settings_wiped() {
            self.attachment.reset_settings();
        }
        let asked = std::time::Instant::now();
        match self.attachment.acquire().await {
            Ok(attached) => self.attached(attached, asked),
            Err(error) => return Err(self.fatal(error)),
        }
        if !self.core.client_in.is_empty() {
            self.take_client_frames().await?;
        }
        self.start_request_timer();
        Ok(())
    }

    /// A plain fn, so that the checkout's values are not kept in the async
    /// state beside the frames awaited after it (that state sizes every
    /// idle client's task).
    fn attached(&mut self, attached: Attached, asked: std::time::Instant) {
        if let Some(stats) = &self.core.stats {
            stats.checkout(asked.elapsed());
        }
        let Attached { lease, prefix, exchanges } = attached;
        self.core.policy.set_server_pid(lease.session_ref().backend_pid());
        self.core.attached(prefix, exchanges);
        self.server = Some(lease);
    }

    /// Queues bytes the client sent before the relay started.
    pub(crate) fn push_client_bytes(&mut self, bytes: &[u8]) {
        self.core.client_in.extend_from_slice(bytes);
    }

    async fn relay(&mut self, session: &SessionHandle) -> RelayEnd {
        let entry = Arc::clone(session.entry());
        // One waiter for the whole session: registering a fresh one on every
        // turn of the loop costs two lock round trips per message.
        let ended = session.ended();
        tokio::pin!(ended);
        let left = self.expires_at.map(|at| at.duration_since(std::time::SystemTime::now()).unwrap_or_default());
        let expiry = tokio::time::sleep(left.unwrap_or_default());
        tokio::pin!(expiry);
        let mut expired = false;
        if !self.core.client_in.is_empty() {
            if let Err(end) = self.take_client_frames().await {
                return end;
            }
        }
        loop {
            self.release_if_at_rest();
            if expired && self.core.at_rest() && self.core.status == TxnStatus::Idle {
                return self.fatal(failures::token_expired());
            }
            let needs_server = self.server.is_none() && (self.core.wants_server || !self.core.to_server.is_empty());
            if needs_server {
                if let Err(end) = self.attach_if_needed().await {
                    return end;
                }
            }
            // poll_io keeps no state between polls, so losing this race is harmless.
            let polled = tokio::select! {
                biased;
                reason = &mut ended => return self.fatal(reason),
                _ = &mut expiry, if left.is_some() && !expired => {
                    expired = true;
                    continue;
                }
                polled = poll_fn(|cx| self.poll_io(cx)) => polled,
            };
            let progress = match polled {
                Ok(progress) => progress,
                Err(end) => return end,
            };
            if progress.client_data {
                entry.set_state(SessionState::Active);
                if let Err(end) = self.take_client_frames().await {
                    return end;
                }
                if self.core.policy.session_state_used() {
                    self.attachment.pinned = true;
                }
                self.start_request_timer();
            }
            if progress.request_timed_out {
                if let Some(lease) = &self.server {
                    self.timer.cancel(lease.session_ref().cancel_target().clone());
                }
            }
            if progress.hub_lost {
                return self.fatal(failures::listener_lost());
            }
            if progress.notifications_overflow {
                return self.fatal(failures::too_many_notifications());
            }
            if progress.notifications {
                self.core.deliver_notifications();
            }
            if progress.server_data {
                if let Err(end) = self.take_server_frames().await {
                    return end;
                }
                // A ReadyForQuery may have released client messages held for a reset.
                if !self.core.policy.holding() && !self.core.client_in.is_empty() {
                    if let Err(end) = self.take_client_frames().await {
                        return end;
                    }
                }
                if self.core.own_pending.is_empty()
                    && self.core.server_frame_left == 0
                    && self.core.to_client_ends_ready
                {
                    entry.set_state(match self.core.status {
                        TxnStatus::Idle => SessionState::Idle,
                        TxnStatus::InTransaction => SessionState::IdleInTransaction,
                        TxnStatus::Failed => SessionState::IdleInFailedTransaction,
                    });
                }
                if self.core.policy.session_state_used() {
                    self.attachment.pinned = true;
                }
                self.stop_request_timer_if_answered();
                self.release_if_at_rest();
            }
            if progress.server_closed {
                self.core.server_closed_notice();
                let _ = self.client.write_all(&self.core.to_client).await;
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
            if poll_drain(lease.session().stream(), cx, &mut self.core.to_server).is_err() {
                return Poll::Ready(Err(RelayEnd::ServerGone));
            }
        }
        if poll_drain(&mut self.client, cx, &mut self.core.to_client).is_err() {
            return Poll::Ready(Err(RelayEnd::ClientGone));
        }
        let mut progress = Progress::default();
        // An idle client holds no read buffer: wait for readiness before allocating one.
        let client_ready = self.core.client_in.capacity() > 0 || self.client.poll_read_ready(cx).is_ready();
        if self.core.to_server.len() < HIGH_WATER && client_ready {
            match poll_read_some(&mut self.client, cx, &mut self.core.client_in) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => progress.client_closed = true,
                Poll::Ready(Ok(_)) => progress.client_data = true,
                Poll::Pending => {}
            }
        }
        if let Some(lease) = self.server.as_mut().filter(|_| self.core.to_client.len() < HIGH_WATER) {
            match poll_read_some(lease.session().stream(), cx, &mut self.core.server_in) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => progress.server_closed = true,
                Poll::Ready(Ok(_)) => progress.server_data = true,
                Poll::Pending => {}
            }
        }
        progress.request_timed_out = self.timer.poll_expired(cx);
        if let (Some((_, queue)), Some(listens)) = (self.hub.as_mut(), self.core.listens.as_mut()) {
            while let Poll::Ready(received) = queue.poll_recv(cx) {
                match received {
                    Some(notification) => {
                        progress.notifications = true;
                        if !listens.arrived(notification) {
                            progress.notifications_overflow = true;
                            break;
                        }
                    }
                    None => {
                        progress.hub_lost = true;
                        break;
                    }
                }
            }
        }
        if self.server.is_none() {
            // Between transactions, once written out, buffers are given back
            // here, the one place every turn of the loop passes before the
            // task sleeps: thousands of idle clients cost little.
            self.core.shrink_idle_buffers();
        }
        if progress.client_data
            || progress.server_data
            || progress.client_closed
            || progress.server_closed
            || progress.request_timed_out
            || progress.notifications
            || progress.hub_lost
        {
            Poll::Ready(Ok(progress))
        } else {
            Poll::Pending
        }
    }
}
