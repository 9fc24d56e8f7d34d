//! `midge bench conn` over several processes: when one process may not open enough files
//! for `-c` connections (or `--processes N` asks for it), this process starts N copies of
//! itself, each with its share of the connections, its own index range and (towards a
//! loopback broker, past one source address's ephemeral ports) its own source address;
//! it holds them all at once, measures the broker, then stops them and adds up their
//! JSON summaries.
//!
//! A child runs `conn` with `--until-stdin-closes`: it prints `midge bench: ready N` on
//! stderr once its connections are set up, holds them until its stdin is closed (or
//! Ctrl-C), and prints its summary as JSON.

use super::cli::ConnArgs;
use super::stats::{rss_kb, LatencySummary, Summary};
use anyhow::Context;
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The line a child prints on stderr once its connections are set up.
pub const READY: &str = "midge bench: ready ";

/// File descriptors a process keeps for itself besides its connections.
const SPARE_FDS: u64 = 64;

/// Ephemeral ports one source address has towards one broker address (Linux default).
const PORTS_PER_ADDRESS: u64 = 28_000;

/// How many processes `conn` needs: `--processes` if given, else as many as the open-files
/// limit (`fd_limit`, already raised to the hard one) calls for.
pub fn processes_for(a: &ConnArgs, fd_limit: Option<u64>) -> u32 {
    if a.processes > 0 {
        return a.processes.min(a.clients.max(1));
    }
    let Some(limit) = fd_limit else { return 1 };
    let per = limit.saturating_sub(SPARE_FDS).max(1);
    let n = u64::from(a.clients).div_ceil(per).max(1);
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One child's part of the load.
struct Share {
    clients: u32,
    start_index: u32,
    ifaddr: Option<String>,
}

fn shares(a: &ConnArgs, n: u32) -> Vec<Share> {
    let base = a.clients / n;
    let extra = a.clients % n;
    // Towards a loopback broker with no --ifaddr, a load past one address's ports gets a
    // source address per child (every 127.x.y.z is local on Linux).
    let own_addresses = a.common.ifaddr.is_none()
        && u64::from(a.clients) > PORTS_PER_ADDRESS
        && a.common
            .host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    let mut start = a.common.start_index;
    (0..n)
        .map(|i| {
            let clients = base + u32::from(i < extra);
            let share = Share {
                clients,
                start_index: start,
                ifaddr: if own_addresses {
                    Some(format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250))
                } else {
                    a.common.ifaddr.clone()
                },
            };
            start = start.saturating_add(clients);
            share
        })
        .collect()
}

/// The command line of one child.
fn child_args(a: &ConnArgs, share: &Share, n: u32, prefix: &str) -> Vec<String> {
    let c = &a.common;
    let mut args: Vec<String> = vec![
        "bench".into(),
        "conn".into(),
        "-h".into(),
        c.host.clone(),
        "-p".into(),
        c.port.to_string(),
        "-V".into(),
        c.protocol.to_string(),
        "-k".into(),
        c.keepalive.to_string(),
        "--connect-rate".into(),
        (c.connect_rate / f64::from(n)).to_string(),
        "--connect-concurrency".into(),
        c.connect_concurrency
            .div_ceil(n as usize)
            .max(1)
            .to_string(),
        "--connect-timeout".into(),
        c.connect_timeout.to_string(),
        "--stall-timeout".into(),
        c.stall_timeout.to_string(),
        "--id-prefix".into(),
        prefix.to_string(),
        "--start-index".into(),
        share.start_index.to_string(),
        "-c".into(),
        share.clients.to_string(),
        "--processes".into(),
        "1".into(),
        "--until-stdin-closes".into(),
        "--json".into(),
    ];
    if c.no_progress {
        args.push("--no-progress".into());
    }
    if let Some(u) = &c.username {
        args.extend(["-u".into(), u.clone()]);
    }
    if let Some(p) = &c.password {
        args.extend(["-P".into(), p.clone()]);
    }
    if let Some(ca) = &c.cafile {
        args.extend(["--cafile".into(), ca.display().to_string()]);
    }
    if c.insecure {
        args.push("--insecure".into());
    }
    if let Some(addrs) = &share.ifaddr {
        args.extend(["--ifaddr".into(), addrs.clone()]);
    }
    args
}

