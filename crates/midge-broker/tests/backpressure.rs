//! Opt-in publisher back-pressure (`publisher_backpressure`, docs/design/slow-consumers.md):
//! when a connected subscriber's queue passes `max_queued_messages`, QoS 1/2 messages are
//! still queued (up to twice the limit) and the publisher's PUBACK/PUBREC is held, in
//! order, until there is room again or the subscriber's hold budget
//! (`publisher_backpressure_max` per second, here 1 s) is spent.

mod common;

use common::*;
use midge_proto::{Packet, PubResp, QoS};
use std::time::{Duration, Instant};

/// A broker with publisher back-pressure, a soft queue limit of 2 (hard limit 4) and a
/// hold budget of one second per second. Its Receive Maximum (10) lets publishers
/// pipeline the handful of messages these tests send.
async fn tight() -> TestBroker {
    TestBroker::start_with(|c| {
        c.max_queued_messages = 2;
        c.max_inflight_messages = 10;
        c.publisher_backpressure = true;
        c.publisher_backpressure_max = Duration::from_secs(1);
    })
    .await
}

/// A 5.0 subscriber with Receive Maximum 1: one message in flight towards it at a time.
async fn slow_sub(b: &TestBroker, id: &str) -> TestClient {
    let (mut c, _) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = id.into();
        c.properties.receive_maximum = Some(1);
    })
    .await;
    c.subscribe("bp/t", QoS::AtLeastOnce).await;
    c
}

/// Sends QoS 1 PUBLISH packets with ids `ids` on `topic` without waiting for PUBACKs.
async fn pipeline(c: &mut TestClient, topic: &str, ids: std::ops::RangeInclusive<u16>) {
    for id in ids {
        let mut p = publish_packet(topic, &id.to_string(), QoS::AtLeastOnce);
        p.packet_id = id;
        c.send(&Packet::Publish(p)).await;
    }
}

/// The packet ids of the PUBACKs received so far (after a PINGREQ round trip).
async fn pubacks_so_far(c: &mut TestClient) -> Vec<u16> {
    c.ping().await;
    c.pending()
        .iter()
        .filter_map(|p| match p {
            Packet::PubAck(a) => Some(a.packet_id),
            _ => None,
        })
        .collect()
}

