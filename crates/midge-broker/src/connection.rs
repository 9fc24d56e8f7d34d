//! One client connection: framed reads, keep-alive, batched writes, and the dispatch of
//! each packet to its protocol action (`protocol/*.rs`).
//!
//! The connection task owns the socket and two buffers. Everything it does per packet is
//! synchronous (routing, session updates) and appends replies to the write buffer; the
//! socket is written once per turn of the loop, so a busy subscriber gets many packets
//! per system call.
//!
//! An idle connection holds no buffer: reads land in a per-thread buffer first and only
//! the bytes read are copied into the connection's own (so a read buffer exists only
//! while a packet is partly read or being handled), and the write buffer is given back
//! once written. The task itself is kept small: the connect phase runs in its own boxed
//! future and rarely used state is boxed. A plain TCP connection idle for a while gives
//! up its task altogether and is parked (parking.rs). See docs/design/idle-memory.md for
//! the numbers.

use crate::broker::BrokerInner;
use crate::listener::ClientTransport;
use crate::message::Message;
use crate::protocol::auth::EnhancedAuth;
use crate::router::{DeliveryTarget, LazyScratch};
use crate::session::{Control, SessionCell};
use bytes::BytesMut;
use midge_proto::{
    decode, encode, ByteStr, Disconnect, Packet, Properties, ProtocolVersion, ReasonCode,
};
use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Stop reading from a client whose unsent output is above this, until it drains.
pub(crate) const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Longest an acknowledgement is held back for a congested subscriber (see
/// `Conn::acknowledge`); past it the publisher goes on and the subscriber's hard limit
/// applies.
pub(crate) const ACK_HOLD_MAX: Duration = Duration::from_secs(2);
/// A fresh TCP connection that sends nothing after its CONNACK parks this soon (unless
/// `park_idle_after` is shorter), not after `park_idle_after`: a burst of connecting clients
/// that then sit idle (a fleet reconnecting) costs the parked size per connection right
/// away, and the tasks they give up are reused by the next connections of the burst
/// instead of lying in the allocator's dirty pages (docs/design/idle-memory.md, round 5).
/// A client that subscribes or publishes at once is read before this and never parked by
/// it; one slower than this (a long round trip) pays one park and resume.
pub(crate) const FIRST_PARK_AFTER: Duration = Duration::from_millis(50);
/// Largest packet the protocol can express: remaining length 268,435,455 + 5 header bytes.
pub(crate) const PROTOCOL_MAX_PACKET: usize = 268_435_455 + 5;

/// Size of the per-thread buffer that reads land in, and the least room a partly read
/// packet's buffer is given for the next read.
const READ_CHUNK: usize = 4096;

thread_local! {
    /// Where a connection with no partly read packet reads into (see [`poll_read_into`]).
    static READ_SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// A map that allocates nothing, and takes one pointer in [`Conn`], until its first
/// insert: topic aliases are used by few clients. (An empty `HashMap` allocates nothing
/// either, but takes 48 bytes in every connection's task.)
#[allow(clippy::box_collection)]
pub(crate) struct LazyMap<K, V>(Option<Box<HashMap<K, V>>>);

impl<K: Eq + Hash, V> LazyMap<K, V> {
    pub fn new() -> Self {
        LazyMap(None)
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.as_ref()?.get(key)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.0
            .get_or_insert_with(Default::default)
            .insert(key, value)
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }
}

/// Why a connection ends, and so what is sent and whether the will goes.
#[derive(Debug)]
pub(crate) enum Close {
    /// The client sent DISCONNECT: no will (unless 5.0 reason 0x04, handled before).
    ClientDisconnect,
    /// The peer closed the socket or it failed: will goes.
    PeerGone,
    /// A protocol violation: 5.0 clients get DISCONNECT with this code; will goes.
    Violation(ReasonCode, String),
    /// Another connection took the session: DISCONNECT 0x8E; answer (every connection
    /// that asked) when detached.
    TakenOver(Vec<oneshot::Sender<()>>),
    /// Closed by the broker (administrative action) with this code.
    Kicked(ReasonCode),
    /// Keep-alive expired: will goes.
    KeepAliveTimeout,
    /// A subscriber that did not keep up for `slow_consumer_timeout` (slow_consumer.rs):
    /// DISCONNECT 0x97 Quota exceeded; will goes.
    SlowConsumer,
    /// The broker is shutting down: DISCONNECT 0x8B.
    Shutdown,
    /// CONNECT was refused; CONNACK already written.
    Refused,
    /// Not a close: the connection is idle and was asked to park (parking.rs). Only
    /// `serve` with `can_park` returns it, and its caller parks instead of finishing.
    Park,
}

/// An acknowledgement waiting for congested subscribers to have room.
pub(crate) struct HeldAck {
    pub packet: Packet,
    pub waiting: Vec<Arc<dyn DeliveryTarget>>,
    /// When the wait for `waiting` began (charged to them: `DeliveryTarget::charge_hold`).
    pub since: Instant,
    pub deadline: Instant,
    /// The store commit that must be durable first.
    pub ticket: Option<midge_store::CommitTicket>,
    /// Retained messages to queue once this (a SUBACK) is sent.
    pub then: Option<Box<RetainedAfter>>,
}

/// The retained messages a SUBSCRIBE brings, queued after its SUBACK.
pub(crate) struct RetainedAfter {
    pub filters: Vec<(ByteStr, midge_proto::QoS)>,
    pub sub_id: Option<u32>,
}

/// Congested subscribers a QoS 0 publisher waits for, since when, and until when.
pub(crate) struct ReadPause {
    pub waiting: Vec<Arc<dyn DeliveryTarget>>,
    pub since: Instant,
    pub deadline: Instant,
}

/// Drops the targets of a publisher's wait that have room again (or all of them once
/// `deadline` has passed), charging each the time it held the publisher. True when the
/// wait is over.
pub(crate) fn end_wait(
    waiting: &mut Vec<Arc<dyn DeliveryTarget>>,
    since: Instant,
    deadline: Instant,
    now: Instant,
) -> bool {
    let timed_out = deadline <= now;
    waiting.retain(|t| {
        let done = timed_out || t.has_room();
        if done {
            t.charge_hold(since, now);
        }
        !done
    });
    waiting.is_empty()
}

/// What a parked connection keeps of its [`Conn`] (see [`Conn::park`]): about 30 bytes,
/// plus a box for the rare parts when it has any.
pub(crate) struct ParkedConn {
    /// `u32::MAX`: no limit.
    client_max_packet: u32,
    will_delay: u32,
    keep_alive: u16,
    client_receive_max: u16,
    client_alias_max: u16,
    listener: Option<u16>,
    version: ProtocolVersion,
    allow_anonymous: bool,
    connect_expiry_zero: bool,
    /// The poll thread read a PINGREQ and could not write its PINGRESP: the resumed
    /// connection sends it [MQTT-3.12.4-1].
    pingresp_owed: bool,
    rare: Option<Box<ParkedRare>>,
}

impl ParkedConn {
    /// A PINGRESP is owed to the client (see `pingresp_owed`).
    pub(crate) fn owe_pingresp(&mut self) {
        self.pingresp_owed = true;
    }

    /// The listener the connection came through.
    pub(crate) fn listener(&self) -> Option<u16> {
        self.listener
    }
}

/// The parts of a parked connection few have: a will, topic aliases, enhanced
/// authentication.
struct ParkedRare {
    will: Option<Box<midge_proto::Publish>>,
    out_aliases: LazyMap<ByteStr, u16>,
    in_aliases: LazyMap<u16, ByteStr>,
    enhanced: EnhancedAuth,
}

/// Per-connection protocol state. The socket itself stays in [`run_conn`].
pub(crate) struct Conn {
    pub broker: Arc<BrokerInner>,
    pub peer: SocketAddr,
    pub conn_id: u64,
    pub allow_anonymous: bool,
    /// The listener it came through (`BrokerInner::security_of`).
    pub listener: Option<u16>,
    pub wbuf: BytesMut,
    /// Length of the last batch written: a write buffer made after the last one was given
    /// back starts that large, so a busy subscriber's is not regrown for every batch.
    pub wbuf_last: u32,
    /// Something was read since `drain_queue` last recorded it for the keep-alive wheel.
    pub read_since_drain: bool,
    pub version: ProtocolVersion,
    pub client_id: ByteStr,
    pub username: Option<ByteStr>,
    /// The TLS client certificate's name when the listener uses it as the username
    /// (boxed: only TLS listeners set it).
    pub identity: Option<Box<Option<ByteStr>>>,
    pub session: Option<Arc<SessionCell>>,
    pub keep_alive: Duration,
    /// The client's Receive Maximum (5.0), else 65535.
    pub client_receive_max: u16,
    /// The client's Maximum Packet Size (5.0), else unlimited.
    pub client_max_packet: usize,
    /// The client's Topic Alias Maximum (5.0), else 0.
    pub client_alias_max: u16,
    pub out_aliases: LazyMap<ByteStr, u16>,
    pub in_aliases: LazyMap<u16, ByteStr>,
    /// The will as received; it becomes a `Message` when it is published, so its expiry
    /// counts from then. Boxed: most clients have none, and a `Publish` is large.
    pub will: Option<Box<midge_proto::Publish>>,
    pub will_delay: u32,
    /// Session Expiry Interval from CONNECT was 0 (DISCONNECT may not raise it).
    pub connect_expiry_zero: bool,
    pub scratch: LazyScratch,
    pub held_acks: VecDeque<HeldAck>,
    /// Store writes nothing waits for (acknowledged deliveries), gathered while the
    /// packets of a read are handled and sent with the next commit of this connection
    /// (`drain_queue`'s, at the latest): one commit per read, not one per PUBACK.
    pub unsent_ops: Vec<midge_store::Op>,
    /// Position in `held_acks` of the first acknowledgement (PUBREL, PUBCOMP) that waits
    /// for `unsent_ops` to be durable: `drain_queue` commits them and gives it the ticket,
    /// which holds the ones behind it too. One commit per read for a read's worth of
    /// PUBRECs or PUBRELs, not one each.
    pub read_commit_at: Option<u32>,
    /// Start of the current one-second publish-rate window and PUBLISHes in it.
    pub publish_window: (Instant, u32),
    /// Set while the client is over `max_inbound_message_rate`.
    pub throttle_until: Option<Instant>,
    /// A store write failed: nothing more can be acknowledged safely.
    pub store_failed: bool,
    /// Congested subscribers of this QoS 0 publisher, and until when to wait for them:
    /// the connection is not read meanwhile (publisher back-pressure only). Boxed: rare.
    pub read_pause: Option<Box<ReadPause>>,
    /// Since when this subscriber has not kept up (slow_consumer.rs). Boxed: rare.
    pub stall: Option<Box<crate::slow_consumer::Stall>>,
    /// MQTT 5 enhanced authentication (protocol/auth.rs).
    pub enhanced: EnhancedAuth,
}

impl Conn {
    /// The password, ACL and SCRAM files of this connection's listener.
    pub(crate) fn security(&self) -> &crate::broker::Security {
        self.broker.security_of(self.listener.map(usize::from))
    }

    pub(crate) fn new(broker: Arc<BrokerInner>, client: ClientTransport) -> Self {
        let conn_id = broker.next_conn_id();
        Self::with_id(broker, client, conn_id)
    }

    /// A connection before CONNECT, with identifier `conn_id`.
    fn with_id(broker: Arc<BrokerInner>, client: ClientTransport, conn_id: u64) -> Self {
        Conn {
            broker,
            peer: client.peer,
            conn_id,
            allow_anonymous: client.allow_anonymous,
            listener: client.listener,
            wbuf: BytesMut::new(),
            wbuf_last: 0,
            read_since_drain: false,
            version: ProtocolVersion::V311,
            client_id: ByteStr::new(),
            username: None,
            identity: client.identity,
            session: None,
            keep_alive: Duration::ZERO,
            client_receive_max: u16::MAX,
            client_max_packet: usize::MAX,
            client_alias_max: 0,
            out_aliases: LazyMap::new(),
            in_aliases: LazyMap::new(),
            will: None,
            will_delay: 0,
            connect_expiry_zero: true,
            scratch: LazyScratch::default(),
            held_acks: VecDeque::new(),
            unsent_ops: Vec::new(),
            read_commit_at: None,
            publish_window: (Instant::now(), 0),
            throttle_until: None,
            store_failed: false,
            read_pause: None,
            stall: None,
            enhanced: EnhancedAuth::Unused,
        }
    }

    /// Nothing buffered, held or paused: the connection could park (parking.rs).
    fn is_idle(&self) -> bool {
        self.wbuf.is_empty()
            && self.held_acks.is_empty()
            && self.unsent_ops.is_empty()
            && self.read_pause.is_none()
            && self.throttle_until.is_none()
            && !self.store_failed
    }

    /// What a parked connection keeps (parking.rs): the connection's settings, without
    /// the broker (known again on resume), the peer address (asked of the socket again),
    /// the client ID and username (its session has both), the publish-rate window (a
    /// parked client published nothing for a while) and empty buffers.
    pub(crate) fn park(self) -> ParkedConn {
        let rare = (self.will.is_some()
            || self.out_aliases.len() > 0
            || self.in_aliases.len() > 0
            || !matches!(self.enhanced, EnhancedAuth::Unused))
        .then(|| {
            Box::new(ParkedRare {
                will: self.will,
                out_aliases: self.out_aliases,
                in_aliases: self.in_aliases,
                enhanced: self.enhanced,
            })
        });
        ParkedConn {
            client_max_packet: u32::try_from(self.client_max_packet).unwrap_or(u32::MAX),
            will_delay: self.will_delay,
            keep_alive: u16::try_from(self.keep_alive.as_secs()).unwrap_or(u16::MAX),
            client_receive_max: self.client_receive_max,
            client_alias_max: self.client_alias_max,
            listener: self.listener,
            version: self.version,
            allow_anonymous: self.allow_anonymous,
            connect_expiry_zero: self.connect_expiry_zero,
            pingresp_owed: false,
            rare,
        }
    }

    /// The connection again, from what it kept when it parked; `peer` from its socket.
    /// [`Conn::resumed`] completes it from its session.
    pub(crate) fn resume(
        broker: Arc<BrokerInner>,
        conn_id: u64,
        parked: ParkedConn,
        session: Arc<SessionCell>,
        peer: SocketAddr,
    ) -> Conn {
        let client_max_packet = match parked.client_max_packet {
            u32::MAX => usize::MAX,
            n => n as usize,
        };
        let client = ClientTransport {
            listener: parked.listener,
            peer,
            allow_anonymous: parked.allow_anonymous,
            identity: None,
        };
        let mut conn = Conn::with_id(broker, client, conn_id);
        conn.version = parked.version;
        conn.client_id = session.client_id.clone();
        conn.session = Some(session);
        conn.keep_alive = Duration::from_secs(u64::from(parked.keep_alive));
        conn.client_receive_max = parked.client_receive_max;
        conn.client_max_packet = client_max_packet;
        conn.client_alias_max = parked.client_alias_max;
        conn.will_delay = parked.will_delay;
        conn.connect_expiry_zero = parked.connect_expiry_zero;
        if let Some(rare) = parked.rare {
            let ParkedRare {
                will,
                out_aliases,
                in_aliases,
                enhanced,
            } = *rare;
            (conn.will, conn.out_aliases, conn.in_aliases, conn.enhanced) =
                (will, out_aliases, in_aliases, enhanced);
        }
        if parked.pingresp_owed {
            conn.send(&Packet::PingResp);
        }
        conn
    }

    /// First thing in a resumed connection's task: its username from the session, and its
    /// link marked running and filed in the wheel again, to be parked once idle again and
    /// for its keep-alive.
    pub(crate) fn resumed(&mut self) {
        let Some(cell) = &self.session else {
            return;
        };
        let mut st = cell.state.lock();
        self.username = st.username.clone();
        if let Some(link) = st.conn.as_mut().filter(|l| l.conn_id == self.conn_id) {
            link.parked = false;
            self.broker.keep_alive.schedule(cell, link, Instant::now());
        }
    }

    /// The largest packet we accept from this client.
    pub fn max_packet_in(&self) -> usize {
        match self.broker.config.max_packet_size {
            0 => PROTOCOL_MAX_PACKET,
            n => n as usize,
        }
    }

    /// Appends a packet to the write buffer.
    pub fn send(&mut self, packet: &Packet) {
        if self.wbuf.capacity() == 0 {
            self.wbuf.reserve(self.wbuf_last as usize);
        }
        encode(packet, self.version, &mut self.wbuf);
        self.broker
            .stats
            .messages_sent
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a PUBLISH against `max_inbound_message_rate`; past it the connection stops
    /// reading until the current second is over.
    fn count_publish(&mut self, now: Instant) {
        let rate = self.broker.config.max_inbound_message_rate;
        if rate == 0 {
            return;
        }
        let (start, count) = &mut self.publish_window;
        if now.duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *count = 0;
        }
        *count += 1;
        if *count >= rate {
            self.throttle_until = Some(*start + Duration::from_secs(1));
            self.broker
                .stats
                .publish_throttled
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Dispatches one packet received after CONNECT. `now` is the time the packets of
    /// this read are taken to have arrived: read once per batch, not per PUBLISH.
    fn handle(&mut self, packet: Packet, now: &mut Option<Instant>) -> Result<(), Close> {
        match packet {
            Packet::Publish(p) => {
                let now = *now.get_or_insert_with(Instant::now);
                self.count_publish(now);
                self.handle_publish(p, now)
            }
            Packet::PubAck(a) => self.handle_puback(a),
            Packet::PubRec(a) => self.handle_pubrec(a),
            Packet::PubRel(a) => self.handle_pubrel(a),
            Packet::PubComp(a) => self.handle_pubcomp(a),
            Packet::Subscribe(s) => self.handle_subscribe(s),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(u),
            Packet::PingReq => {
                self.send(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => self.handle_disconnect(d),
            Packet::Auth(a) => self.handle_auth(a),
            // A second CONNECT is a protocol violation [MQTT-3.1.0-2].
            Packet::Connect(_) => Err(Close::Violation(
                ReasonCode::PROTOCOL_ERROR,
                "second CONNECT".into(),
            )),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(Close::Violation(
                    ReasonCode::PROTOCOL_ERROR,
                    "packet only a server may send".into(),
                ))
            }
        }
    }

    /// The DISCONNECT to send a 5.0 client as the connection closes, if any.
    fn closing_disconnect(&self, close: &Close) -> Option<ReasonCode> {
        if !self.version.is_v5() || self.session.is_none() {
            return None;
        }
        match close {
            Close::Violation(rc, _) => Some(*rc),
            Close::TakenOver(_) => Some(ReasonCode::SESSION_TAKEN_OVER),
            Close::Kicked(rc) => Some(*rc),
            Close::KeepAliveTimeout => Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
            Close::SlowConsumer => Some(ReasonCode::QUOTA_EXCEEDED),
            Close::Shutdown => Some(ReasonCode::SERVER_SHUTTING_DOWN),
            Close::ClientDisconnect | Close::PeerGone | Close::Refused | Close::Park => None,
        }
    }
}

/// Serves one connection until it closes (`Broker::serve_stream`; the listeners build the
/// [`Conn`] first and call [`run_conn`]).
pub(crate) async fn run<R, W>(
    broker: Arc<BrokerInner>,
    reader: R,
    writer: W,
    client: ClientTransport,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut conn = Conn::new(broker, client);
    run_conn(&mut conn, reader, writer).await;
}

/// Serves the connection `conn` was made for until it closes.
pub(crate) async fn run_conn<R, W>(conn: &mut Conn, mut reader: R, mut writer: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut rbuf = BytesMut::new();
    // Boxed: the connect phase's state (the CONNECT, authentication, session lookup) is
    // several times the size of the loop's and is not needed once connected.
    let connected = Box::pin(connect_phase(conn, &mut reader, &mut writer, &mut rbuf)).await;
    let close = match connected {
        Ok(()) => {
            start_serving(conn);
            serve(conn, &mut reader, &mut writer, &mut rbuf, Parking::Off).await
        }
        Err(close) => close,
    };
    finish(conn, &mut writer, close).await;
}

/// Once connected: files the connection in the broker's wheel for its keep-alive, checked
/// there rather than by a timer per connection: 1.5 times the keep-alive
/// [MQTT-3.1.2-24], zero disables the check (the connection records when it last read,
/// in `drain_queue`), and for parking once idle.
pub(crate) fn start_serving(conn: &Conn) {
    let Some(cell) = &conn.session else {
        return;
    };
    let limit = conn.keep_alive + conn.keep_alive / 2;
    let now = Instant::now();
    let mut st = cell.state.lock();
    if let Some(link) = st.conn.as_mut().filter(|l| l.conn_id == conn.conn_id) {
        link.keep_alive_ms = u32::try_from(limit.as_millis()).unwrap_or(u32::MAX);
        link.set_last_read(now);
        conn.broker.keep_alive.schedule(cell, link, now);
    }
}

/// Everything before the connection is established: CONNECT, the enhanced
/// authentication exchange if the CONNECT asks for one, and the CONNACK. All of it within
/// the connect timeout.
pub(crate) async fn connect_phase<R, W>(
    conn: &mut Conn,
    reader: &mut R,
    writer: &mut W,
    rbuf: &mut BytesMut,
) -> Result<(), Close>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let deadline = Instant::now() + conn.broker.config.connect_timeout;
    // The first packet must be CONNECT [MQTT-3.1.0-1]; it carries its own protocol level.
    let connect = match read_before_connack(conn, reader, rbuf, deadline).await {
        Ok(Packet::Connect(c)) => c,
        Ok(other) => {
            tracing::info!(peer = %conn.peer, "first packet was {:?}, not CONNECT; closing", other.packet_type());
            return Err(Close::PeerGone);
        }
        Err(close) => return Err(close),
    };
    if connect.properties.authentication_method.is_some() {
        conn.version = connect.protocol;
        conn.start_connect_auth(&connect)?;
        while matches!(conn.enhanced, EnhancedAuth::Pending(_)) {
            let written = tokio::time::timeout_at(deadline, writer.write_all(&conn.wbuf)).await;
            if !matches!(written, Ok(Ok(()))) {
                return Err(Close::PeerGone);
            }
            conn.wbuf.clear();
            match read_before_connack(conn, reader, rbuf, deadline).await? {
                Packet::Auth(a) => conn.continue_connect_auth(a).await?,
                other => {
                    let why = format!(
                        "{:?} during the authentication exchange",
                        other.packet_type()
                    );
                    return Err(conn.refuse(ReasonCode::PROTOCOL_ERROR, &why));
                }
            }
        }
    }
    conn.handle_connect(connect).await
}

/// Reads the next packet before CONNACK, within `deadline`. The CONNECT is decoded as
/// 5.0 (it names its own level); the packets after it in the version it named.
async fn read_before_connack<R: AsyncRead + Unpin>(
    conn: &mut Conn,
    reader: &mut R,
    rbuf: &mut BytesMut,
    deadline: Instant,
) -> Result<Packet, Close> {
    let max = conn.max_packet_in();
    let version = if matches!(conn.enhanced, EnhancedAuth::Unused) {
        ProtocolVersion::V5
    } else {
        conn.version
    };
    loop {
        match decode(rbuf, version, max) {
            Ok(Some(packet)) => {
                conn.broker
                    .stats
                    .messages_received
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(packet);
            }
            Ok(None) => {}
            Err(e) if matches!(conn.enhanced, EnhancedAuth::Unused) => {
                tracing::info!(peer = %conn.peer, "bad CONNECT: {e}");
                conn.refuse_connect_error(&e);
                return Err(Close::Refused);
            }
            Err(e) => {
                return Err(conn.refuse(e.reason_code(), &format!("bad packet: {e}")));
            }
        }
        let read = std::future::poll_fn(|cx| poll_read_into(reader, rbuf, cx));
        // A shutdown does not wait for a CONNECT that may never come: the connection is
        // closed without a word (no DISCONNECT before CONNACK [MQTT-3.14.0-1]).
        let mut shutdown = conn.broker.shutdown.clone();
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline, read) => r,
            _ = shutdown.wait_for(|stopping| *stopping) => return Err(Close::PeerGone),
        };
        match read {
            Err(_) => {
                tracing::info!(peer = %conn.peer, "not connected within the connect timeout ({:?}); closing", conn.broker.config.connect_timeout);
                return Err(Close::PeerGone);
            }
            Ok(Ok(0)) | Ok(Err(_)) => return Err(Close::PeerGone),
            Ok(Ok(n)) => {
                conn.broker
                    .stats
                    .bytes_received
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Whether the main loop may end in `Close::Park`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parking {
    /// Never (not plain TCP, or no park table).
    Off,
    /// When the keep-alive wheel asks, idle for `park_idle_after`.
    WhenAsked,
    /// Right after CONNECT: also once idle for [`FIRST_PARK_AFTER`] if nothing is read
    /// before, then as `WhenAsked`.
    SoonAfterConnect,
}

/// The main loop after a successful CONNECT. With `parking` other than `Off` (plain TCP
/// with a park table) it returns `Close::Park` when it should park while idle.
pub(crate) async fn serve<R, W>(
    conn: &mut Conn,
    reader: &mut R,
    writer: &mut W,
    rbuf: &mut BytesMut,
    parking: Parking,
) -> Close
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Some(cell) = conn.session.clone() else {
        return Close::PeerGone;
    };
    // Once attached, a shutdown reaches this connection as a request (`Broker::shutdown`).
    if *conn.broker.shutdown.borrow() {
        return Close::Shutdown;
    }
    let max_in = conn.max_packet_in();
    let can_park = parking != Parking::Off;
    // Boxed, and only until the first read: a fresh connection's early park (see
    // `FIRST_PARK_AFTER`).
    let mut first_park = (parking == Parking::SoonAfterConnect).then(|| {
        let after = FIRST_PARK_AFTER.min(conn.broker.config.park_idle_after);
        Box::pin(tokio::time::sleep(after))
    });
    loop {
        // A client over its publish rate is not read (nor its buffered packets handled)
        // until the rate window ends. One clock read serves the PUBLISH packets of this
        // batch (a read's worth); the block keeps it out of the task's saved state.
        {
            let mut now = None;
            while conn.throttle_until.is_none() && conn.read_pause.is_none() {
                match decode(rbuf, conn.version, max_in) {
                    Ok(Some(packet)) => {
                        conn.broker
                            .stats
                            .messages_received
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::trace!(client = %conn.client_id, "received {:?}", packet.packet_type());
                        if let Err(close) = conn.handle(packet, &mut now) {
                            return close;
                        }
                    }
                    Ok(None) => {
                        if rbuf.is_empty() {
                            // Everything read was handled: let the buffer go (packets still
                            // referring to it keep their part alive). The next read lands in
                            // the per-thread buffer.
                            *rbuf = BytesMut::new();
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::info!(client = %conn.client_id, peer = %conn.peer, "closing: {e}");
                        return Close::Violation(e.reason_code(), e.to_string());
                    }
                }
            }
        }
        if conn.scratch.routed_to_full {
            // What this client published found a connected subscriber's queue full: let
            // that subscriber's connection (on this worker, maybe) drain before reading
            // more, instead of reading a whole cooperative budget of messages that would
            // all be dropped for it. A yield, not a wait: nobody holds this publisher.
            conn.scratch.routed_to_full = false;
            tokio::task::yield_now().await;
        }
        let request = conn.drain_queue(&cell);
        // Asked to park with nothing left in the session: park if nothing is left here
        // either.
        if matches!(request, Some(Control::Park)) && can_park && rbuf.is_empty() && conn.is_idle() {
            return Close::Park;
        }
        match request {
            Some(Control::TakeOver(acks)) => return Close::TakenOver(acks),
            Some(Control::Close(rc)) => return Close::Kicked(rc),
            Some(Control::Shutdown) => return Close::Shutdown,
            Some(Control::KeepAliveTimeout) => {
                tracing::info!(client = %conn.client_id, "keep-alive expired; closing");
                return Close::KeepAliveTimeout;
            }
            Some(Control::Park) | None => {}
        }
        conn.release_held_acks();
        if conn.store_failed {
            return Close::Violation(ReasonCode::UNSPECIFIED_ERROR, "store write failed".into());
        }
        if let Some(pause) = &mut conn.read_pause {
            let ReadPause {
                waiting,
                since,
                deadline,
            } = &mut **pause;
            if end_wait(waiting, *since, *deadline, Instant::now()) {
                conn.read_pause = None;
            }
        }
        if conn.wbuf.len() >= WRITE_HIGH_WATER {
            conn.note_unwritten();
        }
        if conn.wbuf.is_empty() && conn.wbuf.capacity() > 0 {
            // Nothing to write: give the buffer back.
            conn.wbuf = BytesMut::new();
        } else if !conn.wbuf.is_empty() {
            conn.wbuf_last = conn.wbuf.len().min(WRITE_HIGH_WATER) as u32;
        }
        let held = conn.held_ack_wait().or_else(|| {
            let pause = conn.read_pause.as_ref()?;
            Some((pause.waiting.first()?.clone(), pause.deadline))
        });
        let ticket = conn.held_acks.front_mut().and_then(|h| h.ticket.as_mut());
        // Waiting for a commit or for a congested subscriber's room is rare; its state is
        // boxed so that the connection's task does not carry it.
        let mut room_box = (ticket.is_some() || held.is_some()).then(|| {
            Box::pin(async move {
                if let Some(ticket) = ticket {
                    return Some(ticket.await);
                }
                if let Some((target, deadline)) = held {
                    // Enabled before the check, so a wake-up in between is not lost.
                    let notified = target.room().notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if !target.has_room() {
                        tokio::select! {
                            _ = notified => {}
                            _ = tokio::time::sleep_until(deadline) => {}
                        }
                    }
                }
                None
            })
        });
        // The end of a throttling window (`max_inbound_message_rate`): rare, so boxed.
        let mut throttle = conn
            .throttle_until
            .map(|t| Box::pin(tokio::time::sleep_until(t)));
        let throttled = std::future::poll_fn(move |cx| match throttle.as_mut() {
            Some(s) => s.as_mut().poll(cx),
            None => Poll::Pending,
        });
        let room = std::future::poll_fn(move |cx| match room_box.as_mut() {
            Some(f) => f.as_mut().poll(cx),
            None => Poll::Pending,
        });
        let notified = cell.notify.notified();
        let read = std::future::poll_fn(|cx| poll_read_into(reader, rbuf, cx));
        let stall = &mut conn.stall;
        let stalled = std::future::poll_fn(|cx| match stall.as_deref_mut() {
            Some(s) => s.poll_timer(cx),
            None => Poll::Pending,
        });
        let first_park_due = std::future::poll_fn(|cx| match first_park.as_mut() {
            Some(s) => s.as_mut().poll(cx),
            None => Poll::Pending,
        });
        tokio::select! {
            biased;
            r = writer.write_buf(&mut conn.wbuf), if !conn.wbuf.is_empty() => match r {
                Ok(0) | Err(_) => return Close::PeerGone,
                Ok(n) => {
                    conn.broker.stats.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
                    conn.note_written();
                    if conn.wbuf.is_empty() {
                        let _ = writer.flush().await;
                    }
                }
            },
            r = read, if conn.wbuf.len() < WRITE_HIGH_WATER
                && conn.throttle_until.is_none()
                && conn.read_pause.is_none() => match r {
                Ok(0) | Err(_) => return Close::PeerGone,
                Ok(n) => {
                    conn.broker.stats.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
                    conn.read_since_drain = true;
                    // The client is doing something: parking is the wheel's business now.
                    first_park = None;
                }
            },
            _ = notified => {}
            committed = room => {
                // The front acknowledgement's commit finished: record it so that
                // `release_held_acks` does not poll the finished ticket again.
                if let Some(result) = committed {
                    if let Some(front) = conn.held_acks.front_mut() {
                        front.ticket = None;
                    }
                    if let Err(e) = result {
                        tracing::error!(client = %conn.client_id, "store write failed: {e}");
                        return Close::Violation(ReasonCode::UNSPECIFIED_ERROR, "store write failed".into());
                    }
                }
            }
            () = throttled => conn.throttle_until = None,
            () = stalled => {
                if let Some(close) = conn.stall_fired() {
                    return close;
                }
            }
            () = first_park_due => {
                first_park = None;
                // Idle since its CONNACK: park (the park table checks the session again).
                if rbuf.is_empty() && conn.is_idle() && conn.wbuf.is_empty() {
                    return Close::Park;
                }
            }
        }
    }
}

/// Reads what the socket has into `rbuf`; `Ok(0)` is the end of the stream.
///
/// With a packet partly read, the read goes straight into `rbuf`, made room for the rest
/// of it. Otherwise it lands in the thread's buffer and only the bytes read are copied
/// into `rbuf`: a connection waiting for its next packet holds no buffer.
fn poll_read_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    rbuf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if rbuf.is_empty() {
        let scratch = READ_SCRATCH.with(|cell| {
            let Ok(mut buf) = cell.try_borrow_mut() else {
                return None;
            };
            let mut rb = ReadBuf::new(&mut buf);
            Some(match Pin::new(&mut *reader).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    rbuf.extend_from_slice(rb.filled());
                    Poll::Ready(Ok(rb.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            })
        });
        if let Some(polled) = scratch {
            return polled;
        }
    }
    reserve_for_next(rbuf);
    let read = reader.read_buf(rbuf);
    tokio::pin!(read);
    read.poll(cx)
}

/// Makes room for the rest of a partly read packet in one allocation (its size was
/// already checked against the maximum by the decoder), and for reads of at least
/// `READ_CHUNK` bytes so a stream of small packets needs few system calls.
fn reserve_for_next(rbuf: &mut BytesMut) {
    let wanted = match midge_proto::decode_fixed_header(rbuf) {
        Ok(Some(h)) => (h.header_len + h.remaining_len).saturating_sub(rbuf.len()),
        _ => 0,
    };
    let spare = rbuf.capacity() - rbuf.len();
    if spare < wanted.max(READ_CHUNK / 4) {
        rbuf.reserve(wanted.max(READ_CHUNK));
    }
}

/// Sends what the close calls for, flushes, detaches from the session and fires the will.
pub(crate) async fn finish<W: AsyncWrite + Unpin>(conn: &mut Conn, writer: &mut W, close: Close) {
    if !conn.unsent_ops.is_empty() {
        // Before the detach's writes, so that the store gets this connection's in order.
        conn.broker
            .commit_detached(std::mem::take(&mut conn.unsent_ops));
    }
    if let Some(rc) = conn.closing_disconnect(&close) {
        conn.send(&Packet::Disconnect(Disconnect {
            reason_code: rc,
            properties: Properties::default(),
        }));
    }
    if let Close::Violation(rc, why) = &close {
        tracing::info!(client = %conn.client_id, peer = %conn.peer, "closing connection: {why} ({rc})");
    }
    if !conn.wbuf.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(2), writer.write_all(&conn.wbuf)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
    let will_goes = matches!(
        close,
        Close::PeerGone
            | Close::Violation(..)
            | Close::TakenOver(_)
            | Close::Kicked(_)
            | Close::KeepAliveTimeout
            | Close::SlowConsumer
    );
    if let Some(cell) = conn.session.take() {
        // The will's Message Expiry Interval starts when it is published, after its delay.
        let publish_at = Instant::now() + Duration::from_secs(u64::from(conn.will_delay));
        // Stored at CONNECT; a shutdown leaves the record for the next start to send.
        let will_stored = conn.will.is_some() && !matches!(close, Close::Shutdown);
        let will = match conn.will.take() {
            Some(w) if will_goes => {
                let topic = w.topic.clone();
                Some(Message::from_publish(*w, topic, cell.id, publish_at))
            }
            _ => None,
        };
        conn.broker.detach(
            &cell,
            conn.conn_id,
            will,
            conn.will_delay,
            will_stored,
            conn.version.level(),
        );
        conn.broker.stats.client_disconnected();
        tracing::info!(client = %conn.client_id, peer = %conn.peer, "client disconnected ({close:?})");
    }
    if let Close::TakenOver(acks) = close {
        for ack in acks {
            let _ = ack.send(());
        }
    }
}
