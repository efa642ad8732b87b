//! The relay core fed bytes: what reaches each side, in what order, and when
//! the server session may go back to the pool.

use std::sync::{Arc, OnceLock};

use bytes::BufMut;

use super::*;
use crate::config::SessionFeatures;
use crate::frontend::statements::StatementNamespaces;
use crate::guard::Guard;
use crate::protocol::backend::{error_response, put_cstr, ready_for_query, write_message};
use crate::protocol::frontend;

fn guard() -> Arc<Guard> {
    static GUARD: OnceLock<Arc<Guard>> = OnceLock::new();
    Arc::clone(GUARD.get_or_init(|| Arc::new(Guard::new("app.tenant_id"))))
}

/// A core in session (`None`) or transaction pooling, with `exchanges` of
/// pgtenant's own in flight, and its server side (attached).
fn core_with(features: Option<SessionFeatures>, exchanges: Vec<OwnExchange>) -> (RelayCore, ScriptedServerSide) {
    let mut policy = ClientPolicy::new(
        guard(),
        "pgtenant_refused_t_".into(),
        "t0.".into(),
        features,
        StatementNamespaces::of(&[0; 32], "t"),
        Default::default(),
        7,
    );
    policy.set_server_pid(42);
    policy.own_batches_sent(exchanges.len() as u32);
    let core = RelayCore::new(policy, 1 << 20, BytesMut::new(), BytesMut::new(), exchanges);
    let side = ScriptedServerSide { attached: true, transaction_pooling: features.is_some(), ..Default::default() };
    (core, side)
}

fn core() -> (RelayCore, ScriptedServerSide) {
    core_with(None, Vec::new())
}

fn query(sql: &str) -> BytesMut {
    let mut b = BytesMut::new();
    write_message(&mut b, b'Q', |b| put_cstr(b, sql));
    b
}

fn ready(status: u8) -> BytesMut {
    let mut b = BytesMut::new();
    ready_for_query(&mut b, status);
    b
}

fn complete(tag: &str) -> BytesMut {
    let mut b = BytesMut::new();
    write_message(&mut b, b'C', |b| put_cstr(b, tag));
    b
}

fn error(code: &str, message: &str) -> BytesMut {
    let mut b = BytesMut::new();
    error_response(&mut b, "ERROR", code, message);
    b
}

fn cat(parts: &[&[u8]]) -> BytesMut {
    let mut b = BytesMut::new();
    for part in parts {
        b.extend_from_slice(part);
    }
    b
}

/// The tags of a byte stream's frames.
fn tags(mut bytes: &[u8]) -> String {
    let mut out = String::new();
    while let Ok(Some(header)) = peek_header(bytes, usize::MAX) {
        out.push(header.tag as char);
        bytes = &bytes[header.frame_len.min(bytes.len())..];
    }
    out
}

fn server_says(core: &mut RelayCore, side: &mut ScriptedServerSide, bytes: &[u8]) -> Result<(), RelayEnd> {
    core.server_in.extend_from_slice(bytes);
    core.take_server_frames(side)
}

fn client_says(core: &mut RelayCore, side: &mut ScriptedServerSide, bytes: &[u8]) -> Result<(), RelayEnd> {
    core.client_in.extend_from_slice(bytes);
    core.take_client_frames(side)
}

#[test]
fn a_query_goes_through_whole_and_its_reply_comes_back_with_the_transaction_state() {
    let (mut core, mut side) = core();
    client_says(&mut core, &mut side, &query("SELECT 1")).unwrap();
    assert_eq!(&core.to_server[..], &query("SELECT 1")[..]);
    core.to_server.clear();
    assert!(!core.at_rest(), "sent, not answered");
    let reply = cat(&[&complete("SELECT 1"), &ready(b'T')]);
    server_says(&mut core, &mut side, &reply).unwrap();
    assert_eq!(&core.to_client[..], &reply[..]);
    assert_eq!(core.status, TxnStatus::InTransaction);
    assert!(!core.at_rest(), "inside a transaction the session stays with the client");
    server_says(&mut core, &mut side, &ready(b'I')).unwrap();
    assert!(core.at_rest() && core.answered(), "idle and answered: back to the pool");
}

