//! `/v1/sessions` (this process's open client sessions) and `/v1/pools`.

use std::sync::Arc;

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
            connected_at: crate::rfc3339::rfc3339(s.identity.connected_at),
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
    let mode = admin.proxy.pool_mode.as_str();
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
