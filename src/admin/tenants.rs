//! `/v1/tenants`: create, list, read, change and delete tenants.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::Json;
use serde::Deserialize;

use super::extract::{nullable, ApiJson, ApiPath, ApiQuery};
use super::problem::Problem;
use super::AdminState;
use crate::tenancy::events::ended_because;
use crate::tenancy::tenants::{NewTenant, Tenant, TenantChanges, TenantStatus};

/// Body of `POST /v1/tenants`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// `[a-z0-9][a-z0-9-]{0,62}`, unique.
    #[schema(example = "hsbc-hk")]
    pub slug: String,
    /// 1 to 200 characters.
    #[schema(example = "HSBC Hong Kong")]
    pub name: String,
    /// The parent tenant, by slug or id.
    #[serde(default)]
    #[schema(example = "hsbc")]
    pub parent: Option<String>,
    /// Keep this uuid (adopting a database whose rows already carry it).
    #[serde(default)]
    pub id: Option<String>,
}

/// Body of `PATCH /v1/tenants/{tenant}`; absent fields stay as they are.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    /// A new display name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new parent by slug or id; `null` makes the tenant a root.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, nullable)]
    pub parent: Option<Option<String>>,
    /// `suspended` ends the tenant's sessions and refuses new ones.
    #[serde(default)]
    pub status: Option<TenantStatus>,
}

/// Query of `GET /v1/tenants`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListTenants {
    /// Only the children of this tenant (slug or id).
    pub parent: Option<String>,
}

/// Create a tenant.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant,
    responses(
        (status = 201, description = "Created", body = Tenant,
         headers(("Location" = String, description = "/v1/tenants/{id}"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Duplicate slug or id", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or unknown field, unknown parent", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(admin): State<Arc<AdminState>>,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<(StatusCode, [(header::HeaderName, String); 1], Json<Tenant>), Problem> {
    let tenant = admin
        .catalog()
        .create_tenant(&NewTenant { slug: body.slug, name: body.name, parent: body.parent, id: body.id })
        .await?;
    let location = format!("/v1/tenants/{}", tenant.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(tenant)))
}

/// List tenants, optionally the children of one.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(ListTenants),
    responses(
        (status = 200, description = "Tenants by slug", body = Vec<Tenant>),
        (status = 400, description = "Unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown parent", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(admin): State<Arc<AdminState>>,
    ApiQuery(query): ApiQuery<ListTenants>,
) -> Result<Json<Vec<Tenant>>, Problem> {
    Ok(Json(admin.catalog().list_tenants(query.parent.as_deref()).await?))
}

/// Read one tenant.
#[utoipa::path(get, path = "/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    responses(
        (status = 200, description = "The tenant", body = Tenant),
        (status = 404, description = "Unknown tenant", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(State(admin): State<Arc<AdminState>>, ApiPath(key): ApiPath<String>) -> Result<Json<Tenant>, Problem> {
    Ok(Json(admin.catalog().get_tenant(&key).await?))
}

/// Change a tenant's name, parent or status.
#[utoipa::path(patch, path = "/v1/tenants/{tenant}", tag = "tenants", request_body = UpdateTenant,
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    responses(
        (status = 200, description = "The changed tenant", body = Tenant),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The new parent would make a cycle", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or unknown field, unknown parent", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update(
    State(admin): State<Arc<AdminState>>,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateTenant>,
) -> Result<Json<Tenant>, Problem> {
    let tenant = admin
        .catalog()
        .update_tenant(&key, &TenantChanges { name: body.name, parent: body.parent, status: body.status })
        .await?;
    if tenant.status == TenantStatus::Suspended {
        // Here at once; other processes hear of it through the catalog events.
        admin.proxy.sessions.terminate_where(
            |s| s.tenant_id == tenant.id,
            ended_because(&format!("tenant \"{}\" was suspended", tenant.slug)),
        );
    }
    Ok(Json(tenant))
}

/// Delete a tenant without children; its logins go with it and their sessions end.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The tenant has child tenants", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(
    State(admin): State<Arc<AdminState>>,
    ApiPath(key): ApiPath<String>,
) -> Result<StatusCode, Problem> {
    let tenant = admin.catalog().delete_tenant(&key).await?;
    admin.proxy.sessions.terminate_where(
        |s| s.tenant_id == tenant.id,
        ended_because(&format!("tenant \"{}\" was deleted", tenant.slug)),
    );
    Ok(StatusCode::NO_CONTENT)
}
