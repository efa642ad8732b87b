//! A tenant's notification channels: LISTEN/NOTIFY names are prefixed with
//! the tenant's channel prefix on the server (the guard rewrites them), and a
//! NotificationResponse comes back to the client under the name it used,
//! with the pid of the client that sent it; notifications on any other
//! channel never reach it.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use sha2::{Digest, Sha256};

use crate::guard::{ChannelCommand, Inspection};
use crate::notifiers::Notifiers;
use crate::protocol::backend::{put_cstr, write_message};
use crate::protocol::messages::{server, Notification};

/// The channel prefix of a tenant: derived by hash, so tenants whose ids share
/// a prefix still get distinct channels.
pub(crate) fn channel_prefix(tenant_id: &str) -> String {
    let digest = Sha256::digest(tenant_id.as_bytes());
    format!("t{}.", crate::hex::hex(&digest[..6]))
}

/// The longest identifier PostgreSQL keeps (NAMEDATALEN - 1 bytes).
const MAX_IDENTIFIER_BYTES: usize = 63;

pub(crate) struct TenantChannels {
    /// Prefix of this tenant's channels on the server.
    prefix: String,
    /// The server backend serving the client now, and the client's own
    /// (pretend) pid that notifications from that backend show.
    server_pid: i32,
    client_pid: i32,
    /// The process's record of who sent NOTIFY through which backend.
    notifiers: Arc<Notifiers>,
}

impl TenantChannels {
    pub(crate) fn new(prefix: String, notifiers: Arc<Notifiers>, client_pid: i32) -> TenantChannels {
        TenantChannels { prefix, server_pid: 0, client_pid, notifiers }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The server backend now serving the client.
    pub(crate) fn set_server_pid(&mut self, pid: i32) {
        self.server_pid = pid;
    }

    /// Records this client as the sender of what its server backend
    /// notifies, when `verdict` holds a NOTIFY.
    pub(crate) fn note_notify(&self, verdict: &Inspection) {
        if verdict
            .channel_statements
            .iter()
            .any(|s| matches!(s.kind, ChannelCommand::Notify | ChannelCommand::NotifyCall))
        {
            self.notifiers.record(self.server_pid, &self.prefix, self.client_pid);
        }
    }

    /// Rewrites a NotificationResponse from the tenant's channel to the name
    /// the client listened on; `None` drops a notification of any other channel.
    pub(crate) fn notification(&self, frame: &[u8]) -> Option<BytesMut> {
        let Notification { pid, channel, payload } = Notification::read(frame)?;
        let pid = if pid == self.server_pid {
            self.client_pid
        } else {
            self.notifiers.client_of(pid, &self.prefix).unwrap_or(pid)
        };
        self.notification_of(pid, channel, payload)
    }

    /// The server channel a client's LISTEN of `channel` names, as the server
    /// keeps it: identifiers are cut to 63 bytes (NAMEDATALEN - 1).
    pub(crate) fn server_channel(&self, channel: &str) -> String {
        let mut scoped = crate::guard::scoped_channel(&self.prefix, channel);
        let mut end = scoped.len().min(MAX_IDENTIFIER_BYTES);
        while !scoped.is_char_boundary(end) {
            end -= 1;
        }
        scoped.truncate(end);
        scoped
    }

    /// What the client gets for a notification the pool's listen hub
    /// received: its server session is shared, so the sender is whoever last
    /// sent NOTIFY through the backend that carried it.
    pub(crate) fn hub_notification(&self, pid: i32, channel: &str, payload: &str) -> Option<BytesMut> {
        self.notification_of(self.notifiers.client_of(pid, &self.prefix).unwrap_or(pid), channel, payload)
    }

    /// The NotificationResponse the client gets for a notification on the
    /// server `channel` sent by the client `pid`; `None` for a channel that
    /// is not its tenant's.
    fn notification_of(&self, pid: i32, channel: &str, payload: &str) -> Option<BytesMut> {
        let channel = channel.strip_prefix(&self.prefix)?;
        let mut out = BytesMut::with_capacity(channel.len() + payload.len() + 16);
        write_message(&mut out, server::NOTIFICATION_RESPONSE, |b| {
            b.put_i32(pid);
            put_cstr(b, channel);
            put_cstr(b, payload);
        });
        Some(out)
    }
}
