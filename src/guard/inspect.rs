//! The parser pass: PostgreSQL's own grammar (pg_query) classifies each
//! statement, and a walk over the statement's tokens finds every function
//! call and relation name wherever it is nested — inside PREPARE, DECLARE
//! CURSOR, ARRAY[], VALUES, CTEs, sub-selects — which a walk over selected
//! node types can miss.

use std::ops::Range;

use pg_query::protobuf::{self, Token};
use pg_query::NodeEnum;

use super::denylist::{function_danger, reads_pooled_statements, relation_refused, Danger};
use super::set_config::{self, Arg, BoundSetConfig};
use super::set_statement::{check_lexical_set, setting_change};
use crate::error::{sqlstate, ClientError};
use crate::setting_rules::{self, CONTEXT_MANAGED};

/// What the guard concluded about one query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    /// The string is refused with this error; nothing of it runs.
    pub denial: Option<ClientError>,
    /// It contains RESET ALL, DISCARD ALL or DISCARD SEQUENCES, which wipe
    /// the tenant context: pgtenant re-establishes it before the client's
    /// next statement.
    pub resets_context: bool,
    /// It contains RESET ALL or DISCARD ALL, which also wipe the client's own settings.
    pub wipes_settings: bool,
    /// LISTEN / UNLISTEN / NOTIFY statements, whose channels pgtenant scopes to the tenant.
    pub channel_statements: Vec<ChannelStatement>,
    /// It leaves state on the server session that pgtenant cannot carry to
    /// another one (PREPARE, a WITH HOLD cursor, SET SESSION CHARACTERISTICS).
    /// LISTEN is among `channel_statements`: transaction pooling serves it
    /// with the pool's listening connection.
    pub session_state: bool,
    /// It contains DISCARD ALL, which also stops every LISTEN.
    pub unlistens_all: bool,
    /// It drops every prepared statement (DISCARD ALL, DEALLOCATE ALL).
    pub discards_statements: bool,
    /// Session-level `SET name …` and `RESET name` (None), in order: the
    /// setting's name (lower case) and its value as `set_config()` takes it.
    pub setting_changes: Vec<(String, Option<String>)>,
    /// Every search_path value the statements set (any scope), for the
    /// session's check that none names another tenant's schema.
    pub search_paths: Vec<String>,
    /// `set_config()` calls whose setting name is a bind parameter, judged at Bind.
    pub(crate) bound_set_configs: Vec<BoundSetConfig>,
    /// Prepared statements it runs by name (`EXECUTE name`), lower case.
    pub executes: Vec<String>,
    /// It reads the prepared statements of its server session
    /// (`pg_prepared_statements`), which transaction pooling shares among
    /// clients of every tenant.
    pub reads_pooled_statements: bool,
    /// It changes a session-level setting in a way pgtenant cannot follow
    /// (`set_config()` with a computed value or scope): the server session
    /// is reset before anyone uses it again.
    pub untracked_settings: bool,
}

/// A LISTEN, UNLISTEN or NOTIFY statement and where it sits in the string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStatement {
    pub range: Range<usize>,
    pub kind: ChannelCommand,
    /// Empty for `UNLISTEN *`.
    pub channel: String,
    pub payload: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelCommand {
    Listen,
    Unlisten,
    Notify,
    /// A `pg_notify(` call (its name, with a `pg_catalog.` qualifier):
    /// rewritten to `pgtenant.notify(`, which scopes the channel on the
    /// server at run time (sql/0010), whatever computes it.
    NotifyCall,
}

impl Inspection {
    /// It contains a LISTEN.
    pub fn listens(&self) -> bool {
        self.channel_statements.iter().any(|s| s.kind == ChannelCommand::Listen)
    }

    fn deny(error: ClientError) -> Inspection {
        Inspection { denial: Some(error), ..Inspection::default() }
    }
}

