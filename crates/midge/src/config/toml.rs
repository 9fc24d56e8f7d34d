//! Midge's own configuration format: TOML with every key checked (unknown keys are errors).
//!
//! Durations are whole seconds, sizes are bytes. Numbers are read with their position
//! (`Spanned`) so a value out of range is reported at its line like a syntax error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{
    bind_addresses, connection_limit, local_only_listeners, Config, Domain, Location, Report,
};

/// The file as written. Every field is optional; an absent field keeps Midge's default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    listener: Vec<Listener>,
    max_keepalive: Option<Spanned<i64>>,
    max_inflight_messages: Option<Spanned<i64>>,
    max_queued_messages: Option<Spanned<i64>>,
    max_queued_bytes: Option<Spanned<i64>>,
    queue_qos0_messages: Option<bool>,
    slow_consumer_timeout: Option<Spanned<i64>>,
    publisher_backpressure: Option<bool>,
    publisher_backpressure_max_ms: Option<Spanned<i64>>,
    shutdown_timeout: Option<Spanned<i64>>,
    message_size_limit: Option<Spanned<i64>>,
    max_packet_size: Option<Spanned<i64>>,
    sys_interval: Option<Spanned<i64>>,
    persistent_client_expiration: Option<Spanned<i64>>,
    retain_available: Option<bool>,
    max_qos: Option<Spanned<i64>>,
    max_topic_alias: Option<Spanned<i64>>,
    outgoing_topic_aliases: Option<bool>,
    connect_timeout: Option<Spanned<i64>>,
    allow_zero_length_clientid: Option<bool>,
    auto_id_prefix: Option<String>,
    max_connections: Option<Spanned<i64>>,
    password_file: Option<String>,
    acl_file: Option<String>,
    scram_file: Option<String>,
    max_subscriptions_per_client: Option<Spanned<i64>>,
    max_topic_length: Option<Spanned<i64>>,
    max_topic_levels: Option<Spanned<i64>>,
    max_client_id_length: Option<Spanned<i64>>,
    max_connection_rate_per_ip: Option<Spanned<i64>>,
    max_inbound_message_rate: Option<Spanned<i64>>,
    auth_failures_before_delay: Option<Spanned<i64>>,
    park_idle_after: Option<Spanned<i64>>,
    persistence: Option<bool>,
    data_dir: Option<String>,
    fsync: Option<Spanned<Fsync>>,
}

/// `fsync = "always"`, `"never"` or a period in milliseconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Fsync {
    Word(String),
    Millis(i64),
}

/// One `[[listener]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Listener {
    port: Spanned<i64>,
    bind_address: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    allow_anonymous: Option<bool>,
    certfile: Option<String>,
    keyfile: Option<String>,
    cafile: Option<String>,
    capath: Option<String>,
    require_certificate: Option<bool>,
    use_identity_as_username: Option<bool>,
    tls_version: Option<Spanned<String>>,
    ciphers: Option<String>,
    ciphers_tls13: Option<String>,
    /// With either of these the listener uses its own files instead of the broker-wide
    /// `password_file` and `acl_file` (Mosquitto's `per_listener_settings true`).
    password_file: Option<String>,
    acl_file: Option<String>,
}

/// Largest PUBLISH payload MQTT can carry.
pub(super) const MAX_PAYLOAD: i64 = 268_435_455;
/// Largest packet MQTT can carry: the largest remaining length plus a 5-byte fixed header.
pub(super) const MAX_PACKET: i64 = 268_435_460;

pub(super) fn parse(path: &Path, text: &str) -> (Option<Config>, Report) {
    let mut report = Report::default();
    let file: File = match ::toml::from_str(text) {
        Ok(file) => file,
        Err(e) => {
            report.errors.push(toml_error(path, text, &e));
            return (None, report);
        }
    };
    let config = Reader {
        path,
        text,
        report: &mut report,
    }
    .config(file);
    (Some(config), report)
}

/// Turns the toml crate's error into `file:line:column: key: message`.
fn toml_error(path: &Path, text: &str, e: &::toml::de::Error) -> super::Problem {
    let offset = e.span().map_or(0, |s| s.start);
    let at = location(path, text, offset);
    let key = key_at(text, offset).unwrap_or_else(|| "(file)".to_string());
    at.problem(&key, e.message().trim().to_string())
}

/// 1-based line and column of a byte offset.
fn location(path: &Path, text: &str, offset: usize) -> Location {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before
        .get(line_start..)
        .map_or(1, |s| s.chars().count() + 1);
    Location {
        file: path.to_path_buf(),
        line,
        column: Some(column),
    }
}

