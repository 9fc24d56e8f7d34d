//! Listening sockets and the accept loop.

use crate::broker::BrokerInner;
use crate::config::ListenerConfig;
use crate::tls::TlsListener;
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
pub async fn accept_loop(
    broker: Arc<BrokerInner>,
    listener: TcpListener,
    config: ListenerConfig,
    tls: Option<Arc<TlsListener>>,
) {
    let per_listener = Arc::new(AtomicUsize::new(0));
    let mut rate = ConnectionRate::default();
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
        if !rate.allow(peer.ip(), broker.config.max_connection_rate_per_ip) {
            tracing::info!("refusing connection from {peer}: connection rate per address reached");
            broker
                .stats
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        if config
            .max_connections
            .is_some_and(|max| per_listener.load(Ordering::Acquire) >= max)
            || !broker.try_add_connection()
        {
            tracing::info!("refusing connection from {peer}: connection limit reached");
            broker
                .stats
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        per_listener.fetch_add(1, Ordering::AcqRel);
        let _ = stream.set_nodelay(true);
        let broker = broker.clone();
        let per_listener = per_listener.clone();
        let allow_anonymous = config.allow_anonymous;
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_tcp(&broker, stream, peer, allow_anonymous).await,
                Some(tls) => serve_tls(&broker, stream, peer, allow_anonymous, &tls).await,
            }
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
    let client = ClientTransport {
        peer,
        allow_anonymous,
        identity: None,
    };
    crate::connection::run(broker.clone(), reader, writer, client).await;
}

/// TLS handshake (bounded by the CONNECT timeout), then the MQTT connection over it.
async fn serve_tls(
    broker: &Arc<BrokerInner>,
    stream: TcpStream,
    peer: SocketAddr,
    allow_anonymous: bool,
    tls: &TlsListener,
) {
    let acceptor = tls.acceptor();
    let handshake =
        tokio::time::timeout(broker.config.connect_timeout, acceptor.accept(stream)).await;
    let stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(%peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let identity = tls.settings.use_identity_as_username.then(|| {
        stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(crate::tls::certificate_common_name)
            .map(midge_proto::ByteStr::from)
    });
    let client = ClientTransport {
        peer,
        allow_anonymous,
        identity,
    };
    let (reader, writer) = tokio::io::split(stream);
    crate::connection::run(broker.clone(), reader, writer, client).await;
}

/// New connections per source address in the current one-second window.
#[derive(Default)]
struct ConnectionRate {
    window: Option<std::time::Instant>,
    counts: std::collections::HashMap<std::net::IpAddr, u32>,
}

impl ConnectionRate {
    /// Whether another connection from `ip` fits under `per_second` (0 = no limit).
    fn allow(&mut self, ip: std::net::IpAddr, per_second: u32) -> bool {
        if per_second == 0 {
            return true;
        }
        let now = std::time::Instant::now();
        if self
            .window
            .is_none_or(|w| now.duration_since(w) >= std::time::Duration::from_secs(1))
        {
            self.window = Some(now);
            self.counts.clear();
        }
        let count = self.counts.entry(ip).or_insert(0);
        *count += 1;
        *count <= per_second
    }
}

/// What the transport tells the connection about its client.
pub(crate) struct ClientTransport {
    pub peer: SocketAddr,
    pub allow_anonymous: bool,
    /// With `use_identity_as_username`: `Some(cn)` from the client certificate (`Some(None)`
    /// when the client sent none); the CONNECT username and password are then not used.
    pub identity: Option<Option<midge_proto::ByteStr>>,
}
