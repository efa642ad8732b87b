//! Server connections to the upstream PostgreSQL: connect, authenticate as
//! the session role, and hand the raw stream to the relay.

pub mod connect;
pub mod pool;
pub mod role_check;
pub mod server_session;
pub mod server_statements;
pub mod settings;
pub mod stream;
pub mod tls;

pub use connect::{
    connect, send_cancel, CancelTarget, ServerConnection, UpstreamAddress, UpstreamError, UpstreamTarget,
};
pub use stream::ServerStream;
