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
