//! Builders for the backend messages pgtenant itself writes to clients.

use bytes::{BufMut, BytesMut};

use super::messages::server;

/// Writes a tagged message: `tag`, then a length placeholder patched after `body` runs.
pub(crate) fn write_message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let len_at = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - len_at) as i32;
    buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends `s` and its NUL terminator.
pub(crate) fn put_cstr(buf: &mut BytesMut, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

pub(crate) fn authentication_ok(buf: &mut BytesMut) {
    write_message(buf, server::AUTHENTICATION, |b| b.put_i32(0));
}

pub(crate) fn authentication_cleartext_password(buf: &mut BytesMut) {
    write_message(buf, server::AUTHENTICATION, |b| b.put_i32(3));
}

/// AuthenticationSASL listing the mechanisms we offer.
pub(crate) fn authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    write_message(buf, server::AUTHENTICATION, |b| {
        b.put_i32(10);
        for m in mechanisms {
            put_cstr(b, m);
        }
        b.put_u8(0);
    });
}

pub(crate) fn authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    write_message(buf, server::AUTHENTICATION, |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

pub(crate) fn authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    write_message(buf, server::AUTHENTICATION, |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

pub(crate) fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    write_message(buf, server::PARAMETER_STATUS, |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

pub(crate) fn backend_key_data(buf: &mut BytesMut, process_id: i32, secret_key: i32) {
    write_message(buf, server::BACKEND_KEY_DATA, |b| {
        b.put_i32(process_id);
        b.put_i32(secret_key);
    });
}

pub(crate) fn ready_for_query(buf: &mut BytesMut, status: u8) {
    write_message(buf, server::READY_FOR_QUERY, |b| b.put_u8(status));
}

/// NegotiateProtocolVersion: we speak 3.0 and recognise no `_pq_` options.
pub(crate) fn negotiate_protocol_version(buf: &mut BytesMut, unrecognized: &[&str]) {
    write_message(buf, server::NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_i32(0x0003_0000);
        b.put_i32(unrecognized.len() as i32);
        for option in unrecognized {
            put_cstr(b, option);
        }
    });
}

/// An ErrorResponse or NoticeResponse with the fields every client shows.
#[cfg(test)]
pub(crate) fn error_response(buf: &mut BytesMut, severity: &str, code: &str, message: &str) {
    error_response_with(buf, severity, code, message, &[]);
}

/// An ErrorResponse with more fields after the message (`P`, `F`, `L`, `R`, …).
pub(crate) fn error_response_with(
    buf: &mut BytesMut,
    severity: &str,
    code: &str,
    message: &str,
    more: &[(u8, String)],
) {
    write_message(buf, server::ERROR_RESPONSE, |b| {
        for (field, value) in [(b'S', severity), (b'V', severity), (b'C', code), (b'M', message)] {
            b.put_u8(field);
            put_cstr(b, value);
        }
        for (field, value) in more {
            b.put_u8(*field);
            put_cstr(b, value);
        }
        b.put_u8(0);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_for_query_bytes() {
        let mut b = BytesMut::new();
        ready_for_query(&mut b, b'I');
        assert_eq!(&b[..], b"Z\0\0\0\x05I");
    }

    #[test]
    fn error_response_bytes() {
        let mut b = BytesMut::new();
        error_response(&mut b, "FATAL", "28P01", "no");
        assert_eq!(&b[..], b"E\0\0\0\x1eSFATAL\0VFATAL\0C28P01\0Mno\0\0");
    }
}
