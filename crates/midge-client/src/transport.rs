//! How the client reaches the server: a [`Connector`] opens a byte stream, any
//! `AsyncRead + AsyncWrite`.
//!
//! The event loop knows nothing of TCP: it asks its connector for a fresh stream at each
//! (re)connection. [`TcpConnector`] and [`TlsConnector`](crate::TlsConnector) are built
//! in. WebSocket will be a further connector (a tungstenite stream adapted to bytes) once
//! the broker speaks it; until then a user can plug their own with
//! [`ConnectOptions::with_connector`](crate::ConnectOptions::with_connector).
//! Tests use [`tokio::io::duplex`] through the same trait to play the server.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A connected byte stream to the server.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// A boxed [`Transport`], what connectors hand to the event loop.
pub type BoxTransport = Box<dyn Transport>;

/// The future a [`Connector`] returns.
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = io::Result<BoxTransport>> + Send + 'a>>;

/// Opens a new stream to the server; called for the first connection and each reconnect.
pub trait Connector: Send + Sync + 'static {
    fn connect(&self) -> ConnectFuture<'_>;

    /// A short description for logs and error messages ("localhost:1883").
    fn describe(&self) -> String {
        "custom transport".to_string()
    }
}

/// Plain TCP to `host:port` (the host is resolved at each connection).
#[derive(Debug, Clone)]
pub struct TcpConnector {
    pub host: String,
    pub port: u16,
    /// Disable Nagle's algorithm (`TCP_NODELAY`).
    pub nodelay: bool,
    /// Local address to bind before connecting (mosquitto's `-A`); port 0 is usual.
    pub bind_address: Option<SocketAddr>,
}

impl TcpConnector {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        TcpConnector {
            host: host.into(),
            port,
            nodelay: true,
            bind_address: None,
        }
    }

    async fn open(&self) -> io::Result<TcpStream> {
        let addrs = tokio::net::lookup_host((self.host.as_str(), self.port)).await?;
        let mut last_err = None;
        for addr in addrs {
            match self.open_one(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "host name resolved to no address")
        }))
    }

    async fn open_one(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = match self.bind_address {
            Some(local) => {
                let socket = if addr.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                socket.bind(local)?;
                socket.connect(addr).await?
            }
            None => TcpStream::connect(addr).await?,
        };
        stream.set_nodelay(self.nodelay)?;
        Ok(stream)
    }
}

impl Connector for TcpConnector {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let stream = self.open().await?;
            Ok(Box::new(stream) as BoxTransport)
        })
    }

    fn describe(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}
