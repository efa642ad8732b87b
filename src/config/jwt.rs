//! `[jwt]`: how token logins are verified — keys, required claims, the
//! mapping of claims to tenant, access and subject — and its validation.

use std::path::PathBuf;

use serde::Deserialize;

use super::sources::from_str_or_native;
use super::ConfigError;

/// Token verification (`[jwt]`): keys, the claims required, how claims map
/// to a tenant, an access level and a subject.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required in `aud`.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(deserialize_with = "from_str_or_native")]
    pub leeway_secs: u64,
    /// HMAC secret (HS256/384/512).
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// PEM public keys (RSA: RS*/PS*, EC: ES256/ES384, Ed25519: EdDSA).
    pub public_keys: Vec<PathBuf>,
    /// A JWKS document on disk (keys by `kid`).
    pub jwks_file: Option<PathBuf>,
    /// A JWKS document over HTTP(S): fetched at start, and again for an
    /// unknown `kid` at most once per `jwks_refresh_secs`.
    pub jwks_url: Option<String>,
    #[serde(deserialize_with = "from_str_or_native")]
    pub jwks_refresh_secs: u64,
    /// Claim path of the tenant (id or slug); `org.id` reads a nested claim.
    pub tenant_claim: String,
    /// Claim path of the access level; unset: every token is readwrite.
    pub access_claim: Option<String>,
    /// Role names in the access claim → access level (besides the literal
    /// values `readonly` and `readwrite`).
    pub access_roles: std::collections::BTreeMap<String, crate::access::Access>,
    /// Claim path of the subject (`pgtenant.current_subject()`).
    pub subject_claim: String,
    /// The user name a client logs in with to present a token as its password.
    pub username: String,
    /// Accept tokens on plain (not TLS) connections from loopback addresses.
    #[serde(deserialize_with = "from_str_or_native")]
    pub allow_plaintext_loopback: bool,
    /// What a token session does at the token's `exp`.
    pub on_expiry: OnExpiry,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            issuer: None,
            audience: None,
            leeway_secs: 30,
            secret: None,
            secret_file: None,
            public_keys: Vec::new(),
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_secs: 60,
            tenant_claim: "tenant_id".into(),
            access_claim: None,
            access_roles: Default::default(),
            subject_claim: "sub".into(),
            username: "jwt".into(),
            allow_plaintext_loopback: false,
            on_expiry: OnExpiry::End,
        }
    }
}

impl JwtConfig {
    /// True when some key is configured: token logins are on.
    pub(crate) fn has_keys(&self) -> bool {
        self.secret.is_some()
            || self.secret_file.is_some()
            || !self.public_keys.is_empty()
            || self.jwks_file.is_some()
            || self.jwks_url.is_some()
    }

    /// Fails naming the key when token verification is misconfigured; the
    /// key files are read now, so a bad one stops `serve` at start.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.has_keys() {
            return Ok(());
        }
        if self.secret.is_some() && self.secret_file.is_some() {
            return Err(ConfigError::new("jwt.secret_file", "and jwt.secret are two secrets; set one"));
        }
        if self.secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err(ConfigError::new("jwt.secret", "must be at least 32 bytes"));
        }
        for (key, value) in [("jwt.issuer", &self.issuer), ("jwt.audience", &self.audience)] {
            if value.as_deref().is_none_or(str::is_empty) {
                return Err(ConfigError::new(key, "is required when token keys are configured"));
            }
        }
        for (key, path) in [
            ("jwt.tenant_claim", Some(&self.tenant_claim)),
            ("jwt.subject_claim", Some(&self.subject_claim)),
            ("jwt.access_claim", self.access_claim.as_ref()),
        ] {
            if path.is_some_and(|p| p.is_empty() || p.split('.').any(str::is_empty)) {
                return Err(ConfigError::new(key, "must be a claim name or a dotted path like org.id"));
            }
        }
        if self.username.is_empty() || self.username.len() > 63 {
            return Err(ConfigError::new("jwt.username", "must be a user name (1 to 63 bytes)"));
        }
        if self.jwks_refresh_secs == 0 {
            return Err(ConfigError::new("jwt.jwks_refresh_secs", "must be at least 1"));
        }
        crate::tokens::keys::load(self).map_err(|e| ConfigError::new(e.key, e.message))?;
        if let Some(url) = &self.jwks_url {
            let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
            if !scheme_ok || url.parse::<hyper::Uri>().is_err() {
                return Err(ConfigError::new("jwt.jwks_url", "must be an http:// or https:// URL"));
            }
        }
        Ok(())
    }
}

/// What a token session does when its token expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnExpiry {
    /// The session ends with FATAL (between transactions in transaction pooling).
    End,
    /// The session goes on.
    Keep,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_secret() -> JwtConfig {
        JwtConfig {
            issuer: Some("https://idp.test".into()),
            audience: Some("pgtenant".into()),
            secret: Some("s".repeat(32)),
            ..JwtConfig::default()
        }
    }

    fn refused_key(config: JwtConfig) -> String {
        config.validate().expect_err("must be refused").key
    }

    #[test]
    fn token_settings_are_checked_naming_the_key() {
        assert!(JwtConfig::default().validate().is_ok(), "no key: token logins are off");
        assert!(with_secret().validate().is_ok());
        assert_eq!(refused_key(JwtConfig { issuer: None, ..with_secret() }), "jwt.issuer");
        assert_eq!(refused_key(JwtConfig { audience: Some(String::new()), ..with_secret() }), "jwt.audience");
        assert_eq!(refused_key(JwtConfig { secret: Some("short".into()), ..with_secret() }), "jwt.secret");
        assert_eq!(refused_key(JwtConfig { secret_file: Some("/x".into()), ..with_secret() }), "jwt.secret_file");
        assert_eq!(refused_key(JwtConfig { tenant_claim: "org..id".into(), ..with_secret() }), "jwt.tenant_claim");
        assert_eq!(refused_key(JwtConfig { username: String::new(), ..with_secret() }), "jwt.username");
        assert_eq!(refused_key(JwtConfig { jwks_refresh_secs: 0, ..with_secret() }), "jwt.jwks_refresh_secs");
        assert_eq!(refused_key(JwtConfig { jwks_url: Some("ftp://idp/jwks".into()), ..with_secret() }), "jwt.jwks_url");
        assert_eq!(
            refused_key(JwtConfig { public_keys: vec!["/nonexistent.pem".into()], ..with_secret() }),
            "jwt.public_keys"
        );
    }
}
