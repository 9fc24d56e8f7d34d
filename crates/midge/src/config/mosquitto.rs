//! Mosquitto 2.0's `mosquitto.conf`: `key value` lines, with Mosquitto's names, defaults and
//! scoping (the default listener, `listener` sections, `per_listener_settings`, `include_dir`).
//!
//! Mosquitto keeps some options per listener where Midge has one value for the whole broker
//! (`max_qos`, `max_topic_alias`, and with `per_listener_settings true` also
//! `allow_zero_length_clientid` and `auto_id_prefix`). Such a value is accepted when every
//! listener ends up with the same one, and is an error otherwise: Midge will not guess.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::mosquitto_keys::{classify, Unsupported, BRIDGE};
use super::toml::{MAX_PACKET, MAX_PAYLOAD};
use super::{
    bind_addresses, connection_limit, local_only_listeners, Config, Domain, ListenerConfig,
    Location, Report,
};

pub(super) fn parse(path: &Path, text: &str) -> (Option<Config>, Report) {
    let mut parser = Parser::new(path);
    parser.file(path, text, 0);
    parser.finish()
}

/// Which listener a listener option applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Before the first `listener` line of a file: Mosquitto's default listener, the one
    /// `port` and `bind_address` configure.
    Default,
    Listener(usize),
}

/// A listener as configured, before its addresses are resolved.
#[derive(Debug, Default)]
struct ListenerDef {
    /// Where it is defined (`None` for a default listener nothing defined).
    at: Option<Location>,
    port: Option<u16>,
    host: Option<String>,
    domain: Domain,
    max_connections: Option<usize>,
    allow_anonymous: Option<bool>,
    certfile: Option<PathBuf>,
    keyfile: Option<PathBuf>,
    cafile: Option<PathBuf>,
    capath: Option<PathBuf>,
    require_certificate: Option<bool>,
    use_identity_as_username: Option<bool>,
    tls_version: Option<midge_broker::TlsVersion>,
    ciphers: Option<String>,
    ciphers_tls13: Option<String>,
    /// Its own password and ACL files (`per_listener_settings true` with files that
    /// differ between listeners).
    security: Option<midge_broker::ListenerSecurity>,
}

/// A per-listener Mosquitto option that Midge applies to the whole broker.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shared {
    MaxQos(u8),
    MaxTopicAlias(u16),
    AllowZeroLengthClientid(bool),
    AutoIdPrefix(String),
    PasswordFile(Option<PathBuf>),
    AclFile(Option<PathBuf>),
}

impl Shared {
    fn key(&self) -> &'static str {
        match self {
            Shared::MaxQos(_) => "max_qos",
            Shared::MaxTopicAlias(_) => "max_topic_alias",
            Shared::AllowZeroLengthClientid(_) => "allow_zero_length_clientid",
            Shared::AutoIdPrefix(_) => "auto_id_prefix",
            Shared::PasswordFile(_) => "password_file",
            Shared::AclFile(_) => "acl_file",
        }
    }

    /// Mosquitto's default for a listener that does not set the option.
    fn mosquitto_default(&self) -> Shared {
        match self {
            Shared::MaxQos(_) => Shared::MaxQos(2),
            Shared::MaxTopicAlias(_) => Shared::MaxTopicAlias(10),
            Shared::AllowZeroLengthClientid(_) => Shared::AllowZeroLengthClientid(true),
            Shared::AutoIdPrefix(_) => Shared::AutoIdPrefix("auto-".to_string()),
            Shared::PasswordFile(_) => Shared::PasswordFile(None),
            Shared::AclFile(_) => Shared::AclFile(None),
        }
    }

    fn apply(self, config: &mut Config) {
        match self {
            Shared::MaxQos(v) => config.max_qos = v,
            Shared::MaxTopicAlias(v) => config.max_topic_alias = v,
            Shared::AllowZeroLengthClientid(v) => config.allow_zero_length_clientid = v,
            Shared::AutoIdPrefix(v) => config.auto_id_prefix = v,
            Shared::PasswordFile(v) => config.password_file = v,
            Shared::AclFile(v) => config.acl_file = v,
        }
    }

    fn describe(&self) -> String {
        match self {
            Shared::MaxQos(v) => v.to_string(),
            Shared::MaxTopicAlias(v) => v.to_string(),
            Shared::AllowZeroLengthClientid(v) => v.to_string(),
            Shared::AutoIdPrefix(v) => format!("'{v}'"),
            Shared::PasswordFile(v) | Shared::AclFile(v) => match v {
                Some(p) => format!("'{}'", p.display()),
                None => "none".to_string(),
            },
        }
    }
}

