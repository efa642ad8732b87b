//! Logins with a JSON Web Token as the password: every key family, the
//! claims mapped to tenant and access, and every refusal naming its check —
//! each refused login sees nothing; sessions end when the token expires or
//! its tenant is suspended.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use pgtenant::config::{Config, PoolMode};
use serde_json::{json, Value};

use crate::common::http::Admin;
use crate::common::{account_ids, connect_watched, ended, message, sqlstate, value, TestEnv};

#[path = "../fixtures/jwt/sign.rs"]
pub(crate) mod signing;
use signing::{b64, fixture, sign};

pub(crate) const SECRET: &str = "integration-secret-of-at-least-32-bytes";
pub(crate) const ISSUER: &str = "https://idp.test";
pub(crate) const AUDIENCE: &str = "pgtenant";

pub(crate) fn with_tokens(config: &mut Config, mode: PoolMode) {
    config.pool.mode = mode;
    config.jwt.issuer = Some(ISSUER.into());
    config.jwt.audience = Some(AUDIENCE.into());
    config.jwt.secret = Some(SECRET.into());
    config.jwt.public_keys = vec![fixture("rsa_public.pem"), fixture("ec_public.pem"), fixture("ed_public.pem")];
    config.jwt.access_claim = Some("role".into());
    config.jwt.access_roles = [
        ("viewer".to_owned(), pgtenant::tenancy::Access::Readonly),
        ("editor".to_owned(), pgtenant::tenancy::Access::Readwrite),
    ]
    .into();
    config.jwt.allow_plaintext_loopback = true;
}

pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub(crate) fn claims(tenant: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "sub": "alice@example.com", "tenant_id": tenant,
           "role": "editor"})
}

#[tokio::test]
async fn a_token_login_sees_exactly_its_tenants_rows_in_both_pool_modes() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let env = TestEnv::start_with(|c| with_tokens(c, mode)).await;
        let expected = account_ids(&env.connect("hk_teller").await).await;
        let hk_id = value(&env.connect("hk_teller").await, "SELECT pgtenant.current_tenant()").await;
        for (alg, tenant) in [
            (Algorithm::HS256, "hsbc-hk"),
            (Algorithm::RS256, hk_id.as_str()),
            (Algorithm::PS384, "hsbc-hk"),
            (Algorithm::ES256, "hsbc-hk"),
            (Algorithm::EdDSA, hk_id.as_str()),
        ] {
            let client = env
                .try_connect("jwt", &sign(alg, &claims(tenant), SECRET))
                .await
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(account_ids(&client).await, expected, "{mode:?} {alg:?}");
            assert_eq!(value(&client, "SELECT pgtenant.current_tenant()").await, hk_id);
            let forged = client
                .simple_query("SELECT set_config('app.tenant_id', '00000000-0000-0000-0000-000000000000', false)")
                .await;
            assert!(forged.is_err(), "the context stays out of the client's reach");
            assert_eq!(account_ids(&client).await, expected);
        }
        // A role the access mapping calls readonly: PostgreSQL's privileges refuse the write.
        let mut viewer = claims("hsbc-hk");
        viewer["role"] = json!("viewer");
        let client = env.try_connect("jwt", &sign(Algorithm::HS256, &viewer, SECRET)).await.unwrap();
        assert_eq!(account_ids(&client).await, expected);
        let write = client
            .simple_query("UPDATE accounts SET holder = holder")
            .await
            .expect_err("a readonly token cannot write");
        assert_eq!(sqlstate(&write), "42501", "{mode:?}");
    }
}

