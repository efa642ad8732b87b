//! RFC 9457 problem details: the body of every admin API error.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::tenancy::store::StoreError;

/// An error reply, `application/problem+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    #[schema(example = "urn:pgtenant:problem:conflict")]
    pub kind: String,
    /// A short summary of the kind.
    #[schema(example = "Conflict")]
    pub title: String,
    /// The HTTP status code.
    #[schema(example = 409)]
    pub status: u16,
    /// What went wrong with this request.
    #[schema(example = "a tenant with this slug exists")]
    pub detail: String,
    #[serde(skip)]
    extra_headers: Vec<(header::HeaderName, HeaderValue)>,
}

/// The media type of problem details.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

impl Problem {
    /// A problem of `status`, its kind named after the status.
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        let title = status.canonical_reason().unwrap_or("Error").to_owned();
        let kind = format!("urn:pgtenant:problem:{}", title.to_ascii_lowercase().replace([' ', '-'], "-"));
        Problem { kind, title, status: status.as_u16(), detail: detail.into(), extra_headers: Vec::new() }
    }

    /// 401 with the challenge RFC 6750 asks for.
    pub(crate) fn unauthorized() -> Problem {
        let mut problem =
            Problem::new(StatusCode::UNAUTHORIZED, "a valid `Authorization: Bearer <admin.token>` header is required");
        problem.extra_headers.push((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"pgtenant\"")));
        problem
    }

    /// 404 for a path no route serves.
    pub(crate) fn no_route() -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "no such route")
    }

    /// 405 for a route that does not take this method.
    pub(crate) fn wrong_method() -> Problem {
        Problem::new(StatusCode::METHOD_NOT_ALLOWED, "this route does not take this method")
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        match e {
            StoreError::NotFound(detail) => Problem::new(StatusCode::NOT_FOUND, detail),
            StoreError::Conflict(detail) => Problem::new(StatusCode::CONFLICT, detail),
            StoreError::Invalid(invalid) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, invalid.to_string()),
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "admin request: catalog unavailable");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the control database is unreachable; try again later")
            }
            StoreError::Internal(cause) => {
                tracing::error!(error = %cause, "admin request: catalog error");
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "the control database failed; see the pgtenant log")
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in self.extra_headers {
            headers.insert(name, value);
        }
        response
    }
}
