//! One network connection: opening it (CONNECT, CONNACK), its buffers, the limits the
//! server announced, and its topic alias tables.

use crate::alias::{IncomingAliases, OutgoingAliases};
use crate::auth::{auth_packet, check_server_auth, Authenticator};
use crate::options::{ConnectOptions, Direction, PacketObserver};
use crate::transport::BoxTransport;
use crate::Error;
use bytes::BytesMut;
use midge_proto::{
    decode, encode, encoded_len, ByteStr, ConnAck, Connect, Disconnect, Packet, ProtocolVersion,
    Publish, ReasonCode,
};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;

/// The largest packet MQTT can express: 268,435,455 bytes of body plus a 5-byte header.
const PROTOCOL_MAX_PACKET: usize = 268_435_460;

/// What the server allows, from CONNACK (5.0 defaults when absent or before 5.0).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerLimits {
    pub receive_maximum: u16,
    pub maximum_packet_size: usize,
    pub maximum_qos: u8,
    pub retain_available: bool,
}

impl ServerLimits {
    fn from_connack(connack: &ConnAck) -> Self {
        let p = &connack.properties;
        ServerLimits {
            receive_maximum: p.receive_maximum.unwrap_or(u16::MAX),
            maximum_packet_size: p
                .maximum_packet_size
                .and_then(|m| usize::try_from(m).ok())
                .unwrap_or(PROTOCOL_MAX_PACKET),
            maximum_qos: p.maximum_qos.unwrap_or(2),
            retain_available: p.retain_available != Some(0),
        }
    }
}

/// An open connection after a successful CONNACK.
pub(crate) struct Link {
    pub version: ProtocolVersion,
    pub reader: ReadHalf<BoxTransport>,
    pub writer: WriteHalf<BoxTransport>,
    pub read_buf: BytesMut,
    pub write_buf: BytesMut,
    /// Largest packet we accept (our Maximum Packet Size).
    pub max_incoming: usize,
    pub limits: ServerLimits,
    pub out_aliases: OutgoingAliases,
    pub in_aliases: IncomingAliases,
    /// The keep-alive in force (the server's Server Keep Alive wins); `None` when zero.
    pub keep_alive: Option<Duration>,
    pub last_write: Instant,
    pub ping_sent: Option<Instant>,
    pub observer: Option<PacketObserver>,
}

impl Link {
    /// Queues a packet for writing.
    pub(crate) fn send(&mut self, packet: &Packet) {
        if let Some(observe) = &self.observer {
            observe(Direction::Sent, packet);
        }
        encode(packet, self.version, &mut self.write_buf);
    }

    /// Tells the observer, if any, about a received packet.
    pub(crate) fn observe_received(&self, packet: &Packet) {
        if let Some(observe) = &self.observer {
            observe(Direction::Received, packet);
        }
    }

    /// Queues a PUBLISH, using a topic alias when allowed, unless it is larger than the
    /// server accepts.
    pub(crate) fn send_publish(
        &mut self,
        publish: &Publish,
        use_aliases: bool,
    ) -> Result<(), Error> {
        let mut publish = publish.clone();
        publish.properties.topic_alias = None;
        let created = if use_aliases && self.version.is_v5() {
            self.out_aliases.apply(&mut publish)
        } else {
            None
        };
        let packet = Packet::Publish(publish);
        let size = encoded_len(&packet, self.version);
        if size > self.limits.maximum_packet_size {
            if let (Some(_), Packet::Publish(p)) = (created, &packet) {
                self.out_aliases.forget(&p.topic);
            }
            return Err(Error::PacketTooLarge {
                size,
                max: self.limits.maximum_packet_size,
            });
        }
        self.send(&packet);
        Ok(())
    }

    /// When the next keep-alive action is due: a PINGREQ after `keep_alive` without
    /// writing, or giving up when a PINGREQ stays unanswered that long.
    pub(crate) fn keep_alive_deadline(&self) -> Option<Instant> {
        let interval = self.keep_alive?;
        Some(match self.ping_sent {
            Some(sent) => sent + interval,
            None => self.last_write + interval,
        })
    }

    /// Writes out everything queued (used when closing, outside the event loop's select).
    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        self.writer.write_all(&self.write_buf).await?;
        self.write_buf.clear();
        self.writer.flush().await
    }
}

