//! Authenticating a client login with SCRAM-SHA-256 against the catalog.

pub mod scram;

use std::net::IpAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::failures;
use crate::error::{sqlstate, ClientError};
use crate::protocol::backend;
use crate::protocol::frame::{peek_header, read_cstr};
use crate::protocol::messages::client;
use crate::proxy::ProxyState;
use crate::tenancy::catalog::{LoginRecord, TokenLogin};
use crate::tenancy::context;
use crate::tokens::TokenVerifier;
use scram::{Exchange, Verifier};

/// Authentication messages are small (a token of many claims is a few kB);
/// anything bigger is an attack or a bug.
const MAX_AUTH_MESSAGE: usize = 16 * 1024;

/// Authenticates `username`: SCRAM-SHA-256 (and -PLUS when `binding`, the
/// TLS end-point hash, is given), or a cleartext password on TLS connections
/// when `tls.cleartext_password` is on. On success the client has received
/// AuthenticationOk. Unknown users go through the same exchange with a decoy
/// verifier and get the same error; failures from one address are slowed.
pub(crate) async fn authenticate<C>(
    client: &mut C,
    inbuf: &mut BytesMut,
    state: &ProxyState,
    username: &str,
    binding: Option<&[u8; 32]>,
    peer: IpAddr,
) -> Result<LoginRecord, ClientError>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(tokens) = state.tokens.as_deref().filter(|t| t.config().username == username) {
        return token_login(client, inbuf, state, tokens, username, binding.is_some(), peer).await;
    }
    let login = state.catalog.find_login(username).await.map_err(|e| failures::catalog(&e))?;
    let verifier = login
        .as_ref()
        .and_then(|l| Verifier::parse(&l.verifier))
        .unwrap_or_else(|| Verifier::decoy(username, &state.decoy_secret));

    let cleartext = binding.is_some() && state.tls.as_ref().is_some_and(|tls| tls.cleartext_password);
    let mut out = BytesMut::with_capacity(256);
    let proven = if cleartext {
        cleartext_exchange(client, inbuf, &verifier, &mut out).await?
    } else {
        scram_exchange(client, inbuf, verifier, binding, &mut out).await?
    };
    let (Some(login), Some(server_final)) = (login, proven) else {
        tokio::time::sleep(state.auth_throttle.failure(peer)).await;
        return Err(ClientError::password_failed(username));
    };
    state.auth_throttle.success(peer);
    if let Some(server_final) = server_final {
        backend::authentication_sasl_final(&mut out, server_final.as_bytes());
    }
    backend::authentication_ok(&mut out);
    write(client, &mut out).await?;
    Ok(login)
}

/// The admin console's login: SCRAM-SHA-256 against `admin.token` (its
/// verifier made once per process), never the login catalog. Failures are
/// throttled like any other login's.
pub(crate) async fn authenticate_console<C>(
    client: &mut C,
    inbuf: &mut BytesMut,
    state: &ProxyState,
    binding: Option<&[u8; 32]>,
    peer: IpAddr,
) -> Result<(), ClientError>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let verifier = Verifier::parse(&state.console_verifier)
        .unwrap_or_else(|| Verifier::decoy(super::admin_console::CONSOLE_USER, &state.decoy_secret));
    let mut out = BytesMut::with_capacity(256);
    let proven = scram_exchange(client, inbuf, verifier, binding, &mut out).await?;
    let Some(server_final) = proven else {
        tokio::time::sleep(state.auth_throttle.failure(peer)).await;
        return Err(ClientError::password_failed(super::admin_console::CONSOLE_USER));
    };
    state.auth_throttle.success(peer);
    if let Some(server_final) = server_final {
        backend::authentication_sasl_final(&mut out, server_final.as_bytes());
    }
    backend::authentication_ok(&mut out);
    write(client, &mut out).await
}

/// A login with a token as its password (`jwt.username`): asked for in
/// cleartext, so only over TLS, or over loopback when
/// `jwt.allow_plaintext_loopback` is on. The tenant, access and subject come
/// from the verified claims; the token is never logged.
async fn token_login<C>(
    client: &mut C,
    inbuf: &mut BytesMut,
    state: &ProxyState,
    tokens: &TokenVerifier,
    username: &str,
    tls: bool,
    peer: IpAddr,
) -> Result<LoginRecord, ClientError>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let plaintext_allowed = tokens.config().allow_plaintext_loopback && peer.is_loopback();
    if !(tls || plaintext_allowed) {
        return Err(ClientError::fatal(
            sqlstate::INVALID_AUTHORIZATION,
            "token logins need a TLS connection (jwt.allow_plaintext_loopback admits plain ones from loopback)",
        ));
    }
    let mut out = BytesMut::with_capacity(64);
    backend::authentication_cleartext_password(&mut out);
    write(client, &mut out).await?;
    let message = read_password_message(client, inbuf).await?;
    let (token, rest) = read_cstr(&message).ok_or_else(|| malformed("PasswordMessage"))?;
    if !rest.is_empty() {
        return Err(malformed("PasswordMessage"));
    }
    let verified = match tokens.verify(token).await {
        Ok(verified) => verified,
        Err(refusal) => {
            tracing::warn!(reason = %refusal, "token refused");
            tokio::time::sleep(state.auth_throttle.failure(peer)).await;
            return Err(ClientError::fatal(
                sqlstate::INVALID_PASSWORD,
                format!("token authentication failed for user \"{username}\": {refusal}"),
            ));
        }
    };
    let session = TokenLogin { subject: verified.subject.clone(), expires_at: verified.expires_at };
    let login = state
        .catalog
        .find_token_tenant(username, &verified.tenant, verified.access, session)
        .await
        .map_err(|e| failures::catalog(&e))?;
    let Some(mut login) = login else {
        tracing::warn!(tenant = %verified.tenant, "token names no tenant");
        tokio::time::sleep(state.auth_throttle.failure(peer)).await;
        return Err(ClientError::fatal(
            sqlstate::INVALID_AUTHORIZATION,
            format!("the token's tenant \"{}\" does not exist", verified.tenant),
        ));
    };
    login.context.identity = context::identity(verified.subject.as_deref(), &verified.claims, None);
    state.auth_throttle.success(peer);
    backend::authentication_ok(&mut out);
    write(client, &mut out).await?;
    Ok(login)
}

