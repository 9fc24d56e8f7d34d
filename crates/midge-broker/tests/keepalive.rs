//! Keep-alive: a silent client is disconnected after 1.5 × its keep-alive; any packet
//! (PINGREQ or other) keeps it alive; 0 disables the check. These tests wait real time,
//! with a keep-alive of 1 s.

mod common;

use common::*;
use midge_proto::{Packet, QoS, ReasonCode};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_disconnected_after_one_and_a_half_keep_alives() {
    // [MQTT-3.1.2-24] the Server MUST disconnect a client that sends nothing within 1.5 ×
    // Keep Alive; 5.0: DISCONNECT 0x8D Keep Alive timeout first.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let start = Instant::now();
        let (mut c, _) = TestClient::connect(b.addr, v, |c| {
            c.client_id = "silent".into();
            c.keep_alive = 1;
        })
        .await;
        c.expect_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT).await;
        let after = start.elapsed();
        assert!(
            after >= Duration::from_millis(1400),
            "{v:?}: closed after {after:?}"
        );
        assert!(
            after < Duration::from_secs(4),
            "{v:?}: closed after {after:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingreq_keeps_the_connection_alive() {
    // [MQTT-3.12.4-1] the Server MUST answer PINGREQ with PINGRESP; the connection lives
    // as long as the client keeps talking.
    for v in V3_AND_V5 {
        let b = TestBroker::start().await;
        let (mut c, _) = TestClient::connect(b.addr, v, |c| {
            c.client_id = "pinger".into();
            c.keep_alive = 1;
        })
        .await;
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            c.ping().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_control_packet_resets_the_keep_alive() {
    // 3.1.2.10: Keep Alive is the longest interval between control packets, of any kind.
    let b = TestBroker::start().await;
    let (mut c, _) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "talker".into();
        c.keep_alive = 1;
    })
    .await;
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        c.publish("ka/t", &i.to_string(), QoS::AtMostOnce).await;
    }
    c.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_0_disables_the_check() {
    // 3.1.2.10: a Keep Alive of 0 turns the mechanism off.
    let b = TestBroker::start().await;
    let (mut c, _) = TestClient::connect(b.addr, V311, |c| {
        c.client_id = "forever".into();
        c.keep_alive = 0;
    })
    .await;
    c.expect_silence(Duration::from_millis(2000)).await;
    c.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_keep_alive_is_enforced() {
    // [MQTT-3.2.2-22] with Server Keep Alive the Server uses its value, not the client's.
    let b = TestBroker::start_with(|c| c.max_keepalive = 1).await;
    let start = Instant::now();
    let (mut c, ack) = TestClient::connect(b.addr, V5, |c| {
        c.client_id = "capped".into();
        c.keep_alive = 60;
    })
    .await;
    assert_eq!(ack.properties.server_keep_alive, Some(1));
    c.expect_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT).await;
    assert!(start.elapsed() < Duration::from_secs(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_timeout_of_one_client_leaves_others_alone() {
    let b = TestBroker::start().await;
    let mut steady = b.client(V311, "steady").await;
    let (mut silent, _) = TestClient::connect(b.addr, V311, |c| {
        c.client_id = "silent".into();
        c.keep_alive = 1;
    })
    .await;
    silent.expect_closed().await;
    steady.send(&Packet::PingReq).await;
    assert!(matches!(steady.recv().await, Packet::PingResp));
}
