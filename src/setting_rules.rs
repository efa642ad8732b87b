//! Which session settings a client may change, and to what: one leaf module
//! read by the startup filter, the statement guard and the relay.
//!
//! Two kinds of settings are protected. The *context* settings carry or could
//! replace the tenant context (the tenant setting, `pgtenant.*`, the strict
//! context's `pgtenant_native.*`, the role).
//! The *lexical* settings change how the server reads statement text
//! (`standard_conforming_strings`, `client_encoding`): the guard reads a
//! client's SQL as PostgreSQL does with standard-conforming strings and an
//! encoding in which every ASCII byte is that character, so a client may not
//! leave either state — otherwise the server would run text the guard read as
//! a string literal.

use crate::error::{sqlstate, ClientError};

/// The message of every refusal that protects the tenant context.
pub(crate) const CONTEXT_MANAGED: &str =
    "the tenant context is managed by pgtenant and cannot be changed by the client";

/// True when no client may change `name` (lower case): the tenant setting
/// (`tenant_setting`, lower case), pgtenant's own settings and its
/// extension's, the role.
pub(crate) fn is_reserved(name: &str, tenant_setting: &str) -> bool {
    let name = name.trim();
    name == tenant_setting
        || name.starts_with("pgtenant.")
        || name.starts_with("pgtenant_native.")
        || name == "role"
        || name == "session_authorization"
}

/// True for `prefix.name` where both parts are plain identifiers.
pub(crate) fn is_custom_setting_name(name: &str) -> bool {
    let mut parts = name.split('.');
    let ident = |s: &str| {
        let mut chars = s.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None) if ident(a) && ident(b))
}

/// True for settings that last one transaction only (`SET TRANSACTION …`):
/// nothing of them is session state to carry to another server session.
pub(crate) fn is_transaction_scoped(name: &str) -> bool {
    matches!(name, "transaction_isolation" | "transaction_read_only" | "transaction_deferrable")
}

/// True for settings pgtenant's own exchanges are indifferent to (every name
/// they use is schema-qualified, every value they send is ASCII, and no
/// date, float or bytea value crosses them as text). Any other setting a
/// client left on a server session is reset before pgtenant installs
/// another tenant's context there: a read-only default, a timeout, a
/// plpgsql option or `row_security` could make that exchange fail.
pub(crate) fn leaves_own_exchanges_alone(name: &str) -> bool {
    matches!(
        name,
        "application_name"
            | "client_encoding"
            | "datestyle"
            | "intervalstyle"
            | "timezone"
            | "extra_float_digits"
            | "bytea_output"
            | "search_path"
    )
}

/// True for the settings that change how the server reads statement text.
pub(crate) fn is_lexical(name: &str) -> bool {
    matches!(name, "standard_conforming_strings" | "client_encoding")
}

/// Refuses a value of a lexical setting under which the server would read
/// statement text differently from the guard. `name` is lower case; other
/// settings pass.
pub(crate) fn check_value(name: &str, value: &str) -> Result<(), ClientError> {
    if lexing_is_safe(name, value) {
        return Ok(());
    }
    let message = if name == "client_encoding" {
        format!(
            "client_encoding \"{value}\" is not supported through pgtenant: in it a quote or backslash byte can \
             hide inside a multibyte character, so pgtenant would read statements differently from the server; \
             use UTF8"
        )
    } else {
        "standard_conforming_strings cannot be turned off through pgtenant: pgtenant reads statements as \
         PostgreSQL does with it on; write backslash escapes as E'...' strings"
            .to_owned()
    };
    Err(ClientError::error(sqlstate::INSUFFICIENT_PRIVILEGE, message))
}

/// False when a server session in this state would read statement text
/// differently from the guard (also used on the ParameterStatus the server
/// reports, whatever changed it).
pub(crate) fn lexing_is_safe(name: &str, value: &str) -> bool {
    match name {
        "standard_conforming_strings" => is_true(value),
        "client_encoding" => ascii_transparent_encoding(value),
        _ => true,
    }
}

/// PostgreSQL's spellings of a true boolean (parse_bool: unique prefixes of
/// `true` and `yes`, `on`, `1`), case-insensitive.
fn is_true(value: &str) -> bool {
    let value = value.trim().to_ascii_lowercase();
    !value.is_empty() && ("true".starts_with(&value) || "yes".starts_with(&value) || value == "on" || value == "1")
}

