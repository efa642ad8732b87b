//! SET and RESET statements: the change of one setting they make, with its
//! value in the form `set_config()` and a startup packet take, and the
//! refusal of values under which the server would read text differently
//! from the guard.

use pg_query::protobuf;
use pg_query::NodeEnum;

use crate::error::ClientError;
use crate::setting_rules;

/// What a SET/RESET does to the session's settings: `Some(Some(change))` a
/// change pgtenant can replay elsewhere, `Some(None)` nothing that outlasts
/// the transaction, `None` a change it cannot follow.
pub(super) fn setting_change(set: &protobuf::VariableSetStmt, name: &str) -> Option<Option<(String, Option<String>)>> {
    use protobuf::VariableSetKind as Kind;
    if set.is_local || setting_rules::is_transaction_scoped(name) {
        return Some(None);
    }
    if name.is_empty() || name.contains(' ') {
        return None;
    }
    match set.kind {
        k if k == Kind::VarSetValue as i32 => Some(Some((name.to_owned(), Some(set_value(set, name)?)))),
        k if k == Kind::VarSetDefault as i32 || k == Kind::VarReset as i32 => Some(Some((name.to_owned(), None))),
        _ => None,
    }
}

/// The value a `SET search_path …` (any scope) gives, when it gives one.
pub(super) fn search_path_value(set: &protobuf::VariableSetStmt) -> Option<String> {
    (set.kind == protobuf::VariableSetKind::VarSetValue as i32).then(|| set_value(set, "search_path")).flatten()
}

/// The value of `SET name TO a, b, …` as `set_config()` (and a startup
/// packet) takes it, built as PostgreSQL's flatten_set_variable_args does;
/// `None` for forms pgtenant does not replay (an INTERVAL time zone).
fn set_value(set: &protobuf::VariableSetStmt, name: &str) -> Option<String> {
    use protobuf::a_const::Val;
    let mut items = Vec::with_capacity(set.args.len());
    for arg in &set.args {
        let NodeEnum::AConst(constant) = arg.node.as_ref()? else { return None };
        items.push(match constant.val.as_ref()? {
            Val::Ival(i) => i.ival.to_string(),
            Val::Fval(f) => f.fval.clone(),
            Val::Boolval(b) => b.boolval.to_string(),
            Val::Sval(s) if quotes_list_items(name) => quote_identifier(&s.sval),
            Val::Sval(s) => s.sval.clone(),
            Val::Bsval(_) => return None,
        });
    }
    (!items.is_empty()).then(|| items.join(", "))
}

/// Settings whose list items PostgreSQL keeps as quoted identifiers (GUC_LIST_QUOTE).
fn quotes_list_items(name: &str) -> bool {
    matches!(name, "search_path" | "temp_tablespaces" | "local_preload_libraries" | "session_preload_libraries")
}

/// PostgreSQL's quote_identifier: quoted unless a plain lower-case name
/// that is no keyword (unreserved keywords excepted).
fn quote_identifier(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    let keyword = || {
        pg_query::scan_tokens(name).map_or(true, |tokens| {
            tokens.len() != 1
                || !matches!(
                    protobuf::KeywordKind::try_from(tokens[0].keyword_kind),
                    Ok(protobuf::KeywordKind::NoKeyword | protobuf::KeywordKind::UnreservedKeyword)
                )
        })
    };
    if plain && !keyword() {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Refuses a SET of a lexical setting to a value under which the server
/// would read statements differently from the guard (also `SET LOCAL`).
pub(super) fn check_lexical_set(set: &protobuf::VariableSetStmt, name: &str) -> Result<(), ClientError> {
    if !setting_rules::is_lexical(name) || set.kind != protobuf::VariableSetKind::VarSetValue as i32 {
        return Ok(());
    }
    match set_value(set, name) {
        Some(value) => setting_rules::check_value(name, &value),
        None => setting_rules::check_value(name, ""),
    }
}
