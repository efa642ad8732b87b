//! Configuration: a TOML file, then `PGTENANT_<SECTION>__<KEY>` environment
//! overrides, then validation. Every failure names the key it is about.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod observability;
mod tenant_limits;

pub use observability::{AuditConfig, AuditLevel, LogConfig, LogFormat, MetricsConfig};
pub(crate) use tenant_limits::TenantLimits;
pub use tenant_limits::TenantOverrides;

/// The whole configuration of `serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub control: ControlConfig,
    #[serde(default)]
    pub pool: PoolSection,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    /// Per-tenant overrides, keyed by tenant slug (`[tenants.<slug>]`).
    #[serde(default)]
    pub tenants: std::collections::BTreeMap<String, TenantOverrides>,
    /// More servers tenants can be placed on (`[upstreams.<name>]`); `[upstream]` is `default`.
    #[serde(default)]
    pub upstreams: std::collections::BTreeMap<String, PlacementUpstream>,
    #[serde(default)]
    pub provisioning: ProvisioningConfig,
    /// Logins with a JSON Web Token as the password.
    #[serde(default)]
    pub jwt: JwtConfig,
}

/// The name of the `[upstream]` section among the placements.
pub(crate) const DEFAULT_UPSTREAM: &str = "default";

/// One more server tenants can be placed on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementUpstream {
    /// Login role of readwrite sessions of shared tenants placed here.
    pub url: String,
    #[serde(default)]
    pub readonly_url: Option<String>,
    /// Role that creates tenant roles, schemas and databases here (CREATEROLE, CREATEDB).
    pub admin_url: Option<String>,
    /// Server connections per pool on this server (default: `pool.size`).
    #[serde(default, deserialize_with = "optional_from_str_or_native")]
    pub pool_size: Option<usize>,
}

/// Where schema and database tenants come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisioningConfig {
    /// Folder of versioned tenant migrations (`0001_name.sql`, …).
    pub migrations: Option<PathBuf>,
    /// Template database of new database tenants (default: the server's template1).
    pub template: Option<String>,
}

/// A server tenants are placed on, whichever section it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placement {
    pub name: String,
    pub url: String,
    pub readonly_url: Option<String>,
    /// Provisioning connects here; `control.url` for the default upstream when unset.
    pub admin_url: Option<String>,
    /// Server connections per pool here; `pool.size` when unset.
    pub pool_size: Option<usize>,
}

/// More session threads than this is a typo, not a machine.
const MAX_WORKER_THREADS: usize = 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    #[serde(deserialize_with = "from_str_or_native")]
    pub listen: SocketAddr,
    pub tenant_setting: String,
    /// The database name clients must ask for; defaults to the upstream URL's database.
    pub database: Option<String>,
    #[serde(deserialize_with = "from_str_or_native")]
    pub max_client_connections: usize,
    /// Largest protocol message a client may send, in bytes.
    #[serde(deserialize_with = "from_str_or_native")]
    pub max_message_bytes: usize,
    /// Seconds a client has to finish startup and authentication.
    #[serde(deserialize_with = "from_str_or_native")]
    pub startup_timeout_secs: u64,
    /// The statement guard (layer L3). Turning it off is for measuring its
    /// cost only: the database-side layers still hold, but refusals lose
    /// their clear messages and the compatibility setting loses its protection.
    #[serde(deserialize_with = "from_str_or_native")]
    pub statement_guard: bool,
    /// Where this process takes cancel requests other pgtenant processes on
    /// the same catalog pass on (sql/0013); it must be reachable from them.
    #[serde(deserialize_with = "from_str_or_native")]
    pub cancel_listen: SocketAddr,
    /// Let several pgtenant processes listen on `listen` (SO_REUSEPORT).
    #[serde(deserialize_with = "from_str_or_native")]
    pub reuse_port: bool,
    /// Threads that run sessions: 0 for one per core (a work-stealing
    /// runtime), 1 for a single thread that never hands a client to another
    /// (lowest latency; with `reuse_port`, one process per core scales it).
    #[serde(deserialize_with = "from_str_or_native")]
    pub worker_threads: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 6432)),
            tenant_setting: "app.tenant_id".into(),
            database: None,
            max_client_connections: 10_000,
            max_message_bytes: 64 * 1024 * 1024,
            startup_timeout_secs: 15,
            statement_guard: true,
            cancel_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            reuse_port: false,
            worker_threads: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_listen", deserialize_with = "from_str_or_native")]
    pub listen: SocketAddr,
    pub token: String,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8432))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub url: String,
    #[serde(default)]
    pub readonly_url: Option<String>,
    /// Role that creates tenant roles, schemas and databases (default: `control.url`).
    #[serde(default)]
    pub admin_url: Option<String>,
    #[serde(default = "default_connect_timeout", deserialize_with = "from_str_or_native")]
    pub connect_timeout_secs: u64,
}

