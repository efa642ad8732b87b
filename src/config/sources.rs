//! Where configuration values come from besides the file:
//! `PGTENANT_<SECTION>__<KEY>` environment overrides (always strings), and
//! the deserializers that accept a string where TOML would have a number or
//! a boolean.

use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use super::{ConfigError, CONFIG_PATH_VAR, ENV_PREFIX};

pub(super) fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// Applies `PGTENANT_<SECTION>__<KEY>=value` overrides as strings; typed
/// fields accept strings through [`from_str_or_native`].
pub(super) fn apply_env(root: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if name == CONFIG_PATH_VAR {
            continue;
        }
        let Some((section, key)) = rest.split_once("__") else {
            return Err(ConfigError::new(name.clone(), "expected PGTENANT_<SECTION>__<KEY>"));
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        if section == "tenants" {
            return Err(ConfigError::new(name.clone(), "per-tenant overrides are set in the config file only"));
        }
        if section == "upstreams" {
            return Err(ConfigError::new(name.clone(), "[upstreams.<name>] sections are set in the config file only"));
        }
        let table = root.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(table) = table else {
            return Err(ConfigError::new(section, "must be a table"));
        };
        table.insert(key, toml::Value::String(value.clone()));
    }
    Ok(())
}

/// [`from_str_or_native`] for an optional key.
pub(super) fn optional_from_str_or_native<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr + Deserialize<'de>,
    T::Err: std::fmt::Display,
{
    from_str_or_native(deserializer).map(Some)
}

/// Accepts either the native TOML type or a string parsed with `FromStr`
/// (environment overrides are always strings).
pub(super) fn from_str_or_native<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr + Deserialize<'de>,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        Text(String),
        Native(T),
    }
    match Either::<T>::deserialize(deserializer)? {
        Either::Text(s) => s.trim().parse().map_err(serde::de::Error::custom),
        Either::Native(v) => Ok(v),
    }
}
