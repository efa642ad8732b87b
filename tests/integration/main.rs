//! Integration tests: real PostgreSQL, real pgtenant, real clients.

mod common;

mod admin;
mod admin_console;
mod assume;
mod audit;
mod auth;
mod cli;
mod config_example;
mod corpus;
mod drivers;
mod examples;
mod hierarchy;
mod isolation;
mod layering;
mod listen;
mod pooled_state;
mod pooling;
mod psql;
mod relay;
mod replica;
mod security;
mod service_logins;
mod strict_context;
mod tenancy;
mod tenant_stats;
mod tls;
mod tokens;
mod transparency;
mod wire;
