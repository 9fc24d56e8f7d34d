//! Test harness: an in-process broker on a free loopback port and a raw MQTT client that
//! speaks through `midge-proto`, so tests see (and can break) every byte on the wire.
//!
//! Nothing here sleeps to synchronise: every wait is for a packet, bounded by
//! [`RECV_TIMEOUT`], and a wait that times out fails the test.

#![allow(dead_code)]

pub mod hold;

use bytes::{Bytes, BytesMut};
use midge_broker::{Broker, Config, ListenerConfig};
use midge_proto::{
    decode, encode, ByteStr, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion,
    PubResp, Publish, QoS, ReasonCode, SubAck, Subscribe, SubscriptionOptions, UnsubAck,
    Unsubscribe, Will,
};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[allow(unused_imports)]
pub use midge_proto::ProtocolVersion::{V31, V311, V5};

/// How long a test waits for a packet before it fails.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// The two versions most behaviours are checked against.
pub const V3_AND_V5: [ProtocolVersion; 2] = [V311, V5];

/// A broker running inside the test's runtime.
pub struct TestBroker {
    pub broker: Option<Broker>,
    pub addr: SocketAddr,
}

impl TestBroker {
    /// A broker with the defaults tests want: one listener on port 0, no `$SYS`.
    pub async fn start() -> TestBroker {
        Self::start_with(|_| {}).await
    }

    /// A broker with the test defaults, then `tweak` applied.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestBroker {
        let mut config = test_config("127.0.0.1:0".parse().expect("address"));
        tweak(&mut config);
        let broker = Broker::start(config).await.expect("broker starts");
        let addr = broker.local_addrs()[0];
        TestBroker {
            broker: Some(broker),
            addr,
        }
    }

    /// Connects a client with clean start and the given client ID; asserts success.
    pub async fn client(&self, version: ProtocolVersion, client_id: &str) -> TestClient {
        TestClient::connect_ok(self.addr, version, client_id).await
    }

    pub async fn shutdown(&mut self, grace: Duration) {
        if let Some(b) = self.broker.take() {
            b.shutdown(grace).await;
        }
    }
}

/// The defaults tests want: one listener on `bind` allowing anonymous clients, no `$SYS`.
pub fn test_config(bind: SocketAddr) -> Config {
    Config {
        listeners: vec![ListenerConfig::tcp(bind, true)],
        sys_interval: Duration::ZERO,
        ..Config::default()
    }
}

/// Encodes a packet for `version` (to send raw, e.g. to a broker that may close first).
pub fn bytes_of(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out);
    out
}

/// A CONNECT with clean start, keep-alive 60 s and no will.
pub fn connect_packet(version: ProtocolVersion, client_id: &str) -> Connect {
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 60,
        client_id: ByteStr::from(client_id),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

/// A will message with no properties.
pub fn will(topic: &str, payload: &str, qos: QoS, retain: bool) -> Will {
    Will {
        topic: ByteStr::from(topic),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        retain,
        properties: Properties::default(),
    }
}

/// A PUBLISH (packet id 0; the client fills it in when sent with [`TestClient::publish_packet`]).
pub fn publish_packet(topic: &str, payload: &str, qos: QoS) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteStr::from(topic),
        packet_id: 0,
        properties: Properties::default(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }
}

/// Subscription options with only the QoS set.
pub fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

/// A raw MQTT client over TCP.
pub struct TestClient {
    stream: TcpStream,
    buf: BytesMut,
    /// Packets read while waiting for another one; [`TestClient::recv`] returns them first.
    pending: VecDeque<Packet>,
    pub version: ProtocolVersion,
    next_id: u16,
    /// Set once a read returned end of stream or an error.
    closed: bool,
}

impl TestClient {
    /// Opens a TCP connection and sends nothing.
    pub async fn tcp(addr: SocketAddr, version: ProtocolVersion) -> TestClient {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        Self::over(stream, version)
    }

    /// Opens a TCP connection whose receive buffer is about `bytes` (the kernel doubles
    /// it): a client that then stops reading is stuck as soon as that much is unread.
    pub async fn tcp_small_window(
        addr: SocketAddr,
        version: ProtocolVersion,
        bytes: u32,
    ) -> TestClient {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("tcp connect");
        Self::over(stream, version)
    }

