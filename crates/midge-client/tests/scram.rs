//! MQTT 5.0 enhanced authentication with SCRAM-SHA-256: the client against a scripted
//! server on a loopback TCP port, which plays the broker's side packet by packet (with the
//! broker's own SCRAM state machine, `midge_broker::auth::scram::ScramServer`, for the
//! messages), so that each test can also break the exchange where it wants to.
//! No sleeps: every wait is for a packet, a connection or a result, bounded by `WAIT`.
mod common;

use bytes::Bytes;
use midge_broker::auth::scram::{ScramCredentials, ScramServer, ServerNonce};
use midge_client::{
    AuthError, Client, ConnectOptions, Error, Messages, ProtocolVersion, QoS, Reconnect,
    ScramSha256,
};
use midge_proto::{Auth, ConnAck, Connect, Disconnect, Packet, Properties, PubResp, ReasonCode};
use std::collections::HashMap;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);
const METHOD: &str = "SCRAM-SHA-256";

/// The users the scripted server knows: "alice" (password "wonderland") at 4096
/// iterations, and "low" ("wonderland") at 1000, below what a client may accept.
fn users() -> &'static HashMap<String, ScramCredentials> {
    static USERS: OnceLock<HashMap<String, ScramCredentials>> = OnceLock::new();
    USERS.get_or_init(|| {
        HashMap::from([
            (
                "alice".to_owned(),
                ScramCredentials::generate("wonderland", 4096).unwrap(),
            ),
            (
                "low".to_owned(),
                ScramCredentials::derive(b"wonderland", b"0123456789abcdef", 1000),
            ),
        ])
    })
}

/// A loopback port whose connections the test answers itself.
struct FakeServer {
    listener: TcpListener,
}

impl FakeServer {
    async fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        FakeServer { listener }
    }

    fn options(&self) -> ConnectOptions {
        let port = self.listener.local_addr().unwrap().port();
        ConnectOptions::new("127.0.0.1", port).client_id("scram-client")
    }

    fn scram_options(&self, username: &str, password: &str) -> ConnectOptions {
        self.options()
            .authenticator(ScramSha256::new(username, password))
    }

    /// Accepts the next connection and reads its CONNECT.
    async fn accept(&self) -> (Peer, Connect) {
        let (stream, _) = tokio::time::timeout(WAIT, self.listener.accept())
            .await
            .expect("a connection in time")
            .unwrap();
        let mut peer = Peer::new(stream, WAIT);
        let connect = peer.recv_connect().await;
        (peer, connect)
    }
}

/// The server's end of one connection.
type Peer = common::Peer<TcpStream>;

impl Peer {
    /// Expects AUTH from the client with `reason` and the SCRAM method [MQTT-4.12.0-5];
    /// returns its data.
    async fn recv_auth(&mut self, reason: ReasonCode) -> Vec<u8> {
        let Packet::Auth(auth) = self.recv().await else {
            panic!("expected AUTH")
        };
        assert_eq!(auth.reason_code, reason);
        assert_eq!(
            auth.properties.authentication_method.as_deref(),
            Some(METHOD)
        );
        auth.properties
            .authentication_data
            .expect("authentication data")
            .to_vec()
    }

    /// Expects DISCONNECT with `reason`, then the end of the connection.
    async fn expect_disconnect(&mut self, reason: ReasonCode) {
        let Packet::Disconnect(d) = self.recv().await else {
            panic!("expected DISCONNECT")
        };
        assert_eq!(d.reason_code, reason);
        let end = tokio::time::timeout(WAIT, self.try_recv()).await;
        assert!(
            matches!(end, Ok(None)),
            "expected the connection closed, got {end:?}"
        );
    }

    /// Plays SCRAM from a client-first (in CONNECT or AUTH 0x19) to the client-final:
    /// sends server-first in AUTH 0x18, reads the client's AUTH 0x18, and returns the
    /// server-final to send (for a right password) or the error.
    async fn challenge(&mut self, client_first: &[u8]) -> Result<Vec<u8>, ReasonCode> {
        let (server, server_first) =
            ScramServer::start(users(), client_first, ServerNonce::random()).unwrap();
        self.send(auth(
            ReasonCode::CONTINUE_AUTHENTICATION,
            METHOD,
            server_first,
        ))
        .await;
        // [MQTT-4.12.0-3] The client answers AUTH with AUTH 0x18.
        let client_final = self.recv_auth(ReasonCode::CONTINUE_AUTHENTICATION).await;
        server
            .finish(&client_final)
            .map(|ok| ok.server_final)
            .map_err(|e| e.reason_code())
    }

