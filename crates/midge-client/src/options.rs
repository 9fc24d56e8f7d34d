//! Connect options: everything CONNECT carries, plus how the client behaves around it
//! (timeouts, reconnect, buffers).

use crate::auth::Authenticator;
use crate::transport::{Connector, TcpConnector};
use bytes::Bytes;
use midge_proto::{ByteStr, Properties, ProtocolVersion, QoS};
use std::sync::Arc;
use std::time::Duration;

/// The will message: published by the server if the client goes away without DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: ByteStr,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Will properties (5.0): will delay interval, message expiry interval, content type,
    /// response topic, correlation data, payload format indicator, user properties.
    pub properties: Properties,
}

impl Will {
    pub fn new(topic: impl Into<ByteStr>, payload: impl Into<Bytes>) -> Self {
        Will {
            topic: topic.into(),
            payload: payload.into(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
        }
    }

    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    /// Seconds the server waits after the connection is lost before publishing (5.0).
    pub fn delay_interval(mut self, seconds: u32) -> Self {
        self.properties.will_delay_interval = Some(seconds);
        self
    }

    pub fn properties(mut self, properties: Properties) -> Self {
        self.properties = properties;
        self
    }
}

/// Which way a packet went, for a [`PacketObserver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

/// Called with every packet sent and received (after topic aliases are applied on the
/// way out, before they are resolved on the way in). For debug output such as the
/// command-line tools' `-d`; it runs on the connection's task, so keep it quick.
pub type PacketObserver = Arc<dyn Fn(Direction, &midge_proto::Packet) + Send + Sync>;

/// Makes the [`Authenticator`] of each client connected with these options (options are
/// `Clone`; an authenticator holds the state of one exchange).
pub(crate) type AuthenticatorFactory = Arc<dyn Fn() -> Box<dyn Authenticator> + Send + Sync>;

/// Automatic reconnection: exponential back-off between `min_delay` and `max_delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnect {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Give up after this many failed attempts in a row; `None` tries for ever.
    pub max_attempts: Option<u32>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            max_attempts: None,
        }
    }
}

