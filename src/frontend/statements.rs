//! Named prepared statements under transaction pooling.
//!
//! A client's named statement may be used on any server session. pgtenant
//! keeps the client's Parse per name, names the server-side statement after a
//! keyed hash of its text and parameter types (`pgt_<hash>`; no client can
//! compute the names, nor run or close a server-side statement by name),
//! prepares it lazily on whichever server session runs a Bind or Describe of
//! it, and rewrites names in Bind, Describe and Close.
//!
//! A text that carries values only as parameters (`… WHERE id = $1`) is
//! named alike for every tenant: one server-side statement, planned once and
//! then run from its cached plan by every tenant taking turns on the session
//! (the isolation policies are evaluated at execution, from the verified
//! context). A text that may carry a value itself (a literal, a number) is
//! named per tenant as well: whether a statement was already prepared shows in
//! its timing, and that must not tell one tenant which values another used.
//! The server's replies to messages pgtenant added or replaced are dropped or
//! rewritten in order, tracked per batch (a batch ends at Sync, Query or
//! FunctionCall; after an error the server skips to the end of the batch, so
//! expectations for a finished batch are discarded).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use sha2::{Digest, Sha256};

use crate::protocol::backend::{put_cstr, write_message};
use crate::protocol::messages::{client, server, Bind, Target, STATEMENT};
pub(crate) use crate::upstream::server_statements::ServerStatements;

/// A statement name no client uses: closing it is a no-op that still answers CloseComplete.
const NOOP_NAME: &str = "pgtenant_noop";

/// The keys under which a client's server-side statements are named: its
/// tenant's, and the one every tenant shares for parameter-only texts.
#[derive(Debug, Clone, Copy)]
pub struct StatementNamespaces {
    tenant: [u8; 32],
    shared: [u8; 32],
}

impl StatementNamespaces {
    /// The namespaces of `tenant_id`'s clients under the process's random `secret`.
    pub fn of(secret: &[u8; 32], tenant_id: &str) -> StatementNamespaces {
        StatementNamespaces {
            tenant: Sha256::new().chain_update(secret).chain_update(tenant_id.as_bytes()).finalize().into(),
            // A NUL never occurs in a tenant id: no tenant's namespace is this one.
            shared: Sha256::new().chain_update(secret).chain_update(b"\0shared").finalize().into(),
        }
    }

    /// The namespace of a Parse body (query text, NUL, parameter types).
    fn for_statement(&self, query_and_types: &[u8]) -> &[u8; 32] {
        let text = query_and_types.split(|b| *b == 0).next().unwrap_or_default();
        if may_carry_values(text) {
            &self.tenant
        } else {
            &self.shared
        }
    }
}

/// Whether a statement text may hold a value of its own rather than only
/// `$n` parameters: a quote (string literals of every kind), a dollar quote,
/// or a digit that does not continue an identifier or a parameter number.
/// A superset (a digit in a quoted identifier or a comment counts too): a
/// false positive only keeps the statement to its tenant.
fn may_carry_values(text: &[u8]) -> bool {
    let continues_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
    let mut previous = b' ';
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        match b {
            b'\'' => return true,
            b'$' => {
                if !text.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    return true;
                }
                // A parameter number: its digits are not values.
                i += 1;
                while text.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                previous = b'0';
                continue;
            }
            b'0'..=b'9' if !continues_word(previous) && previous != b'$' => return true,
            _ => {}
        }
        previous = b;
        i += 1;
    }
    false
}

/// A client's Parse, remembered by name.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub server_name: String,
    /// The Parse body after the name: query text (NUL-terminated) and parameter types.
    pub query_and_types: Vec<u8>,
}

impl Prepared {
    /// A statement of a client whose namespaces are `namespaces`.
    pub(crate) fn new(namespaces: &StatementNamespaces, query_and_types: &[u8]) -> Prepared {
        let namespace = namespaces.for_statement(query_and_types);
        let digest = Sha256::new().chain_update(namespace).chain_update(query_and_types).finalize();
        let name = crate::hex::hex(&digest[..10]);
        Prepared { server_name: format!("pgt_{name}"), query_and_types: query_and_types.to_vec() }
    }
}

/// What to do with one ParseComplete or CloseComplete from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edit {
    Forward,
    Drop,
    /// A no-op Close stood in for a Parse the server session already had.
    ToParseComplete,
}

/// The expected ParseComplete/CloseComplete replies, in order, per batch.
#[derive(Debug, Default)]
pub(crate) struct ReplyEdits {
    queue: VecDeque<(u64, u8, Edit)>,
    sent_batches: u64,
    done_batches: u64,
}

