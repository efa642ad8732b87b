//! A client's own session settings (from its startup packet), kept as SQL
//! so they can follow the client to whichever pooled server session serves it.

use std::collections::BTreeMap;

use crate::quote::{quote_ident, quote_literal};

/// Settings whose values are lists of identifiers: quoting the whole value
/// as one string would make it a single element.
const IDENTIFIER_LISTS: &[&str] = &["search_path", "temp_tablespaces"];

/// Setting name (lower case) → the `SET` statement that applies it.
pub type Settings = BTreeMap<String, String>;

/// The settings of a client's startup parameters (already filtered by
/// [`super::params::upstream_params`]).
pub fn from_startup(params: &[(String, String)]) -> Settings {
    params.iter().map(|(name, value)| (name.to_ascii_lowercase(), set_statement(name, value))).collect()
}

/// `SET name TO value`, quoted as the server reads a startup value.
pub fn set_statement(name: &str, value: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let value_sql = if IDENTIFIER_LISTS.contains(&lower.as_str()) {
        let items: Vec<String> = split_identifier_list(value).iter().map(|item| quote_ident(item)).collect();
        if items.is_empty() {
            "''".to_string()
        } else {
            items.join(", ")
        }
    } else {
        quote_literal(value)
    };
    format!("SET {} TO {value_sql}", quote_ident(&lower))
}

/// The statements that turn a server session's `applied` settings into
/// `wanted`; `None` when they already match.
pub fn transition(applied: &Settings, wanted: &Settings) -> Option<String> {
    let mut sql = String::new();
    for name in applied.keys().filter(|k| !wanted.contains_key(*k)) {
        sql.push_str(&format!("RESET {};", quote_ident(name)));
    }
    for (name, statement) in wanted {
        if applied.get(name) != Some(statement) {
            sql.push_str(statement);
            sql.push(';');
        }
    }
    (!sql.is_empty()).then_some(sql)
}

/// Splits `a, "B c", d` as PostgreSQL's SplitIdentifierString does:
/// unquoted names are lower-cased, quoted ones kept.
fn split_identifier_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut item = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        item.push('"');
                    } else {
                        break;
                    }
                } else {
                    item.push(c);
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                item.push(c.to_ascii_lowercase());
                chars.next();
            }
        }
        items.push(item);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() == Some(&',') {
            chars.next();
        } else {
            break;
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        from_startup(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>())
    }

    #[test]
    fn statements_quote_values_as_the_server_reads_them() {
        assert_eq!(set_statement("application_name", "it's"), "SET \"application_name\" TO 'it''s'");
        assert_eq!(set_statement("DateStyle", "ISO, MDY"), "SET \"datestyle\" TO 'ISO, MDY'");
        assert_eq!(
            set_statement("search_path", "\"$user\", Public,\"My Schema\""),
            "SET \"search_path\" TO \"$user\", \"public\", \"My Schema\""
        );
    }

    #[test]
    fn transitions_reset_what_the_last_client_set_and_apply_the_rest() {
        let a = settings(&[("application_name", "a"), ("DateStyle", "ISO")]);
        let b = settings(&[("application_name", "b")]);
        assert_eq!(transition(&a, &a), None);
        assert_eq!(transition(&a, &b).unwrap(), "RESET \"datestyle\";SET \"application_name\" TO 'b';");
        assert_eq!(transition(&Settings::new(), &Settings::new()), None);
    }
}