    /// A client on a connected stream (nothing sent yet).
    fn over(stream: TcpStream, version: ProtocolVersion) -> TestClient {
        // Fails if the broker already closed the connection; reads then tell.
        let _ = stream.set_nodelay(true);
        TestClient {
            stream,
            buf: BytesMut::new(),
            pending: VecDeque::new(),
            version,
            next_id: 0,
            closed: false,
        }
    }

    /// Sends CONNECT (as `tweak` leaves it) and returns the client and the CONNACK.
    pub async fn connect(
        addr: SocketAddr,
        version: ProtocolVersion,
        tweak: impl FnOnce(&mut Connect),
    ) -> (TestClient, ConnAck) {
        Self::tcp(addr, version).await.connect_as(tweak).await
    }

    /// Sends CONNECT on this connection (as `tweak` leaves it); returns the CONNACK.
    pub async fn connect_as(mut self, tweak: impl FnOnce(&mut Connect)) -> (TestClient, ConnAck) {
        let mut connect = connect_packet(self.version, "");
        tweak(&mut connect);
        self.send(&Packet::Connect(Box::new(connect))).await;
        let connack = self.recv_connack().await;
        (self, connack)
    }

    /// Connects with clean start 0 and (5.0) Session Expiry 300 s: a session that
    /// outlives the connection. Asserts success; returns the Session Present flag.
    pub async fn connect_persistent(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
    ) -> (TestClient, bool) {
        let (client, ack) = Self::connect(addr, version, |c| {
            c.client_id = ByteStr::from(client_id);
            c.clean_start = false;
            c.properties.session_expiry_interval = Some(300);
        })
        .await;
        assert_eq!(
            ack.reason_code,
            ReasonCode::SUCCESS,
            "CONNACK for {client_id}"
        );
        (client, ack.session_present)
    }

    /// Connects with clean start and the client ID; asserts the CONNACK is a success.
    pub async fn connect_ok(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
    ) -> TestClient {
        let (client, ack) = Self::connect(addr, version, |c| {
            c.client_id = ByteStr::from(client_id);
        })
        .await;
        assert_eq!(
            ack.reason_code,
            ReasonCode::SUCCESS,
            "CONNACK for {client_id}"
        );
        client
    }