/// Parses `sql` and judges it. `tenant_setting` is lower case.
pub fn inspect(sql: &str, tenant_setting: &str) -> Inspection {
    let parsed = match pg_query::parse(sql, 0) {
        Ok(parsed) => parsed,
        // Fail closed: what our parser cannot read does not reach the server.
        Err(e) => return Inspection::deny(super::syntax_error::syntax_error(sql, parse_message(&e))),
    };
    let mut inspection = Inspection::default();
    for raw in &parsed.protobuf.stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else { continue };
        if let Some(error) = judge_statement(node, tenant_setting, &mut inspection) {
            return Inspection::deny(error);
        }
        if matches!(node, NodeEnum::ListenStmt(_) | NodeEnum::UnlistenStmt(_) | NodeEnum::NotifyStmt(_)) {
            let start = raw.stmt_location.max(0) as usize;
            let end = if raw.stmt_len > 0 { start + raw.stmt_len as usize } else { sql.len() };
            let (kind, channel, payload) = match node {
                NodeEnum::ListenStmt(s) => (ChannelCommand::Listen, s.conditionname.clone(), String::new()),
                NodeEnum::UnlistenStmt(s) => (ChannelCommand::Unlisten, s.conditionname.clone(), String::new()),
                NodeEnum::NotifyStmt(s) => (ChannelCommand::Notify, s.conditionname.clone(), s.payload.clone()),
                _ => unreachable!("matched above"),
            };
            inspection.channel_statements.push(ChannelStatement {
                range: start..end.min(sql.len()),
                kind,
                channel,
                payload,
            });
        }
    }
    let set_statements = inspection.setting_changes.len();
    let prepares = parsed
        .protobuf
        .stmts
        .iter()
        .any(|raw| matches!(raw.stmt.as_ref().and_then(|s| s.node.as_ref()), Some(NodeEnum::PrepareStmt(_))));
    if let Some(error) = walk_tokens(sql, tenant_setting, prepares, &mut inspection) {
        return Inspection::deny(error);
    }
    // Statements and the calls inside them, in text order for the rewrite.
    inspection.channel_statements.sort_by_key(|s| s.range.start);
    if set_statements > 0 && inspection.setting_changes.len() > set_statements {
        // SET statements and set_config() calls in one string: their order
        // is not known here, so neither is the final value.
        inspection.untracked_settings = true;
    }
    inspection
}

fn parse_message(e: &pg_query::Error) -> String {
    match e {
        pg_query::Error::Parse(message) => message.clone(),
        other => other.to_string(),
    }
}

fn denied(danger: Danger, name: &str) -> ClientError {
    let message = match danger {
        Danger::Context => CONTEXT_MANAGED.to_string(),
        Danger::DynamicSql => {
            format!("{name} is not allowed through pgtenant: it runs SQL that pgtenant cannot inspect")
        }
        Danger::OtherSessions => format!("{name} is not allowed through pgtenant: it reaches other sessions"),
        Danger::LargeObjects => {
            format!("{name} is not allowed through pgtenant: large objects are shared across tenants")
        }
        Danger::ServerFiles => {
            format!("{name} is not allowed through pgtenant: it reads server files or runs programs")
        }
        Danger::Notify => {
            format!("{name} is not allowed through pgtenant: use NOTIFY, whose channels pgtenant scopes to the tenant")
        }
    };
    ClientError::error(sqlstate::INSUFFICIENT_PRIVILEGE, message)
}