#[test]
fn replies_to_pgtenants_own_exchanges_are_dropped_and_the_clients_follow() {
    let (mut core, mut side) = core_with(None, vec![OwnExchange::Required, OwnExchange::ClientSetting]);
    let own = cat(&[b"1\0\0\0\x04", b"2\0\0\0\x04", &complete("SELECT 1"), &ready(b'I')]);
    let clients = cat(&[&complete("SELECT 1"), &ready(b'I')]);
    server_says(&mut core, &mut side, &cat(&[&own, &own, &clients])).unwrap();
    assert_eq!(&core.to_client[..], &clients[..]);
    assert!(core.own_pending.is_empty());
}

#[test]
fn a_failed_context_exchange_ends_the_session_and_a_failed_setting_replay_does_not() {
    let (mut core, mut side) = core_with(None, vec![OwnExchange::ClientSetting, OwnExchange::Required]);
    let failed = cat(&[&error("22023", "invalid value for parameter"), &ready(b'I')]);
    server_says(&mut core, &mut side, &failed).unwrap();
    assert!(core.to_client.is_empty(), "a client setting that fails is logged, not shown");
    let end = server_says(&mut core, &mut side, &cat(&[&error("42501", "invalid tenant context"), &ready(b'I')]));
    let Err(RelayEnd::Fatal(error)) = end else { panic!("the context must be there: {end:?}") };
    assert_eq!(error.code, "42501");
    assert_eq!(tags(&core.to_client), "E", "the client is told why");
}

#[test]
fn a_refused_statement_fails_in_its_place_and_the_servers_error_is_swapped_for_pgtenants() {
    let (mut core, mut side) = core();
    client_says(&mut core, &mut side, &query("SET app.tenant_id = 'other'")).unwrap();
    let sent = String::from_utf8_lossy(&core.to_server).into_owned();
    assert!(sent.contains("SELECT pgtenant_refused_t_1") && !sent.contains("other"), "{sent}");
    let marker_error = error("42703", "column \"pgtenant_refused_t_1\" does not exist");
    server_says(&mut core, &mut side, &cat(&[&marker_error, &ready(b'I')])).unwrap();
    let shown = String::from_utf8_lossy(&core.to_client).into_owned();
    assert!(shown.contains("42501") && !shown.contains("pgtenant_refused"), "{shown}");
    assert_eq!(tags(&core.to_client), "EZ");
}

#[test]
fn an_error_in_the_middle_of_a_pipeline_is_forwarded_and_the_batch_ends_idle() {
    let (mut core, mut side) = core_with(Some(SessionFeatures::Pin), Vec::new());
    let mut batch = BytesMut::new();
    for sql in ["SELECT 1", "SELECT 1/0", "SELECT 2"] {
        frontend::parse_unnamed(&mut batch, sql);
        frontend::bind_unnamed(&mut batch, &[]);
        frontend::execute_unnamed(&mut batch);
    }
    frontend::sync(&mut batch);
    client_says(&mut core, &mut side, &batch).unwrap();
    assert_eq!(tags(&core.to_server), "PBEPBEPBES");
    core.to_server.clear();
    assert!(!core.at_rest(), "a batch in flight holds the session");
    let reply = cat(&[
        b"1\0\0\0\x04",
        b"2\0\0\0\x04",
        &complete("SELECT 1"),
        &error("22012", "division by zero"),
        &ready(b'I'),
    ]);
    server_says(&mut core, &mut side, &reply).unwrap();
    assert_eq!(tags(&core.to_client), "12CEZ");
    assert!(core.at_rest());
}

