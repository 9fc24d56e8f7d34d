//! MQTT 5 enhanced authentication over the wire: SCRAM-SHA-256 in CONNECT/AUTH/CONNACK,
//! failures, unsupported methods, protocol errors in the exchange and re-authentication.
//! The exchange's own logic is tested in `scram.rs`; here every packet is checked as the
//! client sees it.

mod common;
mod scram_client;

use bytes::Bytes;
use common::{TestBroker, TestClient, V311, V5};
use midge_broker::auth::scram::ScramFile;
use midge_proto::{Auth, ByteStr, ConnAck, Packet, Properties, QoS, ReasonCode};
use scram_client::Client;
use std::path::PathBuf;
use std::time::Duration;

const METHOD: &str = "SCRAM-SHA-256";

/// A credentials file with alice/wonderland and bob/builder, and an ACL giving each
/// user its own subtree; removed on drop.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(tag: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("midge-enh-auth-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lines = [
            ScramFile::entry("alice", "wonderland", 4096).unwrap(),
            ScramFile::entry("bob", "builder", 4096).unwrap(),
        ];
        std::fs::write(dir.join("scram"), lines.join("\n") + "\n").unwrap();
        std::fs::write(dir.join("acl"), "pattern readwrite %u/#\n").unwrap();
        Files { dir }
    }
    fn scram(&self) -> PathBuf {
        self.dir.join("scram")
    }
    fn acl(&self) -> PathBuf {
        self.dir.join("acl")
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A broker offering SCRAM-SHA-256, with the ACL, and no anonymous access.
async fn broker(files: &Files) -> TestBroker {
    let (scram, acl) = (files.scram(), files.acl());
    TestBroker::start_with(|c| {
        c.scram_file = Some(scram);
        c.acl_file = Some(acl);
        c.auth_failures_before_delay = 0;
        if let Some(l) = c.listeners.first_mut() {
            l.allow_anonymous = false;
        }
    })
    .await
}

fn auth_props(method: &str, data: Vec<u8>) -> Properties {
    Properties {
        authentication_method: Some(ByteStr::from(method)),
        authentication_data: Some(Bytes::from(data)),
        ..Properties::default()
    }
}

fn auth(reason_code: ReasonCode, method: &str, data: Vec<u8>) -> Packet {
    Packet::Auth(Auth {
        reason_code,
        properties: auth_props(method, data),
    })
}

/// Sends a CONNECT with the SCRAM client-first and returns the broker's first answer.
async fn start(
    addr: std::net::SocketAddr,
    client_id: &str,
    scram: &Client,
) -> (TestClient, Packet) {
    let mut c = TestClient::tcp(addr, V5).await;
    let mut connect = common::connect_packet(V5, client_id);
    connect.properties.authentication_method = Some(ByteStr::from(METHOD));
    connect.properties.authentication_data = Some(Bytes::from(scram.first()));
    c.send(&Packet::Connect(Box::new(connect))).await;
    let answer = c.recv().await;
    (c, answer)
}

/// Asserts `p` is AUTH 0x18 naming the method [MQTT-4.12.0-2] [MQTT-4.12.0-5]; returns its data.
fn continue_data(p: Packet) -> Vec<u8> {
    match p {
        Packet::Auth(a) => {
            assert_eq!(a.reason_code, ReasonCode::CONTINUE_AUTHENTICATION);
            assert_eq!(a.properties.authentication_method.as_deref(), Some(METHOD));
            a.properties
                .authentication_data
                .expect("AUTH carries the server-first message")
                .to_vec()
        }
        other => panic!("expected AUTH 0x18, got {other:?}"),
    }
}

/// The whole exchange; returns the client and the CONNACK.
async fn login(
    addr: std::net::SocketAddr,
    client_id: &str,
    user: &str,
    password: &str,
) -> (TestClient, ConnAck, Vec<u8>) {
    let scram = Client::new(user, "cl1ent-n0nce");
    let (mut c, answer) = start(addr, client_id, &scram).await;
    let server_first = continue_data(answer);
    let (client_final, server_final) = scram.last(&server_first, password);
    // The client answers with AUTH 0x18 [MQTT-4.12.0-3].
    c.send(&auth(
        ReasonCode::CONTINUE_AUTHENTICATION,
        METHOD,
        client_final,
    ))
    .await;
    let ack = c.recv_connack().await;
    (c, ack, server_final)
}

#[tokio::test]
async fn scram_login_succeeds_and_the_connack_proves_the_server_knows_the_user() {
    let files = Files::new("ok");
    let b = broker(&files).await;
    let (mut c, ack, server_final) = login(b.addr, "c1", "alice", "wonderland").await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    // A successful CONNACK names the method of the CONNECT [MQTT-4.12.0-5] and carries the
    // server-final message (RFC 5802 `v=`), which the client checks.
    assert_eq!(
        ack.properties.authentication_method.as_deref(),
        Some(METHOD)
    );
    assert_eq!(
        ack.properties.authentication_data.as_deref(),
        Some(server_final.as_slice())
    );
    // The SCRAM identity is the username the ACL sees: alice may use alice/#, not bob/#.
    c.subscribe("alice/#", QoS::AtLeastOnce).await;
    let sub = c
        .subscribe_with(
            &[("bob/#", common::opts(QoS::AtMostOnce))],
            Properties::default(),
        )
        .await;
    assert_eq!(sub.reason_codes, vec![ReasonCode::NOT_AUTHORIZED]);
    c.publish("alice/x", "hello", QoS::AtLeastOnce).await;
    assert_eq!(common::text(&c.recv_publish_acked().await), "hello");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_connack_not_authorized_and_are_closed() {
    let files = Files::new("bad");
    let b = broker(&files).await;
    for (user, password) in [("alice", "not-wonderland"), ("mallory", "anything")] {
        let (mut c, ack, _) = login(b.addr, "c1", user, password).await;
        // The server rejects with CONNACK >= 0x80 and closes [MQTT-4.12.0-4].
        assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED, "{user}");
        assert!(ack.properties.authentication_data.is_none());
        assert!(c.expect_closed().await.is_empty(), "{user}");
    }
}

#[tokio::test]
async fn unknown_method_or_no_scram_file_gets_bad_authentication_method() {
    let files = Files::new("method");
    let with = broker(&files).await;
    let without = TestBroker::start().await;
    for (addr, method) in [
        (with.addr, "KERBEROS"),
        (with.addr, "scram-sha-256"),
        (without.addr, METHOD),
    ] {
        let (mut c, ack) = TestClient::connect(addr, V5, |c| {
            c.properties.authentication_method = Some(ByteStr::from(method));
            c.properties.authentication_data = Some(Bytes::from_static(b"n,,n=alice,r=x"));
        })
        .await;
        // [MQTT-4.12.0-1]: a method the server does not support gets 0x8C (or 0x87).
        assert_eq!(
            ack.reason_code,
            ReasonCode::BAD_AUTHENTICATION_METHOD,
            "{method}"
        );
        c.expect_closed().await;
    }
}

#[tokio::test]
async fn a_packet_other_than_auth_during_the_exchange_is_a_protocol_error() {
    let files = Files::new("order");
    let b = broker(&files).await;
    let scram = Client::new("alice", "n0nce");
    let (mut c, answer) = start(b.addr, "c1", &scram).await;
    continue_data(answer);
    c.send(&Packet::PingReq).await;
    assert_eq!(
        c.recv_connack().await.reason_code,
        ReasonCode::PROTOCOL_ERROR
    );
    c.expect_closed().await;
}

#[tokio::test]
async fn auth_naming_another_method_is_a_protocol_error() {
    let files = Files::new("other");
    let b = broker(&files).await;
    let scram = Client::new("alice", "n0nce");
    let (mut c, answer) = start(b.addr, "c1", &scram).await;
    let server_first = continue_data(answer);
    let (client_final, _) = scram.last(&server_first, "wonderland");
    // Every AUTH names the method of the CONNECT [MQTT-4.12.0-5].
    c.send(&auth(
        ReasonCode::CONTINUE_AUTHENTICATION,
        "SCRAM-SHA-1",
        client_final,
    ))
    .await;
    assert_eq!(
        c.recv_connack().await.reason_code,
        ReasonCode::PROTOCOL_ERROR
    );
    c.expect_closed().await;
}

#[tokio::test]
async fn an_exchange_left_unfinished_is_closed_at_the_connect_timeout() {
    let files = Files::new("timeout");
    let (scram_path, acl) = (files.scram(), files.acl());
    let b = TestBroker::start_with(|c| {
        c.scram_file = Some(scram_path);
        c.acl_file = Some(acl);
        c.connect_timeout = Duration::from_millis(300);
    })
    .await;
    let scram = Client::new("alice", "n0nce");
    let (mut c, answer) = start(b.addr, "c1", &scram).await;
    continue_data(answer);
    // No client-final: the broker closes without a CONNACK.
    assert!(c.expect_closed().await.is_empty());
}

#[tokio::test]
async fn auth_from_a_client_that_named_no_method_is_a_protocol_error() {
    let b = TestBroker::start().await;
    let mut c = b.client(V5, "c1").await;
    c.send(&auth(
        ReasonCode::RE_AUTHENTICATE,
        METHOD,
        b"n,,n=a,r=b".to_vec(),
    ))
    .await;
    // [MQTT-4.12.0-7]: without a method in CONNECT the client must not send AUTH.
    c.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn reauthentication_succeeds_and_the_connection_goes_on() {
    let files = Files::new("reauth");
    let b = broker(&files).await;
    let (mut c, ack, _) = login(b.addr, "c1", "bob", "builder").await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    c.subscribe("bob/#", QoS::AtLeastOnce).await;

    for round in 0..2 {
        // Re-authentication starts with AUTH 0x19 and the same method [MQTT-4.12.1-1].
        let scram = Client::new("bob", &format!("r3auth-{round}"));
        c.send(&auth(ReasonCode::RE_AUTHENTICATE, METHOD, scram.first()))
            .await;
        let server_first = continue_data(c.recv().await);
        let (client_final, server_final) = scram.last(&server_first, "builder");
        c.send(&auth(
            ReasonCode::CONTINUE_AUTHENTICATION,
            METHOD,
            client_final,
        ))
        .await;
        match c.recv().await {
            Packet::Auth(a) => {
                assert_eq!(a.reason_code, ReasonCode::SUCCESS);
                assert_eq!(a.properties.authentication_method.as_deref(), Some(METHOD));
                assert_eq!(
                    a.properties.authentication_data.as_deref(),
                    Some(server_final.as_slice())
                );
            }
            other => panic!("expected AUTH 0x00, got {other:?}"),
        }
    }
    c.publish("bob/x", "still here", QoS::AtLeastOnce).await;
    assert_eq!(common::text(&c.recv_publish_acked().await), "still here");
}

#[tokio::test]
async fn failed_reauthentication_disconnects_with_not_authorized() {
    let files = Files::new("reauth-bad");
    let b = broker(&files).await;

    // Wrong password.
    let (mut c, _, _) = login(b.addr, "c1", "bob", "builder").await;
    let scram = Client::new("bob", "again");
    c.send(&auth(ReasonCode::RE_AUTHENTICATE, METHOD, scram.first()))
        .await;
    let server_first = continue_data(c.recv().await);
    let (client_final, _) = scram.last(&server_first, "wrong");
    c.send(&auth(
        ReasonCode::CONTINUE_AUTHENTICATION,
        METHOD,
        client_final,
    ))
    .await;
    // [MQTT-4.12.1-2]: the server sends DISCONNECT and closes.
    c.expect_disconnect(ReasonCode::NOT_AUTHORIZED).await;

    // Another user than the connection's: refused at the first step.
    let (mut c, _, _) = login(b.addr, "c2", "bob", "builder").await;
    let scram = Client::new("alice", "again");
    c.send(&auth(ReasonCode::RE_AUTHENTICATE, METHOD, scram.first()))
        .await;
    c.expect_disconnect(ReasonCode::NOT_AUTHORIZED).await;
}

#[tokio::test]
async fn a_second_reauthentication_while_one_is_pending_is_a_protocol_error() {
    let files = Files::new("reauth-twice");
    let b = broker(&files).await;
    let (mut c, _, _) = login(b.addr, "c1", "bob", "builder").await;
    let scram = Client::new("bob", "again");
    c.send(&auth(ReasonCode::RE_AUTHENTICATE, METHOD, scram.first()))
        .await;
    continue_data(c.recv().await);
    c.send(&auth(ReasonCode::RE_AUTHENTICATE, METHOD, scram.first()))
        .await;
    c.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn password_clients_still_use_the_password_file_path() {
    // With only a SCRAM file, a plain username/password CONNECT is not a SCRAM login: the
    // listener's allow_anonymous decides (no password file), as for any other client.
    let files = Files::new("plain");
    let b = broker(&files).await;
    let (mut c, ack) = TestClient::connect(b.addr, V311, |c| {
        c.username = Some(ByteStr::from("alice"));
        c.password = Some(Bytes::from_static(b"wonderland"));
    })
    .await;
    assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED);
    c.expect_closed().await;
}

#[tokio::test]
async fn the_credentials_file_reloads() {
    let files = Files::new("reload");
    let b = broker(&files).await;
    let (_, ack, _) = login(b.addr, "c1", "carol", "secret").await;
    assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED);

    let mut text = std::fs::read_to_string(files.scram()).unwrap();
    text.push_str(&ScramFile::entry("carol", "secret", 4096).unwrap());
    text.push('\n');
    std::fs::write(files.scram(), text).unwrap();
    b.broker.as_ref().unwrap().reload_security();

    let (_, ack, _) = login(b.addr, "c2", "carol", "secret").await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
}
