//! TLS with rustls: SSLRequest, direct TLS, verify-full against a test CA,
//! `tls.required`, SCRAM-SHA-256-PLUS and cleartext passwords only over TLS.
//!
//! The fixtures in tests/fixtures/tls were made with:
//!   openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 36500 -subj "/CN=pgtenant test CA" -sha256
//!   openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost"
//!   openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 36500 -sha256 -extfile server.ext

use std::path::PathBuf;
use std::sync::Arc;

use bytes::BytesMut;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::common::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls").join(name)
}

async fn tls_env(required: bool, cleartext: bool) -> TestEnv {
    TestEnv::start_with(|config| {
        config.tls.cert = Some(fixture("server.crt"));
        config.tls.key = Some(fixture("server.key"));
        config.tls.required = required;
        config.tls.cleartext_password = cleartext;
    })
    .await
}

/// psql against the proxy with extra connection parameters; (success, stdout, stderr).
async fn psql_with(env: &TestEnv, user: &str, params: &str, sql: &str) -> (bool, String, String) {
    let conninfo = format!(
        "host=localhost port={} dbname={} user={user} password={PASSWORD} {params}",
        env.server.proxy_addr.port(),
        env.database
    );
    psql(&conninfo, &["-c", sql]).await
}

fn connector() -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(fixture("ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// Sends a startup packet over `stream` and returns the authentication request code.
async fn auth_request<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    env: &TestEnv,
) -> (i32, Vec<u8>) {
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", "hk_teller"), ("database", env.database.as_str())],
        &mut out,
    )
    .unwrap();
    stream.write_all(&out).await.unwrap();
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await.unwrap();
    assert_eq!(header[0], b'R', "an authentication request");
    let len = i32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await.unwrap();
    (i32::from_be_bytes(body[..4].try_into().unwrap()), body[4..].to_vec())
}

#[tokio::test]
async fn psql_verify_full_against_the_test_ca() {
    let env = tls_env(false, false).await;
    let root = fixture("ca.crt");
    let params = format!("sslmode=verify-full sslrootcert={}", root.display());
    let (ok, out, err) =
        psql_with(&env, "hk_teller", &params, "SELECT string_agg(id::text, ',' ORDER BY id) FROM accounts").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "3,4");
    let (ok, out, _) = psql_with(&env, "hk_teller", &params, "\\conninfo").await;
    assert!(ok);
    assert!(out.contains("SSL connection"), "{out}");
}

#[tokio::test]
async fn scram_channel_binding_over_tls() {
    let env = tls_env(false, false).await;
    let params = format!("sslmode=verify-full sslrootcert={} channel_binding=require", fixture("ca.crt").display());
    let (ok, out, err) = psql_with(&env, "barclays_ops", &params, "SELECT count(*) FROM accounts").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "3");
    // The mechanisms offered over TLS include the channel-bound one.
    let tcp = TcpStream::connect(env.server.proxy_addr).await.unwrap();
    let mut tcp = tcp;
    let mut ssl_request = Vec::new();
    ssl_request.extend_from_slice(&8i32.to_be_bytes());
    ssl_request.extend_from_slice(&80_877_103i32.to_be_bytes());
    tcp.write_all(&ssl_request).await.unwrap();
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let mut tls = connector().connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let (code, mechanisms) = auth_request(&mut tls, &env).await;
    assert_eq!(code, 10);
    assert_eq!(mechanisms, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
}

#[tokio::test]
async fn tls_required_refuses_plain_connections() {
    let env = tls_env(true, false).await;
    let (ok, _, err) = psql_with(&env, "hk_teller", "sslmode=disable", "SELECT 1").await;
    assert!(!ok);
    assert!(err.contains("pgtenant requires TLS"), "{err}");
    let (ok, out, err) = psql_with(&env, "hk_teller", "sslmode=require", "SELECT 1").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1");
}

#[tokio::test]
async fn direct_tls_with_alpn() {
    let env = tls_env(false, false).await;
    let tcp = TcpStream::connect(env.server.proxy_addr).await.unwrap();
    let mut tls = connector().connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    let (code, _) = auth_request(&mut tls, &env).await;
    assert_eq!(code, 10, "SASL after a direct TLS handshake");
}

#[tokio::test]
async fn cleartext_password_only_over_tls() {
    let env = tls_env(false, true).await;
    // Over TLS: AuthenticationCleartextPassword, and psql logs in with it.
    let tcp = TcpStream::connect(env.server.proxy_addr).await.unwrap();
    let mut tls = connector().connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let (code, _) = auth_request(&mut tls, &env).await;
    assert_eq!(code, 3);
    let (ok, out, err) = psql_with(&env, "hk_teller", "sslmode=require", "SELECT count(*) FROM accounts").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "2");
    let (ok, _, err) = psql_with(&env, "hk_teller", "sslmode=require password=wrong-password", "SELECT 1").await;
    assert!(!ok);
    assert!(err.contains("password authentication failed"), "{err}");
    // In the clear: SCRAM, never a cleartext password.
    let mut plain = TcpStream::connect(env.server.proxy_addr).await.unwrap();
    let (code, _) = auth_request(&mut plain, &env).await;
    assert_eq!(code, 10);
}

/// A URL to the test cluster over TCP with TLS.
fn tcp_url(env: &TestEnv, user: &str, params: &str) -> String {
    let port = env.cluster.tcp_port.expect("the test cluster listens on TCP");
    format!("postgres://{user}@localhost:{port}/{}?{params}", env.database)
}

#[tokio::test]
async fn upstream_and_control_over_tls_verify_full() {
    let root = fixture("ca.crt");
    let params = format!("sslmode=verify-full&sslrootcert={}", root.display());
    let tls_env = TestEnv::start_with(|config| {
        // The harness names the database in the socket URLs; keep it, switch to TCP + TLS.
        let database = config.upstream.url.rsplit('/').next().unwrap_or_default().to_owned();
        let port = cluster_tcp_port();
        config.upstream.url = format!("postgres://pgtenant_app@localhost:{port}/{database}?{params}");
        config.upstream.readonly_url = None;
        config.control.url = format!("postgres://pgtenant_owner@localhost:{port}/{database}?{params}");
    })
    .await;
    let hk = tls_env.connect("hk_teller").await;
    assert_eq!(account_ids(&hk).await, vec![3, 4]);
    let direct = tls_env.superuser().await;
    let encrypted: i64 = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
              WHERE a.usename IN ('pgtenant_app', 'pgtenant_owner') AND s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 2, "tenant and control sessions are encrypted ({encrypted})");
}

fn cluster_tcp_port() -> u16 {
    CLUSTER_TCP_PORT.get().copied().expect("the cluster is started before the adjust closure runs")
}

#[tokio::test]
async fn upstream_tls_refuses_a_certificate_it_cannot_verify() {
    // The server certificate itself is no CA: verification must fail.
    let params = format!("sslmode=verify-full&sslrootcert={}", fixture("server.crt").display());
    let env = TestEnv::start().await;
    let mut config = env.config.clone();
    config.upstream.url = tcp_url(&env, "pgtenant_app", &params);
    config.proxy.listen = "127.0.0.1:0".parse().unwrap();
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    let server = pgtenant::server::Server::start(&config).await.unwrap();
    let url = format!("postgres://hk_teller:{PASSWORD}@{}/{}", server.proxy_addr, env.database);
    let err = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok(_) => panic!("an unverifiable upstream must not be used"),
        Err(e) => e,
    };
    assert_eq!(sqlstate(&err), "08006");
}