    /// Plays a whole SCRAM login from the client-first in CONNECT, for the right
    /// password: the challenge, then CONNACK 0x00 with the server-final.
    async fn accept_login(&mut self, client_first: &[u8]) {
        let server_final = self.challenge(client_first).await.unwrap();
        self.send(connack(
            ReasonCode::SUCCESS,
            Some(METHOD),
            Some(server_final),
        ))
        .await;
    }

    /// Acknowledges the PUBLISH the client sends next (QoS 1).
    async fn ack_publish(&mut self) {
        let packet = self.recv().await;
        let Packet::Publish(p) = packet else {
            panic!("expected PUBLISH, got {packet:?}")
        };
        self.send(Packet::PubAck(PubResp::new(p.packet_id))).await;
    }
}

fn auth(reason_code: ReasonCode, method: &str, data: impl Into<Bytes>) -> Packet {
    Packet::Auth(Auth {
        reason_code,
        properties: Properties {
            authentication_method: Some(method.into()),
            authentication_data: Some(data.into()),
            ..Properties::default()
        },
    })
}

fn connack(reason_code: ReasonCode, method: Option<&str>, data: Option<Vec<u8>>) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code,
        properties: Properties {
            authentication_method: method.map(Into::into),
            authentication_data: data.map(Bytes::from),
            ..Properties::default()
        },
    })
}

/// A well-formed server-final whose signature (32 zero bytes) is not the server's.
fn forged_server_final() -> Vec<u8> {
    format!("v={}=", "A".repeat(43)).into_bytes()
}

/// The client-first CONNECT carried, after checking its Authentication Method.
fn client_first(connect: &Connect) -> Vec<u8> {
    assert_eq!(
        connect.properties.authentication_method.as_deref(),
        Some(METHOD)
    );
    connect
        .properties
        .authentication_data
        .as_ref()
        .expect("client-first in CONNECT")
        .to_vec()
}

/// The client nonce of a client-first (`n,,n=<user>,r=<nonce>`).
fn nonce(client_first: &[u8]) -> String {
    let text = std::str::from_utf8(client_first).unwrap();
    text.rsplit_once(",r=").unwrap().1.to_owned()
}

/// Runs `connect` while `server` plays its side; returns both outcomes.
async fn with_server<S: Future>(
    options: ConnectOptions,
    server: S,
) -> (Result<(Client, Messages), Error>, S::Output) {
    let connect = async {
        tokio::time::timeout(WAIT, Client::connect(options))
            .await
            .expect("connect finishes in time")
    };
    tokio::join!(connect, server)
}

/// Connects "alice" (password "wonderland") through a whole exchange; returns the client
/// and the server's end.
async fn login(server: &FakeServer) -> (Client, Messages, Peer) {
    let options = server.scram_options("alice", "wonderland");
    let (client, peer) = with_server(options, async {
        let (mut peer, connect) = server.accept().await;
        peer.accept_login(&client_first(&connect)).await;
        peer
    })
    .await;
    let (client, messages) = client.expect("connects");
    (client, messages, peer)
}

/// Publishes `payload` at QoS 1 while the server's end acknowledges it; the client sees a
/// successful PUBACK, so the connection is usable.
async fn publish_is_acknowledged(client: &Client, peer: &mut Peer, payload: &'static str) {
    let publish = client.publish("t", payload, QoS::AtLeastOnce, false);
    let (ack, ()) = tokio::join!(publish, peer.ack_publish());
    assert!(!ack.unwrap().reason_code.is_error());
}

/// Accepts the connection, answers its CONNECT with `answer`, and expects the client to
/// send DISCONNECT with `reason` and close the connection; returns the client's outcome
/// and the CONNECT.
async fn answer_connect_and_expect_disconnect(
    server: &FakeServer,
    options: ConnectOptions,
    answer: Packet,
    reason: ReasonCode,
) -> (Result<(Client, Messages), Error>, Connect) {
    with_server(options, async {
        let (mut peer, connect) = server.accept().await;
        peer.send(answer).await;
        peer.expect_disconnect(reason).await;
        connect
    })
    .await
}

