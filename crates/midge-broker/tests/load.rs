//! Behaviour under load: large payloads, fan-out, concurrent publishers, a subscriber
//! that stops reading, and limits on listeners and queues.

mod common;

use common::*;
use midge_proto::{Packet, QoS};
use std::collections::HashMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payload_is_delivered_intact() {
    let b = TestBroker::start().await;
    let mut sub = b.client(V5, "sub").await;
    sub.subscribe("big/t", QoS::AtLeastOnce).await;
    let mut publ = b.client(V5, "pub").await;
    let payload: String = (0..1_000_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    publ.publish("big/t", &payload, QoS::AtLeastOnce).await;
    let p = sub.recv_publish_acked().await;
    assert_eq!(p.payload.len(), payload.len());
    assert!(text(&p) == payload, "payload bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_fans_out_to_many_subscribers() {
    let b = TestBroker::start().await;
    let mut subs = Vec::new();
    for i in 0..50 {
        let v = if i % 2 == 0 { V311 } else { V5 };
        let mut s = b.client(v, &format!("fan{i}")).await;
        s.subscribe("fan/+", QoS::AtLeastOnce).await;
        subs.push(s);
    }
    let mut publ = b.client(V5, "pub").await;
    publ.publish("fan/out", "to all", QoS::AtLeastOnce).await;
    for s in subs.iter_mut() {
        assert_eq!(text(&s.recv_publish_acked().await), "to all");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_keep_their_own_order() {
    // [MQTT-4.6.0-6]: order is kept per publisher (per topic, per QoS).
    let b = TestBroker::start_with(|c| c.max_queued_messages = 0).await;
    let mut sub = b.client(V5, "sub").await;
    sub.subscribe("conc/#", QoS::AtLeastOnce).await;
    let publishers = 8;
    let per = 150;
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let addr = b.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = TestClient::connect_ok(addr, V311, &format!("p{p}")).await;
            for i in 0..per {
                c.publish(&format!("conc/{p}"), &format!("{p}:{i}"), QoS::AtLeastOnce)
                    .await;
            }
        }));
    }
    let mut next: HashMap<u32, u32> = HashMap::new();
    for _ in 0..publishers * per {
        let p = sub.recv_publish_acked().await;
        let (who, seq) = text(&p).split_once(':').expect("who:seq");
        let (who, seq): (u32, u32) = (who.parse().unwrap(), seq.parse().unwrap());
        let want = next.entry(who).or_insert(0);
        assert_eq!(seq, *want, "publisher {who} out of order");
        *want += 1;
    }
    for t in tasks {
        t.await.expect("publisher task");
    }
    sub.assert_no_publish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_does_not_block_others() {
    // Back-pressure stays with the slow connection: the publisher and other subscribers
    // carry on.
    let b = TestBroker::start_with(|c| c.max_queued_messages = 0).await;
    let mut slow = b.client(V311, "slow").await;
    slow.subscribe("bp/#", QoS::AtMostOnce).await;
    let mut fast = b.client(V311, "fast").await;
    fast.subscribe("bp/#", QoS::AtMostOnce).await;
    let mut publ = b.client(V311, "pub").await;
    let payload = "x".repeat(1024);
    let n = 3000;
    let reader = tokio::spawn(async move {
        for i in 0..n {
            let p = fast.recv_publish().await;
            assert_eq!(p.topic.as_str(), format!("bp/{i}"));
        }
        fast
    });
    for i in 0..n {
        publ.publish(&format!("bp/{i}"), &payload, QoS::AtMostOnce)
            .await;
    }
    // The publisher is still served promptly.
    publ.publish("bp/done", "done", QoS::AtLeastOnce).await;
    let mut fast = reader.await.expect("fast reader");
    assert_eq!(text(&fast.recv_publish().await), "done");
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_max_connections_is_per_listener() {
    let b = TestBroker::start_with(|c| {
        c.listeners[0].max_connections = Some(1);
        let mut second = c.listeners[0].clone();
        second.max_connections = None;
        c.listeners.push(second);
    })
    .await;
    let addrs = b.broker.as_ref().expect("running").local_addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    let mut first = TestClient::connect_ok(addrs[0], V311, "one").await;
    let mut over = TestClient::tcp(addrs[0], V311).await;
    let mut raw = bytes::BytesMut::new();
    midge_proto::encode(
        &Packet::Connect(Box::new(connect_packet(V311, "two"))),
        V311,
        &mut raw,
    );
    over.try_send_raw(&raw).await;
    assert!(over.expect_closed().await.is_empty());
    let mut other = TestClient::connect_ok(addrs[1], V311, "three").await;
    other.subscribe("l/t", QoS::AtLeastOnce).await;
    first
        .publish("l/t", "across listeners", QoS::AtLeastOnce)
        .await;
    assert_eq!(text(&other.recv_publish_acked().await), "across listeners");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queue_is_bounded_by_max_queued_bytes() {
    let b = TestBroker::start_with(|c| {
        c.max_queued_messages = 0;
        c.max_queued_bytes = 25;
    })
    .await;
    let (mut c, _) = TestClient::connect_persistent(b.addr, V5, "bytes").await;
    c.subscribe("qb/t", QoS::AtLeastOnce).await;
    c.disconnect().await;
    let mut publ = b.client(V5, "pub").await;
    for i in 0..5 {
        publ.publish("qb/t", &format!("{i}-abcdefgh"), QoS::AtLeastOnce)
            .await; // 10 bytes
    }
    let (mut c, _) = TestClient::connect_persistent(b.addr, V5, "bytes").await;
    let got: Vec<String> = c
        .drain_publishes()
        .await
        .iter()
        .map(|p| text(p).to_string())
        .collect();
    assert_eq!(got, vec!["0-abcdefgh", "1-abcdefgh"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_topics_route_like_any_other() {
    let b = TestBroker::start().await;
    let mut sub = b.client(V5, "sub").await;
    sub.subscribe("température/+/°C", QoS::AtLeastOnce).await;
    let mut publ = b.client(V311, "pub").await;
    publ.publish("température/salle/°C", "21", QoS::AtLeastOnce)
        .await;
    let p = sub.recv_publish_acked().await;
    assert_eq!(p.topic.as_str(), "température/salle/°C");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leading_and_trailing_slashes_are_levels() {
    // 4.7.1.3 examples: "/finance" matches "+/+" and "/+", not "+".
    let b = TestBroker::start().await;
    let mut two = b.client(V311, "two").await;
    two.subscribe("+/+", QoS::AtLeastOnce).await;
    let mut one = b.client(V311, "one").await;
    one.subscribe("+", QoS::AtLeastOnce).await;
    let mut publ = b.client(V311, "pub").await;
    publ.publish("/finance", "a", QoS::AtLeastOnce).await;
    publ.publish("solo", "b", QoS::AtLeastOnce).await;
    publ.publish("x/y", "c", QoS::AtLeastOnce).await;
    assert_eq!(text(&two.recv_publish_acked().await), "a");
    assert_eq!(text(&two.recv_publish_acked().await), "c");
    assert_eq!(text(&one.recv_publish_acked().await), "b");
    one.assert_no_publish().await;
}
