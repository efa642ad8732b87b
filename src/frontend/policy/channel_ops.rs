//! The policy's part in transaction pooling's LISTEN through the pool's
//! listen hub (`frontend/listening.rs`): the client's LISTEN/UNLISTEN (and
//! DISCARD ALL) as channel operations on server channel names, whether a
//! Query NOTIFYs, and the notifications the hub hands over.

use bytes::BytesMut;

use super::ClientPolicy;
use crate::frontend::listening::ChannelOp;
use crate::guard::{ChannelCommand, Inspection};
use crate::protocol::messages::Query;
use crate::upstream::listen_hub::HubNotification;

impl ClientPolicy {
    /// True when a Query frame runs a NOTIFY or `pg_notify()` the guard lets through.
    pub(crate) fn query_notifies(&self, frame: &[u8]) -> bool {
        let Some(sql) = Query::read(frame).and_then(|q| std::str::from_utf8(q.sql).ok()) else { return false };
        let verdict = self.guard.check(sql);
        verdict.denial.is_none()
            && verdict
                .channel_statements
                .iter()
                .any(|s| matches!(s.kind, ChannelCommand::Notify | ChannelCommand::NotifyCall))
    }

    /// LISTEN is served by the pool's listening connection (transaction pooling).
    pub(crate) fn listen_through_hub(&mut self) {
        self.listen_hub = true;
    }

    /// Takes the LISTEN/UNLISTEN statements sent (with the listen hub only).
    pub(crate) fn take_channel_ops(&mut self) -> Vec<ChannelOp> {
        std::mem::take(&mut self.channel_ops)
    }

    /// What `verdict`'s statements do to the client's channels, when the
    /// listen hub serves them.
    pub(super) fn channel_ops_of(&self, verdict: &Inspection) -> Vec<ChannelOp> {
        if !self.listen_hub {
            return Vec::new();
        }
        let mut ops: Vec<ChannelOp> = verdict
            .channel_statements
            .iter()
            .filter_map(|statement| match statement.kind {
                ChannelCommand::Listen => Some(ChannelOp::Listen(self.channels.server_channel(&statement.channel))),
                ChannelCommand::Unlisten if statement.channel.is_empty() => Some(ChannelOp::UnlistenAll),
                ChannelCommand::Unlisten => Some(ChannelOp::Unlisten(self.channels.server_channel(&statement.channel))),
                ChannelCommand::Notify | ChannelCommand::NotifyCall => None,
            })
            .collect();
        if verdict.unlistens_all {
            ops.push(ChannelOp::UnlistenAll);
        }
        ops
    }

    /// The NotificationResponse for a notification the listen hub received.
    pub(crate) fn hub_notification(&self, n: &HubNotification) -> Option<BytesMut> {
        self.channels.hub_notification(n.pid, &n.channel, &n.payload)
    }
}
