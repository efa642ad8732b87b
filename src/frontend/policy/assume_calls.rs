//! A service login's `pgtenant.assume(…)` / `pgtenant.release()` in the
//! client's stream (recognized by `guard::context_calls`): which frames wait
//! or need a token verified first, how an assume becomes pgtenant's own
//! request for the verified tenant, and which prepared statements are such
//! calls. The rest of the message policy is in `mod.rs`.

use bytes::BytesMut;

use super::ClientPolicy;
use crate::error::ClientError;
use crate::frontend::assume::{bind_with_value, bound_token};
use crate::guard::context_calls::{self, ContextCall, TokenArgument};
use crate::protocol::backend::{put_cstr, write_message};
use crate::protocol::frontend;
use crate::protocol::messages::{client, Bind, Query};
use crate::quote::quote_ident;

/// Which intercepted call a prepared statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StatementCall {
    Assume,
    Release,
}

/// What a client frame needs before the policy can take it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameStep {
    /// Take it now.
    Ready,
    /// Wait until every earlier message is answered (an assume by literal
    /// puts an exchange of pgtenant's own ahead of it).
    WaitForQuiet,
    /// Verify this token first ([`ClientPolicy::set_verified`]).
    Verify(String),
}

impl ClientPolicy {
    /// What `frame` (read whole) needs before [`ClientPolicy::client_frame`]
    /// takes it: `quiet` when every earlier message has been answered,
    /// `failed` inside a failed transaction.
    pub(crate) fn before_frame(&self, frame: &[u8], quiet: bool, failed: bool) -> FrameStep {
        if !self.service || self.verified.is_some() {
            return FrameStep::Ready;
        }
        match frame.first().copied() {
            Some(client::QUERY) => {
                let call =
                    Query::read(frame).and_then(|q| std::str::from_utf8(q.sql).ok()).and_then(context_calls::recognize);
                match call {
                    Some(ContextCall::Assume { token: TokenArgument::Literal(token), .. }) => match (quiet, failed) {
                        (false, _) => FrameStep::WaitForQuiet,
                        // The server refuses the statement, as PostgreSQL would.
                        (true, true) => FrameStep::Ready,
                        (true, false) => FrameStep::Verify(token),
                    },
                    _ => FrameStep::Ready,
                }
            }
            Some(client::BIND) => {
                let assume = Bind::read(frame)
                    .is_some_and(|b| self.context_statements.get(b.statement) == Some(&StatementCall::Assume));
                match bound_token(frame) {
                    Some(Some(token)) if assume => FrameStep::Verify(token),
                    _ => FrameStep::Ready,
                }
            }
            _ => FrameStep::Ready,
        }
    }

    /// The outcome of the verification [`FrameStep::Verify`] asked for.
    pub(crate) fn set_verified(&mut self, outcome: Result<String, ClientError>) {
        self.verified = Some(outcome);
    }

    /// Takes the number of pgtenant's own exchanges queued since the last call.
    pub(crate) fn take_own_exchanges(&mut self) -> usize {
        std::mem::take(&mut self.own_exchanges)
    }

    /// Takes the "a release went out" flag.
    pub(crate) fn take_released(&mut self) -> bool {
        std::mem::take(&mut self.released)
    }

    /// An intercepted call sent as a simple Query. An assume by literal:
    /// pgtenant's own exchange installs the verified tenant (the client's
    /// messages before it are all answered), and the client's statement
    /// becomes one that answers with the tenant now installed, under the
    /// client's column name. A release runs on the server as sent.
    pub(super) fn query_context_call(&mut self, call: ContextCall, frame: &[u8], to_server: &mut BytesMut) {
        if !self.service {
            self.markers.query(not_a_service_login(), to_server);
            return;
        }
        match call {
            ContextCall::Assume { token: TokenArgument::Literal(_), column } => match self.verified.take() {
                Some(Err(refusal)) => self.markers.query(refusal, to_server),
                verified => {
                    if let Some(Ok(request)) = verified {
                        frontend::parse_unnamed(to_server, ASSUME_SQL);
                        frontend::bind_unnamed(to_server, &[Some(&request)]);
                        frontend::execute_unnamed(to_server);
                        frontend::sync(to_server);
                        self.own_exchanges += 1;
                        self.own_batches_sent(1);
                    }
                    // Without a request (a failed transaction) the server
                    // refuses this statement as it would the call.
                    let answer = format!("SELECT pgtenant.current_tenant() AS {}", quote_ident(&column));
                    write_message(to_server, client::QUERY, |b| put_cstr(b, &answer));
                }
            },
            ContextCall::Assume { token: TokenArgument::Parameter, .. } => to_server.extend_from_slice(frame),
            ContextCall::Release { .. } => {
                self.released = true;
                to_server.extend_from_slice(frame);
            }
        }
    }

    /// A Parse of an intercepted call: remembered by name, or refused.
    pub(super) fn parse_context_call(&mut self, name: &str, call: &ContextCall) -> Result<(), ClientError> {
        if !self.service {
            return Err(not_a_service_login());
        }
        let kind = match call {
            ContextCall::Assume { token: TokenArgument::Parameter, .. } => StatementCall::Assume,
            ContextCall::Assume { token: TokenArgument::Literal(_), .. } => {
                return Err(ClientError::error(
                    crate::error::sqlstate::FEATURE_NOT_SUPPORTED,
                    "pgtenant.assume() takes its token as a bind parameter here: SELECT pgtenant.assume($1)",
                ))
            }
            ContextCall::Release { .. } => StatementCall::Release,
        };
        self.context_statements.insert(name.to_owned(), kind);
        Ok(())
    }

    /// A Bind of an intercepted call: an assume's token is replaced by
    /// pgtenant's request for the verified tenant (or refused); a release is
    /// noted. `None`: the Bind goes as sent.
    pub(super) fn bind_context_call(&mut self, frame: &[u8]) -> Result<Option<BytesMut>, ClientError> {
        if self.context_statements.is_empty() {
            return Ok(None);
        }
        let Some(bind) = Bind::read(frame) else { return Ok(None) };
        match self.context_statements.get(bind.statement) {
            Some(StatementCall::Assume) => match self.verified.take() {
                Some(Ok(request)) => bind_with_value(frame, &request)
                    .map(Some)
                    .ok_or_else(|| ClientError::protocol_violation("malformed Bind message")),
                Some(Err(refusal)) => Err(refusal),
                None => Err(ClientError::error(
                    crate::error::sqlstate::INVALID_PARAMETER_VALUE,
                    "pgtenant.assume() needs a token (text, not NULL)",
                )),
            },
            Some(StatementCall::Release) => {
                self.released = true;
                Ok(None)
            }
            None => Ok(None),
        }
    }
}

/// What a service login's intercepted assume runs on the server, with
/// pgtenant's request as its parameter.
const ASSUME_SQL: &str = "SELECT pgtenant.assume($1)";

fn not_a_service_login() -> ClientError {
    ClientError::error(
        crate::error::sqlstate::INSUFFICIENT_PRIVILEGE,
        "pgtenant.assume() and pgtenant.release() are for service logins; this session's tenant comes from its login",
    )
}
