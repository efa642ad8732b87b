//! Bytes on the wire, for what a driver would not send.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Sends `bytes`, then reads until the proxy closes the connection.
async fn exchange(env: &TestEnv, bytes: &[u8]) -> Vec<u8> {
    let mut socket = TcpStream::connect(env.server.proxy_addr).await.unwrap();
    socket.write_all(bytes).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut reply))
        .await
        .expect("the proxy closes the connection")
        .unwrap();
    reply
}

fn packet(code: i32, body: &[u8]) -> Vec<u8> {
    let mut p = ((body.len() + 8) as i32).to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(body);
    p
}

/// The SQLSTATE of the first ErrorResponse in `reply`.
fn error_code(reply: &[u8]) -> String {
    assert_eq!(reply.first(), Some(&b'E'), "expected an ErrorResponse, got {reply:?}");
    let text = String::from_utf8_lossy(&reply[5..]);
    text.split('\0').find_map(|f| f.strip_prefix('C')).expect("a code field").to_owned()
}

#[tokio::test]
async fn ssl_and_gss_requests_are_answered_n() {
    let env = TestEnv::start().await;
    let mut socket = TcpStream::connect(env.server.proxy_addr).await.unwrap();
    socket.write_all(&packet(80_877_103, b"")).await.unwrap();
    let mut answer = [0u8; 1];
    socket.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    socket.write_all(&packet(80_877_104, b"")).await.unwrap();
    socket.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    // Then an ordinary startup goes on in the clear.
    socket.write_all(&packet(196_608, b"user\0hk_teller\0database\0x\0\0")).await.unwrap();
    let mut tag = [0u8; 1];
    socket.read_exact(&mut tag).await.unwrap();
    assert_eq!(&tag, b"R", "authentication request follows");
}

#[tokio::test]
async fn malformed_startup_packets_get_08p01_and_a_closed_connection() {
    let env = TestEnv::start().await;
    for bad in [
        vec![0, 0, 0, 3, 0, 0, 0, 0],        // length below the minimum
        vec![0x7f, 0, 0, 0],                 // absurd length
        packet(196_608, b"user\0hk_teller"), // unterminated
        packet(0x0002_0000, b"\0"),          // protocol 2
        packet(80_877_102, b"\0\0"),         // short cancel request
    ] {
        let reply = exchange(&env, &bad).await;
        assert_eq!(error_code(&reply), "08P01", "{bad:?}");
    }
    // The proxy still serves everyone else.
    assert_eq!(account_ids(&env.connect("hk_teller").await).await, vec![3, 4]);
}

#[tokio::test]
async fn missing_user_and_replication_are_refused() {
    let env = TestEnv::start().await;
    let reply = exchange(&env, &packet(196_608, b"database\0app\0\0")).await;
    assert_eq!(error_code(&reply), "28000");
    let reply = exchange(&env, &packet(196_608, b"user\0hk_teller\0replication\0database\0\0")).await;
    assert_eq!(error_code(&reply), "28000");
}

#[tokio::test]
async fn newer_protocol_minor_version_is_negotiated_down() {
    let env = TestEnv::start().await;
    let mut socket = TcpStream::connect(env.server.proxy_addr).await.unwrap();
    socket.write_all(&packet(0x0003_0002, b"user\0hk_teller\0_pq_.test\0x\0\0")).await.unwrap();
    let mut reply = vec![0u8; 5];
    socket.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[0], b'v');
    let len = i32::from_be_bytes([reply[1], reply[2], reply[3], reply[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    socket.read_exact(&mut body).await.unwrap();
    assert_eq!(&body[..8], &[0, 3, 0, 0, 0, 0, 0, 1], "3.0 and one unrecognised option");
    assert_eq!(&body[8..], b"_pq_.test\0");
}
