//! The HTTP sidecar (SPEC §5): tenants, logins, sessions and pools under
//! `/v1` behind the bearer token; health, metrics and the OpenAPI document
//! open. Every error is problem+json.

mod auth;
mod extract;
mod health;
mod jwt;
mod logins;
mod openapi;
mod problem;
mod request_id;
mod sessions;
mod tenants;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

pub(crate) use auth::AdminToken;
pub(crate) use problem::Problem;

use crate::proxy::ProxyState;
use crate::tenancy::catalog::Catalog;

/// Largest request body the sidecar reads; larger ones get 413.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the sidecar's handlers share.
pub(crate) struct AdminState {
    /// The proxy's state: catalog and session registry.
    pub proxy: Arc<ProxyState>,
    token: AdminToken,
    metrics: Option<PrometheusHandle>,
}

impl AdminState {
    fn catalog(&self) -> &Catalog {
        &self.proxy.catalog
    }
}

/// The sidecar's routes; `/v1` requires `Authorization: Bearer <token>`.
pub(crate) fn router(proxy: Arc<ProxyState>, token: &str) -> Router {
    let state = Arc::new(AdminState { proxy, token: AdminToken::new(token), metrics: crate::metrics::install() });
    let v1 = Router::new()
        .route("/tenants", get(tenants::list).post(tenants::create))
        .route("/tenants/{tenant}", get(tenants::get).patch(tenants::update).delete(tenants::delete))
        .route("/tenants/{tenant}/logins", get(logins::list).post(logins::create))
        .route("/tenants/{tenant}/provision", post(tenants::reprovision))
        .route("/tenants/{tenant}/stats", get(tenants::stats))
        .route("/logins", post(logins::create_service))
        .route("/logins/{username}", get(logins::get).patch(logins::update).delete(logins::delete))
        .route("/sessions", get(sessions::list))
        .route("/sessions/{id}", delete(sessions::end))
        .route("/pools", get(sessions::pools))
        .route("/jwt", get(jwt::settings))
        .fallback(|| async { Problem::no_route() })
        .method_not_allowed_fallback(|| async { Problem::wrong_method() })
        // On the fallbacks too: without the token, nothing about /v1 is revealed.
        .layer(middleware::from_fn_with_state(Arc::clone(&state), auth::require_token));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::serve))
        .nest("/v1", v1)
        .fallback(|| async { Problem::no_route() })
        .method_not_allowed_fallback(|| async { Problem::wrong_method() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(count_request))
        .layer(middleware::from_fn(request_id::with_request_id))
        .with_state(state)
}

/// Counts admin requests by method, route and status.
async fn count_request(request: Request, next: Next) -> Response {
    // Only known methods become label values: a client cannot mint new series.
    let method = match *request.method() {
        Method::GET | Method::POST | Method::PATCH | Method::PUT | Method::DELETE | Method::HEAD => {
            request.method().as_str().to_owned()
        }
        _ => "other".to_owned(),
    };
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics::counter!(
        crate::metrics::ADMIN_REQUESTS,
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string(),
    )
    .increment(1);
    response
}
