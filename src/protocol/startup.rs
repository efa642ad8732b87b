//! The untagged first packet a client sends: StartupMessage, SSLRequest,
//! GSSENCRequest or CancelRequest.

/// Request codes of the untagged packets (see PostgreSQL's protocol docs).
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;
const PROTOCOL_MAJOR_3: i32 = 3;

/// Startup packets larger than this are refused, as PostgreSQL does
/// (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// One decoded initial packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitialPacket {
    SslRequest,
    GssEncRequest,
    Cancel { process_id: i32, secret_key: i32 },
    Startup(StartupMessage),
}

/// A StartupMessage: the protocol version and its name/value parameters, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub minor_version: u16,
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// The value of parameter `name`, if the client sent it.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Why an initial packet is unacceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    #[error("invalid length of startup packet")]
    BadLength,
    #[error("unsupported frontend protocol {0}.{1}: server supports 3.0")]
    UnsupportedProtocol(u16, u16),
    #[error("invalid startup packet layout: expected terminator as last byte")]
    BadLayout,
    #[error("invalid byte sequence in startup packet")]
    NotUtf8,
}

/// Reads the declared total length of the packet at the front of `buf`.
/// `Ok(None)` means fewer than four bytes are there yet.
pub fn declared_len(buf: &[u8]) -> Result<Option<usize>, StartupError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 || len as usize > MAX_STARTUP_PACKET {
        return Err(StartupError::BadLength);
    }
    Ok(Some(len as usize))
}

/// Decodes one complete initial packet (`packet` holds exactly the declared length).
pub fn parse(packet: &[u8]) -> Result<InitialPacket, StartupError> {
    if packet.len() < 8 {
        return Err(StartupError::BadLength);
    }
    let code = i32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let body = &packet[8..];
    match code {
        SSL_REQUEST if body.is_empty() => Ok(InitialPacket::SslRequest),
        GSSENC_REQUEST if body.is_empty() => Ok(InitialPacket::GssEncRequest),
        CANCEL_REQUEST if body.len() == 8 => Ok(InitialPacket::Cancel {
            process_id: i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
            secret_key: i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
        }),
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => Err(StartupError::BadLength),
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major as i32 != PROTOCOL_MAJOR_3 {
                return Err(StartupError::UnsupportedProtocol(major, minor));
            }
            Ok(InitialPacket::Startup(StartupMessage { minor_version: minor, params: parse_params(body)? }))
        }
    }
}

fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    if body.last() != Some(&0) {
        return Err(StartupError::BadLayout);
    }
    let mut params = Vec::new();
    loop {
        let (name, rest) = split_cstr(body)?;
        if name.is_empty() {
            if !rest.is_empty() {
                return Err(StartupError::BadLayout);
            }
            return Ok(params);
        }
        let (value, rest) = split_cstr(rest)?;
        params.push((name.to_owned(), value.to_owned()));
        body = rest;
    }
}

fn split_cstr(buf: &[u8]) -> Result<(&str, &[u8]), StartupError> {
    let end = buf.iter().position(|b| *b == 0).ok_or(StartupError::BadLayout)?;
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| StartupError::NotUtf8)?;
    Ok((text, &buf[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: i32, body: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&((body.len() + 8) as i32).to_be_bytes());
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn startup_parameters_in_order() {
        let p = packet(196_608, b"user\0alice\0database\0app\0\0");
        let InitialPacket::Startup(msg) = parse(&p).unwrap() else { panic!("not startup") };
        assert_eq!(msg.param("user"), Some("alice"));
        assert_eq!(msg.param("database"), Some("app"));
        assert_eq!(msg.minor_version, 0);
    }

    #[test]
    fn special_requests() {
        assert_eq!(parse(&packet(SSL_REQUEST, b"")).unwrap(), InitialPacket::SslRequest);
        assert_eq!(parse(&packet(GSSENC_REQUEST, b"")).unwrap(), InitialPacket::GssEncRequest);
        let mut key = Vec::new();
        key.extend_from_slice(&7i32.to_be_bytes());
        key.extend_from_slice(&(-9i32).to_be_bytes());
        assert_eq!(
            parse(&packet(CANCEL_REQUEST, &key)).unwrap(),
            InitialPacket::Cancel { process_id: 7, secret_key: -9 }
        );
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(parse(&packet(196_608, b"user\0alice")), Err(StartupError::BadLayout));
        assert_eq!(parse(&packet(196_608, b"user\0\0x\0")), Err(StartupError::BadLayout));
        assert_eq!(parse(&packet(131_072, b"\0")), Err(StartupError::UnsupportedProtocol(2, 0)));
        assert_eq!(parse(&packet(196_608, b"u\xff\0v\0\0")), Err(StartupError::NotUtf8));
        assert_eq!(declared_len(&[0, 0, 0, 3]), Err(StartupError::BadLength));
        assert_eq!(declared_len(&[0, 1, 0, 0]), Err(StartupError::BadLength));
    }
}
