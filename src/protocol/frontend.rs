//! Builders for the frontend messages pgtenant writes to the upstream server
//! on its own behalf (the tenant context exchange, cancel requests).

use bytes::{BufMut, BytesMut};

use super::backend::{put_cstr, write_message};

/// Parse of an unnamed statement with untyped parameters.
pub(crate) fn parse_unnamed(buf: &mut BytesMut, sql: &str) {
    write_message(buf, b'P', |b| {
        put_cstr(b, "");
        put_cstr(b, sql);
        b.put_i16(0);
    });
}

/// Bind of the unnamed statement to the unnamed portal, every parameter in
/// text format (`None`: SQL NULL), results in text format.
pub(crate) fn bind_unnamed(buf: &mut BytesMut, params: &[Option<&str>]) {
    write_message(buf, b'B', |b| {
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

pub(crate) fn execute_unnamed(buf: &mut BytesMut) {
    write_message(buf, b'E', |b| {
        put_cstr(b, "");
        b.put_i32(0);
    });
}

pub(crate) fn sync(buf: &mut BytesMut) {
    write_message(buf, b'S', |_| {});
}

/// The 16-byte CancelRequest packet.
pub(crate) fn cancel_request(process_id: i32, secret_key: i32) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0..4].copy_from_slice(&16i32.to_be_bytes());
    p[4..8].copy_from_slice(&80_877_102i32.to_be_bytes());
    p[8..12].copy_from_slice(&process_id.to_be_bytes());
    p[12..16].copy_from_slice(&secret_key.to_be_bytes());
    p
}
