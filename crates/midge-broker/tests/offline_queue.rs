//! Bounded memory for offline queues (issue 4): with a store, the QoS 1/2 messages queued
//! for an offline persistent session live in the store only, while the broker runs and
//! after a restart; the session's next connection pages them in a window at a time, in
//! order and once each [MQTT-4.6.0-6]. The queue limits keep counting them.
//!
//! The memory bound is read through `SessionCell::queue_sizes` (messages in memory, in
//! the store only, in flight).

mod common;

use common::*;
use midge_broker::session::{QueueSizes, PAGE};
use midge_broker::{Broker, Config, Persistence};
use midge_proto::{Packet, ProtocolVersion, Publish, QoS};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A data directory removed at the end of the test.
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "midge-offline-queue-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        DataDir(dir)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn with_store(dir: &DataDir, max_queued: usize) -> impl FnOnce(&mut Config) + '_ {
    move |c: &mut Config| {
        c.persistence = Some(Persistence {
            data_dir: dir.0.clone(),
            durability: midge_broker::Durability::Always,
        });
        c.max_queued_messages = max_queued;
    }
}

fn sizes(tb: &TestBroker, client_id: &str) -> QueueSizes {
    let broker = tb.broker.as_ref().expect("running");
    broker
        .inner()
        .sessions
        .get(client_id)
        .expect("session exists")
        .queue_sizes()
}

/// Publishes `payload(i)` for `i` in `range` at QoS 1 on `topic`, all sent before the
/// PUBACKs are awaited (as a client with a large window would).
async fn publish_all(p: &mut TestClient, topic: &str, range: std::ops::Range<u32>) {
    for chunk in range.collect::<Vec<_>>().chunks(500) {
        let mut ids = Vec::new();
        for &i in chunk {
            let mut packet = publish_packet(topic, &payload(i), QoS::AtLeastOnce);
            packet.packet_id = p.next_packet_id();
            ids.push(packet.packet_id);
            p.send(&Packet::Publish(packet)).await;
        }
        for id in ids {
            p.wait_for(|pk| matches!(pk, Packet::PubAck(a) if a.packet_id == id))
                .await;
        }
    }
}

fn payload(i: u32) -> String {
    format!("{i:08}")
}

fn index(p: &Publish) -> u32 {
    std::str::from_utf8(&p.payload)
        .expect("utf-8")
        .parse()
        .expect("a number")
}

/// A persistent subscriber to `t` at QoS 1 that then goes offline.
async fn offline_subscriber(tb: &TestBroker, id: &str) {
    let (mut s, _) = TestClient::connect_persistent(tb.addr, V5, id).await;
    s.subscribe("t", QoS::AtLeastOnce).await;
    leave(tb, id, s, true).await;
}

/// Closes the client's connection (with DISCONNECT, or by dropping it) and waits until
/// the broker has detached it from its session.
async fn leave(tb: &TestBroker, id: &str, s: TestClient, disconnect: bool) {
    let cell = tb
        .broker
        .as_ref()
        .expect("running")
        .inner()
        .sessions
        .get(id)
        .expect("session exists");
    let detached = cell.notify.notified();
    tokio::pin!(detached);
    detached.as_mut().enable();
    if disconnect {
        s.disconnect().await;
    } else {
        s.drop_connection();
    }
    tokio::time::timeout(RECV_TIMEOUT, detached)
        .await
        .expect("the session is detached");
}

/// Receives `n` publishes, acknowledging each, and checks after each one that the
/// session holds at most a page in memory. Returns the payload indexes in arrival order.
async fn receive_paged(tb: &TestBroker, s: &mut TestClient, id: &str, n: usize) -> Vec<u32> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let p = s.recv_publish_acked().await;
        assert!(!p.dup, "no resend without a reconnect");
        got.push(index(&p));
        // While messages wait in the store, memory holds at most a page of them. Once
        // the backlog is drained, new messages for the online client are queued in
        // memory as usual (bounded by the queue limits and publisher back-pressure).
        let sz = sizes(tb, id);
        assert!(
            sz.in_memory <= PAGE || sz.in_store == 0,
            "at most a page in memory while paging: {sz:?}"
        );
    }
    got
}

