//! QoS 2 exactly once with a store (issue 4, BUGS.md 15): a QoS 2 message reaches no
//! subscriber before the commit that records its inbound packet identifier is durable,
//! so that a publisher's resend after a crash is recognised instead of delivered again.
//!
//! The store here runs on an engine whose writes a test can hold: while a write is held,
//! its commit is not durable, and the tests look at what subscribers get meanwhile.

mod common;

use common::hold::{assert_not_yet, held_write_arrives, start, HoldEngine};
use common::*;
use midge_proto::{Packet, PubResp, QoS};

/// Sends a QoS 2 PUBLISH and does not wait for PUBREC.
async fn send_qos2(client: &mut TestClient, topic: &str, payload: &str) -> u16 {
    let mut p = publish_packet(topic, payload, QoS::ExactlyOnce);
    p.packet_id = client.next_packet_id();
    let id = p.packet_id;
    client.send(&Packet::Publish(p)).await;
    id
}

/// [MQTT-4.3.3-10]: the receiver of a QoS 2 PUBLISH must not deliver it onward again
/// when the PUBLISH is resent before PUBREL. The broker recognises a resend only by the
/// packet identifier it stored; until that record is durable, no subscriber gets the
/// message (nor what was published after it on the session's queue: order is kept
/// [MQTT-4.6.0-6]).
#[tokio::test]
async fn qos2_message_waits_for_its_durable_record() {
    for version in V3_AND_V5 {
        let engine = HoldEngine::default();
        let mut tb = start(&engine).await;
        let mut sub = tb.client(version, "sub").await;
        sub.subscribe("t/#", QoS::ExactlyOnce).await;
        let (mut publisher, _) = TestClient::connect_persistent(tb.addr, version, "pub").await;

        let held = engine.hold();
        let id = send_qos2(&mut publisher, "t/a", "first").await;
        held_write_arrives(&engine).await;
        // A second publisher's QoS 0 message, queued behind the held one.
        let mut other = tb.client(version, "other").await;
        other.publish("t/b", "second", QoS::AtMostOnce).await;
        other.ping().await;

        sub.assert_no_publish().await;
        publisher.ping().await;
        assert!(
            !publisher
                .pending()
                .iter()
                .any(|p| matches!(p, Packet::PubRec(_))),
            "{version:?}: PUBREC before the record is durable"
        );

        drop(held);
        let rec = publisher
            .wait_for(|p| matches!(p, Packet::PubRec(r) if r.packet_id == id))
            .await;
        assert!(matches!(rec, Packet::PubRec(_)));
        let first = sub.recv_publish_acked().await;
        assert_eq!(
            (text(&first), first.qos),
            ("first", QoS::ExactlyOnce),
            "{version:?}"
        );
        let second = sub.recv_publish().await;
        assert_eq!(text(&second), "second", "{version:?}: order kept");

        // The resend before PUBREL is not delivered again [MQTT-4.3.3-10].
        let mut resend = publish_packet("t/a", "first", QoS::ExactlyOnce);
        resend.packet_id = id;
        resend.dup = true;
        publisher.send(&Packet::Publish(resend)).await;
        publisher
            .wait_for(|p| matches!(p, Packet::PubRec(r) if r.packet_id == id))
            .await;
        publisher.send(&Packet::PubRel(PubResp::new(id))).await;
        publisher
            .wait_for(|p| matches!(p, Packet::PubComp(c) if c.packet_id == id))
            .await;
        sub.assert_no_publish().await;
        tb.shutdown(std::time::Duration::from_secs(1)).await;
    }
}

/// A persistent subscriber that leaves while the message is held finds it queued when it
/// comes back, once, after the record is durable.
#[tokio::test]
async fn held_qos2_message_waits_for_a_subscriber_that_leaves() {
    let engine = HoldEngine::default();
    let mut tb = start(&engine).await;
    let (mut sub, _) = TestClient::connect_persistent(tb.addr, V5, "sub").await;
    sub.subscribe("t", QoS::ExactlyOnce).await;
    let (mut publisher, _) = TestClient::connect_persistent(tb.addr, V5, "pub").await;

    let held = engine.hold();
    send_qos2(&mut publisher, "t", "held").await;
    held_write_arrives(&engine).await;
    sub.assert_no_publish().await;
    sub.disconnect().await;
    drop(held);
    publisher.wait_for(|p| matches!(p, Packet::PubRec(_))).await;

    let (mut sub, present) = TestClient::connect_persistent(tb.addr, V5, "sub").await;
    assert!(present, "session kept");
    let got = sub.recv_publish_acked().await;
    assert_eq!(text(&got), "held");
    sub.assert_no_publish().await;
    tb.shutdown(std::time::Duration::from_secs(1)).await;
}

