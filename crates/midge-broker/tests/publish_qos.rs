//! PUBLISH and the QoS 0/1/2 flows in both directions: acknowledgements, exactly-once,
//! QoS downgrade, the in-flight window, packet identifiers, ordering and redelivery.

mod common;

use bytes::Bytes;
use common::*;
use midge_proto::{Packet, Properties, PubResp, QoS, ReasonCode};
use std::collections::HashSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_message_is_delivered_at_qos0() {
    // [MQTT-4.3.1] QoS 0: one PUBLISH, no acknowledgement, no packet identifier.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut sub = b.client(v, "sub").await;
        let mut publ = b.client(v, "pub").await;
        sub.subscribe("q0/t", QoS::ExactlyOnce).await;
        assert_eq!(publ.publish("q0/t", "zero", QoS::AtMostOnce).await, None);
        let p = sub.recv_publish().await;
        assert_eq!(p.topic.as_str(), "q0/t");
        assert_eq!(text(&p), "zero");
        assert_eq!(p.qos, QoS::AtMostOnce);
        assert_eq!(p.packet_id, 0);
        assert!(!p.dup && !p.retain);
        publ.assert_no_publish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_flow_is_publish_puback_in_both_directions() {
    // [MQTT-4.3.2-2] (5.0) the receiver of a QoS 1 PUBLISH MUST respond with PUBACK
    // containing its Packet Identifier; [MQTT-2.2.1-3] a QoS 1 PUBLISH has a non-zero
    // Packet Identifier.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut sub = b.client(v, "sub").await;
        let mut publ = b.client(v, "pub").await;
        sub.subscribe("q1/t", QoS::AtLeastOnce).await;
        let mut p = publish_packet("q1/t", "one", QoS::AtLeastOnce);
        p.packet_id = 4242;
        publ.send(&Packet::Publish(p)).await;
        match publ.recv().await {
            Packet::PubAck(a) => {
                assert_eq!(a.packet_id, 4242);
                assert_eq!(a.reason_code, ReasonCode::SUCCESS);
            }
            other => panic!("{v:?}: expected PUBACK, got {other:?}"),
        }
        let got = sub.recv_publish().await;
        assert_eq!(got.qos, QoS::AtLeastOnce);
        assert_ne!(got.packet_id, 0);
        assert!(!got.dup, "first delivery has DUP 0 [MQTT-3.3.1-1]");
        assert_eq!(text(&got), "one");
        sub.send(&Packet::PubAck(PubResp::new(got.packet_id))).await;
        sub.assert_no_publish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_flow_is_publish_pubrec_pubrel_pubcomp_in_both_directions() {
    // [MQTT-4.3.3] QoS 2: PUBLISH → PUBREC → PUBREL → PUBCOMP, one Packet Identifier
    // throughout; PUBREL has fixed-header flags 0010 [MQTT-3.6.1-1].
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut sub = b.client(v, "sub").await;
        let mut publ = b.client(v, "pub").await;
        sub.subscribe("q2/t", QoS::ExactlyOnce).await;

        let mut p = publish_packet("q2/t", "two", QoS::ExactlyOnce);
        p.packet_id = 77;
        publ.send(&Packet::Publish(p)).await;
        match publ.recv().await {
            Packet::PubRec(a) => {
                assert_eq!((a.packet_id, a.reason_code), (77, ReasonCode::SUCCESS))
            }
            other => panic!("{v:?}: expected PUBREC, got {other:?}"),
        }
        publ.send(&Packet::PubRel(PubResp::new(77))).await;
        match publ.recv().await {
            Packet::PubComp(a) => {
                assert_eq!((a.packet_id, a.reason_code), (77, ReasonCode::SUCCESS))
            }
            other => panic!("{v:?}: expected PUBCOMP, got {other:?}"),
        }

        let got = sub.recv_publish().await;
        assert_eq!(got.qos, QoS::ExactlyOnce);
        assert_ne!(got.packet_id, 0);
        assert_eq!(text(&got), "two");
        sub.send(&Packet::PubRec(PubResp::new(got.packet_id))).await;
        match sub.recv().await {
            Packet::PubRel(r) => assert_eq!(r.packet_id, got.packet_id),
            other => panic!("{v:?}: expected PUBREL, got {other:?}"),
        }
        sub.send(&Packet::PubComp(PubResp::new(got.packet_id)))
            .await;
        sub.assert_no_publish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_resent_publish_before_pubrel_is_delivered_once() {
    // [MQTT-4.3.3-10] (5.0) / 3.1.1 4.3.3 method B: until PUBREL, a PUBLISH with the same
    // Packet Identifier is acknowledged with PUBREC and MUST NOT cause a duplicate
    // delivery.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut sub = b.client(v, "sub").await;
        let mut publ = b.client(v, "pub").await;
        sub.subscribe("once/t", QoS::ExactlyOnce).await;

        let mut p = publish_packet("once/t", "only once", QoS::ExactlyOnce);
        p.packet_id = 9;
        publ.send(&Packet::Publish(p.clone())).await;
        assert!(matches!(publ.recv().await, Packet::PubRec(a) if a.packet_id == 9));
        p.dup = true;
        publ.send(&Packet::Publish(p.clone())).await;
        assert!(matches!(publ.recv().await, Packet::PubRec(a) if a.packet_id == 9));
        publ.send(&Packet::PubRel(PubResp::new(9))).await;
        assert!(matches!(publ.recv().await, Packet::PubComp(a) if a.packet_id == 9));
        publ.publish("once/t", "marker", QoS::ExactlyOnce).await;

        assert_eq!(text(&sub.recv_publish_acked().await), "only once");
        assert_eq!(
            text(&sub.recv_publish_acked().await),
            "marker",
            "{v:?}: no duplicate"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_packet_id_is_a_new_message_after_pubcomp() {
    // [MQTT-4.3.3-11] (5.0) after PUBCOMP the receiver MUST treat a PUBLISH with that
    // Packet Identifier as a new Application Message.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut sub = b.client(v, "sub").await;
        let mut publ = b.client(v, "pub").await;
        sub.subscribe("again/t", QoS::ExactlyOnce).await;
        for payload in ["first", "second"] {
            let mut p = publish_packet("again/t", payload, QoS::ExactlyOnce);
            p.packet_id = 5;
            publ.publish_packet(p).await;
        }
        assert_eq!(text(&sub.recv_publish_acked().await), "first");
        assert_eq!(text(&sub.recv_publish_acked().await), "second");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubrel_for_unknown_packet_id_is_answered_with_pubcomp() {
    // [MQTT-4.3.3-11] (3.1.1) the receiver MUST respond to PUBREL with PUBCOMP; 5.0 says
    // 0x92 Packet Identifier not found when it holds no such id.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut c = b.client(v, "rel").await;
        c.send(&Packet::PubRel(PubResp::new(321))).await;
        match c.recv().await {
            Packet::PubComp(a) => {
                assert_eq!(a.packet_id, 321);
                if v.is_v5() {
                    assert_eq!(a.reason_code, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
                }
            }
            other => panic!("{v:?}: expected PUBCOMP, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_qos_is_the_minimum_of_published_and_granted() {
    // 3.8.4 (both versions): the QoS of a delivered message is the minimum of the QoS it
    // was published with and the QoS granted [MQTT-3.8.4-6 (3.1.1), MQTT-3.8.4-8 (5.0)].
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut publ = b.client(v, "pub").await;
        let mut subs = Vec::new();
        for granted in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let mut s = b.client(v, &format!("sub{}", granted.as_u8())).await;
            s.subscribe("down/t", granted).await;
            subs.push((granted, s));
        }
        for published in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            publ.publish("down/t", &format!("q{}", published.as_u8()), published)
                .await;
            for (granted, s) in subs.iter_mut() {
                let p = s.recv_publish_acked().await;
                assert_eq!(text(&p), format!("q{}", published.as_u8()));
                assert_eq!(p.qos, published.min(*granted), "{v:?} granted {granted:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_qos_is_capped_at_max_qos() {
    // [MQTT-3.9.3-*] the granted QoS may be lower than asked; with Maximum QoS 1 a QoS 2
    // subscription is granted QoS 1.
    for v in V3_AND_V5 {
        let b = TestBroker::start_with(|c| c.max_qos = 1).await;
        let mut c = b.client(v, "capped").await;
        let ack = c
            .subscribe_with(&[("cap/t", opts(QoS::ExactlyOnce))], Properties::default())
            .await;
        assert_eq!(ack.reason_codes, vec![ReasonCode::GRANTED_QOS_1], "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_above_maximum_qos_is_a_protocol_violation_in_5_0() {
    // [MQTT-3.2.2-11] A Server receiving a PUBLISH above its Maximum QoS uses DISCONNECT
    // with 0x9B (QoS not supported).
    let b = TestBroker::start_with(|c| c.max_qos = 1).await;
    let mut c = b.client(V5, "tooqos").await;
    c.send(&Packet::Publish({
        let mut p = publish_packet("x", "y", QoS::ExactlyOnce);
        p.packet_id = 1;
        p
    }))
    .await;
    c.expect_disconnect(ReasonCode::QOS_NOT_SUPPORTED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_window_holds_back_qos1_messages_until_puback() {
    // 5.0 4.9 / 3.1.1 4.4: the Server sends no more unacknowledged QoS 1/2 PUBLISH packets
    // than its in-flight limit (max_inflight_messages 2 here).
    for v in V3_AND_V5 {
        let b = TestBroker::start_with(|c| c.max_inflight_messages = 2).await;
        let mut sub = b.client(v, "slow").await;
        let mut publ = b.client(v, "pub").await;
        sub.subscribe("win/t", QoS::AtLeastOnce).await;
        for i in 1..=3 {
            publ.publish("win/t", &format!("m{i}"), QoS::AtLeastOnce)
                .await;
        }
        let m1 = sub.recv_publish().await;
        let m2 = sub.recv_publish().await;
        assert_eq!((text(&m1), text(&m2)), ("m1", "m2"));
        sub.assert_no_publish().await;
        sub.send(&Packet::PubAck(PubResp::new(m1.packet_id))).await;
        let m3 = sub.recv_publish().await;
        assert_eq!(text(&m3), "m3", "{v:?}");
        sub.ack(&m2).await;
        sub.ack(&m3).await;
        sub.assert_no_publish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_receive_maximum_limits_the_inflight_window() {
    // [MQTT-3.3.4-9] The Server MUST NOT send more QoS 1/2 PUBLISH packets for which it
    // has not received an acknowledgement than the client's Receive Maximum.
    let b = TestBroker::start().await;
    let (mut sub, _) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "rm1".into();
        c.properties.receive_maximum = Some(1);
    })
    .await;
    let mut publ = b.client(V5, "pub").await;
    sub.subscribe("rm/t", QoS::ExactlyOnce).await;
    publ.publish("rm/t", "a", QoS::ExactlyOnce).await;
    publ.publish("rm/t", "b", QoS::AtLeastOnce).await;
    let a = sub.recv_publish().await;
    assert_eq!(text(&a), "a");
    sub.assert_no_publish().await;
    // PUBREC does not end a QoS 2 flow: still one in flight until PUBCOMP.
    sub.send(&Packet::PubRec(PubResp::new(a.packet_id))).await;
    sub.wait_for(|p| matches!(p, Packet::PubRel(_))).await;
    sub.assert_no_publish().await;
    sub.send(&Packet::PubComp(PubResp::new(a.packet_id))).await;
    let b2 = sub.recv_publish_acked().await;
    assert_eq!(text(&b2), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_packet_ids_are_non_zero_and_unique_while_in_flight() {
    // [MQTT-2.2.1-2/3] (3.1.1 [MQTT-2.3.1-1/2]): non-zero, and not reused while in use.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut sub = b.client(v, "ids").await;
        let mut publ = b.client(v, "pub").await;
        sub.subscribe("ids/t", QoS::ExactlyOnce).await;
        for i in 0..10 {
            let qos = if i % 2 == 0 {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            publ.publish("ids/t", &format!("{i}"), qos).await;
        }
        let mut seen = HashSet::new();
        let mut got = Vec::new();
        for _ in 0..10 {
            let p = sub.recv_publish().await;
            assert_ne!(p.packet_id, 0);
            assert!(
                seen.insert(p.packet_id),
                "{v:?}: packet id {} reused",
                p.packet_id
            );
            got.push(p);
        }
        for p in &got {
            sub.ack(p).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_on_one_topic_arrive_in_publish_order() {
    // [MQTT-4.6.0-6] (3.1.1) / 5.0 4.6: the Server MUST send PUBLISH packets to a
    // subscriber in the order it received them (per topic, per QoS).
    for v in V3_AND_V5 {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let b = TestBroker::start().await;
            let mut sub = b.client(v, "ord-sub").await;
            let mut publ = b.client(v, "ord-pub").await;
            sub.subscribe("ord/t", qos).await;
            // Pipelined: every PUBLISH goes out before any acknowledgement is read (QoS 2:
            // no more than the broker's Receive Maximum, 20 by default, unreleased).
            let n: u16 = if qos == QoS::ExactlyOnce { 20 } else { 100 };
            for i in 1..=n {
                let mut p = publish_packet("ord/t", &i.to_string(), qos);
                if qos != QoS::AtMostOnce {
                    p.packet_id = i;
                }
                publ.send(&Packet::Publish(p)).await;
            }
            for i in 1..=n {
                let p = sub.recv_publish_acked().await;
                assert_eq!(text(&p), i.to_string(), "{v:?} {qos:?}");
            }
            if qos == QoS::ExactlyOnce {
                for i in 1..=n {
                    publ.wait_for(|p| matches!(p, Packet::PubRec(a) if a.packet_id == i))
                        .await;
                    publ.send(&Packet::PubRel(PubResp::new(i))).await;
                }
            }
            publ.ping().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_qos1_is_resent_with_dup_on_reconnect() {
    // [MQTT-4.4.0-1] On reconnect with a session present the Server MUST resend
    // unacknowledged PUBLISH packets with their original Packet Identifiers; [MQTT-3.3.1-1]
    // DUP MUST be 1 on a re-delivery.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut publ = b.client(v, "pub").await;
        let (mut sub, _) = TestClient::connect_persistent(b.addr, v, "resend1").await;
        sub.subscribe("re/t", QoS::AtLeastOnce).await;
        publ.publish("re/t", "again", QoS::AtLeastOnce).await;
        let first = sub.recv_publish().await;
        assert!(!first.dup);
        sub.drop_connection();

        let (mut sub, present) = TestClient::connect_persistent(b.addr, v, "resend1").await;
        assert!(present, "{v:?}");
        let again = sub.recv_publish().await;
        assert!(again.dup, "{v:?}: DUP set on re-delivery");
        assert_eq!(again.packet_id, first.packet_id, "{v:?}: same packet id");
        assert_eq!(again.qos, QoS::AtLeastOnce);
        assert_eq!(text(&again), "again");
        sub.ack(&again).await;
        sub.assert_no_publish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_qos2_publish_is_resent_with_dup_on_reconnect() {
    // [MQTT-4.4.0-1] as above, for a QoS 2 PUBLISH not yet PUBRECed.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut publ = b.client(v, "pub").await;
        let (mut sub, _) = TestClient::connect_persistent(b.addr, v, "resend2").await;
        sub.subscribe("re2/t", QoS::ExactlyOnce).await;
        publ.publish("re2/t", "twice?", QoS::ExactlyOnce).await;
        let first = sub.recv_publish().await;
        sub.drop_connection();

        let (mut sub, _) = TestClient::connect_persistent(b.addr, v, "resend2").await;
        let again = sub.recv_publish().await;
        assert!(again.dup, "{v:?}");
        assert_eq!(again.packet_id, first.packet_id);
        sub.ack(&again).await;
        sub.assert_no_publish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubrel_is_resent_on_reconnect_after_pubrec() {
    // [MQTT-4.4.0-1] unacknowledged PUBREL packets are resent on reconnect, and the
    // PUBLISH is not sent again (4.3.3: after PUBREC the sender MUST NOT resend it).
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut publ = b.client(v, "pub").await;
        let (mut sub, _) = TestClient::connect_persistent(b.addr, v, "resendrel").await;
        sub.subscribe("rel/t", QoS::ExactlyOnce).await;
        publ.publish("rel/t", "x", QoS::ExactlyOnce).await;
        let first = sub.recv_publish().await;
        sub.send(&Packet::PubRec(PubResp::new(first.packet_id)))
            .await;
        match sub.recv().await {
            Packet::PubRel(r) => assert_eq!(r.packet_id, first.packet_id),
            other => panic!("expected PUBREL, got {other:?}"),
        }
        sub.drop_connection();

        let (mut sub, _) = TestClient::connect_persistent(b.addr, v, "resendrel").await;
        match sub.recv().await {
            Packet::PubRel(r) => assert_eq!(r.packet_id, first.packet_id, "{v:?}"),
            other => panic!("{v:?}: expected PUBREL again, got {other:?}"),
        }
        sub.send(&Packet::PubComp(PubResp::new(first.packet_id)))
            .await;
        publ.publish("rel/t", "marker", QoS::ExactlyOnce).await;
        let m = sub.recv_publish_acked().await;
        assert_eq!(text(&m), "marker", "{v:?}: the PUBLISH was not sent again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_qos2_state_survives_reconnect_of_the_publisher() {
    // [MQTT-4.4.0-1] the Client resends PUBREL after reconnect; the Server's session
    // still holds the Packet Identifier, so PUBCOMP succeeds and a resent PUBLISH with
    // DUP is not delivered twice [MQTT-4.3.3-10].
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut sub = b.client(v, "sub").await;
        sub.subscribe("in2/t", QoS::ExactlyOnce).await;
        let (mut publ, _) = TestClient::connect_persistent(b.addr, v, "pub2").await;
        let mut p = publish_packet("in2/t", "held", QoS::ExactlyOnce);
        p.packet_id = 11;
        publ.send(&Packet::Publish(p.clone())).await;
        assert!(matches!(publ.recv().await, Packet::PubRec(a) if a.packet_id == 11));
        publ.drop_connection();

        let (mut publ, present) = TestClient::connect_persistent(b.addr, v, "pub2").await;
        assert!(present);
        p.dup = true;
        publ.send(&Packet::Publish(p)).await;
        assert!(matches!(publ.recv().await, Packet::PubRec(a) if a.packet_id == 11));
        publ.send(&Packet::PubRel(PubResp::new(11))).await;
        match publ.recv().await {
            Packet::PubComp(a) => {
                assert_eq!(a.packet_id, 11);
                assert_eq!(
                    a.reason_code,
                    ReasonCode::SUCCESS,
                    "{v:?}: id was still held"
                );
            }
            other => panic!("expected PUBCOMP, got {other:?}"),
        }
        publ.publish("in2/t", "marker", QoS::ExactlyOnce).await;
        assert_eq!(text(&sub.recv_publish_acked().await), "held");
        assert_eq!(text(&sub.recv_publish_acked().await), "marker", "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puback_says_no_matching_subscribers_in_5_0() {
    // 5.0 3.4.2.1: PUBACK 0x10 when the message was accepted but nobody subscribes; 0x00
    // when someone does.
    let b = TestBroker::start().await;
    let mut publ = b.client(V5, "pub").await;
    let ack = publ
        .publish("nobody/here", "x", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(ack.reason_code, ReasonCode::NO_MATCHING_SUBSCRIBERS);
    let mut p = publish_packet("nobody/here", "x", QoS::ExactlyOnce);
    p.packet_id = 3;
    publ.send(&Packet::Publish(p)).await;
    match publ.recv().await {
        Packet::PubRec(a) => assert_eq!(a.reason_code, ReasonCode::NO_MATCHING_SUBSCRIBERS),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    publ.send(&Packet::PubRel(PubResp::new(3))).await;
    publ.wait_for(|p| matches!(p, Packet::PubComp(_))).await;

    let mut sub = b.client(V5, "sub").await;
    sub.subscribe("nobody/here", QoS::AtMostOnce).await;
    let ack = publ
        .publish("nobody/here", "y", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_over_message_size_limit_is_acknowledged_and_dropped() {
    // Mosquitto's message_size_limit: the message is not delivered. A 5.0 PUBACK carries
    // a failure code valid for PUBACK (5.0 3.4.2.1: 0x80, 0x83, 0x87, 0x90, 0x91, 0x97,
    // 0x99); 0x95 Packet too large is a CONNACK/DISCONNECT code only.
    const PUBACK_CODES: [u8; 9] = [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
    for v in V3_AND_V5 {
        let b = TestBroker::start_with(|c| c.message_size_limit = 10).await;
        let mut sub = b.client(v, "sub").await;
        let mut publ = b.client(v, "pub").await;
        sub.subscribe("size/t", QoS::AtLeastOnce).await;
        let ack = publ
            .publish("size/t", "this payload is too long", QoS::AtLeastOnce)
            .await
            .unwrap();
        if v.is_v5() {
            assert!(ack.reason_code.is_error(), "refusal reported");
            assert!(
                PUBACK_CODES.contains(&ack.reason_code.0),
                "{:?} is not a PUBACK reason code",
                ack.reason_code
            );
        }
        publ.publish("size/t", "small", QoS::AtLeastOnce).await;
        assert_eq!(text(&sub.recv_publish_acked().await), "small", "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_payload_with_payload_format_1_is_refused_with_0x99() {
    // [MQTT-3.3.2-4] / 3.3.2.3.2: a receiver MAY check a payload declared UTF-8 and answer
    // PUBACK 0x99 (Payload format invalid) instead of delivering it.
    let b = TestBroker::start().await;
    let mut sub = b.client(V5, "sub").await;
    let mut publ = b.client(V5, "pub").await;
    sub.subscribe("pf/t", QoS::AtLeastOnce).await;
    let mut p = publish_packet("pf/t", "", QoS::AtLeastOnce);
    p.payload = Bytes::from_static(&[0xff, 0xfe, 0x00]);
    p.properties.payload_format_indicator = Some(1);
    let ack = publ.publish_packet(p).await.unwrap();
    assert_eq!(ack.reason_code, ReasonCode::PAYLOAD_FORMAT_INVALID);
    publ.publish("pf/t", "marker", QoS::AtLeastOnce).await;
    assert_eq!(text(&sub.recv_publish_acked().await), "marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_receives_its_own_message_when_subscribed() {
    // [MQTT-3.8.3-3] only with No Local does a client not get its own messages.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut c = b.client(v, "self").await;
        c.subscribe("self/t", QoS::AtLeastOnce).await;
        c.publish("self/t", "echo", QoS::AtLeastOnce).await;
        assert_eq!(text(&c.recv_publish_acked().await), "echo");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubrec_with_error_code_ends_the_qos2_flow_in_5_0() {
    // 5.0 4.3.3: a PUBREC with a Reason Code of 0x80 or greater ends the flow; no PUBREL,
    // and the in-flight slot is free again.
    let b = TestBroker::start_with(|c| c.max_inflight_messages = 1).await;
    let mut sub = b.client(V5, "sub").await;
    let mut publ = b.client(V5, "pub").await;
    sub.subscribe("rec/t", QoS::ExactlyOnce).await;
    publ.publish("rec/t", "refused", QoS::ExactlyOnce).await;
    publ.publish("rec/t", "next", QoS::ExactlyOnce).await;
    let p = sub.recv_publish().await;
    sub.send(&Packet::PubRec(PubResp::with_reason(
        p.packet_id,
        ReasonCode::UNSPECIFIED_ERROR,
    )))
    .await;
    let next = sub.recv().await;
    match next {
        Packet::Publish(n) => {
            assert_eq!(text(&n), "next");
            sub.ack(&n).await;
        }
        other => panic!("expected the next PUBLISH and no PUBREL, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_after_reconnect_respects_a_smaller_receive_maximum() {
    // [MQTT-3.3.4-9] the Server MUST NOT send more unacknowledged QoS 1/2 PUBLISH packets
    // than the client's Receive Maximum, also when resending after a reconnect
    // [MQTT-4.4.0-1]: the rest waits for acknowledgements.
    let b = TestBroker::start().await;
    let connect = |rm: u16| {
        move |c: &mut midge_proto::Connect| {
            c.client_id = "shrink".into();
            c.clean_start = false;
            c.properties.session_expiry_interval = Some(60);
            c.properties.receive_maximum = Some(rm);
        }
    };
    let (mut sub, _) = TestClient::connect(b.addr, V5, connect(4)).await;
    sub.subscribe("shrink/t", QoS::AtLeastOnce).await;
    let mut publ = b.client(V5, "pub").await;
    for i in 1..=4 {
        publ.publish("shrink/t", &i.to_string(), QoS::AtLeastOnce)
            .await;
    }
    for _ in 1..=4 {
        sub.recv_publish().await;
    }
    sub.drop_connection();
    let (mut sub, ack) = TestClient::connect(b.addr, V5, connect(1)).await;
    assert!(ack.session_present);
    let first = sub.recv_publish().await;
    assert_eq!(text(&first), "1");
    sub.assert_no_publish().await;
    sub.ack(&first).await;
    for i in 2..=4 {
        let p = sub.recv_publish().await;
        assert_eq!(text(&p), i.to_string());
        sub.assert_no_publish().await;
        sub.ack(&p).await;
    }
}
