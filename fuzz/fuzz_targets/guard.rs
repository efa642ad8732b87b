//! Arbitrary SQL text through the statement guard: pre-scan, cache, the
//! pg_query parse and the tree/token walk; then the rewrite of LISTEN/NOTIFY
//! channels that the message policy applies to allowed statements.
//!
//! Oracles: the cached verdict equals a fresh inspection, and an allowed
//! statement that skipped the parser contains nothing the parser would refuse.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pgtenant::guard::{inspect, prescan, rewrite_channels, Guard};

const TENANT_SETTING: &str = "app.tenant_id";

fn guard() -> &'static Guard {
    static GUARD: OnceLock<Guard> = OnceLock::new();
    GUARD.get_or_init(|| Guard::new(TENANT_SETTING))
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    let verdict = guard().check(sql);
    if prescan::needs_parse(sql) {
        assert_eq!(*verdict, inspect::inspect(sql, TENANT_SETTING), "cached verdict differs");
    } else {
        // The pre-scan is a superset filter: what it lets past, the parser allows.
        let parsed = inspect::inspect(sql, TENANT_SETTING);
        assert!(
            parsed.denial.is_none() || parsed.denial.as_ref().is_some_and(|d| d.code == "42601"),
            "pre-scan skipped a statement the parser refuses: {sql:?} -> {parsed:?}"
        );
        assert!(!parsed.resets_context && parsed.channel_statements.is_empty());
    }
    if verdict.denial.is_none() && !verdict.channel_statements.is_empty() {
        let rewritten = rewrite_channels(sql, &verdict.channel_statements, "t0123456789ab.");
        // The rewrite must stay something the guard allows.
        assert!(guard().check(&rewritten).denial.is_none(), "rewrite of {sql:?} is refused: {rewritten:?}");
    }
});
