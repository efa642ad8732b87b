use std::collections::BTreeMap;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

use super::*;

#[path = "../../tests/fixtures/jwt/sign.rs"]
mod signing;
use signing::{b64, fixture, sign};

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

fn config() -> JwtConfig {
    JwtConfig {
        issuer: Some("https://idp.test".into()),
        audience: Some("pgtenant".into()),
        secret: Some(SECRET.into()),
        public_keys: vec![fixture("rsa_public.pem"), fixture("ec_public.pem"), fixture("ed_public.pem")],
        ..JwtConfig::default()
    }
}

fn verifier(config: JwtConfig) -> TokenVerifier {
    TokenVerifier::from_config(&config).unwrap().unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims() -> Value {
    json!({"iss": "https://idp.test", "aud": "pgtenant", "exp": now() + 600, "sub": "alice", "tenant_id": "hsbc"})
}

#[tokio::test]
async fn every_configured_family_verifies_and_maps_the_claims() {
    let v = verifier(config());
    for alg in [
        Algorithm::HS256,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::RS512,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ] {
        let token = v.verify(&sign(alg, &claims(), SECRET)).await.unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(token.tenant, "hsbc");
        assert_eq!(token.subject.as_deref(), Some("alice"));
        assert_eq!(token.access, Access::Readwrite);
    }
}

#[tokio::test]
async fn each_failed_check_is_named() {
    let v = verifier(config());
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims();
        change(&mut c);
        sign(Algorithm::HS256, &c, SECRET)
    };
    let cases: Vec<(String, Result<(), TokenError>)> = vec![
        (with(&|c| c["exp"] = json!(now() - 120)), Err(TokenError::Expired)),
        (with(&|c| c["nbf"] = json!(now() + 600)), Err(TokenError::NotYetValid)),
        (with(&|c| c["iss"] = json!("https://evil.test")), Err(TokenError::WrongIssuer)),
        (with(&|c| c["aud"] = json!("someone-else")), Err(TokenError::WrongAudience)),
        (with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))), Err(TokenError::MissingClaim("exp".into()))),
        (
            with(&|c| drop(c.as_object_mut().unwrap().remove("tenant_id"))),
            Err(TokenError::MissingClaim("tenant_id".into())),
        ),
        (with(&|c| c["exp"] = json!(now() - 10)), Ok(())),
    ];
    for (token, expected) in cases {
        assert_eq!(v.verify(&token).await.map(drop), expected);
    }
}

#[tokio::test]
async fn unsigned_tampered_and_confused_tokens_are_refused() {
    let v = verifier(config());
    let unsigned = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims()));
    assert_eq!(v.verify(&unsigned).await, Err(TokenError::Unsigned));
    let unsigned = format!("{}.{}.", b64(&json!({"alg": "None"})), b64(&claims()));
    assert_eq!(v.verify(&unsigned).await, Err(TokenError::Unsigned));

    let token = sign(Algorithm::RS256, &claims(), SECRET);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut other = claims();
    other["tenant_id"] = json!("barclays");
    parts[1] = b64(&other);
    assert_eq!(v.verify(&parts.join(".")).await, Err(TokenError::BadSignature), "a tampered payload");

    // Key confusion: HS256 "signed" with the RSA public key as the secret.
    let public = std::fs::read(fixture("rsa_public.pem")).unwrap();
    let confused = encode(&Header::new(Algorithm::HS256), &claims(), &EncodingKey::from_secret(&public)).unwrap();
    assert_eq!(v.verify(&confused).await, Err(TokenError::BadSignature));
    let only_rsa = JwtConfig { secret: None, public_keys: vec![fixture("rsa_public.pem")], ..config() };
    assert_eq!(verifier(only_rsa).verify(&confused).await, Err(TokenError::AlgorithmNotAllowed("HS256".into())));

    assert_eq!(v.verify("not.a.token").await, Err(TokenError::Malformed));
    assert_eq!(v.verify("two.parts").await, Err(TokenError::Malformed));
    assert_eq!(v.verify("").await, Err(TokenError::Malformed));
}

#[tokio::test]
async fn a_jwks_key_is_chosen_by_kid_and_an_unknown_kid_is_refused() {
    let dir = std::env::temp_dir().join(format!("pgtenant-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
    std::fs::write(&jwks, json!({"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": k}]}).to_string()).unwrap();
    let v = verifier(JwtConfig { secret: None, public_keys: Vec::new(), jwks_file: Some(jwks), ..config() });
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    assert!(v.verify(&encode(&header, &claims(), &key).unwrap()).await.is_ok());
    header.kid = Some("k2".into());
    assert_eq!(v.verify(&encode(&header, &claims(), &key).unwrap()).await, Err(TokenError::UnknownKey("k2".into())));
    let mut header = Header::new(Algorithm::HS512);
    header.kid = Some("k1".into());
    assert_eq!(
        v.verify(&encode(&header, &claims(), &key).unwrap()).await,
        Err(TokenError::AlgorithmNotAllowed("HS512".into())),
        "the key names its algorithm"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn nested_tenant_claims_and_access_roles() {
    let v = verifier(JwtConfig {
        tenant_claim: "org.id".into(),
        access_claim: Some("roles".into()),
        access_roles: BTreeMap::from([("viewer".into(), Access::Readonly), ("admin".into(), Access::Readwrite)]),
        ..config()
    });
    let mut c = claims();
    c["org"] = json!({"id": "hsbc-hk"});
    c["roles"] = json!(["viewer"]);
    let token = v.verify(&sign(Algorithm::HS256, &c, SECRET)).await.unwrap();
    assert_eq!((token.tenant.as_str(), token.access), ("hsbc-hk", Access::Readonly));
    c["roles"] = json!(["viewer", "admin"]);
    assert_eq!(v.verify(&sign(Algorithm::HS256, &c, SECRET)).await.unwrap().access, Access::Readwrite);
    c["roles"] = json!("readonly");
    assert_eq!(v.verify(&sign(Algorithm::HS256, &c, SECRET)).await.unwrap().access, Access::Readonly);
    c["roles"] = json!(["intern"]);
    assert!(matches!(v.verify(&sign(Algorithm::HS256, &c, SECRET)).await, Err(TokenError::BadClaim(..))));
    c["org"] = json!({"id": 7});
    assert!(matches!(v.verify(&sign(Algorithm::HS256, &c, SECRET)).await, Err(TokenError::BadClaim(..))));
}