#[tokio::test]
async fn refused_tokens_name_the_failed_check_and_get_no_session() {
    let env = TestEnv::start_with(|c| with_tokens(c, PoolMode::Transaction)).await;
    let refused = |token: String| {
        let env = &env;
        async move {
            match env.try_connect("jwt", &token).await {
                Ok(client) => panic!("let in with a bad token; sees {:?}", account_ids(&client).await),
                Err(e) => (sqlstate(&e), message(&e)),
            }
        }
    };
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims("hsbc-hk");
        change(&mut c);
        sign(Algorithm::HS256, &c, SECRET)
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("alg none", format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims("hsbc"))), "28P01", "unsigned"),
        ("expired", with(&|c| c["exp"] = json!(now() - 3600)), "28P01", "expired"),
        ("not yet valid", with(&|c| c["nbf"] = json!(now() + 3600)), "28P01", "not valid yet"),
        ("wrong issuer", with(&|c| c["iss"] = json!("https://evil.test")), "28P01", "issuer"),
        ("wrong audience", with(&|c| c["aud"] = json!("another-app")), "28P01", "audience"),
        ("no tenant", with(&|c| c["tenant_id"] = Value::Null), "28P01", "tenant_id"),
        ("unknown tenant", with(&|c| c["tenant_id"] = json!("no-such-bank")), "28000", "does not exist"),
        ("not a token", "hunter2".to_owned(), "28P01", "not a JSON Web Token"),
    ];
    for (case, token, code, words) in cases {
        let (got_code, got_message) = refused(token).await;
        assert_eq!(got_code, code, "{case}: {got_message}");
        assert!(got_message.contains(words), "{case}: {got_message}");
    }

    // A payload changed after signing: another tenant's id under hsbc-hk's signature.
    let token = sign(Algorithm::RS256, &claims("hsbc-hk"), SECRET);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = b64(&claims("barclays"));
    let (code, text) = refused(parts.join(".")).await;
    assert_eq!((code.as_str(), text.contains("signature")), ("28P01", true), "{text}");

    // Key confusion: HS256 keyed with the RSA public key.
    let public = std::fs::read(fixture("rsa_public.pem")).unwrap();
    let confused =
        encode(&Header::new(Algorithm::HS256), &claims("barclays"), &EncodingKey::from_secret(&public)).unwrap();
    let (code, text) = refused(confused).await;
    assert_eq!((code.as_str(), text.contains("signature")), ("28P01", true), "{text}");

    // A suspended tenant's token gets no session.
    let admin = Admin::new(env.server.admin_addr, &env.config.admin.token);
    assert_eq!(admin.patch("/v1/tenants/barclays", &json!({"status": "suspended"})).await.status, 200);
    let (code, text) = refused(sign(Algorithm::HS256, &claims("barclays"), SECRET)).await;
    assert_eq!((code.as_str(), text.contains("suspended")), ("28000", true), "{text}");
}

#[tokio::test]
async fn plain_connections_need_the_loopback_setting() {
    let env = TestEnv::start_with(|c| {
        with_tokens(c, PoolMode::Transaction);
        c.jwt.allow_plaintext_loopback = false;
    })
    .await;
    let e =
        env.try_connect("jwt", &sign(Algorithm::HS256, &claims("hsbc"), SECRET)).await.expect_err("no TLS, no token");
    assert_eq!(sqlstate(&e), "28000");
    assert!(message(&e).contains("TLS"), "{}", message(&e));
    // Password logins are untouched.
    env.connect("hk_teller").await;
}

#[tokio::test]
async fn a_token_session_ends_when_its_token_expires_and_when_its_tenant_is_suspended() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let env = TestEnv::start_with(|c| {
            with_tokens(c, mode);
            c.jwt.leeway_secs = 0;
        })
        .await;
        let mut short = claims("hsbc-hk");
        short["exp"] = json!(now() + 3);
        let (client, watch) = connect_watched(&env.url("jwt", &sign(Algorithm::HS256, &short, SECRET))).await;
        assert!(!account_ids(&client).await.is_empty());
        let (code, text) = ended(watch).await;
        assert_eq!(code, "28000", "{mode:?}: {text}");
        assert!(text.contains("expired"), "{text}");

        // Suspension ends a token session as it ends a password login's; a
        // token session of another tenant is not mistaken for a deleted login.
        let (_london, london_watch) =
            connect_watched(&env.url("jwt", &sign(Algorithm::HS256, &claims("hsbc-london"), SECRET))).await;
        let (barclays, barclays_watch) =
            connect_watched(&env.url("jwt", &sign(Algorithm::HS256, &claims("barclays"), SECRET))).await;
        let admin = Admin::new(env.server.admin_addr, &env.config.admin.token);
        assert_eq!(admin.patch("/v1/tenants/hsbc-london", &json!({"status": "suspended"})).await.status, 200);
        let (code, text) = ended(london_watch).await;
        assert_eq!(code, "57P01");
        assert!(text.contains("suspended"), "{text}");
        assert!(!account_ids(&barclays).await.is_empty(), "{mode:?}: the other token session goes on");
        let sessions = admin.get("/v1/sessions").await.json();
        assert!(
            sessions.as_array().unwrap().iter().any(|s| s["username"] == "jwt" && s["subject"] == "alice@example.com"),
            "{sessions}"
        );
        assert!(!barclays_watch.is_finished());
    }
}

#[tokio::test]
async fn the_admin_api_shows_the_keys_but_no_secret() {
    let env = TestEnv::start_with(|c| with_tokens(c, PoolMode::Transaction)).await;
    let admin = Admin::new(env.server.admin_addr, &env.config.admin.token);
    let reply = admin.get("/v1/jwt").await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["enabled"], true);
    assert_eq!(body["issuer"], ISSUER);
    let families: Vec<&str> = body["keys"].as_array().unwrap().iter().map(|k| k["family"].as_str().unwrap()).collect();
    assert_eq!(families, ["oct", "RSA", "EC", "OKP"]);
    assert!(!reply.text().contains(SECRET) && !reply.text().contains("BEGIN"), "{}", reply.text());
    let openapi = admin.get("/openapi.json").await.json();
    assert!(openapi["paths"]["/v1/jwt"]["get"].is_object());
}

