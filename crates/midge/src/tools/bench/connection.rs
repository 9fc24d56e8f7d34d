//! One benchmark connection: TCP connect from a chosen source address (then a TLS handshake
//! with `--cafile`), CONNECT/CONNACK, SUBSCRIBE/SUBACK, then an event loop that reads,
//! writes and lets a [`Role`] (publisher, subscriber, idle) decide what to send.
//!
//! A whole connection is one task and two buffers: no reader/writer task pair, no channel.
//! Reads and writes are batched (many packets per syscall), which is what lets one core
//! drive a broker that delivers hundreds of thousands of messages a second.

use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use midge_proto::{
    decode, encode, ByteStr, Connect, Packet, Properties, ProtocolVersion, QoS, Subscribe,
    SubscriptionOptions,
};
use rustls_pki_types::ServerName;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

/// Stop filling the write buffer above this many bytes; write first.
pub const WRITE_HIGH: usize = 64 * 1024;
/// The largest packet we accept from the broker.
const MAX_PACKET: usize = 268_435_460;

/// How every connection of a run connects.
#[derive(Clone)]
pub struct Settings {
    pub target: SocketAddr,
    pub version: ProtocolVersion,
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub connect_timeout: Duration,
    /// TLS over the TCP connection (`--cafile`), and the name the certificate must carry.
    pub tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

/// The session a connection asks for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Session {
    /// Clean Start 1: nothing kept after the connection (every publisher, and subscribers
    /// by default).
    Clean,
    /// Clean Start 0, kept `expiry` seconds after the connection in 5.0 (`--session-expiry`).
    Persistent { expiry: u32 },
}

/// The connection's byte stream: plain TCP, or TLS over it.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What a connection does once connected.
pub trait Role {
    /// Appends packets to `out` (which is below [`WRITE_HIGH`]). Returns when to be asked
    /// again if the role is waiting for time rather than for the broker.
    fn fill(&mut self, out: &mut BytesMut, now: Instant) -> Option<Instant>;
    /// Handles one packet from the broker, appending any answer to `out`.
    fn on_packet(&mut self, packet: Packet, out: &mut BytesMut) -> anyhow::Result<()>;
    /// Called after each read, before its packets are decoded.
    fn before_packets(&mut self) {}
    /// Called after the packets of a read are handled (to flush local counters).
    fn after_packets(&mut self) {}
    /// The role has nothing left to send or to wait for.
    fn finished(&self) -> bool;
}

/// How a connection's loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Finished,
    Stopped,
}

/// A connected MQTT client.
pub struct Conn {
    stream: Stream,
    pub version: ProtocolVersion,
    /// The broker's Receive Maximum (5.0), else 65,535.
    pub receive_maximum: u16,
    keep_alive: Duration,
    /// How much to read per syscall: small for idle connections (their memory is what
    /// `midge bench conn` measures on the broker's side, and it should not be ours that
    /// limits the count), large for subscribers.
    read_chunk: usize,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

enum Event {
    Stop,
    Read(std::io::Result<usize>),
    Wrote(std::io::Result<usize>),
    Timer,
}

impl Conn {
    /// Opens TCP (from `local` if given), sends CONNECT and waits for a successful CONNACK.
    pub async fn open(
        s: &Settings,
        client_id: &str,
        local: Option<IpAddr>,
        session: Session,
    ) -> anyhow::Result<Conn> {
        tokio::time::timeout(
            s.connect_timeout,
            Self::open_inner(s, client_id, local, session),
        )
        .await
        .context("connect timed out")?
    }

    async fn open_inner(
        s: &Settings,
        client_id: &str,
        local: Option<IpAddr>,
        session: Session,
    ) -> anyhow::Result<Conn> {
        let socket = if s.target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = local {
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("cannot bind source address {ip}"))?;
        }
        let tcp = socket.connect(s.target).await?;
        tcp.set_nodelay(true)?;
        let stream = match &s.tls {
            None => Stream::Tcp(tcp),
            Some((tls, name)) => Stream::Tls(Box::new(
                tls.connect(name.clone(), tcp)
                    .await
                    .context("TLS handshake failed")?,
            )),
        };
        let mut conn = Conn {
            stream,
            version: s.version,
            receive_maximum: u16::MAX,
            keep_alive: Duration::from_secs(u64::from(s.keep_alive)),
            read_chunk: 256,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
        };
        let mut properties = Properties::default();
        if let Session::Persistent { expiry } = session {
            if s.version == ProtocolVersion::V5 {
                properties.session_expiry_interval = Some(expiry);
            }
        }
        let connect = Connect {
            protocol: s.version,
            clean_start: session == Session::Clean,
            keep_alive: s.keep_alive,
            client_id: ByteStr::from(client_id),
            will: None,
            username: s.username.as_deref().map(ByteStr::from),
            password: s.password.clone().map(|p| p.into_bytes().into()),
            properties,
        };
        conn.send(Packet::Connect(Box::new(connect))).await?;
        match conn.recv().await? {
            Packet::ConnAck(ack) if ack.reason_code.0 < 0x80 => {
                if let Some(max) = ack.properties.receive_maximum {
                    conn.receive_maximum = max;
                }
                Ok(conn)
            }
            Packet::ConnAck(ack) => {
                bail!("CONNACK refused: reason code {:#04x}", ack.reason_code.0)
            }
            other => bail!("expected CONNACK, got {:?}", other.packet_type()),
        }
    }

