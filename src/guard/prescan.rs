//! The cheap first pass: does a statement contain anything worth parsing?
//!
//! A superset filter: every statement the guard could refuse or rewrite
//! contains at least one of these tokens; most application statements
//! contain none and skip the parser. False positives only cost a parse.

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// Substrings (ASCII case-insensitive) that send a statement to the parser.
/// `set` is handled separately: see [`needs_parse`].
const RISKY: &[&str] = &[
    "set_config",
    "set_context",
    "context_payload",
    "assume",
    "release",
    "role",
    "authorization",
    "do",
    "function",
    "procedure",
    "alter",
    "listen",
    "prepare",
    "execute",
    "hold",
    "notify",
    "copy",
    "explain",
    "discard",
    "deallocate",
    "load",
    "lo_",
    "loread",
    "lowrite",
    "pg_",
    "xml",
    "dblink",
    "u&",
    "uescape",
    "--",
    "/*",
    "\\",
];

fn risky() -> &'static AhoCorasick {
    static RISKY_TOKENS: OnceLock<AhoCorasick> = OnceLock::new();
    RISKY_TOKENS.get_or_init(|| {
        AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(RISKY)
            .expect("the risky-token automaton is built from constant patterns")
    })
}

/// True when `sql` must go through the parser.
pub fn needs_parse(sql: &str) -> bool {
    risky().is_match(sql) || has_statement_set(sql.as_bytes())
}

/// Finds a `SET` or `RESET` word that could start a statement: one not
/// preceded (across whitespace) by an identifier, as in `UPDATE t SET`.
/// Comments are covered by the `--` and `/*` tokens above.
fn has_statement_set(sql: &[u8]) -> bool {
    let mut i = 0;
    while i < sql.len() {
        if !is_word_byte(Some(sql[i])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < sql.len() && is_word_byte(Some(sql[i])) {
            i += 1;
        }
        let word = &sql[start..i];
        if word.eq_ignore_ascii_case(b"set") || word.eq_ignore_ascii_case(b"reset") {
            let prev = sql[..start].iter().rev().find(|b| !b.is_ascii_whitespace()).copied();
            let after_identifier = matches!(prev, Some(b) if is_word_byte(Some(b)) || b == b'"');
            if !after_identifier {
                return true;
            }
        }
    }
    false
}

fn is_word_byte(b: Option<u8>) -> bool {
    matches!(b, Some(b) if b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_statements_skip_the_parser() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
            "UPDATE \"Accounts\" SET x = 1",
            "INSERT INTO history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, now())",
            "BEGIN",
            "END",
            "SELECT offset_value FROM assets",
        ] {
            assert!(!needs_parse(sql), "{sql}");
        }
    }

    #[test]
    fn anything_that_could_touch_the_context_is_parsed() {
        for sql in [
            "SET app.tenant_id = 'x'",
            "set app.tenant_id = 'x'",
            "  RESET app.tenant_id",
            "BEGIN; SET LOCAL app.tenant_id = 'x'",
            "UPDATE t SET a = 1;SET role postgres",
            "select set_config('app.tenant_id', 'x', false)",
            "SELECT \"set_config\"('a','b',false)",
            "SELECT U&\"\\0073et_config\"('a','b',false)",
            "/* hi */ SET x = 1",
            "-- hi\nSET x = 1",
            "DO $$ BEGIN END $$",
            "SELECT lo_import('/etc/passwd')",
            "SELECT * FROM pg_stat_activity",
            "NOTIFY chan",
            "DISCARD ALL",
            "reset all",
            "(SET x = 1)",
            "SELECT pgtenant.set_context('x', 'y')",
        ] {
            assert!(needs_parse(sql), "{sql}");
        }
    }
}
