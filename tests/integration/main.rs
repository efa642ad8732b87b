//! Integration tests: real PostgreSQL, real pgtenant, real clients.

mod common;

mod auth;
mod cli;
mod psql;
mod relay;
mod tenancy;
mod wire;
