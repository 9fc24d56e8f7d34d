//! Will messages: when they are published (connection lost, keep-alive, protocol error,
//! takeover, 5.0 DISCONNECT 0x04) and when not (normal DISCONNECT, will delay cancelled).

mod common;

use common::*;
use midge_proto::{ByteStr, Disconnect, Packet, Properties, ProtocolVersion, QoS, ReasonCode};
use std::time::{Duration, Instant};

/// Connects `id` with a will on `topic` (payload "will of {id}") and the given tweak.
async fn with_will(
    b: &TestBroker,
    v: ProtocolVersion,
    id: &str,
    topic: &str,
    tweak: impl FnOnce(&mut midge_proto::Connect),
) -> TestClient {
    let payload = format!("will of {id}");
    let (c, ack) = TestClient::connect(b.addr, v, |c| {
        c.client_id = ByteStr::from(id);
        c.will = Some(will(topic, &payload, QoS::AtLeastOnce, false));
        tweak(c);
    })
    .await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    c
}

/// Proves the will of `id` was not published: the session is reconnected (its old
/// connection is then fully detached, will decided), and a marker published on the will
/// topic must be the next message `watcher` receives.
async fn assert_no_will(
    b: &TestBroker,
    v: ProtocolVersion,
    id: &str,
    topic: &str,
    watcher: &mut TestClient,
) {
    let mut again = b.client(v, id).await;
    again.publish(topic, "marker", QoS::AtLeastOnce).await;
    let p = watcher.recv_publish_acked().await;
    assert_eq!(text(&p), "marker", "{v:?}: no will before the marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_when_the_connection_drops() {
    // [MQTT-3.1.2-8] (3.1.1) / 5.0 3.1.2.5: the Will Message MUST be published when the
    // Network Connection is closed without DISCONNECT.
    for v in [V31, V311, V5] {
        let b = TestBroker::start().await;
        let mut watcher = b.client(v, "watcher").await;
        watcher.subscribe("will/t", QoS::ExactlyOnce).await;
        let c = with_will(&b, v, "dropper", "will/t", |_| {}).await;
        c.drop_connection();
        let p = watcher.recv_publish_acked().await;
        assert_eq!(p.topic.as_str(), "will/t");
        assert_eq!(text(&p), "will of dropper", "{v:?}");
        assert_eq!(p.qos, QoS::AtLeastOnce, "{v:?}: will QoS");
        assert!(!p.retain);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_not_published_after_a_normal_disconnect() {
    // [MQTT-3.1.2-10] (3.1.1) / [MQTT-3.1.2-8] (5.0): DISCONNECT (0x00) deletes the will.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut watcher = b.client(v, "watcher").await;
        watcher.subscribe("will/t", QoS::AtLeastOnce).await;
        let c = with_will(&b, v, "polite", "will/t", |_| {}).await;
        c.disconnect().await;
        assert_no_will(&b, v, "polite", "will/t", &mut watcher).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_with_will_message_publishes_the_will() {
    // 5.0 3.14.2.1: reason code 0x04 Disconnect with Will Message: the Server publishes
    // the will.
    let b = TestBroker::start().await;
    let mut watcher = b.client(V5, "watcher").await;
    watcher.subscribe("will/t", QoS::AtLeastOnce).await;
    let mut c = with_will(&b, V5, "leaver", "will/t", |_| {}).await;
    c.disconnect_with(Disconnect {
        reason_code: ReasonCode::DISCONNECT_WITH_WILL,
        properties: Properties::default(),
    })
    .await;
    let got = c.expect_closed().await;
    assert!(
        got.iter().all(|p| !matches!(p, Packet::Disconnect(_))),
        "the Server does not answer a client DISCONNECT: {got:?}"
    );
    assert_eq!(text(&watcher.recv_publish_acked().await), "will of leaver");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_on_keep_alive_timeout() {
    // [MQTT-3.1.2-24] the Server closes a connection silent for 1.5 × Keep Alive; 5.0
    // 3.1.2.5: the will is then published.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut watcher = b.client(v, "watcher").await;
        watcher.subscribe("will/t", QoS::AtLeastOnce).await;
        let mut c = with_will(&b, v, "sleepy", "will/t", |c| c.keep_alive = 1).await;
        let p = watcher.recv_publish_acked().await;
        assert_eq!(text(&p), "will of sleepy", "{v:?}");
        c.expect_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_after_a_protocol_violation() {
    // 3.1.1 section 3.1.2.5 / 5.0 3.1.2.5: the Server closes the connection because of a
    // protocol error: the will is published.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut watcher = b.client(v, "watcher").await;
        watcher.subscribe("will/t", QoS::AtLeastOnce).await;
        let mut c = with_will(&b, v, "rude", "will/t", |_| {}).await;
        // PINGREQ with a reserved flag set.
        c.send_raw(&[0xC1, 0x00]).await;
        c.expect_closed().await;
        assert_eq!(
            text(&watcher.recv_publish_acked().await),
            "will of rude",
            "{v:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_of_a_taken_over_connection_is_published() {
    // 5.0 3.1.4: "If the existing Client has a Will Message, that Will Message is
    // published as described in section 3.1.2.5" (will delay 0 here).
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut watcher = b.client(v, "watcher").await;
        watcher.subscribe("will/t", QoS::AtLeastOnce).await;
        let mut old = with_will(&b, v, "twin", "will/t", |_| {}).await;
        let _new = b.client(v, "twin").await;
        old.expect_disconnect(ReasonCode::SESSION_TAKEN_OVER).await;
        assert_eq!(
            text(&watcher.recv_publish_acked().await),
            "will of twin",
            "{v:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_will_is_stored_as_a_retained_message() {
    // [MQTT-3.1.2-17] (3.1.1) / 5.0 3.1.2.7: Will Retain 1: the will is published as a
    // retained message.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let (c, _) = TestClient::connect(b.addr, v, |c| {
            c.client_id = "rw".into();
            c.will = Some(will("rwill/t", "last words", QoS::AtLeastOnce, true));
        })
        .await;
        let mut watcher = b.client(v, "watcher").await;
        watcher.subscribe("rwill/t", QoS::AtLeastOnce).await;
        c.drop_connection();
        let live = watcher.recv_publish_acked().await;
        assert_eq!(text(&live), "last words");
        let mut late = b.client(v, "late").await;
        late.subscribe("rwill/t", QoS::AtLeastOnce).await;
        let p = late.recv_publish_acked().await;
        assert_eq!((text(&p), p.retain), ("last words", true), "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_properties_are_forwarded() {
    // 5.0 3.1.3.2: will properties (content type, user properties, response topic,
    // correlation data, payload format) become the PUBLISH properties.
    let b = TestBroker::start().await;
    let mut watcher = b.client(V5, "watcher").await;
    watcher.subscribe("wp/t", QoS::AtLeastOnce).await;
    let (c, _) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "wp".into();
        let mut w = will("wp/t", "bye", QoS::AtLeastOnce, false);
        w.properties.content_type = Some("text/plain".into());
        w.properties.payload_format_indicator = Some(1);
        w.properties.response_topic = Some("wp/reply".into());
        w.properties.correlation_data = Some(bytes::Bytes::from_static(b"\x01\x02"));
        w.properties.user_properties = vec![("k".into(), "v1".into()), ("k".into(), "v2".into())];
        c.will = Some(w);
    })
    .await;
    c.drop_connection();
    let p = watcher.recv_publish_acked().await;
    assert_eq!(p.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.properties.payload_format_indicator, Some(1));
    assert_eq!(p.properties.response_topic.as_deref(), Some("wp/reply"));
    assert_eq!(
        p.properties.correlation_data.as_deref(),
        Some(&b"\x01\x02"[..])
    );
    assert_eq!(
        p.properties.user_properties,
        vec![("k".into(), "v1".into()), ("k".into(), "v2".into())]
    );
    assert_eq!(p.properties.will_delay_interval, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_delay_postpones_the_will() {
    // 5.0 3.1.3.2.2: the Server delays publishing the will until the Will Delay Interval
    // has passed (or the session ends).
    let b = TestBroker::start().await;
    let mut watcher = b.client(V5, "watcher").await;
    watcher.subscribe("wd/t", QoS::AtLeastOnce).await;
    let c = with_will(&b, V5, "delayed", "wd/t", |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
        if let Some(w) = c.will.as_mut() {
            w.properties.will_delay_interval = Some(1);
        }
    })
    .await;
    let dropped = Instant::now();
    c.drop_connection();
    let p = watcher.recv_publish_acked().await;
    assert_eq!(text(&p), "will of delayed");
    let waited = dropped.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "will came after {waited:?}, before its 1 s delay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_within_the_will_delay_cancels_the_will() {
    // [MQTT-3.1.3-9] (5.0): if a new Network Connection to the Session is made before the
    // Will Delay Interval has passed, the Server MUST NOT send the Will Message.
    let b = TestBroker::start().await;
    let mut watcher = b.client(V5, "watcher").await;
    watcher.subscribe("wd/t", QoS::AtLeastOnce).await;
    let persistent = |c: &mut midge_proto::Connect| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
        if let Some(w) = c.will.as_mut() {
            w.properties.will_delay_interval = Some(1);
        }
    };
    let c = with_will(&b, V5, "back", "wd/t", persistent).await;
    c.drop_connection();
    let (mut again, present) = TestClient::connect_persistent(b.addr, V5, "back").await;
    assert!(present);
    // Let the will delay pass in full (time is what this test is about).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    again.publish("wd/t", "marker", QoS::AtLeastOnce).await;
    assert_eq!(text(&watcher.recv_publish_acked().await), "marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_delay_longer_than_session_expiry_0_sends_the_will_at_once() {
    // 5.0 3.1.3.2.2: the will is published when the delay passes or the session ends,
    // whichever is first; Session Expiry 0 ends the session with the connection.
    let b = TestBroker::start().await;
    let mut watcher = b.client(V5, "watcher").await;
    watcher.subscribe("wd/t", QoS::AtLeastOnce).await;
    let c = with_will(&b, V5, "ending", "wd/t", |c| {
        if let Some(w) = c.will.as_mut() {
            w.properties.will_delay_interval = Some(30);
        }
    })
    .await;
    c.drop_connection();
    // RECV_TIMEOUT (5 s) is far below the 30 s delay.
    assert_eq!(text(&watcher.recv_publish_acked().await), "will of ending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_delay_longer_than_session_expiry_sends_the_will_when_the_session_ends() {
    // 5.0 3.1.3.2.2: Session Expiry 1 s, Will Delay 30 s: the will goes after about 1 s.
    let b = TestBroker::start().await;
    let mut watcher = b.client(V5, "watcher").await;
    watcher.subscribe("wd/t", QoS::AtLeastOnce).await;
    let c = with_will(&b, V5, "expiring", "wd/t", |c| {
        c.properties.session_expiry_interval = Some(1);
        if let Some(w) = c.will.as_mut() {
            w.properties.will_delay_interval = Some(30);
        }
    })
    .await;
    let dropped = Instant::now();
    c.drop_connection();
    assert_eq!(
        text(&watcher.recv_publish_acked().await),
        "will of expiring"
    );
    assert!(dropped.elapsed() >= Duration::from_millis(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_delivered_at_the_lower_of_will_qos_and_granted_qos() {
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut watcher = b.client(v, "watcher").await;
        watcher.subscribe("wq/t", QoS::AtMostOnce).await;
        let (c, _) = TestClient::connect(b.addr, v, |c| {
            c.client_id = "wq".into();
            c.will = Some(will("wq/t", "x", QoS::ExactlyOnce, false));
        })
        .await;
        c.drop_connection();
        assert_eq!(watcher.recv_publish().await.qos, QoS::AtMostOnce, "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_message_expiry_counts_from_when_the_will_is_published() {
    // 5.0 3.1.3.2.4: the will's Message Expiry Interval is "used as the Publication Expiry
    // Interval when the Server publishes the Will Message": it starts when the will is
    // published, not when CONNECT arrived.
    let b = TestBroker::start().await;
    let mut watcher = b.client(V5, "watcher").await;
    watcher.subscribe("wexp/t", QoS::AtLeastOnce).await;
    let (mut c, _) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "wexp".into();
        let mut w = will("wexp/t", "late but valid", QoS::AtLeastOnce, false);
        w.properties.message_expiry_interval = Some(1);
        c.will = Some(w);
    })
    .await;
    // Stay connected longer than the expiry interval (time is what this test is about).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.ping().await;
    c.drop_connection();
    let p = watcher.recv_publish_acked().await;
    assert_eq!(text(&p), "late but valid");
    assert_eq!(p.properties.message_expiry_interval, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_with_an_error_reason_code_publishes_the_will() {
    // [MQTT-3.14.4-3] only DISCONNECT with 0x00 discards the will; 5.0 3.1.2.5: the will
    // is published when the connection closes "without first sending a DISCONNECT packet
    // with a Reason Code 0x00".
    let b = TestBroker::start().await;
    let mut watcher = b.client(V5, "watcher").await;
    watcher.subscribe("will/t", QoS::AtLeastOnce).await;
    let mut c = with_will(&b, V5, "failing", "will/t", |_| {}).await;
    c.disconnect_with(Disconnect {
        reason_code: ReasonCode::UNSPECIFIED_ERROR,
        properties: Properties::default(),
    })
    .await;
    c.expect_closed().await;
    let mut again = b.client(V5, "failing").await;
    again.publish("will/t", "marker", QoS::AtLeastOnce).await;
    assert_eq!(text(&watcher.recv_publish_acked().await), "will of failing");
}
