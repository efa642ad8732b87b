//! The one place where a failure inside pgtenant — the pool, the catalog,
//! the upstream server, the client's own connection — becomes what the
//! client sees: a SQLSTATE and a message safe to show. The detail (an
//! address, a server's words about pgtenant's own session) goes to the log.

use crate::error::{sqlstate, ClientError};
use crate::protocol::messages::error_fields;
use crate::upstream::pool::PoolError;

/// No server session could be had for the client.
pub(crate) fn pool(error: PoolError) -> ClientError {
    match error {
        PoolError::Timeout(waited) => ClientError::fatal(
            sqlstate::TOO_MANY_CONNECTIONS,
            format!("pgtenant could not get a server connection within {} s", waited.as_secs()),
        ),
        PoolError::Connect(e) => {
            tracing::error!(error = %e, "upstream connection failed");
            ClientError::fatal(sqlstate::CONNECTION_FAILURE, "pgtenant cannot reach the upstream database")
        }
    }
}

/// The catalog could not be read at login.
pub(crate) fn catalog(error: &dyn std::fmt::Display) -> ClientError {
    tracing::error!(error = %error, "catalog lookup failed");
    ClientError::fatal(sqlstate::CANNOT_CONNECT_NOW, "pgtenant cannot reach its catalog; try again later")
}

/// One of pgtenant's own exchanges on the server session failed (the
/// context, a client setting replayed): `body` is the server's
/// ErrorResponse. The server's words concern the client's own settings or
/// context, so they are shown; the code says which kind of failure it was.
pub(crate) fn own_exchange(body: &[u8]) -> ClientError {
    let fields = error_fields(body);
    tracing::warn!(code = %fields.code, message = %fields.message, "session setup on the server failed");
    let code = sqlstate::of_setup_failure(&fields.code).unwrap_or(sqlstate::CONNECTION_FAILURE);
    ClientError::fatal(code, fields.message)
}

/// The upstream server closed the session without a word.
pub(crate) fn server_closed() -> ClientError {
    ClientError::fatal(sqlstate::CONNECTION_FAILURE, "the upstream server closed the connection unexpectedly")
}

/// The upstream server sent something that is not protocol v3.
pub(crate) fn server_malformed(what: &str) -> ClientError {
    tracing::error!(what, "malformed message from upstream");
    ClientError::fatal(
        sqlstate::CONNECTION_FAILURE,
        format!("pgtenant received a malformed {what} from the upstream server"),
    )
}

/// A token session's token expired (`jwt.on_expiry = "end"`).
pub(crate) fn token_expired() -> ClientError {
    ClientError::fatal(sqlstate::INVALID_AUTHORIZATION, "the session's token has expired; log in with a new token")
}

/// The client's connection went away during `stage` (nobody reads this,
/// but the session's log line says why it ended).
pub(crate) fn client_lost(stage: &str) -> ClientError {
    ClientError::fatal(sqlstate::CONNECTION_FAILURE, format!("client connection lost during {stage}"))
}

/// The pool's listening connection could not listen on a channel the
/// client's LISTEN committed.
pub(crate) fn listen_failed(why: &str) -> ClientError {
    tracing::error!(error = why, "the listening connection could not listen");
    ClientError::fatal(sqlstate::CONNECTION_FAILURE, "pgtenant could not listen on the channel for this session")
}

/// The pool's listening connection closed: notifications would be lost.
pub(crate) fn listener_lost() -> ClientError {
    ClientError::fatal(
        sqlstate::CONNECTION_FAILURE,
        "the server connection that listened for this session closed; connect again and LISTEN again",
    )
}

/// The client let more notifications pile up than pgtenant keeps for it.
pub(crate) fn too_many_notifications() -> ClientError {
    ClientError::fatal(
        sqlstate::PROGRAM_LIMIT_EXCEEDED,
        format!(
            "more than {} notifications are waiting for this session, which does not read them",
            super::listening::MAX_WAITING_NOTIFICATIONS
        ),
    )
}
