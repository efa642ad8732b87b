//! Names the guard refuses wherever they appear in a statement.

/// Why a name is refused; decides the client's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Danger {
    /// Could change or forge the tenant context.
    Context,
    /// Runs SQL the parser cannot see.
    DynamicSql,
    /// Reaches other sessions of the shared role (signals, activity, locks).
    OtherSessions,
    /// Large objects are shared by every tenant of the session role.
    LargeObjects,
    /// Server files and programs.
    ServerFiles,
    /// Notifications cross tenants unless pgtenant scopes the channel.
    Notify,
}

/// Functions refused by exact (lower-case) name.
const FUNCTIONS: &[(&str, Danger)] = &[
    ("set_config", Danger::Context),
    ("set_context", Danger::Context),
    ("context_payload", Danger::Context),
    ("dblink", Danger::DynamicSql),
    ("dblink_exec", Danger::DynamicSql),
    ("dblink_open", Danger::DynamicSql),
    ("dblink_send_query", Danger::DynamicSql),
    ("pg_cancel_backend", Danger::OtherSessions),
    ("pg_terminate_backend", Danger::OtherSessions),
    ("pg_stat_get_activity", Danger::OtherSessions),
    ("pg_stat_get_backend_idset", Danger::OtherSessions),
    ("pg_blocking_pids", Danger::OtherSessions),
    ("pg_safe_snapshot_blocking_pids", Danger::OtherSessions),
    ("pg_stat_statements", Danger::OtherSessions),
    ("pg_stat_statements_reset", Danger::OtherSessions),
    ("pg_reload_conf", Danger::OtherSessions),
    ("pg_rotate_logfile", Danger::OtherSessions),
    ("pg_log_backend_memory_contexts", Danger::OtherSessions),
    ("loread", Danger::LargeObjects),
    ("lowrite", Danger::LargeObjects),
    ("pg_read_file", Danger::ServerFiles),
    ("pg_read_binary_file", Danger::ServerFiles),
    ("pg_stat_file", Danger::ServerFiles),
    ("pg_notify", Danger::Notify),
    ("pg_prepared_xact", Danger::OtherSessions),
];

/// Function name prefixes refused.
const FUNCTION_PREFIXES: &[(&str, Danger)] = &[
    ("lo_", Danger::LargeObjects),
    ("pg_advisory", Danger::OtherSessions),
    ("pg_try_advisory", Danger::OtherSessions),
    ("pg_stat_get_backend", Danger::OtherSessions),
    ("pg_ls_", Danger::ServerFiles),
    ("pg_file_", Danger::ServerFiles),
    ("dblink", Danger::DynamicSql),
];

/// Relations refused wherever named: they show other sessions of the role.
const RELATIONS: &[&str] = &[
    "pg_stat_activity",
    "pg_locks",
    "pg_stat_statements",
    "pg_largeobject",
    "pg_largeobject_metadata",
    "pg_prepared_xacts",
];

/// The view of a server session's prepared statements and the function
/// behind it: in transaction pooling they list other clients' statements.
const POOLED_STATEMENT_VIEWS: &[&str] = &["pg_prepared_statements", "pg_prepared_statement"];

/// The danger of calling `name` (lower case), if any.
pub(crate) fn function_danger(name: &str) -> Option<Danger> {
    // Releasing one's own advisory locks reaches no one (asyncpg's pool does
    // it on every release).
    if name.starts_with("pg_advisory_unlock") {
        return None;
    }
    if let Some((_, danger)) = FUNCTIONS.iter().find(|(f, _)| *f == name) {
        return Some(*danger);
    }
    if let Some((_, danger)) = FUNCTION_PREFIXES.iter().find(|(p, _)| name.starts_with(p)) {
        return Some(*danger);
    }
    // query_to_xml, cursor_to_xml, table_to_xml, schema_to_xml, database_to_xml
    // and their *_and_xmlschema forms run SQL given as text.
    if name.contains("_to_xml") {
        return Some(Danger::DynamicSql);
    }
    None
}

/// True when `name` (lower case) reads the server session's prepared statements.
pub(crate) fn reads_pooled_statements(name: &str) -> bool {
    POOLED_STATEMENT_VIEWS.contains(&name)
}

/// True when `name` (lower case) is a refused relation.
pub(crate) fn relation_refused(name: &str) -> bool {
    RELATIONS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes() {
        assert_eq!(function_danger("set_config"), Some(Danger::Context));
        assert_eq!(function_danger("lo_import"), Some(Danger::LargeObjects));
        assert_eq!(function_danger("pg_advisory_xact_lock"), Some(Danger::OtherSessions));
        assert_eq!(function_danger("query_to_xml_and_xmlschema"), Some(Danger::DynamicSql));
        assert_eq!(function_danger("lower"), None);
        assert_eq!(function_danger("pg_advisory_unlock_all"), None);
        assert_eq!(function_danger("now"), None);
        assert!(relation_refused("pg_stat_activity"));
        assert!(!relation_refused("accounts"));
    }
}

#[cfg(test)]
mod prescan_coverage {
    use super::*;
    use crate::guard::prescan::needs_parse;

    #[test]
    fn every_refused_name_sends_its_statement_to_the_parser() {
        for (name, _) in FUNCTIONS.iter().chain(FUNCTION_PREFIXES) {
            assert!(needs_parse(&format!("SELECT {name}(1)")), "{name}");
            assert!(needs_parse(&format!("SELECT \"{}\"(1)", name.to_uppercase())), "{name}");
        }
        for name in RELATIONS {
            assert!(needs_parse(&format!("SELECT * FROM {name}")), "{name}");
        }
        assert!(needs_parse("SELECT query_to_xml('x', true, true, '')"));
    }
}
