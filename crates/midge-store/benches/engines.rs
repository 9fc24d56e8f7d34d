//! Engine comparison on the broker's workload, through the real store code path.
//!
//!     cargo bench -p midge-store --features redb --bench engines            # full
//!     cargo bench -p midge-store --features redb --bench engines -- --quick  # smaller
//!
//! Without `--features redb` only fjall runs. Prints one markdown table per workload;
//! the numbers and the decision are in docs/design/storage.md.

use bytes::Bytes;
use midge_store::engine::Engine;
use midge_store::{
    Delivery, DiskStore, Durability, InflightRecord, MessageProperties, MessageRecord, Op,
    SessionRecord, SessionStore, Stage, Store, StoreOptions,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

struct Sizes {
    /// Commits of `BATCH` ops in the sequential fsync test.
    commits: usize,
    /// Commits per thread in the group-commit test.
    group_commits: usize,
    sessions: usize,
    fanout_messages: usize,
    queue_len: u64,
    retained: u64,
}

const BATCH: usize = 100;
const THREADS: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--crash-fill") {
        // Child of `restart_after_crash`: fill, then die without closing the store.
        let (engine, dir, n) = (&args[i + 1], Path::new(&args[i + 2]), &args[i + 3]);
        let n: u64 = n.parse().expect("count");
        match engine.as_str() {
            #[cfg(feature = "redb")]
            "redb" => fill_retained(
                &midge_store::RedbStore::open(dir, never()).expect("open"),
                n,
            ),
            _ => fill_retained(&DiskStore::open(dir, never()).expect("open"), n),
        }
        std::process::abort();
    }
    let quick = args.iter().any(|a| a == "--quick");
    let sizes = if quick {
        Sizes {
            commits: 200,
            group_commits: 50,
            sessions: 2_000,
            fanout_messages: 5,
            queue_len: 2_000,
            retained: 100_000,
        }
    } else {
        Sizes {
            commits: 1_000,
            group_commits: 200,
            sessions: 10_000,
            fanout_messages: 10,
            queue_len: 10_000,
            retained: 1_000_000,
        }
    };
    let base = std::env::var("MIDGE_BENCH_DIR").unwrap_or_else(|_| "target/store-bench".into());
    let base = Path::new(&base);
    let _ = std::fs::remove_dir_all(base);
    println!(
        "engine comparison ({})",
        if quick { "quick" } else { "full" }
    );
    run::<midge_store::engine::fjall::FjallEngine>("fjall", base, &sizes, |dir, o| {
        DiskStore::open(dir, o).expect("open fjall")
    });
    #[cfg(feature = "redb")]
    run::<midge_store::engine::redb::RedbEngine>("redb", base, &sizes, |dir, o| {
        midge_store::RedbStore::open(dir, o).expect("open redb")
    });
    let _ = std::fs::remove_dir_all(base);
}

fn run<E: Engine>(
    name: &str,
    base: &Path,
    sizes: &Sizes,
    open: impl Fn(&Path, StoreOptions) -> Store<E>,
) {
    println!("\n## {name}\n");
    let dir = base.join(name);
    let always = StoreOptions {
        durability: Durability::Always,
    };
    let never = StoreOptions {
        durability: Durability::Never,
    };

    for (label, o) in [("Always", always), ("Never", never)] {
        let d = dir.join(format!("seq-{label}"));
        sequential_batches(&open(&d, o), sizes.commits, label);
    }
    group_commit(&open(&dir.join("group"), always), sizes.group_commits);
    fan_out(&open(&dir.join("fanout"), always), sizes);
    {
        let d = dir.join("queue");
        fill_queue(&open(&d, never), sizes.queue_len);
        read_queue(&open(&d, always), sizes.queue_len);
    }
    restart(&dir.join("retained"), sizes.retained, &open);
    restart_after_crash(name, &dir.join("crashed"), sizes.retained, &open);
    let _ = std::fs::remove_dir_all(&dir);
}

fn message(len: usize) -> Arc<MessageRecord> {
    Arc::new(MessageRecord {
        topic: "sensors/building-1/floor-2/temperature".into(),
        payload: Bytes::from(vec![0x5a; len]),
        qos: 1,
        retain: false,
        properties: MessageProperties::default(),
        expires_at: None,
    })
}

fn session() -> SessionRecord {
    SessionRecord {
        expiry_interval: Some(3600),
        disconnected_at: None,
        protocol_level: 5,
        first_seq: 0,
    }
}