/// The refusal of one top-level statement, if any; notes context resets.
fn judge_statement(node: &NodeEnum, tenant_setting: &str, inspection: &mut Inspection) -> Option<ClientError> {
    match node {
        NodeEnum::PrepareStmt(_) => inspection.session_state = true,
        NodeEnum::DeclareCursorStmt(cursor) if cursor.options & CURSOR_OPT_HOLD != 0 => inspection.session_state = true,
        _ => {}
    }
    match node {
        NodeEnum::VariableSetStmt(set) => {
            if set.kind == protobuf::VariableSetKind::VarResetAll as i32 {
                inspection.resets_context = true;
                inspection.wipes_settings = true;
                return None;
            }
            let name = set.name.to_ascii_lowercase();
            if setting_rules::is_reserved(&name, tenant_setting) {
                return Some(denied(Danger::Context, &name));
            }
            if let Err(refusal) = check_lexical_set(set, &name) {
                return Some(refusal);
            }
            if name == "search_path" {
                if let Some(value) = super::set_statement::search_path_value(set) {
                    inspection.search_paths.push(value);
                }
            }
            match setting_change(set, &name) {
                Some(Some(change)) => inspection.setting_changes.push(change),
                Some(None) => {}
                // SET SESSION CHARACTERISTICS and the like: kept only by a whole session.
                None => inspection.session_state = true,
            }
            None
        }
        NodeEnum::DiscardStmt(discard) => {
            if discard.target == protobuf::DiscardMode::DiscardAll as i32 {
                inspection.unlistens_all = true;
                inspection.resets_context = true;
                inspection.wipes_settings = true;
                inspection.discards_statements = true;
            }
            // The verified tenant lives in sequence state (sql/0004).
            if discard.target == protobuf::DiscardMode::DiscardSequences as i32 {
                inspection.resets_context = true;
            }
            None
        }
        NodeEnum::DeallocateStmt(deallocate) => {
            if deallocate.isall || deallocate.name.is_empty() {
                inspection.discards_statements = true;
            }
            None
        }
        NodeEnum::AlterRoleSetStmt(_) | NodeEnum::AlterDatabaseSetStmt(_) | NodeEnum::AlterSystemStmt(_) => {
            Some(denied(Danger::Context, "ALTER ... SET"))
        }
        NodeEnum::TransactionStmt(transaction) if is_two_phase(transaction) => Some(ClientError::error(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            "prepared transactions are not allowed through pgtenant: every tenant of the session role could \
             see and finish them",
        )),
        NodeEnum::AlterFunctionStmt(alter) if alter.actions.iter().any(is_set_action) => {
            Some(denied(Danger::Context, "ALTER FUNCTION ... SET"))
        }
        NodeEnum::DoStmt(_) => Some(denied(Danger::DynamicSql, "DO")),
        NodeEnum::CreateFunctionStmt(_) => Some(denied(Danger::DynamicSql, "CREATE FUNCTION / PROCEDURE")),
        NodeEnum::LoadStmt(_) => Some(denied(Danger::ServerFiles, "LOAD")),
        NodeEnum::CopyStmt(copy) if copy.is_program || !copy.filename.is_empty() => {
            Some(denied(Danger::ServerFiles, "COPY to or from a file or program"))
        }
        NodeEnum::ExplainStmt(explain) if explain_analyzes(explain) => Some(ClientError::error(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            "EXPLAIN ANALYZE is not allowed through pgtenant: its row counts include other tenants' rows",
        )),
        _ => None,
    }
}

/// PREPARE TRANSACTION, COMMIT PREPARED, ROLLBACK PREPARED.
fn is_two_phase(transaction: &protobuf::TransactionStmt) -> bool {
    use protobuf::TransactionStmtKind as Kind;
    [Kind::TransStmtPrepare, Kind::TransStmtCommitPrepared, Kind::TransStmtRollbackPrepared]
        .iter()
        .any(|k| transaction.kind == *k as i32)
}

/// An `ALTER FUNCTION … SET name …` action (a setting changed on every call).
fn is_set_action(action: &protobuf::Node) -> bool {
    matches!(action.node.as_ref(), Some(NodeEnum::DefElem(def)) if def.defname == "set")
}

/// `CURSOR_OPT_HOLD` of PostgreSQL's parsenodes.h.
const CURSOR_OPT_HOLD: i32 = 0x0020;

fn explain_analyzes(explain: &protobuf::ExplainStmt) -> bool {
    explain.options.iter().any(|option| match option.node.as_ref() {
        Some(NodeEnum::DefElem(def)) if def.defname.eq_ignore_ascii_case("analyze") => {
            match def.arg.as_ref().and_then(|a| a.node.as_ref()) {
                None => true,
                Some(NodeEnum::Boolean(b)) => b.boolval,
                Some(NodeEnum::String(s)) => {
                    !matches!(s.sval.to_ascii_lowercase().as_str(), "false" | "off" | "0" | "no")
                }
                Some(NodeEnum::Integer(i)) => i.ival != 0,
                Some(_) => true,
            }
        }
        _ => false,
    })
}

