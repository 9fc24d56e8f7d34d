//! Broker shutdown: clients are told (5.0 DISCONNECT 0x8B) and the listener stops.

mod common;

use common::*;
use midge_proto::ReasonCode;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_disconnects_clients_with_server_shutting_down() {
    // 5.0 3.14.2.1: 0x8B Server shutting down; 3.1.1 clients are just closed.
    let mut b = TestBroker::start().await;
    let mut v5 = b.client(V5, "five").await;
    let mut v3 = b.client(V311, "three").await;
    let addr = b.addr;
    b.shutdown(Duration::from_secs(3)).await;
    v5.expect_disconnect(ReasonCode::SERVER_SHUTTING_DOWN).await;
    v3.expect_disconnect(ReasonCode::SERVER_SHUTTING_DOWN).await;
    // The listener is gone: a new connection is refused, or (while the socket closes)
    // accepted by the kernel and closed without a byte.
    if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(RECV_TIMEOUT, stream.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_promptly_when_clients_close() {
    let mut b = TestBroker::start().await;
    let _c = b.client(V5, "c").await;
    let start = std::time::Instant::now();
    b.shutdown(Duration::from_secs(10)).await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        start.elapsed()
    );
}

/// A connection that has not sent its CONNECT yet is closed at once by a shutdown, not
/// waited for until its connect timeout (here a minute, past the shutdown's grace), and
/// gets no DISCONNECT: none goes before a CONNACK [MQTT-3.14.0-1].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_connect_yet_does_not_hold_the_shutdown() {
    use tokio::io::AsyncReadExt;
    let mut b = TestBroker::start_with(|c| c.connect_timeout = Duration::from_secs(60)).await;
    let mut silent = tokio::net::TcpStream::connect(b.addr).await.expect("tcp");
    // The listener accepts in order: once a later client has its CONNACK, the silent
    // connection was accepted (and waits for its CONNECT).
    let _later = b.client(V5, "later").await;
    let shut = tokio::time::timeout(Duration::from_secs(10), b.shutdown(Duration::from_secs(30)));
    assert!(
        shut.await.is_ok(),
        "the shutdown waited for a connection that never sent CONNECT"
    );
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(RECV_TIMEOUT, silent.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
