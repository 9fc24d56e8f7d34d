//! The four runs (`conn`, `pub`, `sub`, `pubsub`): connect at the asked pace, start the
//! publishers together, stop them, wait for the last messages, and build the summary.

use super::cli::{
    expand, parse_ifaddrs, Common, ConnArgs, MessageArgs, PubArgs, PubSubArgs, SubArgs,
};
use super::connection::{Conn, End, Role, Session, Settings};
use super::publisher::{PublishLimits, PublishTemplate, Publisher};
use super::stats::{progress, rss_kb, Stats, Summary};
use super::subscriber::{Idle, Subscriber};
use anyhow::{bail, Context};
use midge_proto::{topic, ProtocolVersion, QoS};
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Connection errors printed in full; the rest are only counted.
const ERRORS_SHOWN: u64 = 5;

/// What every connection task of a run shares.
struct Run {
    settings: Settings,
    stats: Arc<Stats>,
    ifaddrs: Vec<IpAddr>,
    connect_rate: Option<f64>,
    gate: Semaphore,
    id_prefix: String,
    start_index: u32,
    stall_timeout: Duration,
    /// Connections whose setup (connect, subscribe) succeeded or failed.
    set_up: AtomicU64,
    errors_shown: AtomicU64,
    /// Filters that were subscribed successfully (pubsub computes what to expect).
    subscribed: Mutex<Vec<String>>,
    /// Stops every connection.
    stop_rx: watch::Receiver<bool>,
    /// Stops the publishers only (those still writing long after the end of the run).
    cut_publishers: watch::Sender<bool>,
}

/// The TLS connector and server name of `--cafile` (and `--insecure`), if given.
fn tls_of(
    c: &Common,
) -> anyhow::Result<
    Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
> {
    let Some(ca) = &c.cafile else {
        return Ok(None);
    };
    let options = midge_client::tls::TlsOptions {
        ca_file: Some(ca.clone()),
        insecure: c.insecure,
        ..Default::default()
    };
    let config = options.client_config().context("TLS set-up")?;
    let name = rustls_pki_types::ServerName::try_from(c.host.clone())
        .with_context(|| format!("invalid server name {}", c.host))?;
    Ok(Some((
        tokio_rustls::TlsConnector::from(Arc::new(config)),
        name,
    )))
}

