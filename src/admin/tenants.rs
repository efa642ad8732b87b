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
use crate::tenancy::provision::ProvisionError;
use crate::tenancy::tenants::{LimitsChange, NewTenant, Tenant, TenantChanges, TenantStatus};
use crate::tenancy::Isolation;

/// Body of `POST /v1/tenants`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTenant {
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
    /// Keep this uuid (adopting a database whose rows already carry it, or
    /// the schema or database a deleted tenant of this id left).
    #[serde(default)]
    pub id: Option<String>,
    /// `shared` (default), `schema` or `database`.
    #[serde(default)]
    pub isolation: Option<Isolation>,
    /// The upstream to place the tenant on (default: `default`, the `[upstream]` section).
    #[serde(default)]
    #[schema(example = "default")]
    pub upstream: Option<String>,
}

/// Body of `PATCH /v1/tenants/{tenant}`; absent fields stay as they are.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateTenant {
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
    /// Another upstream, only while the tenant is suspended (move its data first).
    #[serde(default)]
    pub upstream: Option<String>,
    /// Fixed at creation: the same value is accepted, another is refused with 409.
    #[serde(default)]
    pub isolation: Option<Isolation>,
    /// Limits of the tenant's new sessions, on every process: a key set to a
    /// value sets it, to `null` clears it (the config file's then applies),
    /// absent keys stay.
    #[serde(default)]
    pub limits: Option<LimitsPatch>,
}

/// `limits` of `PATCH /v1/tenants/{tenant}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsPatch {
    /// `session` or `transaction`.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<crate::config::PoolMode>, nullable)]
    pub pool_mode: Option<Option<crate::config::PoolMode>>,
    /// Milliseconds a request may keep its server session busy before pgtenant cancels it (0: no limit).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>, nullable, maximum = 2147483647)]
    pub statement_timeout_ms: Option<Option<u64>>,
    /// Server sessions the tenant may hold at once (0: no limit).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>, nullable, maximum = 1000000)]
    pub max_server_connections: Option<Option<usize>>,
    /// Client sessions the tenant may have open at once, per process (0: no limit); more get 53300.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u64>, nullable, maximum = 1000000)]
    pub max_client_connections: Option<Option<usize>>,
}

/// Query of `DELETE /v1/tenants/{tenant}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteTenant {
    /// Schema and database tenants: also drop the schema or database (default: keep it, with its roles
    /// unable to log in).
    #[serde(default)]
    pub drop: bool,
}

/// Query of `GET /v1/tenants`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListTenants {
    /// Only the children of this tenant (slug or id).
    pub parent: Option<String>,
}

