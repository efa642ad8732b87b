//! The untagged initial packets, read as `client::read_startup` reads them:
//! `declared_len` on the front of the buffer, `parse` on each whole packet,
//! then `upstream_params` on a StartupMessage's parameters.
//!
//! Oracles besides "no panic": a declared length is always within bounds, and
//! nothing `upstream_params` accepts names a setting that carries the tenant
//! context (the proxy would forward it to the server).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgtenant::frontend::params::upstream_params;
use pgtenant::protocol::startup::{declared_len, parse, InitialPacket, MAX_STARTUP_PACKET};

const TENANT_SETTING: &str = "app.tenant_id";

fuzz_target!(|data: &[u8]| {
    // Also parse the input as one packet, whatever its length field says.
    let _ = parse(data);

    let mut rest = data;
    // A client may send several initial packets (SSLRequest, then StartupMessage).
    while let Ok(Some(len)) = declared_len(rest) {
        assert!((8..=MAX_STARTUP_PACKET).contains(&len), "declared_len accepted {len}");
        if rest.len() < len {
            return;
        }
        let (packet, tail) = rest.split_at(len);
        rest = tail;
        let Ok(InitialPacket::Startup(startup)) = parse(packet) else { continue };
        let Ok(forwarded) = upstream_params(&startup.params, TENANT_SETTING) else { continue };
        for (name, _) in &forwarded {
            // Startup keys are matched exactly, as PostgreSQL does: `uSer` is
            // not the user but a setting the server will reject as unknown.
            assert!(!matches!(name.as_str(), "user" | "database" | "options" | "replication"));
            assert!(!name.starts_with("_pq_."));
            // Setting names are case-insensitive on the server.
            let lower = name.to_ascii_lowercase();
            assert!(
                !matches!(lower.as_str(), "role" | "session_authorization" | TENANT_SETTING)
                    && !lower.starts_with("pgtenant."),
                "a reserved setting would reach the server: {name}"
            );
        }
    }
});