    pub async fn recv_connack(&mut self) -> ConnAck {
        match self.recv().await {
            Packet::ConnAck(ack) => ack,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        encode(packet, self.version, &mut out);
        self.send_raw(&out).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to broker");
    }

    /// Like [`TestClient::send_raw`] but tolerates a broker that already closed.
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// The next packet, failing the test after [`RECV_TIMEOUT`] or on close.
    pub async fn recv(&mut self) -> Packet {
        match self.recv_within(RECV_TIMEOUT).await {
            Ok(Some(p)) => p,
            Ok(None) => panic!("connection closed while waiting for a packet"),
            Err(()) => panic!("no packet within {RECV_TIMEOUT:?}"),
        }
    }

    /// The next packet within `limit`: `Ok(None)` on close, `Err` on timeout.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Option<Packet>, ()> {
        if let Some(p) = self.pending.pop_front() {
            return Ok(Some(p));
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match decode(&mut self.buf, self.version, usize::MAX) {
                Ok(Some(p)) => return Ok(Some(p)),
                Ok(None) => {}
                Err(e) => panic!("broker sent a packet we cannot decode: {e}"),
            }
            if self.closed {
                return Ok(None);
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => self.closed = true,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Waits for the broker to close the connection; returns the packets sent before.
    pub async fn expect_closed(&mut self) -> Vec<Packet> {
        let mut got = Vec::new();
        loop {
            match self.recv_within(RECV_TIMEOUT).await {
                Ok(Some(p)) => got.push(p),
                Ok(None) => return got,
                Err(()) => panic!("connection still open after {RECV_TIMEOUT:?}; got {got:?}"),
            }
        }
    }

    /// 5.0: the broker sends DISCONNECT with `rc`, then closes. Before 5.0: it just
    /// closes. Other packets before the DISCONNECT are ignored.
    pub async fn expect_disconnect(&mut self, rc: ReasonCode) {
        let got = self.expect_closed().await;
        let disconnects: Vec<ReasonCode> = got
            .iter()
            .filter_map(|p| match p {
                Packet::Disconnect(d) => Some(d.reason_code),
                _ => None,
            })
            .collect();
        if self.version.is_v5() {
            assert_eq!(
                disconnects,
                vec![rc],
                "DISCONNECT before close; got {got:?}"
            );
        } else {
            assert!(
                disconnects.is_empty(),
                "no DISCONNECT before 5.0; got {got:?}"
            );
        }
    }

    /// Asserts the connection stays open and quiet for `d` (used only where the test is
    /// about time passing, such as keep-alive).
    pub async fn expect_silence(&mut self, d: Duration) {
        match self.recv_within(d).await {
            Err(()) => {}
            Ok(Some(p)) => panic!("expected silence, got {p:?}"),
            Ok(None) => panic!("expected silence, connection closed"),
        }
    }

    /// The next packet that is not a PUBLISH is stashed; returns the next PUBLISH.
    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Receives a PUBLISH and completes its QoS flow as a well-behaved receiver.
    pub async fn recv_publish_acked(&mut self) -> Publish {
        let p = self.recv_publish().await;
        self.ack(&p).await;
        p
    }

    /// Acknowledges a received PUBLISH: PUBACK, or PUBREC → PUBREL → PUBCOMP.
    pub async fn ack(&mut self, p: &Publish) {
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&Packet::PubAck(PubResp::new(p.packet_id))).await,
            QoS::ExactlyOnce => {
                self.send(&Packet::PubRec(PubResp::new(p.packet_id))).await;
                let rel = self.wait_for(|p| matches!(p, Packet::PubRel(_))).await;
                let Packet::PubRel(rel) = rel else {
                    unreachable!()
                };
                assert_eq!(rel.packet_id, p.packet_id, "PUBREL for our PUBREC");
                self.send(&Packet::PubComp(PubResp::new(p.packet_id))).await;
            }
        }
    }

    /// Reads until a packet satisfying `want` arrives; others are kept for `recv`.
    pub async fn wait_for(&mut self, want: impl Fn(&Packet) -> bool) -> Packet {
        let mut skipped = Vec::new();
        let mut stashed = std::mem::take(&mut self.pending);
        let found = loop {
            let next = match stashed.pop_front() {
                Some(p) => p,
                None => self.recv().await,
            };
            if want(&next) {
                break next;
            }
            skipped.push(next);
        };
        skipped.extend(stashed);
        self.pending = skipped.into();
        found
    }

    pub fn next_packet_id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// Sends PUBLISH as given (a packet id is assigned for QoS > 0 if it is 0) and
    /// completes the publisher's side of its flow. Returns the final acknowledgement
    /// (PUBACK or PUBCOMP), or `None` for QoS 0.
    pub async fn publish_packet(&mut self, mut p: Publish) -> Option<PubResp> {
        if p.qos != QoS::AtMostOnce && p.packet_id == 0 {
            p.packet_id = self.next_packet_id();
        }
        let id = p.packet_id;
        let qos = p.qos;
        self.send(&Packet::Publish(p)).await;
        match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => match self
                .wait_for(|p| matches!(p, Packet::PubAck(a) if a.packet_id == id))
                .await
            {
                Packet::PubAck(a) => Some(a),
                _ => unreachable!(),
            },
            QoS::ExactlyOnce => {
                let rec = self
                    .wait_for(|p| matches!(p, Packet::PubRec(a) if a.packet_id == id))
                    .await;
                let Packet::PubRec(rec) = rec else {
                    unreachable!()
                };
                if rec.reason_code.is_error() {
                    return Some(rec);
                }
                self.send(&Packet::PubRel(PubResp::new(id))).await;
                match self
                    .wait_for(|p| matches!(p, Packet::PubComp(a) if a.packet_id == id))
                    .await
                {
                    Packet::PubComp(a) => Some(a),
                    _ => unreachable!(),
                }
            }
        }
    }

    pub async fn publish(&mut self, topic: &str, payload: &str, qos: QoS) -> Option<PubResp> {
        self.publish_packet(publish_packet(topic, payload, qos))
            .await
    }

    pub async fn publish_retained(&mut self, topic: &str, payload: &str, qos: QoS) {
        let mut p = publish_packet(topic, payload, qos);
        p.retain = true;
        self.publish_packet(p).await;
    }

