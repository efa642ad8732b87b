//! Where the client's message stream stands: which of its batches are
//! still unanswered, whether an extended-protocol batch waits for its Sync,
//! and whether the client's last statements wiped the tenant context, so
//! that its next messages wait (`hold`) until the context is back.
//!
//! The relay reads two answers from it: may client messages go on
//! ([`Batches::holding`]), and is this a transaction boundary where the
//! server session may go back to the pool ([`Batches::at_rest`]).

use crate::protocol::messages::client;

#[derive(Debug, Default)]
pub(crate) struct Batches {
    /// Extended-protocol messages were sent since the last Sync.
    unsynced: bool,
    /// Client messages that each end with one ReadyForQuery, sent and unanswered.
    in_flight: u32,
    /// Stop forwarding client messages until the in-flight ones are answered.
    hold: bool,
    /// The context was (or may have been) wiped by the client's last statements.
    context_dirty: bool,
    /// An extended-protocol reset waits for its Sync.
    reset_awaits_sync: bool,
    /// Every batch holds the client until it is answered.
    hold_each: bool,
}

impl Batches {
    /// True while client messages must wait (a context reset is pending).
    pub(crate) fn holding(&self) -> bool {
        self.hold
    }

    /// Every client message sent so far has been answered: a transaction
    /// boundary where the server session may go back to the pool.
    pub(crate) fn at_rest(&self) -> bool {
        !self.hold && !self.unsynced && self.in_flight == 0 && !self.context_dirty
    }

    /// Every batch holds the client until it is answered (`on`), or only
    /// those that reset the context.
    pub(crate) fn hold_each_batch(&mut self, on: bool) {
        self.hold_each = on;
    }

    /// Every message the client sent has been answered, and none waits for its Sync.
    pub(crate) fn quiet(&self) -> bool {
        !self.hold && !self.unsynced && self.in_flight == 0
    }

    /// A client message went through unread.
    pub(crate) fn streamed(&mut self, tag: u8) {
        if matches!(tag, client::BIND | client::DESCRIBE | client::EXECUTE | client::CLOSE | client::FLUSH) {
            self.unsynced = true;
        }
    }

    /// A Parse, Bind, Describe or Close: the batch now waits for its Sync.
    pub(crate) fn extended_sent(&mut self) {
        self.unsynced = true;
    }

    /// A Query or FunctionCall (or a marker in its place): one ReadyForQuery to come.
    pub(crate) fn simple_sent(&mut self) {
        self.in_flight += 1;
        self.hold |= self.hold_each;
    }

    /// A simple Query that reset the context (`resets_context`): the client
    /// waits until it is restored. A reset still pending from earlier holds too.
    pub(crate) fn query_done(&mut self, resets_context: bool) {
        if resets_context || self.context_dirty {
            self.context_dirty = true;
            self.hold = true;
        }
    }

    /// A Bind of a statement that resets the context: restored after the Sync.
    pub(crate) fn reset_at_sync(&mut self) {
        self.reset_awaits_sync = true;
    }

    /// A Sync: the batch ends; a reset it carried now holds the client.
    pub(crate) fn sync_sent(&mut self) {
        self.in_flight += 1;
        self.unsynced = false;
        self.hold |= self.hold_each;
        if self.reset_awaits_sync || self.context_dirty {
            self.reset_awaits_sync = false;
            self.context_dirty = true;
            self.hold = true;
        }
    }

    /// The client's last Query (`tag`) or extended batch reset a setting
    /// pgtenant must put back: handled like a context reset.
    pub(crate) fn restore_after(&mut self, tag: u8) {
        if tag == client::QUERY {
            self.context_dirty = true;
            self.hold = true;
        } else {
            self.reset_awaits_sync = true;
        }
    }

    /// One ReadyForQuery answered the client. True when the context must be
    /// sent now because a reset wiped it.
    pub(crate) fn client_ready(&mut self, failed_transaction: bool) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        if !self.hold || self.in_flight > 0 {
            return false;
        }
        self.hold = false;
        if !self.context_dirty || failed_transaction {
            // In a failed transaction the exchange would fail; the next batch
            // holds again and the context is restored once it can be.
            return false;
        }
        self.context_dirty = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_is_at_rest_only_when_every_sync_is_answered() {
        let mut b = Batches::default();
        b.extended_sent();
        assert!(!b.at_rest(), "a Parse waits for its Sync");
        b.sync_sent();
        b.extended_sent();
        b.sync_sent();
        assert!(!b.at_rest());
        assert!(!b.client_ready(false));
        assert!(!b.at_rest(), "one Sync still unanswered");
        assert!(!b.client_ready(false));
        assert!(b.at_rest());
    }

    #[test]
    fn a_reset_holds_the_client_until_its_answers_are_in_then_asks_for_the_context() {
        let mut b = Batches::default();
        b.simple_sent();
        b.query_done(true);
        assert!(b.holding() && !b.at_rest());
        assert!(b.client_ready(false), "the context goes out after the reset's ReadyForQuery");
        assert!(!b.holding() && b.at_rest());

        b.extended_sent();
        b.reset_at_sync();
        assert!(!b.holding(), "an extended reset holds from its Sync");
        b.sync_sent();
        assert!(b.holding());
        assert!(!b.client_ready(true), "not inside a failed transaction");
        assert!(!b.holding() && !b.at_rest(), "the context is still owed");
        b.simple_sent();
        b.query_done(false);
        assert!(b.holding(), "the next batch holds again");
        assert!(b.client_ready(false));
    }

    #[test]
    fn holding_each_batch_waits_for_every_answer_without_owing_a_context() {
        let mut b = Batches::default();
        b.hold_each_batch(true);
        b.extended_sent();
        assert!(!b.holding() && !b.quiet(), "a batch holds from its Sync");
        b.sync_sent();
        assert!(b.holding());
        assert!(!b.client_ready(false), "no context is owed");
        assert!(!b.holding() && b.quiet() && b.at_rest());
        b.hold_each_batch(false);
        b.simple_sent();
        assert!(!b.holding());
    }
}