/// A clean-session publisher keeps no record to recognise a resend by after a crash, so
/// nothing is gained by holding its messages: they go out at once (the store write for
/// the persistent subscriber's queue still comes before PUBREC).
#[tokio::test]
async fn qos2_from_a_clean_session_is_not_held() {
    let engine = HoldEngine::default();
    let mut tb = start(&engine).await;
    let mut sub = tb.client(V311, "sub").await;
    sub.subscribe("t", QoS::ExactlyOnce).await;
    let (mut offline, _) = TestClient::connect_persistent(tb.addr, V311, "offline").await;
    offline.subscribe("t", QoS::ExactlyOnce).await;
    offline.disconnect().await;
    let mut publisher = tb.client(V311, "pub").await;

    let held = engine.hold();
    send_qos2(&mut publisher, "t", "now").await;
    held_write_arrives(&engine).await;
    let got = sub.recv_publish().await;
    assert_eq!(text(&got), "now");
    drop(held);
    publisher.wait_for(|p| matches!(p, Packet::PubRec(_))).await;
    tb.shutdown(std::time::Duration::from_secs(1)).await;
}

/// Once PUBREL is sent the PUBLISH must never be sent again [MQTT-4.3.3-6]: for a
/// persistent session the broker makes the delivery's new stage (awaiting PUBCOMP) durable
/// before PUBREL goes out, or a restart after a crash would resend the PUBLISH. PUBREC's
/// write is gathered with the rest of the read's and committed at its end; PUBREL waits.
#[tokio::test]
async fn pubrel_waits_for_the_durable_record_of_the_pubrec() {
    for version in V3_AND_V5 {
        let engine = HoldEngine::default();
        let mut tb = start(&engine).await;
        let (mut sub, _) = TestClient::connect_persistent(tb.addr, version, "sub").await;
        sub.subscribe("t/#", QoS::ExactlyOnce).await;
        let mut publisher = tb.client(version, "pub").await;
        let id = send_qos2(&mut publisher, "t/a", "m").await;
        let delivery = sub.recv_publish().await;
        assert_eq!(delivery.qos, QoS::ExactlyOnce);
        // A SUBACK waits for its commit, which comes after the delivery's in-flight
        // marker: once it is here, nothing of the delivery is still being written.
        sub.subscribe("other/#", QoS::AtMostOnce).await;

        let held = engine.hold();
        sub.send(&Packet::PubRec(PubResp::new(delivery.packet_id)))
            .await;
        held_write_arrives(&engine).await;
        assert_not_yet(&mut sub, "PUBREL", |p| matches!(p, Packet::PubRel(_))).await;
        drop(held);
        sub.wait_for(|p| matches!(p, Packet::PubRel(r) if r.packet_id == delivery.packet_id))
            .await;
        publisher
            .wait_for(|p| matches!(p, Packet::PubRec(r) if r.packet_id == id))
            .await;
        tb.shutdown(std::time::Duration::from_secs(1)).await;
    }
}

/// After PUBCOMP the packet identifier names a new message [MQTT-4.3.3-12]: for a
/// persistent session its release is durable before PUBCOMP goes out, or a restart after a
/// crash would take the client's next message with that identifier for a resend and drop
/// it. PUBREL's write is committed at the end of the read; PUBCOMP waits for it.
#[tokio::test]
async fn pubcomp_waits_for_the_durable_release_of_the_packet_identifier() {
    for version in V3_AND_V5 {
        let engine = HoldEngine::default();
        let mut tb = start(&engine).await;
        let (mut publisher, _) = TestClient::connect_persistent(tb.addr, version, "pub").await;
        let id = send_qos2(&mut publisher, "nobody/listens", "m").await;
        publisher
            .wait_for(|p| matches!(p, Packet::PubRec(r) if r.packet_id == id))
            .await;

        let held = engine.hold();
        publisher.send(&Packet::PubRel(PubResp::new(id))).await;
        held_write_arrives(&engine).await;
        assert_not_yet(&mut publisher, "PUBCOMP", |p| {
            matches!(p, Packet::PubComp(_))
        })
        .await;
        drop(held);
        publisher
            .wait_for(|p| matches!(p, Packet::PubComp(c) if c.packet_id == id))
            .await;
        tb.shutdown(std::time::Duration::from_secs(1)).await;
    }
}
