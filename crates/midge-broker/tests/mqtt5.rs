//! MQTT 5.0 features: topic aliases in both directions, Receive Maximum, Maximum Packet
//! Size, property pass-through, response information, subscription identifiers on
//! PUBLISH.

mod common;

use bytes::Bytes;
use common::*;
use midge_proto::{ByteStr, Packet, Properties, PubResp, Publish, QoS, ReasonCode};

fn aliased(topic: &str, alias: u16, payload: &str) -> Publish {
    let mut p = publish_packet(topic, payload, QoS::AtLeastOnce);
    p.properties.topic_alias = Some(alias);
    p
}

/// [`aliased`] with packet identifier 1, ready to send as it is.
fn aliased_packet(topic: &str, alias: u16, payload: &str) -> Packet {
    let mut p = aliased(topic, alias, payload);
    p.packet_id = 1;
    Packet::Publish(p)
}

/// A client of a broker with Topic Alias Maximum `max` sends PUBLISH with Topic Alias
/// `alias`: the broker answers DISCONNECT 0x94 Topic Alias invalid.
async fn alias_is_refused_with_0x94(max: u16, client_id: &str, alias: u16) {
    let b = TestBroker::start_with(|c| c.max_topic_alias = max).await;
    let mut c = b.client(V5, client_id).await;
    c.send(&aliased_packet("t", alias, "x")).await;
    c.expect_disconnect(ReasonCode::TOPIC_ALIAS_INVALID).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_topic_alias_is_resolved_for_later_publishes() {
    // 5.0 3.3.2.3.4: a PUBLISH with a topic and an alias sets the mapping; a later one with
    // an empty topic and that alias uses it [MQTT-3.3.2-12].
    let b = TestBroker::start_with(|c| c.max_topic_alias = 5).await;
    let mut sub = b.client(V5, "sub").await;
    sub.subscribe("alias/#", QoS::AtLeastOnce).await;
    let mut publ = b.client(V5, "pub").await;
    publ.publish_packet(aliased("alias/one", 3, "a")).await;
    publ.publish_packet(aliased("", 3, "b")).await;
    // Re-mapping the alias to another topic.
    publ.publish_packet(aliased("alias/two", 3, "c")).await;
    publ.publish_packet(aliased("", 3, "d")).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let p = sub.recv_publish_acked().await;
        assert_eq!(p.properties.topic_alias, None, "the alias is not forwarded");
        got.push((p.topic.to_string(), text(&p).to_string()));
    }
    let want = [
        ("alias/one", "a"),
        ("alias/one", "b"),
        ("alias/two", "c"),
        ("alias/two", "d"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_0_is_a_protocol_error() {
    // [MQTT-3.3.2-8] A Topic Alias of 0 is a Protocol Error: DISCONNECT 0x94.
    alias_is_refused_with_0x94(5, "zero", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_above_the_maximum_is_a_protocol_error() {
    // [MQTT-3.3.2-9] A Topic Alias above the Server's Topic Alias Maximum: DISCONNECT 0x94.
    alias_is_refused_with_0x94(5, "big", 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alias_is_refused_when_the_maximum_is_0() {
    // [MQTT-3.2.2-17]/[MQTT-3.3.2-9]: Topic Alias Maximum 0 (absent): any alias is invalid.
    alias_is_refused_with_0x94(0, "none", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_alias_with_empty_topic_is_a_protocol_error() {
    // 5.0 3.3.2.3.4: an empty Topic Name with an alias that has no mapping is a Protocol
    // Error.
    let b = TestBroker::start_with(|c| c.max_topic_alias = 5).await;
    let mut c = b.client(V5, "unknown").await;
    c.send(&aliased_packet("", 2, "x")).await;
    let got = c.expect_closed().await;
    let rc = got.iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason_code),
        _ => None,
    });
    assert!(
        matches!(
            rc,
            Some(ReasonCode::PROTOCOL_ERROR) | Some(ReasonCode::TOPIC_ALIAS_INVALID)
        ),
        "DISCONNECT 0x82 or 0x94, got {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_topic_without_alias_is_a_protocol_error() {
    // 5.0 3.3.2.1: a zero-length Topic Name without a Topic Alias is a Protocol Error.
    let b = TestBroker::start().await;
    let mut c = b.client(V5, "empty").await;
    c.send(&Packet::Publish(publish_packet("", "x", QoS::AtMostOnce)))
        .await;
    c.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_do_not_survive_the_connection() {
    // [MQTT-3.3.2-7] Topic Alias mappings exist only within a Network Connection.
    let b = TestBroker::start_with(|c| c.max_topic_alias = 5).await;
    let (mut c, _) = TestClient::connect_persistent(b.addr, V5, "forget").await;
    c.publish_packet(aliased("forget/t", 1, "x")).await;
    c.disconnect().await;
    let (mut c, _) = TestClient::connect_persistent(b.addr, V5, "forget").await;
    c.send(&aliased_packet("", 1, "y")).await;
    let got = c.expect_closed().await;
    assert!(
        got.iter()
            .any(|p| matches!(p, Packet::Disconnect(d) if d.reason_code.is_error())),
        "the old mapping is gone: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_topic_aliases_are_assigned_within_the_clients_maximum() {
    // 5.0 3.3.2.3.4: the Server may use Topic Aliases up to the client's Topic Alias
    // Maximum [MQTT-3.3.2-10 / MQTT-3.3.2-11]; the first use carries the topic, later ones
    // may carry an empty topic.
    let b = TestBroker::start().await;
    let (mut sub, _) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "aliasing".into();
        c.properties.topic_alias_maximum = Some(2);
    })
    .await;
    sub.subscribe("out/#", QoS::AtMostOnce).await;
    let mut publ = b.client(V5, "pub").await;
    let topics = [
        "out/a", "out/b", "out/a", "out/c", "out/b", "out/c", "out/a",
    ];
    for t in topics {
        publ.publish(t, t, QoS::AtMostOnce).await;
    }
    // Resolve the aliases as a client would.
    let mut map = std::collections::HashMap::new();
    for t in topics {
        let p = sub.recv_publish().await;
        let resolved = match p.properties.topic_alias {
            Some(alias) => {
                assert!(
                    (1..=2).contains(&alias),
                    "alias {alias} within the maximum of 2"
                );
                if p.topic.is_empty() {
                    map.get(&alias)
                        .cloned()
                        .expect("alias used before it was set")
                } else {
                    map.insert(alias, p.topic.to_string());
                    p.topic.to_string()
                }
            }
            None => {
                assert!(!p.topic.is_empty());
                p.topic.to_string()
            }
        };
        assert_eq!(resolved, t);
        assert_eq!(text(&p), t);
    }
    assert!(!map.is_empty(), "the broker used topic aliases");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_outgoing_topic_aliases_without_a_client_maximum() {
    // [MQTT-3.3.2-10]: without a Topic Alias Maximum from the client, the Server MUST NOT
    // send Topic Aliases.
    let b = TestBroker::start().await;
    let mut sub = b.client(V5, "plain").await;
    sub.subscribe("noal/t", QoS::AtMostOnce).await;
    let mut publ = b.client(V5, "pub").await;
    for _ in 0..3 {
        publ.publish("noal/t", "x", QoS::AtMostOnce).await;
    }
    for _ in 0..3 {
        let p = sub.recv_publish().await;
        assert_eq!(p.properties.topic_alias, None);
        assert_eq!(p.topic.as_str(), "noal/t");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_messages_after_reconnect_carry_a_topic_name() {
    // [MQTT-3.3.2-7] mappings end with the connection: a PUBLISH resent on a new
    // connection must not refer to an alias the new connection never set.
    let b = TestBroker::start().await;
    let connect = |c: &mut midge_proto::Connect| {
        c.client_id = "realias".into();
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
        c.properties.topic_alias_maximum = Some(5);
    };
    let (mut sub, _) = TestClient::connect(b.addr, V5, connect).await;
    sub.subscribe("ra/t", QoS::AtLeastOnce).await;
    let mut publ = b.client(V5, "pub").await;
    publ.publish("ra/t", "1", QoS::AtLeastOnce).await;
    publ.publish("ra/t", "2", QoS::AtLeastOnce).await;
    let first = sub.recv_publish().await;
    sub.ack(&first).await;
    sub.ping().await; // the PUBACK was processed before the connection drops
    let _second = sub.recv_publish().await; // left unacknowledged
    sub.drop_connection();
    let (mut sub, ack) = TestClient::connect(b.addr, V5, connect).await;
    assert!(ack.session_present);
    let again = sub.recv_publish().await;
    assert_eq!(text(&again), "2");
    assert!(
        !again.topic.is_empty(),
        "topic name present on the new connection: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_exceeding_receive_maximum_with_qos2_is_disconnected() {
    // [MQTT-3.3.4-7] / 5.0 3.3.4: more unacknowledged QoS 2 PUBLISH packets than the
    // Server's Receive Maximum: DISCONNECT 0x93.
    let b = TestBroker::start_with(|c| c.max_inflight_messages = 2).await;
    let mut c = b.client(V5, "greedy").await;
    for id in 1..=3u16 {
        let mut p = publish_packet("rm/t", "x", QoS::ExactlyOnce);
        p.packet_id = id;
        c.send(&Packet::Publish(p)).await;
    }
    c.expect_disconnect(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_within_receive_maximum_is_fine_once_released() {
    let b = TestBroker::start_with(|c| c.max_inflight_messages = 2).await;
    let mut c = b.client(V5, "polite").await;
    for _ in 0..6 {
        c.publish("rm/t", "x", QoS::ExactlyOnce).await;
    }
    c.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_larger_than_maximum_packet_size_is_refused() {
    // [MQTT-3.2.2-? ] 5.0 3.2.2.3.6: a packet above the Server's Maximum Packet Size is a
    // Protocol Error: DISCONNECT 0x95 Packet too large. 3.1.1: the connection is closed.
    for v in V3_AND_V5 {
        let b = TestBroker::start_with(|c| c.max_packet_size = 256).await;
        let mut bystander = b.client(v, "bystander").await;
        let mut c = b.client(v, "big").await;
        let big = "x".repeat(300);
        c.send(&Packet::Publish(publish_packet(
            "big/t",
            &big,
            QoS::AtMostOnce,
        )))
        .await;
        c.expect_disconnect(ReasonCode::PACKET_TOO_LARGE).await;
        bystander.ping().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_at_maximum_packet_size_is_accepted() {
    let b = TestBroker::start_with(|c| c.max_packet_size = 256).await;
    let mut c = b.client(V5, "edge").await;
    c.subscribe("e", QoS::AtMostOnce).await;
    // 1 byte type + 2 bytes remaining length + 2 + 1 topic + 1 property length + payload.
    let payload = "y".repeat(256 - 7);
    let p = publish_packet("e", &payload, QoS::AtMostOnce);
    assert_eq!(
        midge_proto::encoded_len(&Packet::Publish(p.clone()), V5),
        256
    );
    c.publish_packet(p).await;
    assert_eq!(c.recv_publish().await.payload.len(), 256 - 7);
}

/// "small", subscribed to `mps/t` at QoS 1 with a Maximum Packet Size of 64, and "pub".
async fn small_subscriber_and_publisher(b: &TestBroker) -> (TestClient, TestClient) {
    let (mut sub, _) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "small".into();
        c.properties.maximum_packet_size = Some(64);
    })
    .await;
    sub.subscribe("mps/t", QoS::AtLeastOnce).await;
    let publ = b.client(V5, "pub").await;
    (sub, publ)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_larger_than_the_clients_maximum_packet_size_is_not_sent() {
    // [MQTT-3.1.2-24] (5.0) the Server MUST NOT send packets exceeding the client's
    // Maximum Packet Size; [MQTT-3.1.2-25] it discards such a message and behaves as if
    // it had been sent.
    let b = TestBroker::start().await;
    let (mut sub, mut publ) = small_subscriber_and_publisher(&b).await;
    publ.publish("mps/t", &"z".repeat(100), QoS::AtLeastOnce)
        .await;
    publ.publish("mps/t", "small", QoS::AtLeastOnce).await;
    let p = sub.recv_publish_acked().await;
    assert_eq!(text(&p), "small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_large_messages_do_not_use_up_the_inflight_window() {
    // [MQTT-3.1.2-25] "as if it had completed sending": a discarded QoS 1 message does not
    // occupy an in-flight slot.
    let b = TestBroker::start_with(|c| c.max_inflight_messages = 1).await;
    let (mut sub, mut publ) = small_subscriber_and_publisher(&b).await;
    for _ in 0..3 {
        publ.publish("mps/t", &"z".repeat(100), QoS::AtLeastOnce)
            .await;
    }
    publ.publish("mps/t", "small", QoS::AtLeastOnce).await;
    assert_eq!(text(&sub.recv_publish_acked().await), "small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_properties_are_forwarded_unchanged() {
    // [MQTT-3.3.2-4] Payload Format Indicator, [MQTT-3.3.2-15] Response Topic,
    // [MQTT-3.3.2-16] Correlation Data, [MQTT-3.3.2-17] User Properties, [MQTT-3.3.2-18]
    // their order, [MQTT-3.3.2-20] Content Type: sent unaltered to subscribers.
    let b = TestBroker::start().await;
    let mut sub = b.client(V5, "sub").await;
    sub.subscribe("props/t", QoS::AtLeastOnce).await;
    let mut publ = b.client(V5, "pub").await;
    let users: Vec<(ByteStr, ByteStr)> = vec![
        ("b".into(), "2".into()),
        ("a".into(), "1".into()),
        ("b".into(), "1".into()),
        ("".into(), "".into()),
        ("ключ".into(), "значение".into()),
    ];
    let mut p = publish_packet("props/t", "{}", QoS::AtLeastOnce);
    p.properties.payload_format_indicator = Some(1);
    p.properties.content_type = Some("application/json".into());
    p.properties.response_topic = Some("props/reply".into());
    p.properties.correlation_data = Some(Bytes::from_static(&[0, 1, 2, 255]));
    p.properties.user_properties = users.clone();
    publ.publish_packet(p).await;
    let got = sub.recv_publish_acked().await;
    assert_eq!(got.properties.payload_format_indicator, Some(1));
    assert_eq!(
        got.properties.content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(
        got.properties.response_topic.as_deref(),
        Some("props/reply")
    );
    assert_eq!(
        got.properties.correlation_data.as_deref(),
        Some(&[0u8, 1, 2, 255][..])
    );
    assert_eq!(got.properties.user_properties, users);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_are_not_sent_to_3_1_1_subscribers() {
    // A 3.1.1 subscriber gets the same message, without properties (its codec has none).
    let b = TestBroker::start().await;
    let mut sub = b.client(V311, "old").await;
    sub.subscribe("mix/t", QoS::AtLeastOnce).await;
    let mut publ = b.client(V5, "pub").await;
    let mut p = publish_packet("mix/t", "hello", QoS::AtLeastOnce);
    p.properties.user_properties = vec![("k".into(), "v".into())];
    p.properties.message_expiry_interval = Some(60);
    publ.publish_packet(p).await;
    let got = sub.recv_publish_acked().await;
    assert_eq!(text(&got), "hello");
    assert!(got.properties.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_message_keeps_its_expiry_interval() {
    // [MQTT-3.3.2-6]: forwarded with the remaining expiry (here nearly all of it).
    let b = TestBroker::start().await;
    let mut sub = b.client(V5, "sub").await;
    sub.subscribe("mexp/t", QoS::AtLeastOnce).await;
    let mut publ = b.client(V5, "pub").await;
    let mut p = publish_packet("mexp/t", "x", QoS::AtLeastOnce);
    p.properties.message_expiry_interval = Some(60);
    publ.publish_packet(p).await;
    let got = sub.recv_publish_acked().await;
    let left = got.properties.message_expiry_interval.expect("forwarded");
    assert!((59..=60).contains(&left), "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_information_is_sent_only_when_requested() {
    // 5.0 3.1.2.11.7 / 3.2.2.3.15: Request Response Information 1 → the Server MAY send
    // Response Information; with 0 it MUST NOT [MQTT-3.1.2-28].
    let b = TestBroker::start().await;
    let (_c, ack) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "asker".into();
        c.properties.request_response_information = Some(1);
    })
    .await;
    let info = ack
        .properties
        .response_information
        .expect("response information");
    assert!(!info.is_empty());
    let (_c, ack) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "quiet".into();
        c.properties.request_response_information = Some(0);
    })
    .await;
    assert_eq!(ack.properties.response_information, None);
    let (_c, ack) = TestClient::connect(b.addr, V5, |c| c.client_id = "default".into()).await;
    assert_eq!(ack.properties.response_information, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_round_trip_through_the_broker() {
    // 5.0 4.10: a requester sets Response Topic and Correlation Data; the responder
    // publishes to the Response Topic with the same Correlation Data.
    let b = TestBroker::start().await;
    let (mut requester, ack) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "requester".into();
        c.properties.request_response_information = Some(1);
    })
    .await;
    let base = ack
        .properties
        .response_information
        .expect("response information");
    let reply_topic = format!("{base}/reply");
    requester.subscribe(&reply_topic, QoS::AtLeastOnce).await;
    let mut responder = b.client(V5, "responder").await;
    responder.subscribe("service/req", QoS::AtLeastOnce).await;

    let mut req = publish_packet("service/req", "2+2", QoS::AtLeastOnce);
    req.properties.response_topic = Some(ByteStr::from(reply_topic.clone()));
    req.properties.correlation_data = Some(Bytes::from_static(b"req-1"));
    requester.publish_packet(req).await;

    let got = responder.recv_publish_acked().await;
    let mut resp = publish_packet(
        got.properties
            .response_topic
            .as_deref()
            .expect("response topic"),
        "4",
        QoS::AtLeastOnce,
    );
    resp.properties.correlation_data = got.properties.correlation_data.clone();
    responder.publish_packet(resp).await;

    let answer = requester.recv_publish_acked().await;
    assert_eq!(text(&answer), "4");
    assert_eq!(
        answer.properties.correlation_data.as_deref(),
        Some(&b"req-1"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_identifier_on_a_client_publish_is_a_protocol_error() {
    // [MQTT-3.3.4-6] A PUBLISH sent from a Client to a Server MUST NOT contain a
    // Subscription Identifier: a Protocol Error, DISCONNECT 0x82.
    let b = TestBroker::start().await;
    let mut c = b.client(V5, "subid").await;
    let mut p = publish_packet("sid/t", "x", QoS::AtMostOnce);
    p.properties.subscription_identifiers = vec![5];
    c.send(&Packet::Publish(p)).await;
    c.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_packet_without_an_authentication_method_is_a_protocol_error() {
    // 5.0 4.12: AUTH when CONNECT had no Authentication Method is a Protocol Error.
    let b = TestBroker::start().await;
    let mut c = b.client(V5, "auth").await;
    c.send(&Packet::Auth(midge_proto::Auth {
        reason_code: ReasonCode::RE_AUTHENTICATE,
        properties: Properties::default(),
    }))
    .await;
    c.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puback_with_a_reason_code_and_properties_is_accepted() {
    // 5.0 3.4.2: a client PUBACK may carry a reason code and properties.
    let b = TestBroker::start().await;
    let mut sub = b.client(V5, "sub").await;
    sub.subscribe("pa/t", QoS::AtLeastOnce).await;
    let mut publ = b.client(V5, "pub").await;
    publ.publish("pa/t", "1", QoS::AtLeastOnce).await;
    let p = sub.recv_publish().await;
    let mut ack = PubResp::with_reason(p.packet_id, ReasonCode::NO_MATCHING_SUBSCRIBERS);
    ack.properties.reason_string = Some("fine".into());
    sub.send(&Packet::PubAck(ack)).await;
    publ.publish("pa/t", "2", QoS::AtLeastOnce).await;
    assert_eq!(text(&sub.recv_publish_acked().await), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_topic_with_wildcards_is_a_protocol_error() {
    // [MQTT-3.3.2-14] The Response Topic MUST NOT contain wildcard characters; receiving
    // one is a Protocol Error (Mosquitto: DISCONNECT 0x82).
    let b = TestBroker::start().await;
    let mut c = b.client(V5, "wildresp").await;
    let mut p = publish_packet("rt/t", "x", QoS::AtMostOnce);
    p.properties.response_topic = Some("reply/#".into());
    c.send(&Packet::Publish(p)).await;
    c.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_identifier_0_is_a_protocol_error() {
    // 5.0 3.8.2.1.2: a Subscription Identifier of 0 is a Protocol Error.
    let b = TestBroker::start().await;
    let mut c = b.client(V5, "sid0").await;
    // SUBSCRIBE id 1, properties: 0x0B 0x00, filter "a", options 0.
    c.send_raw(&[
        0x82, 0x09, 0x00, 0x01, 0x02, 0x0B, 0x00, 0x00, 0x01, b'a', 0x00,
    ])
    .await;
    c.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigned_client_identifier_can_resume_its_session() {
    // 5.0 3.2.2.3.7: the Assigned Client Identifier is the client's from then on.
    let b = TestBroker::start().await;
    let (mut c, ack) = TestClient::connect(b.addr, V5, |c| {
        c.properties.session_expiry_interval = Some(60);
    })
    .await;
    let id = ack
        .properties
        .assigned_client_identifier
        .expect("assigned id");
    c.subscribe("assigned/t", QoS::AtLeastOnce).await;
    c.disconnect().await;
    let (mut c, present) = TestClient::connect_persistent(b.addr, V5, &id).await;
    assert!(present);
    let mut publ = b.client(V5, "pub").await;
    publ.publish("assigned/t", "back", QoS::AtLeastOnce).await;
    assert_eq!(text(&c.recv_publish_acked().await), "back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_topic_aliases_can_be_turned_off() {
    let b = TestBroker::start_with(|c| c.outgoing_topic_aliases = false).await;
    let (mut sub, _) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "wants-aliases".into();
        c.properties.topic_alias_maximum = Some(10);
    })
    .await;
    sub.subscribe("off/t", QoS::AtMostOnce).await;
    let mut publ = b.client(V5, "pub").await;
    publ.publish("off/t", "a", QoS::AtMostOnce).await;
    publ.publish("off/t", "b", QoS::AtMostOnce).await;
    for _ in 0..2 {
        let p = sub.recv_publish().await;
        assert_eq!(p.properties.topic_alias, None);
        assert_eq!(p.topic.as_str(), "off/t");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maximum_qos_0_downgrades_subscriptions_and_refuses_qos1_publish() {
    // [MQTT-3.2.2-9..11]: Maximum QoS 0 is advertised; a QoS 1 PUBLISH is answered with
    // DISCONNECT 0x9B.
    let b = TestBroker::start_with(|c| c.max_qos = 0).await;
    let (mut c, ack) = TestClient::connect(b.addr, V5, |c| c.client_id = "q0".into()).await;
    assert_eq!(ack.properties.maximum_qos, Some(0));
    let sa = c
        .subscribe_with(&[("q0/t", opts(QoS::ExactlyOnce))], Properties::default())
        .await;
    assert_eq!(sa.reason_codes, vec![ReasonCode::GRANTED_QOS_0]);
    let mut p = publish_packet("q0/t", "x", QoS::AtLeastOnce);
    p.packet_id = 1;
    c.send(&Packet::Publish(p)).await;
    c.expect_disconnect(ReasonCode::QOS_NOT_SUPPORTED).await;
}
