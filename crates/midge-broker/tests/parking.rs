//! Parked connections (crates/midge-broker/src/parking.rs): an idle TCP connection gives
//! up its task and waits in the broker's poll set; everything that can happen to a
//! connection must still happen to a parked one. Each test parks connections after 1 ms
//! of idleness (the keep-alive wheel asks at its next 500 ms tick) and waits for the
//! broker's count of parked connections to change, never for a fixed time.

mod common;

use common::*;
use midge_proto::{Packet, ProtocolVersion, PubResp, QoS, ReasonCode};
use std::time::Duration;
use tokio::sync::watch;

/// A broker that parks connections idle for 1 ms.
async fn parking_broker() -> TestBroker {
    TestBroker::start_with(|c| c.park_idle_after = Duration::from_millis(1)).await
}

fn parked(b: &TestBroker) -> watch::Receiver<usize> {
    b.broker
        .as_ref()
        .and_then(|b| b.inner().parking.as_ref())
        .expect("the broker parks connections")
        .watch()
}

/// A parking broker with a 5.0 subscriber to `filter` and a 5.0 publisher.
async fn subscriber_and_publisher(
    filter: &str,
    qos: QoS,
) -> (TestBroker, watch::Receiver<usize>, TestClient, TestClient) {
    let b = parking_broker().await;
    let count = parked(&b);
    let mut sub = b.client(V5, "sub").await;
    sub.subscribe(filter, qos).await;
    let publisher = b.client(V5, "pub").await;
    (b, count, sub, publisher)
}

/// A parking broker, a watcher subscribed to `wills/#` and a client `leaver` with keep-alive
/// `keep_alive` and a will on `wills/leaver`, both parked.
async fn watcher_and_leaver(
    v: ProtocolVersion,
    keep_alive: u16,
) -> (TestBroker, watch::Receiver<usize>, TestClient, TestClient) {
    let b = parking_broker().await;
    let mut count = parked(&b);
    let mut watcher = b.client(v, "watcher").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    let (leaver, _) = TestClient::connect(b.addr, v, |c| {
        c.client_id = "leaver".into();
        c.keep_alive = keep_alive;
        c.will = Some(will("wills/leaver", "gone", QoS::AtLeastOnce, false));
    })
    .await;
    until_parked(&mut count, 2).await;
    (b, count, watcher, leaver)
}

