//! A raw protocol client for what drivers never send: FunctionCall
//! messages, odd startup keys, forged cancel keys, hand-made pipelines.

use std::net::SocketAddr;

use bytes::{Buf, BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One backend message: its tag and body.
#[derive(Debug, Clone)]
pub struct Message {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Message {
    /// The SQLSTATE of an ErrorResponse.
    pub fn code(&self) -> Option<String> {
        self.field(b'C')
    }

    /// A field of an ErrorResponse or NoticeResponse.
    pub fn field(&self, kind: u8) -> Option<String> {
        let mut rest = &self.body[..];
        while let Some((&k, tail)) = rest.split_first() {
            if k == 0 {
                return None;
            }
            let end = tail.iter().position(|b| *b == 0)?;
            if k == kind {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }
}

/// A byte stream to a server: TCP (pgtenant) or a Unix socket (PostgreSQL directly).
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// An authenticated raw session.
pub struct RawSession {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    /// The BackendKeyData pgtenant issued.
    pub key: (i32, i32),
}

/// Opens a session with `params` besides user and database; the error is
/// the first ErrorResponse.
pub async fn login(
    addr: SocketAddr,
    user: &str,
    password: &str,
    database: &str,
    params: &[(&str, &str)],
) -> Result<RawSession, Message> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    login_on(Box::new(stream), user, password, database, params).await
}

/// Like [`login`], over a Unix socket (the cluster's, with trust authentication).
#[allow(dead_code)]
pub async fn login_unix(
    path: &std::path::Path,
    user: &str,
    database: &str,
    params: &[(&str, &str)],
) -> Result<RawSession, Message> {
    let stream = tokio::net::UnixStream::connect(path).await.expect("connect");
    login_on(Box::new(stream), user, "", database, params).await
}

async fn login_on(
    mut stream: Box<dyn Stream>,
    user: &str,
    password: &str,
    database: &str,
    params: &[(&str, &str)],
) -> Result<RawSession, Message> {
    let mut out = BytesMut::new();
    let mut all: Vec<(&str, &str)> = vec![("user", user), ("database", database)];
    all.extend_from_slice(params);
    frontend::startup_message(all, &mut out).unwrap();
    stream.write_all(&out).await.unwrap();
    let mut session = RawSession { stream, buf: BytesMut::new(), key: (0, 0) };
    let mut scram = None;
    loop {
        let message = session.read().await;
        match message.tag {
            b'R' => {
                let kind = i32::from_be_bytes(message.body[..4].try_into().unwrap());
                let data = &message.body[4..];
                out.clear();
                match kind {
                    0 => continue,
                    10 => {
                        let client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                        frontend::sasl_initial_response(SCRAM_SHA_256, client.message(), &mut out).unwrap();
                        scram = Some(client);
                    }
                    11 => {
                        let client = scram.as_mut().unwrap();
                        client.update(data).unwrap();
                        frontend::sasl_response(client.message(), &mut out).unwrap();
                    }
                    12 => {
                        scram.as_mut().unwrap().finish(data).unwrap();
                        continue;
                    }
                    other => panic!("unexpected authentication request {other}"),
                }
                session.stream.write_all(&out).await.unwrap();
            }
            b'K' => {
                let mut b = &message.body[..];
                session.key = (b.get_i32(), b.get_i32());
            }
            b'E' => return Err(message),
            b'Z' => return Ok(session),
            _ => {}
        }
    }
}

impl RawSession {
    /// Sends raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one message; panics if the connection closes.
    pub async fn read(&mut self) -> Message {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() > len {
                    let frame = self.buf.split_to(len + 1);
                    return Message { tag: frame[0], body: frame[5..].to_vec() };
                }
            }
            let n = self.stream.read_buf(&mut self.buf).await.unwrap();
            assert!(n > 0, "connection closed");
        }
    }

    /// Reads messages up to and including ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<Message> {
        let mut messages = Vec::new();
        loop {
            let message = self.read().await;
            let done = message.tag == b'Z';
            messages.push(message);
            if done {
                return messages;
            }
        }
    }

    /// Sends a simple query without waiting for its reply.
    pub async fn send_query(&mut self, sql: &str) {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).unwrap();
        self.send(&out).await;
    }

    /// Runs a simple query and returns every message up to ReadyForQuery.
    pub async fn query(&mut self, sql: &str) -> Vec<Message> {
        self.send_query(sql).await;
        self.until_ready().await
    }
}

/// The text of the first column of every DataRow.
pub fn first_column(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.tag == b'D')
        .map(|m| {
            let len = i32::from_be_bytes(m.body[2..6].try_into().unwrap());
            if len < 0 {
                "NULL".to_string()
            } else {
                String::from_utf8_lossy(&m.body[6..6 + len as usize]).into_owned()
            }
        })
        .collect()
}

/// A FunctionCall message calling function `oid` with text arguments.
pub fn function_call(oid: u32, args: &[&str]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_u32(oid);
    body.put_i16(0);
    body.put_i16(args.len() as i16);
    for a in args {
        body.put_i32(a.len() as i32);
        body.put_slice(a.as_bytes());
    }
    body.put_i16(0);
    let mut out = BytesMut::new();
    out.put_u8(b'F');
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(&body);
    out
}

/// Sends one CancelRequest for `(pid, secret)` to `addr` and waits until
/// the listener closes the socket (pgtenant does once the request went
/// wherever it goes); a cancel request gets no reply.
pub async fn send_cancel_request(addr: std::net::SocketAddr, (pid, secret): (i32, i32)) {
    let mut packet = Vec::new();
    for field in [16i32, 80_877_102, pid, secret] {
        packet.extend_from_slice(&field.to_be_bytes());
    }
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut socket, &packet).await.unwrap();
    let mut rest = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut rest).await.unwrap();
    assert!(rest.is_empty(), "a cancel request gets no reply");
}
