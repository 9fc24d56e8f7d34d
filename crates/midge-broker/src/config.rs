//! The broker's settings, after parsing: what every part of the broker reads.
//!
//! Parsing (Midge's TOML and Mosquitto's `mosquitto.conf`) lives in the `midge` binary
//! (`crates/midge/src/config/`); this struct is the one shape both formats produce. Defaults
//! follow Mosquitto 2; `docs/configuration.md` lists every key that sets each field.

use std::net::SocketAddr;
use std::time::Duration;

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Address and port to bind. Port 0 picks a free port (tests).
    ///
    /// A listener configured without an address ("all interfaces", as Mosquitto's
    /// `listener 1883`) arrives as two entries, `0.0.0.0:port` and `[::]:port`: bind the IPv6
    /// wildcard IPv6-only (`IPV6_V6ONLY`), as Mosquitto does, or the second bind fails with
    /// "address in use" on Linux. A host name arrives as one entry per resolved address.
    pub bind: SocketAddr,
    /// Maximum simultaneous connections on this listener; `None` for no limit.
    pub max_connections: Option<usize>,
    /// Whether clients without a username may connect on this listener. Mosquitto 2's
    /// rule: false unless the file allows it, except in local only mode (no listener
    /// configured), where it is true.
    pub allow_anonymous: bool,
    /// TLS on this listener (Mosquitto's `certfile`, `keyfile`, `cafile`, ...); `None` for
    /// plain TCP.
    pub tls: Option<TlsSettings>,
    /// This listener's own password and ACL files (Mosquitto's `per_listener_settings
    /// true`); `None` for the broker-wide `password_file` and `acl_file`.
    pub security: Option<ListenerSecurity>,
}

/// Security files of one listener, used instead of the broker-wide ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListenerSecurity {
    /// Password file for clients of this listener; `None`: no password file.
    pub password_file: Option<std::path::PathBuf>,
    /// ACL file for clients of this listener; `None`: no ACL (everything allowed).
    pub acl_file: Option<std::path::PathBuf>,
}

impl ListenerConfig {
    /// A plain TCP listener with no connection limit.
    pub fn tcp(bind: SocketAddr, allow_anonymous: bool) -> Self {
        ListenerConfig {
            bind,
            max_connections: None,
            allow_anonymous,
            tls: None,
            security: None,
        }
    }
}

/// Lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// A TLS listener's files and client-certificate policy, as Mosquitto names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain of the server (`certfile`).
    pub certfile: std::path::PathBuf,
    /// PEM private key of the server (`keyfile`).
    pub keyfile: std::path::PathBuf,
    /// PEM file of CA certificates that client certificates are checked against (`cafile`).
    pub cafile: Option<std::path::PathBuf>,
    /// Directory of PEM CA certificates (`capath`): `*.pem`, `*.crt` and OpenSSL hash-named
    /// files (`<hash>.0`, as `openssl rehash` makes them), each file read once.
    pub capath: Option<std::path::PathBuf>,
    /// Clients must present a certificate signed by the CA (`require_certificate`);
    /// otherwise one is optional, and checked when given.
    pub require_certificate: bool,
    /// The client certificate's Common Name becomes the username, and the password file
    /// is not consulted (`use_identity_as_username`).
    pub use_identity_as_username: bool,
    /// Lowest TLS version accepted (`tls_version tlsv1.2` or `tlsv1.3`).
    pub min_version: TlsVersion,
    /// TLS 1.2 cipher suites, an OpenSSL-style list (`ciphers`), e.g.
    /// `ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384`; `None`: all that rustls
    /// offers. See `tls::cipher_suites` for the names understood.
    pub ciphers: Option<String>,
    /// TLS 1.3 cipher suites (`ciphers_tls1.3`), e.g. `TLS_AES_256_GCM_SHA384`; `None`: all.
    pub ciphers_tls13: Option<String>,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Sockets to listen on. The default (and what a file without any listener gives) is
    /// Mosquitto 2's "local only mode": 127.0.0.1:1883 and [::1]:1883, anonymous allowed.
    /// On a host without IPv6, failing to bind `::1` here should not stop the broker
    /// (Mosquitto starts if at least one of the two binds).
    pub listeners: Vec<ListenerConfig>,
    /// Largest keep-alive a client may ask for, in seconds; larger requests are answered
    /// with Server Keep Alive (5.0) or refused (3.1.1, as Mosquitto does). 0 = no limit.
    pub max_keepalive: u16,
    /// In-flight QoS 1/2 messages per client towards the client (0 = no limit, capped at
    /// 65535). Also the Receive Maximum the broker advertises to 5.0 clients.
    pub max_inflight_messages: u16,
    /// Messages queued per client beyond the in-flight window, online or offline, QoS 0
    /// included for a connected client (0 = no limit). Past it, messages for that client
    /// alone are dropped and counted.
    pub max_queued_messages: usize,
    /// Payload bytes queued per client (0 = no limit); as `max_queued_messages`.
    pub max_queued_bytes: usize,
    /// A connected subscriber whose queue stays at its limit, or whose socket accepts
    /// nothing while the broker has bytes for it, this long without a break is
    /// disconnected (5.0: DISCONNECT 0x97 Quota exceeded). Zero: never.
    pub slow_consumer_timeout: Duration,
    /// Opt-in publisher back-pressure: a publisher whose message went to a subscriber
    /// past its queue limit is held (its acknowledgement, or for QoS 0 its reads) until
    /// the subscriber has room. Off by default: no publisher ever waits on another client.
    pub publisher_backpressure: bool,
    /// With `publisher_backpressure`, the most wall-clock time per second a congested
    /// subscriber may hold publishers (holds at the same time count once); past it, it
    /// holds nobody until it drains.
    pub publisher_backpressure_max: Duration,
    /// SIGTERM/SIGINT end the process within this time, whatever clients or the store do.
    pub shutdown_timeout: Duration,
    /// Whether QoS 0 messages are queued for offline persistent sessions.
    pub queue_qos0_messages: bool,
    /// Largest PUBLISH payload accepted, in bytes (0 = no limit beyond the protocol's).
    pub message_size_limit: usize,
    /// Largest packet accepted from clients, in bytes (advertised as Maximum Packet Size in
    /// 5.0). 0 = the protocol maximum (268,435,455 bytes + header).
    pub max_packet_size: u32,
    /// How often `$SYS` statistics are published; zero disables them.
    pub sys_interval: Duration,
    /// Persistent sessions of clients that stay away longer than this are removed (the
    /// upper bound of a 3.1.1 session's life; 5.0 sessions use their own expiry if
    /// shorter). `None` = never.
    pub persistent_client_expiration: Option<Duration>,
    /// Whether retained messages are supported (advertised as Retain Available in 5.0;
    /// Mosquitto disconnects a client that publishes with retain when this is false).
    pub retain_available: bool,
    /// Largest QoS the broker grants (advertised as Maximum QoS in 5.0).
    pub max_qos: u8,
    /// Topic Alias Maximum advertised to 5.0 clients (aliases clients may use towards us).
    pub max_topic_alias: u16,
    /// Whether the broker assigns topic aliases on messages it sends to 5.0 clients that
    /// accept them.
    pub outgoing_topic_aliases: bool,
    /// A connection that has not sent CONNECT within this time is closed.
    pub connect_timeout: Duration,
    /// Whether an empty client ID from a 3.1.1 client with clean session is given an
    /// assigned ID (as 5.0 is). Mosquitto's `allow_zero_length_clientid`.
    pub allow_zero_length_clientid: bool,
    /// Prefix of assigned client IDs. Mosquitto's `auto_id_prefix`.
    pub auto_id_prefix: String,
    /// Largest total connections over all listeners; `None` = no limit.
    pub max_connections: Option<usize>,
    /// Mosquitto-format password file (`$7$`, `$6$` and argon2id entries). When set,
    /// clients that give a username must give its password. Reloaded on SIGHUP.
    pub password_file: Option<std::path::PathBuf>,
    /// Mosquitto-format ACL file. When set, every publish, subscribe and delivery is
    /// checked against it. Reloaded on SIGHUP.
    pub acl_file: Option<std::path::PathBuf>,
    /// SCRAM-SHA-256 credentials for MQTT 5 enhanced authentication (one
    /// `user:SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` line per user); without
    /// it, a CONNECT naming an Authentication Method gets CONNACK 0x8C.
    pub scram_file: Option<std::path::PathBuf>,
    /// Largest number of subscriptions one client may hold (0 = no limit). Past it,
    /// SUBSCRIBE gets 0x97 Quota exceeded (5.0) / 0x80 (3.1.1).
    pub max_subscriptions_per_client: usize,
    /// Longest topic name or filter accepted, in bytes (the protocol allows 65535).
    pub max_topic_length: usize,
    /// Most levels a topic name or filter may have (0 = no limit).
    pub max_topic_levels: usize,
    /// Longest client identifier accepted, in bytes.
    pub max_client_id_length: usize,
    /// New connections accepted per second from one IP address (0 = no limit); more are
    /// closed at once.
    pub max_connection_rate_per_ip: u32,
    /// PUBLISH packets per second accepted from one client (0 = no limit); a faster client
    /// is slowed down (its socket is not read until it is back under the rate).
    pub max_inbound_message_rate: u32,
    /// After this many failed logins from one IP address within a minute, each further
    /// refusal from that address is delayed (doubling up to 5 s). 0 = never delay.
    pub auth_failures_before_delay: u32,
    /// A plain TCP connection with nothing to do for this long is parked: its task ends and
    /// its socket waits in a broker-wide poll set until the client sends something or a
    /// message, request or keep-alive expiry is due for it (docs/design/idle-memory.md).
    /// Saves most of an idle connection's memory; zero never parks.
    pub park_idle_after: Duration,
    /// Durable state (sessions, queues, in-flight and retained messages, wills) in an
    /// embedded store; `None` keeps everything in memory. The library default is `None`;
    /// the `midge` binary turns it on (`./midge-data`) unless configured otherwise.
    pub persistence: Option<Persistence>,
}