/// How to connect, and what to put in CONNECT.
///
/// ```
/// use midge_client::{ConnectOptions, QoS, Will};
/// use std::time::Duration;
///
/// let options = ConnectOptions::new("localhost", 1883)
///     .client_id("sensor-17")
///     .keep_alive(Duration::from_secs(30))
///     .session_expiry(3600)
///     .credentials("alice", "secret")
///     .will(Will::new("sensors/17/status", "offline").qos(QoS::AtLeastOnce).retain(true));
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct ConnectOptions {
    pub(crate) connector: Arc<dyn Connector>,
    pub(crate) protocol: ProtocolVersion,
    pub(crate) client_id: ByteStr,
    pub(crate) clean_start: bool,
    pub(crate) keep_alive: u16,
    pub(crate) will: Option<Will>,
    pub(crate) username: Option<ByteStr>,
    pub(crate) password: Option<Bytes>,
    pub(crate) properties: Properties,
    pub(crate) connect_timeout: Duration,
    pub(crate) reconnect: Option<Reconnect>,
    pub(crate) offline_buffer: usize,
    pub(crate) incoming_buffer: usize,
    pub(crate) outgoing_topic_aliases: bool,
    pub(crate) observer: Option<PacketObserver>,
    /// The method name alongside its factory, for `Debug`.
    pub(crate) authenticator: Option<(String, AuthenticatorFactory)>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("server", &self.connector.describe())
            .field("protocol", &self.protocol)
            .field("client_id", &self.client_id)
            .field("clean_start", &self.clean_start)
            .field("keep_alive", &self.keep_alive)
            .field("will", &self.will)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("properties", &self.properties)
            .field("reconnect", &self.reconnect)
            .field(
                "authenticator",
                &self.authenticator.as_ref().map(|(method, _)| method),
            )
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    /// MQTT 5.0 over TCP to `host:port`, clean start, keep-alive 60 s, empty client ID (the
    /// server assigns one), no reconnect.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self::with_connector(TcpConnector::new(host, port))
    }

    /// Like [`new`](Self::new), over TLS (see [`TlsOptions`](crate::TlsOptions)).
    pub fn new_tls(
        host: impl Into<String>,
        port: u16,
        tls: &crate::TlsOptions,
    ) -> Result<Self, crate::tls::TlsError> {
        let connector =
            crate::TlsConnector::new(TcpConnector::new(host, port), tls.client_config()?)?;
        Ok(Self::with_connector(connector))
    }

    /// Like [`new`](Self::new), over any transport.
    pub fn with_connector(connector: impl Connector) -> Self {
        ConnectOptions {
            connector: Arc::new(connector),
            protocol: ProtocolVersion::V5,
            client_id: ByteStr::new(),
            clean_start: true,
            keep_alive: 60,
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
            connect_timeout: Duration::from_secs(10),
            reconnect: None,
            offline_buffer: 1000,
            incoming_buffer: 1024,
            outgoing_topic_aliases: true,
            observer: None,
            authenticator: None,
        }
    }

    /// MQTT 3.1, 3.1.1 or 5.0 (the default).
    pub fn protocol(mut self, protocol: ProtocolVersion) -> Self {
        self.protocol = protocol;
        self
    }

    pub fn client_id(mut self, id: impl Into<ByteStr>) -> Self {
        self.client_id = id.into();
        self
    }

    /// Clean Start (5.0) / Clean Session (3.1.1). Default true.
    pub fn clean_start(mut self, clean: bool) -> Self {
        self.clean_start = clean;
        self
    }

    /// Keep-alive interval, whole seconds (at most 65535); zero disables PINGREQ.
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = u16::try_from(interval.as_secs()).unwrap_or(u16::MAX);
        self
    }

    /// Session Expiry Interval in seconds (5.0); `u32::MAX` never expires.
    pub fn session_expiry(mut self, seconds: u32) -> Self {
        self.properties.session_expiry_interval = Some(seconds);
        self
    }

    pub fn will(mut self, will: Will) -> Self {
        self.will = Some(will);
        self
    }

    pub fn username(mut self, username: impl Into<ByteStr>) -> Self {
        self.username = Some(username.into());
        self
    }

    pub fn password(mut self, password: impl Into<Bytes>) -> Self {
        self.password = Some(password.into());
        self
    }

    pub fn credentials(self, username: impl Into<ByteStr>, password: impl Into<Bytes>) -> Self {
        self.username(username).password(password)
    }

    /// Receive Maximum (5.0): QoS 1/2 messages the server may have in flight towards us.
    pub fn receive_maximum(mut self, max: u16) -> Self {
        self.properties.receive_maximum = Some(max.max(1));
        self
    }

    /// Maximum Packet Size (5.0) we accept; larger incoming packets close the connection.
    pub fn maximum_packet_size(mut self, max: u32) -> Self {
        self.properties.maximum_packet_size = Some(max.max(1));
        self
    }

    /// Topic Alias Maximum (5.0): aliases the server may use towards us.
    pub fn topic_alias_maximum(mut self, max: u16) -> Self {
        self.properties.topic_alias_maximum = Some(max);
        self
    }

    pub fn request_response_information(mut self, request: bool) -> Self {
        self.properties.request_response_information = Some(u8::from(request));
        self
    }

    pub fn request_problem_information(mut self, request: bool) -> Self {
        self.properties.request_problem_information = Some(u8::from(request));
        self
    }

    pub fn user_property(mut self, name: impl Into<ByteStr>, value: impl Into<ByteStr>) -> Self {
        self.properties
            .user_properties
            .push((name.into(), value.into()));
        self
    }

    /// Authentication Method and Data (5.0) for a single-step method: a server that
    /// answers with AUTH (Continue authentication) fails the connection. For a
    /// challenge/response method use [`authenticator`](Self::authenticator).
    pub fn authentication(mut self, method: impl Into<ByteStr>, data: Option<Bytes>) -> Self {
        self.properties.authentication_method = Some(method.into());
        self.properties.authentication_data = data;
        self
    }

    /// Enhanced authentication (5.0) with a challenge/response method such as
    /// [`ScramSha256`](crate::ScramSha256): CONNECT carries its Authentication Method and
    /// first data, the client answers the server's AUTH packets with it, and checks the
    /// data of the CONNACK before trusting the connection. Every automatic reconnection
    /// runs a new exchange; [`Client::reauthenticate`](crate::Client::reauthenticate)
    /// runs one on the open connection.
    ///
    /// Takes precedence over [`authentication`](Self::authentication). Each
    /// [`Client::connect`](crate::Client::connect) with these options works on its own
    /// clone of `authenticator`. Connecting fails with
    /// [`Error::InvalidRequest`](crate::Error::InvalidRequest) before MQTT 5.0.
    pub fn authenticator<A>(mut self, authenticator: A) -> Self
    where
        A: Authenticator + Clone + Sync + 'static,
    {
        let method = authenticator.method().to_owned();
        let factory: AuthenticatorFactory =
            Arc::new(move || Box::new(authenticator.clone()) as Box<dyn Authenticator>);
        self.authenticator = Some((method, factory));
        self
    }

    /// Sets every CONNECT property at once (replaces those set before).
    pub fn properties(mut self, properties: Properties) -> Self {
        self.properties = properties;
        self
    }

    /// How long to wait for the connection and CONNACK. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Reconnect automatically after the connection is lost, resuming the session and
    /// resending what was not acknowledged. Off by default.
    pub fn reconnect(mut self, reconnect: Reconnect) -> Self {
        self.reconnect = Some(reconnect);
        self
    }

    /// Requests (publish, subscribe, unsubscribe) held while reconnecting; more fail with
    /// [`Error::OfflineBufferFull`](crate::Error::OfflineBufferFull). Default 1000.
    pub fn offline_buffer(mut self, capacity: usize) -> Self {
        self.offline_buffer = capacity;
        self
    }

    /// Incoming messages buffered before the client stops reading from the socket (and
    /// so stops acknowledging). Default 1024.
    pub fn incoming_buffer(mut self, capacity: usize) -> Self {
        self.incoming_buffer = capacity.max(1);
        self
    }

    /// Use topic aliases towards a 5.0 server that allows them. Default true.
    pub fn outgoing_topic_aliases(mut self, enabled: bool) -> Self {
        self.outgoing_topic_aliases = enabled;
        self
    }

    /// Calls `observer` with every packet sent and received.
    pub fn observe_packets(
        mut self,
        observer: impl Fn(Direction, &midge_proto::Packet) + Send + Sync + 'static,
    ) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// The protocol version this client will speak.
    pub fn protocol_version(&self) -> ProtocolVersion {
        self.protocol
    }
}
