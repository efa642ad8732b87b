//! Accepting client connections, within `proxy.max_client_connections`.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::shutdown::Shutdown;

use super::client::serve_client;
use crate::error::{sqlstate, ClientError};
use crate::proxy::ProxyState;

/// Accepts clients until `shutdown` turns true.
pub(crate) async fn run(listener: TcpListener, state: Arc<ProxyState>, max_clients: usize, mut shutdown: Shutdown) {
    let permits = Arc::new(Semaphore::new(max_clients));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.requested() => return,
        };
        let (mut socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Running out of file descriptors must not end the listener,
                // nor spin it: wait for some to be freed.
                tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                    _ = shutdown.requested() => return,
                }
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tokio::spawn(async move {
                let mut out = BytesMut::new();
                ClientError::fatal(sqlstate::TOO_MANY_CONNECTIONS, "sorry, too many clients already").encode(&mut out);
                let _ = socket.write_all(&out).await;
            });
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            serve_client(socket, peer, state).await;
            drop(permit);
        });
    }
}
