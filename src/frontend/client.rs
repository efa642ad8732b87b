//! One client connection from its first byte to its end: the initial packet,
//! authentication, the server session with its tenant context, the relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::Instrument;

use super::assume::Assumer;
use super::attach::{Attached, Attachment};
use super::channels::channel_prefix;
use super::policy::ClientPolicy;
use super::relay::{Relay, RelayEnd};
use super::statements::StatementNamespaces;
use super::stream::ClientStream;
use super::{auth, params};
use crate::cancel::CancelKey;
use crate::config::{OnExpiry, PoolMode};
use crate::error::{sqlstate, ClientError};
use crate::protocol::backend;
use crate::protocol::startup::{self, InitialPacket, StartupMessage};
use crate::proxy::ProxyState;
use crate::sessions::{SessionHandle, SessionIdentity};
use crate::tenancy::catalog::LoginRecord;
use crate::tenancy::provision::TenantObjects;
use crate::tenancy::Isolation;
use crate::upstream;
use crate::upstream::pool::Lease;
use crate::upstream::settings::{self, Settings};

/// Serves one accepted client connection until it ends.
pub(crate) async fn serve_client(socket: TcpStream, peer: SocketAddr, state: Arc<ProxyState>) {
    let _open = crate::metrics::ClientConnectionGauge::open();
    let _ = socket.set_nodelay(true);
    let deadline = Instant::now() + state.startup_timeout;
    // Boxed: a TLS handshake's state is not kept for the life of the session.
    let Some(mut stream) = Box::pin(open_stream(socket, &state, deadline)).await else { return };
    let mut inbuf = BytesMut::with_capacity(1024);
    let startup = tokio::time::timeout_at(deadline, Box::pin(read_startup(&mut stream, &mut inbuf, &state))).await;
    let startup = match startup {
        Ok(Ok(Some(startup))) => startup,
        Ok(Ok(None)) => return,
        Ok(Err(error)) => return refuse(&mut stream, &error).await,
        Err(_) => return refuse(&mut stream, &timed_out()).await,
    };
    if state.tls.as_ref().is_some_and(|tls| tls.required) && !stream.is_tls() {
        let error = ClientError::fatal(
            sqlstate::INVALID_AUTHORIZATION,
            "pgtenant requires TLS on this connection (use sslmode=require or stronger)",
        );
        return refuse(&mut stream, &error).await;
    }
    let user = startup.param("user").unwrap_or_default().to_owned();
    // Every line of the session carries these (text and json logs); its
    // tenant and id (the one /v1/sessions shows) are known once it is let in.
    let span = tracing::info_span!(
        "session",
        %peer,
        user = %user,
        tenant = tracing::field::Empty,
        session = tracing::field::Empty
    );
    async move {
        // Boxed: the handshake's state is freed before the relay starts,
        // instead of sizing the task of every idle client for it.
        match Box::pin(open_session(stream, peer, inbuf, startup, &state, deadline)).await {
            Ok(Some((relay, session))) => relay_until_end(relay, session).await,
            Ok(None) => {}
            Err(error) => tracing::info!(code = %error.code, message = %error.message, "session refused"),
        }
    }
    .instrument(span)
    .await
}

fn timed_out() -> ClientError {
    ClientError::fatal(sqlstate::CONNECTION_FAILURE, "startup and authentication timed out")
}

/// Plain TCP, or TLS at once when the first byte is a TLS handshake record
/// (PostgreSQL 17's direct TLS, which must negotiate ALPN `postgresql`).
async fn open_stream(socket: TcpStream, state: &ProxyState, deadline: Instant) -> Option<ClientStream> {
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, socket.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None,
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        return Some(ClientStream::Plain(socket));
    }
    // Without TLS configured a handshake byte is just an invalid packet; close.
    let tls = state.tls.as_ref()?;
    let accepted = tokio::time::timeout_at(deadline, tls.acceptor.accept(socket)).await.ok()?.ok()?;
    if accepted.get_ref().1.alpn_protocol() != Some(crate::proxy::tls::ALPN_POSTGRESQL) {
        tracing::info!("direct TLS without ALPN postgresql refused");
        return None;
    }
    Some(ClientStream::Tls(Box::new(accepted)))
}

/// The first byte of a TLS ClientHello record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

