//! Catalog changes made through any pgtenant process reach this one: a
//! dedicated control.url connection LISTENs on `pgtenant_catalog` (fed by the
//! triggers of sql/0003) and, on every wake-up, re-checks the open sessions
//! against the catalog, ending those whose login is gone, disabled or
//! changed, whose tenant is suspended, or whose signed visible set shrank.
//! Each wake-up first publishes the committed hierarchy version (sql/0009),
//! which lets sessions of tenants without descendants skip the ancestry
//! table again after a change to the tree. The same re-check runs after
//! every (re)connect and periodically, so a notification lost during an
//! outage cannot leave a session alive.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::shutdown::Shutdown;
use tokio_postgres::{AsyncMessage, Client};

use crate::error::{sqlstate, ClientError};
use crate::sessions::{SessionIdentity, SessionRegistry};

/// The NOTIFY channel of catalog changes.
pub(crate) const CHANNEL: &str = "pgtenant_catalog";
/// The listener connection's application_name (unless control.url sets one).
pub(crate) const APPLICATION_NAME: &str = "pgtenant catalog listener";

/// How long a connect or a re-check may take before the connection is deemed lost.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A re-check without a notification, in case the connection died silently.
const PERIODIC_RECHECK: Duration = Duration::from_secs(15);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The tenant tree's version as this process last published it (sql/0009).
/// A server session whose context was installed under an older one gets it
/// installed again at its next checkout, or between transactions when a
/// client holds it, so that the server counts the tenant's descendants anew.
#[derive(Debug, Clone, Default)]
pub(crate) struct HierarchyVersion(Arc<AtomicI64>);

impl HierarchyVersion {
    pub(crate) fn current(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    fn published(&self, version: i64) {
        self.0.fetch_max(version, Ordering::Relaxed);
    }
}

/// Why the listener lost its connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EventsError {
    #[error("control database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("control database did not answer in time")]
    Timeout,
    #[error("control database connection closed")]
    Closed,
    #[error("invalid control.url: {0}")]
    Config(String),
}

/// Listens for catalog changes until `shutdown` turns true, reconnecting
/// with backoff; never returns early and never panics.
pub(crate) async fn run(
    control_url: String,
    sessions: Arc<SessionRegistry>,
    hierarchy: HierarchyVersion,
    mut shutdown: Shutdown,
) {
    let mut backoff = BACKOFF_START;
    loop {
        let outcome = tokio::select! {
            outcome = listen(&control_url, &sessions, &hierarchy, &mut backoff) => outcome,
            _ = shutdown.requested() => return,
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, retry_in = ?backoff, "catalog listener disconnected");
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.requested() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection's life: LISTEN, a full re-check, then a re-check per
/// wake-up. Returns when the connection fails.
async fn listen(
    control_url: &str,
    sessions: &SessionRegistry,
    hierarchy: &HierarchyVersion,
    backoff: &mut Duration,
) -> Result<(), EventsError> {
    let (mut config, tls) = crate::pg_client::parse_url(control_url).map_err(EventsError::Config)?;
    if config.get_application_name().is_none() {
        // Lets an operator tell this connection apart in pg_stat_activity.
        config.application_name(APPLICATION_NAME);
    }
    let (client, mut connection) =
        tokio::time::timeout(CALL_TIMEOUT, config.connect(crate::pg_client::make_connect(&tls)))
            .await
            .map_err(|_| EventsError::Timeout)??;
    let wake = Arc::new(Notify::new());
    let driver_wake = Arc::clone(&wake);
    // The connection must be polled for the client's queries to progress;
    // notifications arrive through the same poll.
    let mut driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(note))) => {
                    tracing::debug!(payload = note.payload(), "catalog changed");
                    driver_wake.notify_one();
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return EventsError::Postgres(e),
                None => return EventsError::Closed,
            }
        }
    });
    let result = async {
        timed(client.batch_execute(&format!("LISTEN {CHANNEL}"))).await?;
        // After LISTEN, so that no change can fall between the check and the listening.
        recheck_timed(&client, sessions, hierarchy).await?;
        *backoff = BACKOFF_START;
        tracing::info!("catalog listener connected");
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(PERIODIC_RECHECK) => {}
                lost = &mut driver => {
                    return Err(lost.unwrap_or(EventsError::Closed));
                }
            }
            recheck_timed(&client, sessions, hierarchy).await?;
        }
    }
    .await;
    driver.abort();
    result
}

