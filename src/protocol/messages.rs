//! The message tags of protocol v3, and typed views of the messages pgtenant
//! reads, borrowed from the frame (tag, length, body) they arrived in: no
//! copies, and no byte offsets outside this file.
//!
//! A view's `read` takes the whole frame and returns `None` when the body is
//! malformed (a missing terminator, a string that is not UTF-8, a body too
//! short); the caller decides whether that is a protocol violation or a
//! message to pass on unread.

use super::frame::{read_cstr, HEADER_LEN};

/// Tags of the messages a client sends.
pub(crate) mod client {
    pub(crate) const QUERY: u8 = b'Q';
    pub(crate) const PARSE: u8 = b'P';
    pub(crate) const BIND: u8 = b'B';
    pub(crate) const DESCRIBE: u8 = b'D';
    pub(crate) const EXECUTE: u8 = b'E';
    pub(crate) const CLOSE: u8 = b'C';
    pub(crate) const SYNC: u8 = b'S';
    pub(crate) const FLUSH: u8 = b'H';
    pub(crate) const FUNCTION_CALL: u8 = b'F';
    pub(crate) const TERMINATE: u8 = b'X';
    /// PasswordMessage, SASLInitialResponse and SASLResponse share it.
    pub(crate) const PASSWORD: u8 = b'p';
}

/// Tags of the messages a server sends.
pub(crate) mod server {
    pub(crate) const AUTHENTICATION: u8 = b'R';
    pub(crate) const BACKEND_KEY_DATA: u8 = b'K';
    pub(crate) const PARAMETER_STATUS: u8 = b'S';
    pub(crate) const READY_FOR_QUERY: u8 = b'Z';
    pub(crate) const ERROR_RESPONSE: u8 = b'E';
    pub(crate) const NOTICE_RESPONSE: u8 = b'N';
    pub(crate) const NOTIFICATION_RESPONSE: u8 = b'A';
    pub(crate) const PARSE_COMPLETE: u8 = b'1';
    pub(crate) const CLOSE_COMPLETE: u8 = b'3';
    pub(crate) const COMMAND_COMPLETE: u8 = b'C';
    pub(crate) const DATA_ROW: u8 = b'D';
    pub(crate) const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub(crate) const PORTAL_SUSPENDED: u8 = b's';
    pub(crate) const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
}

/// What a Describe or Close names: a prepared statement or a portal.
pub(crate) const STATEMENT: u8 = b'S';

/// The body of a frame (after tag and length).
pub(crate) fn body(frame: &[u8]) -> Option<&[u8]> {
    frame.get(HEADER_LEN..)
}

/// Query: the statement text, as sent (not necessarily UTF-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Query<'a> {
    pub(crate) sql: &'a [u8],
}

impl<'a> Query<'a> {
    pub(crate) fn read(frame: &'a [u8]) -> Option<Query<'a>> {
        Some(Query { sql: body(frame)?.strip_suffix(&[0])? })
    }
}

/// Parse: the statement's name, its text (not necessarily UTF-8), and the
/// parameter types that follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parse<'a> {
    pub(crate) name: &'a str,
    pub(crate) sql: &'a [u8],
    /// The text with its terminator and the parameter types: the body after the name.
    pub(crate) sql_and_types: &'a [u8],
    pub(crate) types: &'a [u8],
}

impl<'a> Parse<'a> {
    pub(crate) fn read(frame: &'a [u8]) -> Option<Parse<'a>> {
        let (name, sql_and_types) = read_cstr(body(frame)?)?;
        let end = sql_and_types.iter().position(|b| *b == 0)?;
        Some(Parse { name, sql: &sql_and_types[..end], sql_and_types, types: &sql_and_types[end + 1..] })
    }
}

/// Bind: the portal and statement names; the formats, values and result
/// formats follow unread in `rest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bind<'a> {
    pub(crate) portal: &'a str,
    pub(crate) statement: &'a str,
    pub(crate) rest: &'a [u8],
}

impl<'a> Bind<'a> {
    pub(crate) fn read(frame: &'a [u8]) -> Option<Bind<'a>> {
        let (portal, rest) = read_cstr(body(frame)?)?;
        let (statement, rest) = read_cstr(rest)?;
        Some(Bind { portal, statement, rest })
    }
}

/// Describe or Close: what kind of object ([`STATEMENT`] or portal), and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target<'a> {
    pub(crate) kind: u8,
    pub(crate) name: &'a str,
}

impl<'a> Target<'a> {
    pub(crate) fn read(frame: &'a [u8]) -> Option<Target<'a>> {
        let (&kind, rest) = body(frame)?.split_first()?;
        let (name, _) = read_cstr(rest)?;
        Some(Target { kind, name })
    }

    /// A named prepared statement (not the unnamed one, not a portal).
    pub(crate) fn named_statement(&self) -> Option<&'a str> {
        (self.kind == STATEMENT && !self.name.is_empty()).then_some(self.name)
    }
}

/// ReadyForQuery: the transaction status byte (`I`, `T` or `E`).
pub(crate) fn ready_status(frame: &[u8]) -> Option<u8> {
    body(frame)?.first().copied()
}

/// CommandComplete: the command tag's first word (`COMMIT`, `ROLLBACK`, `SELECT`, …).
pub(crate) fn command_verb(frame: &[u8]) -> Option<&[u8]> {
    let (tag, _) = read_cstr(body(frame)?)?;
    tag.split(' ').next().map(str::as_bytes)
}

/// DataRow: its first column as text (`None` when NULL, absent or malformed).
pub(crate) fn first_column(frame: &[u8]) -> Option<&str> {
    data_row_first_column(body(frame)?)
}

