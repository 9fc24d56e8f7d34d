//! Listening sockets and the accept loop.

use crate::broker::BrokerInner;
use crate::config::ListenerConfig;
use crate::connection::{Close, Conn, Parking};
use crate::parking::Parked;
use crate::tls::TlsListener;
use bytes::BytesMut;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
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
    index: usize,
    tls: Option<Arc<TlsListener>>,
) {
    let Some(per_listener) = broker.listener_connections.get(index) else {
        return;
    };
    let listener_index = u16::try_from(index).ok();
    let mut rate = ConnectionRate::default();
    let mut shutdown = broker.shutdown.clone();
    loop {
        // Shutdown first: a connection waiting in the backlog when the flag is set is
        // not accepted (it is reset when the socket closes).
        let accepted = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            r = listener.accept() => r,
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
        let live = Counted::new(broker.clone(), listener_index);
        let client = ClientTransport {
            listener: listener_index,
            peer,
            allow_anonymous: config.allow_anonymous,
            identity: None,
        };
        let conn = Conn::new(broker.clone(), client);
        // One task type per transport: a plain TCP connection's task is not sized for the
        // TLS state it does not have (see docs/design/idle-memory.md).
        match &tls {
            None => {
                tokio::spawn(serve_tcp(live, conn, stream, false));
            }
            Some(tls) => {
                tokio::spawn(serve_tls(live, conn, stream, tls.clone()));
            }
        }
    }
}

/// A live connection, counted on its listener and on the broker until dropped. A parked
/// connection keeps counting (`keep`).
struct Counted {
    broker: Arc<BrokerInner>,
    listener: Option<u16>,
    armed: bool,
}

impl Counted {
    fn new(broker: Arc<BrokerInner>, listener: Option<u16>) -> Self {
        Counted {
            broker,
            listener,
            armed: true,
        }
    }

    /// The connection stays counted (it is being parked).
    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.armed {
            let index = self.listener.map(usize::from);
            if let Some(count) = index.and_then(|i| self.broker.listener_connections.get(i)) {
                count.fetch_sub(1, Ordering::AcqRel);
            }
            self.broker.remove_connection();
        }
    }
}

/// Serves a plain TCP connection: CONNECT, then the main loop, parking the connection
/// whenever it is asked to while idle (parking.rs); a resumed connection comes back here
/// with `connected`. A function returning an `async move` block rather than an `async fn`:
/// an async fn's arguments are stored in its future twice (as arguments and as the locals
/// they are moved into), which would add a `Conn` to every task.
#[allow(clippy::manual_async_fn)]
fn serve_tcp(
    live: Counted,
    mut conn: Conn,
    mut stream: TcpStream,
    connected: bool,
) -> impl Future<Output = ()> + Send {
    async move {
        let mut rbuf = BytesMut::new();
        if !connected {
            // Borrowed halves: `into_split` would put the stream in an `Arc` of its own.
            let (mut reader, mut writer) = stream.split();
            // Boxed: the connect phase's state is not needed once connected.
            let connected = Box::pin(crate::connection::connect_phase(
                &mut conn,
                &mut reader,
                &mut writer,
                &mut rbuf,
            ))
            .await;
            if let Err(close) = connected {
                crate::connection::finish(&mut conn, &mut writer, close).await;
                drop(live);
                return;
            }
            crate::connection::start_serving(&conn);
        } else {
            conn.resumed();
        }
        let parking = match (conn.broker.parking.is_some(), connected) {
            (false, _) => Parking::Off,
            (true, false) => Parking::SoonAfterConnect,
            (true, true) => Parking::WhenAsked,
        };
        let (mut reader, mut writer) = stream.split();
        let close =
            crate::connection::serve(&mut conn, &mut reader, &mut writer, &mut rbuf, parking).await;
        if matches!(close, Close::Park) {
            park_tcp(live, conn, stream);
        } else {
            crate::connection::finish(&mut conn, &mut writer, close).await;
            drop(live);
        }
    }
}

/// Parks an idle connection, whose task then ends: the connection goes on in a new task
/// when it is resumed (parking.rs).
fn park_tcp(live: Counted, conn: Conn, stream: TcpStream) {
    let (Some(parking), Some(session)) = (conn.broker.parking.clone(), conn.session.clone()) else {
        // Not reached: `serve` parks only with a park table, and a connection that serves
        // has a session. Were it reached, the connection would simply end.
        tokio::spawn(finish_without_socket(live, conn));
        return;
    };
    let broker = conn.broker.clone();
    let std_stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            // The socket is gone with the error: end the connection as if the peer left.
            tracing::info!(client = %conn.client_id, "parking failed: {e}");
            tokio::spawn(finish_without_socket(live, conn));
            return;
        }
    };
    let conn_id = conn.conn_id;
    live.keep();
    let parked = Box::new(Parked {
        stream: std_stream,
        session,
        conn: conn.park(),
    });
    if let Err(parked) = parking.park(conn_id, parked) {
        // Its session had work for it after all: go on in a new task.
        resume_tcp(broker, conn_id, *parked);
    }
}

