//! Slow consumers (docs/design/slow-consumers.md): one subscriber that stops reading must
//! not slow the publisher or any other subscriber. Its queue is bounded, what does not fit
//! is dropped for it alone and counted, and once it has been slow for
//! `slow_consumer_timeout` it is disconnected.
//!
//! A stuck subscriber here is a real socket with a 4 KiB receive buffer that the test
//! stops reading once subscribed: the kernel's buffers fill, then the broker's write
//! buffer, then the session's queue. Every test counts messages; none times anything.

mod common;

use common::*;
use midge_broker::session::QueueSizes;
use midge_broker::Config;
use midge_proto::{ByteStr, Packet, ProtocolVersion, QoS, ReasonCode};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

/// The queue limit of these brokers (the default is 1,000; smaller makes drops come sooner).
const QUEUE: usize = 100;
/// Payload bytes of each message.
const PAYLOAD: usize = 1024;
/// Messages per run: 10 MB, more than a stuck socket, the broker's write buffer and a
/// queue of `QUEUE` hold together.
const N: usize = 10_000;
/// How far the publisher may run ahead of the healthy subscriber: less than its queue
/// limit, so that nothing is dropped for it.
const AHEAD: usize = QUEUE / 2;

async fn broker(tweak: impl FnOnce(&mut Config)) -> TestBroker {
    TestBroker::start_with(|c| {
        c.max_queued_messages = QUEUE;
        tweak(c);
    })
    .await
}

fn sizes(b: &TestBroker, client_id: &str) -> QueueSizes {
    b.broker
        .as_ref()
        .expect("running")
        .inner()
        .sessions
        .get(client_id)
        .expect("session exists")
        .queue_sizes()
}

fn stat(
    b: &TestBroker,
    pick: impl Fn(&midge_broker::sys::Stats) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    let stats = &b.broker.as_ref().expect("running").inner().stats;
    pick(stats).load(Ordering::Relaxed)
}

/// Message `i`: its number, then padding to `PAYLOAD` bytes.
fn payload(i: usize) -> String {
    let mut s = format!("{i:06}:");
    s.extend(std::iter::repeat_n('x', PAYLOAD - s.len()));
    s
}

