//! `/v1/sessions` (this process's open client sessions) and `/v1/pools`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::extract::ApiPath;
use super::problem::Problem;
use super::AdminState;
use crate::error::{sqlstate, ClientError};
use crate::sessions::{SessionSnapshot, SessionState};
use crate::tenancy::Access;
use crate::upstream::pool::PoolFigures;

/// One open client session of this process.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Session {
    /// The session's id (the process id its client was given).
    pub id: i32,
    pub username: String,
    pub tenant_id: String,
    /// The verified subject of a token login (null for password logins).
    pub subject: Option<String>,
    /// The client's address and port.
    #[schema(example = "127.0.0.1:52144")]
    pub client_addr: String,
    pub application_name: String,
    /// `idle`, `active`, `idle_in_transaction` or `idle_in_failed_transaction`.
    #[schema(value_type = String, example = "idle")]
    pub state: SessionState,
    /// RFC 3339, UTC.
    pub connected_at: String,
}

impl From<SessionSnapshot> for Session {
    fn from(s: SessionSnapshot) -> Session {
        Session {
            id: s.id,
            username: s.identity.username,
            tenant_id: s.identity.tenant_id,
            subject: s.identity.subject,
            client_addr: s.identity.client_addr.to_string(),
            application_name: s.identity.application_name,
            state: s.state,
            connected_at: rfc3339(s.identity.connected_at),
        }
    }
}

/// List this process's open client sessions.
#[utoipa::path(get, path = "/v1/sessions", operation_id = "listSessions", tag = "sessions",
    responses((status = 200, description = "Open sessions by id", body = Vec<Session>)))]
pub(crate) async fn list(State(admin): State<Arc<AdminState>>) -> Json<Vec<Session>> {
    Json(admin.proxy.sessions.list().into_iter().map(Session::from).collect())
}

/// End one session: its client gets FATAL 57P01 and the connection closes.
#[utoipa::path(delete, path = "/v1/sessions/{id}", operation_id = "endSession", tag = "sessions",
    params(("id" = i32, Path, description = "Session id")),
    responses(
        (status = 204, description = "Ended"),
        (status = 400, description = "Not a session id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such open session", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn end(
    State(admin): State<Arc<AdminState>>,
    ApiPath(id): ApiPath<i32>,
) -> Result<StatusCode, Problem> {
    let reason = ClientError::fatal(sqlstate::ADMIN_SHUTDOWN, "terminating connection due to administrator command");
    if admin.proxy.sessions.terminate(id, reason) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::new(StatusCode::NOT_FOUND, format!("no open session {id}")))
    }
}

/// The server connections of one upstream role.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Pool {
    /// The upstream server (`default`: `[upstream]`).
    #[schema(example = "default")]
    pub upstream: String,
    /// The tenant whose own role this pool uses (schema and database tenants); absent for shared roles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// The access level the role serves.
    pub access: Access,
    /// The upstream login role.
    pub user: String,
    pub database: String,
    /// When a server connection goes back to the pool: `session` or `transaction`.
    #[schema(example = "transaction")]
    pub mode: String,
    /// The pool's live figures.
    #[serde(flatten)]
    pub figures: PoolFigures,
}

/// Upstream server connections per role, from the pools.
#[utoipa::path(get, path = "/v1/pools", operation_id = "listPools", tag = "sessions",
    responses((status = 200, description = "One entry per configured upstream role", body = Vec<Pool>)))]
pub(crate) async fn pools(State(admin): State<Arc<AdminState>>) -> Json<Vec<Pool>> {
    let mode = match admin.proxy.pool_mode {
        crate::config::PoolMode::Session => "session",
        crate::config::PoolMode::Transaction => "transaction",
    };
    let mut pools = Vec::new();
    for entry in admin.proxy.routes.pools() {
        let pool = entry.pool;
        pools.push(Pool {
            upstream: entry.upstream,
            tenant_id: entry.tenant_id,
            access: entry.access,
            user: pool.target().user.clone(),
            database: pool.target().database.clone(),
            mode: mode.into(),
            figures: pool.figures(),
        });
    }
    Json(pools)
}

/// RFC 3339 in UTC with microseconds, without a date library.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_micros()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_709_210_096_123_456);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.123456Z");
    }
}
