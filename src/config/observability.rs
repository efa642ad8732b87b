//! The sections about what pgtenant tells its operators: `[log]`, `[metrics]`
//! and `[audit]`.

use serde::Deserialize;

/// `[audit]`: the audit log (src/audit.rs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub enabled: bool,
    /// A file (appended to, reopened on SIGHUP), or `-` (the default) for stdout.
    pub path: Option<std::path::PathBuf>,
    /// A line per request that runs statements, or per transaction.
    pub level: AuditLevel,
    /// Literals in statements become `$n` (by PostgreSQL's parser).
    pub redact_literals: bool,
    /// The share of lines written, 0 to 1.
    pub sample_rate: f64,
    /// The same per tenant slug.
    pub tenant_sample_rates: std::collections::BTreeMap<String, f64>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: false,
            path: None,
            level: AuditLevel::Statement,
            redact_literals: true,
            sample_rate: 1.0,
            tenant_sample_rates: Default::default(),
        }
    }
}

/// What one audit line covers (`audit.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditLevel {
    Statement,
    Transaction,
}

/// `[metrics]`: what `/metrics` exposes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Tenants with their own `tenant` label on the per-tenant series (the
    /// busiest first, for good); the rest are summed under `tenant="other"`.
    pub tenant_labels: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { tenant_labels: 100 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `pgtenant=debug`.
    pub level: String,
    /// Lines for people (`text`) or one JSON object per line (`json`).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: LogFormat::Text }
    }
}

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    /// One object per line: time, level, target, message and the event's and
    /// its spans' fields as keys (a session's peer, user, tenant and id).
    Json,
}
