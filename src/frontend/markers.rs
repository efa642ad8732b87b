//! Refusals in stream order. A refused message is not answered by pgtenant
//! directly, which could reorder replies in a pipeline and would not abort
//! the client's transaction as PostgreSQL does. It is replaced by a marker
//! statement that fails on the server at the same place in the stream
//! (`SELECT <marker>`, or a Bind of a statement of that name); the server's
//! error for the marker is then swapped for pgtenant's own.

use std::collections::VecDeque;

use bytes::{BufMut, BytesMut};

use crate::error::ClientError;
use crate::protocol::backend::{put_cstr, write_message};
use crate::protocol::messages::{self, client, error_fields};

/// At most this many refusals wait for their marker's error.
const MAX_PENDING_DENIALS: usize = 64;

/// One session's refusals waiting for their markers' errors.
pub(crate) struct Markers {
    /// Per-process random prefix of marker identifiers.
    prefix: String,
    next: u64,
    pending: VecDeque<(u64, ClientError)>,
}

impl Markers {
    pub(crate) fn new(prefix: String) -> Markers {
        Markers { prefix, next: 1, pending: VecDeque::new() }
    }

    /// Sends a marker query in place of a refused Query or FunctionCall.
    pub(crate) fn query(&mut self, denial: ClientError, to_server: &mut BytesMut) {
        let marker = self.push(denial);
        write_message(to_server, client::QUERY, |b| put_cstr(b, &format!("SELECT {marker}")));
    }

    /// Sends a Bind of a statement that does not exist, named by a marker, in
    /// place of a refused Bind: the server fails it at the same place.
    pub(crate) fn bind(&mut self, denial: ClientError, to_server: &mut BytesMut) {
        let marker = self.push(denial);
        write_message(to_server, client::BIND, |b| {
            put_cstr(b, "");
            put_cstr(b, &marker);
            b.put_i16(0);
            b.put_i16(0);
            b.put_i16(0);
        });
    }

    /// Sends a Parse of a marker statement in place of a refused Parse.
    pub(crate) fn parse(&mut self, name: &str, denial: ClientError, to_server: &mut BytesMut) {
        let marker = self.push(denial);
        write_message(to_server, client::PARSE, |b| {
            put_cstr(b, name);
            put_cstr(b, &format!("SELECT {marker}"));
            b.put_i16(0);
        });
    }

    fn push(&mut self, denial: ClientError) -> String {
        crate::metrics::guard_refusal(&denial);
        let id = self.next;
        self.next += 1;
        if self.pending.len() >= MAX_PENDING_DENIALS {
            self.pending.pop_front();
        }
        self.pending.push_back((id, denial));
        format!("{}{id}", self.prefix)
    }

    /// True while a refusal waits for its marker's error.
    pub(crate) fn pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// pgtenant's refusal in place of the server's error for a marker;
    /// `None` for any other error.
    pub(crate) fn server_error(&mut self, frame: &[u8]) -> Option<BytesMut> {
        let fields = error_fields(messages::body(frame)?);
        let at = fields.message.find(&self.prefix)?;
        let digits: String =
            fields.message[at + self.prefix.len()..].chars().take_while(char::is_ascii_digit).collect();
        let id: u64 = digits.parse().ok()?;
        // Refusals queued before this one were skipped by the server (an
        // earlier error in the same pipeline): PostgreSQL would not have
        // reported them either.
        while let Some((queued, denial)) = self.pending.pop_front() {
            if queued == id {
                let mut out = BytesMut::new();
                denial.encode(&mut out);
                return Some(out);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::sqlstate;

    fn server_error_for(message: &str) -> BytesMut {
        let mut out = BytesMut::new();
        crate::protocol::backend::error_response(&mut out, "ERROR", "42703", message);
        out
    }

    #[test]
    fn the_servers_error_for_a_marker_becomes_the_refusal_and_skipped_ones_are_dropped() {
        let mut markers = Markers::new("pgtenant_refused_x_".into());
        let mut to_server = BytesMut::new();
        markers.query(ClientError::error(sqlstate::INSUFFICIENT_PRIVILEGE, "first"), &mut to_server);
        markers.parse("s1", ClientError::error(sqlstate::INSUFFICIENT_PRIVILEGE, "second"), &mut to_server);
        assert!(String::from_utf8_lossy(&to_server).contains("SELECT pgtenant_refused_x_1"));
        assert!(markers.pending());
        // An unrelated error passes through.
        assert!(markers.server_error(&server_error_for("column \"x\" does not exist")).is_none());
        // The server skipped the first marker (an earlier error in the pipeline) and failed the second.
        let swapped =
            markers.server_error(&server_error_for("column \"pgtenant_refused_x_2\" does not exist")).unwrap();
        assert!(String::from_utf8_lossy(&swapped).contains("second"));
        assert!(!markers.pending(), "the skipped refusal is dropped with it");
    }
}
