//! pgtenant: a PostgreSQL wire-protocol proxy that authenticates each login,
//! maps it to a tenant, and relays its SQL to an upstream session whose
//! tenant context the client cannot change. See ARCHITECTURE.md.

pub(crate) mod access;
pub(crate) mod admin;
pub(crate) mod audit;
pub(crate) mod blocking;
pub(crate) mod cancel;
pub mod config;
pub mod dev;
pub mod error;
pub(crate) mod fleet;
pub mod frontend;
pub mod guard;
pub mod hex;
pub(crate) mod metrics;
pub mod migrate;
pub mod migrate_tenants;
pub(crate) mod notifiers;
pub mod pg_client;
pub mod protocol;
pub(crate) mod proxy;
pub mod quote;
pub(crate) mod rfc3339;
pub(crate) mod routing;
pub mod server;
pub mod service_manager;
pub(crate) mod sessions;
pub(crate) mod setting_rules;
pub mod shutdown;
pub mod tenancy;
pub(crate) mod tenant_stats;
pub(crate) mod tokens;
pub mod upstream;
