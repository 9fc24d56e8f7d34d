//! Command-line parsing shared by `midge pub`, `midge sub` and `midge rr`, by hand rather
//! than with clap: the flags, their order-dependence (`-D` switches to MQTT 5, a later
//! `-V` switches back) and the error messages follow Mosquitto's tools exactly.

use super::props::{atoi, parse_property, PropertySets};
use midge_client::{ProtocolVersion, QoS};
use std::time::Duration;

/// Which tool is parsing (each accepts a different subset of the flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Pub,
    Sub,
    Rr,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Pub => "pub",
            Tool::Sub => "sub",
            Tool::Rr => "rr",
        }
    }
}

/// Where `midge pub` (and `midge rr`) takes its payload from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageMode {
    None,
    /// `-m`
    Cmd(String),
    /// `-f`
    File(String),
    /// `-l`
    StdinLine,
    /// `-s`
    StdinFile,
    /// `-n`
    Null,
}

/// Everything the flags set. Defaults are Mosquitto's.
#[derive(Debug, Clone)]
pub struct Config {
    pub tool: Tool,
    pub host: String,
    pub port: Option<u16>,
    pub bind_address: Option<String>,
    pub id: Option<String>,
    pub id_prefix: Option<String>,
    pub keepalive: u16,
    pub clean_session: bool,
    pub debug: bool,
    pub quiet: bool,
    pub protocol: ProtocolVersion,
    pub qos: QoS,
    pub retain: bool,
    /// `-t` for pub and rr (one topic).
    pub topic: Option<String>,
    /// `-t` for sub (any number of filters).
    pub topics: Vec<String>,
    pub message: MessageMode,
    pub repeat_count: u32,
    pub repeat_delay: Duration,
    pub username: Option<String>,
    pub password: Option<String>,
    pub will_topic: Option<String>,
    pub will_payload: Option<String>,
    pub will_qos: QoS,
    pub will_retain: bool,
    /// `-x`: `None` when not given.
    pub session_expiry: Option<u32>,
    pub max_inflight: u16,
    pub nodelay: bool,
    pub msg_count: u32,
    pub timeout: Option<u32>,
    pub verbose: bool,
    pub eol: bool,
    pub format: Option<String>,
    pub pretty: bool,
    pub json: bool,
    pub no_retain: bool,
    pub retained_only: bool,
    pub remove_retained: bool,
    pub exit_after_sub: bool,
    pub retain_as_published: bool,
    /// `--random-filter`, in tenths of a percent (1000 = print everything).
    pub random_filter: u32,
    pub filter_outs: Vec<String>,
    pub unsub_topics: Vec<String>,
    pub response_topic: Option<String>,
    pub props: PropertySets,
    pub tls: TlsFlags,
}

/// `--cafile`, `--capath`, `--cert`, `--key`, `--insecure`, `--tls-version`,
/// `--tls-use-os-certs`, `--tls-alpn`.
#[derive(Debug, Clone, Default)]
pub struct TlsFlags {
    pub cafile: Option<String>,
    pub capath: Option<String>,
    pub certfile: Option<String>,
    pub keyfile: Option<String>,
    pub insecure: bool,
    pub version: Option<String>,
    pub use_os_certs: bool,
    pub alpn: Option<String>,
}

impl TlsFlags {
    /// Whether the connection uses TLS at all.
    pub fn enabled(&self) -> bool {
        self.cafile.is_some() || self.capath.is_some() || self.use_os_certs
    }
}

impl Config {
    fn new(tool: Tool) -> Self {
        Config {
            tool,
            host: "localhost".into(),
            port: None,
            bind_address: None,
            id: None,
            id_prefix: None,
            keepalive: 60,
            clean_session: true,
            debug: false,
            quiet: false,
            protocol: if tool == Tool::Rr {
                ProtocolVersion::V5
            } else {
                ProtocolVersion::V311
            },
            qos: QoS::AtMostOnce,
            retain: false,
            topic: None,
            topics: Vec::new(),
            message: MessageMode::None,
            repeat_count: 1,
            repeat_delay: Duration::ZERO,
            username: None,
            password: None,
            will_topic: None,
            will_payload: None,
            will_qos: QoS::AtMostOnce,
            will_retain: false,
            session_expiry: None,
            max_inflight: 20,
            nodelay: false,
            msg_count: if tool == Tool::Rr { 1 } else { 0 },
            timeout: None,
            verbose: false,
            eol: true,
            format: None,
            pretty: false,
            json: false,
            no_retain: false,
            retained_only: false,
            remove_retained: false,
            exit_after_sub: false,
            retain_as_published: false,
            random_filter: 1000,
            filter_outs: Vec::new(),
            unsub_topics: Vec::new(),
            response_topic: None,
            props: PropertySets::default(),
            tls: TlsFlags::default(),
        }
    }

