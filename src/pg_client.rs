//! The PostgreSQL connections pgtenant opens for itself (`migrate`,
//! provisioning, `dev`): tokio-postgres clients from `postgres://` URLs with
//! libpq's `sslmode` and `sslrootcert` (`upstream::tls`), driven in the
//! background, and the server's own words when one fails. Tenant sessions are
//! raw streams instead (`upstream::connect`).

use std::time::Duration;

use tokio_postgres::Client;

pub(crate) use crate::upstream::tls::{make_connect, postgres_config as parse_url, UrlTls};

/// Connects with a parsed config, giving up after `timeout`.
pub(crate) async fn connect_config(
    config: &tokio_postgres::Config,
    tls: &UrlTls,
    timeout: Duration,
) -> Result<Client, ConnectError> {
    let connecting = config.connect(make_connect(tls));
    let (client, connection) = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(ConnectError::Postgres)?;
    drive(connection);
    Ok(client)
}

/// Connects to `url` (no timeout beyond the URL's own `connect_timeout`).
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (config, tls) = parse_url(url).map_err(|e| anyhow::anyhow!(e))?;
    let (client, connection) = config.connect(make_connect(&tls)).await?;
    drive(connection);
    Ok(client)
}

/// Drives a connection in the background. The server's notices on
/// pgtenant's own connections ("policy … does not exist, skipping" while
/// the demo loads, say) are for debugging, not the operator's log: awaited
/// as a whole, tokio-postgres would log each at INFO.
pub(crate) fn drive<S, T>(mut connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notice(notice))) => {
                    tracing::debug!(severity = notice.severity(), message = notice.message(), "server notice");
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "pgtenant's own connection closed");
                    return;
                }
                None => return,
            }
        }
    });
}

/// Why [`connect_config`] failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("timed out")]
    Timeout,
    #[error("{}", describe(.0))]
    Postgres(tokio_postgres::Error),
}

impl ConnectError {
    /// True when the server answered (and refused), not when it could not be reached.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(self, ConnectError::Postgres(e) if e.as_db_error().is_some())
    }
}

/// The user a URL names.
pub(crate) fn url_user(url: &str) -> Result<String, String> {
    let (parsed, _) = parse_url(url)?;
    parsed.get_user().map(str::to_owned).ok_or_else(|| "URL has no user".to_owned())
}

/// The database a URL names (its user's name when it names none, as libpq does).
pub(crate) fn url_database(url: &str) -> Option<String> {
    let (config, _) = parse_url(url).ok()?;
    config.get_dbname().or(config.get_user()).map(str::to_owned)
}

/// The server's message with its SQLSTATE, not just "db error".
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}
