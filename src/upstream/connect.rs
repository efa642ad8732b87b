//! Opening an authenticated server session as one of pgtenant's session roles.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend as pg_frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::unix_socket::QuietUnixStream;
use tokio_postgres::config::Host;

use super::ServerStream;
use crate::protocol::frame::peek_header;
use crate::protocol::messages::{data_row_first_column, error_fields, parameter_status, server, ErrorFields};

/// Largest message accepted from the server during startup.
const MAX_STARTUP_REPLY: usize = 1 << 20;

/// Where and as whom pgtenant connects for one kind of session.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamTarget {
    pub address: UpstreamAddress,
    pub tls: super::tls::UrlTls,
    pub user: String,
    password: Option<Vec<u8>>,
    pub database: String,
    pub connect_timeout: Duration,
}

/// A TCP host and port, or a Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UpstreamAddress {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl std::fmt::Display for UpstreamAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamAddress::Tcp { host, port } => write!(f, "{host}:{port}"),
            UpstreamAddress::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Failure to open a server session.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("invalid upstream URL: {0}")]
    Config(String),
    #[error("cannot reach upstream {address}: {source}")]
    Io { address: String, source: io::Error },
    #[error("upstream {0} did not answer in time")]
    Timeout(String),
    #[error("upstream refused the session: {} {}", .0.code, .0.message)]
    Refused(ErrorFields),
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    #[error("upstream asks for an authentication method pgtenant does not speak ({0})")]
    UnsupportedAuth(i32),
}

impl UpstreamTarget {
    /// Reads host, port, user, password and database from a `postgres://` URL.
    pub(crate) fn from_url(url: &str, connect_timeout: Duration) -> Result<UpstreamTarget, UpstreamError> {
        let (config, tls) = super::tls::postgres_config(url).map_err(UpstreamError::Config)?;
        let user = config.get_user().ok_or_else(|| UpstreamError::Config("no user".into()))?.to_owned();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let address = match config.get_hosts().first() {
            Some(Host::Tcp(host)) => UpstreamAddress::Tcp { host: host.clone(), port },
            Some(Host::Unix(dir)) => UpstreamAddress::Unix(dir.join(format!(".s.PGSQL.{port}"))),
            None => return Err(UpstreamError::Config("no host".into())),
        };
        if tls.mode >= super::tls::SslMode::Require && matches!(address, UpstreamAddress::Unix(_)) {
            return Err(UpstreamError::Config(
                "PostgreSQL does not offer TLS on Unix sockets; use sslmode=prefer or disable".into(),
            ));
        }
        Ok(UpstreamTarget {
            address,
            tls,
            database: config.get_dbname().unwrap_or(&user).to_owned(),
            password: config.get_password().map(<[u8]>::to_vec),
            user,
            connect_timeout,
        })
    }

    /// The same server, as another role and (when given) in another database.
    pub(crate) fn as_role(&self, user: &str, password: &str, database: Option<&str>) -> UpstreamTarget {
        UpstreamTarget {
            user: user.to_owned(),
            password: Some(password.as_bytes().to_vec()),
            database: database.map_or_else(|| self.database.clone(), str::to_owned),
            ..self.clone()
        }
    }

    /// SSLRequest, then a TLS handshake when the server agrees; a refusal is
    /// fatal unless the mode is `prefer`.
    async fn negotiate_tls(&self, host: &str, mut tcp: TcpStream) -> Result<ServerStream, UpstreamError> {
        if self.tls.mode == super::tls::SslMode::Disable {
            return Ok(ServerStream::Tcp(tcp));
        }
        let config = std::sync::Arc::clone(&self.tls.config);
        let io_err = |source| UpstreamError::Io { address: self.address.to_string(), source };
        let mut request = [0u8; 8];
        request[0..4].copy_from_slice(&8i32.to_be_bytes());
        request[4..8].copy_from_slice(&80_877_103i32.to_be_bytes());
        tcp.write_all(&request).await.map_err(io_err)?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.map_err(io_err)?;
        match answer[0] {
            b'S' => {
                let name = rustls_pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| UpstreamError::Config(format!("host {host}: {e}")))?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| UpstreamError::Protocol(format!("TLS handshake with {} failed: {e}", self.address)))?;
                Ok(ServerStream::Tls(Box::new(tls)))
            }
            b'N' if self.tls.mode == super::tls::SslMode::Prefer => Ok(ServerStream::Tcp(tcp)),
            b'N' => Err(UpstreamError::Protocol(format!(
                "upstream {} does not offer TLS (sslmode requires it)",
                self.address
            ))),
            other => Err(UpstreamError::Protocol(format!("unexpected answer {other:#x} to SSLRequest"))),
        }
    }

    async fn open_stream(&self) -> Result<ServerStream, UpstreamError> {
        let io_err = |source| UpstreamError::Io { address: self.address.to_string(), source };
        let stream = match &self.address {
            UpstreamAddress::Tcp { host, port } => {
                let tcp = TcpStream::connect((host.as_str(), *port)).await.map_err(io_err)?;
                tcp.set_nodelay(true).map_err(io_err)?;
                self.negotiate_tls(host, tcp).await?
            }
            UpstreamAddress::Unix(path) => {
                let socket = UnixStream::connect(path).await.map_err(io_err)?;
                ServerStream::Unix(QuietUnixStream::new(socket).map_err(io_err)?)
            }
        };
        Ok(stream)
    }
}