/// The dotted key written on the line containing `offset`, prefixed by its table's name.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(line_start..)?.lines().next().unwrap_or("").trim();
    let table = current_table(text.get(..line_start)?);
    let own = if let Some(header) = table_header(line) {
        return Some(header);
    } else if let Some((key, _)) = line.split_once('=') {
        key.trim().to_string()
    } else if let Some(word) = line.split_whitespace().next() {
        word.to_string()
    } else {
        return table;
    };
    Some(match table {
        Some(table) => format!("{table}.{own}"),
        None => own,
    })
}

/// The name of the last `[table]` or `[[table]]` header in `text`.
fn current_table(text: &str) -> Option<String> {
    text.lines().rev().find_map(|l| table_header(l.trim()))
}

fn table_header(line: &str) -> Option<String> {
    let inner = line.strip_prefix('[')?;
    let end = inner.find(']')?;
    let name = inner.get(..end)?.trim_start_matches('[').trim();
    Some(name.to_string())
}

/// Converts the file's values, checking ranges; each problem is reported at its value.
struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
    report: &'a mut Report,
}

impl Reader<'_> {
    fn config(&mut self, file: File) -> Config {
        let default = Config::default();
        let secs = |n: i64| Duration::from_secs(n.unsigned_abs());
        let listeners = self.listeners(&file.listener);
        let sys_interval = self.int(
            &file.sys_interval,
            "sys_interval",
            0,
            65535,
            default.sys_interval.as_secs(),
        );
        let connect_timeout = self.int(
            &file.connect_timeout,
            "connect_timeout",
            1,
            65535,
            default.connect_timeout.as_secs(),
        );
        let park_idle_after = self.int(
            &file.park_idle_after,
            "park_idle_after",
            0,
            65535,
            default.park_idle_after.as_secs(),
        );
        Config {
            listeners,
            park_idle_after: Duration::from_secs(park_idle_after),
            max_keepalive: self.int(
                &file.max_keepalive,
                "max_keepalive",
                0,
                65535,
                default.max_keepalive,
            ),
            max_inflight_messages: self.int(
                &file.max_inflight_messages,
                "max_inflight_messages",
                0,
                65535,
                default.max_inflight_messages,
            ),
            max_queued_messages: self.int(
                &file.max_queued_messages,
                "max_queued_messages",
                0,
                i64::MAX,
                default.max_queued_messages,
            ),
            max_queued_bytes: self.int(
                &file.max_queued_bytes,
                "max_queued_bytes",
                0,
                i64::MAX,
                default.max_queued_bytes,
            ),
            queue_qos0_messages: file
                .queue_qos0_messages
                .unwrap_or(default.queue_qos0_messages),
            slow_consumer_timeout: Duration::from_secs(self.int(
                &file.slow_consumer_timeout,
                "slow_consumer_timeout",
                0,
                86_400,
                default.slow_consumer_timeout.as_secs(),
            )),
            publisher_backpressure: file
                .publisher_backpressure
                .unwrap_or(default.publisher_backpressure),
            publisher_backpressure_max: Duration::from_millis(self.int(
                &file.publisher_backpressure_max_ms,
                "publisher_backpressure_max_ms",
                1,
                1000,
                u64::try_from(default.publisher_backpressure_max.as_millis()).unwrap_or(100),
            )),
            shutdown_timeout: Duration::from_secs(self.int(
                &file.shutdown_timeout,
                "shutdown_timeout",
                1,
                3600,
                default.shutdown_timeout.as_secs(),
            )),
            message_size_limit: self.int(
                &file.message_size_limit,
                "message_size_limit",
                0,
                MAX_PAYLOAD,
                default.message_size_limit,
            ),
            max_packet_size: self.packet_size(&file.max_packet_size, default.max_packet_size),
            sys_interval: Duration::from_secs(sys_interval),
            persistent_client_expiration: file
                .persistent_client_expiration
                .as_ref()
                .and_then(|v| self.checked(v, "persistent_client_expiration", 0, i64::MAX))
                .filter(|&n| n > 0)
                .map(secs),
            retain_available: file.retain_available.unwrap_or(default.retain_available),
            max_qos: self.int(&file.max_qos, "max_qos", 0, 2, default.max_qos),
            max_topic_alias: self.int(
                &file.max_topic_alias,
                "max_topic_alias",
                0,
                65535,
                default.max_topic_alias,
            ),
            outgoing_topic_aliases: file
                .outgoing_topic_aliases
                .unwrap_or(default.outgoing_topic_aliases),
            connect_timeout: Duration::from_secs(connect_timeout),
            allow_zero_length_clientid: file
                .allow_zero_length_clientid
                .unwrap_or(default.allow_zero_length_clientid),
            auto_id_prefix: file
                .auto_id_prefix
                .clone()
                .unwrap_or(default.auto_id_prefix),
            max_connections: match &file.max_connections {
                Some(v) => self.limit(v, "max_connections"),
                None => default.max_connections,
            },
            password_file: file.password_file.as_ref().map(PathBuf::from),
            acl_file: file.acl_file.as_ref().map(PathBuf::from),
            scram_file: file.scram_file.as_ref().map(PathBuf::from),
            max_subscriptions_per_client: self.int(
                &file.max_subscriptions_per_client,
                "max_subscriptions_per_client",
                0,
                i64::from(u32::MAX),
                default.max_subscriptions_per_client,
            ),
            max_topic_length: self.int(
                &file.max_topic_length,
                "max_topic_length",
                1,
                65535,
                default.max_topic_length,
            ),
            max_topic_levels: self.int(
                &file.max_topic_levels,
                "max_topic_levels",
                0,
                65535,
                default.max_topic_levels,
            ),
            max_client_id_length: self.int(
                &file.max_client_id_length,
                "max_client_id_length",
                23,
                65535,
                default.max_client_id_length,
            ),
            max_connection_rate_per_ip: self.int(
                &file.max_connection_rate_per_ip,
                "max_connection_rate_per_ip",
                0,
                i64::from(u32::MAX),
                default.max_connection_rate_per_ip,
            ),
            max_inbound_message_rate: self.int(
                &file.max_inbound_message_rate,
                "max_inbound_message_rate",
                0,
                i64::from(u32::MAX),
                default.max_inbound_message_rate,
            ),
            auth_failures_before_delay: self.int(
                &file.auth_failures_before_delay,
                "auth_failures_before_delay",
                0,
                i64::from(u32::MAX),
                default.auth_failures_before_delay,
            ),
            persistence: self.persistence(&file),
        }
    }

    /// The TLS settings of a `[[listener]]`: `certfile` and `keyfile` turn TLS on; the
    /// other TLS keys need them.
    fn tls(&mut self, table: &Listener) -> Option<midge_broker::TlsSettings> {
        let at = self.at(table.port.span().start);
        let min_version = match &table.tls_version {
            None => midge_broker::TlsVersion::Tls12,
            Some(v) => match super::tls_version(v.get_ref()) {
                Ok(v) => v,
                Err(message) => {
                    let at = self.at(v.span().start);
                    self.report.error(&at, "listener.tls_version", message);
                    midge_broker::TlsVersion::Tls12
                }
            },
        };
        match (&table.certfile, &table.keyfile) {
            (Some(cert), Some(key)) => Some(midge_broker::TlsSettings {
                certfile: PathBuf::from(cert),
                keyfile: PathBuf::from(key),
                cafile: table.cafile.as_ref().map(PathBuf::from),
                capath: table.capath.as_ref().map(PathBuf::from),
                require_certificate: table.require_certificate.unwrap_or(false),
                use_identity_as_username: table.use_identity_as_username.unwrap_or(false),
                min_version,
                ciphers: table.ciphers.clone(),
                ciphers_tls13: table.ciphers_tls13.clone(),
            }),
            (None, None) => {
                let tls_only = table.cafile.is_some()
                    || table.capath.is_some()
                    || table.require_certificate == Some(true)
                    || table.use_identity_as_username == Some(true)
                    || table.tls_version.is_some();
                if tls_only {
                    self.report
                        .error(&at, "listener", "TLS options need certfile and keyfile");
                }
                None
            }
            _ => {
                self.report
                    .error(&at, "listener", "certfile and keyfile go together");
                None
            }
        }
    }

    /// On by default in `./midge-data`; `persistence = false` keeps everything in memory.
    fn persistence(&mut self, file: &File) -> Option<midge_broker::Persistence> {
        let durability = match &file.fsync {
            None => midge_broker::Durability::default(),
            Some(f) => match f.get_ref() {
                Fsync::Word(w) if w == "always" => midge_broker::Durability::Always,
                Fsync::Word(w) if w == "never" => midge_broker::Durability::Never,
                Fsync::Millis(ms) if (1..=3_600_000).contains(ms) => {
                    midge_broker::Durability::Periodic(Duration::from_millis(*ms as u64))
                }
                _ => {
                    let at = self.at(f.span().start);
                    self.report.error(
                        &at,
                        "fsync",
                        "expected \"always\", \"never\" or a period in milliseconds (1 to 3600000)",
                    );
                    midge_broker::Durability::default()
                }
            },
        };
        if file.persistence == Some(false) {
            return None;
        }
        Some(midge_broker::Persistence {
            data_dir: PathBuf::from(file.data_dir.as_deref().unwrap_or("midge-data")),
            durability,
        })
    }

    fn listeners(&mut self, tables: &[Listener]) -> Vec<midge_broker::ListenerConfig> {
        if tables.is_empty() {
            // Mosquitto 2's local only mode: no listener configured, loopback only.
            return local_only_listeners(true, None, Domain::Both);
        }
        let mut out: Vec<midge_broker::ListenerConfig> = Vec::new();
        for table in tables {
            let Some(port) = self.checked(&table.port, "listener.port", 0, 65535) else {
                continue;
            };
            let max_connections = match &table.max_connections {
                Some(v) => self.limit(v, "listener.max_connections"),
                None => None,
            };
            let tls = self.tls(table);
            let security = (table.password_file.is_some() || table.acl_file.is_some()).then(|| {
                midge_broker::ListenerSecurity {
                    password_file: table.password_file.as_ref().map(PathBuf::from),
                    acl_file: table.acl_file.as_ref().map(PathBuf::from),
                }
            });
            let host = table.bind_address.as_ref();
            let addrs = match bind_addresses(
                host.map(|h| h.get_ref().as_str()),
                port as u16,
                Domain::Both,
            ) {
                Ok(addrs) => addrs,
                Err(message) => {
                    let at = self.at(host.map_or(table.port.span().start, |h| h.span().start));
                    self.report.error(&at, "listener.bind_address", message);
                    continue;
                }
            };
            for bind in addrs {
                if port != 0 && out.iter().any(|l| l.bind == bind) {
                    let at = self.at(table.port.span().start);
                    self.report.error(
                        &at,
                        "listener.port",
                        format!("{bind} is already used by another listener"),
                    );
                    continue;
                }
                out.push(midge_broker::ListenerConfig {
                    bind,
                    max_connections,
                    allow_anonymous: table.allow_anonymous.unwrap_or(false),
                    tls: tls.clone(),
                    security: security.clone(),
                });
            }
        }
        out
    }

    fn at(&self, offset: usize) -> Location {
        location(self.path, self.text, offset)
    }

    /// The value if it lies in `min..=max`, else an error at the value.
    fn checked(&mut self, v: &Spanned<i64>, key: &str, min: i64, max: i64) -> Option<i64> {
        let n = *v.get_ref();
        if (min..=max).contains(&n) {
            return Some(n);
        }
        let at = self.at(v.span().start);
        let message = if max == i64::MAX {
            format!("expected a number from {min} up, got {n}")
        } else {
            format!("expected a number from {min} to {max}, got {n}")
        };
        self.report.error(&at, key, message);
        None
    }

    fn int<T: TryFrom<i64>>(
        &mut self,
        v: &Option<Spanned<i64>>,
        key: &str,
        min: i64,
        max: i64,
        default: T,
    ) -> T {
        v.as_ref()
            .and_then(|v| self.checked(v, key, min, max))
            .and_then(|n| T::try_from(n).ok())
            .unwrap_or(default)
    }

    fn packet_size(&mut self, v: &Option<Spanned<i64>>, default: u32) -> u32 {
        let Some(v) = v else { return default };
        let n = *v.get_ref();
        if n == 0 || (20..=MAX_PACKET).contains(&n) {
            return u32::try_from(n).unwrap_or(default);
        }
        let at = self.at(v.span().start);
        self.report.error(
            &at,
            "max_packet_size",
            format!("expected 0 (no limit) or a number from 20 to {MAX_PACKET}, got {n}"),
        );
        default
    }

    /// A connection limit: a positive number, or 0 / -1 for none (Mosquitto's convention).
    fn limit(&mut self, v: &Spanned<i64>, key: &str) -> Option<usize> {
        let n = *v.get_ref();
        if n >= -1 {
            return connection_limit(n);
        }
        let at = self.at(v.span().start);
        self.report.error(
            &at,
            key,
            format!("expected a number of connections, or -1 for no limit, got {n}"),
        );
        None
    }
}
