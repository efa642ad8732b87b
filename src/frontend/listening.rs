//! A transaction-pooled client's LISTENs, served by its pool's listen hub
//! (`upstream/listen_hub.rs`) instead of a pinned server session.
//!
//! The client's LISTEN/UNLISTEN still runs on the server session serving
//! the transaction, so errors, command tags and transaction semantics are
//! PostgreSQL's own. Before it goes out, the hub is made to listen on the
//! channel (nothing sent after the client's LISTEN commits is missed).
//! When the transaction is over, pgtenant's own exchange reads what the
//! server session now listens on and UNLISTENs it all, so the session goes
//! back to the pool clean: the channels it listened on are the ones this
//! transaction's LISTENs committed (savepoints included); UNLISTENs count
//! when the transaction committed (no error after them, not rolled back).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use crate::upstream::listen_hub::HubNotification;

/// Notifications waiting for a client that does not read, at most: beyond
/// it the session ends rather than grow without bound.
pub(crate) const MAX_WAITING_NOTIFICATIONS: usize = 65_536;

/// A LISTEN or UNLISTEN of the client's, with the server channel name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChannelOp {
    Listen(String),
    Unlisten(String),
    /// UNLISTEN * (also DISCARD ALL).
    UnlistenAll,
}

/// How the last transaction that ran channel statements ended, as far as
/// the replies tell.
#[derive(Debug, Default)]
struct TransactionSigns {
    error: bool,
    rolled_back: bool,
}

/// One session's channels.
#[derive(Debug, Default)]
pub(crate) struct SessionListens {
    /// Server channels the client listens on.
    active: BTreeSet<String>,
    /// Server channels the hub listens on for the client.
    registered: BTreeSet<String>,
    /// Channel statements sent since the last transaction end that synced.
    ops: Vec<ChannelOp>,
    /// What the replies since the last idle ReadyForQuery showed.
    signs: TransactionSigns,
    /// The sync exchange is out: the ops it settles and whether their
    /// transaction committed.
    syncing: Option<(Vec<ChannelOp>, bool)>,
    /// What the server session listened on, as the sync exchange read it.
    server_listening: Vec<String>,
    /// Notifications for channels whose LISTEN has committed but is not
    /// settled yet (they arrived after the transaction's end).
    held: Vec<Arc<HubNotification>>,
    /// Notifications for the client, waiting for it to be between transactions.
    ready: VecDeque<Arc<HubNotification>>,
    /// Channels the hub must stop listening on for the client.
    leaving: Vec<String>,
    /// The server session was made to listen on the client's channels
    /// (for a NOTIFY of its own): the sync exchange must undo it.
    replayed: bool,
    /// Notifications the client got from its server session (its own
    /// NOTIFY, before the ReadyForQuery, as on PostgreSQL): the hub's copy
    /// of each is dropped. Oldest first, at most [`MAX_ECHOES`].
    echoes: VecDeque<(i32, String, String)>,
}

/// Echoes kept for matching: beyond them the oldest is forgotten (its copy
/// from the hub, if it ever comes, is then delivered twice).
const MAX_ECHOES: usize = 1024;

impl SessionListens {
    /// The client sent these channel statements.
    pub(crate) fn sent(&mut self, ops: Vec<ChannelOp>) {
        self.ops.extend(ops);
    }

