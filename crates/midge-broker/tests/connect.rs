//! CONNECT and CONNACK: the handshake, client identifiers, session present, takeover and
//! the limits a CONNACK advertises.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use midge_proto::{encode, ByteStr, Packet, QoS, ReasonCode};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_packet_other_than_connect_closes_the_connection() {
    // [MQTT-3.1.0-1] The first packet sent from the Client to the Server MUST be CONNECT.
    let b = TestBroker::start().await;
    for v in V3_AND_V5 {
        let mut c = TestClient::tcp(b.addr, v).await;
        c.send(&Packet::PingReq).await;
        let got = c.expect_closed().await;
        assert!(
            got.is_empty(),
            "{v:?}: nothing answered before close, got {got:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connect_is_a_protocol_violation() {
    // [MQTT-3.1.0-2] A second CONNECT is a Protocol Error; the connection is closed
    // (5.0: DISCONNECT 0x82 first).
    let b = TestBroker::start().await;
    for v in V3_AND_V5 {
        let mut c = b.client(v, "twice").await;
        c.send(&Packet::Connect(Box::new(connect_packet(v, "twice"))))
            .await;
        c.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_connect_within_connect_timeout_closes_the_connection() {
    let b = TestBroker::start_with(|c| c.connect_timeout = Duration::from_millis(300)).await;
    let mut c = TestClient::tcp(b.addr, V311).await;
    let got = c.expect_closed().await;
    assert!(got.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_connect_does_not_hold_the_connection_past_the_timeout() {
    let b = TestBroker::start_with(|c| c.connect_timeout = Duration::from_millis(300)).await;
    let mut c = TestClient::tcp(b.addr, V311).await;
    let full = bytes_of(
        &Packet::Connect(Box::new(connect_packet(V311, "slow"))),
        V311,
    );
    c.send_raw(&full[..5]).await;
    let got = c.expect_closed().await;
    assert!(got.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_level_is_refused_with_return_code_1() {
    // [MQTT-3.1.2-2] Unsupported protocol level: CONNACK return code 0x01 (5.0: 0x84),
    // then the connection is closed.
    let b = TestBroker::start().await;
    let mut c = TestClient::tcp(b.addr, V311).await;
    let mut raw = bytes_of(
        &Packet::Connect(Box::new(connect_packet(V311, "level6"))),
        V311,
    );
    // Fixed header (2) + protocol name length (2) + "MQTT" (4): the level byte.
    assert_eq!(raw[8], 4);
    raw[8] = 6;
    c.send_raw(&raw).await;
    let ack = c.recv_connack().await;
    assert_eq!(ack.reason_code, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
    assert!(!ack.session_present);
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_reserved_flag_set_closes_the_connection() {
    // [MQTT-3.1.2-3] The reserved flag of CONNECT must be 0, else the connection is closed.
    let b = TestBroker::start().await;
    for v in V3_AND_V5 {
        let mut c = TestClient::tcp(b.addr, v).await;
        let mut raw = bytes_of(&Packet::Connect(Box::new(connect_packet(v, "rsv"))), v);
        // Fixed header (2) + name (6) + level (1): the connect flags byte.
        raw[9] |= 1;
        c.send_raw(&raw).await;
        let got = c.expect_closed().await;
        assert!(
            got.iter()
                .all(|p| !matches!(p, Packet::ConnAck(a) if a.reason_code == ReasonCode::SUCCESS)),
            "{v:?}: no successful CONNACK; got {got:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_without_user_name_in_3_1_1_closes_the_connection() {
    // [MQTT-3.1.2-22] If the User Name Flag is 0, the Password Flag MUST be 0 (3.1.1).
    let b = TestBroker::start().await;
    let mut c = TestClient::tcp(b.addr, V311).await;
    let mut connect = connect_packet(V311, "pw");
    connect.password = Some(Bytes::from_static(b"secret"));
    c.send(&Packet::Connect(Box::new(connect))).await;
    let got = c.expect_closed().await;
    assert!(got
        .iter()
        .all(|p| !matches!(p, Packet::ConnAck(a) if a.reason_code == ReasonCode::SUCCESS)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_client_id_with_clean_session_0_is_refused_in_3_1_1() {
    // [MQTT-3.1.3-8] Zero-byte ClientId with CleanSession 0: CONNACK 0x02, then close.
    let b = TestBroker::start().await;
    let (mut c, ack) = TestClient::connect(b.addr, V311, |c| c.clean_start = false).await;
    assert_eq!(ack.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    assert!(!ack.session_present);
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_client_id_with_clean_session_1_is_accepted_in_3_1_1() {
    // [MQTT-3.1.3-6] A Server MAY allow a zero-byte ClientId and then assign a unique one.
    let b = TestBroker::start().await;
    let (mut c, ack) = TestClient::connect(b.addr, V311, |_| {}).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert!(!ack.session_present);
    c.subscribe("anon/t", QoS::AtLeastOnce).await;
    c.publish("anon/t", "hi", QoS::AtLeastOnce).await;
    let p = c.recv_publish_acked().await;
    assert_eq!(text(&p), "hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_client_id_is_refused_when_zero_length_ids_are_not_allowed() {
    let b = TestBroker::start_with(|c| c.allow_zero_length_clientid = false).await;
    let (mut c, ack) = TestClient::connect(b.addr, V311, |_| {}).await;
    assert_eq!(ack.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_client_id_in_5_0_gets_an_assigned_client_identifier() {
    // [MQTT-3.2.2-16] The Server MUST return the Assigned Client Identifier it chose.
    let b = TestBroker::start().await;
    let (_c1, ack1) = TestClient::connect(b.addr, V5, |_| {}).await;
    let (_c2, ack2) = TestClient::connect(b.addr, V5, |_| {}).await;
    assert_eq!(ack1.reason_code, ReasonCode::SUCCESS);
    let id1 = ack1
        .properties
        .assigned_client_identifier
        .expect("assigned id");
    let id2 = ack2
        .properties
        .assigned_client_identifier
        .expect("assigned id");
    assert!(!id1.is_empty());
    assert!(id1.starts_with("auto-"), "{id1:?} uses auto_id_prefix");
    assert_ne!(id1, id2, "assigned ids are unique");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_client_id_gets_no_assigned_client_identifier() {
    let b = TestBroker::start().await;
    let (_c, ack) = TestClient::connect(b.addr, V5, |c| c.client_id = "mine".into()).await;
    assert_eq!(ack.properties.assigned_client_identifier, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_mqisdp_client_connects_and_exchanges_messages() {
    // MQTT 3.1: protocol name "MQIsdp", level 3.
    let b = TestBroker::start().await;
    let mut sub = b.client(V31, "old-sub").await;
    let mut publ = b.client(V31, "old-pub").await;
    sub.subscribe("legacy/+", QoS::ExactlyOnce).await;
    publ.publish("legacy/a", "one", QoS::AtMostOnce).await;
    publ.publish("legacy/b", "two", QoS::AtLeastOnce).await;
    publ.publish("legacy/c", "three", QoS::ExactlyOnce).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let p = sub.recv_publish_acked().await;
        got.push((p.topic.to_string(), text(&p).to_string(), p.qos));
    }
    assert_eq!(
        got,
        vec![
            ("legacy/a".into(), "one".into(), QoS::AtMostOnce),
            ("legacy/b".into(), "two".into(), QoS::AtLeastOnce),
            ("legacy/c".into(), "three".into(), QoS::ExactlyOnce),
        ]
    );
    sub.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_requires_a_client_id() {
    // MQTT 3.1 section 3.1: the Client Identifier must be 1 to 23 characters;
    // otherwise CONNACK return code 2.
    let b = TestBroker::start().await;
    let (mut c, ack) = TestClient::connect(b.addr, V31, |_| {}).await;
    assert_eq!(ack.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_present_is_0_for_clean_start() {
    // [MQTT-3.2.2-1] (3.1.1) / [MQTT-3.2.2-2] (5.0): clean start → Session Present 0,
    // even when a session existed.
    let b = TestBroker::start().await;
    for v in V3_AND_V5 {
        let id = format!("sp-clean-{v:?}");
        let (c, ack) = TestClient::connect(b.addr, v, |c| {
            c.client_id = ByteStr::from(id.clone());
            c.clean_start = false;
            c.properties.session_expiry_interval = Some(60);
        })
        .await;
        assert!(!ack.session_present, "{v:?}: no session existed");
        c.disconnect().await;
        let (_c, ack) = TestClient::connect(b.addr, v, |c| {
            c.client_id = ByteStr::from(id.clone());
            c.clean_start = true;
        })
        .await;
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
        assert!(
            !ack.session_present,
            "{v:?}: clean start discards the session"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_present_is_1_when_a_stored_session_is_resumed() {
    // [MQTT-3.2.2-2] (3.1.1) / [MQTT-3.2.2-3] (5.0): Session Present 1 when the Server
    // has a stored session for the ClientId; 0 when it has none.
    let b = TestBroker::start().await;
    for v in V3_AND_V5 {
        let id = format!("sp-resume-{v:?}");
        let persistent = |c: &mut midge_proto::Connect| {
            c.client_id = ByteStr::from(id.clone());
            c.clean_start = false;
            c.properties.session_expiry_interval = Some(60);
        };
        let (c, ack) = TestClient::connect(b.addr, v, persistent).await;
        assert!(!ack.session_present, "{v:?}: first connect has no session");
        c.disconnect().await;
        let (_c, ack) = TestClient::connect(b.addr, v, persistent).await;
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
        assert!(ack.session_present, "{v:?}: session resumed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connack_has_session_present_0() {
    // [MQTT-3.2.2-4] (3.1.1) / [MQTT-3.2.2-6] (5.0): a non-zero return code comes with
    // Session Present 0.
    let b = TestBroker::start_with(|c| c.max_qos = 1).await;
    let id = "refused-sp";
    let (c, _) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = id.into();
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
    })
    .await;
    c.disconnect().await;
    // A will at QoS 2 above Maximum QoS 1 is refused [MQTT-3.2.2-12].
    let (mut c, ack) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = id.into();
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
        c.will = Some(will("w", "x", QoS::ExactlyOnce, false));
    })
    .await;
    assert_eq!(ack.reason_code, ReasonCode::QOS_NOT_SUPPORTED);
    assert!(!ack.session_present);
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connection_with_same_client_id_takes_over() {
    // [MQTT-3.1.4-3] If the ClientId represents a Client already connected, the Server
    // MUST disconnect the existing Client; 5.0 sends it DISCONNECT 0x8E first.
    let b = TestBroker::start().await;
    for v in V3_AND_V5 {
        let mut first = b.client(v, "twin").await;
        let mut second = b.client(v, "twin").await;
        first
            .expect_disconnect(ReasonCode::SESSION_TAKEN_OVER)
            .await;
        second.subscribe("twin/t", QoS::AtLeastOnce).await;
        second
            .publish("twin/t", "still here", QoS::AtLeastOnce)
            .await;
        assert_eq!(text(&second.recv_publish_acked().await), "still here");
        second.disconnect().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_keeps_a_persistent_session() {
    // [MQTT-3.1.4-3] with CleanSession 0 the session continues on the new connection.
    let b = TestBroker::start().await;
    for v in V3_AND_V5 {
        let id = format!("twin-keep-{v:?}");
        let persistent = |c: &mut midge_proto::Connect| {
            c.client_id = ByteStr::from(id.clone());
            c.clean_start = false;
            c.properties.session_expiry_interval = Some(60);
        };
        let (mut first, _) = TestClient::connect(b.addr, v, persistent).await;
        first.subscribe("keep/t", QoS::AtLeastOnce).await;
        let (mut second, ack) = TestClient::connect(b.addr, v, persistent).await;
        assert!(ack.session_present, "{v:?}");
        first
            .expect_disconnect(ReasonCode::SESSION_TAKEN_OVER)
            .await;
        second.publish("keep/t", "kept", QoS::AtLeastOnce).await;
        assert_eq!(text(&second.recv_publish_acked().await), "kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_above_max_keepalive_is_answered_with_server_keep_alive_in_5_0() {
    // [MQTT-3.2.2-21] If the Server sends a Server Keep Alive the Client MUST use it.
    let b = TestBroker::start_with(|c| c.max_keepalive = 30).await;
    let (_c, ack) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "ka".into();
        c.keep_alive = 120;
    })
    .await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(ack.properties.server_keep_alive, Some(30));

    let (_c, ack) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "ka0".into();
        c.keep_alive = 0;
    })
    .await;
    assert_eq!(
        ack.properties.server_keep_alive,
        Some(30),
        "keep-alive 0 is also above the max"
    );

    let (_c, ack) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "ka-ok".into();
        c.keep_alive = 10;
    })
    .await;
    assert_eq!(
        ack.properties.server_keep_alive, None,
        "within the limit: not sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_above_max_keepalive_is_refused_in_3_1_1() {
    // No way to tell a 3.1.1 client: refused (Mosquitto: CONNACK 2, identifier rejected).
    let b = TestBroker::start_with(|c| c.max_keepalive = 30).await;
    let (mut c, ack) = TestClient::connect(b.addr, V311, |c| {
        c.client_id = "ka".into();
        c.keep_alive = 120;
    })
    .await;
    assert!(ack.reason_code.is_error());
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_advertises_configured_limits() {
    // [MQTT-3.2.2-*] CONNACK properties: Receive Maximum (3.2.2.3.3), Maximum QoS
    // (3.2.2.3.4), Retain Available (3.2.2.3.5), Maximum Packet Size (3.2.2.3.6),
    // Topic Alias Maximum (3.2.2.3.8).
    let b = TestBroker::start_with(|c| {
        c.max_inflight_messages = 7;
        c.max_topic_alias = 5;
        c.max_packet_size = 4096;
        c.max_qos = 1;
        c.retain_available = false;
    })
    .await;
    let (_c, ack) = TestClient::connect(b.addr, V5, |c| c.client_id = "limits".into()).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(ack.properties.receive_maximum, Some(7));
    assert_eq!(ack.properties.topic_alias_maximum, Some(5));
    assert_eq!(ack.properties.maximum_packet_size, Some(4096));
    assert_eq!(ack.properties.maximum_qos, Some(1));
    assert_eq!(ack.properties.retain_available, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_omits_limits_that_are_at_protocol_defaults() {
    let b = TestBroker::start_with(|c| {
        c.max_topic_alias = 0;
        c.max_packet_size = 0;
        c.max_inflight_messages = 0;
    })
    .await;
    let (_c, ack) = TestClient::connect(b.addr, V5, |c| c.client_id = "defaults".into()).await;
    assert_eq!(ack.properties.receive_maximum, None);
    assert_eq!(ack.properties.topic_alias_maximum, None);
    assert_eq!(ack.properties.maximum_packet_size, None);
    assert_eq!(ack.properties.maximum_qos, None);
    assert_eq!(ack.properties.retain_available, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_in_3_1_1_has_no_properties() {
    // 3.1.1 section 3.2: CONNACK has a remaining length of 2. The 3.1.1 decoder refuses
    // any byte after the return code, so decoding proves the properties are absent.
    let b = TestBroker::start_with(|c| {
        c.max_packet_size = 4096;
        c.max_inflight_messages = 3;
    })
    .await;
    let (_c, ack) = TestClient::connect(b.addr, V311, |c| c.client_id = "v3".into()).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert!(ack.properties.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_qos_above_maximum_qos_is_refused() {
    // [MQTT-3.2.2-12] The Server MUST reject a CONNECT with a Will QoS above its
    // Maximum QoS: CONNACK 0x9B.
    let b = TestBroker::start_with(|c| c.max_qos = 1).await;
    let (mut c, ack) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "wq".into();
        c.will = Some(will("w", "x", QoS::ExactlyOnce, false));
    })
    .await;
    assert_eq!(ack.reason_code, ReasonCode::QOS_NOT_SUPPORTED);
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_will_is_refused_when_retain_is_unavailable() {
    // [MQTT-3.2.2-13] Will Retain 1 with Retain Available 0: CONNACK 0x9A.
    let b = TestBroker::start_with(|c| c.retain_available = false).await;
    let (mut c, ack) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "wr".into();
        c.will = Some(will("w", "x", QoS::AtMostOnce, true));
    })
    .await;
    assert_eq!(ack.reason_code, ReasonCode::RETAIN_NOT_SUPPORTED);
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_client_is_refused_when_the_listener_disallows_it() {
    let b = TestBroker::start_with(|c| c.listeners[0].allow_anonymous = false).await;
    for v in V3_AND_V5 {
        let (mut c, ack) = TestClient::connect(b.addr, v, |c| c.client_id = "anon".into()).await;
        assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED, "{v:?}");
        c.expect_closed().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_method_is_refused_with_bad_authentication_method() {
    // [MQTT-4.12.0-1] A Server that does not support the Authentication Method MAY send
    // CONNACK 0x8C (Bad authentication method) and MUST close the connection.
    let b = TestBroker::start().await;
    let (mut c, ack) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "auth".into();
        c.properties.authentication_method = Some("SCRAM-SHA-1".into());
    })
    .await;
    assert_eq!(ack.reason_code, ReasonCode::BAD_AUTHENTICATION_METHOD);
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_are_closed() {
    let b = TestBroker::start_with(|c| c.max_connections = Some(1)).await;
    let mut first = b.client(V311, "only").await;
    let mut second = TestClient::tcp(b.addr, V311).await;
    // The broker may close before or after reading our CONNECT.
    let mut raw = BytesMut::new();
    encode(
        &Packet::Connect(Box::new(connect_packet(V311, "extra"))),
        V311,
        &mut raw,
    );
    second.try_send_raw(&raw).await;
    let got = second.expect_closed().await;
    assert!(
        got.is_empty(),
        "no CONNACK for a connection over the limit: {got:?}"
    );
    first.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_sent_right_after_connect_are_processed() {
    // 3.1.4: a Client may send further packets immediately after CONNECT, without waiting
    // for CONNACK.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut c = TestClient::tcp(b.addr, v).await;
        let mut raw = bytes_of(&Packet::Connect(Box::new(connect_packet(v, "eager"))), v);
        let sub = midge_proto::Subscribe {
            packet_id: 1,
            filters: vec![("eager/t".into(), opts(QoS::AtLeastOnce))],
            properties: Default::default(),
        };
        raw.extend_from_slice(&bytes_of(&Packet::Subscribe(sub), v));
        let mut p = publish_packet("eager/t", "early bird", QoS::AtLeastOnce);
        p.packet_id = 2;
        raw.extend_from_slice(&bytes_of(&Packet::Publish(p), v));
        c.send_raw(&raw).await;
        let ack = c.recv_connack().await;
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{v:?}");
        c.wait_for(|p| matches!(p, Packet::SubAck(_))).await;
        c.wait_for(|p| matches!(p, Packet::PubAck(a) if a.packet_id == 2))
            .await;
        let got = c.recv_publish_acked().await;
        assert_eq!(text(&got), "early bird", "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_topic_with_wildcards_is_refused() {
    // [MQTT-3.1.3-11] (5.0 [MQTT-3.1.3-11]): the Will Topic is a Topic Name, so it has no
    // wildcards; the connection is refused.
    let b = TestBroker::start().await;
    for v in V3_AND_V5 {
        let mut c = TestClient::tcp(b.addr, v).await;
        let mut connect = connect_packet(v, "badwill");
        connect.will = Some(will("will/#", "x", QoS::AtMostOnce, false));
        c.send(&Packet::Connect(Box::new(connect))).await;
        let got = c.expect_closed().await;
        assert!(
            got.iter()
                .all(|p| !matches!(p, Packet::ConnAck(a) if a.reason_code == ReasonCode::SUCCESS)),
            "{v:?}: {got:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_resends_inflight_messages_on_the_new_connection() {
    // [MQTT-4.4.0-1] after a takeover with a resumed session, unacknowledged PUBLISH
    // packets are resent with DUP 1.
    let b = TestBroker::start().await;
    let (mut first, _) = TestClient::connect_persistent(b.addr, V5, "hand-off").await;
    first.subscribe("ho/t", QoS::AtLeastOnce).await;
    let mut publ = b.client(V5, "pub").await;
    publ.publish("ho/t", "pending", QoS::AtLeastOnce).await;
    let p = first.recv_publish().await;
    let (mut second, present) = TestClient::connect_persistent(b.addr, V5, "hand-off").await;
    assert!(present);
    first
        .expect_disconnect(ReasonCode::SESSION_TAKEN_OVER)
        .await;
    let again = second.recv_publish().await;
    assert!(again.dup);
    assert_eq!(again.packet_id, p.packet_id);
    second.ack(&again).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_client_id_longer_than_23_characters_is_rejected() {
    // MQTT 3.1 section 3.1 (Client Identifier): "between 1 and 23 characters long... If
    // the Client ID contains more than 23 characters, the server responds to the CONNECT
    // message with a CONNACK return code 2: Identifier Rejected."
    let b = TestBroker::start().await;
    let (mut c, ack) =
        TestClient::connect(b.addr, V31, |c| c.client_id = "a".repeat(24).into()).await;
    assert_eq!(ack.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    c.expect_closed().await;
    let (_c, ack) = TestClient::connect(b.addr, V31, |c| c.client_id = "a".repeat(23).into()).await;
    assert_eq!(
        ack.reason_code,
        ReasonCode::SUCCESS,
        "23 characters are fine"
    );
}

/// Sends a CONNECT encoded from `connect`, with byte `index` replaced by `value` if given,
/// and returns what came back before the close.
async fn connect_raw_closed(
    b: &TestBroker,
    connect: midge_proto::Connect,
    patch: Option<(usize, u8)>,
) -> Vec<Packet> {
    let v = connect.protocol;
    let mut c = TestClient::tcp(b.addr, v).await;
    let mut raw = bytes_of(&Packet::Connect(Box::new(connect)), v);
    if let Some((i, value)) = patch {
        raw[i] = value;
    }
    c.send_raw(&raw).await;
    c.expect_closed().await
}

fn no_success(got: &[Packet]) -> bool {
    got.iter()
        .all(|p| !matches!(p, Packet::ConnAck(a) if a.reason_code == ReasonCode::SUCCESS))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_name_and_level_must_agree() {
    // [MQTT-3.1.2-2]: "MQTT" with level 3, or "MQIsdp" with level 4, is not a protocol
    // this broker speaks: CONNACK return code 0x01, then close.
    let b = TestBroker::start().await;
    // "MQTT" level 3: patch the level of a 3.1.1 CONNECT.
    let got = connect_raw_closed(&b, connect_packet(V311, "mqtt3"), Some((8, 3))).await;
    assert!(
        matches!(got.first(), Some(Packet::ConnAck(a)) if a.reason_code == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        "{got:?}"
    );
    // "MQIsdp" level 4: fixed header (2) + length (2) + "MQIsdp" (6) = level at 10.
    let got = connect_raw_closed(&b, connect_packet(V31, "mqisdp4"), Some((10, 4))).await;
    assert!(
        matches!(got.first(), Some(Packet::ConnAck(a)) if a.reason_code == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_flags_without_a_will_close_the_connection() {
    // [MQTT-3.1.2-13] / [MQTT-3.1.2-15] (3.1.1), [MQTT-3.1.2-11] / [MQTT-3.1.2-13] (5.0):
    // Will QoS and Will Retain MUST be 0 when the Will Flag is 0.
    let b = TestBroker::start().await;
    for v in V3_AND_V5 {
        // Connect flags are at byte 9; clean start is 0x02.
        for flags in [0x02 | 0x08, 0x02 | 0x20] {
            let got = connect_raw_closed(&b, connect_packet(v, "wf"), Some((9, flags))).await;
            assert!(no_success(&got), "{v:?} flags {flags:#04x}: {got:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_qos_3_closes_the_connection() {
    // [MQTT-3.1.2-14] (3.1.1) / [MQTT-3.1.2-12] (5.0): Will QoS MUST NOT be 3.
    let b = TestBroker::start().await;
    for v in V3_AND_V5 {
        let mut connect = connect_packet(v, "wq3");
        connect.will = Some(will("w", "x", QoS::AtMostOnce, false));
        let got = connect_raw_closed(&b, connect, Some((9, 0x02 | 0x04 | 0x18))).await;
        assert!(no_success(&got), "{v:?}: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_0_or_maximum_packet_size_0_close_the_connection() {
    // 5.0 3.1.2.11.3 / 3.1.2.11.4: a value of 0 for either is a Protocol Error.
    let b = TestBroker::start().await;
    let mut connect = connect_packet(V5, "rm0");
    connect.properties.receive_maximum = Some(0);
    let got = connect_raw_closed(&b, connect, None).await;
    assert!(no_success(&got), "{got:?}");
    let mut connect = connect_packet(V5, "mps0");
    connect.properties.maximum_packet_size = Some(0);
    let got = connect_raw_closed(&b, connect, None).await;
    assert!(no_success(&got), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_connections_with_one_client_id_all_succeed_and_one_remains() {
    // [MQTT-3.1.4-3]: each new connection takes the session over; none is refused.
    let b = TestBroker::start().await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let addr = b.addr;
        tasks.push(tokio::spawn(async move {
            let v = if i % 2 == 0 { V311 } else { V5 };
            let (c, ack) = TestClient::connect(addr, v, |c| {
                c.client_id = "crowd".into();
                c.clean_start = false;
                c.properties.session_expiry_interval = Some(60);
            })
            .await;
            (c, ack.reason_code)
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        let (c, rc) = t.await.expect("task");
        assert_eq!(rc, ReasonCode::SUCCESS);
        clients.push(c);
    }
    // Exactly one connection is still open: it answers PINGREQ; the others are closed.
    let mut open = 0;
    for c in clients.iter_mut() {
        c.send(&Packet::PingReq).await;
        loop {
            match c.recv_within(Duration::from_secs(5)).await {
                Ok(Some(Packet::PingResp)) => {
                    open += 1;
                    break;
                }
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(()) => panic!("neither answered nor closed"),
            }
        }
    }
    assert_eq!(open, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_started_in_3_1_1_is_resumed_in_5_0() {
    let b = TestBroker::start().await;
    let (mut c, _) = TestClient::connect_persistent(b.addr, V311, "upgrade").await;
    c.subscribe("up/t", QoS::AtLeastOnce).await;
    c.disconnect().await;
    let mut publ = b.client(V311, "pub").await;
    publ.publish("up/t", "queued", QoS::AtLeastOnce).await;
    let (mut c, present) = TestClient::connect_persistent(b.addr, V5, "upgrade").await;
    assert!(present);
    assert_eq!(text(&c.recv_publish_acked().await), "queued");
}