/// What a child's stderr tells the parent.
enum Event {
    Ready(usize),
    /// The child's stderr closed: it exited (or is about to).
    Gone(usize),
}

/// Runs `conn` over `n` child processes and returns the sum of their summaries.
pub async fn conn(a: ConnArgs, n: u32) -> anyhow::Result<Summary> {
    let exe = std::env::current_exe().context("cannot find the midge executable")?;
    let prefix = a
        .common
        .id_prefix
        .clone()
        .unwrap_or_else(|| format!("mb{}", std::process::id()));
    let broker_before = a.broker_pid.and_then(rss_kb);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut children: Vec<Child> = Vec::new();
    for (i, share) in shares(&a, n).iter().enumerate() {
        let mut child = Command::new(&exe)
            .args(child_args(&a, share, n, &prefix))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start load process {i}"))?;
        if let Some(err) = child.stderr.take() {
            tokio::spawn(relay_stderr(i, err, tx.clone()));
        }
        children.push(child);
    }
    drop(tx);
    if !a.common.no_progress {
        eprintln!("midge bench: {} connections over {n} processes", a.clients);
    }

    // Every child set up (or gone), then the measurement, then the hold.
    let mut pending: Vec<bool> = vec![true; children.len()];
    while pending.iter().any(|p| *p) {
        match rx.recv().await {
            Some(Event::Ready(i) | Event::Gone(i)) => {
                if let Some(p) = pending.get_mut(i) {
                    *p = false;
                }
            }
            None => break,
        }
    }
    let broker_after = a.broker_pid.and_then(rss_kb);
    let load_rss: u64 = children
        .iter()
        .filter_map(|c| c.id().and_then(rss_kb))
        .sum();
    if !a.common.no_progress {
        eprintln!("midge bench: every process set up; holding");
    }
    let hold = async {
        match a.hold {
            Some(secs) => tokio::time::sleep(Duration::from_secs_f64(secs.max(0.0))).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = hold => {}
        _ = tokio::signal::ctrl_c() => {}
    }

    // Closing a child's stdin ends its hold; each prints its summary and exits.
    for child in &mut children {
        drop(child.stdin.take());
    }
    let mut summaries = Vec::with_capacity(children.len());
    for (i, child) in children.into_iter().enumerate() {
        let out = child
            .wait_with_output()
            .await
            .with_context(|| format!("load process {i}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value = text
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .with_context(|| {
                format!(
                    "load process {i} printed no summary (exit status {})",
                    out.status
                )
            })?;
        summaries.push(v);
    }

    let mut s = Summary {
        mode: "conn",
        broker: format!("{}:{}", a.common.host, a.common.port),
        protocol: a.common.protocol,
        connections: a.clients,
        processes: Some(n),
        ..Summary::default()
    };
    let sum = |field: &str| -> u64 { summaries.iter().filter_map(|v| v[field].as_u64()).sum() };
    s.connected = sum("connected");
    s.connect_failed = sum("connect_failed");
    s.closed_early = sum("closed_early");
    s.protocol_errors = sum("protocol_errors");
    // The processes connect side by side: the slowest one's time is the whole load's.
    s.connect_secs = summaries
        .iter()
        .filter_map(|v| v["connect_secs"].as_f64())
        .fold(0.0, f64::max);
    s.connect_rate = if s.connect_secs > 0.0 {
        s.connected as f64 / s.connect_secs
    } else {
        0.0
    };
    s.handshake_us = worst_handshakes(&summaries);
    s.bench_rss_kb = Some(load_rss);
    s.broker_rss_before_kb = broker_before;
    s.broker_rss_after_kb = broker_after;
    if let (Some(b), Some(after)) = (broker_before, broker_after) {
        let n = s.connected.max(1) as f64;
        s.rss_per_connection_bytes = Some((after as f64 - b as f64) * 1024.0 / n);
    }
    Ok(s)
}

/// The processes' handshake times put together: each percentile is the worst process's
/// (the histograms themselves stay in the processes), the count their sum and the mean
/// weighted by it.
fn worst_handshakes(summaries: &[Value]) -> Option<LatencySummary> {
    let parts: Vec<&Value> = summaries
        .iter()
        .map(|v| &v["handshake_us"])
        .filter(|h| h.is_object())
        .collect();
    if parts.is_empty() {
        return None;
    }
    let worst = |field: &str| {
        parts
            .iter()
            .filter_map(|h| h[field].as_f64())
            .fold(0.0, f64::max)
    };
    let count: u64 = parts.iter().filter_map(|h| h["count"].as_u64()).sum();
    let weighted: f64 = parts
        .iter()
        .map(|h| h["mean"].as_f64().unwrap_or(0.0) * h["count"].as_f64().unwrap_or(0.0))
        .sum();
    Some(LatencySummary {
        count,
        min: parts
            .iter()
            .filter_map(|h| h["min"].as_f64())
            .fold(f64::INFINITY, f64::min),
        p50: worst("p50"),
        p90: worst("p90"),
        p99: worst("p99"),
        p999: worst("p999"),
        max: worst("max"),
        mean: if count > 0 {
            weighted / count as f64
        } else {
            0.0
        },
    })
}

/// Passes a child's stderr on, prefixed with its number (its progress line every second
/// unless `--no-progress`, its warnings), and reports its ready line and its end.
async fn relay_stderr(
    i: usize,
    err: tokio::process::ChildStderr,
    tx: mpsc::UnboundedSender<Event>,
) {
    let mut lines = BufReader::new(err).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.starts_with(READY) {
            let _ = tx.send(Event::Ready(i));
        } else {
            eprintln!("[{i}] {line}");
        }
    }
    let _ = tx.send(Event::Gone(i));
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn conn_args(args: &[&str]) -> ConnArgs {
        let cli = super::super::cli::Cli::try_parse_from(
            ["bench", "conn"].iter().chain(args.iter()).copied(),
        )
        .map_err(|e| e.to_string());
        match cli.map(|c| c.command) {
            Ok(super::super::cli::Command::Conn(a)) => a,
            other => panic!("not conn args: {other:?}"),
        }
    }

    #[test]
    fn one_process_while_the_limit_allows() {
        let a = conn_args(&["-c", "19000"]);
        assert_eq!(processes_for(&a, Some(20_000)), 1);
        assert_eq!(processes_for(&a, None), 1);
    }

    #[test]
    fn past_the_limit_the_load_is_split() {
        let a = conn_args(&["-c", "50000"]);
        assert_eq!(processes_for(&a, Some(20_000)), 3);
        let a = conn_args(&["-c", "50000", "--processes", "5"]);
        assert_eq!(processes_for(&a, Some(20_000)), 5);
    }

    #[test]
    fn shares_cover_every_index_once() {
        let a = conn_args(&["-c", "10", "--start-index", "100", "--processes", "3"]);
        let s = shares(&a, 3);
        let counts: Vec<u32> = s.iter().map(|s| s.clients).collect();
        let starts: Vec<u32> = s.iter().map(|s| s.start_index).collect();
        assert_eq!(counts, vec![4, 3, 3]);
        assert_eq!(starts, vec![100, 104, 107]);
        assert!(s.iter().all(|s| s.ifaddr.is_none()));
    }

    #[test]
    fn a_large_loopback_load_gets_a_source_address_per_process() {
        let a = conn_args(&["-c", "60000", "-h", "127.0.0.1"]);
        let s = shares(&a, 3);
        let addrs: Vec<_> = s.iter().map(|s| s.ifaddr.clone()).collect();
        assert_eq!(
            addrs,
            vec![
                Some("127.0.1.1".to_string()),
                Some("127.0.1.2".to_string()),
                Some("127.0.1.3".to_string())
            ]
        );
        let given = conn_args(&["-c", "60000", "--ifaddr", "127.0.0.1-4"]);
        assert!(shares(&given, 3)
            .iter()
            .all(|s| s.ifaddr.as_deref() == Some("127.0.0.1-4")));
    }
}
