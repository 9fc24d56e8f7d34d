//! The `midge` binary itself: clear start-up errors (port in use, bad configuration),
//! graceful shutdown on SIGTERM (MQTT 5 clients get DISCONNECT 0x8B). Reloading on SIGHUP is
//! tested in-process (`midge-broker/tests/security.rs`, `tls.rs`).

mod support;

use bytes::BytesMut;
use midge_proto::{decode, encode, ByteStr, Connect, Packet, ProtocolVersion, ReasonCode};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{free_port, signal, wait_ready, Dir, MIDGE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// Connects (MQTT 5) and returns the stream and the CONNACK reason code.
async fn connect(
    addr: SocketAddr,
    user: Option<(&str, &str)>,
) -> (TcpStream, BytesMut, ReasonCode) {
    let mut s = TcpStream::connect(addr).await.expect("tcp");
    let c = Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 60,
        client_id: ByteStr::from("bin-test"),
        will: None,
        username: user.map(|(u, _)| ByteStr::from(u)),
        password: user.map(|(_, p)| bytes::Bytes::copy_from_slice(p.as_bytes())),
        properties: Default::default(),
    };
    let mut out = BytesMut::new();
    encode(&Packet::Connect(Box::new(c)), V5, &mut out);
    s.write_all(&out).await.expect("write");
    let mut buf = BytesMut::new();
    let p = read_packet(&mut s, &mut buf).await.expect("CONNACK");
    match p {
        Packet::ConnAck(a) => (s, buf, a.reason_code),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

async fn read_packet(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Packet> {
    loop {
        if let Ok(Some(p)) = decode(buf, V5, 1 << 20) {
            return Some(p);
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read_buf(buf))
            .await
            .expect("an answer within 10 s")
            .ok()?;
        if n == 0 {
            return None;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let out = Command::new(MIDGE)
        .args(["-p", &port.to_string(), "--no-persistence"])
        .output()
        .expect("midge runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")) && err.contains("in use"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_names_file_line_and_key() {
    let dir = Dir::new("binary-badconf");
    let conf = dir.0.join("mosquitto.conf");
    std::fs::write(&conf, "listener 1883\nmax_inflight_messages lots\n").expect("write");
    let out = Command::new(MIDGE)
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("midge runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2: max_inflight_messages:", conf.display())),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_disconnects_mqtt5_clients_with_0x8b_and_exits_cleanly() {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut child = Command::new(MIDGE)
        .args(["-p", &port.to_string(), "--no-persistence"])
        .stderr(Stdio::null())
        .spawn()
        .expect("midge starts");
    wait_ready(addr).await;
    let (mut s, mut buf, rc) = connect(addr, None).await;
    assert_eq!(rc, ReasonCode::SUCCESS);
    signal(&child, "-TERM");
    match read_packet(&mut s, &mut buf).await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::SERVER_SHUTTING_DOWN),
        other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}
