//! The SCRAM-SHA-256 server against a fixed verifier, with arbitrary
//! client-first and client-final messages (split at the first NUL byte).
//! `@NONCE@` in the final message is replaced by the combined nonce, so the
//! fuzzer also reaches the proof check.
//!
//! Oracle: without the password no input authenticates.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pgtenant::frontend::auth::scram::{Exchange, Verifier};

/// The verifier of password "fuzz-secret" with salt "pgtenant-fuzz-salt" and
/// 4096 iterations; fixed, so a crash replays exactly.
const VERIFIER: &str = "SCRAM-SHA-256$4096:cGd0ZW5hbnQtZnV6ei1zYWx0$\
Ddidp3+KrlkdFGnGKNzoT+P+S4bFCk4/Ux+ZXMzVj3k=:ZLDmWWbItKOypI1FOWgnnCPjSZb2p9Fyy1K80lRKd4Q=";

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| Verifier::parse(VERIFIER).expect("the fixed verifier parses"))
}

fuzz_target!(|data: &[u8]| {
    let (first, last) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let (Ok(first), Ok(last)) = (std::str::from_utf8(first), std::str::from_utf8(last)) else { return };
    let Ok((exchange, server_first)) = Exchange::start(verifier().clone(), first, false, None) else { return };
    let nonce = server_first.strip_prefix("r=").and_then(|s| s.split(',').next()).unwrap_or_default();
    let last = last.replace("@NONCE@", nonce);
    assert!(exchange.finish(&last).is_err(), "authenticated without the password: {first:?} / {last:?}");
});