/// Walks every token: identifiers followed by `(` are calls; refused
/// relation names are refused wherever they appear.
fn walk_tokens(sql: &str, tenant_setting: &str, prepares: bool, inspection: &mut Inspection) -> Option<ClientError> {
    // With no token at all, pg_query 18.1's scan_tokens builds a slice from a
    // null pointer (found by the guard fuzzer); blank text has no call to find.
    if sql.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)) {
        return None;
    }
    let tokens = match pg_query::scan_tokens(sql) {
        Ok(tokens) => tokens,
        Err(e) => return Some(ClientError::error(sqlstate::SYNTAX_ERROR, parse_message(&e))),
    };
    let significant: Vec<&protobuf::ScanToken> =
        tokens.iter().filter(|t| t.token != Token::SqlComment as i32 && t.token != Token::CComment as i32).collect();
    for (i, token) in significant.iter().enumerate() {
        if token.token == Token::Uescape as i32 {
            return Some(ClientError::error(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                "UESCAPE is not allowed through pgtenant; write the identifier without a custom escape",
            ));
        }
        let is_ident = token.token == Token::Ident as i32 || token.token == Token::Uident as i32;
        if token.token == Token::Execute as i32 {
            let next =
                significant.get(i + 1).filter(|t| t.token == Token::Ident as i32 || t.token == Token::Uident as i32);
            if let Some(name) = next.and_then(|t| sql.get(t.start as usize..t.end as usize)).and_then(identifier_name) {
                inspection.executes.push(name);
            }
        }
        let called = significant.get(i + 1).is_some_and(|next| next.token == Token::Ascii40 as i32);
        if called && qualified_by_pgtenant(sql, &significant[..i]) {
            // RELEASE is a keyword token, not an identifier.
            let text = sql.get(token.start as usize..token.end as usize).unwrap_or_default();
            if let Some(name @ ("assume" | "release")) = identifier_name(text).as_deref() {
                return Some(ClientError::error(
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    format!(
                        "pgtenant.{name}() must be a statement of its own, answered by pgtenant: \
                         SELECT pgtenant.assume($1) with the token as a bind parameter, or SELECT pgtenant.release()"
                    ),
                ));
            }
        }
        if !is_ident {
            continue;
        }
        let text = sql.get(token.start as usize..token.end as usize).unwrap_or_default();
        let Some(name) = identifier_name(text) else {
            return Some(ClientError::error(sqlstate::SYNTAX_ERROR, "invalid identifier"));
        };
        if called && name == "pg_notify" {
            let start = match &significant[..i] {
                [.., schema, dot]
                    if dot.token == Token::Ascii46 as i32
                        && sql.get(schema.start as usize..schema.end as usize).and_then(identifier_name).as_deref()
                            == Some("pg_catalog") =>
                {
                    Some(schema.start as usize)
                }
                [.., dot] if dot.token == Token::Ascii46 as i32 => None,
                _ => Some(token.start as usize),
            };
            // Another schema's pg_notify is not PostgreSQL's: refused below.
            if let Some(start) = start {
                inspection.channel_statements.push(ChannelStatement {
                    range: start..token.end as usize,
                    kind: ChannelCommand::NotifyCall,
                    channel: String::new(),
                    payload: String::new(),
                });
                continue;
            }
        }
        if called && name == "set_config" {
            // Drivers call set_config on ordinary settings (asyncpg: jit).
            if let Err(refusal) = judge_set_config(sql, &significant[i + 2..], tenant_setting, prepares, inspection) {
                return Some(refusal);
            }
            continue;
        }
        if called {
            if let Some(danger) = function_danger(&name) {
                return Some(denied(danger, &format!("{name}()")));
            }
        } else if relation_refused(&name) {
            return Some(denied(Danger::OtherSessions, &name));
        }
        if reads_pooled_statements(&name) {
            inspection.reads_pooled_statements = true;
        }
    }
    None
}

/// The tokens before a name end with `pgtenant .` (any quoting or case).
fn qualified_by_pgtenant(sql: &str, before: &[&protobuf::ScanToken]) -> bool {
    match before {
        [.., schema, dot] => {
            dot.token == Token::Ascii46 as i32
                && sql.get(schema.start as usize..schema.end as usize).and_then(identifier_name).as_deref()
                    == Some("pgtenant")
        }
        _ => false,
    }
}

