//! `set_config(name, value, is_local)` calls: their arguments as the guard
//! can read them from the tokens — a constant, a bind parameter, a boolean
//! keyword, or anything else (computed).

use pg_query::protobuf::{self, Token};

/// One argument of a set_config() call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Arg {
    /// A plain string literal's value.
    Const(String),
    /// `$n` (1-based), possibly with a cast.
    Param(usize),
    /// `true` / `false`.
    Bool(bool),
    /// Anything the guard cannot read without running it.
    Computed,
}

/// A set_config() with a bind parameter among its arguments: judged when
/// the statement is bound, with the values then known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BoundSetConfig {
    pub name: Arg,
    pub value: Arg,
    pub scope: Arg,
}

/// The call's three arguments; `tokens` starts after its `(`. Arguments it
/// cannot read, and those after them, are [`Arg::Computed`].
pub(crate) fn arguments(sql: &str, tokens: &[&protobuf::ScanToken]) -> [Arg; 3] {
    let mut args = [Arg::Computed, Arg::Computed, Arg::Computed];
    let mut at = 0;
    for (index, slot) in args.iter_mut().enumerate() {
        let Some(first) = tokens.get(at) else { break };
        let text = sql.get(first.start as usize..first.end as usize).unwrap_or_default();
        let arg = match Token::try_from(first.token) {
            Ok(Token::Sconst) => plain_string_literal(text).map_or(Arg::Computed, Arg::Const),
            Ok(Token::Param) => text.strip_prefix('$').and_then(|n| n.parse().ok()).map_or(Arg::Computed, Arg::Param),
            Ok(Token::TrueP) => Arg::Bool(true),
            Ok(Token::FalseP) => Arg::Bool(false),
            _ => Arg::Computed,
        };
        at += 1;
        // An optional cast to a one-word type: `$1::text`.
        if is(tokens.get(at), Token::Typecast) {
            at += 2;
        }
        let separator = if index < 2 { Token::Ascii44 } else { Token::Ascii41 };
        if arg == Arg::Computed || !is(tokens.get(at), separator) {
            break;
        }
        *slot = arg;
        at += 1;
    }
    args
}

fn is(token: Option<&&protobuf::ScanToken>, kind: Token) -> bool {
    token.is_some_and(|t| t.token == kind as i32)
}

/// The value of a plain `'...'` literal (no E'', U&'' or dollar quoting).
pub(crate) fn plain_string_literal(text: &str) -> Option<String> {
    let inner = text.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("''", "'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_of(sql: &str) -> [Arg; 3] {
        let tokens = pg_query::scan_tokens(sql).unwrap();
        let significant: Vec<&protobuf::ScanToken> = tokens.iter().collect();
        let open = significant.iter().position(|t| t.token == Token::Ascii40 as i32).unwrap();
        arguments(sql, &significant[open + 1..])
    }

    #[test]
    fn arguments_are_read_or_called_computed() {
        use Arg::*;
        assert_eq!(
            args_of("SELECT set_config('a.b', 'v', false)"),
            [Const("a.b".into()), Const("v".into()), Bool(false)]
        );
        assert_eq!(args_of("SELECT set_config($1, $2::text, $3)"), [Param(1), Param(2), Param(3)]);
        assert_eq!(args_of("SELECT set_config($1::text, 'x' || 'y', true)"), [Param(1), Computed, Computed]);
        assert_eq!(args_of("SELECT set_config(lower($1), 'v', true)"), [Computed, Computed, Computed]);
        assert_eq!(args_of("SELECT set_config(E'a.b', 'v', true)"), [Computed, Computed, Computed]);
        assert_eq!(args_of("SELECT set_config('a', 'v', true, 1)"), [Const("a".into()), Const("v".into()), Computed]);
    }
}