fn default_connect_timeout() -> u64 {
    5
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    pub url: String,
    #[serde(default = "default_control_pool", deserialize_with = "from_str_or_native")]
    pub pool_size: usize,
}

fn default_control_pool() -> usize {
    4
}

/// When a server session goes back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// When the client disconnects.
    Session,
    /// At the end of each transaction (ReadyForQuery idle).
    Transaction,
}

impl PoolMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

impl std::str::FromStr for PoolMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "session" => Ok(PoolMode::Session),
            "transaction" => Ok(PoolMode::Transaction),
            other => Err(format!("unknown pool mode {other:?} (session | transaction)")),
        }
    }
}

/// What transaction pooling does with features that need a whole session
/// (SQL PREPARE, WITH HOLD cursors, LISTEN, SET SESSION CHARACTERISTICS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionFeatures {
    /// Keep the client on its server session until it disconnects.
    Pin,
    /// Refuse them with 0A000.
    Refuse,
}

impl std::str::FromStr for SessionFeatures {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pin" => Ok(SessionFeatures::Pin),
            "refuse" => Ok(SessionFeatures::Refuse),
            other => Err(format!("unknown value {other:?} (pin | refuse)")),
        }
    }
}

/// The upstream pools (one per session role).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSection {
    #[serde(deserialize_with = "from_str_or_native")]
    pub mode: PoolMode,
    /// Server sessions per session role.
    #[serde(deserialize_with = "from_str_or_native")]
    pub size: usize,
    #[serde(deserialize_with = "from_str_or_native")]
    pub min_idle: usize,
    #[serde(deserialize_with = "from_str_or_native")]
    pub max_lifetime_secs: u64,
    #[serde(deserialize_with = "from_str_or_native")]
    pub idle_timeout_secs: u64,
    /// Seconds a client waits for a server session before 53300.
    #[serde(deserialize_with = "from_str_or_native")]
    pub checkout_timeout_secs: u64,
    /// Server sessions one tenant may hold at once (0: no limit).
    #[serde(deserialize_with = "from_str_or_native")]
    pub max_per_tenant: usize,
    #[serde(deserialize_with = "from_str_or_native")]
    pub session_features: SessionFeatures,
    /// Milliseconds a client request may keep its server session busy before
    /// pgtenant cancels it (0: no limit); `[tenants.<slug>]` may override it.
    #[serde(deserialize_with = "from_str_or_native")]
    pub statement_timeout_ms: u64,
}

impl Default for PoolSection {
    fn default() -> Self {
        PoolSection {
            mode: PoolMode::Session,
            size: 20,
            min_idle: 0,
            max_lifetime_secs: 3600,
            idle_timeout_secs: 600,
            checkout_timeout_secs: 5,
            max_per_tenant: 0,
            session_features: SessionFeatures::Pin,
            statement_timeout_ms: 0,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(deserialize_with = "from_str_or_native")]
    pub required: bool,
    /// Offer cleartext password authentication (for clients without SCRAM)
    /// on TLS connections; plain connections always use SCRAM-SHA-256.
    #[serde(deserialize_with = "from_str_or_native")]
    pub cleartext_password: bool,
}

/// A configuration problem, reported as one line naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError { key: key.into(), problem: problem.into() }
    }
}

pub(super) const ENV_PREFIX: &str = "PGTENANT_";
pub(super) const CONFIG_PATH_VAR: &str = "PGTENANT_CONFIG";

