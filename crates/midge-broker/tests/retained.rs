//! Retained messages: stored, replaced, deleted, delivered with RETAIN 1 to new
//! subscriptions and with RETAIN 0 to existing ones.

mod common;

use common::*;
use midge_proto::{Packet, QoS, ReasonCode};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_is_sent_to_a_new_subscriber_with_retain_1() {
    // [MQTT-3.3.1-5] the Server MUST store a RETAIN 1 message; [MQTT-3.3.1-6] (3.1.1) /
    // [MQTT-3.3.1-9] (5.0) it is sent to new matching subscriptions; [MQTT-3.3.1-8]
    // (3.1.1) with RETAIN 1.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut publ = b.client(v, "pub").await;
        publ.publish_retained("ret/t", "stored", QoS::AtLeastOnce)
            .await;
        publ.disconnect().await;
        let mut sub = b.client(v, "sub").await;
        sub.subscribe("ret/t", QoS::AtLeastOnce).await;
        let p = sub.recv_publish_acked().await;
        assert_eq!(text(&p), "stored", "{v:?}");
        assert!(p.retain, "{v:?}: RETAIN 1 on a retained delivery");
        assert_eq!(p.qos, QoS::AtLeastOnce);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_matched_by_wildcard_filters() {
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut publ = b.client(v, "pub").await;
        for t in ["w/a", "w/b/c", "other/x"] {
            publ.publish_retained(t, t, QoS::AtMostOnce).await;
        }
        publ.ping().await;
        let mut sub = b.client(v, "sub").await;
        sub.subscribe("w/#", QoS::AtMostOnce).await;
        let mut got: Vec<String> = sub
            .drain_publishes()
            .await
            .iter()
            .map(|p| text(p).to_string())
            .collect();
        got.sort();
        assert_eq!(got, vec!["w/a", "w/b/c"], "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_retained_message_replaces_the_old_one() {
    // [MQTT-3.3.1-5] the new message replaces any existing retained message for the topic.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut publ = b.client(v, "pub").await;
        publ.publish_retained("rep/t", "old", QoS::AtLeastOnce)
            .await;
        publ.publish_retained("rep/t", "new", QoS::AtLeastOnce)
            .await;
        let mut sub = b.client(v, "sub").await;
        sub.subscribe("rep/t", QoS::AtLeastOnce).await;
        let got: Vec<String> = sub
            .drain_publishes()
            .await
            .iter()
            .map(|p| text(p).to_string())
            .collect();
        assert_eq!(got, vec!["new"], "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_retained_message_is_stored_too() {
    // [MQTT-3.3.1-7] (3.1.1): a QoS 0 RETAIN 1 message replaces the retained message and
    // is kept.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut publ = b.client(v, "pub").await;
        publ.publish_retained("r0/t", "zero", QoS::AtMostOnce).await;
        publ.ping().await;
        let mut sub = b.client(v, "sub").await;
        sub.subscribe("r0/t", QoS::ExactlyOnce).await;
        let p = sub.recv_publish().await;
        assert_eq!((text(&p), p.qos, p.retain), ("zero", QoS::AtMostOnce, true));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_retained_message_deletes_the_retained_message() {
    // [MQTT-3.3.1-10] (3.1.1) / [MQTT-3.3.1-6] (5.0): a RETAIN 1 message with an empty
    // payload removes the retained message; [MQTT-3.3.1-11] (3.1.1) / [MQTT-3.3.1-7] (5.0)
    // it is not stored itself; current subscribers still receive it.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut publ = b.client(v, "pub").await;
        let mut live = b.client(v, "live").await;
        live.subscribe("del/t", QoS::AtLeastOnce).await;
        publ.publish_retained("del/t", "doomed", QoS::AtLeastOnce)
            .await;
        publ.publish_retained("del/t", "", QoS::AtLeastOnce).await;
        assert_eq!(text(&live.recv_publish_acked().await), "doomed");
        let empty = live.recv_publish_acked().await;
        assert!(
            empty.payload.is_empty(),
            "{v:?}: the empty message is forwarded"
        );

        let mut sub = b.client(v, "sub").await;
        sub.subscribe("del/t", QoS::AtLeastOnce).await;
        sub.assert_no_publish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_messages_to_existing_subscribers_have_retain_0() {
    // [MQTT-3.3.1-9] (3.1.1): RETAIN 0 when sent because of an established subscription;
    // (5.0) [MQTT-3.3.1-12] with Retain As Published 0.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut sub = b.client(v, "sub").await;
        let mut publ = b.client(v, "pub").await;
        sub.subscribe("live/t", QoS::AtLeastOnce).await;
        publ.publish_retained("live/t", "now", QoS::AtLeastOnce)
            .await;
        let p = sub.recv_publish_acked().await;
        assert_eq!(text(&p), "now");
        assert!(!p.retain, "{v:?}: live delivery has RETAIN 0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_delivery_uses_the_lower_of_stored_and_granted_qos() {
    // 3.8.4: a retained message is delivered at min(published QoS, granted QoS).
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut publ = b.client(v, "pub").await;
        publ.publish_retained("rq/t", "two", QoS::ExactlyOnce).await;
        let mut sub = b.client(v, "sub").await;
        sub.subscribe("rq/t", QoS::AtLeastOnce).await;
        let p = sub.recv_publish_acked().await;
        assert_eq!((p.qos, p.retain), (QoS::AtLeastOnce, true), "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_sends_the_retained_message_again() {
    // [MQTT-3.8.4-3] (3.1.1): on a repeated SUBSCRIBE, retained messages MUST be re-sent.
    let b = TestBroker::start().await;
    let mut publ = b.client(V311, "pub").await;
    publ.publish_retained("again/t", "r", QoS::AtLeastOnce)
        .await;
    let mut sub = b.client(V311, "sub").await;
    for _ in 0..2 {
        sub.subscribe("again/t", QoS::AtLeastOnce).await;
        let p = sub.recv_publish_acked().await;
        assert!(p.retain);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_dollar_topics_are_not_matched_by_hash() {
    // [MQTT-4.7.2-1] applies to retained messages too.
    let b = TestBroker::start().await;
    let mut publ = b.client(V311, "pub").await;
    publ.publish_retained("$hidden/t", "h", QoS::AtLeastOnce)
        .await;
    publ.publish_retained("shown/t", "s", QoS::AtLeastOnce)
        .await;
    let mut sub = b.client(V311, "sub").await;
    sub.subscribe("#", QoS::AtLeastOnce).await;
    let got: Vec<String> = sub
        .drain_publishes()
        .await
        .iter()
        .map(|p| p.topic.to_string())
        .collect();
    assert_eq!(got, vec!["shown/t"]);
    let mut dollar = b.client(V311, "dollar").await;
    dollar.subscribe("$hidden/+", QoS::AtLeastOnce).await;
    assert_eq!(text(&dollar.recv_publish_acked().await), "h");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_is_refused_when_not_available_in_5_0() {
    // [MQTT-3.2.2-14] Retain Available 0: a PUBLISH with RETAIN 1 is a Protocol Error,
    // DISCONNECT 0x9A Retain not supported.
    let b = TestBroker::start_with(|c| c.retain_available = false).await;
    let mut c = b.client(V5, "noretain").await;
    let mut p = publish_packet("nr/t", "x", QoS::AtMostOnce);
    p.retain = true;
    c.send(&Packet::Publish(p)).await;
    c.expect_disconnect(ReasonCode::RETAIN_NOT_SUPPORTED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_survives_its_publishers_session() {
    // Retained messages belong to the topic, not the session that published them.
    let b = TestBroker::start().await;
    let mut publ = b.client(V5, "gone").await;
    publ.publish_retained("orphan/t", "still here", QoS::AtLeastOnce)
        .await;
    publ.disconnect().await;
    let mut sub = b.client(V5, "sub").await;
    sub.subscribe("orphan/#", QoS::AtLeastOnce).await;
    assert_eq!(text(&sub.recv_publish_acked().await), "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_retained_message_is_not_sent() {
    // [MQTT-3.3.2-5] (5.0): once its Message Expiry Interval has passed, a retained
    // message is not delivered to new subscribers.
    let b = TestBroker::start().await;
    let mut publ = b.client(V5, "pub").await;
    let mut p = publish_packet("rexp/t", "short-lived", QoS::AtLeastOnce);
    p.retain = true;
    p.properties.message_expiry_interval = Some(1);
    publ.publish_packet(p).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut sub = b.client(V5, "sub").await;
    sub.subscribe("rexp/t", QoS::AtLeastOnce).await;
    sub.assert_no_publish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_carries_the_subscription_identifier() {
    // 3.3.4 / 3.8.2.1.2: a retained message sent because of a SUBSCRIBE carries its
    // Subscription Identifier.
    let b = TestBroker::start().await;
    let mut publ = b.client(V5, "pub").await;
    publ.publish_retained("rsid/t", "r", QoS::AtLeastOnce).await;
    let mut sub = b.client(V5, "sub").await;
    let props = midge_proto::Properties {
        subscription_identifiers: vec![42],
        ..Default::default()
    };
    sub.subscribe_with(&[("rsid/#", opts(QoS::AtLeastOnce))], props)
        .await;
    let p = sub.recv_publish_acked().await;
    assert_eq!(p.properties.subscription_identifiers, vec![42]);
    assert!(p.retain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_expiry_is_reduced_by_its_time_in_store() {
    // [MQTT-3.3.2-6] (5.0): the Message Expiry Interval sent is the remaining one.
    let b = TestBroker::start().await;
    let mut publ = b.client(V5, "pub").await;
    let mut p = publish_packet("rexp2/t", "ageing", QoS::AtLeastOnce);
    p.retain = true;
    p.properties.message_expiry_interval = Some(10);
    publ.publish_packet(p).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut sub = b.client(V5, "sub").await;
    sub.subscribe("rexp2/t", QoS::AtLeastOnce).await;
    let got = sub.recv_publish_acked().await;
    let left = got.properties.message_expiry_interval.expect("expiry");
    assert!((1..=9).contains(&left), "{left}");
}