    /// SUBSCRIBE with the given filters and properties; returns the SUBACK.
    pub async fn subscribe_with(
        &mut self,
        filters: &[(&str, SubscriptionOptions)],
        properties: Properties,
    ) -> SubAck {
        let id = self.next_packet_id();
        let s = Subscribe {
            packet_id: id,
            filters: filters
                .iter()
                .map(|(f, o)| (ByteStr::from(*f), *o))
                .collect(),
            properties,
        };
        self.send(&Packet::Subscribe(s)).await;
        match self
            .wait_for(|p| matches!(p, Packet::SubAck(a) if a.packet_id == id))
            .await
        {
            Packet::SubAck(a) => a,
            _ => unreachable!(),
        }
    }

    /// Subscribes to one filter; asserts the QoS is granted as asked.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        let ack = self
            .subscribe_with(&[(filter, opts(qos))], Properties::default())
            .await;
        assert_eq!(
            ack.reason_codes,
            vec![ReasonCode(qos.as_u8())],
            "SUBACK for {filter}"
        );
    }

    pub async fn unsubscribe(&mut self, filters: &[&str]) -> UnsubAck {
        let id = self.next_packet_id();
        let u = Unsubscribe {
            packet_id: id,
            filters: filters.iter().map(|f| ByteStr::from(*f)).collect(),
            properties: Properties::default(),
        };
        self.send(&Packet::Unsubscribe(u)).await;
        match self
            .wait_for(|p| matches!(p, Packet::UnsubAck(a) if a.packet_id == id))
            .await
        {
            Packet::UnsubAck(a) => a,
            _ => unreachable!(),
        }
    }

    /// PINGREQ and wait for PINGRESP (other packets are kept for `recv`): proves the
    /// broker processed everything this client sent before.
    pub async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        self.wait_for(|p| matches!(p, Packet::PingResp)).await;
    }

    /// Proves that no PUBLISH is on its way: two PINGREQ round trips (the broker moves
    /// queued messages to a client after the packets it read, so whatever it had queued
    /// before the first PINGREQ is written before the second PINGRESP), then no PUBLISH
    /// may have arrived.
    pub async fn assert_no_publish(&mut self) {
        self.ping().await;
        self.ping().await;
        let publishes: Vec<&Packet> = self
            .pending
            .iter()
            .filter(|p| matches!(p, Packet::Publish(_)))
            .collect();
        assert!(publishes.is_empty(), "unexpected PUBLISH: {publishes:?}");
    }

    /// Every PUBLISH the broker had queued for this client when this was called (same
    /// reasoning as [`TestClient::assert_no_publish`]), unacknowledged, in arrival order.
    pub async fn drain_publishes(&mut self) -> Vec<Publish> {
        self.ping().await;
        self.ping().await;
        let mut out = Vec::new();
        let mut rest = VecDeque::new();
        for p in std::mem::take(&mut self.pending) {
            match p {
                Packet::Publish(p) => out.push(p),
                other => rest.push_back(other),
            }
        }
        self.pending = rest;
        out
    }

    /// Sends `bytes` and the end of the stream in one TCP segment (corked until the
    /// shutdown), so that the broker sees both at once. The socket stays open for reading
    /// (a half-close: nothing the broker sends back makes the client's side reset it).
    pub async fn send_raw_then_end(&mut self, bytes: &[u8]) {
        socket2::SockRef::from(&self.stream)
            .set_tcp_cork(true)
            .expect("TCP_CORK");
        self.stream.write_all(bytes).await.expect("write");
        let _ = self.stream.shutdown().await;
    }

    /// Drops the TCP connection without DISCONNECT (the will goes, the session stays).
    pub fn drop_connection(self) {
        drop(self);
    }

    /// Sends a normal DISCONNECT and waits for the broker to close.
    pub async fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Disconnect::default())).await;
        self.expect_closed().await;
    }

    pub async fn disconnect_with(&mut self, d: Disconnect) {
        self.send(&Packet::Disconnect(d)).await;
    }

    /// Packets already received and not yet consumed.
    pub fn pending(&self) -> &VecDeque<Packet> {
        &self.pending
    }
}

/// The payload as a string.
pub fn text(p: &Publish) -> &str {
    std::str::from_utf8(&p.payload).expect("UTF-8 payload")
}

/// A fresh directory under the system temp dir, removed on drop. Unique per process and
/// per call, so tests running in parallel never share one.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("midge-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// `name` inside the directory.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }

    /// The directory itself.
    pub fn root(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