fn number(text: &str) -> usize {
    text.split(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a test message: {text:.20}"))
}

/// A subscriber to `filter` on a socket with a small receive buffer, connected as
/// `tweak` says. The test stops reading it after this returns.
async fn stuck(
    b: &TestBroker,
    version: ProtocolVersion,
    filter: &str,
    qos: QoS,
    tweak: impl FnOnce(&mut midge_proto::Connect),
) -> TestClient {
    let (mut c, ack) = TestClient::tcp_small_window(b.addr, version, 4096)
        .await
        .connect_as(tweak)
        .await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    c.subscribe(filter, qos).await;
    c
}

/// A subscriber that reads and acknowledges messages in a task of its own until it has
/// `target` of them, publishing how many it has so far; its task returns the client and
/// the message numbers in arrival order.
struct Reader {
    count: watch::Receiver<usize>,
    target: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<(TestClient, Vec<usize>)>,
}

impl Reader {
    fn spawn(mut c: TestClient, target: usize) -> Reader {
        let (tx, count) = watch::channel(0);
        let target = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(target));
        let goal = target.clone();
        let task = tokio::spawn(async move {
            let mut got = Vec::new();
            // Short waits, so that a target lowered meanwhile is seen; silence for
            // RECV_TIMEOUT in all is a failure.
            let step = Duration::from_millis(50);
            let mut idle = Duration::ZERO;
            while got.len() < goal.load(Ordering::Acquire) {
                match c.recv_within(step).await {
                    Ok(Some(Packet::Publish(p))) => {
                        c.ack(&p).await;
                        got.push(number(common::text(&p)));
                        let _ = tx.send(got.len());
                        idle = Duration::ZERO;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("reader's connection closed after {} messages", got.len()),
                    Err(()) => {
                        idle += step;
                        assert!(
                            idle < RECV_TIMEOUT,
                            "reader got nothing more after {} messages",
                            got.len()
                        );
                    }
                }
            }
            (c, got)
        });
        Reader {
            count,
            target,
            task,
        }
    }

    /// Stops once it has `n` messages.
    fn stop_at(&self, n: usize) {
        self.target.store(n, Ordering::Release);
    }

    async fn finish(self) -> (TestClient, Vec<usize>) {
        self.task.await.expect("reader")
    }
}

/// Publishes messages `0..n` on `topic` at `qos`, keeping at most 20 unacknowledged (the
/// broker's Receive Maximum) and never more than `ahead` ahead of what `paced_by` has
/// received, so that the publisher cannot outrun the healthy subscriber it is measured
/// against (that subscriber's own queue limit is not what these tests are about).
/// Returns how many acknowledgements came back.
async fn publish(
    publ: &mut TestClient,
    topic: &str,
    qos: QoS,
    n: usize,
    paced_by: &mut watch::Receiver<usize>,
    ahead: usize,
) -> usize {
    let mut unacked = std::collections::VecDeque::new();
    let mut acked = 0;
    for i in 0..n {
        while *paced_by.borrow() + ahead <= i {
            tokio::time::timeout(RECV_TIMEOUT, paced_by.changed())
                .await
                .unwrap_or_else(|_| {
                    panic!("the healthy subscriber got stuck at {}", *paced_by.borrow())
                })
                .expect("reader alive");
        }
        if qos != QoS::AtMostOnce && unacked.len() >= 20 {
            acked += wait_ack(publ, unacked.pop_front()).await;
        }
        let mut p = publish_packet(topic, &payload(i), qos);
        if qos != QoS::AtMostOnce {
            p.packet_id = publ.next_packet_id();
            unacked.push_back(p.packet_id);
        }
        publ.send(&Packet::Publish(p)).await;
    }
    while let Some(id) = unacked.pop_front() {
        acked += wait_ack(publ, Some(id)).await;
    }
    acked
}

async fn wait_ack(publ: &mut TestClient, id: Option<u16>) -> usize {
    let Some(id) = id else { return 0 };
    publ.wait_for(|p| matches!(p, Packet::PubAck(a) if a.packet_id == id))
        .await;
    1
}

/// A healthy subscriber of `filter` and a publisher on `slow/t`: publishes `n` messages
/// at `qos`, paced by what the healthy one received. Returns both clients, the message
/// numbers the healthy one got, in order, and the acknowledgements the publisher got.
async fn healthy_run(
    b: &TestBroker,
    v: ProtocolVersion,
    filter: &str,
    qos: QoS,
    n: usize,
) -> (TestClient, TestClient, Vec<usize>, usize) {
    let mut healthy = b.client(v, "healthy").await;
    healthy.subscribe(filter, qos).await;
    let mut reader = Reader::spawn(healthy, n);
    let mut publ = b.client(v, "publisher").await;
    let acked = publish(&mut publ, "slow/t", qos, n, &mut reader.count, AHEAD).await;
    let (healthy, got) = reader.finish().await;
    (healthy, publ, got, acked)
}

/// Runs one stuck and one healthy subscriber on `slow/t` at `qos` and checks that the
/// healthy one and the publisher are not held up: every message reaches the healthy
/// subscriber, in order, every QoS 1 PUBLISH is acknowledged, and the stuck
/// subscriber's messages are dropped for it alone.
async fn stuck_and_healthy(version: ProtocolVersion, qos: QoS) {
    let b = broker(|_| {}).await;
    let stuck = stuck(&b, version, "slow/t", qos, |c| c.client_id = "stuck".into()).await;
    let mut healthy = b.client(version, "healthy").await;
    healthy.subscribe("slow/t", qos).await;
    let mut reader = Reader::spawn(healthy, N);
    let mut publ = b.client(version, "publisher").await;
    let acked = publish(&mut publ, "slow/t", qos, N, &mut reader.count, AHEAD).await;
    let (_healthy, got) = reader.finish().await;
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "{version:?} {qos:?}: the healthy subscriber gets every message in order"
    );
    if qos != QoS::AtMostOnce {
        assert_eq!(acked, N, "{version:?}: every PUBLISH acknowledged");
    }
    let dropped = sizes(&b, "stuck").dropped;
    assert!(
        dropped > 0,
        "{version:?} {qos:?}: the stuck subscriber's messages were dropped"
    );
    assert_eq!(sizes(&b, "healthy").dropped, 0);
    assert_eq!(
        stat(&b, |s| &s.messages_dropped),
        dropped,
        "every drop was the stuck subscriber's, and counted in $SYS/broker/publish/messages/dropped"
    );
    assert_eq!(stat(&b, |s| &s.publish_paced), 0, "no publisher was held");
    let queued = sizes(&b, "stuck");
    assert!(
        queued.in_memory <= QUEUE,
        "the stuck queue stayed within its limit: {queued:?}"
    );
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_qos0_subscriber_slows_neither_the_publisher_nor_other_subscribers() {
    for v in V3_AND_V5 {
        stuck_and_healthy(v, QoS::AtMostOnce).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_qos1_subscriber_slows_neither_the_publisher_nor_other_subscribers() {
    for v in V3_AND_V5 {
        stuck_and_healthy(v, QoS::AtLeastOnce).await;
    }
}

/// A persistent stuck subscriber keeps what its queue policy keeps: its in-flight window
/// and its queue, exactly the messages that were not dropped, delivered in order when it
/// comes back [MQTT-4.6.0-6] (a non-shared subscription's messages in publish order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_stuck_subscriber_keeps_what_its_queue_policy_keeps() {
    let dir = TempDir::new("slow-persistent");
    let data_dir = dir.path("data");
    let b = broker(|c| {
        c.persistence = Some(midge_broker::Persistence {
            data_dir: data_dir.clone(),
            durability: midge_broker::Durability::default(),
        });
    })
    .await;
    let v = V5;
    let stuck = stuck(&b, v, "slow/t", QoS::AtLeastOnce, |c| {
        c.client_id = "stuck".into();
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(300);
    })
    .await;
    let n = 2_000;
    let (_healthy, _publ, got, acked) = healthy_run(&b, v, "slow/t", QoS::AtLeastOnce, n).await;
    assert_eq!(acked, n);
    assert_eq!(got.len(), n);
    let dropped = sizes(&b, "stuck").dropped as usize;
    assert!(dropped > 0);
    // Gone without reading anything; back on a fresh connection.
    stuck.drop_connection();
    let (mut back, present) = TestClient::connect_persistent(b.addr, v, "stuck").await;
    assert!(present, "the session outlived the stuck connection");
    let mut kept = Vec::new();
    while kept.len() < n - dropped {
        let p = back.recv_publish_acked().await;
        let i = number(common::text(&p));
        if !kept.contains(&i) {
            kept.push(i);
        }
    }
    back.assert_no_publish().await;
    let mut sorted = kept.clone();
    sorted.sort_unstable();
    assert_eq!(kept, sorted, "in publish order");
    assert!(
        kept.len() <= QUEUE + 20,
        "no more than the in-flight window and the queue were kept: {}",
        kept.len()
    );
    assert_eq!(
        kept,
        (0..kept.len()).collect::<Vec<_>>(),
        "the oldest were kept, the newest dropped (as Mosquitto does)"
    );
    // The store is closed before its directory goes (the session's expiry timer would
    // otherwise hold it until the runtime ends, after the directory was removed).
    if let Some(broker) = b.broker {
        broker
            .shutdown_within(Duration::from_secs(10))
            .await
            .expect("store closed");
    }
    drop(dir);
}

/// In a shared group, a member that does not keep up gets no share while another member
/// has room: nothing is dropped, the publisher is not held, and every message reaches
/// exactly one member (the stuck one's, once it reads again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_group_passes_over_a_member_that_does_not_keep_up() {
    for v in V3_AND_V5 {
        let b = broker(|_| {}).await;
        let mut stuck = stuck(&b, v, "$share/g/slow/t", QoS::AtLeastOnce, |c| {
            c.client_id = "stuck".into()
        })
        .await;
        let mut healthy = b.client(v, "healthy").await;
        healthy.subscribe("$share/g/slow/t", QoS::AtLeastOnce).await;
        let mut reader = Reader::spawn(healthy, usize::MAX);
        let mut publ = b.client(v, "publisher").await;
        // Paced by the healthy member only: the stuck member's share stops growing once
        // it is full, so the healthy one must get everything after that.
        let acked = publish(
            &mut publ,
            "slow/t",
            QoS::AtLeastOnce,
            N,
            &mut reader.count,
            AHEAD + QUEUE + 20,
        )
        .await;
        assert_eq!(acked, N);
        assert_eq!(
            stat(&b, |s| &s.messages_dropped),
            0,
            "{v:?}: nothing dropped while a member had room"
        );
        assert_eq!(stat(&b, |s| &s.publish_paced), 0);
        // The stuck member holds its in-flight window and its queue; it reads them now.
        let s = sizes(&b, "stuck");
        let held = s.inflight + s.in_memory;
        reader.stop_at(N - held);
        let mut from_stuck = Vec::new();
        while from_stuck.len() < held {
            from_stuck.push(number(common::text(&stuck.recv_publish_acked().await)));
        }
        // The reader stops once both together have all.
        let (_, from_healthy) = reader.finish().await;
        let mut all: Vec<usize> = from_healthy.iter().chain(&from_stuck).copied().collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..N).collect::<Vec<_>>(),
            "{v:?}: each message reached exactly one member"
        );
        assert!(
            held <= QUEUE + 20,
            "{v:?}: the stuck member stopped getting a share once full ({held})"
        );
    }
}

