//! Malformed packets and protocol errors after CONNECT: the offending connection is
//! closed (5.0: DISCONNECT with the reason code first), and other connections carry on.

mod common;

use bytes::BytesMut;
use common::*;
use midge_proto::{encode, Packet, ProtocolVersion, QoS, ReasonCode};

/// Connects `victim` and a bystander, sends `bytes` as the victim, expects the close
/// (5.0 with DISCONNECT `rc`), then checks the bystander still gets messages.
async fn violation_closes(v: ProtocolVersion, bytes: &[u8], rc: ReasonCode) {
    let b = TestBroker::start().await;
    let mut bystander = b.client(v, "bystander").await;
    bystander.subscribe("still/ok", QoS::AtLeastOnce).await;
    let mut victim = b.client(v, "victim").await;
    victim.send_raw(bytes).await;
    victim.expect_disconnect(rc).await;
    let mut publ = b.client(v, "pub").await;
    publ.publish("still/ok", "yes", QoS::AtLeastOnce).await;
    assert_eq!(text(&bystander.recv_publish_acked().await), "yes");
}

/// A raw PUBLISH (QoS 0, no properties in 5.0) with the given topic bytes.
fn raw_publish(v: ProtocolVersion, flags: u8, topic: &[u8], packet_id: Option<u16>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic);
    if let Some(id) = packet_id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    if v.is_v5() {
        body.push(0); // property length
    }
    body.extend_from_slice(b"payload");
    let mut out = vec![0x30 | flags, body.len() as u8];
    out.extend_from_slice(&body);
    out
}