/// A JWKS endpoint on 127.0.0.1: serves the current document, counts the
/// fetches, and can be stopped.
struct JwksServer {
    url: String,
    document: std::sync::Arc<std::sync::Mutex<Value>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(document: Value) -> JwksServer {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
        let document = std::sync::Arc::new(std::sync::Mutex::new(document));
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (served, counted) = (document.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let body = served.lock().unwrap().to_string();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        JwksServer { url, document, fetches, task }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn jwks_of(kids: &[&str]) -> Value {
    use base64::Engine;
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
    json!({"keys": kids.iter().map(|kid| json!({"kty": "oct", "kid": kid, "alg": "HS256", "k": k})).collect::<Vec<_>>()})
}

fn sign_with_kid(kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    encode(&header, claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

#[tokio::test]
async fn keys_from_a_jwks_url_rotate_by_kid_are_rate_limited_and_outlive_the_server() {
    let jwks = JwksServer::start(jwks_of(&["k1"])).await;
    let env = TestEnv::start_with(|c| {
        with_tokens(c, PoolMode::Transaction);
        c.jwt.secret = None;
        c.jwt.public_keys = Vec::new();
        c.jwt.jwks_url = Some(jwks.url.clone());
        c.jwt.jwks_refresh_secs = 3600;
    })
    .await;
    let expected = account_ids(&env.connect("hk_teller").await).await;
    assert_eq!(jwks.fetches(), 1, "fetched once at start");
    let k1 = env.try_connect("jwt", &sign_with_kid("k1", &claims("hsbc-hk"))).await.expect("k1 from the URL");
    assert_eq!(account_ids(&k1).await, expected);
    assert_eq!(jwks.fetches(), 1, "a known kid needs no fetch");

    // The identity provider rotates to k2: the first token naming it makes pgtenant fetch again.
    *jwks.document.lock().unwrap() = jwks_of(&["k2"]);
    let k2 = env.try_connect("jwt", &sign_with_kid("k2", &claims("hsbc-hk"))).await.expect("k2 after rotation");
    assert_eq!(account_ids(&k2).await, expected);
    assert_eq!(jwks.fetches(), 2);

    // Made-up kids do not make it fetch again within jwt.jwks_refresh_secs.
    for kid in ["k3", "k4", "k5"] {
        let e = env.try_connect("jwt", &sign_with_kid(kid, &claims("hsbc-hk"))).await.expect_err("unknown kid");
        assert_eq!(sqlstate(&e), "28P01");
        assert!(message(&e).contains(&format!("\"{kid}\"")), "{}", message(&e));
    }
    assert_eq!(jwks.fetches(), 2, "rate-limited");

    // The endpoint goes away: the keys fetched last keep working.
    let JwksServer { task, .. } = jwks;
    task.abort();
    let _ = task.await;
    let again = env.try_connect("jwt", &sign_with_kid("k2", &claims("hsbc-hk"))).await.expect("cached k2");
    assert_eq!(account_ids(&again).await, expected);
    let listed = Admin::new(env.server.admin_addr, &env.config.admin.token).get("/v1/jwt").await.json();
    assert_eq!(listed["keys"][0]["kid"], "k2", "{listed}");
}

#[tokio::test]
async fn psql_logs_in_with_a_token_in_pgpassword() {
    let env = TestEnv::start_with(|c| with_tokens(c, PoolMode::Transaction)).await;
    let expected = account_ids(&env.connect("hk_teller").await).await;
    let token = sign(Algorithm::ES256, &claims("hsbc-hk"), SECRET);
    let conninfo = format!(
        "host={} port={} user=jwt dbname={}",
        env.server.proxy_addr.ip(),
        env.server.proxy_addr.port(),
        env.database
    );
    let mut command = std::process::Command::new("psql");
    command
        .arg(&conninfo)
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-c",
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM accounts",
        ])
        .env("PGPASSWORD", &token);
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("psql on PATH");
    let shown = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let wanted: Vec<String> = expected.iter().map(i64::to_string).collect();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(shown, wanted.join(","));
}

#[tokio::test]
async fn asyncpg_pools_of_two_tenants_tokens_share_the_server_sessions_and_see_only_their_rows() {
    let env = TestEnv::start_with(|c| {
        with_tokens(c, PoolMode::Transaction);
        c.pool.size = 2;
    })
    .await;
    let ids = |client: tokio_postgres::Client| async move {
        account_ids(&client).await.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
    };
    let (hk_ids, barclays_ids) =
        (ids(env.connect("hk_teller").await).await, ids(env.connect("barclays_ops").await).await);
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/asyncpg_check.py");
    let mut command = std::process::Command::new("python3");
    command
        .arg(script)
        .arg(env.url("jwt", &sign(Algorithm::RS256, &claims("hsbc-hk"), SECRET)))
        .arg(env.url("jwt", &sign(Algorithm::EdDSA, &claims("barclays"), SECRET)))
        .args([&hk_ids, &barclays_ids]);
    let out = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("python3 on PATH");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "asyncpg with tokens failed:\n{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "ok");
}
