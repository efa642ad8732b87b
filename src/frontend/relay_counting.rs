//! What the relay core counts for the tenant on its way (src/tenant_stats.rs):
//! messages and bytes each way, statements, transactions and their time,
//! and the SQLSTATEs of the errors the client gets.

use std::time::Instant;

use super::{RelayCore, TxnStatus};
use crate::protocol::messages::{self, client, server};

impl RelayCore {
    /// Counts a client message taken whole or streamed.
    pub(super) fn count_client_message(&mut self, tag: u8, len: usize) {
        if let Some(stats) = &self.stats {
            stats.received(len);
            if matches!(tag, client::QUERY | client::EXECUTE) {
                stats.query();
            }
            if self.transaction_began.is_none() {
                self.transaction_began = Some(Instant::now());
            }
        }
    }

    /// Counts a ReadyForQuery that goes to the client: an idle server ends a
    /// transaction (its time counted from the first message of it the relay
    /// saw while none was open; a pipelined one's time is not counted).
    pub(super) fn count_client_ready(&mut self, status: TxnStatus) {
        if let Some(stats) = &self.stats {
            if status == TxnStatus::Idle {
                let took = self.transaction_began.take().map(|began| began.elapsed()).unwrap_or_default();
                stats.transaction(took);
            }
        }
    }

    /// Counts bytes of server messages that go to the client, and the SQLSTATE of an error among them.
    pub(super) fn count_sent(&self, frame: &[u8]) {
        if let Some(stats) = &self.stats {
            stats.sent(frame.len());
            if frame.first() == Some(&server::ERROR_RESPONSE) {
                if let Some(code) = messages::error_code(frame) {
                    stats.error(&code);
                }
            }
        }
    }
}
