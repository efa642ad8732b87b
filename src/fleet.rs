//! Several pgtenant processes on one catalog, behind a load balancer or
//! sharing a port with SO_REUSEPORT: a client's CancelRequest may reach a
//! process that does not hold its session. Every process listens for
//! cancels its peers pass on (`proxy.cancel_listen`) and registers that
//! address in the catalog (sql/0013); a process that does not know a key
//! passes the 16-byte request to every live peer. Each peer cancels only
//! what its own registry knows, in constant time like a local cancel, and
//! never passes a request on again — so a forged key still cancels nothing,
//! and a request travels one hop at most.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::cancel::{CancelKey, CancelRegistry};
use crate::protocol::startup::{self, InitialPacket};
use crate::shutdown::Shutdown;
use crate::tenancy::catalog::{Catalog, CatalogError};
use crate::upstream::connect::{send_cancel, CancelTarget, UpstreamAddress};

/// How long a peer has to take (or send) one request.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests passed on at once; more are dropped, so a flood of made-up
/// keys costs the fleet a bounded amount of work.
const MAX_PASSING_ON: usize = 16;
/// How often a process tells the catalog it is alive.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// This process's place in the fleet.
pub(crate) struct Fleet {
    catalog: Catalog,
    /// Its row in `pgtenant.proxy_processes`.
    id: String,
    /// Where its peers pass cancels on to it.
    address: SocketAddr,
    passing_on: Semaphore,
}

impl Fleet {
    /// Registers this process, which takes passed-on cancels at `address`.
    pub(crate) async fn join(catalog: Catalog, address: SocketAddr) -> Result<Fleet, CatalogError> {
        let id = catalog.register_process(address).await?;
        tracing::info!(%address, process = %id, "taking cancel requests passed on by other pgtenant processes");
        Ok(Fleet { catalog, id, address, passing_on: Semaphore::new(MAX_PASSING_ON) })
    }

    /// Passes a cancel this process has no session for to every live peer.
    pub(crate) async fn pass_on(&self, key: CancelKey) {
        let id = &self.id;
        let Ok(_permit) = self.passing_on.try_acquire() else {
            tracing::debug!("too many cancel requests being passed on: one dropped");
            return;
        };
        let peers = match self.catalog.peer_cancel_addrs(id).await {
            Ok(peers) => peers,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the other pgtenant processes to pass a cancel on");
                return;
            }
        };
        let mut sends = tokio::task::JoinSet::new();
        for peer in peers {
            sends.spawn(send_to_peer(peer, key));
        }
        while sends.join_next().await.is_some() {}
    }
}

/// Sends one CancelRequest to a peer, as pgtenant sends one to a server.
async fn send_to_peer(peer: String, key: CancelKey) {
    let Ok(address) = peer.parse::<SocketAddr>() else {
        tracing::warn!(peer, "a pgtenant process registered an address that is not one");
        return;
    };
    let target = CancelTarget {
        address: UpstreamAddress::Tcp { host: address.ip().to_string(), port: address.port() },
        process_id: key.process_id,
        secret_key: key.secret_key,
    };
    if !matches!(tokio::time::timeout(PEER_TIMEOUT, send_cancel(&target)).await, Ok(Ok(()))) {
        tracing::warn!(peer, "cannot pass a cancel request on to another pgtenant process");
    }
}

/// Serves the cancels peers pass on, and keeps this process's catalog row
/// fresh until shutdown; then deletes the row.
pub(crate) async fn run(
    listener: TcpListener,
    fleet: Arc<Fleet>,
    cancels: Arc<CancelRegistry>,
    mut shutdown: Shutdown,
) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.requested() => break,
            _ = heartbeat.tick() => {
                if let Err(e) = fleet.catalog.touch_process(&fleet.id, fleet.address).await {
                    tracing::warn!(error = %e, "cannot refresh this process in pgtenant.proxy_processes");
                }
            }
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve_peer(stream, Arc::clone(&cancels)));
                }
            }
        }
    }
    if let Err(e) = fleet.catalog.remove_process(&fleet.id).await {
        tracing::warn!(error = %e, "cannot remove this process from pgtenant.proxy_processes");
    }
}

/// The address peers dial: the bound one, with loopback for an unspecified IP.
pub(crate) fn advertised(bound: SocketAddr) -> SocketAddr {
    if bound.ip().is_unspecified() {
        tracing::warn!(%bound, "proxy.cancel_listen has no specific address: peers on other hosts cannot pass cancels here");
        let loopback: std::net::IpAddr =
            if bound.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() };
        SocketAddr::new(loopback, bound.port())
    } else {
        bound
    }
}

/// One passed-on CancelRequest: exactly 16 bytes, cancelled here or nowhere.
async fn serve_peer(mut stream: TcpStream, cancels: Arc<CancelRegistry>) {
    let mut packet = [0u8; 16];
    if !matches!(tokio::time::timeout(PEER_TIMEOUT, stream.read_exact(&mut packet)).await, Ok(Ok(_))) {
        return;
    }
    if !matches!(startup::declared_len(&packet), Ok(Some(16))) {
        return;
    }
    let Ok(InitialPacket::Cancel { process_id, secret_key }) = startup::parse(&packet) else { return };
    if let Some(target) = cancels.lookup(CancelKey { process_id, secret_key }) {
        if let Err(e) = send_cancel(&target).await {
            tracing::warn!(error = %e, "forwarding a passed-on cancel request failed");
        }
    }
}