#[tokio::test]
async fn offline_session_queue_lives_in_the_store_and_is_paged_in_order() {
    const N: u32 = 5000;
    let dir = DataDir::new("running");
    let mut tb = TestBroker::start_with(with_store(&dir, 10_000)).await;
    offline_subscriber(&tb, "sub").await;
    let mut p = tb.client(V5, "pub").await;
    publish_all(&mut p, "t", 0..N).await;
    let sz = sizes(&tb, "sub");
    assert_eq!(
        (sz.in_memory, sz.in_store, sz.bytes),
        (0, N as usize, N as usize * 8),
        "offline: every queued message in the store only"
    );

    let (mut s, present) = TestClient::connect_persistent(tb.addr, V5, "sub").await;
    assert!(present);
    let got = receive_paged(&tb, &mut s, "sub", N as usize).await;
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "all, in order, once");
    s.assert_no_publish().await;
    assert_eq!(sizes(&tb, "sub"), QueueSizes::default());
    stop(&mut tb).await;
}

#[tokio::test]
async fn messages_queued_while_online_go_to_memory_and_are_released_at_disconnect() {
    let dir = DataDir::new("release");
    let mut tb = TestBroker::start_with(with_store(&dir, 10_000)).await;
    let (mut s, _) = TestClient::connect_persistent(tb.addr, V5, "sub").await;
    s.subscribe("t", QoS::AtLeastOnce).await;
    let mut p = tb.client(V5, "pub").await;
    // More than the in-flight window (20): the rest waits in memory for PUBACKs.
    publish_all(&mut p, "t", 0..100).await;
    let sz = sizes(&tb, "sub");
    assert_eq!(
        (sz.in_store, sz.in_memory + sz.inflight),
        (0, 100),
        "{sz:?}"
    );
    // Acknowledge nothing; drop the connection: the 20 in flight stay in memory (they
    // are resent at once), the 80 queued leave memory.
    leave(&tb, "sub", s, false).await;
    let sz = sizes(&tb, "sub");
    assert_eq!((sz.in_memory, sz.in_store, sz.inflight), (0, 80, 20));
    let (mut s, present) = TestClient::connect_persistent(tb.addr, V5, "sub").await;
    assert!(present);
    let mut got = Vec::new();
    for _ in 0..100 {
        let m = s.recv_publish_acked().await;
        // Only the 20 in flight may come again, with DUP [MQTT-4.4.0-1].
        assert_eq!(
            m.dup,
            index(&m) < 20,
            "DUP only on the resent in-flight messages"
        );
        got.push(index(&m));
    }
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    s.assert_no_publish().await;
    stop(&mut tb).await;
}

#[tokio::test]
async fn restart_keeps_offline_queue_in_the_store_until_the_client_connects() {
    const N: u32 = 5000;
    let dir = DataDir::new("restart");
    let mut tb = TestBroker::start_with(with_store(&dir, 10_000)).await;
    offline_subscriber(&tb, "sub").await;
    let mut p = tb.client(V5, "pub").await;
    publish_all(&mut p, "t", 0..N).await;
    p.disconnect().await;
    restart(&mut tb, &dir, 10_000).await;

    let sz = sizes(&tb, "sub");
    assert_eq!(
        (sz.in_memory, sz.in_store, sz.bytes),
        (0, N as usize, N as usize * 8),
        "recovered: counted, not read"
    );
    let (mut s, present) = TestClient::connect_persistent(tb.addr, V5, "sub").await;
    assert!(present);
    let got = receive_paged(&tb, &mut s, "sub", N as usize).await;
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "all, in order, once");
    s.assert_no_publish().await;
    stop(&mut tb).await;
}

