//! `/v1/tenants/{tenant}/logins` and `/v1/logins/{username}`. No reply
//! carries a password or a verifier: `Login` has no field for either.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::Json;
use serde::Deserialize;

use super::extract::{ApiJson, ApiPath};
use super::problem::Problem;
use super::AdminState;
use crate::tenancy::events::ended_because;
use crate::tenancy::logins::{Login, LoginChanges};
use crate::tenancy::Access;

/// Body of `POST /v1/tenants/{tenant}/logins`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateLogin {
    /// `[a-z0-9_][a-z0-9_.-]{0,62}`, unique across tenants.
    #[schema(example = "hk_teller")]
    pub username: String,
    /// At least 12 characters; stored only as a SCRAM-SHA-256 verifier.
    #[schema(example = "correct-horse-battery")]
    pub password: String,
    /// `readwrite` (default) or `readonly`.
    #[serde(default)]
    pub access: Option<Access>,
}

/// Body of `POST /v1/logins`: a service login (no tenant).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateServiceLogin {
    #[schema(example = "orders_api")]
    pub username: String,
    /// At least 12 characters; stored only as a SCRAM-SHA-256 verifier.
    pub password: String,
    /// Must be `true`: logins of a tenant are created under `/v1/tenants/{tenant}/logins`.
    pub service: bool,
}

/// Body of `PATCH /v1/logins/{username}`; absent fields stay as they are.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateLogin {
    /// A new password (at least 12 characters).
    #[serde(default)]
    pub password: Option<String>,
    /// A new access level; open sessions end so that they reconnect with it.
    #[serde(default)]
    pub access: Option<Access>,
    /// `false` ends the login's sessions and refuses new ones.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Create a login of a tenant.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/logins", operation_id = "createLogin", tag = "logins", request_body = CreateLogin,
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    responses(
        (status = 201, description = "Created (no password in the reply)", body = Login,
         headers(("Location" = String, description = "/v1/logins/{username}"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Duplicate username", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or unknown field, short password", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create(
    State(admin): State<Arc<AdminState>>,
    ApiPath(tenant): ApiPath<String>,
    ApiJson(body): ApiJson<CreateLogin>,
) -> Result<(StatusCode, [(header::HeaderName, String); 1], Json<Login>), Problem> {
    let login = admin
        .catalog()
        .create_login(&tenant, &body.username, &body.password, body.access.unwrap_or(Access::Readwrite))
        .await?;
    Ok(created(login))
}

/// 201 with the login and its `Location`.
fn created(login: Login) -> (StatusCode, [(header::HeaderName, String); 1], Json<Login>) {
    let location = format!("/v1/logins/{}", login.username);
    (StatusCode::CREATED, [(header::LOCATION, location)], Json(login))
}

/// Create a service login: an app server's login that belongs to no tenant
/// and sees no tenant rows by itself.
#[utoipa::path(post, path = "/v1/logins", operation_id = "createServiceLogin", tag = "logins", request_body = CreateServiceLogin,
    responses(
        (status = 201, description = "Created (no password in the reply)", body = Login,
         headers(("Location" = String, description = "/v1/logins/{username}"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Duplicate username", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or unknown field, short password, service not true", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create_service(
    State(admin): State<Arc<AdminState>>,
    ApiJson(body): ApiJson<CreateServiceLogin>,
) -> Result<(StatusCode, [(header::HeaderName, String); 1], Json<Login>), Problem> {
    if !body.service {
        return Err(crate::tenancy::store::StoreError::Invalid(crate::tenancy::validate::Invalid::new(
            "service",
            "must be true here; a tenant's logins are created under /v1/tenants/{tenant}/logins",
        ))
        .into());
    }
    let login = admin.catalog().create_service_login(&body.username, &body.password).await?;
    Ok(created(login))
}

/// List a tenant's logins.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/logins", operation_id = "listTenantLogins", tag = "logins",
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    responses(
        (status = 200, description = "The tenant's logins by username", body = Vec<Login>),
        (status = 404, description = "Unknown tenant", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list(
    State(admin): State<Arc<AdminState>>,
    ApiPath(tenant): ApiPath<String>,
) -> Result<Json<Vec<Login>>, Problem> {
    Ok(Json(admin.catalog().list_logins(&tenant).await?))
}

/// Read one login.
#[utoipa::path(get, path = "/v1/logins/{username}", operation_id = "getLogin", tag = "logins",
    params(("username" = String, Path, description = "Login name")),
    responses(
        (status = 200, description = "The login", body = Login),
        (status = 404, description = "Unknown login", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get(
    State(admin): State<Arc<AdminState>>,
    ApiPath(username): ApiPath<String>,
) -> Result<Json<Login>, Problem> {
    Ok(Json(admin.catalog().get_login(&username).await?))
}

/// Change a login's password, access or enabled flag.
#[utoipa::path(patch, path = "/v1/logins/{username}", operation_id = "updateLogin", tag = "logins", request_body = UpdateLogin,
    params(("username" = String, Path, description = "Login name")),
    responses(
        (status = 200, description = "The changed login", body = Login),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown login", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or unknown field, short password", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn update(
    State(admin): State<Arc<AdminState>>,
    ApiPath(username): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateLogin>,
) -> Result<Json<Login>, Problem> {
    let login = admin
        .catalog()
        .update_login(&username, &LoginChanges { password: body.password, access: body.access, enabled: body.enabled })
        .await?;
    if !login.enabled {
        admin.proxy.sessions.terminate_where(
            |s| s.username == login.username,
            ended_because(&format!("login \"{}\" was disabled", login.username)),
        );
    }
    Ok(Json(login))
}

/// Delete a login; its sessions end.
#[utoipa::path(delete, path = "/v1/logins/{username}", operation_id = "deleteLogin", tag = "logins",
    params(("username" = String, Path, description = "Login name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown login", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn delete(
    State(admin): State<Arc<AdminState>>,
    ApiPath(username): ApiPath<String>,
) -> Result<StatusCode, Problem> {
    admin.catalog().delete_login(&username).await?;
    admin
        .proxy
        .sessions
        .terminate_where(|s| s.username == username, ended_because(&format!("login \"{username}\" was deleted")));
    Ok(StatusCode::NO_CONTENT)
}
