//! The keys tokens are verified with, from `[jwt]`: an HMAC secret, PEM
//! public keys, a JWKS file. Each key carries the algorithms it may verify,
//! so a token can never pick a family its key was not configured for (an
//! HS256 token "signed" with an RSA public key as its secret finds no key).

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::JwtConfig;

const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: &[Algorithm] =
    &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];

/// One verification key.
#[derive(Clone)]
pub(crate) struct VerificationKey {
    /// The JWKS `kid`, when it has one.
    pub(crate) kid: Option<String>,
    pub(crate) key: DecodingKey,
    /// The algorithms this key verifies.
    pub(crate) algorithms: Vec<Algorithm>,
    /// Where it came from, for `GET /v1/jwt` and the logs (never the key).
    pub(crate) source: String,
    /// The key family as JWKS names it: oct, RSA, EC or OKP.
    pub(crate) family: &'static str,
}

/// Why the configured keys cannot be loaded: names the key and the file.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct KeyError {
    pub key: String,
    pub message: String,
}

fn key_error(key: &str, message: impl Into<String>) -> KeyError {
    KeyError { key: key.to_owned(), message: message.into() }
}

/// Every key `[jwt]` configures, read now (files included).
pub(crate) fn load(config: &JwtConfig) -> Result<Vec<VerificationKey>, KeyError> {
    let mut keys = Vec::new();
    if let Some(secret) = &config.secret {
        keys.push(secret_key(secret.as_bytes(), "jwt.secret"));
    }
    if let Some(path) = &config.secret_file {
        let secret = read(path, "jwt.secret_file")?;
        // A trailing newline from an editor or `echo` is not part of the secret.
        let secret = secret.strip_suffix(b"\n").unwrap_or(&secret);
        keys.push(secret_key(secret, "jwt.secret_file"));
    }
    for path in &config.public_keys {
        keys.push(pem_key(&read(path, "jwt.public_keys")?, &path.display().to_string())?);
    }
    if let Some(path) = &config.jwks_file {
        keys.extend(jwks(&read(path, "jwt.jwks_file")?, "jwt.jwks_file")?);
    }
    Ok(keys)
}

fn read(path: &Path, key: &str) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| key_error(key, format!("cannot read {}: {e}", path.display())))
}

fn secret_key(secret: &[u8], source: &str) -> VerificationKey {
    VerificationKey {
        kid: None,
        key: DecodingKey::from_secret(secret),
        algorithms: HMAC.to_vec(),
        source: source.to_owned(),
        family: "oct",
    }
}

/// A PEM public key: RSA (RS*/PS*), EC (ES256/ES384) or Ed25519 (EdDSA).
fn pem_key(pem: &[u8], source: &str) -> Result<VerificationKey, KeyError> {
    let key = |key, algorithms: &[Algorithm], family| VerificationKey {
        kid: None,
        key,
        algorithms: algorithms.to_vec(),
        source: source.to_owned(),
        family,
    };
    if let Ok(rsa) = DecodingKey::from_rsa_pem(pem) {
        return Ok(key(rsa, RSA, "RSA"));
    }
    if let Ok(ec) = DecodingKey::from_ec_pem(pem) {
        return Ok(key(ec, &[Algorithm::ES256, Algorithm::ES384], "EC"));
    }
    if let Ok(ed) = DecodingKey::from_ed_pem(pem) {
        return Ok(key(ed, &[Algorithm::EdDSA], "OKP"));
    }
    Err(key_error("jwt.public_keys", format!("{source} is not a PEM public key of RSA, EC (P-256, P-384) or Ed25519")))
}

/// The signing keys of a JWKS document (keys marked for encryption are skipped).
pub(crate) fn jwks(text: &[u8], source: &str) -> Result<Vec<VerificationKey>, KeyError> {
    let set: JwkSet =
        serde_json::from_slice(text).map_err(|e| key_error(source, format!("not a JWKS document: {e}")))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let kid = jwk.common.key_id.clone();
        let named = kid.as_deref().unwrap_or("(no kid)");
        let key =
            DecodingKey::from_jwk(jwk).map_err(|e| key_error(source, format!("key {named} cannot be used: {e}")))?;
        let (family, by_family): (&'static str, Vec<Algorithm>) = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => ("RSA", RSA.to_vec()),
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => ("EC", vec![Algorithm::ES256]),
                EllipticCurve::P384 => ("EC", vec![Algorithm::ES384]),
                _ => {
                    return Err(key_error(
                        source,
                        format!("key {named}: only the P-256 and P-384 curves are supported"),
                    ))
                }
            },
            AlgorithmParameters::OctetKeyPair(_) => ("OKP", vec![Algorithm::EdDSA]),
            AlgorithmParameters::OctetKey(_) => ("oct", HMAC.to_vec()),
        };
        // A key that names its algorithm verifies that one only.
        let algorithms = match jwk.common.key_algorithm.and_then(signing_algorithm) {
            Some(alg) if by_family.contains(&alg) => vec![alg],
            Some(alg) => {
                return Err(key_error(source, format!("key {named}: alg {alg:?} does not fit a {family} key")));
            }
            None => by_family,
        };
        keys.push(VerificationKey { kid, key, algorithms, source: source.to_owned(), family });
    }
    Ok(keys)
}

fn signing_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}