/// The connection was refused with CONNACK 0x87 Not authorized.
fn assert_refused_not_authorized(result: Result<(Client, Messages), Error>) {
    match result {
        Err(Error::ConnectionRefused { reason_code, .. }) => {
            assert_eq!(reason_code, ReasonCode::NOT_AUTHORIZED)
        }
        other => panic!("expected CONNACK 0x87, got {other:?}"),
    }
}

/// The client's connection ends: its message stream closes within `WAIT`.
async fn assert_closed(messages: &mut Messages) {
    let next = tokio::time::timeout(WAIT, messages.recv()).await.unwrap();
    assert!(next.is_none());
}

#[tokio::test]
async fn connect_runs_the_scram_exchange_and_the_connection_is_usable() {
    let server = FakeServer::start().await;
    let (client, _messages, mut peer) = login(&server).await;
    publish_is_acknowledged(&client, &mut peer, "after login").await;
}

#[tokio::test]
async fn connect_carries_the_method_and_a_client_first_message() {
    let server = FakeServer::start().await;
    let options = server.scram_options("alice", "wonderland");
    let (_client, connect) = with_server(options, async {
        let (mut peer, connect) = server.accept().await;
        peer.send(connack(ReasonCode::NOT_AUTHORIZED, None, None))
            .await;
        connect
    })
    .await;
    let first = client_first(&connect);
    let text = std::str::from_utf8(&first).unwrap();
    assert!(text.starts_with("n,,n=alice,r="), "{text}");
    assert_eq!(nonce(&first).len(), 32);
}

#[tokio::test]
async fn forged_server_signature_fails_the_connection() {
    // The server must prove it holds the credentials: a CONNACK 0x00 whose server-final
    // does not verify is an impostor, whatever its reason code says.
    let server = FakeServer::start().await;
    let options = server.scram_options("alice", "wonderland");
    let (client, ()) = with_server(options, async {
        let (mut peer, connect) = server.accept().await;
        peer.challenge(&client_first(&connect)).await.unwrap();
        peer.send(connack(
            ReasonCode::SUCCESS,
            Some(METHOD),
            Some(forged_server_final()),
        ))
        .await;
        peer.expect_disconnect(ReasonCode::NOT_AUTHORIZED).await;
    })
    .await;
    match client {
        Err(Error::Authentication(AuthError::ServerNotVerified)) => {}
        other => panic!("expected ServerNotVerified, got {other:?}"),
    }
}

#[tokio::test]
async fn success_without_a_challenge_fails_the_connection() {
    // A server that skips SCRAM's second step never proves anything.
    let server = FakeServer::start().await;
    let options = server.scram_options("alice", "wonderland");
    let answer = connack(
        ReasonCode::SUCCESS,
        Some(METHOD),
        Some(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()),
    );
    let (client, _) =
        answer_connect_and_expect_disconnect(&server, options, answer, ReasonCode::NOT_AUTHORIZED)
            .await;
    match client {
        Err(Error::Authentication(AuthError::OutOfOrder(_))) => {}
        other => panic!("expected OutOfOrder, got {other:?}"),
    }
}

