//! The client against a scripted server over in-memory streams: each test plays the
//! server's side packet by packet, to check what the client sends and when (flow control,
//! topic aliases, QoS 2 exactly once, keep-alive, reconnection).
//!
//! Time is paused (`start_paused`): a `timeout` used to show that nothing arrives
//! advances the clock instantly once every task is idle, so nothing here sleeps.
mod common;

use midge_client::transport::{BoxTransport, ConnectFuture};
use midge_client::{Client, ConnectOptions, Connector, Error, Message, Messages, QoS, Reconnect};
use midge_proto::{
    ConnAck, Connect, Disconnect, Packet, Properties, PubResp, Publish, ReasonCode, SubAck,
};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

/// Paused time: generous, costs nothing.
const WAIT: Duration = Duration::from_secs(120);

/// Hands each new client connection's server end to the test.
struct FakeConnector {
    tx: mpsc::UnboundedSender<DuplexStream>,
    refuse: Arc<AtomicBool>,
    /// Told about every refused attempt.
    refused: mpsc::UnboundedSender<()>,
}

impl Connector for FakeConnector {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            if self.refuse.load(Ordering::SeqCst) {
                let _ = self.refused.send(());
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
            }
            let (client, server) = tokio::io::duplex(1 << 20);
            self.tx
                .send(server)
                .map_err(|_| io::Error::new(io::ErrorKind::ConnectionRefused, "no server"))?;
            Ok(Box::new(client) as BoxTransport)
        })
    }
}

struct Listener {
    rx: mpsc::UnboundedReceiver<DuplexStream>,
    refuse: Arc<AtomicBool>,
    refused: mpsc::UnboundedReceiver<()>,
}

fn fake() -> (ConnectOptions, Listener) {
    let (tx, rx) = mpsc::unbounded_channel();
    let refuse = Arc::new(AtomicBool::new(false));
    let (refused_tx, refused) = mpsc::unbounded_channel();
    let connector = FakeConnector {
        tx,
        refuse: refuse.clone(),
        refused: refused_tx,
    };
    let options = ConnectOptions::with_connector(connector).client_id("c");
    let listener = Listener {
        rx,
        refuse,
        refused,
    };
    (options, listener)
}

/// The server's end of one connection.
type Server = common::Peer<DuplexStream>;

impl Listener {
    /// Accepts the next connection: reads CONNECT, answers with `connack`.
    async fn accept(&mut self, connack: ConnAck) -> (Server, Connect) {
        let stream = tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("a connection in time")
            .expect("connector alive");
        let mut server = Server::new(stream, WAIT);
        let connect = server.recv_connect().await;
        server.send(Packet::ConnAck(connack)).await;
        (server, connect)
    }
}

impl Server {
    /// Asserts that the client sends nothing (while time is paused, instantly).
    async fn expect_silence(&mut self) {
        let got = tokio::time::timeout(Duration::from_secs(1), self.try_recv()).await;
        assert!(got.is_err(), "expected nothing, got {got:?}");
    }