impl Config {
    /// Loads the file (`explicit`, else `$PGTENANT_CONFIG`, else `./config.toml`,
    /// which may be missing), applies the process environment and validates.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let (path, must_exist) = match explicit {
            Some(p) => (p.to_path_buf(), true),
            None => match env.iter().find(|(k, _)| k == CONFIG_PATH_VAR) {
                Some((_, p)) => (PathBuf::from(p), true),
                None => (PathBuf::from("config.toml"), false),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => String::new(),
            Err(e) => return Err(ConfigError::new("--config", format!("{}: {e}", path.display()))),
        };
        Self::from_sources(&text, &env)
    }

    /// Builds a config from TOML text and `(name, value)` environment pairs.
    pub fn from_sources(toml_text: &str, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut root: toml::Table =
            toml::from_str(toml_text).map_err(|e| ConfigError::new("config file", e.message().to_string()))?;
        apply_env(&mut root, env)?;
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(root)).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().to_string();
            // serde names a missing field inside the message, not in the path.
            match missing_field(&message) {
                Some(field) if path == "." => ConfigError::new(field, "is required"),
                Some(field) => ConfigError::new(format!("{path}.{field}"), "is required"),
                None => ConfigError::new(path, message),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !crate::setting_rules::is_custom_setting_name(&self.proxy.tenant_setting) {
            return Err(ConfigError::new(
                "proxy.tenant_setting",
                "must be a custom setting name of the form prefix.name (letters, digits, _)",
            ));
        }
        if self.proxy.tenant_setting.to_ascii_lowercase().starts_with("pgtenant.") {
            return Err(ConfigError::new("proxy.tenant_setting", "the pgtenant. prefix is reserved"));
        }
        if self.proxy.max_message_bytes < 1024 {
            return Err(ConfigError::new("proxy.max_message_bytes", "must be at least 1024"));
        }
        if self.proxy.worker_threads > MAX_WORKER_THREADS {
            return Err(ConfigError::new(
                "proxy.worker_threads",
                format!("must be at most {MAX_WORKER_THREADS} (0: one per core)"),
            ));
        }
        if self.proxy.max_client_connections == 0 {
            return Err(ConfigError::new("proxy.max_client_connections", "must be at least 1"));
        }
        if self.admin.token.len() < 16 {
            return Err(ConfigError::new("admin.token", "must be at least 16 characters"));
        }
        check_postgres_url("upstream.url", &self.upstream.url)?;
        if let Some(url) = &self.upstream.readonly_url {
            check_postgres_url("upstream.readonly_url", url)?;
        }
        if let Some(url) = &self.upstream.admin_url {
            check_postgres_url("upstream.admin_url", url)?;
        }
        check_postgres_url("control.url", &self.control.url)?;
        for (name, placement) in &self.upstreams {
            if !is_upstream_name(name) || name == DEFAULT_UPSTREAM {
                return Err(ConfigError::new(
                    format!("upstreams.{name}"),
                    "must be a name of [a-z0-9_][a-z0-9_-]{0,62} other than `default` (the [upstream] section)",
                ));
            }
            check_postgres_url(&format!("upstreams.{name}.url"), &placement.url)?;
            if let Some(url) = &placement.readonly_url {
                check_postgres_url(&format!("upstreams.{name}.readonly_url"), url)?;
            }
            if let Some(url) = &placement.admin_url {
                check_postgres_url(&format!("upstreams.{name}.admin_url"), url)?;
            }
            if placement.pool_size == Some(0) {
                return Err(ConfigError::new(format!("upstreams.{name}.pool_size"), "must be at least 1"));
            }
        }
        if let Some(folder) = &self.provisioning.migrations {
            crate::tenancy::provision::TenantMigration::load_folder(folder)
                .map_err(|problem| ConfigError::new("provisioning.migrations", problem))?;
        }
        if let Some(template) = &self.provisioning.template {
            if template.is_empty() || template.len() > 63 {
                return Err(ConfigError::new("provisioning.template", "must be a database name (1 to 63 bytes)"));
            }
        }
        if self.pool.size == 0 {
            return Err(ConfigError::new("pool.size", "must be at least 1"));
        }
        if self.pool.min_idle > self.pool.size {
            return Err(ConfigError::new("pool.min_idle", "must not exceed pool.size"));
        }
        if self.control.pool_size == 0 {
            return Err(ConfigError::new("control.pool_size", "must be at least 1"));
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => return Err(ConfigError::new("tls.key", "is required when tls.cert is set")),
            (None, Some(_)) => return Err(ConfigError::new("tls.cert", "is required when tls.key is set")),
            (None, None) if self.tls.required => {
                return Err(ConfigError::new("tls.required", "needs tls.cert and tls.key"))
            }
            _ => {}
        }
        if self.tls.cleartext_password && self.tls.cert.is_none() {
            return Err(ConfigError::new("tls.cleartext_password", "needs tls.cert and tls.key"));
        }
        for slug in self.tenants.keys() {
            if crate::tenancy::validate::slug(slug).is_err() {
                return Err(ConfigError::new(
                    format!("tenants.{slug}"),
                    "is not a tenant slug ([a-z0-9][a-z0-9-]{0,62})",
                ));
            }
        }
        self.jwt.validate()?;
        let rate_ok = |rate: f64| (0.0..=1.0).contains(&rate);
        if !rate_ok(self.audit.sample_rate) {
            return Err(ConfigError::new("audit.sample_rate", "must be between 0 and 1"));
        }
        for (slug, rate) in &self.audit.tenant_sample_rates {
            if !rate_ok(*rate) {
                return Err(ConfigError::new(format!("audit.tenant_sample_rates.{slug}"), "must be between 0 and 1"));
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::new("log.level", e.to_string()))?;
        Ok(())
    }

    /// Every server tenants can be placed on: `default` (`[upstream]`) first.
    pub(crate) fn placements(&self) -> Vec<Placement> {
        let default = Placement {
            name: DEFAULT_UPSTREAM.to_owned(),
            url: self.upstream.url.clone(),
            readonly_url: self.upstream.readonly_url.clone(),
            admin_url: self.upstream.admin_url.clone().or_else(|| Some(self.control.url.clone())),
            pool_size: None,
        };
        std::iter::once(default)
            .chain(self.upstreams.iter().map(|(name, p)| Placement {
                name: name.clone(),
                url: p.url.clone(),
                readonly_url: p.readonly_url.clone(),
                admin_url: p.admin_url.clone(),
                pool_size: p.pool_size,
            }))
            .collect()
    }

    /// The database name clients must ask for.
    pub fn served_database(&self) -> String {
        if let Some(db) = &self.proxy.database {
            return db.clone();
        }
        crate::upstream::tls::postgres_config(&self.upstream.url)
            .ok()
            .map(|(c, _)| c)
            .and_then(|c| c.get_dbname().map(str::to_owned))
            .or_else(|| {
                crate::upstream::tls::postgres_config(&self.upstream.url)
                    .ok()
                    .and_then(|(c, _)| c.get_user().map(str::to_owned))
            })
            .unwrap_or_else(|| "postgres".into())
    }
}