/// Stops the broker and waits until its state is gone, and with it the store, which
/// closes its files when dropped. (The data directory must outlive the store: fjall
/// cannot flush into a removed directory and its close then never returns.)
async fn stop(tb: &mut TestBroker) {
    let broker = tb.broker.take().expect("running");
    let inner = Arc::downgrade(broker.inner());
    broker.shutdown(Duration::from_secs(5)).await;
    // The listener and connection tasks let go of the broker as they end; on this
    // single-threaded runtime the drop (store close included) is complete once seen.
    for _ in 0..100_000 {
        if inner.upgrade().is_none() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the stopped broker still holds its store");
}

/// Stops the broker and starts a new one on the same data directory and port.
async fn restart(tb: &mut TestBroker, dir: &DataDir, max_queued: usize) {
    stop(tb).await;
    let addr = tb.addr;
    let mut config = test_config(addr);
    with_store(dir, max_queued)(&mut config);
    tb.broker = Some(Broker::start(config).await.expect("broker restarts"));
}

#[tokio::test]
async fn messages_published_while_the_backlog_is_paged_in_come_after_it() {
    const BACKLOG: u32 = 2000;
    const LIVE: u32 = 2000;
    let dir = DataDir::new("live");
    let mut tb = TestBroker::start_with(with_store(&dir, 10_000)).await;
    offline_subscriber(&tb, "sub").await;
    let mut p = tb.client(V5, "pub").await;
    publish_all(&mut p, "t", 0..BACKLOG).await;

    let (mut s, _) = TestClient::connect_persistent(tb.addr, V5, "sub").await;
    let mut got = receive_paged(&tb, &mut s, "sub", 10).await;
    // Online now, but with a backlog: new messages go behind it, into the store.
    let before = sizes(&tb, "sub");
    publish_all(&mut p, "t", BACKLOG..BACKLOG + 100).await;
    let after = sizes(&tb, "sub");
    assert!(
        after.in_store >= before.in_store + 100,
        "{before:?} -> {after:?}"
    );
    // The publisher goes on while the subscriber pages the backlog in.
    let publisher = tokio::spawn(async move {
        for start in (BACKLOG + 100..BACKLOG + LIVE).step_by(100) {
            publish_all(&mut p, "t", start..start + 100).await;
        }
        p
    });
    got.extend(receive_paged(&tb, &mut s, "sub", (BACKLOG + LIVE - 10) as usize).await);
    let _p = publisher.await.expect("publisher");
    assert_eq!(
        got,
        (0..BACKLOG + LIVE).collect::<Vec<_>>(),
        "in publish order, each once [MQTT-4.6.0-6]"
    );
    s.assert_no_publish().await;
    stop(&mut tb).await;
}

#[tokio::test]
async fn offline_queue_in_the_store_stops_at_max_queued_messages() {
    let dir = DataDir::new("limit");
    let mut tb = TestBroker::start_with(with_store(&dir, 100)).await;
    offline_subscriber(&tb, "sub").await;
    let mut p = tb.client(V5, "pub").await;
    let dropped_before = dropped(&tb);
    publish_all(&mut p, "t", 0..150).await;
    assert_eq!(sizes(&tb, "sub").in_store, 100);
    assert_eq!(
        dropped(&tb) - dropped_before,
        50,
        "the rest is dropped and counted"
    );
    p.disconnect().await;

    // The limit still holds after a restart: the recovered count is the queue's length.
    restart(&mut tb, &dir, 100).await;
    let mut p = tb.client(V5, "pub").await;
    publish_all(&mut p, "t", 150..160).await;
    assert_eq!(sizes(&tb, "sub").in_store, 100);

    let (mut s, _) = TestClient::connect_persistent(tb.addr, V5, "sub").await;
    let got = receive_paged(&tb, &mut s, "sub", 100).await;
    assert_eq!(got, (0..100).collect::<Vec<_>>(), "the first 100 are kept");
    s.assert_no_publish().await;
    stop(&mut tb).await;
}

#[tokio::test]
async fn offline_qos0_messages_stay_in_memory_beside_the_stored_ones() {
    let dir = DataDir::new("qos0");
    let mut tb = TestBroker::start_with(|c| {
        with_store(&dir, 1000)(c);
        c.queue_qos0_messages = true;
    })
    .await;
    offline_subscriber(&tb, "sub").await;
    let mut p = tb.client(ProtocolVersion::V5, "pub").await;
    for i in 0..10 {
        p.publish("t", &payload(i), QoS::AtMostOnce).await;
    }
    publish_all(&mut p, "t", 10..20).await;
    let sz = sizes(&tb, "sub");
    assert_eq!((sz.in_memory, sz.in_store), (10, 10), "QoS 0 is not stored");
    let (mut s, _) = TestClient::connect_persistent(tb.addr, V5, "sub").await;
    let got = receive_paged(&tb, &mut s, "sub", 20).await;
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    stop(&mut tb).await;
}

fn dropped(tb: &TestBroker) -> u64 {
    tb.broker
        .as_ref()
        .expect("running")
        .inner()
        .stats
        .messages_dropped
        .load(Ordering::Relaxed)
}
