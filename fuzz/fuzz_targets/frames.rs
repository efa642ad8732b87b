//! Client bytes through the relay's framing and message policy, as
//! `relay::take_client_frames` drives them: `peek_header` with a small size
//! limit, the messages the policy reads (Q, P, F, S) handed whole to
//! `ClientPolicy::client_frame` (which runs the statement guard), the others
//! skipped by their declared length. Server-side readers that take raw frames
//! (`server_error`, `notification`) see the same frames.
#![no_main]

use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgtenant::frontend::policy::ClientPolicy;
use pgtenant::guard::Guard;
use pgtenant::protocol::frame::{peek_header, HEADER_LEN};

/// Small, so the fuzzer reaches the too-large branch with short inputs.
const MAX_FRAME: usize = 512;

fn guard() -> Arc<Guard> {
    static GUARD: OnceLock<Arc<Guard>> = OnceLock::new();
    Arc::clone(GUARD.get_or_init(|| Arc::new(Guard::new("app.tenant_id"))))
}

fuzz_target!(|data: &[u8]| {
    // Transaction pooling, so the prepared-statement rewriting runs too.
    let mut policy = ClientPolicy::new(
        guard(),
        "pgtenant_marker_".into(),
        "t0.".into(),
        Some(pgtenant::config::SessionFeatures::Pin),
        [0; 32],
        Default::default(),
        7,
    );
    policy.set_server_pid(42);
    let mut server_statements = pgtenant::frontend::statements::ServerStatements::default();
    let mut to_server = BytesMut::new();
    let mut rest = data;
    loop {
        let header = match peek_header(rest, MAX_FRAME) {
            Ok(Some(header)) => header,
            Ok(None) | Err(_) => break,
        };
        assert!(header.frame_len >= HEADER_LEN && header.frame_len <= MAX_FRAME);
        if header.tag == b'X' {
            break;
        }
        if rest.len() < header.frame_len {
            // The relay streams an uninspected frame's partial bytes; an
            // inspected one waits for more. Either way, this input ends here.
            break;
        }
        let (frame, tail) = rest.split_at(header.frame_len);
        rest = tail;
        if policy.inspects(header.tag) {
            if policy.client_frame(frame, &mut to_server, Some(&mut server_statements)).is_err() {
                break;
            }
        } else {
            to_server.extend_from_slice(frame);
        }
        // Feed the same bytes to the readers of server frames.
        let _ = policy.server_error(frame);
        let _ = policy.notification(frame);
        let _ = policy.client_ready(false);
    }
    // What goes upstream is itself well framed.
    let mut out = &to_server[..];
    while !out.is_empty() {
        let header = peek_header(out, usize::MAX)
            .expect("pgtenant wrote a bad header")
            .expect("pgtenant wrote a partial header");
        assert!(out.len() >= header.frame_len, "pgtenant wrote a truncated frame");
        out = &out[header.frame_len..];
    }
});
