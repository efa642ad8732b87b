//! Bytes from both sides through the relay's real core (`RelayCore`, the
//! code `relay.rs` drives): client frames with a small size limit, the
//! messages the policy reads (Q, P, B, F, S) judged by the statement guard
//! and rewritten, the others streamed through in pieces; server frames with
//! pgtenant's own exchanges in flight, errors swapped for refusals,
//! notifications rescoped, ReadyForQuery tracked. The first byte splits the
//! input between the two sides; each side arrives in small chunks, so
//! partial frames are exercised. Neither side may make the core panic, and
//! what goes upstream stays well framed.
#![no_main]

use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgtenant::frontend::attach::OwnExchange;
use pgtenant::frontend::policy::ClientPolicy;
use pgtenant::frontend::relay_core::{RelayCore, ScriptedServerSide};
use pgtenant::guard::Guard;
use pgtenant::protocol::frame::peek_header;

/// Small, so the fuzzer reaches the too-large branch with short inputs.
const MAX_FRAME: usize = 512;

fn guard() -> Arc<Guard> {
    static GUARD: OnceLock<Arc<Guard>> = OnceLock::new();
    Arc::clone(GUARD.get_or_init(|| Arc::new(Guard::new("app.tenant_id"))))
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let (client, server) = rest.split_at(usize::from(split) * rest.len() / 256);
    // Transaction pooling, so the prepared-statement rewriting runs too.
    let mut policy = ClientPolicy::new(
        guard(),
        "pgtenant_marker_".into(),
        "t0.".into(),
        Some(pgtenant::config::SessionFeatures::Pin),
        pgtenant::frontend::statements::StatementNamespaces::of(&[0; 32], "t0"),
        Default::default(),
        7,
    );
    policy.set_server_pid(42);
    let own = vec![OwnExchange::Required, OwnExchange::ClientSetting];
    policy.own_batches_sent(own.len() as u32);
    let mut core = RelayCore::new(policy, MAX_FRAME, BytesMut::new(), BytesMut::new(), own);
    let mut side = ScriptedServerSide { attached: true, transaction_pooling: true, ..Default::default() };
    for chunk in client.chunks(7) {
        core.client_in.extend_from_slice(chunk);
        if core.take_client_frames(&mut side).is_err() {
            break;
        }
    }
    for chunk in server.chunks(5) {
        core.server_in.extend_from_slice(chunk);
        if core.take_server_frames(&mut side).is_err() {
            break;
        }
    }
    // What goes upstream is well framed (but for a client frame still streaming).
    if core.client_frame_left == 0 {
        let mut out = &core.to_server[..];
        while !out.is_empty() {
            let header = peek_header(out, usize::MAX)
                .expect("pgtenant wrote a bad header")
                .expect("pgtenant wrote a partial header");
            assert!(out.len() >= header.frame_len, "pgtenant wrote a truncated frame");
            out = &out[header.frame_len..];
        }
    }
});