fn delivery(client: &str, seq: u64) -> Delivery {
    Delivery {
        client: client.into(),
        seq,
        qos: 1,
        retain: false,
        subscription_ids: Vec::new(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The QoS 1 life cycle of one message to one persistent session, as ops: enqueue,
/// in flight, acknowledged. A commit holds `BATCH` such ops (about 33 messages).
fn lifecycle_ops<E: Engine>(store: &Store<E>, client: &str, seq: &mut u64, n: usize) -> Vec<Op> {
    let mut ops = Vec::with_capacity(n);
    while ops.len() < n {
        let s = *seq;
        *seq += 1;
        ops.push(Op::Enqueue {
            message_id: store.next_message_id(),
            message: message(1024),
            deliveries: vec![delivery(client, s)],
        });
        ops.push(Op::SetInflight {
            client: client.into(),
            seq: s,
            inflight: InflightRecord {
                packet_id: (s % 65535 + 1) as u16,
                stage: Stage::AwaitPubAck,
            },
        });
        // Acknowledge the message of the previous round so entries do not pile up.
        if s > 0 {
            ops.push(Op::Dequeue {
                client: client.into(),
                seq: s - 1,
            });
        }
    }
    ops
}

fn sequential_batches<E: Engine>(store: &Store<E>, commits: usize, label: &str) {
    store
        .commit_blocking(vec![Op::PutSession {
            client: "c".into(),
            session: session(),
        }])
        .expect("session");
    let mut seq = 0;
    let mut lat = Vec::with_capacity(commits);
    let t = Instant::now();
    for _ in 0..commits {
        let ops = lifecycle_ops(store, "c", &mut seq, BATCH);
        let c = Instant::now();
        store.commit_blocking(ops).expect("commit");
        lat.push(c.elapsed());
    }
    let total = t.elapsed();
    lat.sort();
    println!(
        "- sequential commits of {BATCH} ops (1 KB messages), {label}: {commits} commits in {:.2} s = {:.0} commits/s, {:.0} ops/s; commit latency p50 {}, p99 {}",
        total.as_secs_f64(),
        commits as f64 / total.as_secs_f64(),
        (commits * BATCH) as f64 / total.as_secs_f64(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
    );
}

fn group_commit<E: Engine>(store: &Store<E>, per_thread: usize) {
    let t = Instant::now();
    std::thread::scope(|s| {
        for th in 0..THREADS {
            s.spawn(move || {
                let client = format!("g{th}");
                store
                    .commit_blocking(vec![Op::PutSession {
                        client: client.as_str().into(),
                        session: session(),
                    }])
                    .expect("session");
                let mut seq = 0;
                for _ in 0..per_thread {
                    let ops = lifecycle_ops(store, &client, &mut seq, 10);
                    store.commit_blocking(ops).expect("commit");
                }
            });
        }
    });
    let total = t.elapsed();
    let commits = THREADS * per_thread;
    println!(
        "- group commit, Always: {THREADS} threads x {per_thread} commits of 10 ops: {:.0} commits/s, {:.0} ops/s",
        commits as f64 / total.as_secs_f64(),
        (commits * 10) as f64 / total.as_secs_f64(),
    );
}

fn fan_out<E: Engine>(store: &Store<E>, sizes: &Sizes) {
    let clients: Vec<String> = (0..sizes.sessions).map(|i| format!("s{i:05}")).collect();
    let t = Instant::now();
    for chunk in clients.chunks(1000) {
        let ops = chunk
            .iter()
            .map(|c| Op::PutSession {
                client: c.as_str().into(),
                session: session(),
            })
            .collect();
        store.commit_blocking(ops).expect("sessions");
    }
    let sessions_time = t.elapsed();
    let t = Instant::now();
    for m in 0..sizes.fanout_messages {
        let deliveries = clients.iter().map(|c| delivery(c, m as u64)).collect();
        store
            .commit_blocking(vec![Op::Enqueue {
                message_id: store.next_message_id(),
                message: message(1024),
                deliveries,
            }])
            .expect("fan-out");
    }
    let fan = t.elapsed();
    let t = Instant::now();
    for c in &clients {
        store.read_queue(c, 0, 100).expect("read");
    }
    let read = t.elapsed();
    println!(
        "- {} sessions created in {}; {} messages of 1 KB each to all {} offline sessions: {} per message ({:.0} queue entries/s); reading every queue back: {}",
        sizes.sessions,
        ms(sessions_time),
        sizes.fanout_messages,
        sizes.sessions,
        ms(fan / sizes.fanout_messages as u32),
        (sizes.sessions * sizes.fanout_messages) as f64 / fan.as_secs_f64(),
        ms(read),
    );
}

fn fill_queue<E: Engine>(store: &Store<E>, n: u64) {
    let mut ops = vec![Op::PutSession {
        client: "q".into(),
        session: session(),
    }];
    for seq in 0..n {
        ops.push(Op::Enqueue {
            message_id: store.next_message_id(),
            message: message(1024),
            deliveries: vec![delivery("q", seq)],
        });
        if ops.len() >= 1000 {
            store
                .commit_blocking(std::mem::take(&mut ops))
                .expect("fill");
        }
    }
    store.commit_blocking(ops).expect("fill");
}

fn read_queue<E: Engine>(store: &Store<E>, n: u64) {
    let t = Instant::now();
    let mut from = 0;
    let mut got = 0u64;
    loop {
        let page = store.read_queue("q", from, 100).expect("read");
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        got += page.len() as u64;
    }
    assert_eq!(got, n);
    let total = t.elapsed();
    println!(
        "- reading back a queue of {n} x 1 KB in pages of 100 (after reopen): {} = {:.0} messages/s",
        ms(total),
        n as f64 / total.as_secs_f64()
    );
}

fn never() -> StoreOptions {
    StoreOptions {
        durability: Durability::Never,
    }
}

fn fill_retained<E: Engine>(store: &Store<E>, n: u64) {
    let mut ops = Vec::with_capacity(10_000);
    for i in 0..n {
        ops.push(Op::PutRetained {
            topic: format!("devices/{:04}/{i}/state", i % 1000).as_str().into(),
            message: message(64),
        });
        if ops.len() == 10_000 {
            store
                .commit_blocking(std::mem::take(&mut ops))
                .expect("fill");
        }
    }
    store.commit_blocking(ops).expect("fill");
}

/// Opens and loads twice; returns (open, open + load) of each.
fn time_opens<E: Engine>(
    dir: &Path,
    n: u64,
    open: &impl Fn(&Path, StoreOptions) -> Store<E>,
) -> Vec<(Duration, Duration)> {
    let mut opens = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        let store = open(dir, never());
        let opened = t.elapsed();
        let r = store.load(SystemTime::now()).expect("load");
        assert_eq!(r.retained.len() as u64, n, "retained messages lost");
        let loaded = t.elapsed();
        opens.push((opened, loaded));
        store.close();
    }
    opens
}

fn restart<E: Engine>(dir: &Path, n: u64, open: &impl Fn(&Path, StoreOptions) -> Store<E>) {
    let t = Instant::now();
    {
        let store = open(dir, never());
        fill_retained(&store, n);
        store.close();
    }
    let fill = t.elapsed();
    let size = dir_size(dir);
    let opens = time_opens(dir, n, open);
    println!(
        "- {n} retained messages (64 B payload): written and closed in {:.2} s ({:.0}/s), {:.0} MB on disk; open {} / open + load {} (first), {} / {} (second)",
        fill.as_secs_f64(),
        n as f64 / fill.as_secs_f64(),
        size as f64 / 1e6,
        ms(opens[0].0),
        ms(opens[0].1),
        ms(opens[1].0),
        ms(opens[1].1),
    );
}

/// Like `restart`, but the writing process dies without closing the store (abort), so
/// the next open recovers from whatever the engine left (fjall replays its journal).
fn restart_after_crash<E: Engine>(
    name: &str,
    dir: &Path,
    n: u64,
    open: &impl Fn(&Path, StoreOptions) -> Store<E>,
) {
    let exe = std::env::current_exe().expect("bench binary");
    let status = std::process::Command::new(exe)
        .args([
            "--crash-fill",
            name,
            &dir.display().to_string(),
            &n.to_string(),
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("child");
    assert!(!status.success(), "the child should have aborted");
    if name == "redb" {
        // redb keeps nothing of non-durable commits after a crash: measure the open
        // of what the last durable commit left (nothing, since the child used Never).
        let t = Instant::now();
        let store = open(dir, never());
        let opened = t.elapsed();
        let r = store.load(SystemTime::now()).expect("load");
        println!(
            "- after a crash while writing {n} retained with Never: open {} (repair of the unclean file), {} retained survived",
            ms(opened),
            r.retained.len()
        );
        return;
    }
    let opens = time_opens(dir, n, open);
    println!(
        "- {n} retained, writer killed (abort) before closing: open {} / open + load {} (first, recovery), {} / {} (second)",
        ms(opens[0].0),
        ms(opens[0].1),
        ms(opens[1].0),
        ms(opens[1].1),
    );
}

/// Bytes actually allocated (journals are preallocated sparse files).
fn dir_size(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}