#[test]
fn copy_data_streams_through_in_pieces_without_waiting_for_the_whole_frame() {
    let (mut core, mut side) = core();
    let payload = vec![b'x'; 100_000];
    let mut frame = BytesMut::new();
    write_message(&mut frame, b'd', |b| b.put_slice(&payload));
    server_says(&mut core, &mut side, &frame[..30_000]).unwrap();
    assert_eq!(core.to_client.len(), 30_000, "forwarded as it arrives");
    assert!(core.server_frame_left > 0 && !core.at_rest());
    server_says(&mut core, &mut side, &frame[30_000..]).unwrap();
    server_says(&mut core, &mut side, &cat(&[&complete("COPY 1"), &ready(b'I')])).unwrap();
    assert_eq!(&core.to_client[..frame.len()], &frame[..]);
    assert!(core.at_rest());
    // Client COPY data streams the same way to the server.
    let mut copy_in = BytesMut::new();
    write_message(&mut copy_in, b'd', |b| b.put_slice(&payload));
    client_says(&mut core, &mut side, &copy_in[..10]).unwrap();
    assert_eq!(core.to_server.len(), 10);
    assert!(!core.at_rest(), "half a client frame is in flight");
}

#[test]
fn without_a_server_session_in_transaction_pooling_client_messages_wait_for_one() {
    let (mut core, mut side) = core_with(Some(SessionFeatures::Pin), Vec::new());
    side.attached = false;
    client_says(&mut core, &mut side, &query("SELECT 1")).unwrap();
    assert!(core.wants_server && core.to_server.is_empty() && !core.client_in.is_empty());
    side.attached = true;
    core.attached(BytesMut::from(SCRIPTED_CONTEXT_EXCHANGE), vec![OwnExchange::Required]);
    core.take_client_frames(&mut side).unwrap();
    assert_eq!(tags(&core.to_server), "SQ", "pgtenant's exchange goes first");
}

#[test]
fn terminate_ends_the_relay() {
    let (mut core, mut side) = core();
    let mut bye = BytesMut::new();
    write_message(&mut bye, b'X', |_| {});
    assert!(matches!(client_says(&mut core, &mut side, &bye), Err(RelayEnd::ClientTerminated)));
}

#[test]
fn notifications_are_rescoped_to_the_clients_channel_and_other_tenants_are_dropped() {
    let (mut core, mut side) = core();
    let notification = |channel: &str| {
        let mut b = BytesMut::new();
        write_message(&mut b, b'A', |b| {
            b.put_i32(42);
            put_cstr(b, channel);
            put_cstr(b, "payload");
        });
        b
    };
    server_says(&mut core, &mut side, &cat(&[&notification("t0.jobs"), &notification("t9.jobs")])).unwrap();
    let shown = core.to_client.clone();
    assert_eq!(tags(&shown), "A", "another tenant's channel is dropped");
    assert_eq!(&shown[5..9], &7i32.to_be_bytes(), "the client's own pid, not the server's");
    assert!(
        String::from_utf8_lossy(&shown).contains("jobs\0payload") && !String::from_utf8_lossy(&shown).contains("t0.")
    );
}

#[test]
fn a_parameter_status_under_which_the_guard_would_misread_text_ends_the_session() {
    let (mut core, mut side) = core();
    let mut fine = BytesMut::new();
    crate::protocol::backend::parameter_status(&mut fine, "application_name", "psql");
    server_says(&mut core, &mut side, &fine).unwrap();
    assert_eq!(side.parameters, [("application_name".to_owned(), "psql".to_owned())]);
    let mut off = BytesMut::new();
    crate::protocol::backend::parameter_status(&mut off, "standard_conforming_strings", "off");
    let end = server_says(&mut core, &mut side, &off);
    assert!(matches!(end, Err(RelayEnd::Fatal(ref e)) if e.code == "42501"), "{end:?}");
}

#[test]
fn after_reset_all_the_context_is_put_back_before_the_clients_next_statement() {
    let (mut core, mut side) = core();
    client_says(&mut core, &mut side, &query("RESET ALL")).unwrap();
    core.to_server.clear();
    // Held until the reset is answered.
    client_says(&mut core, &mut side, &query("SELECT 1")).unwrap();
    assert!(core.to_server.is_empty(), "the next statement waits for the context");
    server_says(&mut core, &mut side, &cat(&[&complete("RESET"), &ready(b'I')])).unwrap();
    assert_eq!(side.context_exchanges, 1);
    assert_eq!(&core.to_server[..], SCRIPTED_CONTEXT_EXCHANGE);
    assert_eq!(core.own_pending.len(), 1);
    core.take_client_frames(&mut side).unwrap();
    assert_eq!(tags(&core.to_server), "SQ", "then the held statement");
    server_says(&mut core, &mut side, &ready(b'I')).unwrap();
    assert_eq!(tags(&core.to_client), "CZ", "the exchange's reply never reaches the client");
}

