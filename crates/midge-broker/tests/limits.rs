//! Resource limits a client cannot get past, each counted in `$SYS` when hit.

mod common;

use common::{TestBroker, TestClient};
use midge_proto::{ByteStr, Packet, ProtocolVersion, QoS, ReasonCode, Subscribe};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

async fn suback(c: &mut TestClient, filter: &str) -> ReasonCode {
    let id = c.next_packet_id();
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: id,
        filters: vec![(ByteStr::from(filter), common::opts(QoS::AtMostOnce))],
        properties: Default::default(),
    }))
    .await;
    match c.recv().await {
        Packet::SubAck(a) => a.reason_codes.first().copied().unwrap_or_default(),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_client_are_bounded() {
    let b = TestBroker::start_with(|c| c.max_subscriptions_per_client = 2).await;
    let mut c = b.client(V5, "subs").await;
    assert_eq!(suback(&mut c, "a").await, ReasonCode::GRANTED_QOS_0);
    assert_eq!(suback(&mut c, "b").await, ReasonCode::GRANTED_QOS_0);
    // A third filter: 0x97 Quota exceeded; re-subscribing an existing one is fine.
    assert_eq!(suback(&mut c, "c").await, ReasonCode::QUOTA_EXCEEDED);
    assert_eq!(suback(&mut c, "a").await, ReasonCode::GRANTED_QOS_0);
    let mut old = b.client(V311, "subs-311").await;
    suback(&mut old, "x").await;
    suback(&mut old, "y").await;
    assert_eq!(suback(&mut old, "z").await, ReasonCode::UNSPECIFIED_ERROR);
    let stats = &b.broker.as_ref().expect("running").inner().stats;
    assert_eq!(stats.subscriptions_refused.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_length_and_levels_are_bounded() {
    let b = TestBroker::start_with(|c| {
        c.max_topic_levels = 3;
        c.max_topic_length = 20;
    })
    .await;
    let mut c = b.client(V5, "topics").await;
    assert_eq!(suback(&mut c, "a/b/c").await, ReasonCode::GRANTED_QOS_0);
    assert_eq!(
        suback(&mut c, "a/b/c/d").await,
        ReasonCode::TOPIC_FILTER_INVALID
    );
    assert_eq!(
        suback(&mut c, &"x".repeat(21)).await,
        ReasonCode::TOPIC_FILTER_INVALID
    );
    // A publish to a topic over the limit is refused with 0x90 and not delivered.
    let ack = c.publish("a/b/c/d", "deep", QoS::AtLeastOnce).await;
    assert_eq!(
        ack.map(|a| a.reason_code),
        Some(ReasonCode::TOPIC_NAME_INVALID)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_length_is_bounded() {
    let b = TestBroker::start_with(|c| c.max_client_id_length = 8).await;
    let (_c, ack) =
        TestClient::connect(b.addr, V5, |c| c.client_id = ByteStr::from("123456789")).await;
    assert_eq!(ack.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    let (_c, ack) =
        TestClient::connect(b.addr, V5, |c| c.client_id = ByteStr::from("12345678")).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_rate_per_address_is_bounded() {
    let b = TestBroker::start_with(|c| c.max_connection_rate_per_ip = 3).await;
    let mut refused = 0;
    for i in 0..6 {
        let mut c = TestClient::tcp(b.addr, V5).await;
        let mut connect = common::connect_packet(V5, &format!("rate-{i}"));
        connect.clean_start = true;
        if c.try_send_raw(&encode_connect(connect)).await {
            if let Ok(Some(Packet::ConnAck(_))) = c.recv_within(Duration::from_secs(2)).await {
                continue;
            }
        }
        refused += 1;
    }
    // At least the connections past 3 within the same second were closed at once (a
    // second boundary in the middle may let one or two more through).
    assert!(refused >= 1, "no connection was refused");
    let stats = &b.broker.as_ref().expect("running").inner().stats;
    assert_eq!(stats.connections_refused.load(Ordering::Relaxed), refused);
}

fn encode_connect(c: midge_proto::Connect) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    midge_proto::encode(&Packet::Connect(Box::new(c)), V5, &mut buf);
    buf.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_publishing_too_fast_is_slowed_down() {
    let b = TestBroker::start_with(|c| c.max_inbound_message_rate = 20).await;
    let mut sub = b.client(V5, "rate-sub").await;
    sub.subscribe("fast", QoS::AtMostOnce).await;
    let mut p = b.client(V5, "rate-pub").await;
    let start = Instant::now();
    for _ in 0..50 {
        p.publish("fast", "x", QoS::AtMostOnce).await;
    }
    for _ in 0..50 {
        sub.recv_publish().await;
    }
    // 50 messages at 20 per second take at least two rate windows; none is lost.
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "not throttled: {:?}",
        start.elapsed()
    );
    let stats = &b.broker.as_ref().expect("running").inner().stats;
    assert!(stats.publish_throttled.load(Ordering::Relaxed) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_login_failures_from_one_address_are_slowed_down() {
    let b = TestBroker::start_with(|c| {
        c.auth_failures_before_delay = 2;
        if let Some(l) = c.listeners.first_mut() {
            l.allow_anonymous = false;
        }
    })
    .await;
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let (_c, ack) =
            TestClient::connect(b.addr, V5, |c| c.client_id = ByteStr::from("guess")).await;
        assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED);
        times.push(start.elapsed());
    }
    // Failures 3, 4, 5 wait 200, 400, 800 ms.
    assert!(times[4] >= Duration::from_millis(800), "{times:?}");
    assert!(times[2] >= Duration::from_millis(200), "{times:?}");
    let stats = &b.broker.as_ref().expect("running").inner().stats;
    assert_eq!(stats.auth_failures.load(Ordering::Relaxed), 5);
}
