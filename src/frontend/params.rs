//! Which client startup parameters reach the server session.
//!
//! pgtenant writes the upstream startup packet itself: `user` and `database`
//! are its own, and a client parameter passes only if it is an ordinary
//! setting. Settings that carry or could replace the tenant context are refused.

use crate::error::{sqlstate, ClientError};
use crate::setting_rules::{self, CONTEXT_MANAGED};

/// Startup keys pgtenant consumes itself and never forwards.
const CONSUMED: &[&str] = &["user", "database", "replication", "options"];

/// Turns the client's startup parameters into the settings sent upstream.
pub fn upstream_params(
    params: &[(String, String)],
    tenant_setting: &str,
) -> Result<Vec<(String, String)>, ClientError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in params {
        if CONSUMED.contains(&name.as_str()) || name.starts_with("_pq_.") {
            continue;
        }
        check_setting(name, value, tenant_setting)?;
        out.push((name.clone(), value.clone()));
    }
    if let Some((_, options)) = params.iter().find(|(k, _)| k == "options") {
        for (name, value) in parse_options(options)? {
            check_setting(&name, &value, tenant_setting)?;
            out.retain(|(k, _)| !k.eq_ignore_ascii_case(&name));
            out.push((name, value));
        }
    }
    Ok(out)
}

fn check_setting(name: &str, value: &str, tenant_setting: &str) -> Result<(), ClientError> {
    let lower = name.to_ascii_lowercase();
    if setting_rules::is_reserved(&lower, &tenant_setting.to_ascii_lowercase()) {
        return Err(ClientError::fatal(sqlstate::INSUFFICIENT_PRIVILEGE, CONTEXT_MANAGED));
    }
    setting_rules::check_value(&lower, value).map_err(|e| ClientError::fatal(e.code, e.message))?;
    // A setting becomes a key of pgtenant's own upstream startup packet, after
    // its `user` and `database`; the server takes the last value of a key, so
    // `options=-c user=postgres` would log in as another role. PostgreSQL
    // itself reads such an option as an unknown setting: refuse it the same way.
    if CONSUMED.contains(&lower.as_str()) || lower.starts_with("_pq_.") {
        return Err(ClientError::fatal(
            sqlstate::UNDEFINED_OBJECT,
            format!("unrecognized configuration parameter \"{name}\""),
        ));
    }
    let valid = !name.is_empty()
        && name.split('.').count() <= 2
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if !valid {
        return Err(ClientError::fatal(
            sqlstate::UNDEFINED_OBJECT,
            format!("unrecognized configuration parameter \"{name}\""),
        ));
    }
    Ok(())
}

/// Parses libpq's `options` string: `-c name=value` and `--name=value` words,
/// with backslash escaping a space, as the PostgreSQL server reads it.
pub(crate) fn parse_options(options: &str) -> Result<Vec<(String, String)>, ClientError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => word.push(next),
                None => word.push('\\'),
            },
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let invalid = |w: &str| {
        ClientError::fatal(sqlstate::SYNTAX_ERROR, format!("invalid command-line argument for server process: {w}"))
    };
    let mut settings = Vec::new();
    let mut iter = words.iter();
    while let Some(w) = iter.next() {
        let assignment = if w == "-c" {
            iter.next().ok_or_else(|| invalid(w))?.as_str()
        } else if let Some(rest) = w.strip_prefix("--") {
            rest
        } else if let Some(rest) = w.strip_prefix("-c") {
            rest
        } else {
            return Err(invalid(w));
        };
        let (name, value) = assignment.split_once('=').ok_or_else(|| invalid(w))?;
        // The server treats '-' in option names as '_'.
        settings.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn ordinary_settings_pass_and_own_keys_are_dropped() {
        let out = upstream_params(
            &p(&[("user", "u"), ("database", "d"), ("application_name", "psql"), ("DateStyle", "ISO")]),
            "app.tenant_id",
        )
        .unwrap();
        assert_eq!(out, p(&[("application_name", "psql"), ("DateStyle", "ISO")]));
    }

    #[test]
    fn options_become_settings() {
        let out = upstream_params(
            &p(&[("options", "-c search_path=a,b --statement-timeout=5s -cwork_mem=1MB")]),
            "app.tenant_id",
        )
        .unwrap();
        assert_eq!(out, p(&[("search_path", "a,b"), ("statement_timeout", "5s"), ("work_mem", "1MB")]));
        assert_eq!(parse_options(r"-c application_name=a\ b").unwrap(), p(&[("application_name", "a b")]));
    }

    #[test]
    fn context_settings_are_refused_in_any_spelling() {
        for params in [
            p(&[("app.tenant_id", "x")]),
            p(&[("APP.TENANT_ID", "x")]),
            p(&[("pgtenant.tenant_id", "x")]),
            p(&[("role", "postgres")]),
            p(&[("options", "-c app.tenant_id=x")]),
            p(&[("options", "--pgtenant.visible_tenants={}")]),
            p(&[("options", "-c session_authorization=postgres")]),
        ] {
            let err = upstream_params(&params, "app.tenant_id").unwrap_err();
            assert_eq!(err.code, "42501", "{params:?}");
        }
    }

    /// Found by the `startup` fuzz target: an option named like a startup key
    /// became a second `user` (or `database`, `replication`) key upstream.
    #[test]
    fn options_cannot_name_startup_keys() {
        for options in [
            "-c user=postgres",
            "--user=postgres",
            "-c database=postgres",
            "-c replication=database",
            "-c options=-c\\ role=postgres",
            "-c _pq_.protocol_managed=x",
            "-c USER=postgres",
        ] {
            let err = upstream_params(&p(&[("user", "alice"), ("options", options)]), "app.tenant_id").unwrap_err();
            assert_eq!(err.code, "42704", "{options}");
        }
        // Mixed-case raw keys are settings to PostgreSQL (which refuses them), not the user.
        let err = upstream_params(&p(&[("User", "postgres")]), "app.tenant_id").unwrap_err();
        assert_eq!(err.code, "42704");
    }

    #[test]
    fn settings_that_change_how_text_is_read_are_refused() {
        for params in [
            p(&[("standard_conforming_strings", "off")]),
            p(&[("options", "-c standard_conforming_strings=off")]),
            p(&[("client_encoding", "SJIS")]),
            p(&[("options", "--client-encoding=BIG5")]),
        ] {
            let err = upstream_params(&params, "app.tenant_id").unwrap_err();
            assert_eq!((err.code.code(), err.severity), ("42501", crate::error::Severity::Fatal), "{params:?}");
        }
        assert!(upstream_params(&p(&[("client_encoding", "UTF8")]), "app.tenant_id").is_ok());
    }

    #[test]
    fn malformed_options_are_refused() {
        assert!(parse_options("search_path=x").is_err());
        assert!(parse_options("-c").is_err());
        assert!(upstream_params(&p(&[("bad name", "x")]), "app.tenant_id").is_err());
    }
}
