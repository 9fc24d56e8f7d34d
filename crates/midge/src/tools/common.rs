//! What the three tools share once the flags are parsed: building the connection options,
//! connecting, Mosquitto-style error messages and exit codes, and `-d` debug lines.

use super::args::{Config, Stop, Tool};
use midge_client::tls::{TlsError, TlsVersion};
use midge_client::{
    Client, ConnectOptions, Direction, Disconnect, Error, Messages, Packet, TcpConnector,
    TlsConnector, TlsOptions, Will,
};
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Mosquitto's `MOSQ_ERR_TIMEOUT`: the exit code after `-W`.
pub const EXIT_TIMEOUT: u8 = 27;

/// The end of `midge pub`'s and `midge sub`'s help: the Will and TLS flags, which the two
/// describe alike (as mosquitto_pub and mosquitto_sub do). A macro giving a literal, so that
/// each tool's `USAGE` stays one constant built with `concat!`.
macro_rules! will_and_tls_help {
    () => {
        " --will-payload : payload for the client Will, which is sent by the broker in case of
                  unexpected disconnection. If not given and will-topic is set, a zero
                  length message will be sent.
 --will-qos : QoS level for the client Will.
 --will-retain : if given, make the client Will retained.
 --will-topic : the topic on which to publish the client Will.
 --cafile : path to a file containing trusted CA certificates to enable encrypted
            communication.
 --capath : path to a directory containing trusted CA certificates to enable encrypted
            communication.
 --cert : client certificate for authentication, if required by server.
 --key : client private key for authentication, if required by server.
 --tls-version : TLS protocol version, can be one of tlsv1.3 or tlsv1.2.
                 Defaults to either (the newest the broker speaks).
 --tls-use-os-certs : Load and trust OS provided CA certificates.
 --tls-alpn : TLS application layer protocol to offer.
 --insecure : do not check that the server certificate hostname matches the remote
              hostname. Using this option means that you cannot be sure that the
              remote host is the server you wish to connect to and so is insecure.
              Do not use this option in a production environment.

See docs/tools.md for more information.
"
    };
}
pub(crate) use will_and_tls_help;

/// Runs a tool: parses `args` (printing help or a usage error as Mosquitto's tools do),
/// then `run` on a fresh runtime.
pub fn main<F: std::future::Future<Output = ExitCode>>(
    tool: Tool,
    usage: &str,
    args: &[String],
    run: impl FnOnce(Config) -> F,
) -> ExitCode {
    let cfg = match super::args::parse(tool, args) {
        Ok(cfg) => cfg,
        Err(stop) => return report_stop(tool, stop, usage),
    };
    let Some(runtime) = runtime() else {
        return ExitCode::from(1);
    };
    runtime.block_on(run(cfg))
}

/// Disconnects normally, with the `-D disconnect` properties.
pub async fn disconnect(cfg: &Config, client: &Client) {
    let disconnect = Disconnect {
        properties: cfg.props.disconnect.clone(),
        ..Disconnect::default()
    };
    let _ = client.disconnect_with(disconnect).await;
}

/// After `-W` ran out: disconnects, says "Timed out" (unless `--quiet`) and gives
/// [`EXIT_TIMEOUT`].
pub async fn timed_out(cfg: &Config, client: &Client) -> ExitCode {
    disconnect(cfg, client).await;
    if !cfg.quiet {
        eprintln!("Timed out");
    }
    ExitCode::from(EXIT_TIMEOUT)
}

/// Writes to standard output, ignoring a closed pipe (`midge pub --help | head`), where
/// `print!` would panic.
fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// Prints what parsing stopped on, as Mosquitto's tools do, and gives the exit code.
pub fn report_stop(tool: Tool, stop: Stop, usage: &str) -> ExitCode {
    match stop {
        Stop::Help => {
            out(usage);
        }
        Stop::Version => {
            out(&format!(
                "midge {} version {}\n",
                tool.name(),
                env!("CARGO_PKG_VERSION")
            ));
            return ExitCode::SUCCESS;
        }
        Stop::Error { message, hint } => {
            eprint!("{message}");
            if hint {
                eprintln!("\nUse 'midge {} --help' to see usage.", tool.name());
            }
        }
        Stop::UsageError(message) => {
            out(usage);
            eprint!("{message}");
        }
    }
    // Mosquitto's tools exit with 1 after --help too.
    ExitCode::from(1)
}

