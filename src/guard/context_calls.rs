//! The two statements pgtenant answers for service logins itself:
//! `SELECT pgtenant.assume(<token>)` and `SELECT pgtenant.release()`, each
//! alone in its query string (an optional column alias and a trailing `;`
//! allowed). Recognized with PostgreSQL's grammar whether or not the guard
//! is on; anywhere else — in a CTE, a sub-select, a function body, PREPARE —
//! the guard refuses the call.

use pg_query::protobuf::{self, a_const, SetOperation};
use pg_query::NodeEnum;

/// A statement pgtenant intercepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContextCall {
    /// `SELECT pgtenant.assume(token)`; `column` is the result's name.
    Assume { token: TokenArgument, column: String },
    /// `SELECT pgtenant.release()`.
    Release { column: String },
}

/// Where the token of an assume call is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenArgument {
    /// A string literal in the statement text.
    Literal(String),
    /// Bind parameter `$1`.
    Parameter,
}

/// The intercepted statement `sql` is, if it is one.
pub(crate) fn recognize(sql: &str) -> Option<ContextCall> {
    if !mentions_a_context_call(sql) {
        return None;
    }
    let parsed = pg_query::parse(sql, 0).ok()?;
    let [raw] = parsed.protobuf.stmts.as_slice() else { return None };
    let Some(NodeEnum::SelectStmt(select)) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else { return None };
    if !is_bare_select(select) {
        return None;
    }
    let [target] = select.target_list.as_slice() else { return None };
    let Some(NodeEnum::ResTarget(target)) = target.node.as_ref() else { return None };
    if !target.indirection.is_empty() {
        return None;
    }
    let Some(NodeEnum::FuncCall(call)) = target.val.as_ref().and_then(|v| v.node.as_ref()) else { return None };
    if !call.agg_order.is_empty()
        || call.agg_filter.is_some()
        || call.over.is_some()
        || call.agg_within_group
        || call.agg_star
        || call.agg_distinct
        || call.func_variadic
    {
        return None;
    }
    let name: Vec<&str> = call
        .funcname
        .iter()
        .map(|part| match part.node.as_ref() {
            Some(NodeEnum::String(s)) => s.sval.as_str(),
            _ => "",
        })
        .collect();
    let column = |default: &str| if target.name.is_empty() { default.to_owned() } else { target.name.clone() };
    match (name.as_slice(), call.args.as_slice()) {
        (["pgtenant", "assume"], [argument]) => {
            Some(ContextCall::Assume { token: token_argument(argument)?, column: column("assume") })
        }
        (["pgtenant", "release"], []) => Some(ContextCall::Release { column: column("release") }),
        _ => None,
    }
}

/// The cheap test before the parser: the text names one of the two.
pub(crate) fn mentions_a_context_call(sql: &str) -> bool {
    let text = sql.as_bytes();
    ["assume", "release"].iter().any(|word| text.windows(word.len()).any(|w| w.eq_ignore_ascii_case(word.as_bytes())))
}

/// A SELECT with a target list and nothing else.
fn is_bare_select(select: &protobuf::SelectStmt) -> bool {
    select.distinct_clause.is_empty()
        && select.into_clause.is_none()
        && select.from_clause.is_empty()
        && select.where_clause.is_none()
        && select.group_clause.is_empty()
        && select.having_clause.is_none()
        && select.window_clause.is_empty()
        && select.values_lists.is_empty()
        && select.sort_clause.is_empty()
        && select.limit_offset.is_none()
        && select.limit_count.is_none()
        && select.locking_clause.is_empty()
        && select.with_clause.is_none()
        && select.op == SetOperation::SetopNone as i32
}

/// `'…'`, `$1`, or either cast to text.
fn token_argument(argument: &protobuf::Node) -> Option<TokenArgument> {
    match argument.node.as_ref()? {
        NodeEnum::ParamRef(param) if param.number == 1 => Some(TokenArgument::Parameter),
        NodeEnum::AConst(constant) => match constant.val.as_ref()? {
            a_const::Val::Sval(s) => Some(TokenArgument::Literal(s.sval.clone())),
            _ => None,
        },
        NodeEnum::TypeCast(cast) => {
            let names: Vec<&str> = cast
                .type_name
                .as_ref()?
                .names
                .iter()
                .filter_map(|n| match n.node.as_ref() {
                    Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
                    _ => None,
                })
                .collect();
            if !matches!(names.as_slice(), ["text"] | ["pg_catalog", "text"]) {
                return None;
            }
            token_argument(cast.arg.as_ref()?)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assume(token: TokenArgument, column: &str) -> Option<ContextCall> {
        Some(ContextCall::Assume { token, column: column.to_owned() })
    }

    #[test]
    fn the_statements_alone_are_recognized() {
        use TokenArgument::*;
        assert_eq!(recognize("SELECT pgtenant.assume($1)"), assume(Parameter, "assume"));
        assert_eq!(recognize("select \"pgtenant\".ASSUME($1::text) AS tenant;"), assume(Parameter, "tenant"));
        assert_eq!(recognize("SELECT pgtenant.assume('ey.x.y')"), assume(Literal("ey.x.y".into()), "assume"));
        assert_eq!(recognize("SELECT pgtenant.release()"), Some(ContextCall::Release { column: "release".into() }));
        for other in [
            "SELECT pgtenant.assume($2)",
            "SELECT pgtenant.assume($1), 1",
            "SELECT pgtenant.assume($1) FROM accounts",
            "SELECT pgtenant.assume($1); SELECT 1",
            "WITH t AS (SELECT 1) SELECT pgtenant.assume($1)",
            "SELECT x FROM (SELECT pgtenant.assume($1) x) s",
            "SELECT pgtenant.assume(current_setting('a.b'))",
            "SELECT pgtenant.assume($1::int)",
            "SELECT assume($1)",
            "SELECT other.release()",
            "SELECT pgtenant.release(1)",
            "PREPARE p AS SELECT pgtenant.assume($1)",
            "SELECT pgtenant.assume($1) UNION SELECT NULL",
            "SELECT 1",
            "not sql at all (assume",
        ] {
            assert_eq!(recognize(other), None, "{other}");
        }
    }
}