    /// The port to connect to: 1883, or 8883 with a CA file or directory (TLS).
    pub fn port(&self) -> u16 {
        let tls = self.tls.cafile.is_some() || self.tls.capath.is_some();
        self.port.unwrap_or(if tls { 8883 } else { 1883 })
    }
}

/// Why parsing stopped without a configuration.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// `--help`: print the usage.
    Help,
    /// `--version`.
    Version,
    /// A bad command line: the message (ending in a newline), then the "Use ... --help"
    /// hint unless `hint` is false.
    Error { message: String, hint: bool },
    /// A bad command line for which Mosquitto prints the usage, then the message.
    UsageError(String),
}

fn err(message: impl Into<String>) -> Stop {
    Stop::Error {
        message: message.into(),
        hint: true,
    }
}

/// Parses the arguments after the subcommand name.
pub fn parse(tool: Tool, args: &[String]) -> Result<Config, Stop> {
    let mut cfg = Config::new(tool);
    let mut i = 0;
    while i < args.len() {
        parse_one(&mut cfg, args, &mut i)?;
        i += 1;
    }
    finish(cfg)
}

/// The value after flag `args[*i]`, or Mosquitto's "argument given but no X specified".
fn value<'a>(args: &'a [String], i: &mut usize, what: &str) -> Result<&'a str, Stop> {
    match args.get(*i + 1) {
        Some(v) => {
            *i += 1;
            Ok(v)
        }
        None => Err(err(format!(
            "Error: {} argument given but no {what} specified.\n\n",
            args[*i]
        ))),
    }
}

fn unknown(flag: &str) -> Stop {
    err(format!("Error: Unknown option '{flag}'.\n"))
}

const ONLY_ONE: &str = "Error: Only one type of message can be sent at once.\n\n";

fn set_message(cfg: &mut Config, mode: MessageMode) -> Result<(), Stop> {
    if cfg.message != MessageMode::None {
        return Err(err(ONLY_ONE));
    }
    cfg.message = mode;
    Ok(())
}

fn parse_qos(v: &str, what: &str) -> Result<QoS, Stop> {
    let n = atoi(v);
    u8::try_from(n)
        .ok()
        .and_then(QoS::from_u8)
        .ok_or_else(|| err(format!("{what}{n}\n")))
}

