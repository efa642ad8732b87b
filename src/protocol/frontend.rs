//! Builders for the frontend messages pgtenant writes to the upstream server
//! on its own behalf (the tenant context exchange, setting changes, cancel
//! requests).
//!
//! The statement text is `&'static str`: what pgtenant runs through the
//! extended protocol is a constant of its own, and every value travels as a
//! bind parameter, so no client text can become SQL here. Parse, Bind and
//! Execute are written by hand rather than with `postgres_protocol`'s
//! builders, which return an error (an embedded NUL, a length overflow)
//! after writing part of the message: in a pipelined buffer that would leave
//! a torn frame, and the error cannot happen for these inputs. These cannot
//! fail at all; Sync and CancelRequest come from `postgres_protocol`.

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;

use super::backend::{put_cstr, write_message};
use super::messages::client;

/// Parse of an unnamed statement with untyped parameters.
pub(crate) fn parse_unnamed(buf: &mut BytesMut, sql: &'static str) {
    write_message(buf, client::PARSE, |b| {
        put_cstr(b, "");
        put_cstr(b, sql);
        b.put_i16(0);
    });
}

/// Bind of the unnamed statement to the unnamed portal, every parameter in
/// text format (`None`: SQL NULL), results in text format.
pub(crate) fn bind_unnamed(buf: &mut BytesMut, params: &[Option<&str>]) {
    write_message(buf, client::BIND, |b| {
        put_cstr(b, "");
        put_cstr(b, "");
        b.put_i16(0);
        b.put_i16(params.len() as i16);
        for p in params {
            match p {
                Some(p) => {
                    b.put_i32(p.len() as i32);
                    b.put_slice(p.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
        b.put_i16(0);
    });
}

/// A FunctionCall of the function with oid `function`, text arguments and a
/// text result: no statement to parse or plan (PostgreSQL's fast path).
pub(crate) fn function_call(buf: &mut BytesMut, function: u32, args: &[&str]) {
    write_message(buf, client::FUNCTION_CALL, |b| {
        b.put_u32(function);
        b.put_i16(1);
        b.put_i16(0);
        b.put_i16(args.len() as i16);
        for arg in args {
            b.put_i32(arg.len() as i32);
            b.put_slice(arg.as_bytes());
        }
        b.put_i16(0);
    });
}

pub(crate) fn execute_unnamed(buf: &mut BytesMut) {
    write_message(buf, client::EXECUTE, |b| {
        put_cstr(b, "");
        b.put_i32(0);
    });
}

pub(crate) fn sync(buf: &mut BytesMut) {
    frontend::sync(buf);
}

/// The 16-byte CancelRequest packet.
pub(crate) fn cancel_request(process_id: i32, secret_key: i32) -> BytesMut {
    let mut packet = BytesMut::with_capacity(16);
    frontend::cancel_request(process_id, secret_key, &mut packet);
    packet
}
