//! SUBSCRIBE, UNSUBSCRIBE and topic matching: wildcards, `$` topics, overlapping and
//! shared subscriptions, and the 5.0 subscription options.

mod common;

use common::*;
use midge_proto::{Packet, Properties, QoS, ReasonCode, RetainHandling, SubscriptionOptions};
use std::collections::HashSet;

/// Publishes each topic (QoS 1, payload = topic) then a marker on `marker`; returns the
/// topics `sub` received before the marker.
async fn received_topics(
    publ: &mut TestClient,
    sub: &mut TestClient,
    topics: &[&str],
    marker: &str,
) -> Vec<String> {
    for t in topics {
        publ.publish(t, t, QoS::AtLeastOnce).await;
    }
    publ.publish(marker, "marker", QoS::AtLeastOnce).await;
    let mut got = Vec::new();
    loop {
        let p = sub.recv_publish_acked().await;
        if text(&p) == "marker" {
            return got;
        }
        got.push(p.topic.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plus_matches_exactly_one_level() {
    // [MQTT-4.7.1-3] '+' matches one topic level, including an empty one.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut sub = b.client(v, "sub").await;
        let mut publ = b.client(v, "pub").await;
        sub.subscribe("p/+/x", QoS::AtLeastOnce).await;
        sub.subscribe("mark", QoS::AtLeastOnce).await;
        let got = received_topics(
            &mut publ,
            &mut sub,
            &["p/a/x", "p/a/b/x", "p/x", "p//x", "p/a/x/y", "q/a/x"],
            "mark",
        )
        .await;
        assert_eq!(got, vec!["p/a/x", "p//x"], "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_matches_the_parent_and_every_descendant() {
    // [MQTT-4.7.1-2] '#' matches any number of levels, including the parent level.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut sub = b.client(v, "sub").await;
        let mut publ = b.client(v, "pub").await;
        sub.subscribe("h/#", QoS::AtLeastOnce).await;
        sub.subscribe("mark", QoS::AtLeastOnce).await;
        let got = received_topics(
            &mut publ,
            &mut sub,
            &["h", "h/a", "h/a/b/c", "hx", "x/h", "h/"],
            "mark",
        )
        .await;
        assert_eq!(got, vec!["h", "h/a", "h/a/b/c", "h/"], "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_matching_is_case_sensitive() {
    // [MQTT-4.7.3-4] (5.0 4.7.3): topic names and filters are case sensitive.
    let b = TestBroker::start().await;
    let mut sub = b.client(V311, "sub").await;
    let mut publ = b.client(V311, "pub").await;
    sub.subscribe("Case/T", QoS::AtLeastOnce).await;
    let got = received_topics(
        &mut publ,
        &mut sub,
        &["case/t", "CASE/T", "Case/T"],
        "Case/T",
    )
    .await;
    // The last "Case/T" is the marker's own topic; the first Case/T is a real match.
    assert_eq!(got, vec!["Case/T"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dollar_topics_are_not_matched_by_leading_wildcards() {
    // [MQTT-4.7.2-1] Topic filters starting with a wildcard MUST NOT match topic names
    // beginning with '$'.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut wild = b.client(v, "wild").await;
        let mut dollar = b.client(v, "dollar").await;
        let mut publ = b.client(v, "pub").await;
        wild.subscribe("#", QoS::AtLeastOnce).await;
        wild.subscribe("+/app/x", QoS::AtLeastOnce).await;
        dollar.subscribe("$app/#", QoS::AtLeastOnce).await;
        publ.publish("$app/app/x", "hidden", QoS::AtLeastOnce).await;
        publ.publish("plain/app/x", "visible", QoS::AtLeastOnce)
            .await;
        let p = wild.recv_publish_acked().await;
        assert_eq!(text(&p), "visible", "{v:?}: '#' and '+/...' skip $ topics");
        // One copy for the two overlapping matches [MQTT-3.3.4-2 / 3.1.1 MQTT-3.3.5-1].
        wild.assert_no_publish().await;
        let p = dollar.recv_publish_acked().await;
        assert_eq!(p.topic.as_str(), "$app/app/x");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_deliver_one_copy_at_the_highest_qos() {
    // [MQTT-3.3.4-2] (5.0) / [MQTT-3.3.5-1] (3.1.1): overlapping subscriptions give one
    // delivery respecting the maximum QoS of the matching subscriptions.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut sub = b.client(v, "sub").await;
        let mut publ = b.client(v, "pub").await;
        sub.subscribe("ov/+", QoS::AtMostOnce).await;
        sub.subscribe("ov/#", QoS::ExactlyOnce).await;
        sub.subscribe("ov/t", QoS::AtLeastOnce).await;
        publ.publish("ov/t", "one", QoS::ExactlyOnce).await;
        publ.publish("ov/t", "two", QoS::ExactlyOnce).await;
        let p = sub.recv_publish_acked().await;
        assert_eq!((text(&p), p.qos), ("one", QoS::ExactlyOnce), "{v:?}");
        let p = sub.recv_publish_acked().await;
        assert_eq!(text(&p), "two", "{v:?}: exactly one copy of 'one'");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_carry_every_subscription_identifier() {
    // [MQTT-3.3.4-3] the Server MUST send the Subscription Identifiers of every matching
    // subscription in the one message it sends; [MQTT-3.3.4-4] one delivery may carry
    // several.
    let b = TestBroker::start().await;
    let mut sub = b.client(V5, "sub").await;
    let mut publ = b.client(V5, "pub").await;
    for (filter, id) in [("si/+", 11u32), ("si/#", 22)] {
        let props = Properties {
            subscription_identifiers: vec![id],
            ..Properties::default()
        };
        let ack = sub
            .subscribe_with(&[(filter, opts(QoS::AtLeastOnce))], props)
            .await;
        assert_eq!(ack.reason_codes, vec![ReasonCode::GRANTED_QOS_1]);
    }
    sub.subscribe("si/t", QoS::AtMostOnce).await; // no identifier
    publ.publish("si/t", "x", QoS::AtLeastOnce).await;
    let p = sub.recv_publish_acked().await;
    let mut ids = p.properties.subscription_identifiers.clone();
    ids.sort();
    assert_eq!(ids, vec![11, 22]);
    assert_eq!(p.qos, QoS::AtLeastOnce);
    sub.assert_no_publish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_identifier_is_sent_with_matching_messages_only() {
    // [MQTT-3.8.2-*] / 3.3.2.3.8: the identifier of the matching subscription is sent;
    // none when the subscription had none.
    let b = TestBroker::start().await;
    let mut sub = b.client(V5, "sub").await;
    let mut publ = b.client(V5, "pub").await;
    let props = Properties {
        subscription_identifiers: vec![268_435_455],
        ..Properties::default()
    };
    sub.subscribe_with(&[("with/id", opts(QoS::AtMostOnce))], props)
        .await;
    sub.subscribe("without/id", QoS::AtMostOnce).await;
    publ.publish("with/id", "a", QoS::AtMostOnce).await;
    publ.publish("without/id", "b", QoS::AtMostOnce).await;
    let a = sub.recv_publish().await;
    assert_eq!(a.properties.subscription_identifiers, vec![268_435_455]);
    let b2 = sub.recv_publish().await;
    assert!(b2.properties.subscription_identifiers.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_topic_filters_get_a_failure_code_per_filter() {
    // [MQTT-3.9.3-1] one return code per filter, in order; an invalid filter gets 0x80
    // (3.1.1) / 0x8F Topic Filter invalid (5.0) [MQTT-4.7.1-1, MQTT-4.7.3-1].
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut c = b.client(v, "bad").await;
        let o = opts(QoS::AtLeastOnce);
        let filters = [
            ("ok/1", o),
            ("a/#/b", o),
            ("a+", o),
            ("#a", o),
            ("x/y#", o),
            ("ok/2", o),
        ];
        let ack = c.subscribe_with(&filters, Properties::default()).await;
        let bad = if v.is_v5() {
            ReasonCode::TOPIC_FILTER_INVALID
        } else {
            ReasonCode::UNSPECIFIED_ERROR
        };
        let ok = ReasonCode::GRANTED_QOS_1;
        assert_eq!(ack.reason_codes, vec![ok, bad, bad, bad, bad, ok], "{v:?}");
        // The connection stays usable and the valid filters are in place.
        let mut publ = b.client(v, "pub").await;
        publ.publish("ok/2", "fine", QoS::AtLeastOnce).await;
        assert_eq!(text(&c.recv_publish_acked().await), "fine");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_topic_filter_is_refused() {
    // [MQTT-4.7.3-1] Topic Filters MUST be at least one character long.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut c = b.client(v, "empty").await;
        let ack = c
            .subscribe_with(&[("", opts(QoS::AtMostOnce))], Properties::default())
            .await;
        assert_eq!(ack.reason_codes.len(), 1);
        assert!(
            ack.reason_codes[0].is_error(),
            "{v:?}: {:?}",
            ack.reason_codes
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suback_echoes_the_packet_identifier() {
    // [MQTT-3.8.4-2] SUBACK has the Packet Identifier of the SUBSCRIBE.
    let b = TestBroker::start().await;
    let mut c = b.client(V311, "pid").await;
    let s = midge_proto::Subscribe {
        packet_id: 0xBEEF,
        filters: vec![("a".into(), opts(QoS::AtMostOnce))],
        properties: Properties::default(),
    };
    c.send(&Packet::Subscribe(s)).await;
    match c.recv().await {
        Packet::SubAck(a) => assert_eq!(a.packet_id, 0xBEEF),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_again_replaces_the_subscription() {
    // [MQTT-3.8.4-3] a SUBSCRIBE for an existing filter replaces it (new QoS), and there
    // is still one copy per message.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut sub = b.client(v, "sub").await;
        let mut publ = b.client(v, "pub").await;
        sub.subscribe("re/t", QoS::ExactlyOnce).await;
        sub.subscribe("re/t", QoS::AtMostOnce).await;
        publ.publish("re/t", "a", QoS::ExactlyOnce).await;
        publ.publish("re/t", "b", QoS::ExactlyOnce).await;
        let a = sub.recv_publish().await;
        assert_eq!((text(&a), a.qos), ("a", QoS::AtMostOnce), "{v:?}");
        let b2 = sub.recv_publish().await;
        assert_eq!(text(&b2), "b", "{v:?}: one copy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() {
    // [MQTT-3.10.4-1] the filter is deleted; [MQTT-3.10.4-4] UNSUBACK echoes the Packet
    // Identifier; 5.0: reason 0x00 per removed filter.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut sub = b.client(v, "sub").await;
        let mut publ = b.client(v, "pub").await;
        sub.subscribe("un/a", QoS::AtLeastOnce).await;
        sub.subscribe("un/b", QoS::AtLeastOnce).await;
        let ack = sub.unsubscribe(&["un/a"]).await;
        if v.is_v5() {
            assert_eq!(ack.reason_codes, vec![ReasonCode::SUCCESS]);
        } else {
            assert!(ack.reason_codes.is_empty());
        }
        publ.publish("un/a", "gone", QoS::AtLeastOnce).await;
        publ.publish("un/b", "marker", QoS::AtLeastOnce).await;
        assert_eq!(text(&sub.recv_publish_acked().await), "marker", "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_of_an_unknown_filter_is_acknowledged() {
    // [MQTT-3.10.4-5] UNSUBACK even when nothing was deleted; 5.0: reason 0x11 No
    // subscription existed.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut c = b.client(v, "un").await;
        c.subscribe("known", QoS::AtMostOnce).await;
        let ack = c.unsubscribe(&["never/subscribed", "known"]).await;
        if v.is_v5() {
            assert_eq!(
                ack.reason_codes,
                vec![ReasonCode::NO_SUBSCRIPTION_EXISTED, ReasonCode::SUCCESS]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_matches_the_filter_literally() {
    // [MQTT-3.10.4-1] filters are compared character by character, not matched.
    let b = TestBroker::start().await;
    let mut sub = b.client(V5, "sub").await;
    let mut publ = b.client(V5, "pub").await;
    sub.subscribe("lit/+", QoS::AtLeastOnce).await;
    let ack = sub.unsubscribe(&["lit/a"]).await;
    assert_eq!(ack.reason_codes, vec![ReasonCode::NO_SUBSCRIPTION_EXISTED]);
    publ.publish("lit/a", "still", QoS::AtLeastOnce).await;
    assert_eq!(text(&sub.recv_publish_acked().await), "still");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_subscription_skips_the_clients_own_messages() {
    // [MQTT-3.8.3-3] No Local 1: messages MUST NOT be forwarded to a connection with the
    // same Client Identifier as the publisher.
    let b = TestBroker::start().await;
    let mut me = b.client(V5, "me").await;
    let mut other = b.client(V5, "other").await;
    let o = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        ..SubscriptionOptions::default()
    };
    me.subscribe_with(&[("nl/t", o)], Properties::default())
        .await;
    me.publish("nl/t", "mine", QoS::AtLeastOnce).await;
    other.publish("nl/t", "theirs", QoS::AtLeastOnce).await;
    assert_eq!(text(&me.recv_publish_acked().await), "theirs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_as_published_keeps_the_retain_flag_on_live_messages() {
    // [MQTT-3.3.1-12] Retain As Published 0: RETAIN 0 on forwarded messages;
    // [MQTT-3.3.1-13] Retain As Published 1: RETAIN as published.
    let b = TestBroker::start().await;
    let mut rap = b.client(V5, "rap").await;
    let mut plain = b.client(V5, "plain").await;
    let mut publ = b.client(V5, "pub").await;
    let o = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        retain_as_published: true,
        ..SubscriptionOptions::default()
    };
    rap.subscribe_with(&[("rap/t", o)], Properties::default())
        .await;
    plain.subscribe("rap/t", QoS::AtLeastOnce).await;
    publ.publish_retained("rap/t", "kept", QoS::AtLeastOnce)
        .await;
    publ.publish("rap/t", "live", QoS::AtLeastOnce).await;
    let p = rap.recv_publish_acked().await;
    assert_eq!((text(&p), p.retain), ("kept", true));
    let p = rap.recv_publish_acked().await;
    assert_eq!((text(&p), p.retain), ("live", false));
    let p = plain.recv_publish_acked().await;
    assert_eq!((text(&p), p.retain), ("kept", false));
}

fn with_rh(rh: RetainHandling) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        retain_handling: rh,
        ..SubscriptionOptions::default()
    }
}

/// Subscribes `c` to `filter` with retain handling `rh`, then returns whether a retained
/// message arrived before a marker published on `marker_topic`.
async fn got_retained(
    c: &mut TestClient,
    publ: &mut TestClient,
    filter: &str,
    rh: RetainHandling,
) -> bool {
    c.subscribe_with(&[(filter, with_rh(rh))], Properties::default())
        .await;
    publ.publish(filter, "marker", QoS::AtLeastOnce).await;
    let p = c.recv_publish_acked().await;
    if text(&p) == "marker" {
        return false;
    }
    assert!(p.retain, "retained message arrives with RETAIN 1");
    let m = c.recv_publish_acked().await;
    assert_eq!(text(&m), "marker");
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling_0_sends_retained_messages_on_every_subscribe() {
    // [MQTT-3.3.1-9] Retain Handling 0: retained messages are sent at subscribe.
    let b = TestBroker::start().await;
    let mut publ = b.client(V5, "pub").await;
    let mut c = b.client(V5, "rh0").await;
    publ.publish_retained("rh/0", "r", QoS::AtLeastOnce).await;
    assert!(got_retained(&mut c, &mut publ, "rh/0", RetainHandling::SendAtSubscribe).await);
    // The marker published without RETAIN did not replace the retained message.
    assert!(got_retained(&mut c, &mut publ, "rh/0", RetainHandling::SendAtSubscribe).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling_1_sends_retained_messages_only_for_a_new_subscription() {
    // [MQTT-3.3.1-10] Retain Handling 1: sent only if the subscription did not exist.
    let b = TestBroker::start().await;
    let mut publ = b.client(V5, "pub").await;
    let mut c = b.client(V5, "rh1").await;
    publ.publish_retained("rh/1", "r", QoS::AtLeastOnce).await;
    assert!(got_retained(&mut c, &mut publ, "rh/1", RetainHandling::SendIfNew).await);
    assert!(!got_retained(&mut c, &mut publ, "rh/1", RetainHandling::SendIfNew).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling_2_never_sends_retained_messages() {
    // [MQTT-3.3.1-11] Retain Handling 2: retained messages are not sent at subscribe.
    let b = TestBroker::start().await;
    let mut publ = b.client(V5, "pub").await;
    let mut c = b.client(V5, "rh2").await;
    publ.publish_retained("rh/2", "r", QoS::AtLeastOnce).await;
    assert!(!got_retained(&mut c, &mut publ, "rh/2", RetainHandling::DoNotSend).await);
}

/// The payloads each member had received once every message was routed.
async fn collect_shared(members: &mut [TestClient]) -> Vec<Vec<String>> {
    let mut got = Vec::new();
    for m in members.iter_mut() {
        let mut mine = Vec::new();
        for p in m.drain_publishes().await {
            m.ack(&p).await;
            mine.push(text(&p).to_string());
        }
        got.push(mine);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_delivers_each_message_to_exactly_one_member() {
    // 5.0 4.8.2: a message matching a Shared Subscription goes to only one member;
    // non-shared subscriptions get every message.
    let b = TestBroker::start().await;
    let mut members = vec![b.client(V5, "m1").await, b.client(V5, "m2").await];
    for m in members.iter_mut() {
        m.subscribe("$share/grp/sh/t", QoS::AtLeastOnce).await;
    }
    let mut all = b.client(V5, "all").await;
    all.subscribe("sh/t", QoS::AtLeastOnce).await;
    let mut publ = b.client(V5, "pub").await;
    let n = 20;
    for i in 0..n {
        publ.publish("sh/t", &i.to_string(), QoS::AtLeastOnce).await;
    }
    // Every message reached the non-shared subscriber, in order.
    for i in 0..n {
        assert_eq!(text(&all.recv_publish_acked().await), i.to_string());
    }
    let got = collect_shared(&mut members).await;
    let mut union: Vec<String> = got.iter().flatten().cloned().collect();
    assert_eq!(union.len(), n, "each message exactly once: {got:?}");
    let distinct: HashSet<&String> = union.iter().collect();
    assert_eq!(distinct.len(), n, "no duplicates: {got:?}");
    union.sort_by_key(|s| s.parse::<u32>().unwrap_or(0));
    assert_eq!(union, (0..n).map(|i| i.to_string()).collect::<Vec<_>>());
    for m in members.iter_mut() {
        m.assert_no_publish().await;
    }
    assert!(
        got.iter().all(|g| !g.is_empty()),
        "both members served: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_with_no_local_is_a_protocol_error() {
    // [MQTT-3.8.3-4] No Local 1 on a Shared Subscription is a Protocol Error: DISCONNECT
    // 0x82.
    let b = TestBroker::start().await;
    let mut c = b.client(V5, "nlshare").await;
    let o = SubscriptionOptions {
        qos: QoS::AtMostOnce,
        no_local: true,
        ..SubscriptionOptions::default()
    };
    let s = midge_proto::Subscribe {
        packet_id: 1,
        filters: vec![("$share/g/t".into(), o)],
        properties: Properties::default(),
    };
    c.send(&Packet::Subscribe(s)).await;
    c.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_shared_subscription_filters_are_refused() {
    // 5.0 4.8.2: ShareName must be non-empty, without wildcards, followed by '/' and a
    // topic filter; otherwise 0x8F Topic Filter invalid.
    let b = TestBroker::start().await;
    let mut c = b.client(V5, "badshare").await;
    let o = opts(QoS::AtMostOnce);
    let ack = c
        .subscribe_with(
            &[
                ("$share/g", o),
                ("$share//t", o),
                ("$share/+/t", o),
                ("$share/g#/t", o),
            ],
            Properties::default(),
        )
        .await;
    assert!(
        ack.reason_codes
            .iter()
            .all(|rc| *rc == ReasonCode::TOPIC_FILTER_INVALID),
        "{:?}",
        ack.reason_codes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_does_not_receive_retained_messages() {
    // 5.0 4.8.2 / 3.3.1.3: retained messages are not sent for a Shared Subscription.
    let b = TestBroker::start().await;
    let mut publ = b.client(V5, "pub").await;
    publ.publish_retained("shr/t", "retained", QoS::AtLeastOnce)
        .await;
    let mut m = b.client(V5, "m").await;
    m.subscribe("$share/g/shr/t", QoS::AtLeastOnce).await;
    publ.publish("shr/t", "live", QoS::AtLeastOnce).await;
    assert_eq!(text(&m.recv_publish_acked().await), "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_from_a_shared_subscription_stops_delivery() {
    let b = TestBroker::start().await;
    let mut m = b.client(V5, "m").await;
    let mut publ = b.client(V5, "pub").await;
    m.subscribe("$share/g/us/t", QoS::AtLeastOnce).await;
    m.subscribe("us/marker", QoS::AtLeastOnce).await;
    let ack = m.unsubscribe(&["$share/g/us/t"]).await;
    assert_eq!(ack.reason_codes, vec![ReasonCode::SUCCESS]);
    publ.publish("us/t", "gone", QoS::AtLeastOnce).await;
    publ.publish("us/marker", "marker", QoS::AtLeastOnce).await;
    assert_eq!(text(&m.recv_publish_acked().await), "marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_and_non_shared_subscriptions_of_one_client_each_deliver() {
    // 5.0 4.8.2: "If a Client has a Shared Subscription and a Non-shared Subscription and
    // a message matches both of them, the Client will receive a copy of the message by
    // virtue of it having the Non-shared Subscription. A second copy of the message will
    // be delivered to one of the subscribers to the Shared Subscription" (here the only
    // member is the same client, so it gets two copies, as with Mosquitto).
    let b = TestBroker::start().await;
    let mut c = b.client(V5, "both").await;
    c.subscribe("$share/g/both/t", QoS::AtLeastOnce).await;
    c.subscribe("both/t", QoS::AtLeastOnce).await;
    let mut publ = b.client(V5, "pub").await;
    publ.publish("both/t", "x", QoS::AtLeastOnce).await;
    publ.publish("both/t", "marker", QoS::AtLeastOnce).await;
    let got: Vec<String> = {
        let mut got = Vec::new();
        loop {
            let p = c.recv_publish_acked().await;
            if text(&p) == "marker" {
                break got;
            }
            got.push(text(&p).to_string());
        }
    };
    assert_eq!(got, vec!["x", "x"], "one copy per subscription kind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shared_groups_each_deliver_a_copy() {
    // 5.0 4.8.2: each Shared Subscription (group) is delivered to one of its members; a
    // client in two groups gets one copy per group.
    let b = TestBroker::start().await;
    let mut c = b.client(V5, "two-groups").await;
    c.subscribe("$share/a/g2/t", QoS::AtLeastOnce).await;
    c.subscribe("$share/b/g2/t", QoS::AtLeastOnce).await;
    c.subscribe("g2/marker", QoS::AtLeastOnce).await;
    let mut publ = b.client(V5, "pub").await;
    publ.publish("g2/t", "x", QoS::AtLeastOnce).await;
    publ.publish("g2/marker", "marker", QoS::AtLeastOnce).await;
    let mut got = Vec::new();
    loop {
        let p = c.recv_publish_acked().await;
        if text(&p) == "marker" {
            break;
        }
        got.push(text(&p).to_string());
    }
    assert_eq!(got, vec!["x", "x"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_prefers_connected_members() {
    // A member whose session is offline should not take messages while others are online.
    let b = TestBroker::start().await;
    let (mut away, _) = TestClient::connect_persistent(b.addr, V5, "away").await;
    away.subscribe("$share/g/pref/t", QoS::AtLeastOnce).await;
    away.disconnect().await;
    let mut here = b.client(V5, "here").await;
    here.subscribe("$share/g/pref/t", QoS::AtLeastOnce).await;
    let mut publ = b.client(V5, "pub").await;
    for i in 0..6 {
        publ.publish("pref/t", &i.to_string(), QoS::AtLeastOnce)
            .await;
    }
    for i in 0..6 {
        assert_eq!(text(&here.recv_publish_acked().await), i.to_string());
    }
    let (mut away, _) = TestClient::connect_persistent(b.addr, V5, "away").await;
    away.assert_no_publish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_one_overlapping_filter_keeps_the_other() {
    let b = TestBroker::start().await;
    let mut c = b.client(V311, "ov").await;
    c.subscribe("ovu/#", QoS::AtLeastOnce).await;
    c.subscribe("ovu/t", QoS::AtLeastOnce).await;
    c.unsubscribe(&["ovu/t"]).await;
    let mut publ = b.client(V311, "pub").await;
    publ.publish("ovu/t", "via #", QoS::AtLeastOnce).await;
    assert_eq!(text(&c.recv_publish_acked().await), "via #");
    c.assert_no_publish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_on_one_of_two_overlapping_subscriptions() {
    // [MQTT-3.8.3-3] applies per subscription: the other matching subscription still
    // delivers the client's own message, once.
    let b = TestBroker::start().await;
    let mut me = b.client(V5, "me").await;
    let nl = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        ..SubscriptionOptions::default()
    };
    me.subscribe_with(&[("nlo/t", nl)], Properties::default())
        .await;
    me.subscribe("nlo/#", QoS::AtLeastOnce).await;
    me.publish("nlo/t", "own", QoS::AtLeastOnce).await;
    me.publish("nlo/x", "marker", QoS::AtLeastOnce).await;
    assert_eq!(text(&me.recv_publish_acked().await), "own");
    assert_eq!(text(&me.recv_publish_acked().await), "marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_does_not_abort_a_qos2_flow_in_progress() {
    // [MQTT-3.10.4-3] (3.1.1) / 5.0 3.10.4: the Server MAY complete the delivery of
    // messages in flight when a subscription is removed; the QoS 2 flow already started
    // must still finish cleanly (PUBREL answered by PUBCOMP, nothing resent).
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let mut sub = b.client(v, "sub").await;
        sub.subscribe("inprog/t", QoS::ExactlyOnce).await;
        let mut publ = b.client(v, "pub").await;
        publ.publish("inprog/t", "x", QoS::ExactlyOnce).await;
        let p = sub.recv_publish().await;
        sub.unsubscribe(&["inprog/t"]).await;
        sub.ack(&p).await;
        sub.assert_no_publish().await;
    }
}
