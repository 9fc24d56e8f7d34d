//! The command line of `midge bench`: flags shared by every subcommand and those of each.
//!
//! `-h` is the host, as in Mosquitto's tools and emqtt-bench, so help is `--help` only.

use anyhow::{bail, Context};
use clap::{value_parser, ArgAction, Args, Parser, Subcommand};
use std::net::{IpAddr, Ipv4Addr};

/// MQTT load generator: connections, publishers, subscribers, end-to-end latency.
#[derive(Debug, Parser)]
#[command(
    name = "midge bench",
    disable_help_flag = true,
    disable_help_subcommand = true,
    after_help = "Run `midge bench <COMMAND> --help` for the flags of each command."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open connections at a rate and hold them; report connect rate, failures and
    /// (with --broker-pid) the broker's memory per connection.
    #[command(disable_help_flag = true)]
    Conn(ConnArgs),
    /// Publishers: QoS 0/1/2, at a rate or as fast as flow control allows.
    #[command(disable_help_flag = true)]
    Pub(PubArgs),
    /// Subscribers: receive rate and end-to-end latency from the publishers' stamps.
    #[command(disable_help_flag = true)]
    Sub(SubArgs),
    /// Subscribers then publishers in one process, with exact sent/expected/received
    /// counts and latency; stops by itself after --count or --duration.
    #[command(disable_help_flag = true)]
    Pubsub(PubSubArgs),
}

/// Flags every subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Broker host.
    #[arg(short = 'h', long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(short = 'p', long, default_value_t = 1883)]
    pub port: u16,
    /// MQTT protocol level: 3 (3.1), 4 (3.1.1) or 5 (5.0).
    #[arg(short = 'V', long = "protocol-version", default_value_t = 4,
          value_parser = value_parser!(u8).range(3..=5))]
    pub protocol: u8,
    /// Keep-alive in seconds (0: none). Idle connections ping at half of it.
    #[arg(short = 'k', long, default_value_t = 60)]
    pub keepalive: u16,
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    #[arg(short = 'P', long)]
    pub password: Option<String>,
    /// Local source addresses to spread connections over (round robin), e.g.
    /// `127.0.0.1-127.0.0.20,127.0.1.1` or `127.0.0.1-20`. Each address has its own
    /// ~28,000 ephemeral ports towards one broker address.
    #[arg(long, value_name = "ADDRS")]
    pub ifaddr: Option<String>,
    /// New connections per second (0: as fast as --connect-concurrency allows).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Connection handshakes in progress at once.
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,
    /// Seconds to wait for TCP connect plus CONNACK (and the TLS handshake with --cafile).
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Connect over TLS, trusting the CA certificates in this PEM file (as mosquitto_pub's
    /// `--cafile`).
    #[arg(long, value_name = "FILE")]
    pub cafile: Option<std::path::PathBuf>,
    /// With --cafile: accept a server certificate whose name does not match the host (the
    /// chain is still checked).
    #[arg(long, requires = "cafile")]
    pub insecure: bool,
    /// Client identifier prefix (default `mb<pid>`); identifiers are
    /// `<prefix><c|p|s><index>`.
    #[arg(long)]
    pub id_prefix: Option<String>,
    /// First client index (for `%i` and identifiers): give each process its own range
    /// when several processes share a load.
    #[arg(long, default_value_t = 0)]
    pub start_index: u32,
    /// Give up when nothing at all (no message sent, acknowledged or received) happened for
    /// this many seconds while publishers still wait: reported as a stall.
    #[arg(long, default_value_t = 10.0)]
    pub stall_timeout: f64,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub no_progress: bool,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
}

/// What publishers send and when they stop.
#[derive(Debug, Clone, Args)]
pub struct MessageArgs {
    /// QoS of PUBLISH (and of SUBSCRIBE in pubsub).
    #[arg(short = 'q', long, default_value_t = 0, value_parser = value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload bytes; 16 or more carry the stamp used for latency and loss checks.
    #[arg(short = 's', long, default_value_t = 256)]
    pub size: usize,
    /// Messages per second per publisher (default: as fast as flow control allows).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Messages per publisher.
    #[arg(long)]
    pub count: Option<u64>,
    /// Seconds to publish.
    #[arg(long)]
    pub duration: Option<f64>,
    /// QoS 1/2 messages in flight per publisher (also capped by the broker's Receive
    /// Maximum in 5.0).
    #[arg(long, default_value_t = 20)]
    pub inflight: u16,
    /// Seconds publishers may still spend writing what they produced (and awaiting its
    /// acknowledgements) after --duration; then they are cut off and the unwritten messages
    /// are not counted as sent.
    #[arg(long, default_value_t = 5.0)]
    pub grace: f64,
}

