//! Server connections to the upstream PostgreSQL: connect, authenticate as
//! the session role, and hand the raw stream to the relay.

pub(crate) mod connect;
pub(crate) mod listen_hub;
pub(crate) mod pool;
pub mod role_check;
pub(crate) mod server_session;
pub(crate) mod server_statements;
pub(crate) mod settings;
pub(crate) mod stream;
pub(crate) mod tls;
pub(crate) mod unix_socket;

pub(crate) use connect::{CancelTarget, UpstreamError, UpstreamTarget};
pub(crate) use stream::ServerStream;