async fn timed<T>(call: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T, EventsError> {
    Ok(tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| EventsError::Timeout)??)
}

async fn recheck_timed(
    client: &Client,
    sessions: &SessionRegistry,
    hierarchy: &HierarchyVersion,
) -> Result<(), EventsError> {
    let published: i64 = timed(client.query_one("SELECT pgtenant.publish_hierarchy_version()", &[])).await?.get(0);
    hierarchy.published(published);
    let ended = timed(recheck(client, sessions)).await?;
    if ended > 0 {
        tracing::info!(ended, "sessions ended after a catalog change");
    }
    Ok(())
}

/// Ends every live session the catalog no longer allows as it was
/// authorised; returns how many.
pub(crate) async fn recheck(client: &Client, sessions: &SessionRegistry) -> Result<usize, tokio_postgres::Error> {
    let live = sessions.list();
    if live.is_empty() {
        return Ok(0);
    }
    // Many sessions share one login: check each distinct authorisation once.
    let keys: BTreeSet<Authorisation> = live.iter().map(|s| authorisation(&s.identity)).collect();
    let (mut usernames, mut tenants, mut accesses, mut visibles, mut tokens) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (username, tenant, access, visible, token) in &keys {
        usernames.push(username.as_str());
        tenants.push(tenant.as_str());
        accesses.push(*access);
        visibles.push(visible.as_str());
        tokens.push(*token);
    }
    let rows = client
        .query(
            r#"SELECT username, tenant_id, access, visible, token, reason FROM (
               SELECT k.username, k.tenant_id, k.access, k.visible, k.token,
                      CASE WHEN k.token AND t.id IS NULL THEN 'the token''s tenant was deleted'
                           WHEN NOT k.token AND l.username IS NULL THEN format('login "%s" was deleted', k.username)
                           WHEN NOT k.token AND NOT l.enabled THEN format('login "%s" was disabled', k.username)
                           WHEN NOT k.token AND l.service THEN NULL
                           WHEN t.status <> 'active' THEN format('tenant "%s" was suspended', t.slug)
                           WHEN NOT k.token AND (l.tenant_id::text <> k.tenant_id OR l.access <> k.access)
                                THEN format('login "%s" was changed', k.username)
                           -- Only a signed subtree (a tenant placed on another upstream) can
                           -- shrink; on the catalog's database the visible field is the tenant.
                           WHEN k.visible LIKE '%,%' THEN
                                CASE WHEN NOT (string_to_array(k.visible, ',')::uuid[] <@ pgtenant.tenant_subtree(t.id))
                                     THEN format('the tenant hierarchy of "%s" changed', t.slug) END
                      END AS reason
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[])
                          AS k(username, tenant_id, access, visible, token)
                 LEFT JOIN pgtenant.logins l ON l.username = k.username AND NOT k.token
                 LEFT JOIN pgtenant.tenants t
                        ON t.id = CASE WHEN k.token THEN k.tenant_id::uuid ELSE l.tenant_id END
             ) checked WHERE reason IS NOT NULL"#,
            &[&usernames, &tenants, &accesses, &visibles, &tokens],
        )
        .await?;
    let mut ended = 0;
    for row in rows {
        let doomed: (String, String, String, String, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        let reason: String = row.get(5);
        ended += sessions.terminate_where(
            |identity| {
                let (username, tenant, access, visible, token) = authorisation(identity);
                (username, tenant, access.to_owned(), visible, token) == doomed
            },
            ended_because(&reason),
        );
    }
    Ok(ended)
}

/// What a session was authorised as: login, tenant, access, visible set, and whether by a token.
type Authorisation = (String, String, &'static str, String, bool);

fn authorisation(identity: &SessionIdentity) -> Authorisation {
    (
        identity.username.clone(),
        identity.tenant_id.clone(),
        identity.access.as_str(),
        identity.visible_tenants.clone(),
        identity.via_token,
    )
}

/// The FATAL a session gets when the catalog withdraws it, as PostgreSQL's
/// pg_terminate_backend does (57P01), with the reason.
pub(crate) fn ended_because(reason: &str) -> ClientError {
    ClientError::fatal(sqlstate::ADMIN_SHUTDOWN, format!("terminating connection: {reason}"))
}