/// An upstream's name as the catalog stores it.
pub(crate) fn is_upstream_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit() || bytes[0] == b'_')
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

fn check_postgres_url(key: &str, url: &str) -> Result<(), ConfigError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ConfigError::new(key, "must be a postgres:// URL"));
    }
    let parsed = crate::upstream::tls::postgres_config(url)
        .map(|(c, _)| c)
        .map_err(|e| ConfigError::new(key, format!("invalid URL: {e}")))?;
    if parsed.get_user().is_none() {
        return Err(ConfigError::new(key, "must name a user"));
    }
    if parsed.get_hosts().is_empty() {
        return Err(ConfigError::new(key, "must name a host"));
    }
    Ok(())
}

mod jwt;
mod sources;

pub use jwt::{JwtConfig, OnExpiry};
use sources::{apply_env, from_str_or_native, missing_field, optional_from_str_or_native};

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [admin]
        token = "0123456789abcdef"
        [upstream]
        url = "postgres://pgtenant_app@localhost/app"
        [control]
        url = "postgres://pgtenant_owner@localhost/app"
    "#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_fill_what_the_file_omits() {
        let c = Config::from_sources(MINIMAL, &[]).unwrap();
        assert_eq!(c.proxy.listen.to_string(), "127.0.0.1:6432");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:8432");
        assert_eq!(c.proxy.tenant_setting, "app.tenant_id");
        assert_eq!(c.served_database(), "app");
    }

    #[test]
    fn environment_overrides_the_file_with_typed_values() {
        let c = Config::from_sources(
            MINIMAL,
            &env(&[
                ("PGTENANT_PROXY__LISTEN", "0.0.0.0:7000"),
                ("PGTENANT_PROXY__MAX_CLIENT_CONNECTIONS", "12"),
                ("PGTENANT_ADMIN__TOKEN", "1234567890123456"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.proxy.listen.to_string(), "0.0.0.0:7000");
        assert_eq!(c.proxy.max_client_connections, 12);
        assert_eq!(c.admin.token, "1234567890123456");
    }

    #[test]
    fn environment_alone_is_enough() {
        let c = Config::from_sources(
            "",
            &env(&[
                ("PGTENANT_ADMIN__TOKEN", "0123456789abcdef"),
                ("PGTENANT_UPSTREAM__URL", "postgres://a@h/db"),
                ("PGTENANT_CONTROL__URL", "postgres://b@h/db"),
            ]),
        )
        .unwrap();
        assert_eq!(c.served_database(), "db");
    }

    #[test]
    fn errors_name_the_key() {
        let err = |toml: &str, e: &[(&str, &str)]| Config::from_sources(toml, &env(e)).unwrap_err();
        assert_eq!(err("", &[]).key, "admin");
        let no_token = MINIMAL.replace("token = \"0123456789abcdef\"", "");
        assert_eq!(err(&no_token, &[]).key, "admin.token");
        assert_eq!(err(MINIMAL, &[("PGTENANT_PROXY__LISTEN", "nope")]).key, "proxy.listen");
        assert_eq!(err(MINIMAL, &[("PGTENANT_PROXY__LISTN", "x")]).key, "proxy.listn");
        assert_eq!(err(MINIMAL, &[("PGTENANT_PROXY__TENANT_SETTING", "nodot")]).key, "proxy.tenant_setting");
        assert_eq!(err(MINIMAL, &[("PGTENANT_UPSTREAM__URL", "mysql://x")]).key, "upstream.url");
        assert_eq!(err(MINIMAL, &[("PGTENANT_ADMIN__TOKEN", "short")]).key, "admin.token");
        assert_eq!(err(MINIMAL, &[("PGTENANT_NOSECTION", "x")]).key, "PGTENANT_NOSECTION");
        let threads = err(MINIMAL, &[("PGTENANT_PROXY__WORKER_THREADS", "100000")]);
        assert_eq!(
            (threads.key.as_str(), threads.problem.as_str()),
            ("proxy.worker_threads", "must be at most 1024 (0: one per core)")
        );
        let e = err(MINIMAL, &[("PGTENANT_PROXY__LISTN", "x")]);
        assert!(e.to_string().starts_with("invalid config: proxy.listn: unknown field"), "{e}");
    }

    #[test]
    fn tenant_overrides_apply_to_their_tenant_only() {
        let text = format!(
            "{MINIMAL}\n[pool]\nmode = \"transaction\"\nmax_per_tenant = 3\nstatement_timeout_ms = 9000\n\
             [tenants.barclays]\npool_mode = \"session\"\nstatement_timeout_ms = 500\n\
             [tenants.hsbc-hk]\nmax_server_connections = 1\nstatement_timeout_ms = 0\n"
        );
        let c = Config::from_sources(&text, &[]).unwrap();
        let none = TenantOverrides::default();
        let barclays = c.tenant_limits("barclays", &none);
        assert_eq!(barclays.pool_mode, PoolMode::Session);
        assert_eq!(barclays.statement_timeout, Some(std::time::Duration::from_millis(500)));
        assert_eq!(barclays.max_server_connections, 3);
        assert_eq!(barclays.max_client_connections, 0);
        let hk = c.tenant_limits("hsbc-hk", &none);
        assert_eq!((hk.pool_mode, hk.statement_timeout, hk.max_server_connections), (PoolMode::Transaction, None, 1));
        let other = c.tenant_limits("hsbc", &none);
        assert_eq!(other.statement_timeout, Some(std::time::Duration::from_secs(9)));
        // The catalog's limits win over the file's, key by key.
        let catalog = TenantOverrides { statement_timeout_ms: Some(0), max_client_connections: Some(2), ..none };
        let barclays = c.tenant_limits("barclays", &catalog);
        assert_eq!(barclays.pool_mode, PoolMode::Session, "from the file");
        assert_eq!(barclays.statement_timeout, None, "from the catalog");
        assert_eq!(barclays.max_client_connections, 2);
    }

    #[test]
    fn tenant_overrides_are_checked() {
        let err = |extra: &str, e: &[(&str, &str)]| {
            Config::from_sources(&format!("{MINIMAL}\n{extra}"), &env(e)).unwrap_err()
        };
        assert_eq!(err("[tenants.Not_A_Slug]\npool_mode = \"session\"", &[]).key, "tenants.Not_A_Slug");
        assert_eq!(err("[tenants.barclays]\npool_mode = \"sometimes\"", &[]).key, "tenants.barclays.pool_mode");
        assert_eq!(err("[tenants.barclays]\ntimeout = 1", &[]).key, "tenants.barclays.timeout");
        let e = err("", &[("PGTENANT_TENANTS__BARCLAYS__POOL_MODE", "session")]);
        assert_eq!(e.key, "PGTENANT_TENANTS__BARCLAYS__POOL_MODE");
        assert!(e.problem.contains("config file only"), "{e}");
    }
}