/// Resumes a parked connection (parking.rs) in a new task: its socket had something to
/// read, or its session something for it. Called in the runtime's context, maybe under
/// the session's lock (a message being queued): the session is looked at by the task.
pub(crate) fn resume_tcp(broker: Arc<BrokerInner>, conn_id: u64, parked: Parked) {
    let Parked {
        stream,
        session,
        conn,
    } = parked;
    let live = Counted::new(broker.clone(), conn.listener());
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let conn = Conn::resume(broker, conn_id, conn, session, peer);
    match TcpStream::from_std(stream) {
        Ok(stream) => {
            tokio::spawn(serve_tcp(live, conn, stream, true));
        }
        Err(e) => {
            tracing::info!(client = %conn.client_id, "resuming failed: {e}");
            tokio::spawn(finish_without_socket(live, conn));
        }
    }
}

/// Ends a connection whose socket was lost while parking or resuming it: detaches it and
/// publishes its will, as when the peer goes.
async fn finish_without_socket(live: Counted, mut conn: Conn) {
    let mut nowhere = tokio::io::sink();
    crate::connection::finish(&mut conn, &mut nowhere, Close::PeerGone).await;
    drop(live);
}

/// TLS handshake (bounded by the CONNECT timeout), then the MQTT connection over it.
/// Not an `async fn`, for the reason given at [`serve_tcp`].
#[allow(clippy::manual_async_fn)]
fn serve_tls(
    live: Counted,
    mut conn: Conn,
    stream: TcpStream,
    tls: Arc<TlsListener>,
) -> impl Future<Output = ()> + Send {
    async move {
        let peer = conn.peer;
        let acceptor = tls.acceptor();
        let mut shutdown = conn.broker.shutdown.clone();
        let handshake = tokio::select! {
            h = tokio::time::timeout(conn.broker.config.connect_timeout, acceptor.accept(stream)) => h,
            // A shutdown does not wait for a handshake that may never end.
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        };
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
        conn.identity = tls.settings.use_identity_as_username.then(|| {
            Box::new(
                stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(crate::tls::certificate_common_name)
                    .map(midge_proto::ByteStr::from),
            )
        });
        let (reader, writer) = tokio::io::split(stream);
        crate::connection::run_conn(&mut conn, reader, writer).await;
        drop(live);
    }
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
    /// Index of the listener in the configuration (its security files); `None` for a
    /// connection served in process.
    pub listener: Option<u16>,
    pub peer: SocketAddr,
    pub allow_anonymous: bool,
    /// With `use_identity_as_username`: `Some(cn)` from the client certificate (`Some(None)`
    /// when the client sent none); the CONNECT username and password are then not used.
    /// Boxed: only TLS listeners set it.
    pub identity: Option<Box<Option<midge_proto::ByteStr>>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Broker;
    use crate::config::Config;

    /// Everything an idle plain-TCP connection's task holds (docs/design/idle-memory.md):
    /// the spawned future must not grow back to the TLS path's or the connect phase's size
    /// (it was 6.4 KB before those were moved out of it, 1.26 KB before the control
    /// channel and the shutdown wait left it, 1.0 KB before the keep-alive timer did).
    /// Measured in a debug build, where futures are larger than in release.
    const TCP_TASK_BUDGET: usize = 1_000;

    #[tokio::test]
    async fn tcp_connection_task_stays_within_its_budget() {
        let mut config = Config::default();
        config.listeners.clear();
        let broker = Broker::start(config).await.expect("broker");
        let inner = broker.inner().clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let stream = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let peer = stream.local_addr().expect("peer");
        let client = ClientTransport {
            listener: None,
            peer,
            allow_anonymous: true,
            identity: None,
        };
        assert!(inner.try_add_connection());
        let conn = Conn::new(inner.clone(), client);
        let live = Counted::new(inner.clone(), None);
        let task = serve_tcp(live, conn, stream, false);
        let size = std::mem::size_of_val(&task);
        eprintln!("TCP connection task: {size} bytes");
        assert!(
            size <= TCP_TASK_BUDGET,
            "the TCP connection task is {size} bytes, over its budget of {TCP_TASK_BUDGET}"
        );
        drop(task);
        broker.shutdown(std::time::Duration::from_secs(1)).await;
    }
}