fn encoded(packet: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(packet, v, &mut out);
    out.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_fixed_header_flags_close_the_connection() {
    // [MQTT-2.1.3-1] (3.1.1 [MQTT-2.2.2-2]): invalid flags → Malformed Packet, 0x81.
    for v in V3_AND_V5 {
        // PINGREQ with flags 0001.
        violation_closes(v, &[0xC1, 0x00], ReasonCode::MALFORMED_PACKET).await;
        // SUBSCRIBE with flags 0000 instead of 0010 [MQTT-3.8.1-1].
        let mut sub = encoded(
            &Packet::Subscribe(midge_proto::Subscribe {
                packet_id: 1,
                filters: vec![("a".into(), opts(QoS::AtMostOnce))],
                properties: Default::default(),
            }),
            v,
        );
        sub[0] = 0x80;
        violation_closes(v, &sub, ReasonCode::MALFORMED_PACKET).await;
        // PUBREL with flags 0000 [MQTT-3.6.1-1].
        violation_closes(v, &[0x60, 0x02, 0x00, 0x01], ReasonCode::MALFORMED_PACKET).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_qos_3_closes_the_connection() {
    // [MQTT-3.3.1-4] A PUBLISH MUST NOT have both QoS bits set: Malformed Packet.
    for v in V3_AND_V5 {
        let raw = raw_publish(v, 0b0110, b"t", Some(1));
        violation_closes(v, &raw, ReasonCode::MALFORMED_PACKET).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_publish_with_dup_closes_the_connection_in_5_0() {
    // [MQTT-3.3.1-2] The DUP flag MUST be 0 for QoS 0 messages (5.0: Malformed Packet).
    let raw = raw_publish(V5, 0b1000, b"t", None);
    violation_closes(V5, &raw, ReasonCode::MALFORMED_PACKET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_topic_closes_the_connection() {
    // [MQTT-1.5.3-1] ill-formed UTF-8 → the receiver closes the connection (5.0: 0x81).
    for v in V3_AND_V5 {
        let raw = raw_publish(v, 0, &[b'a', 0xC3, 0x28], None);
        violation_closes(v, &raw, ReasonCode::MALFORMED_PACKET).await;
        // A UTF-16 surrogate encoded in UTF-8 (U+D800) is ill-formed too.
        let raw = raw_publish(v, 0, &[0xED, 0xA0, 0x80], None);
        violation_closes(v, &raw, ReasonCode::MALFORMED_PACKET).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_character_in_topic_closes_the_connection() {
    // [MQTT-1.5.3-2] a UTF-8 string MUST NOT include U+0000.
    for v in V3_AND_V5 {
        let raw = raw_publish(v, 0, b"a\0b", None);
        violation_closes(v, &raw, ReasonCode::MALFORMED_PACKET).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_in_publish_topic_closes_the_connection() {
    // [MQTT-3.3.2-2] The Topic Name in a PUBLISH MUST NOT contain wildcards; 5.0: 0x90
    // Topic Name invalid.
    for v in V3_AND_V5 {
        for topic in [&b"a/+"[..], b"a/#", b"+"] {
            let raw = raw_publish(v, 0, topic, None);
            violation_closes(v, &raw, ReasonCode::TOPIC_NAME_INVALID).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_topic_in_3_1_1_publish_closes_the_connection() {
    // [MQTT-4.7.3-1] Topic Names MUST be at least one character long.
    let raw = raw_publish(V311, 0, b"", None);
    violation_closes(V311, &raw, ReasonCode::TOPIC_NAME_INVALID).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remaining_length_of_five_bytes_closes_the_connection() {
    // 1.5.5 / 2.2.3: the Remaining Length is at most four bytes: Malformed Packet.
    for v in V3_AND_V5 {
        violation_closes(
            v,
            &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            ReasonCode::MALFORMED_PACKET,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remaining_length_not_in_shortest_form_closes_the_connection() {
    // [MQTT-1.5.5-1] the encoded value MUST use the minimum number of bytes.
    violation_closes(V5, &[0xC0, 0x80, 0x00], ReasonCode::MALFORMED_PACKET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_bytes_after_a_packet_close_the_connection() {
    // PINGREQ has no body: a remaining length of 1 is a Malformed Packet.
    for v in V3_AND_V5 {
        violation_closes(v, &[0xC0, 0x01, 0x00], ReasonCode::MALFORMED_PACKET).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_packet_type_0_closes_the_connection() {
    // 2.1.2: packet type 0 is reserved (Malformed Packet).
    for v in V3_AND_V5 {
        violation_closes(v, &[0x00, 0x00], ReasonCode::MALFORMED_PACKET).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_packet_in_3_1_1_closes_the_connection() {
    // Packet type 15 is reserved before 5.0.
    violation_closes(V311, &[0xF0, 0x00], ReasonCode::MALFORMED_PACKET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_publish_with_packet_id_0_closes_the_connection() {
    // [MQTT-2.2.1-3] (5.0) / [MQTT-2.3.1-1] (3.1.1): QoS > 0 needs a non-zero Packet
    // Identifier. 5.0 calls this a Protocol Error? It is a Malformed Packet in practice;
    // either code is accepted here.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut c = b.client(v, "zero-id").await;
        c.send_raw(&raw_publish(v, 0b0010, b"t", Some(0))).await;
        let got = c.expect_closed().await;
        if v.is_v5() {
            assert!(
                got.iter().any(|p| matches!(p, Packet::Disconnect(d)
                    if d.reason_code == ReasonCode::PROTOCOL_ERROR
                    || d.reason_code == ReasonCode::MALFORMED_PACKET)),
                "{got:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_without_filters_closes_the_connection() {
    // [MQTT-3.8.3-3] SUBSCRIBE with no Topic Filter is a Protocol Error (3.1.1: close).
    for v in V3_AND_V5 {
        let raw: Vec<u8> = if v.is_v5() {
            vec![0x82, 0x03, 0x00, 0x01, 0x00]
        } else {
            vec![0x82, 0x02, 0x00, 0x01]
        };
        violation_closes(v, &raw, ReasonCode::PROTOCOL_ERROR).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_without_filters_closes_the_connection() {
    // [MQTT-3.10.3-2] UNSUBSCRIBE with no Topic Filter is a Protocol Error.
    for v in V3_AND_V5 {
        let raw: Vec<u8> = if v.is_v5() {
            vec![0xA2, 0x03, 0x00, 0x01, 0x00]
        } else {
            vec![0xA2, 0x02, 0x00, 0x01]
        };
        violation_closes(v, &raw, ReasonCode::PROTOCOL_ERROR).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_subscription_option_bits_close_the_connection() {
    // [MQTT-3-8.3-4] (3.1.1): upper 6 bits of the requested QoS byte MUST be 0;
    // [MQTT-3.8.3-5] (5.0): bits 6 and 7 MUST be 0.
    for (v, options) in [(V311, 0b0000_0100u8), (V5, 0b0100_0000u8)] {
        let mut raw = vec![0x82];
        let mut body = vec![0x00, 0x01];
        if v.is_v5() {
            body.push(0);
        }
        body.extend_from_slice(&[0x00, 0x01, b'a', options]);
        raw.push(body.len() as u8);
        raw.extend_from_slice(&body);
        violation_closes(v, &raw, ReasonCode::MALFORMED_PACKET).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling_3_closes_the_connection() {
    // 5.0 3.8.3.1: Retain Handling 3 is a Protocol Error.
    let raw = vec![0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0b0011_0000];
    violation_closes(V5, &raw, ReasonCode::PROTOCOL_ERROR).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_not_allowed_on_the_packet_closes_the_connection() {
    // 2.2.2.2: a property not valid for the packet type is a Malformed Packet.
    // PUBLISH with Session Expiry Interval (0x11).
    let mut raw = vec![0x30, 0];
    let body = [0x00, 0x01, b't', 0x05, 0x11, 0, 0, 0, 1, b'x'];
    raw[1] = body.len() as u8;
    raw.extend_from_slice(&body);
    violation_closes(V5, &raw, ReasonCode::MALFORMED_PACKET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_property_closes_the_connection() {
    // 2.2.2.2: including a property more than once (other than User Property and
    // Subscription Identifier on PUBLISH) is a Protocol Error. Two Content Types.
    let mut raw = vec![0x30, 0];
    let body = [
        0x00, 0x01, b't', 0x08, 0x03, 0x00, 0x01, b'a', 0x03, 0x00, 0x01, b'b', b'x',
    ];
    raw[1] = body.len() as u8;
    raw.extend_from_slice(&body);
    violation_closes(V5, &raw, ReasonCode::PROTOCOL_ERROR).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_only_packets_from_a_client_close_the_connection() {
    // A client sending CONNACK, SUBACK, UNSUBACK or PINGRESP breaks the protocol.
    for v in V3_AND_V5 {
        violation_closes(v, &[0xD0, 0x00], ReasonCode::PROTOCOL_ERROR).await;
        let connack = if v.is_v5() {
            vec![0x20, 0x03, 0x00, 0x00, 0x00]
        } else {
            vec![0x20, 0x02, 0x00, 0x00]
        };
        violation_closes(v, &connack, ReasonCode::PROTOCOL_ERROR).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_split_across_many_writes_is_reassembled() {
    // Not malformed: TCP may deliver a packet one byte at a time.
    let b = TestBroker::start().await;
    let mut c = b.client(V5, "slowpoke").await;
    c.subscribe("drip/t", QoS::AtMostOnce).await;
    let raw = encoded(
        &Packet::Publish(publish_packet("drip/t", "dripped", QoS::AtMostOnce)),
        V5,
    );
    for byte in raw {
        c.send_raw(&[byte]).await;
    }
    assert_eq!(text(&c.recv_publish().await), "dripped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_packets_in_one_write_are_all_processed() {
    let b = TestBroker::start().await;
    let mut c = b.client(V311, "batch").await;
    c.subscribe("batch/t", QoS::AtMostOnce).await;
    let mut raw = Vec::new();
    for i in 0..10 {
        raw.extend(encoded(
            &Packet::Publish(publish_packet("batch/t", &i.to_string(), QoS::AtMostOnce)),
            V311,
        ));
    }
    raw.extend(encoded(&Packet::PingReq, V311));
    c.send_raw(&raw).await;
    // PINGRESP and the deliveries are separate flows with no order between them.
    c.wait_for(|p| matches!(p, Packet::PingResp)).await;
    for i in 0..10 {
        assert_eq!(text(&c.recv_publish().await), i.to_string());
    }
}
