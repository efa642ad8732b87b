//! Tokens: JSON Web Tokens from the operator's identity provider, verified in
//! the proxy with the keys of `[jwt]`, their claims mapped to a tenant, an
//! access level and a subject. A login may present one as its password
//! (`frontend::auth`); pgtenant then sets the context exactly as for a
//! password login. The token itself is never logged.

pub(crate) mod jwks;
pub(crate) mod keys;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

use crate::access::Access;
use crate::config::JwtConfig;
use keys::VerificationKey;

/// Why a token was refused. The message names the check that failed; none
/// quotes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("the token is not a JSON Web Token")]
    Malformed,
    #[error("the token is unsigned (alg \"none\")")]
    Unsigned,
    #[error("the token's algorithm {0} is not configured for any key")]
    AlgorithmNotAllowed(String),
    #[error("the token names key \"{0}\", which pgtenant does not know")]
    UnknownKey(String),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token's issuer is not the configured jwt.issuer")]
    WrongIssuer,
    #[error("the token's audience does not include the configured jwt.audience")]
    WrongAudience,
    #[error("the token has no {0} claim")]
    MissingClaim(String),
    #[error("the token's {0} claim is not usable: {1}")]
    BadClaim(String, String),
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifiedToken {
    /// The tenant claim as sent: a tenant id or slug.
    pub(crate) tenant: String,
    pub(crate) access: Access,
    pub(crate) subject: Option<String>,
    /// When the token expires.
    pub(crate) expires_at: SystemTime,
    /// Every claim of the token, as signed.
    pub(crate) claims: Value,
}

/// Verifies tokens against the configured keys and claim rules.
pub(crate) struct TokenVerifier {
    /// The keys of the config and its files, read at start.
    keys: Vec<VerificationKey>,
    /// The keys of `jwt.jwks_url`, fetched.
    remote: Option<jwks::RemoteJwks>,
    config: JwtConfig,
}

impl TokenVerifier {
    /// The verifier of `[jwt]`, or `None` when no key is configured (token
    /// logins are off).
    pub(crate) fn from_config(config: &JwtConfig) -> Result<Option<TokenVerifier>, keys::KeyError> {
        let keys = keys::load(config)?;
        let remote = match &config.jwks_url {
            Some(url) => Some(jwks::RemoteJwks::new(url, Duration::from_secs(config.jwks_refresh_secs))?),
            None => None,
        };
        if keys.is_empty() && remote.is_none() {
            return Ok(None);
        }
        Ok(Some(TokenVerifier { keys, remote, config: config.clone() }))
    }

    /// Fetches `jwt.jwks_url` once, at start.
    pub(crate) async fn load_remote_keys(&self) {
        if let Some(remote) = &self.remote {
            remote.load().await;
        }
    }

    pub(crate) fn config(&self) -> &JwtConfig {
        &self.config
    }

    /// The keys in use, for `GET /v1/jwt`: (kid, family, algorithms, source).
    pub(crate) fn key_summaries(&self) -> Vec<(Option<String>, &'static str, Vec<String>, String)> {
        let remote = self.remote.as_ref().map(|r| r.keys()).unwrap_or_default();
        self.keys
            .iter()
            .chain(remote.iter())
            .map(|k| {
                (k.kid.clone(), k.family, k.algorithms.iter().map(|a| format!("{a:?}")).collect(), k.source.clone())
            })
            .collect()
    }