    /// Bytes produced but not written to the socket yet.
    pub fn unwritten(&self) -> usize {
        self.wbuf.len()
    }

    /// Sets how many bytes to read per syscall at most.
    pub fn set_read_chunk(&mut self, bytes: usize) {
        self.read_chunk = bytes.max(64);
    }

    /// Subscribes to one filter and waits for a successful SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        let options = SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        };
        let sub = Subscribe {
            packet_id: 1,
            filters: vec![(ByteStr::from(filter), options)],
            properties: Properties::default(),
        };
        self.send(Packet::Subscribe(sub)).await?;
        loop {
            match self.recv().await? {
                Packet::SubAck(ack) => {
                    return match ack.reason_codes.first() {
                        Some(rc) if rc.0 < 0x80 => Ok(()),
                        rc => bail!("SUBACK refused {filter}: {rc:?}"),
                    }
                }
                // Retained messages may come before the SUBACK; they are not counted.
                Packet::Publish(_) | Packet::PingResp => {}
                other => bail!("expected SUBACK, got {:?}", other.packet_type()),
            }
        }
    }

    /// Sends DISCONNECT (best effort, briefly) and closes the socket.
    pub async fn close(mut self) {
        self.wbuf.clear();
        encode(
            &Packet::Disconnect(Default::default()),
            self.version,
            &mut self.wbuf,
        );
        let write = async {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.shutdown().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
    }

    async fn send(&mut self, packet: Packet) -> anyhow::Result<()> {
        self.wbuf.clear();
        encode(&packet, self.version, &mut self.wbuf);
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(p) = decode(&mut self.rbuf, self.version, MAX_PACKET)? {
                return Ok(p);
            }
            self.rbuf.reserve(512);
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                bail!("connection closed by the broker");
            }
        }
    }

    /// Runs `role` until it finishes or `stop` turns true. An error means the broker closed
    /// the connection or broke the protocol.
    pub async fn run<R: Role>(
        &mut self,
        role: &mut R,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<End> {
        let ping_every = self.keep_alive / 2;
        let mut last_write = Instant::now();
        loop {
            if *stop.borrow() {
                return Ok(End::Stopped);
            }
            let now = Instant::now();
            let mut wake = if self.wbuf.len() < WRITE_HIGH {
                role.fill(&mut self.wbuf, now)
            } else {
                None
            };
            if role.finished() && self.wbuf.is_empty() {
                return Ok(End::Finished);
            }
            if !ping_every.is_zero() && self.wbuf.is_empty() {
                let due = last_write + ping_every;
                if due <= now {
                    encode(&Packet::PingReq, self.version, &mut self.wbuf);
                } else {
                    wake = Some(wake.map_or(due, |w| w.min(due)));
                }
            }
            match self.wait(stop, wake).await {
                Event::Stop => return Ok(End::Stopped),
                Event::Timer => {}
                Event::Read(r) => self.on_read(r, role)?,
                Event::Wrote(r) => {
                    let n = r.context("write failed")?;
                    self.wbuf.advance(n);
                    last_write = Instant::now();
                }
            }
        }
    }

    async fn wait(&mut self, stop: &mut watch::Receiver<bool>, wake: Option<Instant>) -> Event {
        if self.rbuf.capacity() - self.rbuf.len() < self.read_chunk / 4 {
            self.rbuf.reserve(self.read_chunk);
        }
        let (stream, rbuf, wbuf) = (&mut self.stream, &mut self.rbuf, &self.wbuf);
        // One poll reads and writes the same stream (a TLS stream cannot be split without
        // a lock): a read first, as `biased` did with the halves.
        let io = std::future::poll_fn(|cx| {
            let read = std::pin::pin!(stream.read_buf(rbuf));
            if let Poll::Ready(r) = read.poll(cx) {
                return Poll::Ready(Event::Read(r));
            }
            if !wbuf.is_empty() {
                if let Poll::Ready(r) = Pin::new(&mut *stream).poll_write(cx, wbuf) {
                    return Poll::Ready(Event::Wrote(r));
                }
            }
            Poll::Pending
        });
        let has_output = !self.wbuf.is_empty();
        let timer = async move {
            match wake {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            // An error means the run dropped its sender: a stop as well.
            _ = stop.changed() => Event::Stop,
            e = io => e,
            () = timer, if !has_output => Event::Timer,
        }
    }

    fn on_read<R: Role>(&mut self, r: std::io::Result<usize>, role: &mut R) -> anyhow::Result<()> {
        if r.context("read failed")? == 0 {
            bail!("connection closed by the broker");
        }
        role.before_packets();
        while let Some(packet) = decode(&mut self.rbuf, self.version, MAX_PACKET)? {
            match packet {
                Packet::PingResp => {}
                Packet::Disconnect(d) => {
                    bail!(
                        "DISCONNECT from the broker: reason code {:#04x}",
                        d.reason_code.0
                    )
                }
                p => role.on_packet(p, &mut self.wbuf)?,
            }
        }
        role.after_packets();
        Ok(())
    }
}
