//! Extractors whose every rejection is problem+json: malformed JSON → 400,
//! wrong types, missing or unknown fields → 422, oversized bodies → 413.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::problem::Problem;

/// A JSON body (`Content-Type: application/json`).
pub(crate) struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        // Through a Value first: serde's derived structs would also take a
        // JSON array as a struct in field order, and that is not our API.
        let value = match Json::<Value>::from_request(req, state).await {
            Ok(Json(value)) => value,
            Err(rejection) => return Err(json_problem(&rejection)),
        };
        if !value.is_object() {
            return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "the request body must be a JSON object"));
        }
        serde_path_to_error::deserialize(value).map(ApiJson).map_err(|e| {
            let path = e.path().to_string();
            let detail = if path == "." { e.into_inner().to_string() } else { format!("{path}: {}", e.into_inner()) };
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
        })
    }
}

fn json_problem(rejection: &JsonRejection) -> Problem {
    let detail = match rejection {
        JsonRejection::BytesRejection(_) => {
            format!("the request body is too large or unreadable (limit {} bytes)", super::MAX_BODY_BYTES)
        }
        other => other.body_text(),
    };
    Problem::new(rejection.status(), detail)
}

/// Path parameters.
pub(crate) struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(path_problem(&rejection)),
        }
    }
}

fn path_problem(rejection: &PathRejection) -> Problem {
    Problem::new(rejection.status(), rejection.body_text())
}

/// Query-string parameters.
pub(crate) struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_problem(&rejection)),
        }
    }
}

fn query_problem(rejection: &QueryRejection) -> Problem {
    Problem::new(rejection.status(), rejection.body_text())
}

/// For PATCH fields where `null` means something (clear it) and absence means
/// leave it: absent → `None`, null → `Some(None)`.
pub(crate) fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}
