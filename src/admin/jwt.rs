//! `GET /v1/jwt`: how tokens are verified — the required issuer and
//! audience, the claim mapping, and the keys in use by id, family and
//! algorithms. Never a secret or a key.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::AdminState;
use crate::config::OnExpiry;

/// Token verification as configured.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JwtSettings {
    /// False when no key is configured: token logins are off.
    pub enabled: bool,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
    pub username: String,
    pub tenant_claim: String,
    pub access_claim: Option<String>,
    pub subject_claim: String,
    pub allow_plaintext_loopback: bool,
    pub on_expiry: OnExpiry,
    pub keys: Vec<JwtKey>,
}

/// One verification key, without its material.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JwtKey {
    /// The JWKS key id, if it has one.
    pub kid: Option<String>,
    /// oct (HMAC secret), RSA, EC or OKP (Ed25519).
    pub family: String,
    /// The algorithms a token may use with this key.
    pub algorithms: Vec<String>,
    /// The setting it came from (a file name, never its contents).
    pub source: String,
}

/// Token verification settings and the key ids in use.
#[utoipa::path(get, path = "/v1/jwt", operation_id = "getJwtSettings", tag = "tokens",
    responses((status = 200, description = "Verification settings; no secret or key material", body = JwtSettings)))]
pub(crate) async fn settings(State(admin): State<Arc<AdminState>>) -> Json<JwtSettings> {
    let tokens = admin.proxy.tokens.as_deref();
    let config = tokens.map(|t| t.config().clone()).unwrap_or_default();
    let keys = tokens
        .map(|t| {
            t.key_summaries()
                .into_iter()
                .map(|(kid, family, algorithms, source)| JwtKey { kid, family: family.to_owned(), algorithms, source })
                .collect()
        })
        .unwrap_or_default();
    Json(JwtSettings {
        enabled: tokens.is_some(),
        issuer: config.issuer,
        audience: config.audience,
        leeway_secs: config.leeway_secs,
        username: config.username,
        tenant_claim: config.tenant_claim,
        access_claim: config.access_claim,
        subject_claim: config.subject_claim,
        allow_plaintext_loopback: config.allow_plaintext_loopback,
        on_expiry: config.on_expiry,
        keys,
    })
}