async fn refuse(stream: &mut ClientStream, error: &ClientError) {
    let mut out = BytesMut::new();
    error.encode(&mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// Reads initial packets until a StartupMessage: SSLRequest gets 'S' and a
/// TLS handshake when TLS is configured (else 'N'), GSSENCRequest gets 'N',
/// a CancelRequest is served. `None` when the connection has nothing more to do.
async fn read_startup(
    stream: &mut ClientStream,
    inbuf: &mut BytesMut,
    state: &ProxyState,
) -> Result<Option<StartupMessage>, ClientError> {
    let mut answered_ssl = false;
    let mut answered_gss = false;
    loop {
        let packet = loop {
            match startup::declared_len(inbuf) {
                Ok(Some(len)) if inbuf.len() >= len => break inbuf.split_to(len),
                Ok(_) => {}
                Err(e) => return Err(ClientError::protocol_violation(e.to_string())),
            }
            match stream.read_buf(inbuf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        };
        match startup::parse(&packet).map_err(|e| ClientError::protocol_violation(e.to_string()))? {
            InitialPacket::SslRequest | InitialPacket::GssEncRequest if !inbuf.is_empty() => {
                // Bytes sent before our answer would be read as if encrypted.
                return Err(ClientError::protocol_violation("received unencrypted data after encryption request"));
            }
            InitialPacket::SslRequest if !answered_ssl && !stream.is_tls() => {
                answered_ssl = true;
                match &state.tls {
                    Some(tls) => {
                        stream.write_all(b"S").await.map_err(|_| gone())?;
                        let ClientStream::Plain(tcp) = std::mem::replace(stream, ClientStream::Closed) else {
                            return Err(gone());
                        };
                        let accepted = tls.acceptor.accept(tcp).await.map_err(|e| {
                            tracing::info!(error = %e, "TLS handshake failed");
                            gone()
                        })?;
                        *stream = ClientStream::Tls(Box::new(accepted));
                    }
                    None => stream.write_all(b"N").await.map_err(|_| gone())?,
                }
            }
            InitialPacket::GssEncRequest if !answered_gss && !stream.is_tls() => {
                answered_gss = true;
                stream.write_all(b"N").await.map_err(|_| gone())?;
            }
            InitialPacket::SslRequest | InitialPacket::GssEncRequest => {
                return Err(ClientError::protocol_violation("duplicate encryption request"));
            }
            InitialPacket::Cancel { process_id, secret_key } => {
                forward_cancel(state, CancelKey { process_id, secret_key }).await;
                return Ok(None);
            }
            InitialPacket::Startup(message) => return Ok(Some(message)),
        }
    }
}

fn gone() -> ClientError {
    super::failures::client_lost("startup")
}

async fn forward_cancel(state: &ProxyState, key: CancelKey) {
    // As in PostgreSQL, the requester learns nothing about whether the key matched.
    let Some(target) = state.cancels.lookup(key) else {
        // Perhaps another pgtenant process on this catalog holds the session.
        state.fleet.pass_on(key).await;
        return;
    };
    if let Err(e) = upstream::connect::send_cancel(&target).await {
        tracing::warn!(error = %e, "forwarding a cancel request failed");
    }
}

/// Authenticates the client and opens its server session: the relay to run,
/// or `None` when the connection was the admin console's and is over.
async fn open_session(
    mut socket: ClientStream,
    peer: SocketAddr,
    mut inbuf: BytesMut,
    startup: StartupMessage,
    state: &ProxyState,
    deadline: Instant,
) -> Result<Option<(Box<Relay<ClientStream>>, SessionHandle)>, ClientError> {
    if super::admin_console::is_console(startup.param("user").unwrap_or_default(), startup.param("database")) {
        let result = Box::pin(super::admin_console::serve(&mut socket, &mut inbuf, state, peer, deadline)).await;
        if let Err(error) = &result {
            crate::metrics::connection_refused(error);
            refuse(&mut socket, error).await;
        }
        return result.map(|()| None);
    }
    match establish(&mut socket, &mut inbuf, &startup, state, peer, deadline).await {
        Ok(established) => Ok(Some(start_relay(established, socket, inbuf, startup, state, peer))),
        Err(error) => {
            crate::metrics::connection_refused(&error);
            refuse(&mut socket, &error).await;
            Err(error)
        }
    }
}

/// Relays until the session ends: all an idle client's task holds (the
/// relay is boxed, as an async fn's argument takes its size twice).
async fn relay_until_end(mut relay: Box<Relay<ClientStream>>, session: SessionHandle) {
    let end = relay.run(&session).await;
    drop(session);
    match end {
        RelayEnd::Fatal(error) => {
            tracing::warn!(code = %error.code, message = %error.message, "session ended by pgtenant");
        }
        other => tracing::debug!(end = ?other, "session ended"),
    }
}

/// The relay for an established client, and its entry in the session registry.
fn start_relay(
    established: Established,
    socket: ClientStream,
    inbuf: BytesMut,
    startup: StartupMessage,
    state: &ProxyState,
    peer: SocketAddr,
) -> (Box<Relay<ClientStream>>, SessionHandle) {
    let Established { lease, attachment, to_client, login, key, statement_timeout, stats } = established;
    let transaction_pooling = attachment.mode == PoolMode::Transaction;
    let mut policy = ClientPolicy::new(
        Arc::clone(&state.guard),
        state.marker_prefix.clone(),
        channel_prefix(&login.context.tenant_id),
        transaction_pooling.then_some(state.session_features),
        StatementNamespaces::of(&state.statement_secret, &login.context.tenant_id),
        Arc::clone(&state.notifiers),
        key.process_id,
    );
    if login.isolation == Isolation::Schema {
        policy.own_schema(TenantObjects::of(&login.context.tenant_id).home().to_owned());
    }
    let session = state.sessions.register(
        key.process_id,
        SessionIdentity {
            username: login.username.clone(),
            tenant_id: login.context.tenant_id.clone(),
            tenant_slug: login.tenant_slug.clone(),
            access: login.access,
            visible_tenants: login.context.visible_tenants.clone(),
            via_token: login.token.is_some(),
            subject: login.token.as_ref().and_then(|t| t.subject.clone()),
            client_addr: peer,
            application_name: startup.param("application_name").unwrap_or_default().to_owned(),
            connected_at: SystemTime::now(),
        },
    );
    let assumer = login.service.then(|| {
        Assumer::new(
            state.tokens.clone(),
            state.catalog.clone(),
            login.access,
            login.upstream.clone(),
            state.tenant_setting.clone(),
        )
    });
    let token_expiry = login
        .token
        .as_ref()
        .filter(|_| state.tokens.as_ref().is_some_and(|t| t.config().on_expiry == OnExpiry::End))
        .map(|t| t.expires_at);
    let audit_trail = state.audit.as_ref().map(|log| {
        log.trail(crate::audit::SessionFacts {
            session: key.process_id,
            login: login.username.clone(),
            tenant: if login.service { String::new() } else { login.tenant_slug.clone() },
            client_addr: peer,
            application_name: startup.param("application_name").unwrap_or_default().to_owned(),
        })
    });
    // Nothing of the handshake is kept for the life of the session.
    drop((startup, login));
    let attached = Attached { lease, prefix: BytesMut::new(), exchanges: Vec::new() };
    let mut relay = Box::new(Relay::new(socket, attached, attachment, to_client, state.max_message_bytes, policy));
    relay.set_statement_timeout(statement_timeout);
    relay.count_for(stats);
    if let Some(trail) = audit_trail {
        relay.audit_with(trail);
    }
    if let Some(assumer) = assumer {
        relay.allow_assume(assumer);
    }
    if let Some(expires_at) = token_expiry {
        relay.set_expiry(expires_at);
    }
    // Bytes the client pipelined behind its last authentication message.
    relay.push_client_bytes(&inbuf);
    (relay, session)
}

/// The client's startup settings, and a schema tenant's own schema as its
/// search_path unless the client chose one: the session's values, to which
/// RESET and DISCARD ALL return. No search_path may name another tenant's schema.
fn startup_settings(params: &[(String, String)], login: &LoginRecord) -> Result<Settings, ClientError> {
    let mut startup = settings::from_startup(params);
    let own = (login.isolation == Isolation::Schema).then(|| TenantObjects::of(&login.context.tenant_id));
    let own_schema = own.as_ref().map(TenantObjects::home);
    match startup.get("search_path") {
        Some(path) => {
            if let Some(schema) = crate::setting_rules::foreign_tenant_schema(path, own_schema) {
                let refusal = super::policy::foreign_schema(&schema);
                return Err(ClientError::fatal(refusal.code, refusal.message));
            }
        }
        None => {
            if let Some(schema) = own_schema {
                startup.insert("search_path".to_owned(), crate::quote::quote_ident(schema));
            }
        }
    }
    Ok(startup)
}

/// A client that passed every check, and its server session ready to relay.
struct Established {
    lease: Lease,
    attachment: Attachment,
    /// The greeting for the client: ParameterStatus, BackendKeyData, ReadyForQuery.
    to_client: BytesMut,
    login: LoginRecord,
    key: CancelKey,
    /// The tenant's limit on how long a request may keep its server session busy.
    statement_timeout: Option<std::time::Duration>,
    /// The session counted open for its tenant, whose counters the relay bumps.
    stats: Option<crate::tenant_stats::TenantSession>,
}

/// Authenticates, opens the server session, and prepares the first bytes
/// for each side: the client's greeting, and the context exchange.
async fn establish(
    socket: &mut ClientStream,
    inbuf: &mut BytesMut,
    startup: &StartupMessage,
    state: &ProxyState,
    peer: SocketAddr,
    deadline: Instant,
) -> Result<Established, ClientError> {
    let mut to_client = BytesMut::with_capacity(512);
    let unsupported: Vec<&str> =
        startup.params.iter().map(|(k, _)| k.as_str()).filter(|k| k.starts_with("_pq_.")).collect();
    if startup.minor_version > 0 || !unsupported.is_empty() {
        backend::negotiate_protocol_version(&mut to_client, &unsupported);
        socket.write_all(&to_client).await.map_err(|_| gone())?;
        to_client.clear();
    }
    let Some(user) = startup.param("user").filter(|u| !u.is_empty()) else {
        return Err(ClientError::fatal(
            sqlstate::INVALID_AUTHORIZATION,
            "no PostgreSQL user name specified in startup packet",
        ));
    };
    if startup.param("replication").is_some_and(|v| !matches!(v, "false" | "off" | "no" | "0")) {
        return Err(ClientError::fatal(
            sqlstate::INVALID_AUTHORIZATION,
            "replication connections are not accepted by pgtenant",
        ));
    }
    let upstream_params = params::upstream_params(&startup.params, &state.tenant_setting)?;

    let binding = if socket.is_tls() { state.tls.as_ref().map(|tls| tls.end_point_hash) } else { None };
    let authenticated = auth::authenticate(socket, inbuf, state, user, binding.as_ref(), peer.ip());
    let login = tokio::time::timeout_at(deadline, authenticated).await.map_err(|_| timed_out())??;
    tracing::Span::current()
        .record("tenant", if login.service { "(service login)" } else { login.tenant_slug.as_str() });

    let database = startup.param("database").filter(|d| !d.is_empty()).unwrap_or(user);
    if database != state.database {
        return Err(ClientError::fatal(
            sqlstate::INVALID_CATALOG_NAME,
            format!("database \"{database}\" does not exist"),
        ));
    }
    if !login.enabled {
        return Err(ClientError::fatal(sqlstate::INVALID_AUTHORIZATION, format!("login \"{user}\" is disabled")));
    }
    if !login.tenant_active {
        return Err(ClientError::fatal(
            sqlstate::INVALID_AUTHORIZATION,
            format!("tenant \"{}\" is suspended", login.tenant_slug),
        ));
    }
    let pool = state.routes.pool_for(&login)?;
    let startup_settings = startup_settings(&upstream_params, &login)?;

    let limits = state.limits_for(&login.tenant_slug, &login.limits);
    // A service login's sessions belong to no tenant (the tenants it assumes
    // are not counted per tenant).
    let tenant_session = match login.service {
        true => None,
        false => Some(
            state
                .tenant_stats
                .admit(&login.context.tenant_id, &login.tenant_slug, limits.max_client_connections)
                .ok_or_else(|| {
                    ClientError::fatal(
                        sqlstate::TOO_MANY_CONNECTIONS,
                        format!("too many connections for tenant \"{}\"", login.tenant_slug),
                    )
                })?,
        ),
    };
    let cancel = state.cancels.issue();
    let key = cancel.key();
    tracing::Span::current().record("session", key.process_id);
    let mut attachment = Attachment::new(
        pool.clone(),
        limits.pool_mode,
        limits.max_server_connections,
        login.context.clone(),
        state.context_key.clone(),
        state.tenant_setting.clone(),
        startup_settings,
        cancel,
        state.hierarchy.clone(),
    );
    attachment.pause_at(Arc::clone(&state.pause));
    let asked = std::time::Instant::now();
    let lease = attachment.acquire_ready().await?;
    let waited = asked.elapsed();
    for (name, value) in lease.session_ref().parameters() {
        let value = if name == "session_authorization" { user } else { value.as_str() };
        backend::parameter_status(&mut to_client, name, value);
    }
    backend::backend_key_data(&mut to_client, key.process_id, key.secret_key);
    backend::ready_for_query(&mut to_client, b'I');
    tracing::info!(access = %login.access, "session started");
    crate::metrics::session_started();
    if let Some(tenant_session) = &tenant_session {
        tenant_session.checkout(waited);
    }
    Ok(Established {
        lease,
        attachment,
        to_client,
        login,
        key,
        statement_timeout: limits.statement_timeout,
        stats: tenant_session,
    })
}