fn parse_one(cfg: &mut Config, args: &[String], i: &mut usize) -> Result<(), Stop> {
    let tool = cfg.tool;
    let flag = args[*i].as_str();
    let (is_pub, is_sub, is_rr) = (tool == Tool::Pub, tool == Tool::Sub, tool == Tool::Rr);
    match flag {
        "-A" => cfg.bind_address = Some(value(args, i, "address")?.into()),
        "-C" if is_sub => {
            let n = atoi(value(args, i, "count")?);
            if n < 1 {
                return Err(err(format!("Error: Invalid message count \"{n}\".\n\n")));
            }
            cfg.msg_count = u32::try_from(n).unwrap_or(u32::MAX);
        }
        "-c" | "--disable-clean-session" => cfg.clean_session = false,
        "-d" | "--debug" => cfg.debug = true,
        "-D" | "--property" => {
            *i += 1;
            parse_property(args, i, &mut cfg.props).map_err(err)?;
            cfg.protocol = ProtocolVersion::V5;
        }
        "-e" if is_rr => {
            let topic = value(args, i, "response topic")?;
            if midge_proto::topic::valid_topic_name(topic).is_err() {
                return Err(err(format!(
                    "Error: Invalid response topic '{topic}', does it contain '+' or '#'?\n"
                )));
            }
            cfg.response_topic = Some(topic.into());
        }
        "-E" if is_sub => cfg.exit_after_sub = true,
        "-f" | "--file" if !is_sub => {
            if cfg.message != MessageMode::None {
                return Err(err(ONLY_ONE));
            }
            let file = value(args, i, "file")?;
            set_message(cfg, MessageMode::File(file.into()))?;
        }
        "-F" if !is_pub => {
            let format = value(args, i, "format")?;
            check_format(format).map_err(err)?;
            cfg.format = Some(format.into());
        }
        "--help" => return Err(Stop::Help),
        "-h" | "--host" => cfg.host = value(args, i, "host")?.into(),
        "-i" | "--id" => {
            if cfg.id_prefix.is_some() {
                return Err(err(
                    "Error: -i and -I argument cannot be used together.\n\n",
                ));
            }
            cfg.id = Some(value(args, i, "id")?.into());
        }
        "-I" | "--id-prefix" => {
            if cfg.id.is_some() {
                return Err(err(
                    "Error: -i and -I argument cannot be used together.\n\n",
                ));
            }
            cfg.id_prefix = Some(value(args, i, "id prefix")?.into());
        }
        "-k" | "--keepalive" => {
            let k = atoi(value(args, i, "keepalive")?);
            cfg.keepalive = u16::try_from(k).ok().filter(|k| *k >= 5).ok_or_else(|| {
                err("Error: Invalid keepalive given, it must be between 5 and 65535 inclusive.\n\n")
            })?;
        }
        "-L" | "--url" => {
            let url = value(args, i, "URL")?;
            parse_url(cfg, url)?;
        }
        "-l" | "--stdin-line" if is_pub => set_message(cfg, MessageMode::StdinLine)?,
        "-m" | "--message" if !is_sub => {
            if cfg.message != MessageMode::None {
                return Err(err(ONLY_ONE));
            }
            let m = value(args, i, "message")?;
            set_message(cfg, MessageMode::Cmd(m.into()))?;
        }
        "-M" => {
            let n = atoi(value(args, i, "max_inflight")?);
            if n < 1 {
                return Err(err(
                    "Error: Maximum inflight messages must be greater than 0.\n\n",
                ));
            }
            cfg.max_inflight = u16::try_from(n).unwrap_or(u16::MAX);
        }
        "--nodelay" => cfg.nodelay = true,
        "-n" | "--null-message" if !is_sub => set_message(cfg, MessageMode::Null)?,
        "-N" if !is_pub => cfg.eol = false,
        "-p" | "--port" => {
            let p = atoi(value(args, i, "port")?);
            let port =
                u16::try_from(p).map_err(|_| err(format!("Error: Invalid port given: {p}\n")))?;
            cfg.port = Some(port);
        }
        "--pretty" if !is_pub => cfg.pretty = true,
        "-P" | "--pw" => cfg.password = Some(value(args, i, "password")?.into()),
        "-q" | "--qos" => {
            cfg.qos = parse_qos(value(args, i, "QoS")?, "Error: Invalid QoS given: ")?;
        }
        "--quiet" => cfg.quiet = true,
        "-r" | "--retain" if is_pub => cfg.retain = true,
        "-R" if !is_pub => cfg.no_retain = true,
        "--random-filter" if is_sub => {
            let chance: f64 = value(args, i, "chance")?.trim().parse().unwrap_or(0.0);
            let tenths = (chance * 10.0) as i64;
            if !(1..=1000).contains(&tenths) {
                return Err(err(
                    "Error: --random-filter chance must be between 0.1-100.0\n\n",
                ));
            }
            cfg.random_filter = tenths as u32;
        }
        "--remove-retained" if is_sub => cfg.remove_retained = true,
        "--repeat" if is_pub => {
            let n = atoi(value(args, i, "count")?);
            if n < 1 {
                return Err(err("Error: --repeat argument must be >0.\n\n"));
            }
            cfg.repeat_count = u32::try_from(n).unwrap_or(u32::MAX);
        }
        "--repeat-delay" if is_pub => {
            let f: f64 = value(args, i, "time")?.trim().parse().unwrap_or(0.0);
            if f < 0.0 || !f.is_finite() {
                return Err(err("Error: --repeat-delay argument must be >=0.0.\n\n"));
            }
            cfg.repeat_delay = Duration::from_secs_f64(f);
        }
        "--retain-as-published" if !is_pub => cfg.retain_as_published = true,
        "--retained-only" if is_sub => cfg.retained_only = true,
        "-s" | "--stdin-file" if !is_sub => set_message(cfg, MessageMode::StdinFile)?,
        "-t" | "--topic" => {
            let topic = value(args, i, "topic")?;
            add_topic(cfg, topic)?;
        }
        "-T" | "--filter-out" if is_sub => {
            let filter = value(args, i, "topic filter")?;
            if midge_proto::topic::valid_topic_filter(filter).is_err() {
                return Err(err(format!(
                    "Error: Invalid filter topic '{filter}', are all '+' and '#' wildcards correct?\n"
                )));
            }
            cfg.filter_outs.push(filter.into());
        }
        "-U" | "--unsubscribe" if is_sub => {
            let filter = value(args, i, "unsubscribe topic")?;
            if midge_proto::topic::valid_topic_filter(filter).is_err() {
                return Err(err(format!(
                    "Error: Invalid unsubscribe topic '{filter}', are all '+' and '#' wildcards correct?\n"
                )));
            }
            cfg.unsub_topics.push(filter.into());
        }
        "-u" | "--username" => cfg.username = Some(value(args, i, "username")?.into()),
        "-V" | "--protocol-version" => {
            let v = value(args, i, "version").map_err(|_| {
                err("Error: --protocol-version argument given but no version specified.\n\n")
            })?;
            cfg.protocol = match v {
                "mqttv31" | "31" => ProtocolVersion::V31,
                "mqttv311" | "311" => ProtocolVersion::V311,
                "mqttv5" | "5" => ProtocolVersion::V5,
                _ => return Err(err("Error: Invalid protocol version argument given.\n\n")),
            };
        }
        "-v" | "--verbose" if !is_pub => cfg.verbose = true,
        "--version" => return Err(Stop::Version),
        "-W" if !is_pub => {
            let n = atoi(value(args, i, "timeout")?);
            if n < 1 {
                return Err(err(format!("Error: Invalid timeout \"{n}\".\n\n")));
            }
            cfg.timeout = Some(u32::try_from(n).unwrap_or(u32::MAX));
        }
        "--will-payload" => cfg.will_payload = Some(value(args, i, "will payload")?.into()),
        "--will-qos" => {
            cfg.will_qos = parse_qos(value(args, i, "will QoS")?, "Error: Invalid will QoS ")
                .map_err(|_| err("Error: Invalid will QoS.\n\n"))?;
        }
        "--will-retain" => cfg.will_retain = true,
        "--will-topic" => {
            let topic = value(args, i, "will topic")?;
            if midge_proto::topic::valid_topic_name(topic).is_err() {
                return Err(err(format!(
                    "Error: Invalid will topic '{topic}', does it contain '+' or '#'?\n"
                )));
            }
            cfg.will_topic = Some(topic.into());
        }
        "-x" => {
            let v = value(args, i, "session expiry interval")?;
            cfg.session_expiry = Some(parse_session_expiry(v)?);
        }
        "--json" if is_sub => cfg.json = true,
        "--cafile" => cfg.tls.cafile = Some(value(args, i, "file")?.into()),
        "--capath" => cfg.tls.capath = Some(value(args, i, "directory")?.into()),
        "--cert" => cfg.tls.certfile = Some(value(args, i, "file")?.into()),
        "--key" => cfg.tls.keyfile = Some(value(args, i, "file")?.into()),
        "--insecure" => cfg.tls.insecure = true,
        "--tls-version" => cfg.tls.version = Some(value(args, i, "version")?.into()),
        "--tls-use-os-certs" => cfg.tls.use_os_certs = true,
        "--tls-alpn" => cfg.tls.alpn = Some(value(args, i, "protocol")?.into()),
        "--ciphers"
        | "--psk"
        | "--psk-identity"
        | "--keyform"
        | "--tls-engine"
        | "--tls-engine-kpass-sha1" => {
            return Err(err(format!(
                "Error: {flag} is not supported by midge {} (rustls chooses the cipher suites; no TLS-PSK or engines).\n",
                tool.name()
            )));
        }
        "--unix" | "--proxy" | "--ws" => {
            return Err(err(format!(
                "Error: {flag} is not supported by midge {}.\n",
                tool.name()
            )));
        }
        _ => return Err(unknown(flag)),
    }
    Ok(())
}