/// Separate groups each get every message: a stuck member of one group does not hold up
/// another group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_shared_group_does_not_slow_another_group() {
    let b = broker(|_| {}).await;
    let _stuck = stuck(&b, V5, "$share/a/slow/t", QoS::AtLeastOnce, |c| {
        c.client_id = "stuck".into()
    })
    .await;
    let (_healthy, _publ, got, acked) =
        healthy_run(&b, V5, "$share/b/slow/t", QoS::AtLeastOnce, N).await;
    assert_eq!(acked, N);
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    assert!(sizes(&b, "stuck").dropped > 0);
}

/// A subscriber with a will on `gone/<id>` that stops reading, and a watcher of the wills.
async fn stuck_with_will(b: &TestBroker, v: ProtocolVersion, id: &str, qos: QoS) -> TestClient {
    let topic = format!("gone/{id}");
    stuck(b, v, "slow/t", qos, |c| {
        c.client_id = ByteStr::from(id);
        c.will = Some(will(&topic, "slow", QoS::AtLeastOnce, false));
    })
    .await
}

/// [MQTT-3.1.2-8] the will of a client the broker disconnects is published; Midge sends
/// 5.0 clients DISCONNECT 0x97 Quota exceeded first [MQTT-3.14.2-1].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_whose_queue_stays_full_is_disconnected_after_the_slow_consumer_timeout() {
    for v in V3_AND_V5 {
        let b = broker(|c| c.slow_consumer_timeout = Duration::from_secs(1)).await;
        let mut watcher = b.client(V5, "watcher").await;
        watcher.subscribe("gone/#", QoS::AtLeastOnce).await;
        let mut stuck = stuck_with_will(&b, v, "stuck", QoS::AtLeastOnce).await;
        let mut healthy = b.client(v, "healthy").await;
        healthy.subscribe("slow/t", QoS::AtLeastOnce).await;
        let total = 3 * (QUEUE + 20);
        let mut reader = Reader::spawn(healthy, total);
        let mut publ = b.client(v, "publisher").await;
        publish(
            &mut publ,
            "slow/t",
            QoS::AtLeastOnce,
            total,
            &mut reader.count,
            AHEAD,
        )
        .await;
        let (mut healthy, _) = reader.finish().await;
        assert!(stat(&b, |s| &s.messages_dropped) > 0);
        // Its queue stays full from here: the will says when the broker gave up on it.
        let w = watcher.recv_publish_acked().await;
        assert_eq!(w.topic.as_str(), "gone/stuck", "{v:?}");
        assert_eq!(
            stat(&b, |s| &s.slow_disconnected),
            1,
            "$SYS/broker/clients/slow_disconnected"
        );
        // It reads again: what was in flight, then (5.0) DISCONNECT 0x97, then the end.
        stuck.expect_disconnect(ReasonCode::QUOTA_EXCEEDED).await;
        // The healthy subscriber, whose queue was never full, is still connected.
        healthy.ping().await;
        publ.publish("slow/t", "after", QoS::AtLeastOnce).await;
        assert_eq!(common::text(&healthy.recv_publish_acked().await), "after");
    }
}

