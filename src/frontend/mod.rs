//! The client side: accepting connections, startup and authentication, and
//! the relay that carries a session.

pub mod attach;
pub mod auth;
pub mod bind_effects;
pub mod client;
pub mod listener;
pub mod markers;
pub mod params;
pub mod policy;
pub mod relay;
pub mod relay_core;
pub mod request_timer;
pub mod statements;
pub mod stream;