fn parse_session_expiry(v: &str) -> Result<u32, Stop> {
    if v == "∞" {
        return Ok(u32::MAX);
    }
    let n: i64 =
        parse_c_long(v).ok_or_else(|| err("Error: session-expiry-interval not a number.\n\n"))?;
    if n == -1 {
        return Ok(u32::MAX);
    }
    u32::try_from(n).map_err(|_| err("Error: session-expiry-interval out of range.\n\n"))
}

/// `strtol(s, &end, 0)` that must consume everything: decimal, 0x hex or 0 octal.
fn parse_c_long(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let value = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()?
    } else if body.len() > 1 && body.starts_with('0') {
        i64::from_str_radix(&body[1..], 8).ok()?
    } else {
        body.parse::<i64>().ok()?
    };
    Some(if neg { -value } else { value })
}

fn add_topic(cfg: &mut Config, topic: &str) -> Result<(), Stop> {
    match cfg.tool {
        Tool::Pub | Tool::Rr => {
            if midge_proto::topic::valid_topic_name(topic).is_err() {
                return Err(err(format!(
                    "Error: Invalid publish topic '{topic}', does it contain '+' or '#'?\n"
                )));
            }
            cfg.topic = Some(topic.into());
        }
        Tool::Sub => {
            if midge_proto::topic::valid_topic_filter(topic).is_err() {
                return Err(err(format!(
                    "Error: Invalid subscription topic '{topic}', are all '+' and '#' wildcards correct?\n"
                )));
            }
            cfg.topics.push(topic.into());
        }
    }
    Ok(())
}

