//! The HTTP sidecar: health now; tenants, logins, sessions and metrics come
//! with the admin API.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::frontend::ProxyState;

/// The sidecar's routes.
pub fn router(state: Arc<ProxyState>) -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" })).route("/readyz", get(readyz)).with_state(state)
}

/// 200 when the catalog answers, else 503.
async fn readyz(State(state): State<Arc<ProxyState>>) -> (StatusCode, &'static str) {
    match state.catalog.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "catalog unreachable\n")
        }
    }
}
