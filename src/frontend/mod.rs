//! The client side: accepting connections, startup and authentication, and
//! the relay that carries a session.

pub(crate) mod admin_console;
pub(crate) mod assume;
pub mod attach;
pub mod auth;
pub(crate) mod batches;
pub(crate) mod bind_effects;
pub(crate) mod channels;
pub(crate) mod client;
pub(crate) mod failures;
pub(crate) mod listener;
pub(crate) mod listening;
pub(crate) mod markers;
pub mod params;
pub mod policy;
pub(crate) mod relay;
pub mod relay_core;
pub(crate) mod request_timer;
pub mod server_side;
pub mod statements;
pub(crate) mod stream;
