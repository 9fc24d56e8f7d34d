//! Sessions that outlive connections: kept subscriptions, messages queued while offline,
//! clean start, 5.0 session and message expiry, queue limits.

mod common;

use common::*;
use midge_proto::{ByteStr, Disconnect, Properties, QoS, ReasonCode};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_keeps_its_subscriptions() {
    // [MQTT-3.1.2-4] (3.1.1) / [MQTT-3.1.2-5] (5.0): with CleanSession 0 / Clean Start 0
    // the Server resumes the session, subscriptions included.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let (mut c, _) = TestClient::connect_persistent(b.addr, v, "keeper").await;
        c.subscribe("keep/t", QoS::AtLeastOnce).await;
        c.disconnect().await;
        let (mut c, present) = TestClient::connect_persistent(b.addr, v, "keeper").await;
        assert!(present, "{v:?}");
        let mut publ = b.client(v, "pub").await;
        publ.publish("keep/t", "still subscribed", QoS::AtLeastOnce)
            .await;
        assert_eq!(text(&c.recv_publish_acked().await), "still subscribed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_persistent_session_queues_qos1_and_qos2_messages() {
    // [MQTT-3.1.2-5] (3.1.1) / 5.0 4.1: the session stores QoS 1 and 2 messages that
    // arrive while the client is disconnected, and sends them in order on reconnect;
    // QoS 0 messages are not queued (queue_qos0_messages off).
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let (mut c, _) = TestClient::connect_persistent(b.addr, v, "away").await;
        c.subscribe("away/t", QoS::ExactlyOnce).await;
        c.disconnect().await;
        let mut publ = b.client(v, "pub").await;
        publ.publish("away/t", "q1-a", QoS::AtLeastOnce).await;
        publ.publish("away/t", "q0", QoS::AtMostOnce).await;
        publ.publish("away/t", "q2", QoS::ExactlyOnce).await;
        publ.publish("away/t", "q1-b", QoS::AtLeastOnce).await;
        let (mut c, present) = TestClient::connect_persistent(b.addr, v, "away").await;
        assert!(present);
        let mut got = Vec::new();
        for _ in 0..3 {
            let p = c.recv_publish_acked().await;
            got.push((text(&p).to_string(), p.qos));
        }
        assert_eq!(
            got,
            vec![
                ("q1-a".to_string(), QoS::AtLeastOnce),
                ("q2".to_string(), QoS::ExactlyOnce),
                ("q1-b".to_string(), QoS::AtLeastOnce),
            ],
            "{v:?}"
        );
        c.assert_no_publish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_messages_are_queued_offline_when_configured() {
    // Mosquitto's queue_qos0_messages: QoS 0 is queued for offline persistent sessions.
    let b = TestBroker::start_with(|c| c.queue_qos0_messages = true).await;
    let (mut c, _) = TestClient::connect_persistent(b.addr, V311, "q0").await;
    c.subscribe("q0/t", QoS::AtMostOnce).await;
    c.disconnect().await;
    let mut publ = b.client(V311, "pub").await;
    publ.publish("q0/t", "kept", QoS::AtMostOnce).await;
    publ.ping().await;
    let (mut c, _) = TestClient::connect_persistent(b.addr, V311, "q0").await;
    assert_eq!(text(&c.recv_publish().await), "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_start_discards_the_stored_session() {
    // [MQTT-3.1.2-6] (3.1.1) / [MQTT-3.1.2-4] (5.0): Clean Start 1 discards any existing
    // session: subscriptions and queued messages are gone.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let (mut c, _) = TestClient::connect_persistent(b.addr, v, "fresh").await;
        c.subscribe("fresh/t", QoS::AtLeastOnce).await;
        c.subscribe("fresh/marker", QoS::AtLeastOnce).await;
        c.disconnect().await;
        let mut publ = b.client(v, "pub").await;
        publ.publish("fresh/t", "queued", QoS::AtLeastOnce).await;

        let mut c = b.client(v, "fresh").await;
        c.subscribe("fresh/marker", QoS::AtLeastOnce).await;
        publ.publish("fresh/t", "after", QoS::AtLeastOnce).await;
        publ.publish("fresh/marker", "marker", QoS::AtLeastOnce)
            .await;
        assert_eq!(text(&c.recv_publish_acked().await), "marker", "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_session_ends_with_the_connection_in_3_1_1() {
    // [MQTT-3.1.2-6] (3.1.1): a CleanSession 1 session lasts as long as the connection.
    let b = TestBroker::start().await;
    let mut c = b.client(V311, "brief").await;
    c.subscribe("brief/t", QoS::AtLeastOnce).await;
    c.disconnect().await;
    let (_c, present) = TestClient::connect_persistent(b.addr, V311, "brief").await;
    assert!(!present);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_0_ends_the_session_with_the_connection_in_5_0() {
    // 5.0 3.1.2.11.2: absent Session Expiry Interval = 0: the session ends when the
    // connection closes.
    let b = TestBroker::start().await;
    let (c, _) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "zero".into();
        c.clean_start = false;
    })
    .await;
    c.disconnect().await;
    let (_c, ack) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "zero".into();
        c.clean_start = false;
    })
    .await;
    assert!(!ack.session_present);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expires_after_its_session_expiry_interval() {
    // 5.0 3.1.2.11.2 / [MQTT-3.1.2-23]: the Server keeps the session for Session Expiry
    // Interval seconds after the connection closes, then discards it.
    let b = TestBroker::start().await;
    let connect = |c: &mut midge_proto::Connect| {
        c.client_id = "short".into();
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(1);
    };
    let (c, _) = TestClient::connect(b.addr, V5, connect).await;
    c.disconnect().await;
    // Within the interval the session is there.
    let (c, ack) = TestClient::connect(b.addr, V5, connect).await;
    assert!(ack.session_present, "resumed within the expiry interval");
    c.disconnect().await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (_c, ack) = TestClient::connect(b.addr, V5, connect).await;
    assert!(!ack.session_present, "expired after 1 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_can_shorten_the_session_expiry() {
    // 5.0 3.14.2.2.2: the Session Expiry Interval on DISCONNECT replaces the one from
    // CONNECT; 0 ends the session now.
    let b = TestBroker::start().await;
    let (mut c, _) = TestClient::connect_persistent(b.addr, V5, "shorten").await;
    c.disconnect_with(Disconnect {
        reason_code: ReasonCode::SUCCESS,
        properties: Properties {
            session_expiry_interval: Some(0),
            ..Properties::default()
        },
    })
    .await;
    c.expect_closed().await;
    let (_c, present) = TestClient::connect_persistent(b.addr, V5, "shorten").await;
    assert!(!present);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_may_not_set_an_expiry_when_connect_had_zero() {
    // [MQTT-3.14.2-2] Session Expiry 0 in CONNECT and non-zero in DISCONNECT is a Protocol
    // Error: the Server sends DISCONNECT 0x82.
    let b = TestBroker::start().await;
    let mut c = b.client(V5, "sneaky").await;
    c.disconnect_with(Disconnect {
        reason_code: ReasonCode::SUCCESS,
        properties: Properties {
            session_expiry_interval: Some(60),
            ..Properties::default()
        },
    })
    .await;
    c.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_reports_the_session_expiry_the_server_granted() {
    // 5.0 3.2.2.3.2: if the Server uses a Session Expiry other than the client's, it
    // sends it in CONNACK.
    let b = TestBroker::start_with(|c| {
        c.persistent_client_expiration = Some(Duration::from_secs(10));
    })
    .await;
    let (_c, ack) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "capped".into();
        c.properties.session_expiry_interval = Some(1000);
    })
    .await;
    assert_eq!(ack.properties.session_expiry_interval, Some(10));
    let (_c, ack) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "asked".into();
        c.properties.session_expiry_interval = Some(5);
    })
    .await;
    assert_eq!(
        ack.properties.session_expiry_interval, None,
        "granted as asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_client_expiration_ends_an_idle_3_1_1_session() {
    // Mosquitto's persistent_client_expiration bounds a 3.1.1 session's life offline.
    let b = TestBroker::start_with(|c| {
        c.persistent_client_expiration = Some(Duration::from_secs(1));
    })
    .await;
    let (c, _) = TestClient::connect_persistent(b.addr, V311, "idle").await;
    c.disconnect().await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (_c, present) = TestClient::connect_persistent(b.addr, V311, "idle").await;
    assert!(!present);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_message_expires_while_the_client_is_offline() {
    // [MQTT-3.3.2-5] (5.0): a message whose expiry interval passed before it could be
    // delivered MUST NOT be sent to that subscriber.
    let b = TestBroker::start().await;
    let (mut c, _) = TestClient::connect_persistent(b.addr, V5, "late").await;
    c.subscribe("exp/t", QoS::AtLeastOnce).await;
    c.disconnect().await;
    let mut publ = b.client(V5, "pub").await;
    let mut p = publish_packet("exp/t", "stale", QoS::AtLeastOnce);
    p.properties.message_expiry_interval = Some(1);
    publ.publish_packet(p).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    publ.publish("exp/t", "fresh", QoS::AtLeastOnce).await;
    let (mut c, _) = TestClient::connect_persistent(b.addr, V5, "late").await;
    let got = c.recv_publish_acked().await;
    assert_eq!(text(&got), "fresh");
    assert_eq!(got.properties.message_expiry_interval, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_message_expiry_is_reduced_by_the_time_waited() {
    // [MQTT-3.3.2-6] (5.0): the Message Expiry Interval sent to a subscriber is the
    // received value minus the time the message waited in the Server.
    let b = TestBroker::start().await;
    let (mut c, _) = TestClient::connect_persistent(b.addr, V5, "waiter").await;
    c.subscribe("exp2/t", QoS::AtLeastOnce).await;
    c.disconnect().await;
    let mut publ = b.client(V5, "pub").await;
    let mut p = publish_packet("exp2/t", "ageing", QoS::AtLeastOnce);
    p.properties.message_expiry_interval = Some(10);
    publ.publish_packet(p).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (mut c, _) = TestClient::connect_persistent(b.addr, V5, "waiter").await;
    let got = c.recv_publish_acked().await;
    let left = got
        .properties
        .message_expiry_interval
        .expect("expiry forwarded");
    assert!(
        (1..=9).contains(&left),
        "expiry left {left}, expected below 10"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queue_is_bounded_by_max_queued_messages() {
    // Mosquitto's max_queued_messages: beyond the bound, messages for the offline
    // session are dropped.
    let b = TestBroker::start_with(|c| c.max_queued_messages = 2).await;
    let (mut c, _) = TestClient::connect_persistent(b.addr, V311, "bounded").await;
    c.subscribe("bound/t", QoS::AtLeastOnce).await;
    c.disconnect().await;
    let mut publ = b.client(V311, "pub").await;
    for i in 0..5 {
        publ.publish("bound/t", &i.to_string(), QoS::AtLeastOnce)
            .await;
    }
    let (mut c, _) = TestClient::connect_persistent(b.addr, V311, "bounded").await;
    let got = c.drain_publishes().await;
    let payloads: Vec<&str> = got.iter().map(text).collect();
    assert_eq!(payloads, vec!["0", "1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_separate_per_client_id() {
    let b = TestBroker::start().await;
    let (mut a, _) = TestClient::connect_persistent(b.addr, V5, "alpha").await;
    a.subscribe("sep/a", QoS::AtLeastOnce).await;
    a.disconnect().await;
    let (mut bb, present) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = ByteStr::from("beta");
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
    })
    .await;
    assert!(!present.session_present);
    bb.subscribe("sep/b", QoS::AtLeastOnce).await;
    let mut publ = b.client(V5, "pub").await;
    publ.publish("sep/a", "for alpha", QoS::AtLeastOnce).await;
    publ.publish("sep/b", "for beta", QoS::AtLeastOnce).await;
    assert_eq!(text(&bb.recv_publish_acked().await), "for beta");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_restarts_at_each_disconnect() {
    // 5.0 3.1.2.11.2: the interval counts from when the Network Connection closed; a
    // reconnect in between cancels the earlier countdown.
    let b = TestBroker::start().await;
    let connect = |c: &mut midge_proto::Connect| {
        c.client_id = "restart".into();
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(1);
    };
    let (c, _) = TestClient::connect(b.addr, V5, connect).await;
    c.disconnect().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (c, ack) = TestClient::connect(b.addr, V5, connect).await;
    assert!(ack.session_present);
    c.disconnect().await;
    // 1.2 s after the first disconnect, 0.6 s after the second: still there.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_c, ack) = TestClient::connect(b.addr, V5, connect).await;
    assert!(
        ack.session_present,
        "the first countdown was cancelled by the reconnect"
    );
}