    async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

fn connack(properties: Properties) -> ConnAck {
    ConnAck {
        session_present: false,
        reason_code: ReasonCode::SUCCESS,
        properties,
    }
}

async fn connect_to(
    options: ConnectOptions,
    listener: &mut Listener,
    ack: ConnAck,
) -> (Client, Messages, Server) {
    let (client, (server, _)) = tokio::join!(Client::connect(options), listener.accept(ack));
    let (client, messages) = client.expect("connects");
    (client, messages, server)
}

#[tokio::test(start_paused = true)]
async fn publishes_in_flight_never_exceed_the_servers_receive_maximum() {
    let (options, mut listener) = fake();
    let props = Properties {
        receive_maximum: Some(2),
        ..Properties::default()
    };
    let (client, _m, mut server) = connect_to(options, &mut listener, connack(props)).await;
    let mut acks = Vec::new();
    for i in 0..4 {
        let m = Message::new("t", format!("{i}")).qos(QoS::AtLeastOnce);
        acks.push(client.start_publish(m).await.expect("queued"));
    }
    let first = server.recv_publish().await;
    let second = server.recv_publish().await;
    server.expect_silence().await;
    server
        .send(Packet::PubAck(PubResp::new(first.packet_id)))
        .await;
    let third = server.recv_publish().await;
    assert_eq!(third.payload, "2".as_bytes());
    server.expect_silence().await;
    server
        .send(Packet::PubAck(PubResp::new(second.packet_id)))
        .await;
    server
        .send(Packet::PubAck(PubResp::new(third.packet_id)))
        .await;
    let fourth = server.recv_publish().await;
    server
        .send(Packet::PubAck(PubResp::with_reason(
            fourth.packet_id,
            ReasonCode::NO_MATCHING_SUBSCRIBERS,
        )))
        .await;
    let mut results = Vec::new();
    for ack in acks {
        results.push(ack.await.expect("acknowledged").reason_code);
    }
    assert_eq!(results.last(), Some(&ReasonCode::NO_MATCHING_SUBSCRIBERS));
}

#[tokio::test(start_paused = true)]
async fn qos2_publish_completes_after_pubrec_pubrel_pubcomp() {
    let (options, mut listener) = fake();
    let (client, _m, mut server) =
        connect_to(options, &mut listener, connack(Properties::default())).await;
    let ack = client
        .start_publish(Message::new("t", "x").qos(QoS::ExactlyOnce))
        .await
        .expect("queued");
    let p = server.recv_publish().await;
    server.send(Packet::PubRec(PubResp::new(p.packet_id))).await;
    assert_eq!(
        server.recv().await,
        Packet::PubRel(PubResp::new(p.packet_id))
    );
    server
        .send(Packet::PubComp(PubResp::new(p.packet_id)))
        .await;
    ack.await.expect("completed");
}

#[tokio::test(start_paused = true)]
async fn refused_publish_reports_the_servers_reason_code() {
    let (options, mut listener) = fake();
    let (client, _m, mut server) =
        connect_to(options, &mut listener, connack(Properties::default())).await;
    let ack = client
        .start_publish(Message::new("t", "x").qos(QoS::ExactlyOnce))
        .await
        .expect("queued");
    let p = server.recv_publish().await;
    server
        .send(Packet::PubRec(PubResp::with_reason(
            p.packet_id,
            ReasonCode::NOT_AUTHORIZED,
        )))
        .await;
    let err = ack.await;
    assert!(
        matches!(
            err,
            Err(Error::PublishRefused {
                reason_code: ReasonCode::NOT_AUTHORIZED,
                ..
            })
        ),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn incoming_qos2_is_delivered_exactly_once() {
    let (options, mut listener) = fake();
    let (_client, mut messages, mut server) =
        connect_to(options, &mut listener, connack(Properties::default())).await;
    let publish = Publish {
        qos: QoS::ExactlyOnce,
        topic: "t".into(),
        packet_id: 7,
        payload: "once".into(),
        ..Publish::default()
    };
    server.send(Packet::Publish(publish.clone())).await;
    assert_eq!(server.recv().await, Packet::PubRec(PubResp::new(7)));
    // The server did not see our PUBREC and sends again, with DUP.
    server
        .send(Packet::Publish(Publish {
            dup: true,
            ..publish.clone()
        }))
        .await;
    assert_eq!(server.recv().await, Packet::PubRec(PubResp::new(7)));
    server.send(Packet::PubRel(PubResp::new(7))).await;
    assert_eq!(server.recv().await, Packet::PubComp(PubResp::new(7)));
    // Packet id 7 is free again: a new message with it is a new message.
    server
        .send(Packet::Publish(Publish {
            payload: "again".into(),
            ..publish
        }))
        .await;
    assert_eq!(server.recv().await, Packet::PubRec(PubResp::new(7)));

    assert_eq!(
        messages.recv().await.expect("first").payload,
        "once".as_bytes()
    );
    assert_eq!(
        messages.recv().await.expect("second").payload,
        "again".as_bytes()
    );
    let extra = tokio::time::timeout(Duration::from_secs(1), messages.recv()).await;
    assert!(extra.is_err(), "a duplicate was delivered: {extra:?}");
}

#[tokio::test(start_paused = true)]
async fn incoming_qos1_is_acknowledged_after_delivery() {
    let (options, mut listener) = fake();
    let (_client, mut messages, mut server) =
        connect_to(options, &mut listener, connack(Properties::default())).await;
    let publish = Publish {
        qos: QoS::AtLeastOnce,
        topic: "t".into(),
        packet_id: 3,
        payload: "p".into(),
        ..Publish::default()
    };
    server.send(Packet::Publish(publish)).await;
    assert_eq!(server.recv().await, Packet::PubAck(PubResp::new(3)));
    assert_eq!(
        messages.recv().await.expect("message").qos,
        QoS::AtLeastOnce
    );
}

#[tokio::test(start_paused = true)]
async fn outgoing_topics_use_aliases_up_to_the_servers_maximum() {
    let (options, mut listener) = fake();
    let props = Properties {
        topic_alias_maximum: Some(1),
        ..Properties::default()
    };
    let (client, _m, mut server) = connect_to(options, &mut listener, connack(props)).await;
    for topic in ["sensors/1", "sensors/1", "sensors/2"] {
        client
            .publish(topic, "v", QoS::AtMostOnce, false)
            .await
            .expect("sent");
    }
    let p1 = server.recv_publish().await;
    assert_eq!(
        (p1.topic.as_str(), p1.properties.topic_alias),
        ("sensors/1", Some(1))
    );
    let p2 = server.recv_publish().await;
    assert_eq!(
        (p2.topic.as_str(), p2.properties.topic_alias),
        ("", Some(1))
    );
    let p3 = server.recv_publish().await;
    assert_eq!(
        (p3.topic.as_str(), p3.properties.topic_alias),
        ("sensors/2", None)
    );
}

#[tokio::test(start_paused = true)]
async fn incoming_topic_aliases_are_resolved() {
    let (options, mut listener) = fake();
    let options = options.topic_alias_maximum(4);
    let (_client, mut messages, mut server) =
        connect_to(options, &mut listener, connack(Properties::default())).await;
    let mut publish = Publish {
        topic: "long/topic/name".into(),
        payload: "1".into(),
        ..Publish::default()
    };
    publish.properties.topic_alias = Some(4);
    server.send(Packet::Publish(publish.clone())).await;
    publish.topic = "".into();
    server.send(Packet::Publish(publish)).await;
    for _ in 0..2 {
        let m = messages.recv().await.expect("message");
        assert_eq!(m.topic, "long/topic/name");
        assert_eq!(m.properties.topic_alias, None);
    }
}

#[tokio::test(start_paused = true)]
async fn unknown_incoming_alias_closes_with_topic_alias_invalid() {
    let (options, mut listener) = fake();
    let options = options.topic_alias_maximum(4);
    let (_client, mut messages, mut server) =
        connect_to(options, &mut listener, connack(Properties::default())).await;
    let mut publish = Publish::default();
    publish.properties.topic_alias = Some(2);
    server.send(Packet::Publish(publish)).await;
    let Packet::Disconnect(d) = server.recv().await else {
        panic!("expected DISCONNECT")
    };
    assert_eq!(d.reason_code, ReasonCode::TOPIC_ALIAS_INVALID);
    assert!(messages.recv().await.is_none());
    assert!(matches!(messages.close_reason(), Some(Error::Protocol(_))));
}

#[tokio::test(start_paused = true)]
async fn packets_over_the_servers_maximum_size_are_refused_locally() {
    let (options, mut listener) = fake();
    let props = Properties {
        maximum_packet_size: Some(64),
        ..Properties::default()
    };
    let (client, _m, mut server) = connect_to(options, &mut listener, connack(props)).await;
    let err = client
        .publish("t", vec![0u8; 100], QoS::AtLeastOnce, false)
        .await;
    assert!(
        matches!(err, Err(Error::PacketTooLarge { max: 64, .. })),
        "{err:?}"
    );
    client
        .publish("t", "small", QoS::AtMostOnce, false)
        .await
        .expect("sent");
    assert_eq!(server.recv_publish().await.payload, "small".as_bytes());
}

#[tokio::test(start_paused = true)]
async fn keep_alive_sends_pingreq_and_gives_up_without_pingresp() {
    let (options, mut listener) = fake();
    let options = options.keep_alive(Duration::from_secs(10));
    let (_client, mut messages, mut server) =
        connect_to(options, &mut listener, connack(Properties::default())).await;
    let start = tokio::time::Instant::now();
    assert_eq!(server.recv().await, Packet::PingReq);
    assert!(start.elapsed() >= Duration::from_secs(10));
    server.send(Packet::PingResp).await;
    assert_eq!(server.recv().await, Packet::PingReq);
    // No PINGRESP this time: the client closes the connection.
    assert!(server.try_recv().await.is_none());
    assert!(messages.recv().await.is_none());
    assert!(matches!(messages.close_reason(), Some(Error::Timeout)));
}

#[tokio::test(start_paused = true)]
async fn server_keep_alive_overrides_ours() {
    let (options, mut listener) = fake();
    let options = options.keep_alive(Duration::from_secs(100));
    let props = Properties {
        server_keep_alive: Some(5),
        ..Properties::default()
    };
    let (_client, _m, mut server) = connect_to(options, &mut listener, connack(props)).await;
    let start = tokio::time::Instant::now();
    assert_eq!(server.recv().await, Packet::PingReq);
    assert!(start.elapsed() < Duration::from_secs(6));
}

#[tokio::test(start_paused = true)]
async fn server_disconnect_ends_the_stream_with_its_reason() {
    let (options, mut listener) = fake();
    let (client, mut messages, mut server) =
        connect_to(options, &mut listener, connack(Properties::default())).await;
    server
        .send(Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::SESSION_TAKEN_OVER,
            properties: Properties::default(),
        }))
        .await;
    assert!(messages.recv().await.is_none());
    let reason = messages.close_reason().and_then(|e| e.reason_code());
    assert_eq!(reason, Some(ReasonCode::SESSION_TAKEN_OVER));
    let err = client.publish("t", "x", QoS::AtMostOnce, false).await;
    assert!(
        matches!(err, Err(Error::ServerDisconnected { .. })),
        "{err:?}"
    );
}

fn quick_reconnect() -> Reconnect {
    Reconnect {
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        max_attempts: None,
    }
}

#[tokio::test(start_paused = true)]
async fn reconnect_resumes_the_session_and_resends_with_dup() {
    let (options, mut listener) = fake();
    let options = options.reconnect(quick_reconnect()).session_expiry(60);
    let (client, _m, mut server) =
        connect_to(options, &mut listener, connack(Properties::default())).await;
    let qos1 = client
        .start_publish(Message::new("a", "1").qos(QoS::AtLeastOnce))
        .await
        .expect("queued");
    let qos2 = client
        .start_publish(Message::new("b", "2").qos(QoS::ExactlyOnce))
        .await
        .expect("queued");
    let p1 = server.recv_publish().await;
    let p2 = server.recv_publish().await;
    server
        .send(Packet::PubRec(PubResp::new(p2.packet_id)))
        .await;
    assert_eq!(
        server.recv().await,
        Packet::PubRel(PubResp::new(p2.packet_id))
    );
    drop(server);

    let resumed = ConnAck {
        session_present: true,
        ..connack(Properties::default())
    };
    let (mut server, connect) = listener.accept(resumed).await;
    assert!(!connect.clean_start);
    assert_eq!(connect.client_id, "c");
    let again = server.recv_publish().await;
    assert!(again.dup);
    assert_eq!((again.packet_id, again.payload), (p1.packet_id, p1.payload));
    assert_eq!(
        server.recv().await,
        Packet::PubRel(PubResp::new(p2.packet_id))
    );
    server
        .send(Packet::PubAck(PubResp::new(p1.packet_id)))
        .await;
    server
        .send(Packet::PubComp(PubResp::new(p2.packet_id)))
        .await;
    qos1.await.expect("acknowledged after reconnect");
    qos2.await.expect("completed after reconnect");
}

#[tokio::test(start_paused = true)]
async fn reconnect_to_a_server_without_the_session_subscribes_again() {
    let (options, mut listener) = fake();
    let options = options.reconnect(quick_reconnect());
    let (client, _m, mut server) =
        connect_to(options, &mut listener, connack(Properties::default())).await;
    let sub = tokio::spawn({
        let client = client.clone();
        async move { client.subscribe("s/#", QoS::AtLeastOnce).await }
    });
    let Packet::Subscribe(s) = server.recv().await else {
        panic!("expected SUBSCRIBE")
    };
    server
        .send(Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            reason_codes: vec![ReasonCode::GRANTED_QOS_1],
            properties: Properties::default(),
        }))
        .await;
    sub.await.expect("task").expect("suback");
    drop(server);

    let (mut server, _) = listener.accept(connack(Properties::default())).await;
    let Packet::Subscribe(again) = server.recv().await else {
        panic!("expected SUBSCRIBE again")
    };
    assert_eq!(again.filters[0].0, "s/#");
    assert_eq!(again.filters[0].1.qos, QoS::AtLeastOnce);
}