/// Opens a connection and performs the CONNECT / CONNACK exchange, with an enhanced
/// authentication exchange in between when there is an `authenticator`.
pub(crate) async fn open(
    options: &ConnectOptions,
    clean_start: bool,
    client_id: &ByteStr,
    authenticator: Option<&mut (dyn Authenticator + 'static)>,
) -> Result<(Link, ConnAck), Error> {
    let attempt = handshake(options, clean_start, client_id, authenticator);
    match tokio::time::timeout(options.connect_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout),
    }
}

fn connect_packet(options: &ConnectOptions, clean_start: bool, client_id: &ByteStr) -> Connect {
    let v5 = options.protocol.is_v5();
    Connect {
        protocol: options.protocol,
        clean_start,
        keep_alive: options.keep_alive,
        client_id: client_id.clone(),
        will: options.will.as_ref().map(|w| midge_proto::Will {
            topic: w.topic.clone(),
            payload: w.payload.clone(),
            qos: w.qos,
            retain: w.retain,
            properties: if v5 {
                w.properties.clone()
            } else {
                Default::default()
            },
        }),
        username: options.username.clone(),
        password: options.password.clone(),
        properties: if v5 {
            options.properties.clone()
        } else {
            Default::default()
        },
    }
}

/// The socket while CONNECT is being answered.
struct Handshake<'a> {
    options: &'a ConnectOptions,
    reader: ReadHalf<BoxTransport>,
    writer: WriteHalf<BoxTransport>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    max_incoming: usize,
}

impl Handshake<'_> {
    async fn send(&mut self, packet: &Packet) -> Result<(), Error> {
        if let Some(observe) = &self.options.observer {
            observe(Direction::Sent, packet);
        }
        encode(packet, self.options.protocol, &mut self.write_buf);
        self.writer.write_all(&self.write_buf).await?;
        self.writer.flush().await?;
        self.write_buf.clear();
        Ok(())
    }

    async fn receive(&mut self) -> Result<Packet, Error> {
        loop {
            let decoded = decode(&mut self.read_buf, self.options.protocol, self.max_incoming)?;
            if let Some(packet) = decoded {
                if let Some(observe) = &self.options.observer {
                    observe(Direction::Received, &packet);
                }
                return Ok(packet);
            }
            if self.reader.read_buf(&mut self.read_buf).await? == 0 {
                return Err(Error::ConnectionClosed);
            }
        }
    }

    /// Gives up on the server: a DISCONNECT saying why (5.0: "the Client can close the
    /// connection at any point in this process. It MAY send a DISCONNECT packet before
    /// doing so", section 4.12), then `error`.
    async fn abandon(mut self, reason: ReasonCode, error: Error) -> Error {
        if self.options.protocol.is_v5() {
            let disconnect = Packet::Disconnect(Disconnect {
                reason_code: reason,
                ..Disconnect::default()
            });
            let _ = tokio::time::timeout(Duration::from_secs(1), self.send(&disconnect)).await;
        }
        error
    }
}