/// A subscriber whose socket accepts nothing while the broker has bytes for it is slow
/// even when its queue has no limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_whose_socket_accepts_nothing_is_disconnected_after_the_slow_consumer_timeout()
{
    let b = broker(|c| {
        c.slow_consumer_timeout = Duration::from_secs(1);
        c.max_queued_messages = 0;
    })
    .await;
    let mut watcher = b.client(V5, "watcher").await;
    watcher.subscribe("gone/#", QoS::AtLeastOnce).await;
    let _stuck = stuck_with_will(&b, V5, "stuck", QoS::AtMostOnce).await;
    let mut publ = b.client(V5, "publisher").await;
    for i in 0..N {
        publ.send(&Packet::Publish(publish_packet(
            "slow/t",
            &payload(i),
            QoS::AtMostOnce,
        )))
        .await;
    }
    let w = watcher.recv_publish_acked().await;
    assert_eq!(w.topic.as_str(), "gone/stuck");
    assert_eq!(stat(&b, |s| &s.slow_disconnected), 1);
    assert_eq!(
        stat(&b, |s| &s.messages_dropped),
        0,
        "no queue limit: nothing was dropped"
    );
}

/// Opt-in publisher back-pressure: a stuck subscriber holds publishers, but only for its
/// budget (`publisher_backpressure_max`, here 100 ms per second); after that it holds
/// nobody, so the publisher still gets through every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_publisher_backpressure_a_stuck_subscriber_holds_publishers_only_for_its_budget() {
    let b = broker(|c| {
        c.publisher_backpressure = true;
        c.publisher_backpressure_max = Duration::from_millis(100);
    })
    .await;
    let _stuck = stuck(&b, V5, "slow/t", QoS::AtLeastOnce, |c| {
        c.client_id = "stuck".into()
    })
    .await;
    let n = 3_000;
    let (_healthy, _publ, got, acked) = healthy_run(&b, V5, "slow/t", QoS::AtLeastOnce, n).await;
    assert_eq!(acked, n);
    assert_eq!(got, (0..n).collect::<Vec<_>>());
    assert!(
        stat(&b, |s| &s.publish_paced) > 0,
        "the stuck subscriber held the publisher"
    );
    let stuck = sizes(&b, "stuck");
    assert!(
        stuck.dropped > 0,
        "once its budget was spent, its messages were dropped"
    );
    assert!(stuck.in_memory <= 2 * QUEUE, "{stuck:?}");
}