impl ReplyEdits {
    /// `n` batch terminators were sent (Sync, Query, FunctionCall).
    pub(crate) fn batches_sent(&mut self, n: u64) {
        self.sent_batches += n;
    }

    /// A ReadyForQuery arrived: expectations of the finished batch are void.
    pub(crate) fn batch_done(&mut self) {
        self.done_batches += 1;
        let done = self.done_batches;
        while self.queue.front().is_some_and(|(batch, _, _)| *batch < done) {
            self.queue.pop_front();
        }
    }

    fn expect_reply(&mut self, tag: u8, edit: Edit) {
        self.queue.push_back((self.sent_batches, tag, edit));
    }

    /// True when replies must be read (anything is expected).
    pub(crate) fn tracking(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The edit for a reply with `tag` ('1' or '3').
    pub(crate) fn reply(&mut self, tag: u8) -> Edit {
        while let Some((_, expected, edit)) = self.queue.pop_front() {
            if expected == tag {
                return edit;
            }
            // A reply that never came (skipped after an error) for an earlier message.
        }
        Edit::Forward
    }
}

/// The client's named statements and the rewriting of their messages.
#[derive(Debug)]
pub(crate) struct ClientStatements {
    namespaces: StatementNamespaces,
    by_name: HashMap<String, Arc<Prepared>>,
    pub edits: ReplyEdits,
}

impl ClientStatements {
    /// The statements of a client whose namespaces are `namespaces`.
    pub(crate) fn new(namespaces: StatementNamespaces) -> ClientStatements {
        ClientStatements { namespaces, by_name: HashMap::new(), edits: ReplyEdits::default() }
    }

    /// The client forgot every statement (DISCARD ALL, DEALLOCATE ALL).
    pub(crate) fn clear(&mut self) {
        self.by_name.clear();
    }

    /// A named Parse answered without a server session: remembered, and
    /// prepared on whichever server session first runs its Bind or Describe.
    /// False (nothing done) for a name the client already uses.
    pub(crate) fn remember(&mut self, name: &str, query_and_types: &[u8]) -> bool {
        if self.by_name.contains_key(name) {
            return false;
        }
        self.by_name.insert(name.to_owned(), Arc::new(Prepared::new(&self.namespaces, query_and_types)));
        true
    }

    /// A named Parse: remembered; sent to the server only if it lacks it.
    pub(crate) fn parse(
        &mut self,
        name: &str,
        query_and_types: &[u8],
        server: &mut ServerStatements,
        out: &mut BytesMut,
    ) {
        let prepared = Arc::new(Prepared::new(&self.namespaces, query_and_types));
        self.by_name.insert(name.to_owned(), Arc::clone(&prepared));
        if server.contains(&prepared.server_name) {
            close(out, NOOP_NAME);
            self.edits.expect_reply(server::CLOSE_COMPLETE, Edit::ToParseComplete);
        } else {
            self.prepare_on(&prepared, server, out, Edit::Forward);
        }
    }

    /// Makes sure `name` exists on this server session; returns its server name.
    fn ensure(&mut self, name: &str, server: &mut ServerStatements, out: &mut BytesMut) -> Option<String> {
        let prepared = Arc::clone(self.by_name.get(name)?);
        if !server.contains(&prepared.server_name) {
            self.prepare_on(&prepared, server, out, Edit::Drop);
        }
        Some(prepared.server_name.clone())
    }

    fn prepare_on(&mut self, prepared: &Prepared, server: &mut ServerStatements, out: &mut BytesMut, edit: Edit) {
        if let Some(evicted) = server.insert(&prepared.server_name) {
            close(out, &evicted);
            self.edits.expect_reply(server::CLOSE_COMPLETE, Edit::Drop);
        }
        write_message(out, client::PARSE, |b| {
            put_cstr(b, &prepared.server_name);
            b.put_slice(&prepared.query_and_types);
        });
        self.edits.expect_reply(server::PARSE_COMPLETE, edit);
    }

    /// Bind: the statement name rewritten (and the statement prepared first if needed).
    pub(crate) fn bind(&mut self, frame: &[u8], server: &mut ServerStatements, out: &mut BytesMut) -> bool {
        let Some(bind) = Bind::read(frame) else { return false };
        if bind.statement.is_empty() {
            return false;
        }
        let Some(server_name) = self.ensure(bind.statement, server, out) else { return false };
        write_message(out, client::BIND, |b| {
            put_cstr(b, bind.portal);
            put_cstr(b, &server_name);
            b.put_slice(bind.rest);
        });
        true
    }

