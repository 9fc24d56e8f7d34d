//! Loading the broker's configuration file: Midge's own TOML or Mosquitto's `mosquitto.conf`.
//!
//! Both formats produce the same [`Config`]. The format is detected from the file's content
//! (see [`detect`]), so `midge -c /etc/mosquitto/mosquitto.conf` works unchanged. Nothing in a
//! file is silently ignored: an option Midge does not support yet is either a warning (it
//! only tunes or logs) or an error (ignoring it would leave the broker less secure or less
//! durable than configured). The full reference is `docs/configuration.md`.

mod mosquitto;
mod mosquitto_keys;
mod toml;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

pub use midge_broker::{Config, ListenerConfig};

/// Which syntax a configuration file was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Midge's own TOML format.
    Toml,
    /// Mosquitto 2.0's `mosquitto.conf` format (`key value` lines).
    Mosquitto,
}

/// A configuration that loaded, with the warnings to log before starting.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// One line each, `file:line: key: what was ignored and why`.
    pub warnings: Vec<String>,
    /// Read by the binary to say which syntax it loaded.
    #[cfg_attr(not(test), allow(dead_code))]
    pub format: Format,
}

/// One thing wrong (or ignored) in a configuration file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, when known (TOML errors).
    pub column: Option<usize>,
    /// The option's name (`listener.port` for a key inside a `[[listener]]` table).
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)?;
        if let Some(column) = self.column {
            write!(f, ":{column}")?;
        }
        write!(f, ": {}: {}", self.key, self.message)
    }
}

/// Why a configuration did not load.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every error found in the file (not only the first), and the warnings found with them.
    #[error("{}", join_lines(problems))]
    Invalid {
        problems: Vec<Problem>,
        warnings: Vec<String>,
    },
}

fn join_lines(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

/// Reads, detects and parses the configuration file at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        // Mosquitto reads bytes; a Latin-1 comment must not stop a mosquitto.conf loading.
        // TOML must be UTF-8, and the TOML parser reports where it is not.
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    parse_str(path, &text)
}

/// Parses `text` as the content of the file at `path` (the path names the file in messages
/// and anchors a relative `include_dir`).
pub fn parse_str(path: &Path, text: &str) -> Result<Loaded, ConfigError> {
    let format = detect(path, text);
    let (config, report) = match format {
        Format::Toml => toml::parse(path, text),
        Format::Mosquitto => mosquitto::parse(path, text),
    };
    let warnings = report.warnings.iter().map(Problem::to_string).collect();
    match config {
        Some(config) if report.errors.is_empty() => Ok(Loaded {
            config,
            warnings,
            format,
        }),
        _ => Err(ConfigError::Invalid {
            problems: report.errors,
            warnings,
        }),
    }
}

/// Decides which syntax `text` is written in.
///
/// 1. A file named `*.toml` is TOML.
/// 2. A file that parses as a TOML document with at least one key or table is TOML (a
///    `mosquitto.conf` line `key value` is never valid TOML, so no mosquitto.conf passes).
/// 3. Otherwise each line that is not blank or a `#` comment is looked at: a line starting
///    with `[` or shaped `key = ...` counts for TOML, any other for Mosquitto. More TOML
///    lines than Mosquitto lines means a TOML file with a syntax error (its error is
///    reported); otherwise, including an empty file, it is a `mosquitto.conf`.
pub fn detect(path: &Path, text: &str) -> Format {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
    {
        return Format::Toml;
    }
    let (toml_lines, mosquitto_lines) = count_line_shapes(text);
    if toml_lines > 0 && ::toml::from_str::<::toml::Table>(text).is_ok() {
        return Format::Toml;
    }
    if toml_lines > mosquitto_lines {
        Format::Toml
    } else {
        Format::Mosquitto
    }
}

fn count_line_shapes(text: &str) -> (usize, usize) {
    let mut toml_lines = 0;
    let mut mosquitto_lines = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if looks_like_toml(line) {
            toml_lines += 1;
        } else {
            mosquitto_lines += 1;
        }
    }
    (toml_lines, mosquitto_lines)
}

