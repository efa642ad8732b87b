//! Quoting for the few statements pgtenant must write as text (values it can
//! send as bind parameters never come here). Both forms mean the same under
//! every session setting a client can change: a double-quoted identifier has
//! no escapes, and an `E'…'` literal reads backslashes as escapes whatever
//! `standard_conforming_strings` and `backslash_quote` say, so doubling
//! backslashes and quotes keeps the value whole. (The encodings in which a
//! quote byte could hide inside a character are refused: `setting_rules`.)

/// A double-quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An escape-string SQL literal, `E'…'`, with backslashes and quotes doubled.
pub(crate) fn quote_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_backslashes_are_doubled() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "E'it''s'");
        assert_eq!(quote_literal(r"\';DO"), r"E'\\'';DO'");
    }

    /// PostgreSQL's own lexer reads the literal back as the value, and it is
    /// one token whatever the value holds.
    #[test]
    fn the_lexer_reads_one_literal() {
        for value in [r"\';do $d$ begin end $d$;--", "it's", r"a\\b\", "$$ /* -- */", "\u{e9}\u{3042}"] {
            let sql = format!("SELECT {}", quote_literal(value));
            let tokens = pg_query::scan_tokens(&sql).unwrap();
            assert_eq!(tokens.len(), 2, "{sql}");
            let parsed = pg_query::parse(&sql, 0).unwrap();
            let json = format!("{:?}", parsed.protobuf);
            assert!(json.contains(&format!("{value:?}")), "{sql}: {json}");
        }
    }
}
