//! `$SYS` statistics: published retained every `sys_interval`, with Mosquitto's topic names.

mod common;

use common::*;
use midge_proto::QoS;
use std::time::Duration;

async fn sys_broker() -> TestBroker {
    TestBroker::start_with(|c| c.sys_interval = Duration::from_secs(1)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_version_is_published_as_a_retained_message() {
    let b = sys_broker().await;
    let mut c = b.client(V311, "sysv").await;
    c.subscribe("$SYS/broker/version", QoS::AtMostOnce).await;
    let p = c.recv_publish().await;
    assert_eq!(p.topic.as_str(), "$SYS/broker/version");
    assert!(p.retain, "retained, so a late subscriber gets it at once");
    assert!(text(&p).starts_with("midge version "), "{}", text(&p));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_clients_connected_counts_connected_clients() {
    let b = sys_broker().await;
    let mut c = b.client(V5, "watcher").await;
    let _other = b.client(V5, "other").await;
    c.subscribe("$SYS/broker/clients/connected", QoS::AtMostOnce)
        .await;
    // The value may be from a tick before both connected; within a few ticks it is 2.
    for _ in 0..5 {
        let p = c.recv_publish().await;
        assert_eq!(p.topic.as_str(), "$SYS/broker/clients/connected");
        let n: u64 = text(&p).parse().expect("a number");
        if n == 2 {
            return;
        }
    }
    panic!("$SYS/broker/clients/connected never reached 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics_are_published_periodically() {
    // The uptime changes every tick, so it is republished every interval.
    let b = sys_broker().await;
    let mut c = b.client(V311, "uptime").await;
    c.subscribe("$SYS/broker/uptime", QoS::AtMostOnce).await;
    let first = c.recv_publish().await;
    let second = c.recv_publish().await;
    assert!(text(&first).ends_with(" seconds"));
    assert_ne!(text(&first), text(&second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics_are_not_matched_by_hash() {
    // [MQTT-4.7.2-1] a subscription to '#' does not receive $SYS topics.
    let b = sys_broker().await;
    let mut all = b.client(V311, "all").await;
    all.subscribe("#", QoS::AtMostOnce).await;
    let mut sys = b.client(V311, "sys").await;
    sys.subscribe("$SYS/#", QoS::AtMostOnce).await;
    // Wait for a tick to have happened (the uptime changes every second).
    let mut uptimes = 0;
    while uptimes < 2 {
        if sys.recv_publish().await.topic.as_str() == "$SYS/broker/uptime" {
            uptimes += 1;
        }
    }
    let mut publ = b.client(V311, "pub").await;
    publ.publish("plain", "marker", QoS::AtLeastOnce).await;
    let p = all.recv_publish().await;
    assert_eq!(p.topic.as_str(), "plain", "no $SYS topic before the marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_is_off_when_the_interval_is_zero() {
    let b = TestBroker::start().await;
    let mut c = b.client(V311, "nosys").await;
    c.subscribe("$SYS/#", QoS::AtMostOnce).await;
    c.assert_no_publish().await;
}

/// Every limit that refuses or slows a client is counted in `$SYS` (issue 5): refused
/// connections (rate per address), refused subscriptions, throttled publishers and failed
/// logins, each read back from its topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hit_are_counted_in_sys() {
    let dir = TempDir::new("sys-limits");
    let passwords = dir.path("passwd");
    let hash = midge_broker::auth::PasswordHash::generate(
        midge_broker::auth::HashKind::Sha512Pbkdf2,
        b"wonderland",
        101,
    )
    .expect("hash");
    std::fs::write(&passwords, format!("alice:{hash}\n")).expect("password file");
    let b = TestBroker::start_with(|c| {
        c.password_file = Some(passwords);
        c.sys_interval = Duration::from_secs(1);
        c.max_subscriptions_per_client = 1;
        c.max_inbound_message_rate = 2;
        c.max_connection_rate_per_ip = 50;
        c.auth_failures_before_delay = 0;
        if let Some(l) = c.listeners.first_mut() {
            l.allow_anonymous = true;
        }
    })
    .await;
    let mut watcher = b.client(V5, "watcher").await;

    // A second subscription is over max_subscriptions_per_client.
    let mut s = b.client(V5, "subs").await;
    s.subscribe("a", QoS::AtMostOnce).await;
    let ack = s
        .subscribe_with(
            &[("b", opts(QoS::AtMostOnce))],
            midge_proto::Properties::default(),
        )
        .await;
    assert!(ack.reason_codes[0].is_error());

    // Three PUBLISHes in a second from one client: over max_inbound_message_rate.
    let mut p = b.client(V5, "fast").await;
    for _ in 0..3 {
        p.publish("t", "x", QoS::AtMostOnce).await;
    }

    // A wrong password is a failed login.
    let (_, ack) = TestClient::connect(b.addr, V5, |c| {
        c.username = Some("alice".into());
        c.password = Some(bytes::Bytes::from_static(b"not-the-password"));
    })
    .await;
    assert!(ack.reason_code.is_error());

    // More than 50 connections in a second from 127.0.0.1: some are refused.
    let mut refused = 0;
    for _ in 0..60 {
        let mut c = TestClient::tcp(b.addr, V5).await;
        c.send(&midge_proto::Packet::Connect(Box::new(connect_packet(
            V5, "",
        ))))
        .await;
        if !matches!(c.recv_within(RECV_TIMEOUT).await, Ok(Some(_))) {
            refused += 1;
        }
    }
    assert!(refused > 0, "the rate limit refused nothing");

    // One subscription covers them all (the watcher is held to one too).
    watcher.subscribe("$SYS/broker/#", QoS::AtMostOnce).await;
    let mut waiting = vec![
        "$SYS/broker/subscriptions/refused",
        "$SYS/broker/publish/messages/throttled",
        "$SYS/broker/connections/refused",
        "$SYS/broker/clients/auth_failures",
    ];
    // Retained values first, then one round per second for the ones still at 0.
    for _ in 0..500 {
        let p = watcher.recv_publish().await;
        let counted = text(&p).parse::<u64>().is_ok_and(|n| n >= 1);
        if counted {
            waiting.retain(|t| *t != p.topic.as_str());
        }
        if waiting.is_empty() {
            return;
        }
    }
    panic!("never counted: {waiting:?}");
}
