//! Fills a data directory with the state of a large broker, for the restart benchmark
//! (`bench/persistence.sh`): retained messages and offline persistent sessions, each
//! session with one subscription and some with a queued message, written through the
//! same `Op`s and writer thread the broker uses, so the files are what a broker that had
//! received all this would leave behind (after a clean shutdown).
//!
//! ```text
//! cargo run --release -p midge-store --example populate -- DIR RETAINED SESSIONS [QUEUED_EVERY]
//! ```
//!
//! Retained topics are `site/<i / 1000>/dev/<i % 1000>/state` (64 B payload, QoS 1).
//! Session `i` is client `offline-<i>`, MQTT 5.0 with a 7-day expiry, disconnected now,
//! subscribed at QoS 1 to `cmd/offline-<i>/#`; every `QUEUED_EVERY`-th session (default 10,
//! 0 = none) has one queued QoS 1 message (one body shared by 1,000 such sessions, as a
//! broker stores a fan-out).

use bytes::Bytes;
use midge_proto::ByteStr;
use midge_store::{
    unix_millis, Delivery, DiskStore, Durability, MessageProperties, MessageRecord, Op,
    SessionRecord, SessionStore, StoreOptions, SubscriptionRecord,
};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Ops per commit: large enough that the writer's per-batch cost vanishes.
const BATCH: usize = 10_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: populate DIR RETAINED SESSIONS [QUEUED_EVERY]");
        std::process::exit(2);
    }
    let number = |s: &str| -> usize {
        s.replace(['_', ','], "").parse().unwrap_or_else(|_| {
            eprintln!("not a number: {s}");
            std::process::exit(2)
        })
    };
    let (dir, retained, sessions) = (&args[0], number(&args[1]), number(&args[2]));
    let queued_every = args.get(3).map_or(10, |s| number(s));
    let store = DiskStore::open(
        dir,
        StoreOptions {
            durability: Durability::Never,
        },
    )
    .unwrap_or_else(|e| {
        eprintln!("cannot open {dir}: {e}");
        std::process::exit(1)
    });
    let started = Instant::now();
    write_retained(&store, retained);
    let after_retained = started.elapsed();
    let queued = write_sessions(&store, sessions, queued_every);
    store.close();
    println!(
        "wrote {retained} retained ({:.1} s), {sessions} sessions with 1 subscription each, \
         {queued} queued messages; total {:.1} s including close",
        after_retained.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

fn message(topic: String, payload: Bytes, retain: bool) -> Arc<MessageRecord> {
    Arc::new(MessageRecord {
        topic,
        payload,
        qos: 1,
        retain,
        properties: MessageProperties::default(),
        expires_at: None,
    })
}

fn commit(store: &DiskStore, ops: &mut Vec<Op>) {
    if ops.is_empty() {
        return;
    }
    if let Err(e) = store.commit_blocking(std::mem::take(ops)) {
        eprintln!("commit failed: {e}");
        std::process::exit(1);
    }
}

fn write_retained(store: &DiskStore, n: usize) {
    let payload = Bytes::from(vec![b'r'; 64]);
    let mut ops = Vec::with_capacity(BATCH);
    for i in 0..n {
        let topic = format!("site/{}/dev/{}/state", i / 1000, i % 1000);
        ops.push(Op::PutRetained {
            topic: ByteStr::from(topic.as_str()),
            message: message(topic, payload.clone(), true),
        });
        if ops.len() == BATCH {
            commit(store, &mut ops);
        }
    }
    commit(store, &mut ops);
}

/// Returns the number of queue entries written.
fn write_sessions(store: &DiskStore, n: usize, queued_every: usize) -> usize {
    let now = unix_millis(SystemTime::now());
    let body = message("cmd/all/reboot".into(), Bytes::from(vec![b'q'; 64]), false);
    let mut ops = Vec::with_capacity(BATCH);
    let mut deliveries = Vec::new();
    let mut queued = 0;
    for i in 0..n {
        let client = ByteStr::from(format!("offline-{i}").as_str());
        ops.push(Op::PutSession {
            client: client.clone(),
            session: SessionRecord {
                expiry_interval: Some(7 * 24 * 3600),
                disconnected_at: Some(now),
                protocol_level: 5,
                // Below the one queued message's sequence number (1), so it is theirs.
                first_seq: 0,
            },
        });
        ops.push(Op::PutSubscription {
            client: client.clone(),
            filter: ByteStr::from(format!("cmd/offline-{i}/#").as_str()),
            subscription: SubscriptionRecord {
                options: 1,
                id: None,
            },
        });
        if queued_every > 0 && i % queued_every == 0 {
            deliveries.push(Delivery {
                client,
                seq: 1,
                qos: 1,
                retain: false,
                subscription_ids: Vec::new(),
            });
        }
        if deliveries.len() == 1000 || (i + 1 == n && !deliveries.is_empty()) {
            queued += deliveries.len();
            ops.push(Op::Enqueue {
                message_id: store.next_message_id(),
                message: body.clone(),
                deliveries: std::mem::take(&mut deliveries),
            });
        }
        if ops.len() >= BATCH {
            commit(store, &mut ops);
        }
    }
    commit(store, &mut ops);
    queued
}