/// [`first_column`] of a DataRow body (after tag and length).
pub(crate) fn data_row_first_column(body: &[u8]) -> Option<&str> {
    let (count, rest) = body.split_first_chunk::<2>()?;
    if i16::from_be_bytes(*count) < 1 {
        return None;
    }
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(i32::from_be_bytes(*len)).ok()?;
    std::str::from_utf8(rest.get(..len)?).ok()
}

/// ParameterStatus: a setting's name and value, from the message body.
pub(crate) fn parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let (name, rest) = read_cstr(body)?;
    let (value, _) = read_cstr(rest)?;
    Some((name, value))
}

/// NotificationResponse: the sending backend's pid, the channel and the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Notification<'a> {
    pub(crate) pid: i32,
    pub(crate) channel: &'a str,
    pub(crate) payload: &'a str,
}

impl<'a> Notification<'a> {
    pub(crate) fn read(frame: &'a [u8]) -> Option<Notification<'a>> {
        let body = body(frame)?;
        let (pid, rest) = body.split_first_chunk::<4>()?;
        let (channel, rest) = read_cstr(rest)?;
        let (payload, _) = read_cstr(rest)?;
        Some(Notification { pid: i32::from_be_bytes(*pid), channel, payload })
    }
}

/// The fields of an ErrorResponse or NoticeResponse that pgtenant looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ErrorFields {
    pub(crate) severity: String,
    pub(crate) code: String,
    pub(crate) message: String,
}

/// The fields of an ErrorResponse body (after tag and length).
pub(crate) fn error_fields(mut body: &[u8]) -> ErrorFields {
    let mut fields = ErrorFields::default();
    while let Some((&kind, rest)) = body.split_first() {
        if kind == 0 {
            break;
        }
        let Some((value, rest)) = read_cstr(rest) else {
            break;
        };
        match kind {
            b'V' => fields.severity = value.to_owned(),
            b'S' if fields.severity.is_empty() => fields.severity = value.to_owned(),
            b'C' => fields.code = value.to_owned(),
            b'M' => fields.message = value.to_owned(),
            _ => {}
        }
        body = rest;
    }
    fields
}

/// The SQLSTATE of a whole ErrorResponse frame.
pub(crate) fn error_code(frame: &[u8]) -> Option<String> {
    Some(error_fields(body(frame)?).code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![tag];
        f.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn views_read_what_the_client_sent() {
        assert_eq!(Query::read(&frame(client::QUERY, b"SELECT 1\0")).unwrap().sql, b"SELECT 1");
        let parse = frame(client::PARSE, b"s1\0SELECT $1\0\0\x01\0\0\0\x17");
        let p = Parse::read(&parse).unwrap();
        assert_eq!((p.name, p.sql, p.types), ("s1", &b"SELECT $1"[..], &b"\0\x01\0\0\0\x17"[..]));
        assert_eq!(p.sql_and_types, b"SELECT $1\0\0\x01\0\0\0\x17");
        let bind = frame(client::BIND, b"p\0s1\0\0\0");
        assert_eq!(Bind::read(&bind), Some(Bind { portal: "p", statement: "s1", rest: b"\0\0" }));
        assert_eq!(Target::read(&frame(client::DESCRIBE, b"Ss1\0")).unwrap().named_statement(), Some("s1"));
        assert_eq!(Target::read(&frame(client::CLOSE, b"Pp\0")).unwrap().named_statement(), None);
        assert_eq!(Target::read(&frame(client::CLOSE, b"S\0")).unwrap().named_statement(), None);
    }

    #[test]
    fn malformed_bodies_read_as_none() {
        assert_eq!(Query::read(&frame(client::QUERY, b"SELECT 1")), None, "no terminator");
        assert_eq!(Parse::read(&frame(client::PARSE, b"s1\0SELECT")), None);
        assert_eq!(Bind::read(&frame(client::BIND, b"p\0")), None);
        assert_eq!(Target::read(&frame(client::DESCRIBE, b"")), None);
        assert_eq!(Notification::read(&frame(server::NOTIFICATION_RESPONSE, b"\0\0")), None);
        assert_eq!(Query::read(b"Q\0\0"), None, "shorter than a header");
    }

    #[test]
    fn server_messages() {
        assert_eq!(ready_status(&frame(server::READY_FOR_QUERY, b"T")), Some(b'T'));
        assert_eq!(command_verb(&frame(server::COMMAND_COMPLETE, b"ROLLBACK\0")), Some(&b"ROLLBACK"[..]));
        assert_eq!(command_verb(&frame(server::COMMAND_COMPLETE, b"SELECT 1\0")), Some(&b"SELECT"[..]));
        assert_eq!(command_verb(&frame(server::COMMAND_COMPLETE, b"SELECT 1")), None, "unterminated");
        let row = frame(server::DATA_ROW, b"\0\x01\0\0\0\x04t1.a");
        assert_eq!(first_column(&row), Some("t1.a"));
        assert_eq!(first_column(&frame(server::DATA_ROW, b"\0\x01\xff\xff\xff\xff")), None, "NULL");
        assert_eq!(first_column(&frame(server::DATA_ROW, b"\0\x01\0\0\0\x09t1")), None, "short");
        let n = frame(server::NOTIFICATION_RESPONSE, b"\0\0\0\x07chan\0hello\0");
        assert_eq!(Notification::read(&n), Some(Notification { pid: 7, channel: "chan", payload: "hello" }));
        assert_eq!(parameter_status(b"TimeZone\0UTC\0"), Some(("TimeZone", "UTC")));
        let e = frame(server::ERROR_RESPONSE, b"SERROR\0VERROR\0C42501\0Mno\0\0");
        assert_eq!(error_code(&e).as_deref(), Some("42501"));
        assert_eq!(error_fields(body(&e).unwrap()).message, "no");
    }
}