    /// Verifies `token` now. A key id nobody knows makes pgtenant fetch
    /// `jwt.jwks_url` again (rate-limited) before refusing it.
    pub(crate) async fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let remote_keys = self.remote.as_ref().map(|r| r.keys()).unwrap_or_default();
        match self.verify_with(&remote_keys, token) {
            Err(TokenError::UnknownKey(kid)) => match &self.remote {
                Some(remote) if remote.refresh().await => self.verify_with(&remote.keys(), token),
                _ => Err(TokenError::UnknownKey(kid)),
            },
            other => other,
        }
    }

    fn verify_with(&self, remote_keys: &Arc<Vec<VerificationKey>>, token: &str) -> Result<VerifiedToken, TokenError> {
        let (alg, kid) = read_header(token)?;
        let candidates = self.candidates(remote_keys, kid.as_deref(), alg)?;
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = self.config.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[self.config.issuer.as_deref().unwrap_or_default()]);
        validation.set_audience(&[self.config.audience.as_deref().unwrap_or_default()]);
        let mut failure = TokenError::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                Ok(data) => return self.claims(&data.claims),
                Err(e) => {
                    failure = refusal(e.into_kind());
                    if failure != TokenError::BadSignature {
                        // The signature held; a claim check failed, and another key would not change that.
                        break;
                    }
                }
            }
        }
        Err(failure)
    }

    /// The keys that may verify a token of `alg` naming `kid`.
    fn candidates<'a>(
        &'a self,
        remote_keys: &'a [VerificationKey],
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<&'a VerificationKey>, TokenError> {
        let all = || self.keys.iter().chain(remote_keys.iter());
        let fitting: Vec<&VerificationKey> = all().filter(|k| k.algorithms.contains(&alg)).collect();
        if let Some(kid) = kid {
            let named: Vec<&VerificationKey> =
                fitting.iter().copied().filter(|k| k.kid.as_deref() == Some(kid)).collect();
            if !named.is_empty() {
                return Ok(named);
            }
            // A key configured without a kid (a PEM file, the secret) may still be the one.
            let unnamed: Vec<&VerificationKey> = fitting.iter().copied().filter(|k| k.kid.is_none()).collect();
            if unnamed.is_empty() {
                return Err(if all().any(|k| k.kid.as_deref() == Some(kid)) {
                    TokenError::AlgorithmNotAllowed(format!("{alg:?}"))
                } else {
                    TokenError::UnknownKey(kid.to_owned())
                });
            }
            return Ok(unnamed);
        }
        if fitting.is_empty() {
            return Err(TokenError::AlgorithmNotAllowed(format!("{alg:?}")));
        }
        Ok(fitting)
    }

    /// Maps a verified token's claims to a tenant, access and subject.
    fn claims(&self, claims: &Value) -> Result<VerifiedToken, TokenError> {
        let tenant_claim = &self.config.tenant_claim;
        let tenant = match claim(claims, tenant_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(TokenError::BadClaim(tenant_claim.clone(), "not a tenant id or slug".into())),
            None => return Err(TokenError::MissingClaim(tenant_claim.clone())),
        };
        let access = self.access(claims)?;
        let subject_claim = &self.config.subject_claim;
        let subject = match claim(claims, subject_claim) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => return Err(TokenError::BadClaim(subject_claim.clone(), "not a string".into())),
            None => None,
        };
        let exp = claims.get("exp").and_then(Value::as_u64).ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
        Ok(VerifiedToken {
            tenant,
            access,
            subject,
            expires_at: UNIX_EPOCH + Duration::from_secs(exp),
            claims: claims.clone(),
        })
    }

    /// readwrite unless `jwt.access_claim` says otherwise: its value (or any
    /// of its values) "readonly"/"readwrite", or a role name `jwt.access_roles` maps.
    fn access(&self, claims: &Value) -> Result<Access, TokenError> {
        let Some(name) = &self.config.access_claim else { return Ok(Access::Readwrite) };
        let values: Vec<&str> = match claim(claims, name) {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(_) => return Err(TokenError::BadClaim(name.clone(), "not a string or a list of strings".into())),
            None => return Err(TokenError::MissingClaim(name.clone())),
        };
        let mapped: Vec<Access> = values
            .iter()
            .filter_map(|v| {
                self.config.access_roles.get(*v).copied().or_else(|| Access::parse(&v.to_ascii_lowercase()))
            })
            .collect();
        if mapped.contains(&Access::Readwrite) {
            Ok(Access::Readwrite)
        } else if mapped.contains(&Access::Readonly) {
            Ok(Access::Readonly)
        } else {
            Err(TokenError::BadClaim(name.clone(), "names no access level pgtenant knows".into()))
        }
    }
}

/// A claim by path: `org.id` reads `{"org": {"id": …}}`.
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |value, part| value.get(part)).filter(|v| !v.is_null())
}

/// The header's `alg` and `kid`, read before the library does so that an
/// unsigned token gets its own refusal.
fn read_header(token: &str) -> Result<(Algorithm, Option<String>), TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).map_err(|_| TokenError::Malformed)?;
    let header: Value = serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
    let alg = header.get("alg").and_then(Value::as_str).ok_or(TokenError::Malformed)?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(TokenError::Unsigned);
    }
    let alg = alg.parse().map_err(|_| TokenError::AlgorithmNotAllowed(alg.chars().take(16).collect()))?;
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(TokenError::Malformed),
    };
    Ok((alg, kid))
}

fn refusal(kind: jsonwebtoken::errors::ErrorKind) -> TokenError {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim),
        ErrorKind::InvalidAlgorithm => TokenError::BadSignature,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
            TokenError::Malformed
        }
        _ => TokenError::BadSignature,
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
