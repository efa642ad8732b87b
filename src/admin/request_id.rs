//! Every admin request gets an id: the caller's `X-Request-Id` when it is a
//! plausible one, else a fresh random one. It names the tracing span the
//! request is handled in (so every log line of the request carries it) and
//! comes back in the response's `X-Request-Id`, for matching a client's
//! report with the logs.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

const HEADER: &str = "x-request-id";

/// Longest caller-chosen id kept; longer ones are replaced.
const MAX_LENGTH: usize = 64;

/// The caller's id when it is short and made of `[A-Za-z0-9._:-]` (what
/// load balancers and tracing systems send), so a log line cannot be forged
/// through it; otherwise a fresh one.
fn request_id(request: &Request) -> String {
    request
        .headers()
        .get(HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= MAX_LENGTH
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        })
        .map_or_else(|| crate::hex::hex(&rand::random::<[u8; 16]>()), str::to_owned)
}

/// The middleware: a span per request, one log line when it is answered.
pub(super) async fn with_request_id(request: Request, next: Next) -> Response {
    let id = request_id(&request);
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let span = tracing::info_span!("admin_request", request_id = %id);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            method = %method,
            route = %route,
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "admin request"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}
