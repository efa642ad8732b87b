//! The per-tenant limit on how long a client request may keep its server
//! session busy (`statement_timeout_ms`): enforced by pgtenant, so the client
//! cannot raise it.
//!
//! The clock starts when a request is handed to the server and stops when
//! everything the client sent has been answered (a client idle in a
//! transaction is not counted). When it runs out, pgtenant sends the server
//! a CancelRequest, as a client's own would, and rewords the 57014 error the
//! server answers with.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use crate::error::{sqlstate, ClientError};
use crate::protocol::messages::error_code;
use crate::upstream::connect::{send_cancel, CancelTarget};

#[derive(Default)]
pub(crate) struct RequestTimer {
    limit: Option<Duration>,
    /// Allocated on first use, then reset for every request.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
    /// A CancelRequest went out for the running request: its cancellation
    /// error says why.
    cancelled_request: bool,
    /// A CancelRequest went out on the server session held now: one that
    /// arrives late must not hit another client's work, so that session is
    /// closed rather than pooled.
    cancelled_session: bool,
}

impl RequestTimer {
    pub(crate) fn new(limit: Option<Duration>) -> RequestTimer {
        RequestTimer { limit, ..RequestTimer::default() }
    }

    /// Starts the clock, unless it runs already or there is no limit.
    pub(crate) fn start(&mut self) {
        let Some(limit) = self.limit.filter(|_| !self.armed) else { return };
        let deadline = tokio::time::Instant::now() + limit;
        match self.deadline.as_mut() {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.deadline = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.armed = true;
    }

    /// Neither counting nor waiting for a cancellation: nothing to stop.
    pub(crate) fn is_idle(&self) -> bool {
        !self.armed && !self.cancelled_request
    }

    /// Everything the client sent was answered.
    pub(crate) fn stop(&mut self) {
        self.armed = false;
        self.cancelled_request = false;
    }

    /// Ready once the running request is past the limit.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        match self.deadline.as_mut().filter(|_| self.armed) {
            Some(deadline) => deadline.as_mut().poll(cx).is_ready(),
            None => false,
        }
    }

    /// Asks the server to cancel what it runs for this client.
    pub(crate) fn cancel(&mut self, target: CancelTarget) {
        self.armed = false;
        self.cancelled_request = true;
        self.cancelled_session = true;
        tokio::spawn(async move {
            if let Err(e) = send_cancel(&target).await {
                tracing::warn!(error = %e, "could not cancel a request past its statement timeout");
            }
        });
    }

    /// Whether server errors must be read whole, to find the cancellation.
    pub(crate) fn awaits_cancellation(&self) -> bool {
        self.cancelled_request
    }

    /// Whether the server ErrorResponse `frame` is the cancellation pgtenant asked for.
    pub(crate) fn is_its_cancellation(&self, frame: &[u8]) -> bool {
        self.cancelled_request && error_code(frame).is_some_and(|code| sqlstate::QUERY_CANCELED == code.as_str())
    }

    /// The error the client gets instead of that cancellation.
    pub(crate) fn timeout_error(&mut self) -> ClientError {
        self.cancelled_request = false;
        let limit = self.limit.unwrap_or_default().as_millis();
        ClientError::error(
            sqlstate::QUERY_CANCELED,
            format!(
                "canceling statement due to statement timeout (pgtenant limits this tenant's requests to {limit} ms)"
            ),
        )
    }

    /// Whether the server session held now may go back to the pool; forgets
    /// the cancellation, as that session is being let go.
    pub(crate) fn take_session_reusable(&mut self) -> bool {
        !std::mem::take(&mut self.cancelled_session)
    }
}