/// `Some(server-final-message)` (SCRAM) or `Some(None)` (cleartext) when the
/// client proved the password.
type Proof = Option<Option<String>>;

async fn scram_exchange<C>(
    client: &mut C,
    inbuf: &mut BytesMut,
    verifier: Verifier,
    binding: Option<&[u8; 32]>,
    out: &mut BytesMut,
) -> Result<Proof, ClientError>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    if binding.is_some() {
        backend::authentication_sasl(out, &[scram::MECHANISM_PLUS, scram::MECHANISM]);
    } else {
        backend::authentication_sasl(out, &[scram::MECHANISM]);
    }
    write(client, out).await?;

    let initial = read_password_message(client, inbuf).await?;
    let (mechanism, rest) = read_cstr(&initial).ok_or_else(|| malformed("SASLInitialResponse"))?;
    let plus = match mechanism {
        scram::MECHANISM => false,
        scram::MECHANISM_PLUS if binding.is_some() => true,
        _ => {
            return Err(ClientError::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "client selected an invalid SASL authentication mechanism",
            ))
        }
    };
    let client_first = sasl_initial_data(rest).ok_or_else(|| malformed("SASLInitialResponse"))?;
    let binding_data = binding.map(|b| &b[..]);
    let (exchange, server_first) = Exchange::start(verifier, client_first, plus, binding_data)
        .map_err(|e| ClientError::protocol_violation(e.to_string()))?;
    backend::authentication_sasl_continue(out, server_first.as_bytes());
    write(client, out).await?;

    let response = read_password_message(client, inbuf).await?;
    let client_final = std::str::from_utf8(&response).map_err(|_| malformed("SASLResponse"))?;
    match exchange.finish(client_final) {
        Ok(server_final) => Ok(Some(Some(server_final))),
        Err(scram::ScramError::Malformed(what)) => Err(ClientError::protocol_violation(what)),
        Err(_) => Ok(None),
    }
}

async fn cleartext_exchange<C>(
    client: &mut C,
    inbuf: &mut BytesMut,
    verifier: &Verifier,
    out: &mut BytesMut,
) -> Result<Proof, ClientError>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    backend::authentication_cleartext_password(out);
    write(client, out).await?;
    let message = read_password_message(client, inbuf).await?;
    let (password, rest) = read_cstr(&message).ok_or_else(|| malformed("PasswordMessage"))?;
    if !rest.is_empty() {
        return Err(malformed("PasswordMessage"));
    }
    let (verifier, password) = (verifier.clone(), password.to_owned());
    let matches = crate::blocking::run(move || verifier.matches_password(&password)).await.unwrap_or(false);
    Ok(matches.then_some(None))
}

fn malformed(what: &str) -> ClientError {
    ClientError::protocol_violation(format!("malformed {what} message"))
}

fn sasl_initial_data(rest: &[u8]) -> Option<&str> {
    let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let data = rest.get(4..)?;
    if len < 0 || len as usize != data.len() {
        return None;
    }
    std::str::from_utf8(data).ok()
}

async fn write<C: AsyncWrite + Unpin>(client: &mut C, out: &mut BytesMut) -> Result<(), ClientError> {
    client.write_all(out).await.map_err(|_| gone())?;
    out.clear();
    Ok(())
}

fn gone() -> ClientError {
    failures::client_lost("authentication")
}

/// Reads one 'p' message and returns its body.
async fn read_password_message<C: AsyncRead + Unpin>(
    client: &mut C,
    inbuf: &mut BytesMut,
) -> Result<BytesMut, ClientError> {
    loop {
        match peek_header(inbuf, MAX_AUTH_MESSAGE) {
            Ok(Some(h)) if h.tag != client::PASSWORD => {
                return Err(ClientError::protocol_violation(format!(
                    "expected SASL response, got message type {:?}",
                    h.tag as char
                )))
            }
            Ok(Some(h)) if inbuf.len() >= h.frame_len => {
                let mut frame = inbuf.split_to(h.frame_len);
                frame.advance(5);
                return Ok(frame);
            }
            Ok(_) => {}
            Err(_) => return Err(ClientError::protocol_violation("invalid authentication message")),
        }
        if client.read_buf(inbuf).await.map_err(|_| gone())? == 0 {
            return Err(gone());
        }
    }
}
