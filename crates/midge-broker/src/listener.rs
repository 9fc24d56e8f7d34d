//! Listening sockets and the accept loop.

use crate::broker::BrokerInner;
use crate::config::ListenerConfig;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// Binds a TCP listener. IPv6 sockets are IPv6-only so that `127.0.0.1:1883` and
/// `[::1]:1883` (the defaults) can both be bound.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections until shutdown, each served by its own task.
pub async fn accept_loop(broker: Arc<BrokerInner>, listener: TcpListener, config: ListenerConfig) {
    let per_listener = Arc::new(AtomicUsize::new(0));
    let mut shutdown = broker.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and similar: log, back off briefly, go on.
                tracing::warn!("accept failed on {:?}: {e}", listener.local_addr().ok());
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if config
            .max_connections
            .is_some_and(|max| per_listener.load(Ordering::Acquire) >= max)
            || !broker.try_add_connection()
        {
            tracing::info!("refusing connection from {peer}: connection limit reached");
            drop(stream);
            continue;
        }
        per_listener.fetch_add(1, Ordering::AcqRel);
        let _ = stream.set_nodelay(true);
        let broker = broker.clone();
        let per_listener = per_listener.clone();
        let allow_anonymous = config.allow_anonymous;
        tokio::spawn(async move {
            serve_tcp(&broker, stream, peer, allow_anonymous).await;
            per_listener.fetch_sub(1, Ordering::AcqRel);
            broker.remove_connection();
        });
    }
}

async fn serve_tcp(
    broker: &Arc<BrokerInner>,
    stream: TcpStream,
    peer: SocketAddr,
    allow_anonymous: bool,
) {
    let (reader, writer) = stream.into_split();
    crate::connection::run(broker.clone(), reader, writer, peer, allow_anonymous).await;
}
