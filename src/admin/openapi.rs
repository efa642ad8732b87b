//! `GET /openapi.json`: the API description, generated from the handlers'
//! and schemas' annotations.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::problem::{Problem, PROBLEM_JSON};
use super::{health, jwt, logins, sessions, tenants};

/// The admin API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "pgtenant admin API", description = "Tenants, logins, sessions and health of a pgtenant process (SPEC §5)."),
    paths(
        tenants::create, tenants::list, tenants::get, tenants::stats, tenants::update, tenants::delete, tenants::reprovision,
        logins::create, logins::create_service, logins::list, logins::get, logins::update, logins::delete,
        sessions::list, sessions::end, sessions::pools, jwt::settings,
        health::healthz, health::readyz, health::metrics,
    ),
    components(schemas(
        Problem,
        crate::tenancy::tenants::Tenant, crate::tenancy::tenants::TenantStatus, crate::tenancy::Isolation,
        crate::tenant_stats::TenantFigures,
        tenants::CreateTenant, tenants::UpdateTenant, tenants::LimitsPatch, crate::config::TenantOverrides, crate::config::PoolMode,
        crate::tenancy::logins::Login, crate::tenancy::Access,
        logins::CreateLogin, logins::CreateServiceLogin, logins::UpdateLogin,
        sessions::Session, sessions::Pool,
        jwt::JwtSettings, jwt::JwtKey, crate::config::OnExpiry,
    )),
    modifiers(&V1Security),
)]
pub(crate) struct ApiDoc;

/// Adds the bearer scheme, and the 401 and 503 every `/v1` route can answer.
struct V1Security;

impl Modify for V1Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        let problem = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        PROBLEM_JSON,
                        Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Problem")))),
                    )
                    .build(),
            )
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            for operation in [&mut item.get, &mut item.post, &mut item.patch, &mut item.delete].into_iter().flatten() {
                operation.security =
                    Some(vec![utoipa::openapi::security::SecurityRequirement::new("bearer", Vec::<String>::new())]);
                let responses = &mut operation.responses.responses;
                responses.insert("401".into(), problem("Missing or wrong bearer token (WWW-Authenticate: Bearer)"));
                responses.insert("503".into(), problem("The control database is unreachable"));
            }
        }
    }
}

/// Serves the document, rendered once.
pub(crate) async fn serve() -> impl IntoResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let body = JSON.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], body.as_str())
}