/// Judges one `set_config(name, value, is_local)` call (`arguments` starts
/// after its `(`): a constant name is judged here and, when its value and
/// scope are constant, followed like `SET`; a name that is a bind parameter
/// is judged at Bind; any other name cannot be judged and is refused.
fn judge_set_config(
    sql: &str,
    arguments: &[&protobuf::ScanToken],
    tenant_setting: &str,
    prepares: bool,
    inspection: &mut Inspection,
) -> Result<(), ClientError> {
    let [name, value, scope] = set_config::arguments(sql, arguments);
    match name {
        Arg::Const(name) => {
            let name = name.to_ascii_lowercase();
            if setting_rules::is_reserved(&name, tenant_setting) {
                return Err(denied(Danger::Context, "set_config()"));
            }
            if matches!(value, Arg::Param(_)) || matches!(scope, Arg::Param(_)) {
                inspection.bound_set_configs.push(BoundSetConfig { name: Arg::Const(name), value, scope });
                return Ok(());
            }
            note_set_config(name, value, scope, inspection)
        }
        Arg::Param(_) if prepares => Err(ClientError::error(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            "set_config() with its setting name as a PREPARE parameter is not allowed through pgtenant: it cannot \
             see the name EXECUTE passes; use a protocol-level prepared statement or name the setting",
        )),
        Arg::Param(name) => {
            inspection.bound_set_configs.push(BoundSetConfig { name: Arg::Param(name), value, scope });
            Ok(())
        }
        _ => Err(ClientError::error(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            "set_config() with a computed setting name is not allowed through pgtenant: it cannot tell whether \
             the call changes the tenant context; name the setting as a constant or a bind parameter",
        )),
    }
}

/// Records what an allowed `set_config(name, value, is_local)` does to the
/// session (`name` is lower case and not reserved): with a constant value
/// and `false` it is `SET name TO value` and follows the client like one; a
/// transaction-local one (`true`) leaves nothing behind; anything computed
/// cannot be followed, so the server session is reset. A lexical setting
/// must get an acceptable value in either scope. Used again at Bind, with
/// parameters replaced by their values.
pub(crate) fn note_set_config(
    name: String,
    value: Arg,
    scope: Arg,
    inspection: &mut Inspection,
) -> Result<(), ClientError> {
    if name == "search_path" {
        if let Arg::Const(value) = &value {
            inspection.search_paths.push(value.clone());
        }
    }
    if setting_rules::is_lexical(&name) {
        match &value {
            Arg::Const(value) => setting_rules::check_value(&name, value)?,
            _ => setting_rules::check_value(&name, "")?,
        }
    }
    match (value, scope) {
        (_, Arg::Bool(true)) => {}
        (_, Arg::Bool(false)) if setting_rules::is_transaction_scoped(&name) => {}
        (Arg::Const(value), Arg::Bool(false)) => inspection.setting_changes.push((name, Some(value))),
        _ => inspection.untracked_settings = true,
    }
    Ok(())
}

/// The name PostgreSQL sees for an identifier token, lower-cased for comparison.
fn identifier_name(text: &str) -> Option<String> {
    if let Some(rest) = text.strip_prefix("U&\"").or_else(|| text.strip_prefix("u&\"")) {
        let inner = rest.strip_suffix('"')?.replace("\"\"", "\"");
        return decode_unicode_escapes(&inner).map(|s| s.to_lowercase());
    }
    if let Some(rest) = text.strip_prefix('"') {
        return Some(rest.strip_suffix('"')?.replace("\"\"", "\"").to_lowercase());
    }
    Some(text.to_ascii_lowercase())
}

/// Decodes `\XXXX`, `\+XXXXXX` and `\\` as PostgreSQL does in U&"..." identifiers.
fn decode_unicode_escapes(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'\\') {
            chars.next();
            out.push('\\');
            continue;
        }
        let digits = if chars.peek() == Some(&'+') {
            chars.next();
            6
        } else {
            4
        };
        let hex: String = (0..digits).filter_map(|_| chars.next()).collect();
        if hex.len() != digits {
            return None;
        }
        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
    }
    Some(out)
}

#[cfg(test)]
#[path = "inspect_tests.rs"]
mod tests;
