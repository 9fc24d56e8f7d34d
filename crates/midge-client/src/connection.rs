//! One network connection: opening it (CONNECT, CONNACK), its buffers, the limits the
//! server announced, and its topic alias tables.

use crate::alias::{IncomingAliases, OutgoingAliases};
use crate::options::{ConnectOptions, Direction, PacketObserver};
use crate::transport::BoxTransport;
use crate::Error;
use bytes::BytesMut;
use midge_proto::{
    decode, encode, encoded_len, ByteStr, ConnAck, Connect, Packet, ProtocolVersion, Publish,
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

/// Opens a connection and performs the CONNECT / CONNACK exchange.
pub(crate) async fn open(
    options: &ConnectOptions,
    clean_start: bool,
    client_id: &ByteStr,
) -> Result<(Link, ConnAck), Error> {
    let attempt = handshake(options, clean_start, client_id);
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

async fn handshake(
    options: &ConnectOptions,
    clean_start: bool,
    client_id: &ByteStr,
) -> Result<(Link, ConnAck), Error> {
    if options.password.is_some() && options.username.is_none() && !options.protocol.is_v5() {
        return Err(Error::InvalidRequest(
            "a password needs a user name before MQTT 5.0".into(),
        ));
    }
    let stream = options.connector.connect().await?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let connect = connect_packet(options, clean_start, client_id);
    let mut write_buf = BytesMut::new();
    let connect = Packet::Connect(Box::new(connect));
    if let Some(observe) = &options.observer {
        observe(Direction::Sent, &connect);
    }
    encode(&connect, options.protocol, &mut write_buf);
    writer.write_all(&write_buf).await?;
    writer.flush().await?;
    write_buf.clear();

    let max_incoming = options
        .properties
        .maximum_packet_size
        .and_then(|m| usize::try_from(m).ok())
        .filter(|_| options.protocol.is_v5())
        .unwrap_or(PROTOCOL_MAX_PACKET);
    let mut read_buf = BytesMut::with_capacity(4096);
    let connack = loop {
        if let Some(packet) = decode(&mut read_buf, options.protocol, max_incoming)? {
            if let Some(observe) = &options.observer {
                observe(Direction::Received, &packet);
            }
            break expect_connack(packet)?;
        }
        if reader.read_buf(&mut read_buf).await? == 0 {
            return Err(Error::ConnectionClosed);
        }
    };
    let keep_alive = connack
        .properties
        .server_keep_alive
        .unwrap_or(options.keep_alive);
    let v5 = options.protocol.is_v5();
    let link = Link {
        version: options.protocol,
        reader,
        writer,
        read_buf,
        write_buf,
        max_incoming,
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

fn expect_connack(packet: Packet) -> Result<ConnAck, Error> {
    match packet {
        Packet::ConnAck(connack) if connack.reason_code.is_error() => {
            Err(Error::ConnectionRefused {
                reason_code: connack.reason_code,
                reason_string: connack
                    .properties
                    .reason_string
                    .as_ref()
                    .map(|s| s.to_string()),
            })
        }
        Packet::ConnAck(connack) => Ok(connack),
        Packet::Auth(_) => Err(Error::Protocol(
            "the server asked for an enhanced authentication exchange (AUTH), which this \
             client does not support"
                .into(),
        )),
        other => Err(Error::Protocol(format!(
            "expected CONNACK, got {:?}",
            other.packet_type()
        ))),
    }
}