    /// Channels the hub must listen on before the statements go out.
    pub(crate) fn take_to_register(&mut self) -> Vec<String> {
        let wanted: Vec<String> = self
            .ops
            .iter()
            .filter_map(|op| match op {
                ChannelOp::Listen(channel) if !self.registered.contains(channel) => Some(channel.clone()),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        wanted
    }

    /// The hub listens on `channel` for this client.
    pub(crate) fn registered(&mut self, channel: String) {
        self.registered.insert(channel);
    }

    /// A client-visible ErrorResponse.
    pub(crate) fn note_error(&mut self) {
        self.signs.error = true;
    }

    /// A CommandComplete's tag.
    pub(crate) fn note_command(&mut self, tag: &[u8]) {
        match tag {
            b"ROLLBACK" => self.signs.rolled_back = true,
            b"COMMIT" => self.signs = TransactionSigns::default(),
            _ => {}
        }
    }

    /// A ReadyForQuery for the client, outside a transaction. True when the
    /// sync exchange must go out now (`quiet`: nothing else is in flight).
    /// What the hub heard for pending LISTENs until now was sent before they
    /// committed: PostgreSQL would not deliver it.
    pub(crate) fn transaction_ended(&mut self, quiet: bool) -> bool {
        self.held.clear();
        let start = quiet && self.syncing.is_none() && (!self.ops.is_empty() || self.replayed);
        if start {
            let committed = !self.signs.error && !self.signs.rolled_back;
            self.syncing = Some((std::mem::take(&mut self.ops), committed));
            self.replayed = false;
            self.server_listening.clear();
        }
        self.signs = TransactionSigns::default();
        start
    }

    /// The sync exchange is out (or its reply is being read).
    pub(crate) fn syncing(&self) -> bool {
        self.syncing.is_some()
    }

    /// One channel the server session listened on (a row of the sync exchange).
    pub(crate) fn server_listened(&mut self, channel: String) {
        self.server_listening.push(channel);
    }

    /// The sync exchange was answered: the client's channels are settled.
    pub(crate) fn synced(&mut self) {
        let Some((ops, committed)) = self.syncing.take() else { return };
        let listened: BTreeSet<String> = std::mem::take(&mut self.server_listening).into_iter().collect();
        if committed || !listened.is_empty() {
            for op in &ops {
                match op {
                    ChannelOp::UnlistenAll => self.active.clear(),
                    ChannelOp::Unlisten(channel) => {
                        self.active.remove(channel);
                    }
                    ChannelOp::Listen(_) => {}
                }
            }
            self.active.extend(listened);
        }
        let held = std::mem::take(&mut self.held);
        self.ready.extend(held.into_iter().filter(|n| self.active.contains(&n.channel)));
        let pending = self.pending_listens();
        let leave: Vec<String> =
            self.registered.iter().filter(|c| !self.active.contains(*c) && !pending.contains(*c)).cloned().collect();
        for channel in &leave {
            self.registered.remove(channel);
        }
        self.leaving.extend(leave);
    }

    /// Channels the hub must stop listening on for the client.
    pub(crate) fn take_leaving(&mut self) -> Vec<String> {
        std::mem::take(&mut self.leaving)
    }

    /// Channels the client listens on that the hub does not (yet) listen on.
    pub(crate) fn unregistered(&self) -> Vec<String> {
        self.active.iter().filter(|c| !self.registered.contains(*c)).cloned().collect()
    }

    fn pending_listens(&self) -> BTreeSet<&String> {
        let syncing = self.syncing.iter().flat_map(|(ops, _)| ops.iter());
        syncing
            .chain(self.ops.iter())
            .filter_map(|op| match op {
                ChannelOp::Listen(channel) => Some(channel),
                _ => None,
            })
            .collect()
    }

    /// The client listens on some channel.
    pub(crate) fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// The statements that make the server session listen on the client's
    /// channels before a NOTIFY of its own (so that PostgreSQL delivers it
    /// before the ReadyForQuery); the sync exchange undoes them.
    pub(crate) fn replay(&mut self) -> String {
        self.replayed = true;
        let statements: Vec<String> =
            self.active.iter().map(|channel| format!("LISTEN {}", crate::quote::quote_ident(channel))).collect();
        statements.join("; ")
    }

    /// True when the server session's notification on `channel` is for the
    /// client (a channel it listens on, or a LISTEN of its transaction).
    pub(crate) fn wants(&self, channel: &str) -> bool {
        self.active.contains(channel) || self.pending_listens().iter().any(|c| c.as_str() == channel)
    }

    /// The client got this notification from its server session.
    pub(crate) fn echoed(&mut self, pid: i32, channel: &str, payload: &str) {
        if self.echoes.len() >= MAX_ECHOES {
            self.echoes.pop_front();
        }
        self.echoes.push_back((pid, channel.to_owned(), payload.to_owned()));
    }

    /// True (and forgotten) when the client already got `n` from its server session.
    fn is_echo(&mut self, n: &HubNotification) -> bool {
        let found = self
            .echoes
            .iter()
            .position(|(pid, channel, payload)| *pid == n.pid && *channel == n.channel && *payload == n.payload);
        found.and_then(|at| self.echoes.remove(at)).is_some()
    }

    /// A notification from the hub. False when too many are waiting.
    pub(crate) fn arrived(&mut self, notification: Arc<HubNotification>) -> bool {
        if self.is_echo(&notification) {
            return true;
        }
        if self.active.contains(&notification.channel) {
            self.ready.push_back(notification);
        } else if self.pending_listens().contains(&notification.channel) {
            self.held.push(notification);
        }
        self.ready.len() + self.held.len() <= MAX_WAITING_NOTIFICATIONS
    }

    /// The notifications the client may read now (less those it got from
    /// its server session meanwhile).
    pub(crate) fn take_ready(&mut self) -> Vec<Arc<HubNotification>> {
        let ready = std::mem::take(&mut self.ready);
        ready.into_iter().filter(|n| !self.is_echo(n)).collect()
    }

    /// True when notifications wait for the client.
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(channel: &str, payload: &str) -> Arc<HubNotification> {
        Arc::new(HubNotification { pid: 1, channel: channel.into(), payload: payload.into() })
    }

    fn sync(listens: &mut SessionListens, server: &[&str]) -> Vec<String> {
        assert!(listens.transaction_ended(true));
        for channel in server {
            listens.server_listened((*channel).into());
        }
        listens.synced();
        listens.take_leaving()
    }

    #[test]
    fn a_committed_listen_delivers_what_came_after_its_commit() {
        let mut listens = SessionListens::default();
        listens.sent(vec![ChannelOp::Listen("t.a".into())]);
        assert_eq!(listens.take_to_register(), ["t.a"]);
        listens.registered("t.a".into());
        assert!(listens.take_to_register().is_empty());
        assert!(listens.arrived(note("t.a", "before the commit")));
        assert!(listens.transaction_ended(true));
        assert!(listens.arrived(note("t.a", "after the commit")));
        assert!(listens.arrived(note("t.b", "not listened")));
        assert!(!listens.has_ready(), "held until the LISTEN is settled");
        listens.server_listened("t.a".into());
        listens.synced();
        assert!(listens.take_leaving().is_empty());
        let ready: Vec<_> = listens.take_ready().iter().map(|n| n.payload.clone()).collect();
        assert_eq!(ready, ["after the commit"]);
    }

    #[test]
    fn a_rolled_back_listen_leaves_the_hub() {
        let mut listens = SessionListens::default();
        listens.sent(vec![ChannelOp::Listen("t.a".into())]);
        listens.registered("t.a".into());
        listens.arrived(note("t.a", "held"));
        listens.note_command(b"ROLLBACK");
        assert_eq!(sync(&mut listens, &[]), ["t.a"]);
        assert!(!listens.has_ready());
    }

    #[test]
    fn unlisten_counts_only_when_its_transaction_committed() {
        let mut listens = SessionListens::default();
        listens.sent(vec![ChannelOp::Listen("t.a".into()), ChannelOp::Listen("t.b".into())]);
        listens.registered("t.a".into());
        listens.registered("t.b".into());
        sync(&mut listens, &["t.a", "t.b"]);
        listens.sent(vec![ChannelOp::Unlisten("t.a".into())]);
        listens.note_error();
        assert!(sync(&mut listens, &[]).is_empty(), "the failed UNLISTEN changed nothing");
        listens.sent(vec![ChannelOp::UnlistenAll, ChannelOp::Listen("t.b".into())]);
        assert_eq!(sync(&mut listens, &["t.b"]), ["t.a"]);
        assert!(listens.unregistered().is_empty());
    }

    #[test]
    fn the_hubs_copy_of_an_echo_is_dropped_whichever_comes_first() {
        let mut listens = SessionListens::default();
        listens.sent(vec![ChannelOp::Listen("t.a".into())]);
        listens.registered("t.a".into());
        sync(&mut listens, &["t.a"]);
        assert_eq!(listens.replay(), "LISTEN \"t.a\"");
        listens.echoed(7, "t.a", "mine");
        assert!(listens.arrived(note_from(7, "t.a", "mine")));
        assert!(!listens.has_ready(), "the hub's copy came after the echo");
        assert!(listens.arrived(note_from(7, "t.a", "again")));
        listens.echoed(7, "t.a", "again");
        assert!(listens.take_ready().is_empty(), "the hub's copy came first");
        assert!(listens.arrived(note_from(8, "t.a", "mine")));
        assert_eq!(listens.take_ready().len(), 1, "another sender's is no echo");
        assert!(listens.transaction_ended(true), "the replay is undone by a sync");
    }

    fn note_from(pid: i32, channel: &str, payload: &str) -> Arc<HubNotification> {
        Arc::new(HubNotification { pid, channel: channel.into(), payload: payload.into() })
    }

    #[test]
    fn a_sync_waits_for_a_quiet_moment() {
        let mut listens = SessionListens::default();
        listens.sent(vec![ChannelOp::Listen("t.a".into())]);
        assert!(!listens.transaction_ended(false));
        assert!(listens.transaction_ended(true));
        assert!(!listens.transaction_ended(true), "one sync at a time");
    }
}