/// The client identifier to connect with: `-i`, `-I` + process id, or empty (the broker
/// assigns one, as Mosquitto 2's tools let it). MQTT 3.1 has no assigned identifiers
/// (1 to 23 characters), so there the tool makes one up, as libmosquitto does.
pub fn client_id(cfg: &Config) -> String {
    match (&cfg.id, &cfg.id_prefix) {
        (Some(id), _) => id.clone(),
        (None, Some(prefix)) => format!("{prefix}{}", std::process::id()),
        (None, None) if cfg.protocol == midge_client::ProtocolVersion::V31 => {
            format!("midge_{}_{}", cfg.tool.name(), std::process::id())
        }
        (None, None) => String::new(),
    }
}

/// Connection options from the flags.
pub fn connect_options(cfg: &Config, debug: Option<Debug>) -> Result<ConnectOptions, String> {
    let mut connector = TcpConnector::new(cfg.host.clone(), cfg.port());
    connector.nodelay = cfg.nodelay;
    if let Some(addr) = &cfg.bind_address {
        let ip: std::net::IpAddr = addr
            .parse()
            .map_err(|_| format!("Error: Invalid bind address '{addr}'.\n"))?;
        connector.bind_address = Some(std::net::SocketAddr::new(ip, 0));
    }
    let mut options = if cfg.tls.enabled() {
        ConnectOptions::with_connector(tls_connector(cfg, connector)?)
    } else {
        ConnectOptions::with_connector(connector)
    };
    options = options
        .protocol(cfg.protocol)
        .client_id(client_id(cfg))
        .clean_start(cfg.clean_session)
        .keep_alive(Duration::from_secs(u64::from(cfg.keepalive)))
        .outgoing_topic_aliases(false);
    if cfg.protocol.is_v5() {
        let mut props = cfg.props.connect.clone();
        if let Some(expiry) = cfg.session_expiry.filter(|e| *e > 0) {
            props.session_expiry_interval = Some(expiry);
        }
        // Like Mosquitto: with -C below 20, ask for no more in flight than will be read.
        if cfg.msg_count > 0 && cfg.msg_count < 20 && props.receive_maximum.is_none() {
            props.receive_maximum = u16::try_from(cfg.msg_count).ok();
        }
        options = options.properties(props);
    }
    if let Some(topic) = &cfg.will_topic {
        let payload = cfg.will_payload.clone().unwrap_or_default();
        let will = Will::new(topic.as_str(), payload)
            .qos(cfg.will_qos)
            .retain(cfg.will_retain)
            .properties(cfg.props.will.clone());
        options = options.will(will);
    }
    if let Some(user) = &cfg.username {
        options = options.username(user.as_str());
    }
    if let Some(password) = &cfg.password {
        options = options.password(password.clone());
    }
    if cfg.tool == Tool::Sub {
        options = options.reconnect(reconnect_policy());
    }
    if let Some(debug) = debug {
        options = options.observe_packets(move |direction, packet| debug.packet(direction, packet));
    }
    Ok(options)
}

/// TLS from the `--cafile`... flags, with Mosquitto's messages for bad options.
fn tls_connector(cfg: &Config, tcp: TcpConnector) -> Result<TlsConnector, String> {
    let flags = &cfg.tls;
    let version = match flags.version.as_deref() {
        None => TlsVersion::Any,
        Some("tlsv1.2") => TlsVersion::Tls12,
        Some("tlsv1.3") => TlsVersion::Tls13,
        Some(_) => {
            return Err("Error: Problem setting TLS options, check the options are valid.\n".into())
        }
    };
    let options = TlsOptions {
        ca_file: flags.cafile.as_ref().map(Into::into),
        ca_path: flags.capath.as_ref().map(Into::into),
        use_os_certs: flags.use_os_certs,
        cert_file: flags.certfile.as_ref().map(Into::into),
        key_file: flags.keyfile.as_ref().map(Into::into),
        insecure: flags.insecure,
        version,
        alpn: flags.alpn.iter().map(|a| a.as_bytes().to_vec()).collect(),
    };
    let config = options.client_config().map_err(|e| match e {
        TlsError::File { .. } => {
            "Error: Problem setting TLS options: File not found.\n".to_string()
        }
        other => format!("Error: Problem setting TLS options: {other}.\n"),
    })?;
    TlsConnector::new(tcp, config).map_err(|e| format!("Error: {e}.\n"))
}

/// Connects, or prints Mosquitto's message for the failure and gives its exit code.
pub async fn connect(cfg: &Config) -> Result<(Client, Messages, Option<Debug>), ExitCode> {
    let debug = cfg.debug.then(|| Debug::new(client_id(cfg)));
    let options = match connect_options(cfg, debug.clone()) {
        Ok(options) => options,
        Err(message) => {
            eprint!("{message}");
            return Err(ExitCode::from(1));
        }
    };
    match Client::connect(options).await {
        Ok((client, messages)) => {
            if let Some(debug) = &debug {
                debug.set_id(client.connection_info().client_id.to_string());
            }
            Ok((client, messages, debug))
        }
        Err(e) => Err(report_connect_error(cfg, &e)),
    }
}

