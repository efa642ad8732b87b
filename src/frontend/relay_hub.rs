//! The relay core's part in serving transaction pooling without a server
//! session where none is needed: LISTEN through the pool's listen hub (the
//! sync exchange after a transaction that ran channel statements, a
//! listening client's own NOTIFY, notifications written between
//! transactions) and a plain Parse + Sync answered by pgtenant itself.

use bytes::Buf;

use super::observe;
use super::{OwnExchange, RelayCore, TxnStatus};
use crate::protocol::backend::{put_cstr, write_message};
use crate::protocol::frame::peek_header;
use crate::protocol::messages::{self, client, server};

/// pgtenant's own exchange after a transaction that ran LISTEN/UNLISTEN in
/// transaction pooling: what the server session listens on, then nothing.
const LISTEN_SYNC: &str = "SELECT pg_catalog.pg_listening_channels(); UNLISTEN *";

impl RelayCore {
    /// LISTEN is served by the pool's listen hub from now on.
    pub(crate) fn listen_through_hub(&mut self) {
        self.policy.listen_through_hub();
    }

    /// A named Parse + Sync between transactions, with no server session
    /// attached: answered here (ParseComplete, ReadyForQuery) when the policy
    /// can remember the statement without one (`parse_without_server`).
    pub(super) fn answer_parse_without_server(&mut self) -> bool {
        let between_transactions = self.status == TxnStatus::Idle
            && self.own_pending.is_empty()
            && self.to_server.is_empty()
            && self.server_frame_left == 0
            && self.policy.quiet();
        if !between_transactions {
            return false;
        }
        let Ok(Some(parse)) = peek_header(&self.client_in, self.max_message_bytes) else { return false };
        if parse.tag != client::PARSE || self.client_in.len() < parse.frame_len {
            return false;
        }
        let Ok(Some(sync)) = peek_header(&self.client_in[parse.frame_len..], self.max_message_bytes) else {
            return false;
        };
        if sync.tag != client::SYNC || !self.policy.parse_without_server(&self.client_in[..parse.frame_len]) {
            return false;
        }
        self.count_client_message(parse.tag, parse.frame_len);
        self.count_client_message(sync.tag, sync.frame_len);
        self.client_in.advance(parse.frame_len + sync.frame_len);
        write_message(&mut self.to_client, server::PARSE_COMPLETE, |_| {});
        write_message(&mut self.to_client, server::READY_FOR_QUERY, |b| b.extend_from_slice(b"I"));
        self.last_server_tag = server::READY_FOR_QUERY;
        self.to_client_ends_ready = true;
        true
    }

    /// Before a listening client's own NOTIFY (a simple Query, nothing in
    /// flight): the server session LISTENs on the client's channels first, so
    /// that PostgreSQL delivers the client its own notification before the
    /// ReadyForQuery, where a driver may look for it.
    pub(super) fn replay_listens_for_notify(&mut self, frame: &[u8]) {
        let Some(listens) = self.listens.as_mut() else { return };
        if !listens.has_active() || !self.policy.query_notifies(frame) {
            return;
        }
        let statements = listens.replay();
        write_message(&mut self.to_server, client::QUERY, |b| put_cstr(b, &statements));
        self.policy.own_batches_sent(1);
        self.own_pending.push_back(OwnExchange::ListenReplay);
    }

    /// Queues the notifications that wait for the client, if it is between
    /// transactions with nothing in flight (as PostgreSQL delivers them).
    pub(crate) fn deliver_notifications(&mut self) {
        let Some(listens) = self.listens.as_mut() else { return };
        let between_transactions = self.status == TxnStatus::Idle
            && self.server_frame_left == 0
            && self.own_pending.is_empty()
            && self.policy.at_rest();
        if !between_transactions || !listens.has_ready() {
            return;
        }
        for notification in listens.take_ready() {
            if let Some(frame) = self.policy.hub_notification(&notification) {
                observe::to_client(self.stats.as_ref(), None, &frame, frame.len(), false);
                self.to_client.extend_from_slice(&frame);
            }
        }
    }

    /// A client ReadyForQuery outside a transaction: after one that ran
    /// channel statements, the sync exchange goes out once nothing of the
    /// client's is in flight.
    pub(super) fn queue_listen_sync(&mut self, attached: bool) {
        let quiet = self.policy.quiet() && attached;
        let Some(listens) = self.listens.as_mut() else { return };
        if listens.transaction_ended(quiet) {
            write_message(&mut self.to_server, client::QUERY, |b| put_cstr(b, LISTEN_SYNC));
            self.policy.own_batches_sent(1);
            self.own_pending.push_back(OwnExchange::ListenSync);
        }
    }

    /// A NotificationResponse from the server session of a client the hub
    /// serves: the server session listens only for a moment, and what it
    /// delivers (the client's own NOTIFY, before its ReadyForQuery) goes to
    /// the client now and the hub's copy of it is not repeated.
    pub(super) fn server_session_notification(&mut self, frame_len: usize) {
        let frame = &self.server_in[..frame_len];
        let echo = match (messages::Notification::read(frame), self.listens.as_mut()) {
            (Some(n), Some(listens)) if listens.wants(n.channel) => {
                listens.echoed(n.pid, n.channel, n.payload);
                self.policy.notification(frame)
            }
            _ => None,
        };
        self.server_in.advance(frame_len);
        if let Some(frame) = echo {
            observe::to_client(self.stats.as_ref(), None, &frame, frame.len(), false);
            self.to_client.extend_from_slice(&frame);
            self.last_server_tag = server::NOTIFICATION_RESPONSE;
            self.to_client_ends_ready = false;
        }
    }
}