    /// Describe of a statement: its name rewritten (prepared first if needed).
    pub(crate) fn describe(&mut self, frame: &[u8], server: &mut ServerStatements, out: &mut BytesMut) -> bool {
        let Some(name) = Target::read(frame).and_then(|target| target.named_statement()) else { return false };
        let Some(server_name) = self.ensure(name, server, out) else { return false };
        write_message(out, client::DESCRIBE, |b| {
            b.put_u8(STATEMENT);
            put_cstr(b, &server_name);
        });
        true
    }

    /// Close of a statement: forgotten by the client; the server-side one stays
    /// cached for others, so a no-op Close answers instead.
    pub(crate) fn close(&mut self, frame: &[u8], out: &mut BytesMut) -> bool {
        let Some(name) = Target::read(frame).and_then(|target| target.named_statement()) else { return false };
        if self.by_name.remove(name).is_none() {
            return false;
        }
        close(out, NOOP_NAME);
        self.edits.expect_reply(server::CLOSE_COMPLETE, Edit::Forward);
        true
    }
}

/// Close of the server statement `name`.
fn close(out: &mut BytesMut, name: &str) {
    write_message(out, client::CLOSE, |b| {
        b.put_u8(STATEMENT);
        put_cstr(b, name);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_depend_on_text_types_and_for_texts_with_values_the_tenant() {
        let secret = [7u8; 32];
        let (a, b) = (StatementNamespaces::of(&secret, "tenant-a"), StatementNamespaces::of(&secret, "tenant-b"));
        let name = |namespaces: &StatementNamespaces, text: &[u8]| Prepared::new(namespaces, text).server_name;
        assert_eq!(name(&a, b"SELECT 1\0\0\0"), name(&a, b"SELECT 1\0\0\0"));
        assert_ne!(name(&a, b"SELECT 1\0\0\0"), name(&a, b"SELECT 2\0\0\0"));
        assert_ne!(name(&a, b"SELECT 1\0\0\0"), name(&b, b"SELECT 1\0\0\0"), "a value: never shared");
        let by_id = b"SELECT holder FROM accounts WHERE id = $1\0\0\x01\0\0\0\x14";
        assert_eq!(name(&a, by_id), name(&b, by_id), "parameters only: one statement for every tenant");
        assert_ne!(name(&a, by_id), name(&a, b"SELECT holder FROM accounts WHERE id = $1\0\0\0"), "types count");
        let other_process = StatementNamespaces::of(&[8u8; 32], "tenant-a");
        assert_ne!(name(&a, b"SELECT 1\0\0\0"), name(&other_process, b"SELECT 1\0\0\0"));
        assert_ne!(name(&a, by_id), name(&other_process, by_id));
    }

    #[test]
    fn values_in_statement_text_are_told_from_parameters() {
        for text in [
            "SELECT id FROM accounts WHERE id = $1",
            "SELECT t1.x, v2_y FROM t1 JOIN v2_y ON t1.id = v2_y.id WHERE t1.a = $1 AND t1.b = $12",
            "INSERT INTO notes(body) VALUES ($1) RETURNING id",
            "SELECT * FROM café2 WHERE x IS NULL AND y = true",
        ] {
            assert!(!may_carry_values(text.as_bytes()), "{text}");
        }
        for text in [
            "SELECT id FROM accounts WHERE holder = 'Acme'",
            "SELECT id FROM accounts WHERE id = 7",
            "SELECT id FROM accounts LIMIT 10",
            "SELECT 1.5e3",
            "SELECT $$secret$$",
            "SELECT $tag$secret$tag$",
            "SELECT E'\\x41', B'101', X'ff', U&'d\\0061t'",
            "SELECT id FROM accounts WHERE id = -$1 + 0",
            "SELECT \"col 1\" FROM t",
        ] {
            assert!(may_carry_values(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn cache_evicts_the_oldest() {
        use crate::upstream::server_statements::SERVER_CACHE_CAPACITY;
        let mut cache = ServerStatements::default();
        for i in 0..SERVER_CACHE_CAPACITY {
            assert_eq!(cache.insert(&format!("s{i}")), None);
        }
        assert_eq!(cache.insert("new"), Some("s0".into()));
        assert!(!cache.contains("s0") && cache.contains("new"));
    }

    #[test]
    fn edits_of_a_finished_batch_are_void() {
        let mut edits = ReplyEdits::default();
        edits.expect_reply(b'1', Edit::Drop);
        edits.batches_sent(1);
        edits.expect_reply(b'1', Edit::Forward);
        edits.batches_sent(1);
        // The first batch failed before its Parse: no ParseComplete came.
        edits.batch_done();
        assert_eq!(edits.reply(b'1'), Edit::Forward);
        assert!(!edits.tracking());
    }
}