/// Mosquitto's words for a failed connection: "Connection error: Connection Refused: not
/// authorised." (3.x) or "Connection error: Not authorized" (5.0), exit code the return
/// or reason code; "Error: Connection refused" for a closed port, exit code 1.
pub fn report_connect_error(cfg: &Config, error: &Error) -> ExitCode {
    let quiet = cfg.quiet;
    let say = |line: String| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    match error {
        Error::ConnectionRefused { reason_code, .. } => {
            let code = if cfg.protocol.is_v5() {
                let rc = *reason_code;
                if rc == midge_client::ReasonCode::UNSUPPORTED_PROTOCOL_VERSION {
                    say(format!(
                        "Connection error: {}. Try connecting to an MQTT v5 broker, or use MQTT v3.x mode.",
                        rc.name()
                    ));
                } else {
                    say(format!("Connection error: {}", rc.name()));
                }
                rc.0
            } else {
                let rc = reason_code.to_v3_connack();
                say(format!("Connection error: {}", connack_string(rc)));
                rc
            };
            if cfg.tool == Tool::Pub {
                say(if cfg.protocol.is_v5() {
                    "Error: A network protocol error occurred when communicating with the broker."
                        .into()
                } else {
                    "Error: The connection was refused.".into()
                });
            }
            ExitCode::from(code)
        }
        Error::Io(e) if e.kind() == std::io::ErrorKind::NotFound || is_lookup_error(e) => {
            say("Unable to connect (Lookup error.).".into());
            ExitCode::from(1)
        }
        Error::Io(e) => {
            say(format!("Error: {}", strerror(e)));
            ExitCode::from(1)
        }
        Error::Timeout => {
            say("Error: Connection timed out".into());
            ExitCode::from(1)
        }
        other => {
            say(format!("Error: {other}"));
            ExitCode::from(1)
        }
    }
}

fn is_lookup_error(e: &std::io::Error) -> bool {
    // tokio's lookup_host reports resolver failures with getaddrinfo's text and no
    // specific kind.
    let text = e.to_string();
    text.contains("lookup address") || text.contains("resolved to no address")
}

/// `strerror` wording for the common socket errors.
fn strerror(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "Connection refused".into(),
        ConnectionReset => "Connection reset by peer".into(),
        TimedOut => "Connection timed out".into(),
        AddrNotAvailable => "Cannot assign requested address".into(),
        PermissionDenied => "Permission denied".into(),
        _ => {
            // "Network is unreachable (os error 101)" -> "Network is unreachable".
            let s = e.to_string();
            match s.find(" (os error") {
                Some(end) => s[..end].to_string(),
                None => s,
            }
        }
    }
}

/// libmosquitto's `mosquitto_connack_string`.
pub fn connack_string(code: u8) -> &'static str {
    match code {
        0 => "Connection Accepted.",
        1 => "Connection Refused: unacceptable protocol version.",
        2 => "Connection Refused: identifier rejected.",
        3 => "Connection Refused: broker unavailable.",
        4 => "Connection Refused: bad user name or password.",
        5 => "Connection Refused: not authorised.",
        _ => "Connection Refused: unknown reason.",
    }
}

/// Reports the end of a connection after CONNACK, in Mosquitto's words.
pub fn report_lost(cfg: &Config, error: Option<&Error>) -> ExitCode {
    if cfg.quiet {
        return ExitCode::from(1);
    }
    match error {
        Some(Error::ServerDisconnected { reason_code, .. }) => {
            eprintln!("Error: {}", reason_code.name());
        }
        Some(Error::Protocol(_)) => {
            eprintln!(
                "Error: A network protocol error occurred when communicating with the broker."
            )
        }
        _ => eprintln!("Error: The connection was lost."),
    }
    ExitCode::from(1)
}

/// `-d`: prints each packet as libmosquitto's log does ("Client x sending PUBLISH (d0,
/// q1, r0, m1, 'topic', ... (5 bytes))"), to stdout.
#[derive(Clone)]
pub struct Debug {
    id: Arc<Mutex<String>>,
}

impl Debug {
    fn new(id: String) -> Debug {
        let id = if id.is_empty() {
            "(null)".to_string()
        } else {
            id
        };
        Debug {
            id: Arc::new(Mutex::new(id)),
        }
    }

