//! Counters shared by every connection of a run, the latency histogram, the progress line
//! and the summary (text or JSON).
//!
//! Connections add to the counters once per read or write batch, not once per message, so
//! two worker threads do not fight over one cache line at a million messages a second.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Latencies are recorded in nanoseconds, up to a minute, to 3 significant digits.
const LATENCY_MAX_NS: u64 = 60_000_000_000;

/// Everything the connections of one run count.
pub struct Stats {
    pub start: Instant,
    pub connected: AtomicU64,
    pub connect_failed: AtomicU64,
    pub subscribed: AtomicU64,
    /// Connections the broker closed (or that failed) before the run told them to stop.
    pub closed_early: AtomicU64,
    /// PUBLISH packets written.
    pub sent: AtomicU64,
    /// QoS 1/2 publications whose flow completed (PUBACK, PUBCOMP).
    pub completed: AtomicU64,
    /// PUBACK/PUBREC with a failure reason code (5.0).
    pub rejected: AtomicU64,
    pub received: AtomicU64,
    /// Messages whose sequence number was not above the last one seen from that publisher.
    pub duplicates: AtomicU64,
    /// Sequence numbers skipped (messages missing in order from one publisher).
    pub gaps: AtomicU64,
    pub protocol_errors: AtomicU64,
    /// Set when the run gave up waiting for a broker that made no progress.
    pub stalled: AtomicU64,
    /// Publishers cut off while still writing after the end (see `--grace`).
    pub publishers_cut: AtomicU64,
    /// When the last message arrived, in nanoseconds since `start` (0: none yet).
    pub last_received_ns: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    /// From the start of the TCP connect to the CONNACK, per successful connection.
    handshake: Mutex<Histogram<u64>>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            start: Instant::now(),
            connected: AtomicU64::new(0),
            connect_failed: AtomicU64::new(0),
            subscribed: AtomicU64::new(0),
            closed_early: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
            publishers_cut: AtomicU64::new(0),
            last_received_ns: AtomicU64::new(0),
            latency: Mutex::new(histogram()),
            handshake: Mutex::new(histogram()),
        }
    }

    /// Adds a batch of latencies (nanoseconds) to the shared histogram.
    pub fn record_latencies(&self, batch: &[u64]) {
        let mut h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        for &ns in batch {
            h.saturating_record(ns.max(1));
        }
    }

    /// Marks that messages arrived now.
    pub fn note_received(&self, n: u64) {
        self.received.fetch_add(n, Relaxed);
        let at = self.start.elapsed().as_nanos() as u64;
        self.last_received_ns.fetch_max(at, Relaxed);
    }

    /// Adds one connection's handshake time.
    pub fn record_handshake(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let mut h = self.handshake.lock().unwrap_or_else(|e| e.into_inner());
        h.saturating_record(ns.max(1));
    }

    pub fn latency_summary(&self) -> Option<LatencySummary> {
        summary_of(&self.latency.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn handshake_summary(&self) -> Option<LatencySummary> {
        summary_of(&self.handshake.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts (1 <= low, high >= 2 * low, 3 digits).
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3).expect("valid histogram bounds")
}

fn summary_of(h: &Histogram<u64>) -> Option<LatencySummary> {
    if h.is_empty() {
        return None;
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    Some(LatencySummary {
        count: h.len(),
        min: us(h.min()),
        p50: us(h.value_at_quantile(0.50)),
        p90: us(h.value_at_quantile(0.90)),
        p99: us(h.value_at_quantile(0.99)),
        p999: us(h.value_at_quantile(0.999)),
        max: us(h.max()),
        mean: h.mean() / 1000.0,
    })
}

/// Wall-clock nanoseconds since the Unix epoch: the timestamp carried in payloads, so that
/// a publisher and a subscriber in different processes on one machine agree on it.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// End-to-end latency percentiles, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// The result of a run, printed as text or JSON. Field names are stable: `bench/compare.sh`
/// reads them.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    pub mode: &'static str,
    pub broker: String,
    pub protocol: u8,
    pub qos: u8,
    pub size: usize,
    pub publishers: u32,
    pub subscribers: u32,
    pub connections: u32,
    pub connected: u64,
    pub connect_failed: u64,
    pub closed_early: u64,
    /// Seconds from the first connection attempt until every connection succeeded or failed.
    pub connect_secs: f64,
    pub connect_rate: f64,
    pub sent: u64,
    pub completed: u64,
    pub rejected: u64,
    pub received: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    pub duplicates: u64,
    pub gaps: u64,
    pub protocol_errors: u64,
    /// Publications still unacknowledged when the run gave up on a broker that made no
    /// progress for --stall-timeout (0: no stall).
    pub stalled_unacked: u64,
    /// Publishers cut off while still writing or awaiting acknowledgements after the end.
    pub publishers_cut: u64,
    /// Seconds the publishers ran (pub, pubsub) or the subscribers listened (sub).
    pub publish_secs: f64,
    pub send_rate: f64,
    /// Seconds from the publishers' start to the last message received.
    pub receive_secs: f64,
    pub recv_rate: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<LatencySummary>,
    /// Connection handshakes (TCP connect, TLS, CONNECT to CONNACK), microseconds.
    pub handshake_us: Option<LatencySummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_rss_before_kb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_rss_after_kb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_connection_bytes: Option<f64>,
    /// This process's own VmRSS with every connection open (conn): what one process of
    /// load costs per connection. Over several processes, their sum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bench_rss_kb: Option<u64>,
    /// The load processes `conn` ran (only when more than one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<u32>,
}

impl Summary {
    /// Copies the counters of `stats` into the summary.
    pub fn take_counters(&mut self, stats: &Stats) {
        self.connected = stats.connected.load(Relaxed);
        self.connect_failed = stats.connect_failed.load(Relaxed);
        self.closed_early = stats.closed_early.load(Relaxed);
        self.sent = stats.sent.load(Relaxed);
        self.completed = stats.completed.load(Relaxed);
        self.rejected = stats.rejected.load(Relaxed);
        self.received = stats.received.load(Relaxed);
        self.duplicates = stats.duplicates.load(Relaxed);
        self.gaps = stats.gaps.load(Relaxed);
        self.protocol_errors = stats.protocol_errors.load(Relaxed);
        self.stalled_unacked = stats.stalled.load(Relaxed);
        self.publishers_cut = stats.publishers_cut.load(Relaxed);
        self.latency_us = stats.latency_summary();
        self.handshake_us = stats.handshake_summary();
    }

    /// Whether anything went wrong that a script should notice (exit status 1).
    pub fn has_failures(&self) -> bool {
        self.connect_failed > 0
            || self.closed_early > 0
            || self.protocol_errors > 0
            || self.rejected > 0
            || self.stalled_unacked > 0
            || (self.qos > 0 && self.lost.unwrap_or(0) > 0)
    }

    pub fn print(&self, json: bool) {
        if json {
            match serde_json::to_string(self) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("midge bench: cannot write JSON: {e}"),
            }
        } else {
            print!("{}", self.text());
        }
    }

    fn text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "midge bench {}: {}, MQTT level {}, QoS {}, {} B payload",
            self.mode, self.broker, self.protocol, self.qos, self.size
        );
        let _ = writeln!(
            s,
            "  connections  {} of {} connected, {} failed, {} closed early; {:.0} conn/s over {:.2} s",
            self.connected,
            self.connections,
            self.connect_failed,
            self.closed_early,
            self.connect_rate,
            self.connect_secs
        );
        if self.mode != "conn" {
            self.text_messages(&mut s);
        }
        if let Some(kb) = self.bench_rss_kb {
            match self.processes {
                Some(n) => {
                    let _ = writeln!(s, "  load RSS     {kb} kB ({n} load processes)");
                }
                None => {
                    let _ = writeln!(s, "  load RSS     {kb} kB (this process)");
                }
            }
        }
        if let (Some(before), Some(after)) = (self.broker_rss_before_kb, self.broker_rss_after_kb) {
            let _ = writeln!(
                s,
                "  broker RSS   {before} kB before, {after} kB after: {:.0} bytes per connection",
                self.rss_per_connection_bytes.unwrap_or(0.0)
            );
        }
        s
    }

    fn text_messages(&self, s: &mut String) {
        use std::fmt::Write;
        if self.publishers > 0 {
            let _ = writeln!(
                s,
                "  sent         {} in {:.2} s ({:.0} msg/s), {} completed, {} rejected",
                self.sent, self.publish_secs, self.send_rate, self.completed, self.rejected
            );
        }
        if self.subscribers > 0 {
            let expected = self
                .expected
                .map(|e| format!(" of {e} expected, {} lost", self.lost.unwrap_or(0)))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  received     {}{expected} in {:.2} s ({:.0} msg/s); {} duplicates, {} gaps",
                self.received, self.receive_secs, self.recv_rate, self.duplicates, self.gaps
            );
        }
        if let Some(l) = &self.handshake_us {
            let _ = writeln!(
                s,
                "  handshake us p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (n = {})",
                l.p50, l.p90, l.p99, l.p999, l.max, l.count
            );
        }
        if let Some(l) = &self.latency_us {
            let _ = writeln!(
                s,
                "  latency us   p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (n = {})",
                l.p50, l.p90, l.p99, l.p999, l.max, l.count
            );
        }
        if self.publishers_cut > 0 {
            let _ = writeln!(
                s,
                "  cut off      {} publishers still busy after the end (--grace)",
                self.publishers_cut
            );
        }
        if self.stalled_unacked > 0 {
            let _ = writeln!(
                s,
                "  STALL        broker made no progress; {} publications unacknowledged",
                self.stalled_unacked
            );
        }
        if self.protocol_errors > 0 {
            let _ = writeln!(s, "  errors       {} protocol errors", self.protocol_errors);
        }
    }
}

/// Prints one line a second to stderr until aborted.
pub async fn progress(stats: std::sync::Arc<Stats>, total_conns: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_sent, mut last_recv) = (0, 0);
    loop {
        tick.tick().await;
        let sent = stats.sent.load(Relaxed);
        let recv = stats.received.load(Relaxed);
        eprintln!(
            "midge bench: {:>4.0}s conns {}/{} ({} failed, {} closed) sent {} ({}/s) recv {} ({}/s)",
            stats.start.elapsed().as_secs_f64(),
            stats.connected.load(Relaxed),
            total_conns,
            stats.connect_failed.load(Relaxed),
            stats.closed_early.load(Relaxed),
            sent,
            sent - last_sent,
            recv,
            recv - last_recv,
        );
        (last_sent, last_recv) = (sent, recv);
    }
}

/// The resident set size of process `pid`, in kB, from `/proc/<pid>/status`.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