/// `-L mqtt://[user[:password]@]host[:port]/topic`.
fn parse_url(cfg: &mut Config, url: &str) -> Result<(), Stop> {
    let lower = url.to_ascii_lowercase();
    let rest = if lower.starts_with("mqtt://") {
        cfg.port = Some(1883);
        &url[7..]
    } else if lower.starts_with("mqtts://") {
        cfg.port = Some(8883);
        cfg.tls.use_os_certs = true;
        &url[8..]
    } else if lower.starts_with("ws://") || lower.starts_with("wss://") {
        return Err(err("Error: WebSocket support not available.\n\n"));
    } else {
        return Err(err("Error: Unsupported URL scheme.\n\n"));
    };
    let Some((authority, topic)) = rest.split_once('/') else {
        return Err(err(
            "Error: Invalid URL for -L argument specified - topic missing.\n",
        ));
    };
    add_topic(cfg, topic)?;
    let host_port = match authority.split_once('@') {
        Some((userinfo, host_port)) => {
            match userinfo.split_once(':') {
                Some((user, password)) => {
                    cfg.username = Some(user.into());
                    cfg.password = Some(password.into());
                }
                None => cfg.username = Some(userinfo.into()),
            }
            host_port
        }
        None => authority,
    };
    match host_port.split_once(':') {
        Some((host, port)) => {
            cfg.host = host.into();
            let p = atoi(port);
            cfg.port = Some(
                u16::try_from(p).map_err(|_| err(format!("Error: Invalid port given: {p}\n")))?,
            );
        }
        None => cfg.host = host_port.into(),
    }
    Ok(())
}

/// Checks after all flags are read, in Mosquitto's order.
fn finish(mut cfg: Config) -> Result<Config, Stop> {
    if cfg.will_payload.is_some() && cfg.will_topic.is_none() {
        return Err(err("Error: Will payload given, but no will topic given.\n"));
    }
    if cfg.will_retain && cfg.will_topic.is_none() {
        return Err(err("Error: Will retain given, but no will topic given.\n"));
    }
    if cfg.tls.certfile.is_some() != cfg.tls.keyfile.is_some() {
        return Err(err(
            "Error: Both certfile and keyfile must be provided if one of them is set.\n",
        ));
    }
    if !cfg.clean_session && cfg.id.as_deref() == Some("") {
        return Err(Stop::Error {
            message: "Error: Invalid id.\n".into(),
            hint: false,
        });
    }
    let no_id = cfg.id_prefix.is_some() || cfg.id.is_none();
    if cfg.protocol.is_v5() {
        if !cfg.clean_session && cfg.session_expiry.is_none() {
            cfg.session_expiry = Some(u32::MAX);
        }
        if cfg.session_expiry == Some(u32::MAX) && no_id {
            return Err(err(
                "Error: You must provide a client id if you are using an infinite session expiry interval.\n",
            ));
        }
    } else if !cfg.clean_session && no_id {
        return Err(err(
            "Error: You must provide a client id if you are using the -c option.\n",
        ));
    }
    match cfg.tool {
        Tool::Pub => {
            if cfg.topic.is_none() || cfg.message == MessageMode::None {
                return Err(Stop::UsageError(
                    "Error: Both topic and message must be supplied.\n".into(),
                ));
            }
        }
        Tool::Sub => {
            if cfg.topics.is_empty() && cfg.unsub_topics.is_empty() {
                return Err(err("Error: You must specify a topic to subscribe to.\n"));
            }
            if cfg.no_retain && cfg.retained_only {
                return Err(Stop::Error {
                    message: "\nError: Combining '-R' and '--retained-only' makes no sense.\n"
                        .into(),
                    hint: false,
                });
            }
        }
        Tool::Rr => {
            if cfg.topic.is_none()
                || cfg.message == MessageMode::None
                || cfg.response_topic.is_none()
            {
                return Err(err(
                    "Error: All of topic, message, and response topic must be supplied.\n",
                ));
            }
        }
    }
    if cfg.password.is_some() && cfg.username.is_none() && !cfg.protocol.is_v5() {
        return Err(Stop::Error {
            message: "Error: Problem setting username and/or password.\n".into(),
            hint: false,
        });
    }
    Ok(cfg)
}