/// Where and how durably state is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistence {
    pub data_dir: std::path::PathBuf,
    pub durability: midge_store::Durability,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: vec![
                ListenerConfig {
                    bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
                    max_connections: None,
                    allow_anonymous: true,
                    tls: None,
                    security: None,
                },
                ListenerConfig {
                    bind: SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 1883)),
                    max_connections: None,
                    allow_anonymous: true,
                    tls: None,
                    security: None,
                },
            ],
            max_keepalive: 65535,
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            slow_consumer_timeout: Duration::from_secs(60),
            publisher_backpressure: false,
            publisher_backpressure_max: Duration::from_millis(100),
            shutdown_timeout: Duration::from_secs(5),
            queue_qos0_messages: false,
            message_size_limit: 0,
            max_packet_size: 0,
            sys_interval: Duration::from_secs(10),
            persistent_client_expiration: None,
            retain_available: true,
            max_qos: 2,
            max_topic_alias: 10,
            outgoing_topic_aliases: true,
            connect_timeout: Duration::from_secs(10),
            allow_zero_length_clientid: true,
            auto_id_prefix: "auto-".to_string(),
            max_connections: None,
            password_file: None,
            acl_file: None,
            scram_file: None,
            max_subscriptions_per_client: 0,
            max_topic_length: 65535,
            max_topic_levels: 0,
            max_client_id_length: 65535,
            max_connection_rate_per_ip: 0,
            max_inbound_message_rate: 0,
            auth_failures_before_delay: 5,
            park_idle_after: Duration::from_secs(2),
            persistence: None,
        }
    }
}
