//! pgtenant: a PostgreSQL wire-protocol proxy that authenticates each login,
//! maps it to a tenant, and relays its SQL to an upstream session whose
//! tenant context the client cannot change. See ARCHITECTURE.md.

pub mod admin;
pub mod blocking;
pub mod cancel;
pub mod config;
pub mod dev;
pub mod error;
pub mod frontend;
pub mod guard;
pub mod hex;
pub mod metrics;
pub mod migrate;
pub mod migrate_tenants;
pub mod notifiers;
pub mod pg_client;
pub mod protocol;
pub mod proxy;
pub mod quote;
pub mod routing;
pub mod server;
pub mod sessions;
pub mod setting_rules;
pub mod shutdown;
pub mod tenancy;
pub mod upstream;