#[tokio::test(start_paused = true)]
async fn offline_buffer_holds_requests_until_reconnected_and_refuses_beyond() {
    let (options, mut listener) = fake();
    let options = options.reconnect(quick_reconnect()).offline_buffer(1);
    let (client, _m, server) =
        connect_to(options, &mut listener, connack(Properties::default())).await;
    listener.refuse.store(true, Ordering::SeqCst);
    drop(server);
    // Once a reconnect attempt was refused, the client is offline.
    listener.refused.recv().await.expect("an attempt");
    let kept = Message::new("q", "kept").qos(QoS::AtLeastOnce);
    let queued = client.start_publish(kept).await.expect("queued");
    let dropped = Message::new("q", "dropped").qos(QoS::AtLeastOnce);
    let refused = client.start_publish(dropped).await.expect("queued").await;
    assert!(
        matches!(refused, Err(Error::OfflineBufferFull)),
        "{refused:?}"
    );
    listener.refuse.store(false, Ordering::SeqCst);
    let (mut server, _) = listener.accept(connack(Properties::default())).await;
    let p = server.recv_publish().await;
    assert_eq!(p.payload, "kept".as_bytes());
    assert!(!p.dup);
    server.send(Packet::PubAck(PubResp::new(p.packet_id))).await;
    queued.await.expect("acknowledged");
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts() {
    let (options, mut listener) = fake();
    let options = options.reconnect(Reconnect {
        max_attempts: Some(3),
        ..quick_reconnect()
    });
    let (_client, mut messages, server) =
        connect_to(options, &mut listener, connack(Properties::default())).await;
    listener.refuse.store(true, Ordering::SeqCst);
    drop(server);
    assert!(messages.recv().await.is_none());
    assert!(matches!(messages.close_reason(), Some(Error::Io(_))));
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_holds_back_acknowledgements_not_memory() {
    let (options, mut listener) = fake();
    let options = options
        .incoming_buffer(1)
        .keep_alive(Duration::from_secs(5));
    let (_client, mut messages, mut server) =
        connect_to(options, &mut listener, connack(Properties::default())).await;
    for id in 1..=3 {
        let publish = Publish {
            qos: QoS::AtLeastOnce,
            topic: "t".into(),
            packet_id: id,
            payload: id.to_string().into(),
            ..Publish::default()
        };
        server.send(Packet::Publish(publish)).await;
    }
    // The first fits in the buffer and is acknowledged; the second waits for the reader.
    assert_eq!(server.recv().await, Packet::PubAck(PubResp::new(1)));
    // Keep-alive goes on meanwhile, and a PINGRESP that cannot be read is not held
    // against the server.
    assert_eq!(server.recv().await, Packet::PingReq);
    server.send(Packet::PingResp).await;
    server.expect_silence().await;
    for id in 1..=3u16 {
        let m = messages.recv().await.expect("message");
        assert_eq!(m.payload, id.to_string().as_bytes());
        if id < 3 {
            assert_eq!(server.recv().await, Packet::PubAck(PubResp::new(id + 1)));
        }
    }
}