/// Waits until `n` connections are parked.
async fn until_parked(rx: &mut watch::Receiver<usize>, n: usize) {
    let waited = tokio::time::timeout(RECV_TIMEOUT, rx.wait_for(|p| *p == n))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(
        waited,
        "{n} connections not parked within {RECV_TIMEOUT:?} (parked: {})",
        *rx.borrow()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_resumes_a_parked_subscriber() {
    for v in V3_AND_V5 {
        let b = parking_broker().await;
        let mut count = parked(&b);
        let mut sub = b.client(v, "sub").await;
        sub.subscribe("t/#", QoS::AtLeastOnce).await;
        until_parked(&mut count, 1).await;

        let mut publisher = b.client(v, "pub").await;
        publisher.publish("t/1", "hello", QoS::AtLeastOnce).await;
        let got = sub.recv_publish_acked().await;
        assert_eq!(
            (&*got.topic, &got.payload[..]),
            ("t/1", &b"hello"[..]),
            "{v:?}"
        );
        // And again once both are parked.
        until_parked(&mut count, 2).await;
        publisher.publish("t/2", "again", QoS::AtMostOnce).await;
        let got = sub.recv_publish().await;
        assert_eq!(&*got.topic, "t/2", "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_is_resumed_by_what_its_client_sends() {
    // Anything but a lone PINGREQ (answered while parked, below) resumes it.
    for v in V3_AND_V5 {
        let b = parking_broker().await;
        let mut count = parked(&b);
        let mut c = b.client(v, "talker").await;
        until_parked(&mut count, 1).await;
        // [MQTT-3.12.4-1] PINGREQ is answered with PINGRESP, parked or not.
        c.subscribe("own/#", QoS::AtLeastOnce).await;
        until_parked(&mut count, 1).await;
        let ack = c.publish("own/x", "to myself", QoS::AtLeastOnce).await;
        assert!(matches!(ack, Some(PubResp { .. })), "{v:?}: PUBACK");
        let got = c.recv_publish_acked().await;
        assert_eq!(&got.payload[..], b"to myself", "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_flows_across_parking_on_both_sides() {
    // An inbound QoS 2 packet identifier, and an outgoing QoS 2 message in flight, are
    // kept by the session while the connection is parked [MQTT-4.3.3-10].
    let (_b, mut count, mut sub, mut publisher) =
        subscriber_and_publisher("q2", QoS::ExactlyOnce).await;
    let mut p = publish_packet("q2", "once", QoS::ExactlyOnce);
    p.packet_id = 7;
    publisher.send(&Packet::Publish(p)).await;
    let rec = publisher.wait_for(|p| matches!(p, Packet::PubRec(_))).await;
    assert!(matches!(rec, Packet::PubRec(ref r) if r.packet_id == 7));
    let delivered = sub.recv_publish().await;
    let id = delivered.packet_id;
    until_parked(&mut count, 2).await;

    publisher.send(&Packet::PubRel(PubResp::new(7))).await;
    let comp = publisher
        .wait_for(|p| matches!(p, Packet::PubComp(_)))
        .await;
    assert!(matches!(comp, Packet::PubComp(ref c) if c.packet_id == 7));
    sub.send(&Packet::PubRec(PubResp::new(id))).await;
    let rel = sub.wait_for(|p| matches!(p, Packet::PubRel(_))).await;
    assert!(matches!(rel, Packet::PubRel(ref r) if r.packet_id == id));
    until_parked(&mut count, 2).await;
    sub.send(&Packet::PubComp(PubResp::new(id))).await;
    sub.ping().await;
    sub.assert_no_publish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_survive_parking() {
    // A Topic Alias set before the connection parked still names its topic afterwards
    // [MQTT-3.3.2-12].
    let (_b, mut count, mut sub, mut publisher) =
        subscriber_and_publisher("aliased/topic", QoS::AtLeastOnce).await;
    let mut first = publish_packet("aliased/topic", "one", QoS::AtLeastOnce);
    first.properties.topic_alias = Some(3);
    publisher.publish_packet(first).await;
    assert_eq!(&sub.recv_publish_acked().await.payload[..], b"one");
    until_parked(&mut count, 2).await;

    let mut second = publish_packet("", "two", QoS::AtLeastOnce);
    second.properties.topic_alias = Some(3);
    let ack = publisher.publish_packet(second).await;
    assert!(
        matches!(ack, Some(ref a) if a.reason_code == ReasonCode::SUCCESS),
        "{ack:?}"
    );
    let got = sub.recv_publish_acked().await;
    assert_eq!(
        (&*got.topic, &got.payload[..]),
        ("aliased/topic", &b"two"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_expires_on_a_parked_connection_and_its_will_goes() {
    // [MQTT-3.1.2-24] 1.5 x Keep Alive of silence closes the connection, parked or not;
    // 5.0 says why (0x8D), and the will is published [MQTT-3.1.2-8].
    for v in V3_AND_V5 {
        let (_b, _count, mut watcher, mut silent) = watcher_and_leaver(v, 1).await;
        if v == ProtocolVersion::V5 {
            silent
                .expect_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT)
                .await;
        } else {
            silent.expect_closed().await;
        }
        let w = watcher.recv_publish_acked().await;
        assert_eq!(
            (&*w.topic, &w.payload[..]),
            ("wills/leaver", &b"gone"[..]),
            "{v:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_client_that_goes_away_leaves_its_will() {
    // A network close without DISCONNECT publishes the will [MQTT-3.1.2-8]: the parked
    // socket's end of stream resumes the connection, which sees it.
    let (_b, mut count, mut watcher, leaver) = watcher_and_leaver(V311, 60).await;
    leaver.drop_connection();
    let w = watcher.recv_publish_acked().await;
    assert_eq!(&*w.topic, "wills/leaver");
    until_parked(&mut count, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_is_taken_over() {
    // [MQTT-3.1.4-3] a second connection with the same client ID closes the first, which
    // gets DISCONNECT 0x8E (5.0), parked or not; the session passes to the new one.
    let b = parking_broker().await;
    let mut count = parked(&b);
    let (mut first, _) = TestClient::connect_persistent(b.addr, V5, "same").await;
    first.subscribe("kept/#", QoS::AtLeastOnce).await;
    until_parked(&mut count, 1).await;
    let (mut second, present) = TestClient::connect_persistent(b.addr, V5, "same").await;
    assert!(present, "the session is taken over, not made anew");
    first
        .expect_disconnect(ReasonCode::SESSION_TAKEN_OVER)
        .await;
    let mut publisher = b.client(V5, "pub").await;
    publisher
        .publish("kept/1", "to the second", QoS::AtLeastOnce)
        .await;
    assert_eq!(
        &second.recv_publish_acked().await.payload[..],
        b"to the second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reaches_parked_connections() {
    // Parked connections are told the server is going (5.0: DISCONNECT 0x8B) and closed,
    // like running ones.
    let mut b = parking_broker().await;
    let mut count = parked(&b);
    let mut v5 = b.client(V5, "five").await;
    let mut v3 = b.client(V311, "three").await;
    until_parked(&mut count, 2).await;
    b.shutdown(Duration::from_secs(5)).await;
    v5.expect_disconnect(ReasonCode::SERVER_SHUTTING_DOWN).await;
    v3.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_queued_while_parked_arrive_in_order() {
    // Many messages for a parked subscriber, more than its in-flight window: the first
    // resumes it, the rest follow in order [MQTT-4.6.0-6].
    let b = TestBroker::start_with(|c| {
        c.park_idle_after = Duration::from_millis(1);
        c.max_inflight_messages = 5;
    })
    .await;
    let mut count = parked(&b);
    let mut sub = b.client(V311, "sub").await;
    sub.subscribe("seq", QoS::AtLeastOnce).await;
    until_parked(&mut count, 1).await;
    let mut publisher = b.client(V311, "pub").await;
    for i in 0..50 {
        publisher
            .publish("seq", &i.to_string(), QoS::AtLeastOnce)
            .await;
    }
    for i in 0..50 {
        let got = sub.recv_publish_acked().await;
        assert_eq!(got.payload, i.to_string().as_bytes(), "message {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingreq_is_answered_while_parked_and_keeps_the_connection_alive() {
    // [MQTT-3.12.4-1] PINGREQ gets PINGRESP; the poll thread answers it without resuming
    // the connection, and it counts as the client's activity for the keep-alive
    // [MQTT-3.1.2-24]: three pings 0.7 s apart outlive 1.5 x a 1 s keep-alive.
    for v in V3_AND_V5 {
        let b = parking_broker().await;
        let mut count = parked(&b);
        let (mut c, _) = TestClient::connect(b.addr, v, |c| {
            c.client_id = "pinger".into();
            c.keep_alive = 1;
        })
        .await;
        until_parked(&mut count, 1).await;
        count.borrow_and_update();
        for _ in 0..3 {
            // Pacing the client like a real one, not waiting for the broker.
            tokio::time::sleep(Duration::from_millis(700)).await;
            c.ping().await;
        }
        assert!(
            !count.has_changed().unwrap_or(true),
            "{v:?}: the pings resumed the connection"
        );
        c.subscribe("still/#", QoS::AtMostOnce).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_count_against_max_connections() {
    // A parked connection is still a connection: the listener's limit holds, and its
    // place is free again once it goes.
    let b = TestBroker::start_with(|c| {
        c.park_idle_after = Duration::from_millis(1);
        c.listeners[0].max_connections = Some(2);
    })
    .await;
    let mut count = parked(&b);
    let first = b.client(V311, "one").await;
    let _second = b.client(V311, "two").await;
    until_parked(&mut count, 2).await;
    let mut third = TestClient::tcp(b.addr, V311).await;
    // The broker may close before or after reading the CONNECT.
    third
        .try_send_raw(&bytes_of(
            &Packet::Connect(Box::new(connect_packet(V311, "three"))),
            V311,
        ))
        .await;
    assert!(
        third.expect_closed().await.is_empty(),
        "no CONNACK over the limit"
    );
    first.disconnect().await;
    // The broker gives the place back just after it closes the socket the client saw
    // close: a connection made at once may still be refused, and is closed at once then.
    // Each attempt ends on an event (CONNACK or close), none waits for time.
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let mut fourth = TestClient::tcp(b.addr, V311).await;
        fourth
            .try_send_raw(&bytes_of(
                &Packet::Connect(Box::new(connect_packet(V311, "four"))),
                V311,
            ))
            .await;
        match fourth.recv_within(RECV_TIMEOUT).await {
            Ok(Some(Packet::ConnAck(ack))) => {
                assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
                break;
            }
            Ok(None) if tokio::time::Instant::now() < deadline => continue,
            other => panic!("the place of the connection that left was not freed: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pings_and_closes_at_once_leaves_its_will() {
    // The PINGREQ and the end of the stream reach the park thread together: it must not
    // answer the ping and leave the connection parked (with keep-alive 0 nothing else
    // would ever close it). The will goes [MQTT-3.1.2-8].
    for round in 0..5 {
        // Keep-alive 0: nothing else would ever close it.
        let (_b, _count, mut watcher, mut leaver) = watcher_and_leaver(V311, 0).await;
        leaver.send_raw_then_end(&[0xC0, 0x00]).await;
        let w = watcher.recv_publish_acked().await;
        assert_eq!(&*w.topic, "wills/leaver", "round {round}");
        leaver.expect_closed().await;
    }
}

/// A new connection that sends nothing after its CONNACK parks soon (50 ms), without
/// waiting for `park_idle_after` (an hour here, so the keep-alive wheel never asks): a
/// burst of idle clients costs the parked size at once (docs/design/idle-memory.md,
/// round 5). Parked this early, it is still everything a connection is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_new_connection_parks_without_waiting_for_park_idle_after() {
    for v in V3_AND_V5 {
        let b = TestBroker::start_with(|c| c.park_idle_after = Duration::from_secs(3600)).await;
        let mut count = parked(&b);
        let mut idle = b.client(v, "idle").await;
        until_parked(&mut count, 1).await;
        // Resumed by its own SUBSCRIBE: [MQTT-3.8.4-1] the SUBACK comes all the same.
        idle.subscribe("early/#", QoS::AtLeastOnce).await;
        let mut publisher = b.client(v, "pub").await;
        publisher
            .publish("early/1", "hello", QoS::AtLeastOnce)
            .await;
        let got = idle.recv_publish_acked().await;
        assert_eq!(&got.payload[..], b"hello", "{v:?}");
    }
}