#[test]
fn the_error_of_a_statement_timeout_cancel_becomes_pgtenants_timeout_error() {
    let (mut core, mut side) = core();
    side.cancelling = true;
    server_says(
        &mut core,
        &mut side,
        &cat(&[&error("57014", "canceling statement due to user request"), &ready(b'I')]),
    )
    .unwrap();
    let shown = String::from_utf8_lossy(&core.to_client).into_owned();
    assert!(shown.contains("statement timeout") && !shown.contains("user request"), "{shown}");
}

#[test]
fn settings_and_session_state_reach_the_server_side() {
    let (mut core, mut side) = core_with(Some(SessionFeatures::Pin), Vec::new());
    client_says(&mut core, &mut side, &query("SET application_name = 'x'")).unwrap();
    assert_eq!(side.setting_changes, [("application_name".to_owned(), Some("x".to_owned()))]);
    client_says(&mut core, &mut side, &query("LISTEN jobs")).unwrap();
    assert!(side.pinned, "LISTEN needs its whole session in transaction pooling");
}

#[test]
fn an_error_that_arrives_in_pieces_streams_through() {
    // Found by the frames fuzzer: the statement-timeout check read an
    // ErrorResponse whole before knowing it had all of it.
    let (mut core, mut side) = core();
    let long = error("22P02", &format!("invalid input syntax for type integer: \"{}\"", "x".repeat(100_000)));
    server_says(&mut core, &mut side, &long[..1_000]).unwrap();
    assert_eq!(core.to_client.len(), 1_000, "forwarded as it arrives");
    server_says(&mut core, &mut side, &cat(&[&long[1_000..], &ready(b'I')])).unwrap();
    assert_eq!(&core.to_client[..long.len()], &long[..]);
    assert!(core.at_rest());
}

#[test]
fn after_a_tree_change_the_context_is_installed_again_only_when_nothing_is_in_flight() {
    let (mut core, mut side) = core();
    side.refresh_when_quiet = true;
    // Two pipelined queries: the first one's ReadyForQuery leaves the second in flight.
    client_says(&mut core, &mut side, &cat(&[&query("SELECT 1"), &query("SELECT 2")])).unwrap();
    core.to_server.clear();
    server_says(&mut core, &mut side, &cat(&[&complete("SELECT 1"), &ready(b'I')])).unwrap();
    assert_eq!(side.refreshes, 0, "the second query is still in flight");
    assert!(core.to_server.is_empty());
    // Inside a transaction: not yet either.
    server_says(&mut core, &mut side, &cat(&[&complete("SELECT 1"), &ready(b'T')])).unwrap();
    assert_eq!(side.refreshes, 0, "not inside a transaction");
    client_says(&mut core, &mut side, &query("COMMIT")).unwrap();
    core.to_server.clear();
    server_says(&mut core, &mut side, &cat(&[&complete("COMMIT"), &ready(b'I')])).unwrap();
    assert_eq!(side.refreshes, 1, "quiet and idle: now");
    assert_eq!(&core.to_server[..], SCRIPTED_CONTEXT_EXCHANGE);
    assert_eq!(tags(&core.to_client), "CZCZCZ");
    core.to_client.clear();
    client_says(&mut core, &mut side, &query("SELECT 3")).unwrap();
    server_says(&mut core, &mut side, &cat(&[&ready(b'I'), &complete("SELECT 1"), &ready(b'I')])).unwrap();
    assert_eq!(tags(&core.to_client), "CZ", "the exchange's reply never reaches the client");
    assert_eq!(side.refreshes, 1, "asked once: the side decides whether the tree changed again");
}
