//! A client's own session settings, carried to whichever pooled server
//! session serves it.
//!
//! A setting is kept as its name and its value in the form `set_config()`
//! and a startup packet take. pgtenant applies it with
//! `SELECT pg_catalog.set_config($1, $2, false)` — name and value as bind
//! parameters, a NULL value to reset — never as SQL text: text built from a
//! client's value would be read under whatever `standard_conforming_strings`
//! and `client_encoding` the server session has, and could become SQL.

use std::collections::BTreeMap;

use bytes::BytesMut;

use crate::protocol::frontend;

/// Setting name (lower case) → value.
pub(crate) type Settings = BTreeMap<String, String>;

/// pgtenant's one statement that changes a setting.
const SET_CONFIG_SQL: &str = "SELECT pg_catalog.set_config($1, $2, false)";

/// The settings of a client's startup parameters (already filtered by the
/// frontend).
pub(crate) fn from_startup(params: &[(String, String)]) -> Settings {
    params.iter().map(|(name, value)| (name.to_ascii_lowercase(), value.clone())).collect()
}

/// One change of one setting: a value to set, or `None` to reset it.
pub(crate) type Change<'a> = (&'a str, Option<&'a str>);

/// The changes that turn a server session's `applied` settings into
/// `wanted`: resets first, then the values, `client_encoding` first among
/// them (the client wrote the others' bytes in it).
pub(crate) fn transition<'a>(applied: &'a Settings, wanted: &'a Settings) -> Vec<Change<'a>> {
    let resets = applied.keys().filter(|name| !wanted.contains_key(*name)).map(|name| (name.as_str(), None));
    let sets = in_application_order(wanted)
        .filter(|(name, value)| applied.get(*name) != Some(*value))
        .map(|(name, value)| (name.as_str(), Some(value.as_str())));
    resets.chain(sets).collect()
}

/// `settings` in the order they are applied: `client_encoding` first.
pub(crate) fn in_application_order(settings: &Settings) -> impl Iterator<Item = (&String, &String)> {
    let encoding = settings.get_key_value("client_encoding");
    encoding.into_iter().chain(settings.iter().filter(|(name, _)| name.as_str() != "client_encoding"))
}

/// Appends one change as its own exchange (Parse/Bind/Execute/Sync), so that
/// a value the server refuses fails alone. The server answers with one
/// ReadyForQuery.
pub(crate) fn encode_change(buf: &mut BytesMut, (name, value): Change<'_>) {
    frontend::parse_unnamed(buf, SET_CONFIG_SQL);
    frontend::bind_unnamed(buf, &[Some(name), value]);
    frontend::execute_unnamed(buf);
    frontend::sync(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        from_startup(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>())
    }

    #[test]
    fn transitions_reset_what_the_last_client_set_and_apply_the_rest() {
        let a = settings(&[("application_name", "a"), ("DateStyle", "ISO")]);
        let b = settings(&[("application_name", "b"), ("client_encoding", "LATIN1")]);
        assert_eq!(transition(&a, &a), vec![]);
        assert_eq!(
            transition(&a, &b),
            vec![("datestyle", None), ("client_encoding", Some("LATIN1")), ("application_name", Some("b"))]
        );
        assert_eq!(transition(&Settings::new(), &Settings::new()), vec![]);
    }

    #[test]
    fn values_travel_as_bind_parameters() {
        let value = "x';DO $$ BEGIN END $$;--\\";
        let mut buf = BytesMut::new();
        encode_change(&mut buf, ("application_name", Some(value)));
        let parse_len = u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
        let parse = &buf[..1 + parse_len];
        assert!(parse.windows(SET_CONFIG_SQL.len()).any(|w| w == SET_CONFIG_SQL.as_bytes()));
        assert!(!parse.windows(value.len()).any(|w| w == value.as_bytes()), "the value is not in the statement");
        assert!(buf.windows(value.len()).any(|w| w == value.as_bytes()), "the value is a parameter");
    }
}
