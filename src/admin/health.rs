//! Probes and metrics, open without a token: `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AdminState;
use crate::metrics::SESSIONS_OPEN;
use crate::tenancy::Access;

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process runs", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when the catalog answers, else 503.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain"),
        (status = 503, description = "The control database is unreachable", body = String, content_type = "text/plain"),
    ))]
pub async fn readyz(State(admin): State<Arc<AdminState>>) -> (StatusCode, &'static str) {
    match admin.proxy.catalog.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "catalog unreachable\n")
        }
    }
}

/// Prometheus text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
pub async fn metrics(State(admin): State<Arc<AdminState>>) -> Response {
    let Some(handle) = &admin.metrics else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable\n",
        )
            .into_response();
    };
    let sessions = admin.proxy.sessions.list();
    for access in [Access::Readwrite, Access::Readonly] {
        let open = sessions
            .iter()
            .filter(|s| s.identity.access == access)
            .count();
        metrics::gauge!(SESSIONS_OPEN, "access" => access.as_str()).set(open as f64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}