/// Validates a `-F` format string as Mosquitto does, before connecting.
pub fn check_format(format: &str) -> Result<(), String> {
    let b = format.as_bytes();
    let incomplete = || "Error: Incomplete format specifier.\n".to_string();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                i += 1;
                if i >= b.len() {
                    return Err(incomplete());
                }
                if matches!(b[i], b'0' | b'-') {
                    i += 1;
                }
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                if i < b.len() && b[i] == b'.' {
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                let Some(&spec) = b.get(i) else {
                    return Err(incomplete());
                };
                if !b"%ACDEFIlmPpqRSrtjJUxX".contains(&spec) {
                    return Err(format!(
                        "Error: Invalid format specifier '{}'.\n",
                        char::from(spec)
                    ));
                }
            }
            b'@' => {
                i += 1;
                if i >= b.len() {
                    return Err(incomplete());
                }
            }
            b'\\' => {
                i += 1;
                let Some(&esc) = b.get(i) else {
                    return Err("Error: Incomplete escape specifier.\n".into());
                };
                if !b"\\0aenrtv".contains(&esc) {
                    return Err(format!(
                        "Error: Invalid escape specifier '{}'.\n",
                        char::from(esc)
                    ));
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    fn error_of(tool: Tool, line: &str) -> String {
        match parse(tool, &args(line)) {
            Err(Stop::Error { message, .. }) | Err(Stop::UsageError(message)) => message,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn mosquitto_defaults() {
        let cfg = parse(Tool::Pub, &args("-t a -m b")).unwrap();
        assert_eq!((cfg.host.as_str(), cfg.port()), ("localhost", 1883));
        assert_eq!(cfg.protocol, ProtocolVersion::V311);
        assert_eq!((cfg.keepalive, cfg.qos), (60, QoS::AtMostOnce));
        let rr = parse(Tool::Rr, &args("-t a -m b -e c")).unwrap();
        assert_eq!(rr.protocol, ProtocolVersion::V5);
    }

    #[test]
    fn common_flags() {
        let cfg = parse(
            Tool::Sub,
            &args("-h example -p 1884 -t a/# -t b -q 2 -i me -u user -P pw -k 30 -v -C 3 -W 9 -N -R -T a/x -U c"),
        )
        .unwrap();
        assert_eq!(cfg.host, "example");
        assert_eq!(cfg.port(), 1884);
        assert_eq!(cfg.topics, vec!["a/#", "b"]);
        assert_eq!(cfg.qos, QoS::ExactlyOnce);
        assert_eq!(cfg.id.as_deref(), Some("me"));
        assert_eq!(
            (cfg.username.as_deref(), cfg.password.as_deref()),
            (Some("user"), Some("pw"))
        );
        assert_eq!((cfg.keepalive, cfg.verbose, cfg.msg_count), (30, true, 3));
        assert_eq!(
            (cfg.timeout, cfg.eol, cfg.no_retain),
            (Some(9), false, true)
        );
        assert_eq!((cfg.filter_outs.len(), cfg.unsub_topics.len()), (1, 1));
    }

    #[test]
    fn protocol_versions_and_property_switch() {
        for (v, expected) in [
            ("31", ProtocolVersion::V31),
            ("mqttv31", ProtocolVersion::V31),
            ("311", ProtocolVersion::V311),
            ("mqttv311", ProtocolVersion::V311),
            ("5", ProtocolVersion::V5),
            ("mqttv5", ProtocolVersion::V5),
        ] {
            let cfg = parse(Tool::Pub, &args(&format!("-t a -m b -V {v}"))).unwrap();
            assert_eq!(cfg.protocol, expected);
        }
        let cfg = parse(Tool::Pub, &args("-t a -m b -D publish content-type x")).unwrap();
        assert_eq!(cfg.protocol, ProtocolVersion::V5);
        assert_eq!(cfg.props.publish.content_type.as_deref(), Some("x"));
    }

    #[test]
    fn url_sets_credentials_host_port_and_topic() {
        let cfg = parse(Tool::Pub, &args("-L mqtt://al:pw@broker:1999/a/b -m x")).unwrap();
        assert_eq!(
            (cfg.username.as_deref(), cfg.password.as_deref()),
            (Some("al"), Some("pw"))
        );
        assert_eq!((cfg.host.as_str(), cfg.port()), ("broker", 1999));
        assert_eq!(cfg.topic.as_deref(), Some("a/b"));
        assert!(error_of(Tool::Pub, "-L http://x/y -m x").contains("Unsupported URL scheme"));
        assert!(error_of(Tool::Pub, "-L mqtt://x -m x").contains("topic missing"));
    }

    #[test]
    fn session_expiry_forms() {
        for (v, expected) in [
            ("0", 0),
            ("60", 60),
            ("-1", u32::MAX),
            ("∞", u32::MAX),
            ("0x10", 16),
        ] {
            let cfg = parse(Tool::Pub, &args(&format!("-t a -m b -i x -x {v}"))).unwrap();
            assert_eq!(cfg.session_expiry, Some(expected), "{v}");
        }
        assert!(error_of(Tool::Pub, "-t a -m b -x abc").contains("not a number"));
        assert!(error_of(Tool::Pub, "-t a -m b -x 99999999999").contains("out of range"));
    }

    #[test]
    fn errors_match_mosquitto() {
        for (tool, line, expected) in [
            (Tool::Pub, "-Z", "Error: Unknown option '-Z'.\n"),
            (Tool::Sub, "-m x -t a", "Error: Unknown option '-m'.\n"),
            (Tool::Pub, "-t a", "Error: Both topic and message must be supplied.\n"),
            (Tool::Pub, "-q 3 -t a -m b", "Error: Invalid QoS given: 3\n"),
            (Tool::Pub, "-t a/# -m b", "Error: Invalid publish topic 'a/#', does it contain '+' or '#'?\n"),
            (Tool::Sub, "-t a/#/b", "Error: Invalid subscription topic 'a/#/b', are all '+' and '#' wildcards correct?\n"),
            (Tool::Pub, "-t a -m x -c", "Error: You must provide a client id if you are using the -c option.\n"),
            (Tool::Pub, "-t a -m x -c -V 5", "Error: You must provide a client id if you are using an infinite session expiry interval.\n"),
            (Tool::Pub, "-t a -m x -m y", "Error: Only one type of message can be sent at once.\n\n"),
            (Tool::Pub, "-t", "Error: -t argument given but no topic specified.\n\n"),
            (Tool::Rr, "-t a -e b", "Error: All of topic, message, and response topic must be supplied.\n"),
        ] {
            assert_eq!(error_of(tool, line), expected, "{tool:?} {line}");
        }
        assert!(error_of(Tool::Sub, "-t a -R --retained-only").contains("makes no sense"));
        let empty_id = parse(
            Tool::Pub,
            &["-t", "a", "-m", "x", "-c", "-i", ""].map(String::from),
        );
        assert_eq!(
            empty_id.unwrap_err(),
            Stop::Error {
                message: "Error: Invalid id.\n".into(),
                hint: false
            }
        );
        assert_eq!(parse(Tool::Pub, &args("--help")).unwrap_err(), Stop::Help);
    }

    #[test]
    fn format_checks() {
        assert!(check_format(
            "%t %p %q %r %l %m %x %X %% @Y @@ %I %U %j %J %10t %-10p %05l %.3t \\n\\t"
        )
        .is_ok());
        for (format, expected) in [
            ("%", "Error: Incomplete format specifier.\n"),
            ("%z", "Error: Invalid format specifier 'z'.\n"),
            ("\\q", "Error: Invalid escape specifier 'q'.\n"),
            ("@", "Error: Incomplete format specifier.\n"),
        ] {
            assert_eq!(check_format(format), Err(expected.into()), "{format}");
        }
    }
}