/// How to cancel the query running on one server session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CancelTarget {
    pub address: UpstreamAddress,
    pub process_id: i32,
    pub secret_key: i32,
}

/// An authenticated, idle server session.
#[derive(Debug)]
pub(crate) struct ServerConnection {
    pub stream: ServerStream,
    /// ParameterStatus values the server reported at startup, in order.
    pub parameters: Vec<(String, String)>,
    pub cancel: CancelTarget,
    /// The oid of the tenant switch function, when looked up ([`query_value`]).
    pub switch_function: Option<u32>,
}

/// Connects to `target` and logs in, passing `params` (already filtered) in the
/// startup packet. Returns once the server is ready for queries.
pub(crate) async fn connect(
    target: &UpstreamTarget,
    params: &[(String, String)],
) -> Result<ServerConnection, UpstreamError> {
    tokio::time::timeout(target.connect_timeout, connect_inner(target, params))
        .await
        .map_err(|_| UpstreamError::Timeout(target.address.to_string()))?
}

async fn connect_inner(
    target: &UpstreamTarget,
    params: &[(String, String)],
) -> Result<ServerConnection, UpstreamError> {
    let mut stream = target.open_stream().await?;
    let io_err = |source| UpstreamError::Io { address: target.address.to_string(), source };

    let mut out = BytesMut::with_capacity(256);
    let mut startup: Vec<(&str, &str)> = vec![("user", &target.user), ("database", &target.database)];
    startup.extend(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    pg_frontend::startup_message(startup, &mut out).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    stream.write_all(&out).await.map_err(io_err)?;

    let mut inbuf = BytesMut::with_capacity(4096);
    let mut scram: Option<ScramSha256> = None;
    let mut parameters = Vec::new();
    let mut backend_key = None;
    loop {
        let (tag, body) = read_message(&mut stream, &mut inbuf).await.map_err(io_err)??;
        match tag {
            server::AUTHENTICATION => {
                let reply = authenticate(target, &body, &mut scram)?;
                if let Some(reply) = reply {
                    stream.write_all(&reply).await.map_err(io_err)?;
                }
            }
            server::PARAMETER_STATUS => {
                let (name, value) = parameter_status(&body).ok_or_else(|| protocol("bad ParameterStatus"))?;
                parameters.push((name.to_owned(), value.to_owned()));
            }
            server::BACKEND_KEY_DATA if body.len() == 8 => {
                let mut b = &body[..];
                backend_key = Some((b.get_i32(), b.get_i32()));
            }
            server::NOTICE_RESPONSE => {}
            server::ERROR_RESPONSE => return Err(UpstreamError::Refused(error_fields(&body))),
            server::READY_FOR_QUERY => break,
            other => return Err(protocol(&format!("unexpected message {:?} during startup", other as char))),
        }
    }
    let (process_id, secret_key) = backend_key.ok_or_else(|| protocol("no BackendKeyData"))?;
    // The guard reads client SQL as the server does only in this state; a
    // role or database default that leaves it is a configuration error.
    if let Some((name, value)) =
        parameters.iter().find(|(name, value)| !crate::setting_rules::lexing_is_safe(name, value))
    {
        return Err(protocol(&format!(
            "the upstream session starts with {name} = {value}; pgtenant needs standard_conforming_strings on \
             and an ASCII-safe client_encoding (check ALTER ROLE/DATABASE ... SET)"
        )));
    }
    Ok(ServerConnection {
        stream,
        parameters,
        cancel: CancelTarget { address: target.address.clone(), process_id, secret_key },
        switch_function: None,
    })
}

/// Runs `sql`, a query of pgtenant's own that answers one value, on an idle
/// session, within the target's connect timeout. `None` when the server
/// refuses it or answers NULL: a failed simple query leaves the session idle.
pub(crate) async fn query_value(
    target: &UpstreamTarget,
    server: &mut ServerConnection,
    sql: &'static str,
) -> Result<Option<String>, UpstreamError> {
    tokio::time::timeout(target.connect_timeout, query_value_inner(target, server, sql))
        .await
        .map_err(|_| UpstreamError::Timeout(target.address.to_string()))?
}

async fn query_value_inner(
    target: &UpstreamTarget,
    server: &mut ServerConnection,
    sql: &'static str,
) -> Result<Option<String>, UpstreamError> {
    let io_err = |source| UpstreamError::Io { address: target.address.to_string(), source };
    let mut out = BytesMut::with_capacity(64 + sql.len());
    crate::protocol::backend::write_message(&mut out, b'Q', |b| crate::protocol::backend::put_cstr(b, sql));
    server.stream.write_all(&out).await.map_err(io_err)?;
    let mut inbuf = BytesMut::with_capacity(512);
    let mut value = None;
    loop {
        let (tag, body) = read_message(&mut server.stream, &mut inbuf).await.map_err(io_err)??;
        match tag {
            server::DATA_ROW => value = data_row_first_column(&body).map(str::to_owned),
            server::PARAMETER_STATUS => {
                let (name, value) = parameter_status(&body).ok_or_else(|| protocol("bad ParameterStatus"))?;
                match server.parameters.iter_mut().find(|(known, _)| known == name) {
                    Some(entry) => entry.1 = value.to_owned(),
                    None => server.parameters.push((name.to_owned(), value.to_owned())),
                }
            }
            server::READY_FOR_QUERY => return Ok(value),
            _ => {}
        }
    }
}

/// Answers one Authentication request; `None` when nothing is to be sent.
fn authenticate(
    target: &UpstreamTarget,
    body: &[u8],
    scram: &mut Option<ScramSha256>,
) -> Result<Option<BytesMut>, UpstreamError> {
    if body.len() < 4 {
        return Err(protocol("short Authentication message"));
    }
    let kind = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let data = &body[4..];
    let password =
        || target.password.as_deref().ok_or_else(|| protocol("upstream asks for a password; none is in the URL"));
    let mut out = BytesMut::new();
    let encode_err = |e: io::Error| UpstreamError::Protocol(e.to_string());
    match kind {
        0 => return Ok(None),
        3 => pg_frontend::password_message(password()?, &mut out).map_err(encode_err)?,
        5 if data.len() == 4 => {
            let salt = [data[0], data[1], data[2], data[3]];
            let hash = postgres_protocol::authentication::md5_hash(target.user.as_bytes(), password()?, salt);
            pg_frontend::password_message(hash.as_bytes(), &mut out).map_err(encode_err)?;
        }
        10 => {
            let offers_scram = data.split(|b| *b == 0).any(|m| m == SCRAM_SHA_256.as_bytes());
            if !offers_scram {
                return Err(UpstreamError::UnsupportedAuth(kind));
            }
            let client = ScramSha256::new(password()?, ChannelBinding::unsupported());
            pg_frontend::sasl_initial_response(SCRAM_SHA_256, client.message(), &mut out).map_err(encode_err)?;
            *scram = Some(client);
        }
        11 => {
            let client = scram.as_mut().ok_or_else(|| protocol("SASLContinue before SASL"))?;
            client.update(data).map_err(|e| UpstreamError::Protocol(format!("SCRAM: {e}")))?;
            pg_frontend::sasl_response(client.message(), &mut out).map_err(encode_err)?;
        }
        12 => {
            let client = scram.as_mut().ok_or_else(|| protocol("SASLFinal before SASL"))?;
            client.finish(data).map_err(|e| UpstreamError::Protocol(format!("SCRAM server signature: {e}")))?;
            return Ok(None);
        }
        other => return Err(UpstreamError::UnsupportedAuth(other)),
    }
    Ok(Some(out))
}

fn protocol(message: &str) -> UpstreamError {
    UpstreamError::Protocol(message.to_owned())
}

/// Reads one whole message; the outer error is I/O, the inner one protocol.
pub(crate) async fn read_message(
    stream: &mut ServerStream,
    buf: &mut BytesMut,
) -> io::Result<Result<(u8, BytesMut), UpstreamError>> {
    loop {
        match peek_header(buf, MAX_STARTUP_REPLY) {
            Ok(Some(header)) if buf.len() >= header.frame_len => {
                let mut frame = buf.split_to(header.frame_len);
                frame.advance(5);
                return Ok(Ok((header.tag, frame)));
            }
            Ok(_) => {}
            Err(e) => return Ok(Err(UpstreamError::Protocol(format!("bad frame from upstream: {e:?}")))),
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed the connection"));
        }
    }
}

/// Sends a CancelRequest for `target` on a fresh connection.
pub(crate) async fn send_cancel(target: &CancelTarget) -> io::Result<()> {
    let packet = crate::protocol::frontend::cancel_request(target.process_id, target.secret_key);
    match &target.address {
        UpstreamAddress::Tcp { host, port } => {
            let mut s = TcpStream::connect((host.as_str(), *port)).await?;
            s.write_all(&packet).await?;
            // The server closes the socket once it has read the request.
            let _ = s.read(&mut [0u8; 1]).await;
        }
        UpstreamAddress::Unix(path) => {
            let mut s = UnixStream::connect(path).await?;
            s.write_all(&packet).await?;
            let _ = s.read(&mut [0u8; 1]).await;
        }
    }
    Ok(())
}