impl Run {
    fn new(c: &Common) -> anyhow::Result<(Arc<Run>, watch::Sender<bool>)> {
        let target = (c.host.as_str(), c.port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {}", c.host))?
            .next()
            .with_context(|| format!("no address for {}", c.host))?;
        let version = match c.protocol {
            3 => ProtocolVersion::V31,
            4 => ProtocolVersion::V311,
            _ => ProtocolVersion::V5,
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let run = Run {
            settings: Settings {
                target,
                version,
                keep_alive: c.keepalive,
                username: c.username.clone(),
                password: c.password.clone(),
                connect_timeout: Duration::from_secs_f64(c.connect_timeout.max(0.001)),
                tls: tls_of(c)?,
            },
            stats: Arc::new(Stats::new()),
            ifaddrs: c
                .ifaddr
                .as_deref()
                .map(parse_ifaddrs)
                .transpose()?
                .unwrap_or_default(),
            connect_rate: (c.connect_rate > 0.0).then_some(c.connect_rate),
            gate: Semaphore::new(c.connect_concurrency.max(1)),
            id_prefix: c
                .id_prefix
                .clone()
                .unwrap_or_else(|| format!("mb{}", std::process::id())),
            start_index: c.start_index,
            stall_timeout: Duration::from_secs_f64(c.stall_timeout.max(0.1)),
            set_up: AtomicU64::new(0),
            errors_shown: AtomicU64::new(0),
            subscribed: Mutex::new(Vec::new()),
            stop_rx,
            cut_publishers: watch::Sender::new(false),
        };
        Ok((Arc::new(run), stop_tx))
    }

    fn report(&self, what: &str, e: &anyhow::Error) {
        let n = self.errors_shown.fetch_add(1, Relaxed);
        if n < ERRORS_SHOWN {
            eprintln!("midge bench: {what}: {e:#}");
        } else if n == ERRORS_SHOWN {
            eprintln!("midge bench: more errors, counted in the summary only");
        }
    }

    /// Connects the `slot`-th connection of a phase that started at `phase_start`.
    async fn connect(
        &self,
        slot: u32,
        client_id: &str,
        phase_start: Instant,
        session: Session,
    ) -> Option<Conn> {
        if let Some(rate) = self.connect_rate {
            tokio::time::sleep_until(phase_start + Duration::from_secs_f64(f64::from(slot) / rate))
                .await;
        }
        let _permit = self.gate.acquire().await.ok()?;
        let local = match self.ifaddrs.len() {
            0 => None,
            n => Some(self.ifaddrs[slot as usize % n]),
        };
        let began = std::time::Instant::now();
        match Conn::open(&self.settings, client_id, local, session).await {
            Ok(conn) => {
                self.stats.record_handshake(began.elapsed());
                self.stats.connected.fetch_add(1, Relaxed);
                Some(conn)
            }
            Err(e) => {
                self.stats.connect_failed.fetch_add(1, Relaxed);
                self.set_up.fetch_add(1, Relaxed);
                self.report(&format!("{client_id} cannot connect"), &e);
                None
            }
        }
    }

    /// Runs `role` on `conn` until `stop`, then disconnects. Returns how it ended and the
    /// bytes it had not written yet.
    async fn drive<R: Role>(
        &self,
        mut conn: Conn,
        role: &mut R,
        client_id: &str,
        mut stop: watch::Receiver<bool>,
    ) -> (Option<End>, usize) {
        match conn.run(role, &mut stop).await {
            Ok(end) => {
                let unwritten = conn.unwritten();
                conn.close().await;
                (Some(end), unwritten)
            }
            Err(e) => {
                self.stats.closed_early.fetch_add(1, Relaxed);
                self.report(client_id, &e);
                (None, conn.unwritten())
            }
        }
    }

    fn client_id(&self, kind: char, index: u32) -> String {
        format!("{}{kind}{index}", self.id_prefix)
    }

    /// Joins the publishers; if the run makes no progress at all for the stall timeout,
    /// reports a stall and stops every connection.
    ///
    /// Publishers still writing `grace` after `ended` was set (a broker that stopped reading
    /// them, with megabytes queued in socket buffers) are cut off, so that a run ends close
    /// to its duration.
    async fn join_publishers<T>(
        &self,
        handles: Vec<JoinHandle<T>>,
        stop_tx: &watch::Sender<bool>,
        ended: &AtomicBool,
        grace: Duration,
    ) -> Vec<T> {
        let progress = || {
            let s = &self.stats;
            s.sent.load(Relaxed) + s.completed.load(Relaxed) + s.received.load(Relaxed)
        };
        let (mut last, mut since) = (progress(), Instant::now());
        let mut ended_at = None;
        while !handles.iter().all(JoinHandle::is_finished) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if ended.load(Relaxed) && ended_at.is_none() {
                ended_at = Some(Instant::now());
            }
            if ended_at.is_some_and(|t| t.elapsed() >= grace) && !*self.cut_publishers.borrow() {
                eprintln!("midge bench: publishers still writing {grace:?} after the end: cut off");
                let _ = self.cut_publishers.send(true);
            }
            let now = progress();
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= self.stall_timeout {
                let s = &self.stats;
                let unacked = s
                    .sent
                    .load(Relaxed)
                    .saturating_sub(s.completed.load(Relaxed));
                eprintln!(
                    "midge bench: STALL: no progress for {:?}; {unacked} publications unacknowledged",
                    self.stall_timeout
                );
                s.stalled.store(unacked.max(1), Relaxed);
                let _ = self.cut_publishers.send(true);
                let _ = stop_tx.send(true);
                break;
            }
        }
        join_all(handles).await
    }

    /// Waits until `n` connections are set up (or failed), printing nothing.
    async fn wait_set_up(&self, n: u64) {
        while self.set_up.load(Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn session_of(expiry: Option<u32>) -> Session {
    expiry.map_or(Session::Clean, |expiry| Session::Persistent { expiry })
}

fn qos_of(v: u8) -> QoS {
    QoS::from_u8(v).unwrap_or(QoS::AtMostOnce)
}

fn spawn_subscriber(
    run: &Arc<Run>,
    slot: u32,
    filter: String,
    qos: QoS,
    phase: Instant,
    session: Session,
) -> JoinHandle<()> {
    let run = run.clone();
    tokio::spawn(async move {
        let index = run.start_index + slot;
        let id = run.client_id('s', index);
        let Some(mut conn) = run.connect(slot, &id, phase, session).await else {
            return;
        };
        conn.set_read_chunk(64 * 1024);
        let subscribed = conn.subscribe(&filter, qos).await;
        run.set_up.fetch_add(1, Relaxed);
        if let Err(e) = subscribed {
            run.stats.protocol_errors.fetch_add(1, Relaxed);
            run.report(&id, &e);
            return;
        }
        run.stats.subscribed.fetch_add(1, Relaxed);
        run.subscribed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(filter);
        let mut role = Subscriber::new(run.settings.version, run.stats.clone());
        run.drive(conn, &mut role, &id, run.stop_rx.clone()).await;
    })
}

/// One publisher: returns (index, messages sent).
#[allow(clippy::too_many_arguments)]
fn spawn_publisher(
    run: &Arc<Run>,
    slot: u32,
    phase_slot: u32,
    topic: String,
    m: &MessageArgs,
    limits: PublishLimits,
    mut go: watch::Receiver<bool>,
    phase: Instant,
) -> JoinHandle<(u32, String, u64)> {
    let run = run.clone();
    let (qos, size) = (qos_of(m.qos), m.size);
    tokio::spawn(async move {
        let index = run.start_index + slot;
        let id = run.client_id('p', index);
        let Some(mut conn) = run.connect(phase_slot, &id, phase, Session::Clean).await else {
            return (index, topic, 0);
        };
        conn.set_read_chunk(4096);
        run.set_up.fetch_add(1, Relaxed);
        if go.wait_for(|go| *go).await.is_err() {
            return (index, topic, 0);
        }
        let version = run.settings.version;
        let template = PublishTemplate::new(&topic, qos, size, version);
        let max = conn.receive_maximum;
        let mut role = Publisher::new(
            index,
            template,
            qos,
            version,
            limits,
            max,
            run.stats.clone(),
        );
        role.start_clock();
        let cut = run.cut_publishers.subscribe();
        let (end, unwritten) = run.drive(conn, &mut role, &id, cut).await;
        if end == Some(End::Stopped) {
            run.stats.publishers_cut.fetch_add(1, Relaxed);
        }
        role.unsend(unwritten);
        (index, topic, role.sent)
    })
}

fn check_topic(pattern: &str, filter: bool) -> anyhow::Result<()> {
    let sample = expand(pattern, 0);
    let ok = if filter {
        topic::valid_topic_filter(&sample).is_ok()
    } else {
        topic::valid_topic_name(&sample).is_ok()
    };
    if !ok {
        bail!(
            "invalid topic {} {pattern:?}",
            if filter { "filter" } else { "name" }
        );
    }
    Ok(())
}

fn base_summary(mode: &'static str, c: &Common, qos: u8, size: usize) -> Summary {
    Summary {
        mode,
        broker: format!("{}:{}", c.host, c.port),
        protocol: c.protocol,
        qos,
        size,
        ..Summary::default()
    }
}

fn start_progress(run: &Arc<Run>, c: &Common, total: u64) -> Option<JoinHandle<()>> {
    (!c.no_progress).then(|| tokio::spawn(progress(run.stats.clone(), total)))
}

fn stop_progress(progress: Option<JoinHandle<()>>) {
    if let Some(p) = progress {
        p.abort();
    }
}

/// Sets `flag` after `duration` seconds, or on Ctrl-C.
fn stop_after(duration: Option<f64>, flag: Arc<AtomicBool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let timer = async {
            match duration {
                Some(d) => tokio::time::sleep(Duration::from_secs_f64(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = timer => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        flag.store(true, Relaxed);
    })
}

fn set_connect_time(s: &mut Summary, run: &Run, started: Instant) {
    s.connect_secs = started.elapsed().as_secs_f64();
    let connected = run.stats.connected.load(Relaxed) as f64;
    s.connect_rate = if s.connect_secs > 0.0 {
        connected / s.connect_secs
    } else {
        0.0
    };
}

async fn join_all<T>(handles: Vec<JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

pub async fn conn(a: ConnArgs) -> anyhow::Result<Summary> {
    let (run, stop_tx) = Run::new(&a.common)?;
    let mut s = base_summary("conn", &a.common, 0, 0);
    s.connections = a.clients;
    s.broker_rss_before_kb = a.broker_pid.and_then(rss_kb);
    let progress = start_progress(&run, &a.common, u64::from(a.clients));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(a.clients as usize);
    for slot in 0..a.clients {
        let run = run.clone();
        handles.push(tokio::spawn(async move {
            let id = run.client_id('c', run.start_index + slot);
            let conn = run.connect(slot, &id, started, Session::Clean).await?;
            run.set_up.fetch_add(1, Relaxed);
            run.drive(conn, &mut Idle, &id, run.stop_rx.clone()).await.0
        }));
    }
    run.wait_set_up(u64::from(a.clients)).await;
    set_connect_time(&mut s, &run, started);
    if !a.common.no_progress {
        eprintln!(
            "midge bench: {} connected",
            run.stats.connected.load(Relaxed)
        );
    }
    if a.until_stdin_closes {
        // One process of a split load (split.rs): tell the parent, hold until it says.
        eprintln!(
            "{}{}",
            super::split::READY,
            run.stats.connected.load(Relaxed)
        );
        let mut sink = Vec::new();
        let mut stdin = tokio::io::stdin();
        tokio::select! {
            _ = tokio::io::AsyncReadExt::read_to_end(&mut stdin, &mut sink) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    } else {
        let hold = Arc::new(AtomicBool::new(false));
        let _ = stop_after(a.hold, hold.clone()).await;
    }
    s.bench_rss_kb = rss_kb(std::process::id());
    if let Some(pid) = a.broker_pid {
        s.broker_rss_after_kb = rss_kb(pid);
        if let (Some(b), Some(after)) = (s.broker_rss_before_kb, s.broker_rss_after_kb) {
            let n = run.stats.connected.load(Relaxed).max(1) as f64;
            s.rss_per_connection_bytes = Some((after as f64 - b as f64) * 1024.0 / n);
        }
    }
    let _ = stop_tx.send(true);
    join_all(handles).await;
    stop_progress(progress);
    s.take_counters(&run.stats);
    Ok(s)
}

pub async fn publish(a: PubArgs) -> anyhow::Result<Summary> {
    check_topic(&a.topic, false)?;
    let (run, stop_tx) = Run::new(&a.common)?;
    let mut s = base_summary("pub", &a.common, a.message.qos, a.message.size);
    (s.connections, s.publishers) = (a.clients, a.clients);
    let progress = start_progress(&run, &a.common, u64::from(a.clients));
    let limits = limits_of(&a.message);
    let (go_tx, go_rx) = watch::channel(false);
    let started = Instant::now();
    let handles: Vec<_> = (0..a.clients)
        .map(|i| {
            let topic = expand(&a.topic, a.common.start_index + i);
            spawn_publisher(
                &run,
                i,
                i,
                topic,
                &a.message,
                limits.clone(),
                go_rx.clone(),
                started,
            )
        })
        .collect();
    run.wait_set_up(u64::from(a.clients)).await;
    set_connect_time(&mut s, &run, started);
    let t0 = Instant::now();
    let _ = go_tx.send(true);
    let timer = stop_after(a.message.duration, limits.stop.clone());
    let grace = Duration::from_secs_f64(a.message.grace.max(0.0));
    run.join_publishers(handles, &stop_tx, &limits.stop, grace)
        .await;
    timer.abort();
    s.publish_secs = t0.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    stop_progress(progress);
    s.take_counters(&run.stats);
    s.send_rate = s.sent as f64 / s.publish_secs.max(1e-9);
    Ok(s)
}

fn limits_of(m: &MessageArgs) -> PublishLimits {
    PublishLimits {
        count: m.count,
        rate: m.rate.filter(|r| *r > 0.0),
        stop: Arc::new(AtomicBool::new(false)),
        inflight: m.inflight.max(1),
    }
}

pub async fn subscribe(a: SubArgs) -> anyhow::Result<Summary> {
    check_topic(&a.topic, true)?;
    let (run, stop_tx) = Run::new(&a.common)?;
    let mut s = base_summary("sub", &a.common, a.qos, 0);
    (s.connections, s.subscribers) = (a.clients, a.clients);
    let progress = start_progress(&run, &a.common, u64::from(a.clients));
    let started = Instant::now();
    let handles: Vec<_> = (0..a.clients)
        .map(|i| {
            let filter = expand(&a.topic, a.common.start_index + i);
            spawn_subscriber(
                &run,
                i,
                filter,
                qos_of(a.qos),
                started,
                session_of(a.session_expiry),
            )
        })
        .collect();
    run.wait_set_up(u64::from(a.clients)).await;
    set_connect_time(&mut s, &run, started);
    // Always printed: scripts and tests wait for this line before publishing.
    eprintln!(
        "midge bench: {}/{} subscribed",
        run.stats.subscribed.load(Relaxed),
        a.clients
    );
    let t0_ns = run.stats.start.elapsed().as_nanos() as u64;
    let done = Arc::new(AtomicBool::new(false));
    let timer = stop_after(a.duration, done.clone());
    while !done.load(Relaxed) && a.count.is_none_or(|c| run.stats.received.load(Relaxed) < c) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    timer.abort();
    let _ = stop_tx.send(true);
    join_all(handles).await;
    stop_progress(progress);
    s.take_counters(&run.stats);
    let last = run.stats.last_received_ns.load(Relaxed);
    s.publish_secs = (run.stats.start.elapsed().as_nanos() as u64 - t0_ns) as f64 / 1e9;
    s.receive_secs = last.saturating_sub(t0_ns) as f64 / 1e9;
    s.recv_rate = s.received as f64 / s.receive_secs.max(1e-9);
    s.expected = a.count;
    s.lost = a.count.map(|c| c.saturating_sub(s.received));
    Ok(s)
}

pub async fn pubsub(a: PubSubArgs) -> anyhow::Result<Summary> {
    check_topic(&a.pub_topic, false)?;
    check_topic(&a.sub_topic, true)?;
    let (run, stop_tx) = Run::new(&a.common)?;
    let m = &a.message;
    let mut s = base_summary("pubsub", &a.common, m.qos, m.size);
    (s.publishers, s.subscribers, s.connections) = (a.pubs, a.subs, a.pubs + a.subs);
    let progress = start_progress(&run, &a.common, u64::from(a.pubs + a.subs));
    let started = Instant::now();
    let subs: Vec<_> = (0..a.subs)
        .map(|j| {
            let filter = expand(&a.sub_topic, a.common.start_index + j);
            spawn_subscriber(
                &run,
                j,
                filter,
                qos_of(m.qos),
                started,
                session_of(a.session_expiry),
            )
        })
        .collect();
    run.wait_set_up(u64::from(a.subs)).await;
    let limits = limits_of(m);
    let (go_tx, go_rx) = watch::channel(false);
    let phase = Instant::now();
    let pubs: Vec<_> = (0..a.pubs)
        .map(|i| {
            let topic = expand(&a.pub_topic, a.common.start_index + i);
            spawn_publisher(&run, i, i, topic, m, limits.clone(), go_rx.clone(), phase)
        })
        .collect();
    run.wait_set_up(u64::from(a.subs + a.pubs)).await;
    set_connect_time(&mut s, &run, started);

    let t0 = Instant::now();
    let t0_ns = run.stats.start.elapsed().as_nanos() as u64;
    let _ = go_tx.send(true);
    let timer = stop_after(m.duration, limits.stop.clone());
    let grace = Duration::from_secs_f64(m.grace.max(0.0));
    let sent = run
        .join_publishers(pubs, &stop_tx, &limits.stop, grace)
        .await;
    timer.abort();
    s.publish_secs = t0.elapsed().as_secs_f64();

    let expected = expected_deliveries(
        &sent,
        &run.subscribed.lock().unwrap_or_else(|e| e.into_inner()),
    );
    let quiet = Duration::from_secs_f64(a.drain.max(0.0));
    let most = Duration::from_secs_f64(a.drain_max.max(0.0));
    drain(&run.stats, expected, quiet, most).await;
    let _ = stop_tx.send(true);
    join_all(subs).await;
    stop_progress(progress);

    s.take_counters(&run.stats);
    s.send_rate = s.sent as f64 / s.publish_secs.max(1e-9);
    let last = run.stats.last_received_ns.load(Relaxed);
    s.receive_secs = last.saturating_sub(t0_ns) as f64 / 1e9;
    s.recv_rate = s.received as f64 / s.receive_secs.max(1e-9);
    s.expected = Some(expected);
    s.lost = Some(expected.saturating_sub(s.received));
    Ok(s)
}

/// Messages the subscribers should receive: each publisher's count times the number of
/// subscribed filters matching its topic.
fn expected_deliveries(sent: &[(u32, String, u64)], filters: &[String]) -> u64 {
    sent.iter()
        .map(|(_, topic, n)| {
            let matching = filters.iter().filter(|f| topic::matches(f, topic)).count();
            n * matching as u64
        })
        .sum()
}

/// Waits until `expected` messages have arrived, or none has for `quiet`, or `most`.
async fn drain(stats: &Stats, expected: u64, quiet: Duration, most: Duration) {
    let mut last = stats.received.load(Relaxed);
    let mut since = Instant::now();
    let deadline = since + most;
    loop {
        let now = stats.received.load(Relaxed);
        if now >= expected || Instant::now() >= deadline {
            return;
        }
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_counts_every_matching_subscriber() {
        let sent = vec![
            (0, "bench/0".to_string(), 10),
            (1, "bench/1".to_string(), 5),
        ];
        let filters = vec!["bench/#".into(), "bench/1".into(), "other".into()];
        assert_eq!(expected_deliveries(&sent, &filters), 10 + 5 * 2);
    }
}