/// Create a tenant.
#[utoipa::path(post, path = "/v1/tenants", operation_id = "createTenant", tag = "tenants", request_body = CreateTenant,
    responses(
        (status = 201, description = "Created", body = Tenant,
         headers(("Location" = String, description = "/v1/tenants/{id}"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Duplicate slug or id", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or unknown field, unknown parent or upstream, a parent for a schema or database tenant", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The upstream refused provisioning (a migration failed: the file and the server's error are named); the tenant is kept as provisioning_failed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The tenant's upstream is unreachable; the tenant is kept as provisioning_failed", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create(
    State(admin): State<Arc<AdminState>>,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<(StatusCode, [(header::HeaderName, String); 1], Json<Tenant>), Problem> {
    let isolation = body.isolation.unwrap_or(Isolation::Shared);
    if let Some(upstream) = &body.upstream {
        if !admin.proxy.provisioner.knows_upstream(upstream) {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("upstream: no upstream {upstream:?} is configured (upstream or [upstreams.<name>])"),
            ));
        }
    }
    let new = NewTenant {
        slug: body.slug,
        name: body.name,
        parent: body.parent,
        id: body.id,
        isolation,
        upstream: body.upstream,
    };
    let tenant = admin.catalog().create_tenant(&new).await?;
    let tenant = provision(&admin, tenant).await?;
    let location = format!("/v1/tenants/{}", tenant.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(tenant)))
}

/// Makes a schema or database tenant's upstream objects and records the
/// outcome: active at the migration version reached, or provisioning_failed.
async fn provision(admin: &AdminState, tenant: Tenant) -> Result<Tenant, Problem> {
    if tenant.isolation == Isolation::Shared {
        return Ok(tenant);
    }
    let outcome = admin.proxy.provisioner.provision(&tenant.id, tenant.isolation, &tenant.upstream).await;
    match outcome {
        Ok(version) => Ok(admin.catalog().finish_provisioning(&tenant.id, Some(version)).await?),
        Err(error) => {
            tracing::warn!(tenant = %tenant.slug, error = %error, "provisioning failed");
            admin.catalog().finish_provisioning(&tenant.id, None).await?;
            let status = match &error {
                ProvisionError::UnknownUpstream { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                ProvisionError::Busy => StatusCode::CONFLICT,
                ProvisionError::Unreachable { .. } | ProvisionError::NoAdmin { .. } => StatusCode::SERVICE_UNAVAILABLE,
                ProvisionError::Refused { .. } | ProvisionError::Migration { .. } => StatusCode::BAD_GATEWAY,
            };
            Err(Problem::new(
                status,
                format!(
                    "{error}; tenant {} is kept as provisioning_failed: POST /v1/tenants/{}/provision retries, \
                     DELETE removes it",
                    tenant.slug, tenant.id
                ),
            ))
        }
    }
}

/// Provision a tenant again after a failure.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/provision", operation_id = "reprovisionTenant", tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    responses(
        (status = 200, description = "Provisioned: the tenant, now active", body = Tenant),
        (status = 404, description = "Unknown tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The tenant is not in provisioning_failed", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The upstream refused provisioning again", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The tenant's upstream is unreachable", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn reprovision(
    State(admin): State<Arc<AdminState>>,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<Tenant>, Problem> {
    let tenant = admin.catalog().restart_provisioning(&key).await?;
    Ok(Json(provision(&admin, tenant).await?))
}

/// List tenants, optionally the children of one.
#[utoipa::path(get, path = "/v1/tenants", operation_id = "listTenants", tag = "tenants", params(ListTenants),
    responses(
        (status = 200, description = "Tenants by slug", body = Vec<Tenant>),
        (status = 400, description = "Unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown parent", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list(
    State(admin): State<Arc<AdminState>>,
    ApiQuery(query): ApiQuery<ListTenants>,
) -> Result<Json<Vec<Tenant>>, Problem> {
    Ok(Json(admin.catalog().list_tenants(query.parent.as_deref()).await?))
}

/// Read one tenant.
#[utoipa::path(get, path = "/v1/tenants/{tenant}", operation_id = "getTenant", tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    responses(
        (status = 200, description = "The tenant", body = Tenant),
        (status = 404, description = "Unknown tenant", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get(
    State(admin): State<Arc<AdminState>>,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<Tenant>, Problem> {
    Ok(Json(admin.catalog().get_tenant(&key).await?))
}

/// What a tenant's sessions did on this process since it started (each
/// process counts its own; the same figures label `/metrics`'s `pgtenant_tenant_*` series).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/stats", operation_id = "getTenantStats", tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    responses(
        (status = 200, description = "The tenant's figures", body = crate::tenant_stats::TenantFigures),
        (status = 404, description = "Unknown tenant", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn stats(
    State(admin): State<Arc<AdminState>>,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<crate::tenant_stats::TenantFigures>, Problem> {
    let tenant = admin.catalog().get_tenant(&key).await?;
    Ok(Json(admin.proxy.tenant_stats.figures(&tenant.id, &tenant.slug)))
}

/// Change a tenant's name, parent or status.
#[utoipa::path(patch, path = "/v1/tenants/{tenant}", operation_id = "updateTenant", tag = "tenants", request_body = UpdateTenant,
    params(("tenant" = String, Path, description = "Tenant id or slug")),
    responses(
        (status = 200, description = "The changed tenant", body = Tenant),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The new parent would make a cycle; a new upstream for a tenant that is not suspended; another isolation", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or unknown field, unknown parent", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn update(
    State(admin): State<Arc<AdminState>>,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateTenant>,
) -> Result<Json<Tenant>, Problem> {
    if let Some(isolation) = body.isolation {
        let current = admin.catalog().get_tenant(&key).await?;
        if current.isolation != isolation {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                format!(
                    "tenant {key:?} is a {} tenant and stays one: create a tenant of the other model, move the \
                     data (pg_dump/pg_restore), then delete this one",
                    current.isolation.as_str()
                ),
            ));
        }
    }
    let tenant = admin
        .catalog()
        .update_tenant(
            &key,
            &TenantChanges {
                name: body.name,
                parent: body.parent,
                status: body.status,
                upstream: body.upstream.clone(),
                limits: body.limits.map(|l| LimitsChange {
                    pool_mode: l.pool_mode,
                    statement_timeout_ms: l.statement_timeout_ms,
                    max_server_connections: l.max_server_connections,
                    max_client_connections: l.max_client_connections,
                }),
            },
        )
        .await?;
    if body.upstream.is_some() {
        // Its own roles' pools point at the old server.
        admin.proxy.routes.forget_tenant(&tenant.id);
    }
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
/// A schema or database tenant's schema or database is kept (its roles can no
/// longer log in; a new tenant with the same `id` adopts it) unless `drop=true`.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}", operation_id = "deleteTenant", tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant id or slug"), DeleteTenant),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The tenant has child tenants", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The upstream refused to disable or drop the tenant's objects; the tenant is deleted from the catalog", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn delete(
    State(admin): State<Arc<AdminState>>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeleteTenant>,
) -> Result<StatusCode, Problem> {
    let tenant = admin.catalog().delete_tenant(&key).await?;
    admin.proxy.sessions.terminate_where(
        |s| s.tenant_id == tenant.id,
        ended_because(&format!("tenant \"{}\" was deleted", tenant.slug)),
    );
    admin.proxy.routes.forget_tenant(&tenant.id);
    if tenant.isolation != Isolation::Shared {
        if let Err(error) =
            admin.proxy.provisioner.remove(&tenant.id, tenant.isolation, &tenant.upstream, query.drop).await
        {
            tracing::warn!(tenant = %tenant.slug, error = %error, "removing a deleted tenant's objects failed");
            return Err(Problem::new(
                StatusCode::BAD_GATEWAY,
                format!("tenant {} is deleted from the catalog, but {error}", tenant.slug),
            ));
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