#[tokio::test]
async fn server_first_below_4096_iterations_is_refused() {
    let server = FakeServer::start().await;
    let options = server.scram_options("low", "wonderland");
    let (client, ()) = with_server(options, async {
        let (mut peer, connect) = server.accept().await;
        let (_, server_first) =
            ScramServer::start(users(), &client_first(&connect), ServerNonce::random()).unwrap();
        assert!(String::from_utf8_lossy(&server_first).ends_with(",i=1000"));
        peer.send(auth(
            ReasonCode::CONTINUE_AUTHENTICATION,
            METHOD,
            server_first,
        ))
        .await;
        peer.expect_disconnect(ReasonCode::NOT_AUTHORIZED).await;
    })
    .await;
    match client {
        Err(Error::Authentication(AuthError::Refused(_))) => {}
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn auth_naming_another_method_is_a_protocol_error() {
    // [MQTT-4.12.0-5] Every AUTH packet carries the CONNECT's Authentication Method.
    let server = FakeServer::start().await;
    let options = server.scram_options("alice", "wonderland");
    let answer = auth(
        ReasonCode::CONTINUE_AUTHENTICATION,
        "SCRAM-SHA-1",
        "r=x,s=eA==,i=4096",
    );
    let (client, _) = answer_connect_and_expect_disconnect(
        &server,
        options,
        answer,
        ReasonCode::BAD_AUTHENTICATION_METHOD,
    )
    .await;
    assert!(matches!(client, Err(Error::Protocol(_))), "{client:?}");
}

#[tokio::test]
async fn auth_with_another_reason_code_than_continue_is_a_protocol_error() {
    // [MQTT-4.12.0-2] The server's AUTH during the exchange is 0x18 Continue authentication.
    let server = FakeServer::start().await;
    let options = server.scram_options("alice", "wonderland");
    let answer = auth(ReasonCode::RE_AUTHENTICATE, METHOD, "r=x,s=eA==,i=4096");
    let (client, _) =
        answer_connect_and_expect_disconnect(&server, options, answer, ReasonCode::PROTOCOL_ERROR)
            .await;
    assert!(matches!(client, Err(Error::Protocol(_))), "{client:?}");
}

#[tokio::test]
async fn connack_naming_another_method_is_a_protocol_error() {
    // [MQTT-4.12.0-5] A successful CONNACK carries the CONNECT's Authentication Method.
    let server = FakeServer::start().await;
    let options = server.scram_options("alice", "wonderland");
    let (client, ()) = with_server(options, async {
        let (mut peer, connect) = server.accept().await;
        let server_final = peer.challenge(&client_first(&connect)).await.unwrap();
        peer.send(connack(
            ReasonCode::SUCCESS,
            Some("SCRAM-SHA-1"),
            Some(server_final),
        ))
        .await;
        peer.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
    })
    .await;
    assert!(matches!(client, Err(Error::Protocol(_))), "{client:?}");
}

#[tokio::test]
async fn auth_when_the_client_sent_no_method_is_a_protocol_error() {
    // [MQTT-4.12.0-6] Without an Authentication Method in CONNECT the server must not
    // send AUTH.
    let server = FakeServer::start().await;
    let answer = auth(ReasonCode::CONTINUE_AUTHENTICATION, METHOD, "x");
    let (client, connect) = answer_connect_and_expect_disconnect(
        &server,
        server.options(),
        answer,
        ReasonCode::PROTOCOL_ERROR,
    )
    .await;
    assert_eq!(connect.properties.authentication_method, None);
    assert!(matches!(client, Err(Error::Protocol(_))), "{client:?}");
}

#[tokio::test]
async fn refusal_is_connection_refused_with_the_servers_reason_code() {
    let server = FakeServer::start().await;
    let options = server.scram_options("alice", "not the password");
    let (client, ()) = with_server(options, async {
        let (mut peer, connect) = server.accept().await;
        let reason = peer.challenge(&client_first(&connect)).await.unwrap_err();
        assert_eq!(reason, ReasonCode::NOT_AUTHORIZED);
        peer.send(connack(
            reason,
            Some(METHOD),
            Some(b"e=invalid-proof".to_vec()),
        ))
        .await;
    })
    .await;
    assert_refused_not_authorized(client);
}

#[tokio::test]
async fn authenticator_needs_mqtt_5() {
    let server = FakeServer::start().await;
    let options = server
        .scram_options("alice", "wonderland")
        .protocol(ProtocolVersion::V311);
    let result = Client::connect(options).await;
    assert!(
        matches!(result, Err(Error::InvalidRequest(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn reauthentication_sends_auth_0x19_and_other_packets_keep_flowing() {
    let server = FakeServer::start().await;
    let (client, _messages, mut peer) = login(&server).await;
    let reauthenticate = async { client.reauthenticate().await };
    let serve = async {
        // [MQTT-4.12.1-1] AUTH 0x19 with the same Authentication Method.
        let first = peer.recv_auth(ReasonCode::RE_AUTHENTICATE).await;
        let (scram, server_first) =
            ScramServer::start_reauthentication(users(), &first, ServerNonce::random(), "alice")
                .unwrap();
        // A publish in the middle of the exchange is acknowledged before it ends.
        let publish = client.publish("t", "during", QoS::AtLeastOnce, false);
        let relay = async {
            peer.ack_publish().await;
            peer.send(auth(
                ReasonCode::CONTINUE_AUTHENTICATION,
                METHOD,
                server_first,
            ))
            .await;
            let client_final = peer.recv_auth(ReasonCode::CONTINUE_AUTHENTICATION).await;
            scram.finish(&client_final).unwrap().server_final
        };
        let (ack, server_final) = tokio::join!(publish, relay);
        assert!(!ack.unwrap().reason_code.is_error());
        peer.send(auth(ReasonCode::SUCCESS, METHOD, server_final))
            .await;
        first
    };
    let (result, first) = tokio::join!(reauthenticate, serve);
    result.expect("re-authenticated");
    assert!(String::from_utf8_lossy(&first).starts_with("n,,n=alice,r="));
}

#[tokio::test]
async fn reauthentication_with_a_forged_server_signature_disconnects_not_authorized() {
    // [MQTT-4.12.1-2] A failed re-authentication ends with DISCONNECT and a closed
    // connection.
    let server = FakeServer::start().await;
    let (client, mut messages, mut peer) = login(&server).await;
    let serve = async {
        let first = peer.recv_auth(ReasonCode::RE_AUTHENTICATE).await;
        peer.challenge(&first).await.unwrap();
        peer.send(auth(ReasonCode::SUCCESS, METHOD, forged_server_final()))
            .await;
        peer.expect_disconnect(ReasonCode::NOT_AUTHORIZED).await;
    };
    let (result, ()) = tokio::join!(client.reauthenticate(), serve);
    assert!(
        matches!(
            result,
            Err(Error::Authentication(AuthError::ServerNotVerified))
        ),
        "{result:?}"
    );
    assert_closed(&mut messages).await;
}

#[tokio::test]
async fn reauthentication_refused_by_the_server_fails_with_its_disconnect() {
    let server = FakeServer::start().await;
    let (client, _messages, mut peer) = login(&server).await;
    let serve = async {
        let first = peer.recv_auth(ReasonCode::RE_AUTHENTICATE).await;
        let _ = peer.challenge(&first).await;
        peer.send(Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::NOT_AUTHORIZED,
            ..Disconnect::default()
        }))
        .await;
    };
    let (result, ()) = tokio::join!(client.reauthenticate(), serve);
    match result {
        Err(Error::ServerDisconnected { reason_code, .. }) => {
            assert_eq!(reason_code, ReasonCode::NOT_AUTHORIZED)
        }
        other => panic!("expected ServerDisconnected, got {other:?}"),
    }
}

#[tokio::test]
async fn second_reauthentication_while_one_is_in_progress_is_refused() {
    let server = FakeServer::start().await;
    let (client, _messages, mut peer) = login(&server).await;
    let first = client.clone();
    let pending = tokio::spawn(async move { first.reauthenticate().await });
    let client_first = peer.recv_auth(ReasonCode::RE_AUTHENTICATE).await;
    let second = client.reauthenticate().await;
    assert!(
        matches!(second, Err(Error::InvalidRequest(_))),
        "{second:?}"
    );
    let server_final = peer.challenge(&client_first).await.unwrap();
    peer.send(auth(ReasonCode::SUCCESS, METHOD, server_final))
        .await;
    pending.await.unwrap().expect("the first one completes");
}

#[tokio::test]
async fn reauthentication_without_an_authenticator_is_refused_and_sends_no_auth() {
    // [MQTT-4.12.0-7] Without an Authentication Method in CONNECT the client must not
    // send AUTH: the request fails locally, and the next packet on the wire is the PUBLISH
    // that follows it.
    let server = FakeServer::start().await;
    let (client, peer) = with_server(server.options(), async {
        let (mut peer, _) = server.accept().await;
        peer.send(connack(ReasonCode::SUCCESS, None, None)).await;
        peer
    })
    .await;
    let mut peer = peer;
    let (client, _messages) = client.unwrap();
    let result = client.reauthenticate().await;
    assert!(
        matches!(result, Err(Error::InvalidRequest(_))),
        "{result:?}"
    );
    publish_is_acknowledged(&client, &mut peer, "next").await;
}

#[tokio::test]
async fn unsolicited_auth_on_an_established_connection_is_a_protocol_error() {
    // Only the client starts a re-authentication (section 4.12.1).
    let server = FakeServer::start().await;
    let (_client, mut messages, mut peer) = login(&server).await;
    peer.send(auth(ReasonCode::CONTINUE_AUTHENTICATION, METHOD, "x"))
        .await;
    peer.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
    assert_closed(&mut messages).await;
    assert!(
        matches!(messages.close_reason(), Some(Error::Protocol(_))),
        "{:?}",
        messages.close_reason()
    );
}

#[tokio::test]
async fn reconnection_runs_a_new_exchange_with_a_fresh_nonce() {
    let server = FakeServer::start().await;
    let options = server
        .scram_options("alice", "wonderland")
        .reconnect(Reconnect {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
            max_attempts: Some(3),
        });
    let (client, first_nonce) = with_server(options, async {
        let (mut peer, connect) = server.accept().await;
        let first = client_first(&connect);
        peer.accept_login(&first).await;
        // Drop the connection: the client reconnects.
        drop(peer);
        nonce(&first)
    })
    .await;
    let (client, _messages) = client.expect("connects");
    let (mut peer, connect) = server.accept().await;
    let again = client_first(&connect);
    assert_ne!(nonce(&again), first_nonce);
    peer.accept_login(&again).await;
    // The new connection is authenticated and usable.
    publish_is_acknowledged(&client, &mut peer, "after reconnect").await;
}

/// The client against the Midge broker started in-process with a SCRAM credentials file
/// and anonymous access refused, so that only a SCRAM login gets in.
mod against_the_broker {
    use super::{assert_refused_not_authorized, WAIT};
    use midge_broker::auth::scram::ScramFile;
    use midge_broker::{Broker, Config, ListenerConfig};
    use midge_client::{Client, ConnectOptions, Error, Messages, QoS, ScramSha256};
    use std::time::Duration;

    /// A broker knowing alice/wonderland and bob/builder; the directory holding the
    /// credentials file lives as long as the broker.
    async fn broker() -> (Broker, u16, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scram");
        let lines = [
            ScramFile::entry("alice", "wonderland", 4096).unwrap(),
            ScramFile::entry("bob", "builder", 4096).unwrap(),
        ];
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let config = Config {
            listeners: vec![ListenerConfig::tcp("127.0.0.1:0".parse().unwrap(), false)],
            sys_interval: Duration::ZERO,
            scram_file: Some(path),
            // Refusals here are deliberate; do not slow them down.
            auth_failures_before_delay: 0,
            ..Default::default()
        };
        let broker = Broker::start(config).await.expect("broker starts");
        let port = broker.local_addrs()[0].port();
        (broker, port, dir)
    }

    fn options(port: u16, id: &str, username: &str, password: &str) -> ConnectOptions {
        ConnectOptions::new("127.0.0.1", port)
            .client_id(id)
            .authenticator(ScramSha256::new(username, password))
    }

    async fn connect(options: ConnectOptions) -> Result<(Client, Messages), Error> {
        tokio::time::timeout(WAIT, Client::connect(options))
            .await
            .expect("connect finishes in time")
    }

    /// Subscribes, publishes to itself at QoS 1 and receives the message back.
    async fn round_trip(client: &Client, messages: &mut Messages, payload: &str) {
        client.subscribe("scram/#", QoS::AtLeastOnce).await.unwrap();
        let ack = client
            .publish("scram/t", payload.to_owned(), QoS::AtLeastOnce, false)
            .await
            .unwrap();
        assert!(!ack.reason_code.is_error(), "{ack:?}");
        let message = tokio::time::timeout(WAIT, messages.recv())
            .await
            .expect("a message in time")
            .expect("the client is running");
        assert_eq!(message.topic, "scram/t");
        assert_eq!(message.payload, payload.as_bytes());
    }

    #[tokio::test]
    async fn right_password_connects_and_can_publish_and_subscribe() {
        let (_broker, port, _dir) = broker().await;
        let (client, mut messages) = connect(options(port, "alice-1", "alice", "wonderland"))
            .await
            .expect("alice logs in");
        round_trip(&client, &mut messages, "hello").await;
        client.disconnect().await.unwrap();
    }

    #[tokio::test]
    async fn wrong_password_is_refused_with_not_authorized() {
        let (_broker, port, _dir) = broker().await;
        let result = connect(options(port, "alice-2", "alice", "looking-glass")).await;
        assert_refused_not_authorized(result);
    }

    #[tokio::test]
    async fn unknown_user_is_refused_like_a_wrong_password() {
        let (_broker, port, _dir) = broker().await;
        let result = connect(options(port, "mallory-1", "mallory", "wonderland")).await;
        assert_refused_not_authorized(result);
    }

    #[tokio::test]
    async fn reauthentication_succeeds_and_the_connection_stays_usable() {
        let (_broker, port, _dir) = broker().await;
        let (client, mut messages) = connect(options(port, "bob-1", "bob", "builder"))
            .await
            .expect("bob logs in");
        for _ in 0..2 {
            tokio::time::timeout(WAIT, client.reauthenticate())
                .await
                .expect("re-authentication finishes in time")
                .expect("re-authenticated");
        }
        round_trip(&client, &mut messages, "still here").await;
        client.disconnect().await.unwrap();
    }
}
