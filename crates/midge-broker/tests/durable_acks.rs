//! SUBACK and UNSUBACK of a persistent session wait for the store (issue 4: nothing
//! acknowledged is lost). A client that got SUBACK does not subscribe again after a
//! reconnect with its session present, so a subscription lost in a crash would lose its
//! messages silently; after UNSUBACK no new message may be added for the subscription
//! [MQTT-3.10.4-2], not even by a broker restarted after a crash.
//!
//! The store runs on an engine whose writes the test holds (common/hold.rs).

mod common;

use common::hold::{assert_not_yet, held_write_arrives, start, HoldEngine};
use common::*;
use midge_proto::{ByteStr, Packet, Properties, QoS, Subscribe, SubscriptionOptions, Unsubscribe};

fn subscribe_packet(id: u16, filter: &str) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: id,
        filters: vec![(ByteStr::from(filter), opts(QoS::AtLeastOnce))],
        properties: Properties::default(),
    })
}

#[tokio::test]
async fn suback_of_a_persistent_session_waits_for_the_store() {
    for version in V3_AND_V5 {
        let engine = HoldEngine::default();
        let mut tb = start(&engine).await;
        let (mut c, _) = TestClient::connect_persistent(tb.addr, version, "sub").await;
        let held = engine.hold();
        c.send(&subscribe_packet(7, "t/#")).await;
        held_write_arrives(&engine).await;
        assert_not_yet(&mut c, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
        drop(held);
        let ack = c.wait_for(|p| matches!(p, Packet::SubAck(_))).await;
        let Packet::SubAck(ack) = ack else {
            unreachable!()
        };
        assert_eq!(ack.packet_id, 7, "{version:?}");
        tb.shutdown(std::time::Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn unsuback_of_a_persistent_session_waits_for_the_store() {
    let engine = HoldEngine::default();
    let mut tb = start(&engine).await;
    let (mut c, _) = TestClient::connect_persistent(tb.addr, V5, "sub").await;
    c.subscribe("t/#", QoS::AtLeastOnce).await;
    let held = engine.hold();
    c.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: 9,
        filters: vec![ByteStr::from("t/#")],
        properties: Properties::default(),
    }))
    .await;
    held_write_arrives(&engine).await;
    assert_not_yet(&mut c, "UNSUBACK", |p| matches!(p, Packet::UnsubAck(_))).await;
    drop(held);
    c.wait_for(|p| matches!(p, Packet::UnsubAck(a) if a.packet_id == 9))
        .await;
    tb.shutdown(std::time::Duration::from_secs(1)).await;
}

/// Retained messages still follow the SUBACK when it had to wait for the store.
#[tokio::test]
async fn retained_messages_follow_a_held_suback() {
    let engine = HoldEngine::default();
    let mut tb = start(&engine).await;
    let mut p = tb.client(V311, "pub").await;
    p.publish_retained("r/a", "kept", QoS::AtLeastOnce).await;
    let (mut c, _) = TestClient::connect_persistent(tb.addr, V311, "sub").await;
    let held = engine.hold();
    c.send(&subscribe_packet(3, "r/#")).await;
    held_write_arrives(&engine).await;
    assert_not_yet(&mut c, "retained PUBLISH", |p| {
        matches!(p, Packet::Publish(_))
    })
    .await;
    drop(held);
    let first = c.recv().await;
    assert!(
        matches!(first, Packet::SubAck(_)),
        "SUBACK first: {first:?}"
    );
    let retained = c.recv_publish().await;
    assert!(retained.retain, "[MQTT-3.3.1-8]");
    assert_eq!(text(&retained), "kept");
    tb.shutdown(std::time::Duration::from_secs(1)).await;
}

/// A clean session keeps nothing in the store: its SUBACK does not wait.
#[tokio::test]
async fn suback_of_a_clean_session_does_not_wait() {
    let engine = HoldEngine::default();
    let mut tb = start(&engine).await;
    // A persistent session's disconnect leaves a write to hold.
    let (other, _) = TestClient::connect_persistent(tb.addr, V311, "other").await;
    let mut c = tb.client(V311, "clean").await;
    let held = engine.hold();
    other.disconnect().await;
    held_write_arrives(&engine).await;
    let ack = c
        .subscribe_with(
            &[("t", SubscriptionOptions::default())],
            Properties::default(),
        )
        .await;
    assert_eq!(ack.reason_codes.len(), 1, "SUBACK while the store is held");
    drop(held);
    tb.shutdown(std::time::Duration::from_secs(1)).await;
}