async fn handshake(
    options: &ConnectOptions,
    clean_start: bool,
    client_id: &ByteStr,
    mut authenticator: Option<&mut (dyn Authenticator + 'static)>,
) -> Result<(Link, ConnAck), Error> {
    if options.password.is_some() && options.username.is_none() && !options.protocol.is_v5() {
        return Err(Error::InvalidRequest(
            "a password needs a user name before MQTT 5.0".into(),
        ));
    }
    let mut connect = connect_packet(options, clean_start, client_id);
    if let Some(auth) = authenticator.as_deref_mut() {
        if !options.protocol.is_v5() {
            return Err(Error::InvalidRequest(
                "enhanced authentication needs MQTT 5.0".into(),
            ));
        }
        connect.properties.authentication_method = Some(auth.method().into());
        connect.properties.authentication_data = auth.start()?;
    }
    let stream = options.connector.connect().await?;
    let (reader, writer) = tokio::io::split(stream);
    let mut hs = Handshake {
        options,
        reader,
        writer,
        read_buf: BytesMut::with_capacity(4096),
        write_buf: BytesMut::new(),
        max_incoming: options
            .properties
            .maximum_packet_size
            .and_then(|m| usize::try_from(m).ok())
            .filter(|_| options.protocol.is_v5())
            .unwrap_or(PROTOCOL_MAX_PACKET),
    };
    hs.send(&Packet::Connect(Box::new(connect))).await?;
    let single_step = options.properties.authentication_method.is_some();
    let connack = loop {
        let packet = hs.receive().await?;
        match authenticate(packet, authenticator.as_deref_mut(), single_step) {
            Ok(Step::Done(connack)) => break connack,
            Ok(Step::Answer(auth)) => hs.send(&auth).await?,
            Err((Some(reason), error)) => return Err(hs.abandon(reason, error).await),
            Err((None, error)) => return Err(error),
        }
    };
    let keep_alive = connack
        .properties
        .server_keep_alive
        .unwrap_or(options.keep_alive);
    let v5 = options.protocol.is_v5();
    let link = Link {
        version: options.protocol,
        reader: hs.reader,
        writer: hs.writer,
        read_buf: hs.read_buf,
        write_buf: hs.write_buf,
        max_incoming: hs.max_incoming,
        limits: ServerLimits::from_connack(&connack),
        out_aliases: OutgoingAliases::new(if v5 {
            connack.properties.topic_alias_maximum.unwrap_or(0)
        } else {
            0
        }),
        in_aliases: IncomingAliases::new(options.properties.topic_alias_maximum.unwrap_or(0)),
        keep_alive: (keep_alive > 0).then(|| Duration::from_secs(u64::from(keep_alive))),
        last_write: Instant::now(),
        ping_sent: None,
        observer: options.observer.clone(),
    };
    Ok((link, connack))
}

/// Where a packet received before CONNACK leaves the handshake.
enum Step {
    /// A successful CONNACK (its authentication, if any, verified).
    Done(ConnAck),
    /// The AUTH to answer the server's challenge with.
    Answer(Packet),
}

/// A failed handshake: the DISCONNECT reason code to tell the server, if any, and the error.
type Failure = (Option<ReasonCode>, Error);

/// Handles one packet received in answer to CONNECT.
/// `single_step`: CONNECT carried an Authentication Method without an authenticator.
fn authenticate(
    packet: Packet,
    authenticator: Option<&mut (dyn Authenticator + 'static)>,
    single_step: bool,
) -> Result<Step, Failure> {
    let protocol = |(reason, what): (ReasonCode, String)| (Some(reason), Error::Protocol(what));
    match (packet, authenticator) {
        (Packet::ConnAck(connack), _) if connack.reason_code.is_error() => Err((
            None,
            Error::ConnectionRefused {
                reason_code: connack.reason_code,
                reason_string: connack
                    .properties
                    .reason_string
                    .as_ref()
                    .map(|s| s.to_string()),
            },
        )),
        (Packet::ConnAck(connack), None) => Ok(Step::Done(connack)),
        (Packet::ConnAck(connack), Some(auth)) => {
            let theirs = connack.properties.authentication_method.as_deref();
            if theirs != Some(auth.method()) {
                return Err(protocol((
                    ReasonCode::PROTOCOL_ERROR,
                    format!(
                        "CONNACK with Authentication Method {theirs:?}, expected {:?} \
                         [MQTT-4.12.0-5]",
                        auth.method()
                    ),
                )));
            }
            auth.finish(connack.properties.authentication_data.as_deref())
                .map_err(|e| (Some(ReasonCode::NOT_AUTHORIZED), e.into()))?;
            Ok(Step::Done(connack))
        }
        (Packet::Auth(_), None) if !single_step => Err(protocol((
            ReasonCode::PROTOCOL_ERROR,
            "AUTH from the server although the client sent no Authentication Method \
             [MQTT-4.12.0-6]"
                .into(),
        ))),
        (Packet::Auth(_), None) => Err(protocol((
            ReasonCode::PROTOCOL_ERROR,
            "the server asked for an enhanced authentication exchange (AUTH), but the client \
             has no authenticator (see ConnectOptions::authenticator)"
                .into(),
        ))),
        (Packet::Auth(packet), Some(auth)) => {
            let method = auth.method().to_owned();
            let data = check_server_auth(&packet, &method, ReasonCode::CONTINUE_AUTHENTICATION)
                .map_err(protocol)?;
            let answer = auth
                .step(data)
                .map_err(|e| (Some(ReasonCode::NOT_AUTHORIZED), e.into()))?;
            // [MQTT-4.12.0-3] The answer to AUTH is AUTH 0x18 (Continue authentication).
            Ok(Step::Answer(auth_packet(
                ReasonCode::CONTINUE_AUTHENTICATION,
                &method,
                answer,
            )))
        }
        (other, _) => Err(protocol((
            ReasonCode::PROTOCOL_ERROR,
            format!("expected CONNACK, got {:?}", other.packet_type()),
        ))),
    }
}