/// Encodings in which every byte below 0x80 stands for its ASCII character,
/// by PostgreSQL's names and aliases (compared as PostgreSQL does: letters and
/// digits only, lower case). The client-only encodings SJIS, BIG5, GBK, UHC,
/// GB18030 and JOHAB use ASCII bytes inside multibyte characters and are not
/// among them; neither is any name PostgreSQL does not know.
fn ascii_transparent_encoding(value: &str) -> bool {
    let name: String = value.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    const EXACT: &[&str] = &[
        "utf8",
        "unicode",
        "sqlascii",
        "muleinternal",
        "win",
        "alt",
        "abc",
        "vscii",
        "win866",
        "windows866",
        "win874",
        "windows874",
    ];
    const PREFIXES: &[&str] = &["latin", "iso8859", "win125", "windows125", "koi8", "euc", "tcvn"];
    EXACT.contains(&name.as_str()) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Whether `name` has the form of a schema, database or role pgtenant made
/// for a schema or database tenant (`pgt_<32 hex>`, `_ro` for its readonly role).
pub(crate) fn is_tenant_object_name(name: &str) -> bool {
    let Some(hex) = name.strip_prefix("pgt_") else { return false };
    let hex = hex.strip_suffix("_ro").unwrap_or(hex);
    hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The first schema of a `search_path` value (in `set_config()` form) that
/// belongs to a tenant other than `own`: a session may name its own
/// tenant's schema and any ordinary one, never another tenant's.
pub(crate) fn foreign_tenant_schema(search_path: &str, own: Option<&str>) -> Option<String> {
    search_path_entries(search_path)
        .into_iter()
        .find(|schema| is_tenant_object_name(schema) && Some(schema.as_str()) != own)
}

/// The schema names of a search_path list as the server reads them:
/// unquoted names lower-cased, quoted ones verbatim with `""` undoubled.
fn search_path_entries(value: &str) -> Vec<String> {
    let mut entries = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        let Some(&first) = chars.peek() else { break };
        let mut name = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.next_if_eq(&'"').is_some() {
                        name.push('"');
                        continue;
                    }
                    break;
                }
                name.push(c);
            }
            while chars.next_if(|c| *c != ',').is_some() {}
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                name.push(c);
            }
            name = name.trim().to_ascii_lowercase();
        }
        entries.push(name);
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names() {
        for name in ["app.tenant_id", "pgtenant.context", "pgtenant_native.tenant", "role", "session_authorization"] {
            assert!(is_reserved(name, "app.tenant_id"), "{name}");
        }
        assert!(!is_reserved("application_name", "app.tenant_id"));
    }

    #[test]
    fn standard_conforming_strings_must_stay_on() {
        for value in ["on", "ON", "true", "t", "yes", "1"] {
            assert!(check_value("standard_conforming_strings", value).is_ok(), "{value}");
        }
        for value in ["off", "false", "0", "no", "f", "of", ""] {
            let err = check_value("standard_conforming_strings", value).unwrap_err();
            assert_eq!(err.code, "42501", "{value}");
        }
    }

    #[test]
    fn encodings_that_hide_ascii_bytes_are_refused() {
        for value in ["UTF8", "utf-8", "Unicode", "LATIN1", "ISO_8859_5", "WIN1252", "EUC_JP", "KOI8R", "SQL_ASCII"] {
            assert!(check_value("client_encoding", value).is_ok(), "{value}");
        }
        for value in [
            "SJIS",
            "Shift_JIS",
            "SHIFT_JIS_2004",
            "mskanji",
            "WIN932",
            "BIG5",
            "Windows950",
            "GBK",
            "WIN936",
            "UHC",
            "GB18030",
            "JOHAB",
        ] {
            let err = check_value("client_encoding", value).unwrap_err();
            assert_eq!(err.code, "42501", "{value}");
            assert!(err.message.contains("use UTF8"), "{}", err.message);
        }
        assert!(check_value("application_name", "SJIS").is_ok());
    }

    #[test]
    fn search_paths_naming_another_tenants_schema_are_found() {
        let own = "pgt_0123456789abcdef0123456789abcdef";
        let other = "pgt_fedcba9876543210fedcba9876543210";
        assert_eq!(foreign_tenant_schema(own, Some(own)), None);
        assert_eq!(foreign_tenant_schema("public, pg_catalog", Some(own)), None);
        assert_eq!(foreign_tenant_schema(&format!("public, {other}"), Some(own)).as_deref(), Some(other));
        assert_eq!(foreign_tenant_schema(&format!("\"{other}\""), Some(own)).as_deref(), Some(other));
        assert_eq!(
            foreign_tenant_schema(&other.to_uppercase().replace("PGT_", "pgt_"), Some(own)).as_deref(),
            Some(other)
        );
        assert_eq!(
            foreign_tenant_schema(&format!("\"$user\",{own}_ro"), Some(own)).as_deref(),
            Some(format!("{own}_ro").as_str())
        );
        assert_eq!(foreign_tenant_schema(own, None).as_deref(), Some(own));
        // Quoted, a name keeps its case: another schema, not a tenant's.
        assert_eq!(foreign_tenant_schema(&format!("\"{}\"", other.to_uppercase()), Some(own)), None);
    }
}
