//! The parser pass: PostgreSQL's own grammar (pg_query) classifies each
//! statement, and a walk over the statement's tokens finds every function
//! call and relation name wherever it is nested — inside PREPARE, DECLARE
//! CURSOR, ARRAY[], VALUES, CTEs, sub-selects — which a walk over selected
//! node types can miss.

use std::ops::Range;

use pg_query::protobuf::{self, Token};
use pg_query::NodeEnum;

use super::denylist::{function_danger, relation_refused, Danger};
use crate::error::{sqlstate, ClientError};
use crate::frontend::params::CONTEXT_MANAGED;

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
    /// another one (PREPARE, a WITH HOLD cursor, LISTEN, SET SESSION CHARACTERISTICS).
    pub session_state: bool,
    /// It drops every prepared statement (DISCARD ALL, DEALLOCATE ALL).
    pub discards_statements: bool,
    /// Session-level `SET name …` (statement text) and `RESET name` (None), in order.
    pub setting_changes: Vec<(String, Option<String>)>,
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
}

impl Inspection {
    fn deny(error: ClientError) -> Inspection {
        Inspection { denial: Some(error), ..Inspection::default() }
    }
}

/// Parses `sql` and judges it. `tenant_setting` is lower case.
pub fn inspect(sql: &str, tenant_setting: &str) -> Inspection {
    let parsed = match pg_query::parse(sql, 0) {
        Ok(parsed) => parsed,
        // Fail closed: what our parser cannot read does not reach the server.
        Err(e) => return Inspection::deny(ClientError::error("42601", parse_message(&e))),
    };
    let mut inspection = Inspection::default();
    for raw in &parsed.protobuf.stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else { continue };
        if let Some(error) = judge_statement(node, tenant_setting, &mut inspection) {
            return Inspection::deny(error);
        }
        if let NodeEnum::VariableSetStmt(set) = node {
            let start = raw.stmt_location.max(0) as usize;
            let end = if raw.stmt_len > 0 { start + raw.stmt_len as usize } else { sql.len() };
            let text = sql.get(start..end.min(sql.len())).unwrap_or_default().trim().trim_end_matches(';').trim();
            if let Some(change) = setting_change(set, text) {
                inspection.setting_changes.push(change);
            }
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
    if let Some(error) = walk_tokens(sql, tenant_setting, &mut inspection) {
        return Inspection::deny(error);
    }
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
        NodeEnum::PrepareStmt(_) | NodeEnum::ListenStmt(_) => inspection.session_state = true,
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
            if !set.is_local && setting_change(set, "").is_none() {
                // SET SESSION CHARACTERISTICS and the like: kept only by a whole session.
                inspection.session_state = true;
            }
            let name = set.name.to_ascii_lowercase();
            is_reserved_setting(&name, tenant_setting).then(|| denied(Danger::Context, &name))
        }
        NodeEnum::DiscardStmt(discard) => {
            if discard.target == protobuf::DiscardMode::DiscardAll as i32 {
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

/// A session-level change of one named setting that pgtenant can replay on
/// another server session: `SET name TO …` (its text) or `RESET name`.
fn setting_change(set: &protobuf::VariableSetStmt, text: &str) -> Option<(String, Option<String>)> {
    use protobuf::VariableSetKind as Kind;
    if set.is_local || set.name.is_empty() || set.name.contains(' ') {
        return None;
    }
    let name = set.name.to_ascii_lowercase();
    match set.kind {
        k if k == Kind::VarSetValue as i32 || k == Kind::VarSetDefault as i32 || k == Kind::VarSetCurrent as i32 => {
            Some((name, Some(text.to_owned())))
        }
        k if k == Kind::VarReset as i32 => Some((name, None)),
        _ => None,
    }
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
fn walk_tokens(sql: &str, tenant_setting: &str, inspection: &mut Inspection) -> Option<ClientError> {
    // With no token at all, pg_query 18.1's scan_tokens builds a slice from a
    // null pointer (found by the guard fuzzer); blank text has no call to find.
    if sql.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)) {
        return None;
    }
    let tokens = match pg_query::scan_tokens(sql) {
        Ok(tokens) => tokens,
        Err(e) => return Some(ClientError::error("42601", parse_message(&e))),
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
        if !is_ident {
            continue;
        }
        let text = sql.get(token.start as usize..token.end as usize).unwrap_or_default();
        let Some(name) = identifier_name(text) else {
            return Some(ClientError::error("42601", "invalid identifier"));
        };
        let called = significant.get(i + 1).is_some_and(|next| next.token == Token::Ascii40 as i32);
        if called && name == "set_config" {
            // Drivers call set_config on ordinary settings (asyncpg: jit); only
            // a constant name that is not reserved may pass.
            let arguments = &significant[i + 2..];
            let setting = constant_argument(sql, arguments, 0).filter(|_| is_token(arguments.get(1), Token::Ascii44));
            match setting {
                Some(setting) if !is_reserved_setting(&setting.to_ascii_lowercase(), tenant_setting) => {
                    note_set_config(sql, arguments, &setting, inspection);
                    continue;
                }
                _ => return Some(denied(Danger::Context, "set_config()")),
            }
        }
        if called {
            if let Some(danger) = function_danger(&name) {
                return Some(denied(danger, &format!("{name}()")));
            }
        } else if relation_refused(&name) {
            return Some(denied(Danger::OtherSessions, &name));
        }
    }
    None
}

fn is_token(token: Option<&&protobuf::ScanToken>, kind: Token) -> bool {
    token.is_some_and(|t| t.token == kind as i32)
}

/// The text of a plain string literal at `arguments[index]`.
fn constant_argument(sql: &str, arguments: &[&protobuf::ScanToken], index: usize) -> Option<String> {
    let token = arguments.get(index).filter(|t| t.token == Token::Sconst as i32)?;
    sql.get(token.start as usize..token.end as usize).and_then(plain_string_literal)
}

/// Records what an allowed `set_config(name, value, is_local)` does to the
/// session: `set_config('n', 'v', false)` is `SET n TO 'v'` and follows the
/// client like one; a transaction-local one (`true`) leaves nothing behind;
/// anything computed cannot be followed, so the server session is reset.
fn note_set_config(sql: &str, arguments: &[&protobuf::ScanToken], setting: &str, inspection: &mut Inspection) {
    let value = constant_argument(sql, arguments, 2).filter(|_| is_token(arguments.get(3), Token::Ascii44));
    let scope = arguments.get(4).map(|t| t.token);
    let closed = is_token(arguments.get(5), Token::Ascii41);
    match (value, scope, closed) {
        (_, Some(scope), true) if scope == Token::TrueP as i32 => {}
        (Some(value), Some(scope), true) if scope == Token::FalseP as i32 => {
            let name = setting.to_ascii_lowercase();
            let statement =
                format!("SET {} TO {}", crate::quote::quote_ident(&name), crate::quote::quote_literal(&value));
            inspection.setting_changes.push((name, Some(statement)));
        }
        _ => inspection.untracked_settings = true,
    }
}

/// The value of a plain `'...'` literal (no E'', U&'' or dollar quoting).
fn plain_string_literal(text: &str) -> Option<String> {
    let inner = text.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("''", "'"))
}

/// Settings no client may change: the tenant setting, pgtenant's own, the role.
fn is_reserved_setting(name: &str, tenant_setting: &str) -> bool {
    let name = name.trim();
    name == tenant_setting || name.starts_with("pgtenant.") || name == "role" || name == "session_authorization"
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
mod tests {
    use super::*;

    #[test]
    fn blank_text_is_judged_without_scanning() {
        for sql in ["", " ", "\n\t\r\x0b\x0c"] {
            assert_eq!(inspect(sql, "app.tenant_id"), Inspection::default(), "{sql:?}");
        }
    }

    #[test]
    fn set_config_on_ordinary_settings_is_followed_or_flagged() {
        let followed = inspect("SELECT set_config('jit', 'off', false)", "app.tenant_id");
        assert_eq!(followed.setting_changes, vec![("jit".to_owned(), Some("SET \"jit\" TO 'off'".to_owned()))]);
        assert!(!followed.untracked_settings && followed.denial.is_none());
        let local = inspect("SELECT set_config('jit', 'off', true)", "app.tenant_id");
        assert!(local.setting_changes.is_empty() && !local.untracked_settings);
        for sql in [
            "SELECT set_config('jit', $1, false)",
            "SELECT set_config('work_mem', '3' || 'MB', false)",
            "SELECT set_config('jit', 'off', $2)",
            "SET jit = on; SELECT set_config('jit', 'off', false)",
        ] {
            let inspection = inspect(sql, "app.tenant_id");
            assert!(inspection.untracked_settings && inspection.denial.is_none(), "{sql}");
        }
    }

    fn denial(sql: &str) -> Option<String> {
        inspect(sql, "app.tenant_id").denial.map(|e| format!("{} {}", e.code, e.message))
    }

    #[test]
    fn context_changes_are_refused_everywhere() {
        for sql in [
            "SET app.tenant_id = 'x'",
            "SET LOCAL app.tenant_id = 'x'",
            "set \"app.tenant_id\" to 'x'",
            "RESET app.tenant_id",
            "SET pgtenant.context = 'x'",
            "SET ROLE postgres",
            "RESET ROLE",
            "SET SESSION AUTHORIZATION postgres",
            "RESET SESSION AUTHORIZATION",
            "SELECT 1; SET app.tenant_id = 'x'",
            "SELECT set_config('app.tenant_id', 'x', false)",
            "SELECT pg_catalog.set_config('app.tenant_id', 'x', false)",
            "SELECT \"set_config\"('app.tenant_id', 'x', false)",
            "SELECT U&\"\\0073et_config\"('app.tenant_id', 'x', false)",
            "SELECT * FROM t WHERE length(set_config('app.tenant_id', 'b', false)) > 0",
            "PREPARE p AS SELECT set_config('app.tenant_id', 'b', false)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT set_config('app.tenant_id', 'b', false)",
            "SELECT ARRAY[set_config('app.tenant_id', 'b', false)]",
            "VALUES (set_config('app.tenant_id', 'b', false))",
            "WITH x AS (SELECT set_config('app.tenant_id','b',false)) SELECT * FROM x",
            "COPY (SELECT set_config('app.tenant_id','b',false)) TO STDOUT",
            "SELECT set_config /* hidden */ ('app.tenant_id','b',false)",
            "SELECT set_config('app.' || 'tenant_id', 'x', false)",
            "SELECT set_config($1, 'x', false)",
            "SELECT set_config(E'app.tenant_id', 'x', false)",
            "SELECT set_config('APP.TENANT_ID', 'x', false)",
            "SELECT set_config('pgtenant.context', 'x', false)",
            "SELECT set_config('role', 'postgres', false)",
            "SELECT set_config(name, 'x', false) FROM pg_settings",
            "ALTER ROLE current_user SET app.tenant_id = 'x'",
            "ALTER DATABASE app SET app.tenant_id = 'x'",
        ] {
            let d = denial(sql).unwrap_or_else(|| panic!("allowed: {sql}"));
            assert!(d.starts_with("42501 the tenant context is managed by pgtenant"), "{sql}: {d}");
        }
    }

    #[test]
    fn dynamic_sql_and_side_channels_are_refused() {
        for sql in [
            "DO $$ BEGIN PERFORM 1; END $$",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
            "CREATE PROCEDURE p() LANGUAGE sql AS 'select 1'",
            "SELECT query_to_xml('select 1', true, true, '')",
            "SELECT pg_cancel_backend(123)",
            "SELECT pg_terminate_backend(123)",
            "SELECT * FROM pg_stat_activity",
            "SELECT * FROM pg_catalog.pg_locks",
            "SELECT lo_import('/etc/passwd')",
            "SELECT lo_get(1234)",
            "SELECT pg_advisory_lock(1)",
            "SELECT pg_read_file('/etc/passwd')",
            "COPY accounts TO PROGRAM 'cat'",
            "COPY accounts FROM '/etc/passwd'",
            "EXPLAIN ANALYZE SELECT * FROM accounts",
            "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM accounts",
            "SELECT pg_notify('c', 'x')",
            "LOAD 'plpgsql'",
            "SELECT U&\"!0073et_config\" UESCAPE '!' ('a','b',false)",
        ] {
            let d = denial(sql).unwrap_or_else(|| panic!("allowed: {sql}"));
            assert!(d.starts_with("42501 "), "{sql}: {d}");
        }
    }

    #[test]
    fn ordinary_sql_passes() {
        for sql in [
            "SET search_path = public",
            "SET statement_timeout = '5s'",
            "SET application_name = 'x'",
            "SET DateStyle = ISO",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "UPDATE accounts SET balance = 1 WHERE id = 3",
            "SELECT current_setting('app.tenant_id')",
            "EXPLAIN SELECT * FROM accounts",
            "EXPLAIN (ANALYZE false) SELECT 1",
            "COPY accounts TO STDOUT",
            "SELECT 'set_config(' AS text_only",
            "SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new",
            "SELECT set_config('jit', $1, false)",
            "SELECT lower('X')",
        ] {
            assert_eq!(denial(sql), None, "{sql}");
        }
    }

    #[test]
    fn resets_and_channels_are_noted() {
        assert!(inspect("RESET ALL", "app.tenant_id").resets_context);
        assert!(inspect("DISCARD ALL", "app.tenant_id").resets_context);
        assert!(!inspect("DISCARD PLANS", "app.tenant_id").resets_context);
        let sequences = inspect("DISCARD SEQUENCES", "app.tenant_id");
        assert!(sequences.resets_context && !sequences.wipes_settings);
        assert!(inspect("RESET ALL", "app.tenant_id").wipes_settings);
        let i = inspect("SELECT 1; NOTIFY jobs, 'it''s done'; LISTEN \"Mixed\"", "app.tenant_id");
        assert_eq!(i.channel_statements.len(), 2);
        assert_eq!(i.channel_statements[0].kind, ChannelCommand::Notify);
        assert_eq!(i.channel_statements[0].payload, "it's done");
        assert_eq!(i.channel_statements[1].channel, "Mixed");
    }

    #[test]
    fn unparsable_sql_is_refused() {
        let d = denial("SELEKT 1").unwrap();
        assert!(d.starts_with("42601 syntax error"), "{d}");
    }
}

#[cfg(test)]
mod session_state_tests {
    use super::*;

    #[test]
    fn statements_that_need_a_whole_session() {
        for sql in [
            "PREPARE p AS SELECT 1",
            "LISTEN jobs",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        ] {
            assert!(inspect(sql, "app.tenant_id").session_state, "{sql}");
        }
        for sql in [
            "SET statement_timeout = 5",
            "BEGIN; SET LOCAL statement_timeout = 5; COMMIT",
            "DECLARE c CURSOR FOR SELECT 1",
        ] {
            assert!(!inspect(sql, "app.tenant_id").session_state, "{sql}");
        }
        let i = inspect("SET statement_timeout = '5s'; RESET search_path", "app.tenant_id");
        assert_eq!(
            i.setting_changes,
            vec![
                ("statement_timeout".into(), Some("SET statement_timeout = '5s'".into())),
                ("search_path".into(), None)
            ]
        );
    }
}