fn looks_like_toml(line: &str) -> bool {
    if line.starts_with('[') {
        return true;
    }
    let Some((key, _)) = line.split_once('=') else {
        return false;
    };
    let key = key.trim_end();
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | '\''))
}

/// What a parser found besides the configuration.
#[derive(Debug, Default)]
struct Report {
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Report {
    fn error(&mut self, at: &Location, key: &str, message: impl Into<String>) {
        self.errors.push(at.problem(key, message.into()));
    }

    fn warn(&mut self, at: &Location, key: &str, message: impl Into<String>) {
        self.warnings.push(at.problem(key, message.into()));
    }
}

/// A line in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    file: PathBuf,
    line: usize,
    column: Option<usize>,
}

impl Location {
    fn problem(&self, key: &str, message: String) -> Problem {
        Problem {
            file: self.file.clone(),
            line: self.line,
            column: self.column,
            key: key.to_string(),
            message,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Which address families a listener binds (Mosquitto's `socket_domain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Domain {
    #[default]
    Both,
    V4,
    V6,
}

impl Domain {
    fn admits(self, addr: &SocketAddr) -> bool {
        match self {
            Domain::Both => true,
            Domain::V4 => addr.is_ipv4(),
            Domain::V6 => addr.is_ipv6(),
        }
    }
}

/// The socket addresses a listener binds for `host` (`None` = every interface).
///
/// Like Mosquitto, "every interface" is the IPv4 and the IPv6 wildcard (the IPv6 socket is
/// meant IPv6-only, as Mosquitto sets `IPV6_V6ONLY`), and a host name binds every address
/// it resolves to.
fn bind_addresses(
    host: Option<&str>,
    port: u16,
    domain: Domain,
) -> Result<Vec<SocketAddr>, String> {
    let all: Vec<SocketAddr> = match host {
        None => vec![
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
        ],
        Some(host) => {
            let bare = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            match bare.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => resolve(bare, port)?,
            }
        }
    };
    let addrs: Vec<SocketAddr> = all.into_iter().filter(|a| domain.admits(a)).collect();
    if addrs.is_empty() {
        return Err(format!(
            "'{}' has no address in the chosen socket_domain",
            host.unwrap_or("*")
        ));
    }
    Ok(addrs)
}

fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let resolved = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{host}': {e}"))?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for addr in resolved {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(format!("'{host}' resolves to no address"));
    }
    Ok(addrs)
}

/// Mosquitto 2's "local only mode": with no listener configured, listen on the loopback
/// interfaces only.
fn local_only_listeners(
    allow_anonymous: bool,
    max_connections: Option<usize>,
    domain: Domain,
) -> Vec<ListenerConfig> {
    [
        SocketAddr::from((Ipv4Addr::LOCALHOST, 1883)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, 1883)),
    ]
    .into_iter()
    .filter(|a| domain.admits(a))
    .map(|bind| ListenerConfig {
        bind,
        max_connections,
        allow_anonymous,
        tls: None,
        security: None,
    })
    .collect()
}

/// Mosquitto's convention for connection limits: zero or -1 mean no limit.
fn connection_limit(n: i64) -> Option<usize> {
    if n <= 0 {
        None
    } else {
        usize::try_from(n).ok()
    }
}

/// Mosquitto's `tls_version` values Midge can honour (rustls offers TLS 1.2 and 1.3).
pub(crate) fn tls_version(value: &str) -> Result<midge_broker::TlsVersion, String> {
    match value {
        "tlsv1.2" => Ok(midge_broker::TlsVersion::Tls12),
        "tlsv1.3" => Ok(midge_broker::TlsVersion::Tls13),
        "tlsv1.1" | "tlsv1" => Err(format!(
            "'{value}' is not supported: Midge accepts TLS 1.2 and 1.3 only"
        )),
        other => Err(format!("expected tlsv1.2 or tlsv1.3, got '{other}'")),
    }
}