struct Parser {
    main: PathBuf,
    config: Config,
    report: Report,
    default: ListenerDef,
    listeners: Vec<ListenerDef>,
    scope: Scope,
    per_listener_settings: bool,
    /// A security option was seen (`per_listener_settings` must come before any).
    security_seen: bool,
    global_allow_anonymous: Option<bool>,
    shared: Vec<(Scope, Shared, Location)>,
    /// Listener options written in the default listener's scope, with their lines.
    default_scope_options: Vec<(String, Location)>,
    /// Inside a bridge's `connection` section (its options were reported with it).
    in_bridge: bool,
    /// `persistence true|false` (Mosquitto's default: false).
    persistence: bool,
    persistence_location: Option<PathBuf>,
}

impl Parser {
    fn new(main: &Path) -> Parser {
        Parser {
            main: main.to_path_buf(),
            persistence: false,
            persistence_location: None,
            config: Config::default(),
            report: Report::default(),
            default: ListenerDef::default(),
            listeners: Vec::new(),
            scope: Scope::Default,
            per_listener_settings: false,
            security_seen: false,
            global_allow_anonymous: None,
            shared: Vec::new(),
            default_scope_options: Vec::new(),
            in_bridge: false,
        }
    }

    /// Reads one file. As in Mosquitto, each file starts in the default listener's scope
    /// and outside any bridge.
    fn file(&mut self, path: &Path, text: &str, level: usize) {
        let saved = (self.scope, self.in_bridge);
        self.scope = Scope::Default;
        self.in_bridge = false;
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = Location {
                file: path.to_path_buf(),
                line: index + 1,
                column: None,
            };
            let (key, rest) = match line.split_once(char::is_whitespace) {
                Some((key, rest)) => (key, rest.trim()),
                None => (line, ""),
            };
            self.option(key, rest, &at, level);
        }
        (self.scope, self.in_bridge) = saved;
    }

    fn option(&mut self, key: &str, rest: &str, at: &Location, level: usize) {
        match key {
            "listener" => self.listener(rest, at),
            "port" => {
                if let Some(port) = self.port(key, rest, at) {
                    self.default.port = Some(port);
                    self.default.at.get_or_insert_with(|| at.clone());
                }
            }
            "bind_address" => {
                if let Some(host) = self.single(key, rest, at) {
                    self.default.host = Some(host.to_string());
                    self.default.at.get_or_insert_with(|| at.clone());
                }
            }
            "socket_domain" => self.socket_domain(rest, at),
            "protocol" => self.protocol(rest, at),
            "max_connections" => self.max_connections(rest, at),
            "certfile" | "keyfile" | "cafile" | "capath" => {
                if let Some(v) = self.single(key, rest, at) {
                    self.note_scope(key, at);
                    let path = Some(PathBuf::from(v));
                    let def = self.current();
                    match key {
                        "certfile" => def.certfile = path,
                        "keyfile" => def.keyfile = path,
                        "cafile" => def.cafile = path,
                        _ => def.capath = path,
                    }
                }
            }
            "require_certificate" | "use_identity_as_username" => {
                if let Some(v) = self.boolean(key, rest, at) {
                    self.note_scope(key, at);
                    let def = self.current();
                    if key == "require_certificate" {
                        def.require_certificate = Some(v);
                    } else {
                        def.use_identity_as_username = Some(v);
                    }
                }
            }
            "tls_version" => {
                if let Some(v) = self.single(key, rest, at) {
                    match super::tls_version(v) {
                        Ok(version) => {
                            self.note_scope(key, at);
                            self.current().tls_version = Some(version);
                        }
                        Err(message) => self.report.error(at, key, message),
                    }
                }
            }
            "ciphers" | "ciphers_tls1.3" => {
                if let Some(v) = self.single(key, rest, at) {
                    self.note_scope(key, at);
                    let list = Some(v.to_string());
                    if key == "ciphers" {
                        self.current().ciphers = list;
                    } else {
                        self.current().ciphers_tls13 = list;
                    }
                }
            }
            "allow_anonymous" => self.allow_anonymous(rest, at),
            "allow_zero_length_clientid" => {
                self.security_seen = true;
                if let Some(v) = self.boolean(key, rest, at) {
                    self.security_option(Shared::AllowZeroLengthClientid(v), at);
                }
            }
            "auto_id_prefix" => {
                self.security_seen = true;
                if rest.is_empty() {
                    self.report.error(at, key, "missing value");
                } else {
                    self.security_option(Shared::AutoIdPrefix(rest.to_string()), at);
                }
            }
            "persistence" => {
                if let Some(v) = self.boolean(key, rest, at) {
                    self.persistence = v;
                }
            }
            "persistence_location" => {
                if let Some(v) = self.single(key, rest, at) {
                    self.persistence_location = Some(PathBuf::from(v));
                }
            }
            "password_file" | "acl_file" => {
                self.security_seen = true;
                if let Some(v) = self.single(key, rest, at) {
                    let path = Some(PathBuf::from(v));
                    let value = if key == "password_file" {
                        Shared::PasswordFile(path)
                    } else {
                        Shared::AclFile(path)
                    };
                    self.security_option(value, at);
                }
            }
            "max_qos" => {
                if let Some(v) = self.number::<u8>(key, rest, at, 0, 2) {
                    self.listener_shared(Shared::MaxQos(v), at);
                }
            }
            "max_topic_alias" => {
                if let Some(v) = self.number::<u16>(key, rest, at, 0, 65535) {
                    self.listener_shared(Shared::MaxTopicAlias(v), at);
                }
            }
            "max_keepalive" => {
                let v = self.number(key, rest, at, 0, 65535);
                set(&mut self.config.max_keepalive, v)
            }
            "max_inflight_messages" => {
                let v = self.number(key, rest, at, 0, 65535);
                set(&mut self.config.max_inflight_messages, v)
            }
            "max_queued_messages" => {
                let v = self.number(key, rest, at, 0, i64::MAX);
                set(&mut self.config.max_queued_messages, v)
            }
            "max_queued_bytes" => {
                let v = self.number(key, rest, at, 0, i64::MAX);
                set(&mut self.config.max_queued_bytes, v)
            }
            // Midge's own keys, in both syntaxes (docs/configuration.md).
            "slow_consumer_timeout" => {
                if let Some(v) = self.number::<u64>(key, rest, at, 0, 86_400) {
                    self.config.slow_consumer_timeout = Duration::from_secs(v);
                }
            }
            "publisher_backpressure" => {
                let v = self.boolean(key, rest, at);
                set(&mut self.config.publisher_backpressure, v)
            }
            "publisher_backpressure_max_ms" => {
                if let Some(v) = self.number::<u64>(key, rest, at, 1, 1000) {
                    self.config.publisher_backpressure_max = Duration::from_millis(v);
                }
            }
            "shutdown_timeout" => {
                if let Some(v) = self.number::<u64>(key, rest, at, 1, 3600) {
                    self.config.shutdown_timeout = Duration::from_secs(v);
                }
            }
            "message_size_limit" => {
                let v = self.number(key, rest, at, 0, MAX_PAYLOAD);
                set(&mut self.config.message_size_limit, v)
            }
            "max_packet_size" => self.max_packet_size(rest, at),
            "queue_qos0_messages" => {
                let v = self.boolean(key, rest, at);
                set(&mut self.config.queue_qos0_messages, v)
            }
            "retain_available" => {
                let v = self.boolean(key, rest, at);
                set(&mut self.config.retain_available, v)
            }
            "sys_interval" => {
                if let Some(v) = self.number::<u64>(key, rest, at, 0, 65535) {
                    self.config.sys_interval = Duration::from_secs(v);
                }
            }
            "persistent_client_expiration" => {
                if let Some(v) = self.single(key, rest, at) {
                    match parse_duration(v) {
                        Ok(d) => self.config.persistent_client_expiration = Some(d),
                        Err(message) => self.report.error(at, key, message),
                    }
                }
            }
            "per_listener_settings" => {
                if let Some(v) = self.boolean(key, rest, at) {
                    if v && self.security_seen {
                        self.report.error(
                            at,
                            key,
                            "must be set before any other security option (as in Mosquitto)",
                        );
                    }
                    self.per_listener_settings = v;
                }
            }
            "include_dir" => self.include_dir(rest, at, level),
            "connection" => {
                self.report.error(at, key, BRIDGE);
                self.in_bridge = true;
            }
            _ => self.unsupported(key, rest, at),
        }
    }

    fn unsupported(&mut self, key: &str, rest: &str, at: &Location) {
        match classify(key) {
            Some(Unsupported::Warn(why)) => self.report.warn(at, key, format!("ignored: {why}")),
            Some(Unsupported::Error(why)) => self.report.error(at, key, why),
            Some(Unsupported::ErrorUnless(accepted, why)) => {
                if let Some(value) = self.single(key, rest, at) {
                    if value != accepted {
                        let message = format!("{why} (only `{key} {accepted}` is accepted)");
                        self.report.error(at, key, message);
                    }
                }
            }
            // A bridge's options are covered by the error at its `connection` line.
            Some(Unsupported::Bridge) if self.in_bridge => {}
            Some(Unsupported::Bridge) => self.report.error(
                at,
                key,
                "is a bridge option, outside any `connection` section (bridges are not supported yet)",
            ),
            None => self
                .report
                .error(at, key, "unknown option (not a Mosquitto 2.0 mosquitto.conf option)"),
        }
    }

    // ----- listeners -----

    fn listener(&mut self, rest: &str, at: &Location) {
        let words = words(rest);
        let mut def = ListenerDef {
            at: Some(at.clone()),
            ..ListenerDef::default()
        };
        match words.as_slice() {
            [port] | [port, _] => {
                def.port = self.port("listener", port, at);
                def.host = words.get(1).map(|h| h.to_string());
            }
            [] => self.report.error(at, "listener", "missing port"),
            _ => self.report.error(
                at,
                "listener",
                format!("expected `listener PORT [ADDRESS]`, got '{rest}'"),
            ),
        }
        // Even a listener with a bad port opens a scope, so its options are not taken for
        // the previous listener's.
        self.listeners.push(def);
        self.scope = Scope::Listener(self.listeners.len() - 1);
    }

    fn port(&mut self, key: &str, rest: &str, at: &Location) -> Option<u16> {
        let value = self.single(key, rest, at)?;
        match value.parse::<u16>() {
            Ok(0) => {
                self.report.error(
                    at,
                    key,
                    "port 0 means a Unix socket in Mosquitto, which Midge does not support yet",
                );
                None
            }
            Ok(port) => Some(port),
            Err(_) => {
                self.report.error(
                    at,
                    key,
                    format!("expected a port from 1 to 65535, got '{value}'"),
                );
                None
            }
        }
    }

    fn current(&mut self) -> &mut ListenerDef {
        match self.scope {
            Scope::Default => &mut self.default,
            Scope::Listener(i) => &mut self.listeners[i],
        }
    }

    /// Notes a listener option written before any `listener` line.
    fn note_scope(&mut self, key: &str, at: &Location) {
        if self.scope == Scope::Default {
            self.default_scope_options
                .push((key.to_string(), at.clone()));
        }
    }

    fn socket_domain(&mut self, rest: &str, at: &Location) {
        let domain = match self.single("socket_domain", rest, at) {
            Some("ipv4") => Domain::V4,
            Some("ipv6") => Domain::V6,
            Some(other) => {
                let message = format!("expected ipv4 or ipv6, got '{other}'");
                return self.report.error(at, "socket_domain", message);
            }
            None => return,
        };
        self.note_scope("socket_domain", at);
        self.current().domain = domain;
    }

    fn protocol(&mut self, rest: &str, at: &Location) {
        match self.single("protocol", rest, at) {
            Some("mqtt") | None => {}
            Some("websockets") => self.report.error(
                at,
                "protocol",
                "websockets listeners are not supported yet; this listener would not serve \
                 the clients it is configured for",
            ),
            Some(other) => {
                let message = format!("expected mqtt or websockets, got '{other}'");
                self.report.error(at, "protocol", message)
            }
        }
    }

    fn max_connections(&mut self, rest: &str, at: &Location) {
        let Some(value) = self.single("max_connections", rest, at) else {
            return;
        };
        match value.parse::<i64>() {
            Ok(n) if n >= -1 => {
                self.note_scope("max_connections", at);
                self.current().max_connections = connection_limit(n);
            }
            _ => self.report.error(
                at,
                "max_connections",
                format!("expected a number of connections, or -1 for no limit, got '{value}'"),
            ),
        }
    }

    fn allow_anonymous(&mut self, rest: &str, at: &Location) {
        self.security_seen = true;
        let Some(v) = self.boolean("allow_anonymous", rest, at) else {
            return;
        };
        if self.per_listener_settings {
            self.note_scope("allow_anonymous", at);
            self.current().allow_anonymous = Some(v);
        } else {
            self.global_allow_anonymous = Some(v);
        }
    }

    /// An option that is global, or per listener with `per_listener_settings true`.
    fn security_option(&mut self, value: Shared, at: &Location) {
        if self.per_listener_settings {
            self.listener_shared(value, at);
        } else {
            value.apply(&mut self.config);
        }
    }

    fn listener_shared(&mut self, value: Shared, at: &Location) {
        self.note_scope(value.key(), at);
        self.shared.push((self.scope, value, at.clone()));
    }

    fn max_packet_size(&mut self, rest: &str, at: &Location) {
        let key = "max_packet_size";
        let Some(value) = self.single(key, rest, at) else {
            return;
        };
        match value.parse::<u32>() {
            Ok(n) if n == 0 || (20..=MAX_PACKET).contains(&i64::from(n)) => {
                self.config.max_packet_size = n
            }
            _ => self.report.error(
                at,
                key,
                format!("expected 0 (no limit) or a number from 20 to {MAX_PACKET}, got '{value}'"),
            ),
        }
    }

    // ----- include_dir -----

    fn include_dir(&mut self, rest: &str, at: &Location, level: usize) {
        let key = "include_dir";
        if level > 0 {
            return self.report.error(
                at,
                key,
                "is only read from the main configuration file (as in Mosquitto)",
            );
        }
        if rest.is_empty() {
            return self.report.error(at, key, "missing directory");
        }
        let dir = self
            .main
            .parent()
            .map_or_else(|| PathBuf::from(rest), |base| base.join(rest));
        let mut files = match conf_files(&dir) {
            Ok(files) => files,
            Err(e) => {
                let message = format!("cannot read directory {}: {e}", dir.display());
                return self.report.error(at, key, message);
            }
        };
        files.sort_by(|a, b| mosquitto_order(&file_name(a), &file_name(b)));
        let main = std::fs::canonicalize(&self.main).ok();
        for file in files {
            if main.is_some() && std::fs::canonicalize(&file).ok() == main {
                let message = "the directory must not contain the main configuration file";
                self.report.error(at, key, message);
                continue;
            }
            match std::fs::read(&file) {
                Ok(bytes) => self.file(&file, &String::from_utf8_lossy(&bytes), level + 1),
                Err(e) => {
                    let message = format!("cannot read {}: {e}", file.display());
                    self.report.error(at, key, message)
                }
            }
        }
    }

    // ----- values -----

    /// The one value of an option; a trailing `# comment` is allowed.
    fn single<'v>(&mut self, key: &str, rest: &'v str, at: &Location) -> Option<&'v str> {
        match words(rest).as_slice() {
            [value] => Some(value),
            [] => {
                self.report.error(at, key, "missing value");
                None
            }
            [_, extra, ..] => {
                let message = format!("expected one value, got '{rest}' (extra '{extra}')");
                self.report.error(at, key, message);
                None
            }
        }
    }

    fn number<T: TryFrom<i64>>(
        &mut self,
        key: &str,
        rest: &str,
        at: &Location,
        min: i64,
        max: i64,
    ) -> Option<T> {
        let value = self.single(key, rest, at)?;
        let parsed = value
            .parse::<i64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .and_then(|n| T::try_from(n).ok());
        if parsed.is_none() {
            let range = if max == i64::MAX {
                format!("expected a number from {min} up")
            } else {
                format!("expected a number from {min} to {max}")
            };
            self.report
                .error(at, key, format!("{range}, got '{value}'"));
        }
        parsed
    }

    fn boolean(&mut self, key: &str, rest: &str, at: &Location) -> Option<bool> {
        match self.single(key, rest, at)? {
            "true" => Some(true),
            "false" => Some(false),
            other => {
                self.report
                    .error(at, key, format!("expected true or false, got '{other}'"));
                None
            }
        }
    }

    // ----- the end of the file -----

    fn finish(mut self) -> (Option<Config>, Report) {
        let default_defined = self.default.port.is_some() || self.default.host.is_some();
        let local_only = self.listeners.is_empty() && !default_defined;
        if !local_only && !default_defined {
            for (key, at) in std::mem::take(&mut self.default_scope_options) {
                self.report.error(
                    &at,
                    &key,
                    "is a listener option before any `listener` line, so it belongs to the \
                     default listener (`port`/`bind_address`), which this file does not define; \
                     move it below the `listener` line it is meant for",
                );
            }
        }
        self.apply_shared(local_only, default_defined);
        if self.persistence {
            let base = self
                .persistence_location
                .clone()
                .unwrap_or_else(|| PathBuf::from("."));
            self.config.persistence = Some(midge_broker::Persistence {
                data_dir: base.join("midge-data"),
                durability: midge_broker::Durability::default(),
            });
        }
        self.config.listeners = if local_only {
            self.local_only_listeners()
        } else {
            self.configured_listeners(default_defined)
        };
        (Some(self.config), self.report)
    }

    /// Mosquitto 2.0 allows anonymous clients in local only mode; Midge does too, unless
    /// the file explicitly says `allow_anonymous false`, which Mosquitto 2.0 ignores there.
    fn local_only_listeners(&self) -> Vec<ListenerConfig> {
        let explicit = if self.per_listener_settings {
            self.default.allow_anonymous
        } else {
            self.global_allow_anonymous
        };
        local_only_listeners(
            explicit.unwrap_or(true),
            self.default.max_connections,
            self.default.domain,
        )
    }

    fn configured_listeners(&mut self, default_defined: bool) -> Vec<ListenerConfig> {
        let mut defs = std::mem::take(&mut self.listeners);
        if default_defined {
            // Mosquitto starts the default listener after the `listener` ones, on 1883
            // unless `port` says otherwise.
            let mut default = std::mem::take(&mut self.default);
            default.port = Some(default.port.unwrap_or(1883));
            defs.push(default);
        }
        let mut out: Vec<(ListenerConfig, Location)> = Vec::new();
        for def in defs {
            let Some(at) = def.at.clone() else { continue };
            // A listener without a port had its error reported.
            let Some(port) = def.port else { continue };
            let addrs = match bind_addresses(def.host.as_deref(), port, def.domain) {
                Ok(addrs) => addrs,
                Err(message) => {
                    self.report.error(&at, "listener", message);
                    continue;
                }
            };
            let allow_anonymous = if self.per_listener_settings {
                def.allow_anonymous
            } else {
                self.global_allow_anonymous
            };
            let tls = match listener_tls(&def) {
                Ok(tls) => tls,
                Err(message) => {
                    self.report.error(&at, "listener", message);
                    continue;
                }
            };
            for bind in addrs {
                if let Some((_, first)) = out.iter().find(|(l, _)| l.bind == bind) {
                    let message = format!("{bind} is already bound by the listener at {first}");
                    self.report.error(&at, "listener", message);
                    continue;
                }
                let listener = ListenerConfig {
                    bind,
                    max_connections: def.max_connections,
                    // Mosquitto 2: anonymous access is off unless allowed explicitly.
                    allow_anonymous: allow_anonymous.unwrap_or(false),
                    tls: tls.clone(),
                    security: def.security.clone(),
                };
                out.push((listener, at.clone()));
            }
        }
        out.into_iter().map(|(l, _)| l).collect()
    }

    /// Applies the per-listener options Midge keeps once for the broker, if every listener
    /// ends up with the same value.
    fn apply_shared(&mut self, local_only: bool, default_defined: bool) {
        let mut scopes: Vec<Scope> = (0..self.listeners.len()).map(Scope::Listener).collect();
        if local_only || default_defined {
            scopes.push(Scope::Default);
        }
        let mut settings = std::mem::take(&mut self.shared);
        self.per_listener_files(&scopes, &mut settings);
        let mut keys: Vec<&'static str> = settings.iter().map(|(_, v, _)| v.key()).collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            let of_key: Vec<&(Scope, Shared, Location)> =
                settings.iter().filter(|(_, v, _)| v.key() == key).collect();
            let Some((_, sample, _)) = of_key.first() else {
                continue;
            };
            // The value each listener ends up with: its last setting, or Mosquitto's default.
            let effective: Vec<(Scope, Shared)> = scopes
                .iter()
                .map(|scope| {
                    let value = of_key
                        .iter()
                        .rev()
                        .find(|(s, _, _)| s == scope)
                        .map_or_else(|| sample.mosquitto_default(), |(_, v, _)| v.clone());
                    (*scope, value)
                })
                .collect();
            let Some((_, first)) = effective.first() else {
                continue;
            };
            if effective.iter().all(|(_, v)| v == first) {
                first.clone().apply(&mut self.config);
                continue;
            }
            let values: Vec<String> = effective
                .iter()
                .map(|(scope, v)| format!("{} on {}", v.describe(), self.scope_name(*scope)))
                .collect();
            for (_, _, at) in &of_key {
                self.report.error(
                    at,
                    key,
                    format!(
                        "Midge applies {key} to every listener, but the listeners would get \
                         different values ({}); set the same value on every listener",
                        values.join(", ")
                    ),
                );
            }
        }
    }

    /// `password_file` and `acl_file` under `per_listener_settings true`: when the
    /// listeners end up with different files, each listener gets its own pair (and the
    /// settings are taken out of `settings`); otherwise they stay, to apply broker-wide.
    fn per_listener_files(
        &mut self,
        scopes: &[Scope],
        settings: &mut Vec<(Scope, Shared, Location)>,
    ) {
        let effective = |scope: &Scope, key: &str| -> Option<PathBuf> {
            settings
                .iter()
                .rev()
                .find(|(s, v, _)| s == scope && v.key() == key)
                .and_then(|(_, v, _)| match v {
                    Shared::PasswordFile(p) | Shared::AclFile(p) => p.clone(),
                    _ => None,
                })
        };
        let files: Vec<(Scope, midge_broker::ListenerSecurity)> = scopes
            .iter()
            .map(|scope| {
                let files = midge_broker::ListenerSecurity {
                    password_file: effective(scope, "password_file"),
                    acl_file: effective(scope, "acl_file"),
                };
                (*scope, files)
            })
            .collect();
        let Some((_, first)) = files.first() else {
            return;
        };
        if files.iter().all(|(_, f)| f == first) {
            return;
        }
        settings.retain(|(_, v, _)| !matches!(v, Shared::PasswordFile(_) | Shared::AclFile(_)));
        for (scope, f) in files {
            let def = match scope {
                Scope::Default => &mut self.default,
                Scope::Listener(i) => match self.listeners.get_mut(i) {
                    Some(def) => def,
                    None => continue,
                },
            };
            def.security = Some(f);
        }
    }

    fn scope_name(&self, scope: Scope) -> String {
        let def = match scope {
            Scope::Default => &self.default,
            Scope::Listener(i) => &self.listeners[i],
        };
        match (&def.at, scope) {
            (Some(at), Scope::Listener(_)) => format!("the listener at {at}"),
            (Some(at), Scope::Default) => format!("the default listener at {at}"),
            (None, _) => "the local only listeners".to_string(),
        }
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

/// The words of a value, up to a `#` comment.
fn words(rest: &str) -> Vec<&str> {
    rest.split_whitespace()
        .take_while(|w| !w.starts_with('#'))
        .collect()
}

/// Mosquitto's `persistent_client_expiration` syntax: a positive whole number followed by
/// `h` (hours), `d` (days), `w` (weeks), `m` (months of 30 days) or `y` (years of 365 days).
/// `m` is months, not minutes, as in Mosquitto.
pub(super) fn parse_duration(value: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "expected a positive number followed by h (hours), d (days), w (weeks), \
             m (months of 30 days) or y (years of 365 days), got '{value}'"
        )
    };
    let unit = value.chars().last().ok_or_else(invalid)?;
    let seconds: u64 = match unit {
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        'm' => 30 * 86_400,
        'y' => 365 * 86_400,
        _ => return Err(invalid()),
    };
    let count: u64 = value
        .get(..value.len() - 1)
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .ok_or_else(invalid)?;
    count
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(invalid)
}

