//! What the relay core notes on its way, for the tenant's counters
//! (src/tenant_stats.rs: messages and bytes each way, statements,
//! transactions and their time, the SQLSTATEs of errors) and for the audit
//! log (src/audit.rs: rows, errors, refusals, the end of each request).
//! Free functions over the two fields, so that a frame still in the core's
//! buffers can be passed in.

use std::time::Instant;

use super::{RelayCore, TxnStatus};
use crate::audit::AuditTrail;
use crate::protocol::messages::{self, client, server};
use crate::tenant_stats::TenantSession;

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
}

/// A server message the client gets: its bytes; an ErrorResponse's SQLSTATE
/// (read once for both); a CommandComplete's rows and the end of an Execute.
/// `frame` is whole for ErrorResponse and CommandComplete (the core reads
/// those whole while either observer is there); `len` is the message's length.
pub(super) fn to_client(
    stats: Option<&TenantSession>,
    audit: Option<&mut AuditTrail>,
    frame: &[u8],
    len: usize,
    refused: bool,
) {
    if stats.is_none() && audit.is_none() {
        return;
    }
    let tag = frame.first().copied().unwrap_or_default();
    if let Some(stats) = stats {
        stats.sent(len);
    }
    match tag {
        server::ERROR_RESPONSE => error(stats, audit, messages::error_code(frame), refused),
        server::COMMAND_COMPLETE => {
            if let Some(audit) = audit {
                audit.command_complete(frame);
            }
        }
        server::EMPTY_QUERY_RESPONSE | server::PORTAL_SUSPENDED => {
            if let Some(audit) = audit {
                audit.execute_answered();
            }
        }
        _ => {}
    }
}

/// An error the client gets, with its SQLSTATE; `refused` when it is the guard's.
pub(super) fn error(
    stats: Option<&TenantSession>,
    audit: Option<&mut AuditTrail>,
    code: Option<String>,
    refused: bool,
) {
    if let (Some(stats), Some(code)) = (stats, code.as_deref()) {
        stats.error(code);
    }
    if let Some(audit) = audit {
        audit.error(code, refused);
    }
}