#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    #[command(flatten)]
    pub common: Common,
    /// Number of connections.
    #[arg(short = 'c', long, default_value_t = 1)]
    pub clients: u32,
    /// Seconds to hold the connections once all are open (default: until Ctrl-C).
    #[arg(long)]
    pub hold: Option<f64>,
    /// The broker's process id on this machine: report its RSS before and after.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Load processes to spread the connections over (0: as many as this process's
    /// open-files limit calls for, usually 1). Each gets its share of `-c`, its own index
    /// range and, towards a loopback broker past ~28,000 connections with no --ifaddr, its
    /// own source address; the summary adds them up.
    #[arg(long, default_value_t = 0)]
    pub processes: u32,
    /// Internal (one process of a split load): hold until stdin closes.
    #[arg(long, hide = true)]
    pub until_stdin_closes: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PubArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub message: MessageArgs,
    /// Number of publishers.
    #[arg(short = 'c', long, default_value_t = 1)]
    pub clients: u32,
    /// Topic; `%i` is the publisher's index.
    #[arg(short = 't', long, default_value = "bench/%i")]
    pub topic: String,
}

#[derive(Debug, Clone, Args)]
pub struct SubArgs {
    #[command(flatten)]
    pub common: Common,
    /// Number of subscribers.
    #[arg(short = 'c', long, default_value_t = 1)]
    pub clients: u32,
    /// Topic filter; `%i` is the subscriber's index.
    #[arg(short = 't', long, default_value = "bench/#")]
    pub topic: String,
    /// Subscription QoS.
    #[arg(short = 'q', long, default_value_t = 0, value_parser = value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Stop after this many messages received in total.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds (counted from when all are subscribed).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Subscribers keep a persistent session: Clean Start 0 (3.1.1: clean session 0), in
    /// 5.0 with this Session Expiry Interval in seconds (3.1.1 sessions do not expire).
    /// With persistence on, the broker stores their QoS 1/2 messages until acknowledged.
    #[arg(long, value_name = "SECS")]
    pub session_expiry: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct PubSubArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub message: MessageArgs,
    /// Number of publishers.
    #[arg(long, default_value_t = 1)]
    pub pubs: u32,
    /// Number of subscribers.
    #[arg(long, default_value_t = 1)]
    pub subs: u32,
    /// Publishers' topic; `%i` is the publisher's index.
    #[arg(long, default_value = "bench/%i")]
    pub pub_topic: String,
    /// Subscribers' filter; `%i` is the subscriber's index.
    #[arg(long, default_value = "bench/#")]
    pub sub_topic: String,
    /// After the publishers finish, stop once every expected message has arrived or none
    /// has for this many seconds.
    #[arg(long, default_value_t = 2.0)]
    pub drain: f64,
    /// ... but wait at most this many seconds after the publishers finish: a broker with a
    /// deep queue would otherwise stretch the run; what has not arrived by then is lost.
    #[arg(long, default_value_t = 10.0)]
    pub drain_max: f64,
    /// Subscribers keep a persistent session: Clean Start 0 (3.1.1: clean session 0), in
    /// 5.0 with this Session Expiry Interval in seconds (3.1.1 sessions do not expire).
    /// With persistence on, the broker stores their QoS 1/2 messages until acknowledged.
    #[arg(long, value_name = "SECS")]
    pub session_expiry: Option<u32>,
}

/// `%i` replaced by `index`.
pub fn expand(pattern: &str, index: u32) -> String {
    pattern.replace("%i", &index.to_string())
}

/// Parses `--ifaddr`: comma-separated addresses and IPv4 ranges `A-B` (B a full address or
/// the last octet).
pub fn parse_ifaddrs(spec: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((from, to)) = item.split_once('-') else {
            out.push(
                item.parse()
                    .with_context(|| format!("bad address {item:?}"))?,
            );
            continue;
        };
        let from: Ipv4Addr = from
            .parse()
            .with_context(|| format!("bad range {item:?}"))?;
        let to: Ipv4Addr = match to.parse::<u8>() {
            Ok(last) => {
                let [a, b, c, _] = from.octets();
                Ipv4Addr::new(a, b, c, last)
            }
            Err(_) => to.parse().with_context(|| format!("bad range {item:?}"))?,
        };
        let (lo, hi) = (u32::from(from), u32::from(to));
        if hi < lo || hi - lo > 1 << 16 {
            bail!("bad range {item:?}: empty or over 65,536 addresses");
        }
        out.extend((lo..=hi).map(|a| IpAddr::V4(Ipv4Addr::from(a))));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifaddr_lists_and_ranges_expand() {
        let a = parse_ifaddrs("127.0.0.1-3,127.0.1.9, 127.0.0.254-127.0.1.1").expect("parses");
        let s: Vec<String> = a.iter().map(ToString::to_string).collect();
        assert_eq!(
            s,
            [
                "127.0.0.1",
                "127.0.0.2",
                "127.0.0.3",
                "127.0.1.9",
                "127.0.0.254",
                "127.0.0.255",
                "127.0.1.0",
                "127.0.1.1"
            ]
        );
        assert!(parse_ifaddrs("127.0.0.5-2").is_err());
        assert!(parse_ifaddrs("nonsense").is_err());
    }

    #[test]
    fn percent_i_is_the_index() {
        assert_eq!(expand("a/%i/b%i", 42), "a/42/b42");
    }

    #[test]
    fn minus_h_is_the_host() {
        let cli = Cli::try_parse_from(["bench", "pub", "-h", "10.0.0.1", "-c", "3", "-q", "1"])
            .expect("parses");
        let Command::Pub(p) = cli.command else {
            panic!("not pub")
        };
        assert_eq!(p.common.host, "10.0.0.1");
        assert_eq!((p.clients, p.message.qos), (3, 1));
    }
}