    fn set_id(&self, id: String) {
        if id.is_empty() {
            return;
        }
        if let Ok(mut slot) = self.id.lock() {
            *slot = id;
        }
    }

    fn packet(&self, direction: Direction, packet: &Packet) {
        if let (Direction::Received, Packet::ConnAck(c)) = (direction, packet) {
            if let Some(assigned) = &c.properties.assigned_client_identifier {
                self.set_id(assigned.to_string());
            }
        }
        let id = self.id.lock().map(|s| s.clone()).unwrap_or_default();
        let lines = describe(direction, packet);
        let mut stdout = std::io::stdout().lock();
        for line in lines {
            let _ = writeln!(stdout, "Client {id} {line}");
        }
        let _ = stdout.flush();
    }

    /// A line of its own (such as "Subscribed (mid: 1): 0").
    pub fn line(&self, text: &str) {
        out(&format!("{text}\n"));
    }
}

fn describe(direction: Direction, packet: &Packet) -> Vec<String> {
    let verb = match direction {
        Direction::Sent => "sending",
        Direction::Received => "received",
    };
    let line = match (direction, packet) {
        (_, Packet::Connect(_)) => format!("{verb} CONNECT"),
        (_, Packet::ConnAck(c)) => {
            format!("{verb} CONNACK ({})", c.reason_code.0)
        }
        (_, Packet::Publish(p)) => format!(
            "{verb} PUBLISH (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
            u8::from(p.dup),
            p.qos.as_u8(),
            u8::from(p.retain),
            p.packet_id,
            p.topic,
            p.payload.len()
        ),
        (Direction::Received, Packet::PubAck(r)) => {
            format!(
                "received PUBACK (Mid: {}, RC:{})",
                r.packet_id, r.reason_code.0
            )
        }
        (Direction::Received, Packet::PubRec(r)) => {
            format!("received PUBREC (Mid: {})", r.packet_id)
        }
        (Direction::Received, Packet::PubRel(r)) => {
            format!("received PUBREL (Mid: {})", r.packet_id)
        }
        (Direction::Received, Packet::PubComp(r)) => {
            format!(
                "received PUBCOMP (Mid: {}, RC:{})",
                r.packet_id, r.reason_code.0
            )
        }
        (Direction::Sent, Packet::PubAck(r)) => {
            format!("sending PUBACK (m{}, rc{})", r.packet_id, r.reason_code.0)
        }
        (Direction::Sent, Packet::PubRec(r)) => {
            format!("sending PUBREC (m{}, rc{})", r.packet_id, r.reason_code.0)
        }
        (Direction::Sent, Packet::PubRel(r)) => format!("sending PUBREL (m{})", r.packet_id),
        (Direction::Sent, Packet::PubComp(r)) => format!("sending PUBCOMP (m{})", r.packet_id),
        (_, Packet::Subscribe(s)) => {
            return s
                .filters
                .iter()
                .map(|(filter, o)| {
                    let options = (u8::from(o.no_local) << 2)
                        | (u8::from(o.retain_as_published) << 3)
                        | ((o.retain_handling as u8) << 4);
                    format!(
                        "{verb} SUBSCRIBE (Mid: {}, Topic: {filter}, QoS: {}, Options: 0x{options:02x})",
                        s.packet_id,
                        o.qos.as_u8()
                    )
                })
                .collect();
        }
        (_, Packet::SubAck(_)) => format!("{verb} SUBACK"),
        (_, Packet::Unsubscribe(u)) => {
            return u
                .filters
                .iter()
                .map(|f| format!("{verb} UNSUBSCRIBE (Mid: {}, Topic: {f})", u.packet_id))
                .collect();
        }
        (_, Packet::UnsubAck(_)) => format!("{verb} UNSUBACK"),
        (_, Packet::PingReq) => format!("{verb} PINGREQ"),
        (_, Packet::PingResp) => format!("{verb} PINGRESP"),
        (Direction::Sent, Packet::Disconnect(_)) => "sending DISCONNECT".into(),
        (Direction::Received, Packet::Disconnect(d)) => {
            format!("received DISCONNECT ({})", d.reason_code.0)
        }
        (_, Packet::Auth(_)) => format!("{verb} AUTH"),
    };
    vec![line]
}

/// Builds the tool's runtime (one thread is plenty for one connection).
pub fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            None
        }
    }
}

/// Reconnect policy for `midge sub` (Mosquitto's tools reconnect too, every second or so).
pub fn reconnect_policy() -> midge_client::Reconnect {
    midge_client::Reconnect {
        min_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(30),
        max_attempts: None,
    }
}
