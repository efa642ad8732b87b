//! Probes and metrics, open without a token: `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};

use super::AdminState;
use crate::upstream::connect::UpstreamAddress;

/// How long /readyz waits for an upstream to accept a connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
use crate::metrics::SESSIONS_OPEN;
use crate::tenancy::Access;

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", operation_id = "getHealth", tag = "health",
    responses((status = 200, description = "The process runs", body = String, content_type = "text/plain")))]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when the catalog answers and every upstream accepts connections, else 503.
#[utoipa::path(get, path = "/readyz", operation_id = "getReadiness", tag = "health",
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain"),
        (status = 503, description = "The control database or an upstream is unreachable", body = String, content_type = "text/plain"),
    ))]
pub(crate) async fn readyz(State(admin): State<Arc<AdminState>>) -> (StatusCode, String) {
    if let Err(e) = admin.proxy.catalog.ping().await {
        tracing::warn!(error = %e, "not ready: catalog");
        return (StatusCode::SERVICE_UNAVAILABLE, "catalog unreachable\n".into());
    }
    let mut report = String::new();
    let mut ready = true;
    for placement in admin.proxy.routes.placements() {
        let targets = [Some(placement.readwrite.target()), placement.readonly.as_ref().map(|p| p.target())];
        let mut up = true;
        for target in targets.into_iter().flatten() {
            if let Err(e) = reachable(&target.address).await {
                tracing::warn!(error = %e, upstream = %placement.name, address = %target.address, "not ready: upstream");
                up = false;
            }
        }
        ready &= up;
        report.push_str(&format!("upstream {}: {}\n", placement.name, if up { "reachable" } else { "unreachable" }));
    }
    if ready {
        (StatusCode::OK, format!("ready\n{report}"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("upstream unreachable\n{report}"))
    }
}

/// Whether the upstream accepts a connection (closed at once; no session is opened).
async fn reachable(address: &UpstreamAddress) -> std::io::Result<()> {
    let connect = async {
        match address {
            UpstreamAddress::Tcp { host, port } => TcpStream::connect((host.as_str(), *port)).await.map(drop),
            UpstreamAddress::Unix(path) => UnixStream::connect(path).await.map(drop),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, connect).await.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Prometheus text exposition format.
#[utoipa::path(get, path = "/metrics", operation_id = "getMetrics", tag = "health",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
pub(crate) async fn metrics(State(admin): State<Arc<AdminState>>) -> Response {
    let Some(handle) = &admin.metrics else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics recorder unavailable\n").into_response();
    };
    let sessions = admin.proxy.sessions.list();
    for access in [Access::Readwrite, Access::Readonly] {
        let open = sessions.iter().filter(|s| s.identity.access == access).count();
        metrics::gauge!(SESSIONS_OPEN, "access" => access.as_str()).set(open as f64);
    }
    crate::metrics::record_pools(&admin.proxy.routes.pools());
    let mut text = handle.render();
    text.push_str(&admin.proxy.tenant_stats.render());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