/// Reads `n` PUBACKs and returns their packet ids in arrival order.
async fn next_pubacks(c: &mut TestClient, n: usize) -> Vec<u16> {
    let mut ids = Vec::new();
    while ids.len() < n {
        if let Packet::PubAck(a) = c.wait_for(|p| matches!(p, Packet::PubAck(_))).await {
            ids.push(a.packet_id);
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puback_is_held_while_the_subscriber_is_congested_and_nothing_is_dropped() {
    for v in V3_AND_V5 {
        let b = tight().await;
        let mut sub = slow_sub(&b, "slow").await;
        let mut publ = b.client(v, "fast").await;
        let start = Instant::now();
        // Four messages fit under the hard limit (twice max_queued_messages) even if the
        // subscriber's connection has not yet moved the first one into flight.
        pipeline(&mut publ, "bp/t", 1..=4).await;
        // Message 4 found at least 2 queued (one can be in flight): its PUBACK is held.
        let early = pubacks_so_far(&mut publ).await;
        assert!(!early.contains(&4), "{v:?}: PUBACK 4 held, got {early:?}");
        // The subscriber catches up: every message arrives, none dropped.
        for i in 1..=4 {
            let p = sub.recv_publish_acked().await;
            assert_eq!(text(&p), i.to_string(), "{v:?}");
        }
        let acks = next_pubacks(&mut publ, 4).await;
        assert_eq!(
            acks,
            vec![1, 2, 3, 4],
            "{v:?}: PUBACKs in order [MQTT-4.6.0-2]"
        );
        assert!(
            start.elapsed() < Duration::from_millis(900),
            "{v:?}: released by room, not by the 1 s budget ({:?})",
            start.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_puback_is_released_once_the_hold_budget_is_spent_without_room() {
    let b = tight().await;
    let sub = slow_sub(&b, "stuck").await;
    let mut publ = b.client(V5, "fast").await;
    let start = Instant::now();
    pipeline(&mut publ, "bp/t", 1..=5).await;
    let acks = next_pubacks(&mut publ, 5).await;
    assert_eq!(acks, vec![1, 2, 3, 4, 5]);
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(900), "held for {waited:?}");
    assert!(waited < Duration::from_secs(3), "held for {waited:?}");
    drop(sub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_stay_in_order_across_topics() {
    // [MQTT-4.6.0-2] PUBACKs in the order the PUBLISH packets were received, even when a
    // later one (no subscriber) could go at once; [MQTT-4.6.0-3] the same for PUBREC.
    let b = tight().await;
    let mut sub = slow_sub(&b, "slow").await;
    let mut publ = b.client(V5, "fast").await;
    pipeline(&mut publ, "bp/t", 1..=4).await;
    pipeline(&mut publ, "free/t", 5..=5).await;
    let mut q2 = publish_packet("free/q2", "x", QoS::ExactlyOnce);
    q2.packet_id = 6;
    publ.send(&Packet::Publish(q2)).await;
    let early = pubacks_so_far(&mut publ).await;
    assert!(!early.contains(&5), "PUBACK 5 waits behind 4: {early:?}");
    assert!(
        !publ
            .pending()
            .iter()
            .any(|p| matches!(p, Packet::PubRec(_))),
        "PUBREC 6 waits behind 4"
    );
    for _ in 1..=4 {
        sub.recv_publish_acked().await;
    }
    let mut order = Vec::new();
    while order.len() < 6 {
        match publ
            .wait_for(|p| matches!(p, Packet::PubAck(_) | Packet::PubRec(_)))
            .await
        {
            Packet::PubAck(a) | Packet::PubRec(a) => order.push(a.packet_id),
            _ => unreachable!(),
        }
    }
    assert_eq!(order, vec![1, 2, 3, 4, 5, 6]);
    publ.send(&Packet::PubRel(PubResp::new(6))).await;
    publ.wait_for(|p| matches!(p, Packet::PubComp(_))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_publishing_to_itself_does_not_deadlock() {
    // The connection keeps reading while it holds acknowledgements, so a client that is
    // its own slow subscriber still makes progress. The client keeps up to two PUBLISH
    // packets unacknowledged: a window no larger than the soft limit, so nothing is dropped.
    let b = tight().await;
    let (mut c, _) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "loop".into();
        c.properties.receive_maximum = Some(1);
    })
    .await;
    c.subscribe("loop/t", QoS::AtLeastOnce).await;
    let start = Instant::now();
    let total = 20u16;
    let (mut sent, mut acks, mut got) = (0u16, Vec::new(), Vec::new());
    while acks.len() < usize::from(total) || got.len() < usize::from(total) {
        while sent < total && usize::from(sent) - acks.len() < 2 {
            sent += 1;
            pipeline(&mut c, "loop/t", sent..=sent).await;
        }
        let next = match c.recv_within(RECV_TIMEOUT).await {
            Ok(Some(p)) => p,
            other => panic!("stuck ({other:?}): sent {sent}, PUBACKs {acks:?}, received {got:?}"),
        };
        match next {
            Packet::PubAck(a) => acks.push(a.packet_id),
            Packet::Publish(p) => {
                got.push(text(&p).to_string());
                c.ack(&p).await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(acks, (1..=total).collect::<Vec<u16>>());
    assert_eq!(got, (1..=total).map(|i| i.to_string()).collect::<Vec<_>>());
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_twice_the_limit_messages_are_dropped_but_still_acknowledged() {
    // Past the hard limit (twice max_queued_messages) the message is dropped; the publisher
    // still gets its PUBACK (within the hold limit) and keeps its connection.
    let b = tight().await;
    let mut sub = slow_sub(&b, "stuck").await;
    let mut publ = b.client(V5, "fast").await;
    pipeline(&mut publ, "bp/t", 1..=8).await;
    let acks = next_pubacks(&mut publ, 8).await;
    assert_eq!(acks, (1..=8).collect::<Vec<u16>>());
    // One in flight plus at most four queued.
    let mut got = Vec::new();
    got.push(text(&sub.recv_publish_acked().await).to_string());
    for p in sub.drain_publishes().await {
        sub.ack(&p).await;
        got.push(text(&p).to_string());
    }
    loop {
        let more = sub.drain_publishes().await;
        if more.is_empty() {
            break;
        }
        for p in more {
            sub.ack(&p).await;
            got.push(text(&p).to_string());
        }
    }
    assert!(got.len() <= 5 && got.len() >= 3, "{got:?}");
    assert_eq!(got[0], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos0_publisher_is_paced_by_a_slow_subscriber_instead_of_messages_dropped() {
    // QoS 0 has no acknowledgement to hold: past a subscriber's soft limit the broker stops
    // reading the publisher (TCP back-pressure), as Mosquitto's single loop does.
    let b = tight().await;
    let mut sub = b.client(V5, "slow0").await;
    sub.subscribe("bp/zero", QoS::AtMostOnce).await;
    let mut publ = b.client(V5, "fast0").await;
    let payload = "x".repeat(64 * 1024);
    let total = 40usize;
    let sender = tokio::spawn(async move {
        for i in 0..total {
            let mut p = publish_packet("bp/zero", &format!("{i}:{payload}"), QoS::AtMostOnce);
            p.packet_id = 0;
            publ.send(&Packet::Publish(p)).await;
        }
        publ
    });
    // The subscriber reads nothing until the broker reports that it paced the publisher
    // (2.5 MB of payload cannot fit in the socket buffers and a queue of 2).
    let stats = b.broker.as_ref().expect("running").inner().stats.clone();
    for _ in 0..500 {
        if stats
            .publish_paced
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        stats
            .publish_paced
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "never paced"
    );
    for i in 0..total {
        let p = sub.recv_publish().await;
        assert!(
            text(&p).starts_with(&format!("{i}:")),
            "message {i} missing or out of order"
        );
    }
    let _publ = sender.await.expect("sender");
    assert_eq!(
        stats
            .messages_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
