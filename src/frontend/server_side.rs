//! What the relay core asks of the server session it relays to
//! ([`ServerSide`]: attachment, settings, the context exchanges, cancels),
//! and a scripted stand-in that tests and the fuzzer drive the core with.
//! `relay.rs` implements it over the real attachment.

use bytes::BytesMut;

use super::attach::OwnExchange;
use super::relay_core::TxnStatus;
use super::statements::ServerStatements;
use crate::error::{sqlstate, ClientError};
use crate::protocol::messages;

/// What the core asks of the server session it relays to (none between
/// transactions in transaction pooling).
pub trait ServerSide {
    /// A server session is attached.
    fn attached(&self) -> bool;
    /// Server sessions are handed back between transactions.
    fn transaction_pooling(&self) -> bool;
    /// The attached session's prepared statements (transaction pooling).
    fn statements(&mut self) -> Option<&mut ServerStatements>;
    /// The client changed its settings; true when a startup value must be put back.
    fn settings_changed(&mut self, changes: Vec<(String, Option<String>)>) -> bool;
    /// The client left state pgtenant cannot follow on the attached session.
    fn mark_dirty(&mut self);
    /// The client needs its whole server session from now on.
    fn pin(&mut self);
    /// The exchange that re-establishes the context (and settings) after a
    /// client's reset, with what each of its parts' failure means.
    fn context_exchange(&mut self, wiped: bool, in_transaction: bool) -> Option<(BytesMut, Vec<OwnExchange>)>;
    /// The exchange that installs the attached session's context again
    /// because the tenant tree changed since (sql/0009), when it did; asked
    /// only between transactions with nothing in flight.
    fn context_refresh(&mut self) -> Option<(BytesMut, Vec<OwnExchange>)>;
    /// A service login's `pgtenant.release()` went out.
    fn assumption_released(&mut self);
    /// A batch of the client's ended (`status`, after an error or not): true
    /// when the tenant the session returns to must be installed again.
    fn batch_ended(&mut self, status: TxnStatus, error: bool) -> bool;
    /// The current tenant was assumed for the open transaction only.
    fn transaction_scoped(&self) -> bool;
    /// The server reported a setting.
    fn note_parameter(&mut self, name: &str, value: &str);
    /// The tenant the client's statements run as now (a service login's
    /// assumed one), for the audit log.
    fn tenant_id(&self) -> String;
    /// A cancel for the tenant's statement timeout is on its way.
    fn awaits_cancellation(&self) -> bool;
    /// This ErrorResponse is the one that cancel caused.
    fn is_its_cancellation(&self, frame: &[u8]) -> bool;
    /// What the client gets instead of it.
    fn timeout_error(&mut self) -> ClientError;
}

/// A server side for driving the core alone (its unit tests, the `frames`
/// fuzz target): a session attached or not, and a record of what the core asked.
#[derive(Debug, Default)]
pub struct ScriptedServerSide {
    pub attached: bool,
    pub transaction_pooling: bool,
    pub statements: ServerStatements,
    /// Setting changes the client made, in order.
    pub setting_changes: Vec<(String, Option<String>)>,
    /// Answer to a setting change: a startup value must be put back.
    pub restore_on_change: bool,
    pub dirty: bool,
    pub pinned: bool,
    /// Context exchanges the core queued after a client's reset.
    pub context_exchanges: usize,
    pub parameters: Vec<(String, String)>,
    /// A statement-timeout cancel is on its way.
    pub cancelling: bool,
    /// Releases of an assumed tenant the core reported.
    pub releases: usize,
    /// Answer to a batch's end: the session's tenant must be installed again.
    pub revert_on_batch_end: bool,
    /// Answer to a quiet moment between transactions: the tree changed.
    pub refresh_when_quiet: bool,
    /// Context refreshes the core queued.
    pub refreshes: usize,
}

/// The bytes a [`ScriptedServerSide`] queues for a context exchange: one Sync.
pub const SCRIPTED_CONTEXT_EXCHANGE: &[u8] = b"S\0\0\0\x04";

impl ServerSide for ScriptedServerSide {
    fn attached(&self) -> bool {
        self.attached
    }

    fn transaction_pooling(&self) -> bool {
        self.transaction_pooling
    }

    fn statements(&mut self) -> Option<&mut ServerStatements> {
        self.attached.then_some(&mut self.statements)
    }

    fn settings_changed(&mut self, changes: Vec<(String, Option<String>)>) -> bool {
        self.setting_changes.extend(changes);
        self.attached && self.restore_on_change
    }

    fn mark_dirty(&mut self) {
        self.dirty |= self.attached;
    }

    fn pin(&mut self) {
        self.pinned = true;
    }

    fn context_exchange(&mut self, _wiped: bool, _in_transaction: bool) -> Option<(BytesMut, Vec<OwnExchange>)> {
        self.context_exchanges += 1;
        Some((BytesMut::from(SCRIPTED_CONTEXT_EXCHANGE), vec![OwnExchange::Required]))
    }

    fn context_refresh(&mut self) -> Option<(BytesMut, Vec<OwnExchange>)> {
        if !std::mem::take(&mut self.refresh_when_quiet) {
            return None;
        }
        self.refreshes += 1;
        Some((BytesMut::from(SCRIPTED_CONTEXT_EXCHANGE), vec![OwnExchange::Required]))
    }

    fn assumption_released(&mut self) {
        self.releases += 1;
    }

    fn batch_ended(&mut self, _status: TxnStatus, _error: bool) -> bool {
        std::mem::take(&mut self.revert_on_batch_end)
    }

    fn transaction_scoped(&self) -> bool {
        false
    }

    fn note_parameter(&mut self, name: &str, value: &str) {
        self.parameters.push((name.to_owned(), value.to_owned()));
    }

    fn tenant_id(&self) -> String {
        String::new()
    }

    fn awaits_cancellation(&self) -> bool {
        self.cancelling
    }

    fn is_its_cancellation(&self, frame: &[u8]) -> bool {
        self.cancelling && messages::error_code(frame).is_some_and(|code| sqlstate::QUERY_CANCELED == code.as_str())
    }

    fn timeout_error(&mut self) -> ClientError {
        self.cancelling = false;
        ClientError::error(sqlstate::QUERY_CANCELED, "canceling statement due to statement timeout")
    }
}