/// The `*.conf` files of `dir`.
fn conf_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_conf = path.extension().is_some_and(|e| e == "conf");
        if is_conf && path.is_file() {
            files.push(path);
        }
    }
    Ok(files)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The order Mosquitto loads `include_dir` files in: letter by letter ignoring case, and
/// for the same letter upper case first (`00.conf`, `A.conf`, `a.conf`, `B.conf`).
pub(super) fn mosquitto_order(a: &str, b: &str) -> Ordering {
    let key =
        |s: &str| -> Vec<(u8, u8)> { s.bytes().map(|c| (c.to_ascii_uppercase(), c)).collect() };
    key(a).cmp(&key(b))
}

/// A listener's TLS settings: `certfile` and `keyfile` turn TLS on; the other TLS options
/// need them (Mosquitto refuses such a listener too).
fn listener_tls(def: &ListenerDef) -> Result<Option<midge_broker::TlsSettings>, String> {
    match (&def.certfile, &def.keyfile) {
        (Some(cert), Some(key)) => Ok(Some(midge_broker::TlsSettings {
            certfile: cert.clone(),
            keyfile: key.clone(),
            cafile: def.cafile.clone(),
            capath: def.capath.clone(),
            require_certificate: def.require_certificate.unwrap_or(false),
            use_identity_as_username: def.use_identity_as_username.unwrap_or(false),
            min_version: def.tls_version.unwrap_or_default(),
            ciphers: def.ciphers.clone(),
            ciphers_tls13: def.ciphers_tls13.clone(),
        })),
        (None, None) => {
            let tls_only = def.cafile.is_some()
                || def.capath.is_some()
                || def.require_certificate == Some(true)
                || def.use_identity_as_username == Some(true)
                || def.tls_version.is_some();
            if tls_only {
                Err("TLS options (cafile, capath, require_certificate, use_identity_as_username, tls_version) need certfile and keyfile".into())
            } else {
                Ok(None)
            }
        }
        _ => Err("certfile and keyfile go together".into()),
    }
}
